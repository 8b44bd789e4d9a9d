// Credentials: names and providers only (the gateway never returns a secret); add or
// replace one (the key field is cleared once sent), delete one.

import { api } from "./api.js";
import { time } from "./format.js";
import { ConfirmButton, Empty, ErrorBox, Loaded, html, useAction, useLoad, useState } from "./ui.js";

const EMPTY = { name: "", provider: "", api_key: "" };

export function Credentials({ prefix }) {
  const state = useLoad(() => api("GET", `${prefix}/credentials`), [prefix]);
  const [form, setForm] = useState(EMPTY);
  const [saved, setSaved] = useState(null);
  const action = useAction();
  const field = (name) => (e) => setForm({ ...form, [name]: e.target.value });
  const submit = async (event) => {
    event.preventDefault();
    const name = form.name.trim();
    const body = { provider: form.provider.trim(), api_key: form.api_key };
    // The key leaves the page's state whether or not the gateway took it.
    setForm({ ...form, api_key: "" });
    const meta = await action.run(() => api("PUT", `${prefix}/credentials/${encodeURIComponent(name)}`, body));
    if (meta) {
      setSaved(meta.name);
      setForm(EMPTY);
      state.reload();
    }
  };
  const remove = async (name) => {
    await action.run(() => api("DELETE", `${prefix}/credentials/${encodeURIComponent(name)}`));
    state.reload();
  };
  return html`<section class="panel" data-test="credentials">
    <h3>Provider credentials</h3>
    <${Loaded} state=${state}>${({ data }) => data.length === 0 ? html`<${Empty}>No credentials.</${Empty}>` : html`
      <table data-test="credential-table">
        <thead><tr><th>Name</th><th>Provider</th><th>Stored (UTC)</th><th></th></tr></thead>
        <tbody>${data.map((c) => html`<tr key=${c.name} data-test="credential-row" data-name=${c.name}>
          <td class="mono">${c.name}</td><td>${c.provider}</td><td>${time(c.created_millis)}</td>
          <td class="actions"><${ConfirmButton} label="Delete" confirm="Delete for good" test="credential-delete" onConfirm=${() => remove(c.name)} /></td>
        </tr>`)}</tbody>
      </table>`}
    </${Loaded}>
    <h4>Add or replace</h4>
    <form class="grid" onSubmit=${submit} autocomplete="off">
      <label>Name <input data-test="credential-name" required value=${form.name} onInput=${field("name")} /></label>
      <label>Provider <input data-test="credential-provider" required list="known-providers" value=${form.provider} onInput=${field("provider")} /></label>
      <datalist id="known-providers"><option value="openai" /><option value="anthropic" /><option value="gemini" /><option value="demo" /></datalist>
      <label>API key <input data-test="credential-key" type="password" required autocomplete="new-password" value=${form.api_key} onInput=${field("api_key")} /></label>
      <div><button type="submit" data-test="credential-save" disabled=${action.busy}>Save</button></div>
    </form>
    <${ErrorBox} error=${action.error} />
    ${saved && html`<p class="ok" data-test="credential-saved">Stored ${saved}, sealed; it is never shown again.</p>`}
  </section>`;
}
