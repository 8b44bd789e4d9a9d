// Sessions and policy memory: what the gateway keeps for this tenant between requests.

import { api } from "./api.js";
import { count, time } from "./format.js";
import { ConfirmButton, Empty, ErrorBox, Loaded, html, useAction, useLoad, useState } from "./ui.js";

function SessionTurns({ prefix, id, onClose }) {
  const state = useLoad(() => api("GET", `${prefix}/sessions/${encodeURIComponent(id)}`), [prefix, id]);
  return html`<div class="panel inset" data-test="session-view">
    <div class="panel-head"><h4>Session <span class="mono">${id}</span></h4><button type="button" data-test="session-close" onClick=${onClose}>Close</button></div>
    <${Loaded} state=${state}>${({ turns }) => html`<ol class="turns">${turns.map((t, i) => html`
      <li key=${i} class=${`turn ${t.role}`}><span class="muted small">${t.role} · ${time(t.unix_millis)}</span><p class="break">${t.content}</p></li>`)}</ol>`}
    </${Loaded}>
  </div>`;
}

export function Sessions({ prefix }) {
  const sessions = useLoad(() => api("GET", `${prefix}/sessions`), [prefix]);
  const memory = useLoad(() => api("GET", `${prefix}/memory`), [prefix]);
  const [open, setOpen] = useState(null);
  const action = useAction();
  const removeSession = async (id) => {
    if (await action.run(() => api("DELETE", `${prefix}/sessions/${encodeURIComponent(id)}`))) {
      if (open === id) setOpen(null);
      sessions.reload();
    }
  };
  const removeKey = async (key) => {
    if (await action.run(() => api("DELETE", `${prefix}/memory/${encodeURIComponent(key)}`))) memory.reload();
  };
  return html`<section class="panel" data-test="sessions">
    <h3>Sessions</h3>
    <${ErrorBox} error=${action.error} />
    <${Loaded} state=${sessions}>${({ data }) => data.length === 0 ? html`<${Empty}>No stored sessions.</${Empty}>` : html`
      <table data-test="session-table">
        <thead><tr><th>Session</th><th class="num">Turns</th><th></th></tr></thead>
        <tbody>${data.map((s) => html`<tr key=${s.id} data-test="session-row" data-session=${s.id}>
          <td class="mono">${s.id}</td><td class="num">${count(s.turns)}</td>
          <td class="actions"><button type="button" data-test="session-open" onClick=${() => setOpen(s.id)}>View</button>
            <${ConfirmButton} label="Delete" confirm="Delete session" test="session-delete" onConfirm=${() => removeSession(s.id)} /></td>
        </tr>`)}</tbody>
      </table>`}
    </${Loaded}>
    ${open && html`<${SessionTurns} prefix=${prefix} id=${open} onClose=${() => setOpen(null)} />`}
    <h3>Policy memory</h3>
    <${Loaded} state=${memory}>${(m) => html`
      <p class="muted small" data-test="memory-usage">${count(m.used_bytes)} of ${count(m.quota_bytes)} bytes used</p>
      ${m.data.length === 0 ? html`<${Empty}>The policy has stored nothing.</${Empty}>` : html`
      <table data-test="memory-table">
        <thead><tr><th>Key</th><th>Value</th><th class="num">Bytes</th><th></th></tr></thead>
        <tbody>${m.data.map((e) => html`<tr key=${e.key} data-test="memory-row">
          <td class="mono break">${e.key}</td><td class="break">${e.value}</td><td class="num">${count(e.bytes)}</td>
          <td class="actions"><${ConfirmButton} label="Delete" confirm="Delete key" test="memory-delete" onConfirm=${() => removeKey(e.key)} /></td>
        </tr>`)}</tbody>
      </table>`}`}
    </${Loaded}>
  </section>`;
}
