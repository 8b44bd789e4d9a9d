// The API tab: the routes the signed-in caller may call, grouped by tag, as the gateway's
// own description (`/openapi.json`) lists them.

import { description, routesFor } from "./apidoc.js";
import { Empty, Loaded, html, useLoad } from "./ui.js";

export function ApiRoutes({ who }) {
  const state = useLoad(async () => routesFor(await description(), who), [who]);
  return html`<section class="panel" data-test="api">
    <h3>API</h3>
    <p class="muted small">What ${who.kind === "operator" ? "the operator token" : "this tenant's tokens"} may call, from the gateway's description at <code>/openapi.json</code>.</p>
    <${Loaded} state=${state}>${(groups) => groups.length === 0 ? html`<${Empty}>No routes.</${Empty}>` : groups.map((g) => html`
      <div key=${g.tag} class="api-group" data-test="api-group" data-tag=${g.tag}>
        <h4>${g.tag} ${g.description && html`<span class="muted small">${g.description}</span>`}</h4>
        <table>
          <thead><tr><th class="method">Method</th><th class="path">Path</th><th>Summary</th></tr></thead>
          <tbody>${g.routes.map((r) => html`<tr key=${`${r.method} ${r.path}`} data-test="api-route" data-method=${r.method} data-path=${r.path}>
            <td class="mono method">${r.method}</td><td class="mono break">${r.path}</td><td>${r.summary}</td></tr>`)}
          </tbody>
        </table>
      </div>`)}
    </${Loaded}>
  </section>`;
}
