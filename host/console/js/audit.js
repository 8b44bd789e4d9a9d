// The audit trail of this tenant: who changed what, newest first.

import { api } from "./api.js";
import { time } from "./format.js";
import { Empty, Loaded, html, useLoad } from "./ui.js";

export function Audit({ prefix }) {
  const state = useLoad(() => api("GET", `${prefix}/audit`), [prefix]);
  return html`<section class="panel" data-test="audit">
    <h3>Audit trail</h3>
    <${Loaded} state=${state}>${({ data }) => data.length === 0 ? html`<${Empty}>Nothing recorded yet.</${Empty}>` : html`
      <table data-test="audit-table">
        <thead><tr><th class="num">#</th><th>Time (UTC)</th><th>Actor</th><th>Action</th><th>Detail</th></tr></thead>
        <tbody>${[...data].reverse().map((r) => html`<tr key=${r.seq} data-test="audit-row">
          <td class="num">${r.seq}</td><td>${time(r.unix_millis)}</td><td class="mono">${r.actor}</td><td>${r.action}</td>
          <td class="mono break small">${JSON.stringify(r.detail)}</td>
        </tr>`)}</tbody>
      </table>`}
    </${Loaded}>
  </section>`;
}
