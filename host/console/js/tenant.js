// One tenant's pages, for the operator drilling in or the tenant itself (its manage
// token reaches only its own `/v1/tenant`). Operator-only tabs are not rendered at all for
// a tenant; the API tab is the tenant's own (the operator's is on its home page).

import { api, tenantPrefix } from "./api.js";
import { budgetText, shortHash } from "./format.js";
import { Loaded, html, useLoad, useState } from "./ui.js";
import { Spend } from "./spend.js";
import { Requests } from "./requests.js";
import { Tokens } from "./tokens.js";
import { Credentials } from "./credentials.js";
import { Policy } from "./policy.js";
import { Sessions } from "./sessions.js";
import { Audit } from "./audit.js";
import { Limits } from "./limits.js";
import { ApiRoutes } from "./apiroutes.js";

const TABS = [
  { id: "spend", label: "Spend", view: Spend },
  { id: "requests", label: "Requests", view: Requests },
  { id: "tokens", label: "Tokens", view: Tokens },
  { id: "credentials", label: "Credentials", view: Credentials },
  { id: "policy", label: "Policy", view: Policy },
  { id: "sessions", label: "Sessions & memory", view: Sessions },
  { id: "audit", label: "Audit", view: Audit },
  { id: "limits", label: "Budget & limits", view: Limits, only: "operator" },
  { id: "api", label: "API", view: ApiRoutes, only: "tenant" },
];

export function TenantView({ who, tenantId, onBack }) {
  const prefix = tenantPrefix(who, tenantId);
  const [tab, setTab] = useState("spend");
  // Bumped when a tab changes the tenant record (policy, budget), to show it fresh.
  const [generation, setGeneration] = useState(0);
  const tenant = useLoad(() => api("GET", prefix), [prefix, generation]);
  const tabs = TABS.filter((t) => !t.only || t.only === who.kind);
  const View = tabs.find((t) => t.id === tab).view;
  return html`<div class="tenant" data-test="tenant-view" data-tenant=${tenantId}>
    ${onBack && html`<button type="button" class="link back" data-test="back-to-tenants" onClick=${onBack}>← All tenants</button>`}
    <${Loaded} state=${tenant}>${(t) => html`
      <div class="tenant-head">
        <h2 data-test="tenant-title">${t.display_name || t.id} ${t.display_name ? html`<span class="muted">${t.id}</span>` : ""}</h2>
        <span class="pill" data-test="tenant-budget">Budget: ${budgetText(t.budget)}</span>
        <span class="pill mono">Policy: ${t.policy ? shortHash(t.policy.hash) : "default"}</span>
      </div>`}
    </${Loaded}>
    <nav class="tabs" role="tablist">${tabs.map((t) => html`
      <button type="button" role="tab" aria-selected=${t.id === tab} class=${t.id === tab ? "tab active" : "tab"}
        data-test=${`tab-${t.id}`} onClick=${() => setTab(t.id)}>${t.label}</button>`)}
    </nav>
    <${View} who=${who} prefix=${prefix} tenant=${tenant.data} tenantId=${tenantId} onChanged=${() => setGeneration((g) => g + 1)} />
  </div>`;
}
