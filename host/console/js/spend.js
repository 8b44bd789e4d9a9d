// Spend over time: daily spend as bars stacked by model (or provider), and the budget.
//
// How the budget reads: for a monthly (or total) budget the chart adds a cumulative-spend
// line on the right axis, restarting on the 1st of each month for a monthly budget, and
// the limit as a dashed horizontal line on that same axis, so "how close to the limit"
// is where the line meets the dash. A daily budget is drawn as the dashed line on the
// bars' own axis, since each day's bar is that day's spend.

import { api, query } from "./api.js";
import { count, lastDays, usd } from "./format.js";
import { Empty, ErrorBox, Loaded, html, useEffect, useLoad, useRef, useState } from "./ui.js";

// Distinct, colour-blind-friendly hues (Okabe-Ito), then repeats.
const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"];
const CUMULATIVE_COLOUR = "#444444";
const BUDGET_COLOUR = "#C62828";

const dollars = (micro) => micro / 1e6;

/** Spend so far within each budget period, per day: restarts on each month's 1st when monthly. */
function cumulative(days, perDay, period) {
  let running = 0;
  return days.map((d, i) => {
    if (period === "month" && i > 0 && d.endsWith("-01")) running = 0;
    running += perDay[i];
    return running;
  });
}

function chartConfig(usage, budget) {
  const perDay = usage.days.map((_, i) => usage.series.reduce((sum, s) => sum + s.cost_microdollars[i], 0));
  const datasets = usage.series.map((s, i) => ({
    type: "bar",
    label: s.key,
    data: s.cost_microdollars.map(dollars),
    backgroundColor: PALETTE[i % PALETTE.length],
    stack: "spend",
    yAxisID: "y",
    order: 2,
  }));
  const limit = budget && budget.limit_microdollars != null ? budget.limit_microdollars : null;
  const period = budget ? budget.period : null;
  const daily = period === "day";
  if (!daily) {
    const label = period === "month" ? "Cumulative spend (month to date)" : "Cumulative spend (over the range)";
    // No segment joins the last day of a month to the 1st of the next: the sum restarts.
    const restarts = (ctx) => (period === "month" && usage.days[ctx.p1DataIndex].endsWith("-01") ? "transparent" : undefined);
    datasets.push({ type: "line", label, data: cumulative(usage.days, perDay, period).map(dollars), borderColor: CUMULATIVE_COLOUR, backgroundColor: CUMULATIVE_COLOUR, pointRadius: 2, tension: 0, yAxisID: "cumulative", order: 1, segment: { borderColor: restarts } });
  }
  if (limit !== null) {
    datasets.push({ type: "line", label: `Budget (${usd(limit)} per ${period})`, data: usage.days.map(() => dollars(limit)), borderColor: BUDGET_COLOUR, borderDash: [6, 4], pointRadius: 0, yAxisID: daily ? "y" : "cumulative", order: 0 });
  }
  const money = (value) => usd(value * 1e6);
  const scales = {
    x: { stacked: true },
    y: { stacked: true, beginAtZero: true, title: { display: true, text: daily ? "Spend per day (bars) and daily budget" : "Spend per day (bars)" }, ticks: { callback: money } },
  };
  if (!daily) {
    // Its own scale, coloured like its lines, so a dash high on the chart is never read
    // as a daily figure the bars beside it exceed.
    const text = limit !== null ? `${period === "month" ? "Month to date" : "Cumulative"} and budget (lines)` : "Cumulative (line)";
    scales.cumulative = { position: "right", beginAtZero: true, suggestedMax: limit !== null ? dollars(limit) * 1.05 : undefined, grid: { drawOnChartArea: false }, title: { display: true, text, color: BUDGET_COLOUR }, ticks: { callback: money, color: BUDGET_COLOUR } };
  }
  return {
    data: { labels: usage.days, datasets },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales,
      plugins: {
        legend: { position: "bottom" },
        tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${money(ctx.parsed.y)}` } },
      },
    },
  };
}

function SpendChart({ usage, budget }) {
  const canvas = useRef(null);
  useEffect(() => {
    const chart = new window.Chart(canvas.current, chartConfig(usage, budget));
    return () => chart.destroy();
  }, [usage, budget]);
  return html`<div class="chart-box"><canvas data-test="spend-chart" ref=${canvas} aria-label="Daily spend stacked by ${usage.group_by}" role="img"></canvas></div>`;
}

/** `12.5%` of the limit, with enough digits that a small spend is not shown as 0%. */
function share(spent, limit) {
  if (limit === 0) return "over budget";
  const percent = (spent / limit) * 100;
  return `${percent >= 1 || percent === 0 ? percent.toFixed(1) : percent.toPrecision(2)}%`;
}

function Totals({ usage, budget }) {
  const cost = usage.series.reduce((sum, s) => sum + s.cost_microdollars.reduce((a, b) => a + b, 0), 0);
  const requests = usage.series.reduce((sum, s) => sum + s.requests.reduce((a, b) => a + b, 0), 0);
  const limit = budget && budget.limit_microdollars != null ? budget.limit_microdollars : null;
  return html`<dl class="stats">
    <div><dt>Spend in range</dt><dd data-test="spend-total" data-microdollars=${cost}>${usd(cost)}</dd></div>
    <div><dt>Requests in range</dt><dd data-test="spend-requests">${count(requests)}</dd></div>
    ${budget && html`<div><dt>Spent this ${budget.period || "period"}</dt><dd data-test="budget-spent">${usd(budget.spent_microdollars)}${limit !== null ? ` of ${usd(limit)} (${share(budget.spent_microdollars, limit)})` : ""}</dd></div>`}
    ${budget && budget.reserved_microdollars > 0 && html`<div><dt>Reserved in flight</dt><dd>${usd(budget.reserved_microdollars)}</dd></div>`}
  </dl>`;
}

/** Per-key totals under the chart: the same numbers, readable without hovering. */
function Breakdown({ usage }) {
  const rows = usage.series
    .map((s) => ({ key: s.key, cost: s.cost_microdollars.reduce((a, b) => a + b, 0), requests: s.requests.reduce((a, b) => a + b, 0) }))
    .sort((a, b) => b.cost - a.cost);
  return html`<table data-test="spend-breakdown">
    <thead><tr><th>${usage.group_by === "provider" ? "Provider" : "Model"}</th><th class="num">Spend</th><th class="num">Requests</th></tr></thead>
    <tbody>${rows.map((r) => html`<tr key=${r.key} data-test="spend-row" data-key=${r.key}>
      <td>${r.key}</td><td class="num" data-test="spend-row-cost" data-microdollars=${r.cost}>${usd(r.cost)}</td><td class="num" data-test="spend-row-requests">${count(r.requests)}</td></tr>`)}
    </tbody>
  </table>`;
}

export function Spend({ prefix }) {
  const [range, setRange] = useState(() => lastDays(30));
  const [groupBy, setGroupBy] = useState("model");
  const state = useLoad(async () => {
    const [usage, budget] = await Promise.all([
      api("GET", `${prefix}/usage/daily${query({ ...range, group_by: groupBy })}`),
      api("GET", `${prefix}/budget`),
    ]);
    return { usage, budget };
  }, [prefix, range.start, range.end, groupBy]);
  const rangeError = range.end < range.start ? new Error("The end date is before the start date.") : null;
  const setDate = (name) => (e) => e.target.value && setRange({ ...range, [name]: e.target.value });
  return html`<section class="panel" data-test="spend">
    <div class="panel-head">
      <h3>Spend over time</h3>
      <div class="controls">
        <label>From <input type="date" data-test="spend-start" value=${range.start} onChange=${setDate("start")} /></label>
        <label>To <input type="date" data-test="spend-end" value=${range.end} onChange=${setDate("end")} /></label>
        <span class="toggle" role="group" aria-label="Stack by">
          ${["model", "provider"].map((g) => html`<button type="button" data-test=${`group-${g}`} class=${groupBy === g ? "active" : ""}
            aria-pressed=${groupBy === g} onClick=${() => setGroupBy(g)}>By ${g}</button>`)}
        </span>
      </div>
    </div>
    <${ErrorBox} error=${rangeError} />
    ${!rangeError && html`<${Loaded} state=${state}>${({ usage, budget }) => html`
      <${Totals} usage=${usage} budget=${budget} />
      ${usage.series.length === 0 ? html`<${Empty}>No spend in this range.</${Empty}>` : html`
        <${SpendChart} usage=${usage} budget=${budget} />
        <${Breakdown} usage=${usage} />`}`}
    </${Loaded}>`}
  </section>`;
}
