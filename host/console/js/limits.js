// Budget and limits (operator only: a tenant's token cannot change its own budget).

import { api } from "./api.js";
import { useBodyChoices } from "./apidoc.js";
import { budgetText, usd } from "./format.js";
import { ErrorBox, html, useAction, useState } from "./ui.js";

// What an empty period field means to the gateway.
const DEFAULT_PERIOD = "month";

export function Limits({ tenantId, tenant, onChanged }) {
  // Outlives the form, which starts over when the saved record comes back.
  const [saved, setSaved] = useState(false);
  if (!tenant) return html`<p class="muted" data-test="loading">Loading…</p>`;
  // Keyed on the record, so the form starts from what was saved last.
  return html`<${LimitsForm} key=${JSON.stringify(tenant)} tenantId=${tenantId} tenant=${tenant} onChanged=${onChanged} saved=${saved} setSaved=${setSaved} />`;
}

function LimitsForm({ tenantId, tenant, onChanged, saved, setSaved }) {
  const budget = tenant && tenant.budget;
  const [form, setForm] = useState(() => ({
    display_name: tenant.display_name || "",
    budget_usd: budget ? String(budget.limit_microdollars / 1e6) : "",
    budget_period: budget ? budget.period : DEFAULT_PERIOD,
  }));
  const periods = useBodyChoices("PATCH", `/admin/v1/tenants/${encodeURIComponent(tenantId)}`, "budget_period");
  const action = useAction();
  const field = (name) => (e) => setForm({ ...form, [name]: e.target.value });
  const submit = async (event) => {
    event.preventDefault();
    setSaved(false);
    const body = { display_name: form.display_name.trim(), budget_usd: form.budget_usd === "" ? null : Number(form.budget_usd) };
    if (form.budget_usd !== "") body.budget_period = form.budget_period;
    if (await action.run(() => api("PATCH", `/admin/v1/tenants/${encodeURIComponent(tenantId)}`, body))) {
      setSaved(true);
      onChanged();
    }
  };
  return html`<section class="panel" data-test="limits">
    <h3>Budget and limits</h3>
    ${html`<dl class="pairs">
      <dt>Budget</dt><dd data-test="limits-budget">${budgetText(tenant.budget)}</dd>
      <dt>Per end user</dt><dd>${tenant.user_budget_microdollars == null ? "unlimited" : usd(tenant.user_budget_microdollars)}</dd>
      <dt>Rate limits</dt><dd class="mono small">${JSON.stringify(tenant.rate_limits)}</dd>
      <dt>Request keys</dt><dd>${tenant.allow_request_keys ? "allowed" : "not allowed"}</dd>
    </dl>`}
    <form class="grid" onSubmit=${submit}>
      <label>Display name <input data-test="limits-name" value=${form.display_name} onInput=${field("display_name")} /></label>
      <label>Budget (USD, empty: unlimited) <input data-test="limits-budget-usd" type="number" min="0" step="0.01" value=${form.budget_usd} onInput=${field("budget_usd")} /></label>
      <label>Per <select data-test="limits-period" value=${form.budget_period} onChange=${field("budget_period")} disabled=${!periods.data}>
        ${periods.data && periods.data.choices.map((p) => html`<option key=${p} value=${p}>${p}</option>`)}
      </select></label>
      <div><button type="submit" data-test="limits-save" disabled=${action.busy}>Save</button></div>
    </form>
    <${ErrorBox} error=${periods.error} />
    <${ErrorBox} error=${action.error} />
    ${saved && html`<p class="ok" data-test="limits-saved">Saved.</p>`}
  </section>`;
}
