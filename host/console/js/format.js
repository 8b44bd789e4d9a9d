// Numbers, money and times as the console shows them. Days are UTC, as the gateway's
// usage rollups are.

const USD = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 6 });
const COUNT = new Intl.NumberFormat("en-US");

export function usd(microdollars) {
  return USD.format((microdollars || 0) / 1e6);
}

export function count(n) {
  return COUNT.format(n || 0);
}

/** `2026-12-06 21:04:05` (UTC) from Unix milliseconds. */
export function time(millis) {
  if (!millis) return "";
  return new Date(millis).toISOString().replace("T", " ").slice(0, 19);
}

/** `YYYY-MM-DD` of a Date, in UTC. */
export function day(date) {
  return date.toISOString().slice(0, 10);
}

/** The default range: the last `days` days up to today (UTC), both inclusive. */
export function lastDays(days) {
  const end = new Date();
  const start = new Date(end.getTime() - (days - 1) * 86_400_000);
  return { start: day(start), end: day(end) };
}

/** The `p`th percentile (0..100) of numbers, nearest rank; null for none. */
export function percentile(values, p) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1];
}

export function shortHash(hash) {
  return hash ? hash.slice(0, 12) : "";
}

export function budgetText(budget) {
  if (!budget) return "unlimited";
  return `${usd(budget.limit_microdollars)} ${budget.period === "total" ? "in total" : `per ${budget.period}`}`;
}
