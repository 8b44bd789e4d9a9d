// The operator's home: every tenant (searched and paged on the server, so 10,000 tenants
// cost one page each), the top spenders, and creating a tenant; and the API tab.

import { api, query } from "./api.js";
import { useBodyChoices } from "./apidoc.js";
import { ApiRoutes } from "./apiroutes.js";
import { budgetText, count, lastDays, shortHash, usd } from "./format.js";
import { Empty, ErrorBox, Loaded, html, useAction, useEffect, useLoad, useState } from "./ui.js";

// Typing in the search box asks the server once the user pauses, not per keystroke.
const SEARCH_DELAY_MS = 250;

function TenantList({ onOpen, generation }) {
  const [typed, setTyped] = useState("");
  const [q, setQ] = useState("");
  // `after` of each page shown so far: the last is this page's, popping goes back.
  const [pages, setPages] = useState([null]);
  useEffect(() => {
    const timer = setTimeout(() => {
      setQ(typed.trim());
      setPages([null]);
    }, SEARCH_DELAY_MS);
    return () => clearTimeout(timer);
  }, [typed]);
  const after = pages[pages.length - 1];
  const state = useLoad(() => api("GET", `/admin/v1/tenants${query({ q, after })}`), [q, after, generation]);
  return html`<section class="panel" data-test="tenant-list">
    <div class="panel-head">
      <h2>Tenants</h2>
      <input type="search" placeholder="Search tenant ids" data-test="tenant-search" aria-label="Search tenant ids"
        value=${typed} onInput=${(e) => setTyped(e.target.value)} />
    </div>
    <${Loaded} state=${state}>${(page) => html`
      <p class="muted small" data-test="tenant-total">${count(page.total)} tenants${q ? html` · showing ids containing “${q}”` : ""}</p>
      ${page.data.length === 0 ? html`<${Empty}>No tenants match.</${Empty}>` : html`
      <table>
        <thead><tr><th>Id</th><th>Name</th><th>Budget</th><th>Policy</th></tr></thead>
        <tbody>${page.data.map((t) => html`
          <tr key=${t.id} class="clickable" data-test="tenant-row" data-tenant=${t.id} onClick=${() => onOpen(t.id)}>
            <td><button type="button" class="link" data-test="tenant-open">${t.id}</button></td>
            <td>${t.display_name}</td>
            <td>${budgetText(t.budget)}</td>
            <td class="mono">${t.policy ? shortHash(t.policy.hash) : "default"}</td>
          </tr>`)}
        </tbody>
      </table>`}
      <div class="pager">
        <button type="button" data-test="page-prev" disabled=${pages.length === 1} onClick=${() => setPages(pages.slice(0, -1))}>Previous</button>
        <span class="muted small" data-test="page-number">Page ${pages.length}</span>
        <button type="button" data-test="page-next" disabled=${!page.next_after} onClick=${() => setPages([...pages, page.next_after])}>Next</button>
      </div>`}
    </${Loaded}>
  </section>`;
}

function TopTenants({ onOpen, generation }) {
  const [range] = useState(() => lastDays(30));
  const state = useLoad(() => api("GET", `/admin/v1/usage/top${query({ ...range, limit: 10 })}`), [generation]);
  return html`<section class="panel" data-test="top-tenants">
    <h2>Top tenants by spend <span class="muted small">${range.start} to ${range.end}</span></h2>
    <${Loaded} state=${state}>${(top) => top.data.length === 0 ? html`<${Empty}>No spend in the last 30 days.</${Empty}>` : html`
      <table>
        <thead><tr><th>Tenant</th><th class="num">Spend</th><th class="num">Requests</th></tr></thead>
        <tbody>${top.data.map((t) => html`
          <tr key=${t.tenant_id} class="clickable" data-test="top-row" data-tenant=${t.tenant_id} onClick=${() => onOpen(t.tenant_id)}>
            <td>${t.tenant_id}${t.display_name ? html` <span class="muted">${t.display_name}</span>` : ""}</td>
            <td class="num" data-test="top-spend">${usd(t.cost_microdollars)}</td>
            <td class="num">${count(t.requests)}</td>
          </tr>`)}
        </tbody>
      </table>`}
    </${Loaded}>
  </section>`;
}

// What an empty period field means to the gateway (CreateTenant's `budget_period`).
const DEFAULT_PERIOD = "month";

function CreateTenant({ onCreated }) {
  const blank = { id: "", display_name: "", budget_usd: "", budget_period: DEFAULT_PERIOD };
  const [form, setForm] = useState(blank);
  const periods = useBodyChoices("POST", "/admin/v1/tenants", "budget_period");
  const [created, setCreated] = useState(null);
  const action = useAction();
  const field = (name) => (e) => setForm({ ...form, [name]: e.target.value });
  const submit = async (event) => {
    event.preventDefault();
    const body = { id: form.id.trim(), display_name: form.display_name.trim() };
    if (form.budget_usd !== "") {
      body.budget_usd = Number(form.budget_usd);
      body.budget_period = form.budget_period;
    }
    const tenant = await action.run(() => api("POST", "/admin/v1/tenants", body));
    if (tenant) {
      setCreated(tenant.id);
      setForm(blank);
      onCreated();
    }
  };
  return html`<section class="panel" data-test="create-tenant">
    <h2>Create a tenant</h2>
    <form class="grid" onSubmit=${submit}>
      <label>Id <input data-test="create-tenant-id" required value=${form.id} onInput=${field("id")} /></label>
      <label>Display name <input data-test="create-tenant-name" value=${form.display_name} onInput=${field("display_name")} /></label>
      <label>Budget (USD, empty: unlimited) <input data-test="create-tenant-budget" type="number" min="0" step="0.01" value=${form.budget_usd} onInput=${field("budget_usd")} /></label>
      <label>Per <select data-test="create-tenant-period" value=${form.budget_period} onChange=${field("budget_period")} disabled=${!periods.data}>
        ${periods.data && periods.data.choices.map((p) => html`<option key=${p} value=${p}>${p}</option>`)}
      </select></label>
      <div><button type="submit" data-test="create-tenant-submit" disabled=${action.busy}>Create</button></div>
    </form>
    <${ErrorBox} error=${periods.error} />
    <${ErrorBox} error=${action.error} />
    ${created && html`<p class="ok" data-test="create-tenant-done">Created ${created}. Issue it a token from its Tokens tab.</p>`}
  </section>`;
}

const TABS = [
  { id: "tenants", label: "Tenants" },
  { id: "api", label: "API" },
];

export function Operator({ who, onOpen }) {
  const [tab, setTab] = useState("tenants");
  // Bumped after a create so the list and the totals show the new tenant.
  const [generation, setGeneration] = useState(0);
  return html`<div class="operator" data-test="operator-view">
    <nav class="tabs" role="tablist">${TABS.map((t) => html`
      <button type="button" role="tab" aria-selected=${t.id === tab} class=${t.id === tab ? "tab active" : "tab"}
        data-test=${`tab-${t.id}`} onClick=${() => setTab(t.id)}>${t.label}</button>`)}
    </nav>
    ${tab === "api" ? html`<${ApiRoutes} who=${who} />` : html`
    <div class="columns" data-test="tenants">
      <${TenantList} onOpen=${onOpen} generation=${generation} />
      <div class="side">
        <${TopTenants} onOpen=${onOpen} generation=${generation} />
        <${CreateTenant} onCreated=${() => setGeneration((g) => g + 1)} />
      </div>
    </div>`}
  </div>`;
}
