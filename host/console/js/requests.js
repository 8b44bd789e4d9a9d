// Requests: the ledger's records for a range, a summary of them, and one record's
// decision trace (which policy routed it where, at what cost, with what outcome).

import { api, query } from "./api.js";
import { count, lastDays, percentile, time, usd } from "./format.js";
import { Empty, Loaded, html, useLoad, useState } from "./ui.js";

// The ledger returns at most this many records per call; the summary says when it is capped.
const RECORD_LIMIT = 1000;

function Summary({ records }) {
  const errors = records.filter((r) => r.outcome !== "success").length;
  const latencies = records.map((r) => r.latency_ms);
  const ms = (v) => (v === null ? "–" : `${count(v)} ms`);
  return html`<dl class="stats" data-test="requests-summary">
    <div><dt>Requests</dt><dd data-test="requests-count">${count(records.length)}${records.length === RECORD_LIMIT ? "+" : ""}</dd></div>
    <div><dt>Errors</dt><dd data-test="requests-errors">${count(errors)}</dd></div>
    <div><dt>p50 latency</dt><dd data-test="requests-p50">${ms(percentile(latencies, 50))}</dd></div>
    <div><dt>p95 latency</dt><dd data-test="requests-p95">${ms(percentile(latencies, 95))}</dd></div>
    <div><dt>Cost</dt><dd data-test="requests-cost">${usd(records.reduce((sum, r) => sum + r.cost_microdollars, 0))}</dd></div>
  </dl>`;
}

function Trace({ record, onClose }) {
  const rows = [
    ["Request id", record.request_id, "trace-request-id"],
    ["Time (UTC)", time(record.unix_millis)],
    ["Policy", record.policy_hash || "none", "trace-policy"],
    ["Target", record.provider ? `${record.provider} / ${record.model}` : "not routed", "trace-target"],
    ["Outcome", record.outcome, "trace-outcome"],
    ["Tokens", `${count(record.prompt_tokens)} prompt + ${count(record.completion_tokens)} completion (${count(record.cached_tokens)} cached)`],
    ["Cost", usd(record.cost_microdollars), "trace-cost"],
    ["Latency", `${count(record.latency_ms)} ms`],
    ["End user", record.end_user || "–"],
    ["Tags", (record.tags || []).join(", ") || "–"],
  ];
  return html`<aside class="panel trace" data-test="trace">
    <div class="panel-head"><h3>Decision trace</h3><button type="button" data-test="trace-close" onClick=${onClose}>Close</button></div>
    <dl class="pairs">${rows.map(([name, value, test]) => html`<dt>${name}</dt><dd class=${name === "Policy" || name === "Request id" ? "mono" : ""} data-test=${test}>${value}</dd>`)}</dl>
  </aside>`;
}

export function Requests({ prefix }) {
  const [range, setRange] = useState(() => lastDays(30));
  const [selected, setSelected] = useState(null);
  const state = useLoad(() => api("GET", `${prefix}/usage/records${query({ ...range, limit: RECORD_LIMIT })}`), [prefix, range.start, range.end]);
  const setDate = (name) => (e) => e.target.value && setRange({ ...range, [name]: e.target.value });
  return html`<section class="panel" data-test="requests">
    <div class="panel-head">
      <h3>Requests</h3>
      <div class="controls">
        <label>From <input type="date" data-test="requests-start" value=${range.start} onChange=${setDate("start")} /></label>
        <label>To <input type="date" data-test="requests-end" value=${range.end} onChange=${setDate("end")} /></label>
      </div>
    </div>
    <${Loaded} state=${state}>${({ data }) => {
      // Newest first: the ledger answers oldest first.
      const records = [...data].sort((a, b) => b.unix_millis - a.unix_millis);
      return html`
        <${Summary} records=${records} />
        ${selected && html`<${Trace} record=${selected} onClose=${() => setSelected(null)} />`}
        ${records.length === 0 ? html`<${Empty}>No requests in this range.</${Empty}>` : html`
        <table data-test="requests-table">
          <thead><tr><th>Time (UTC)</th><th>Model</th><th>Provider</th><th>Outcome</th><th class="num">Latency</th><th class="num">Tokens</th><th class="num">Cost</th></tr></thead>
          <tbody>${records.map((r) => html`
            <tr key=${r.request_id} class=${selected && selected.request_id === r.request_id ? "clickable selected" : "clickable"}
              data-test="request-row" data-request-id=${r.request_id} onClick=${() => setSelected(r)}>
              <td>${time(r.unix_millis)}</td><td>${r.model}</td><td>${r.provider}</td>
              <td><span class=${r.outcome === "success" ? "outcome ok" : "outcome bad"}>${r.outcome}</span></td>
              <td class="num">${count(r.latency_ms)} ms</td><td class="num">${count(r.prompt_tokens + r.completion_tokens)}</td><td class="num">${usd(r.cost_microdollars)}</td>
            </tr>`)}
          </tbody>
        </table>`}`;
    }}</${Loaded}>
  </section>`;
}
