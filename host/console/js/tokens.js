// Tokens: list, issue (the token is shown once, here, and never again) and revoke.

import { api } from "./api.js";
import { useBodyChoices } from "./apidoc.js";
import { time } from "./format.js";
import { ConfirmButton, Empty, ErrorBox, Loaded, html, messageOf, useAction, useLoad, useState } from "./ui.js";

function NewToken({ issued, onDone }) {
  const [copied, setCopied] = useState(null);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(issued.token);
      setCopied("Copied.");
    } catch (e) {
      setCopied(`Copy failed (${messageOf(e)}): select the field and copy it by hand.`);
    }
  };
  return html`<div class="new-secret" data-test="new-token">
    <p class="warning"><strong>Copy this ${issued.scope} token now.</strong> It is shown once: the gateway keeps only its hash.</p>
    <div class="copy-row">
      <input readonly class="mono" data-test="new-token-value" value=${issued.token} onFocus=${(e) => e.target.select()} aria-label="New token" />
      <button type="button" data-test="new-token-copy" onClick=${copy}>Copy</button>
      <button type="button" data-test="new-token-done" onClick=${onDone}>Done</button>
    </div>
    ${copied && html`<p class="muted small">${copied}</p>`}
  </div>`;
}

export function Tokens({ prefix }) {
  const state = useLoad(() => api("GET", `${prefix}/tokens`), [prefix]);
  // The gateway's scopes, from its description; the first is preselected.
  const scopes = useBodyChoices("POST", `${prefix}/tokens`, "scope");
  const [picked, setScope] = useState(null);
  const scope = picked || (scopes.data && scopes.data.choices[0]);
  const [issued, setIssued] = useState(null);
  const action = useAction();
  const issue = async (event) => {
    event.preventDefault();
    const answer = await action.run(() => api("POST", `${prefix}/tokens`, { scope }));
    if (answer) {
      setIssued(answer);
      state.reload();
    }
  };
  const revoke = async (id) => {
    await action.run(() => api("DELETE", `${prefix}/tokens/${encodeURIComponent(id)}`));
    state.reload();
  };
  return html`<section class="panel" data-test="tokens">
    <h3>Tokens</h3>
    <form class="inline" onSubmit=${issue}>
      <label>Scope <select data-test="token-scope" value=${scope} onChange=${(e) => setScope(e.target.value)} disabled=${!scopes.data}>
        ${scopes.data && scopes.data.choices.map((s) => html`<option key=${s} value=${s}>${s}</option>`)}
      </select></label>
      <button type="submit" data-test="token-create" disabled=${action.busy || !scope}>Issue a token</button>
    </form>
    ${scopes.data && scopes.data.description && html`<p class="muted small" data-test="token-scope-help">${scopes.data.description}</p>`}
    <${ErrorBox} error=${scopes.error} />
    <${ErrorBox} error=${action.error} />
    ${issued && html`<${NewToken} issued=${issued} onDone=${() => setIssued(null)} />`}
    <${Loaded} state=${state}>${({ data }) => data.length === 0 ? html`<${Empty}>No tokens.</${Empty}>` : html`
      <table data-test="token-table">
        <thead><tr><th>Id</th><th>Scope</th><th>Created (UTC)</th><th></th></tr></thead>
        <tbody>${data.map((t) => html`<tr key=${t.id} data-test="token-row" data-token-id=${t.id}>
          <td class="mono">${t.id}</td><td>${t.scope}</td><td>${time(t.created_millis)}</td>
          <td class="actions"><${ConfirmButton} label="Revoke" confirm="Revoke for good" test="token-revoke" onConfirm=${() => revoke(t.id)} /></td>
        </tr>`)}</tbody>
      </table>`}
    </${Loaded}>
  </section>`;
}
