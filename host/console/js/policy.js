// Policy: what is assigned (current, previous, the gateway's default), uploading a
// component, assigning one with its config, rolling back, the tenant's uploads and the
// policy's log lines; then the candidate policy tried beside it (candidate.js).

import { api } from "./api.js";
import { Candidate } from "./candidate.js";
import { count, time } from "./format.js";
import { ConfirmButton, Empty, ErrorBox, Loaded, html, useAction, useLoad, useState } from "./ui.js";

function Assignment({ title, assignment, test }) {
  return html`<div class="assignment" data-test=${test}>
    <h4>${title}</h4>
    ${assignment
      ? html`<p class="mono break" data-test=${`${test}-hash`}>${assignment.hash}</p><pre class="config" data-test=${`${test}-config`}>${assignment.config}</pre>`
      : html`<p class="muted" data-test=${`${test}-hash`}>none</p>`}
  </div>`;
}

function Upload({ who, prefix, onUploaded }) {
  const [file, setFile] = useState(null);
  const action = useAction();
  // The operator uploads into the gateway-wide store; a tenant into its own quota.
  const path = who.kind === "operator" ? "/admin/v1/policies" : `${prefix}/policies`;
  const submit = async (event) => {
    event.preventDefault();
    if (!file) return;
    const answer = await action.run(async () => api("POST", path, await file.arrayBuffer()));
    if (answer) {
      event.target.reset();
      setFile(null);
      onUploaded(answer.hash);
    }
  };
  return html`<form class="inline" data-test="policy-upload-form" onSubmit=${submit}>
    <label>Policy component (.wasm) <input type="file" accept=".wasm,application/wasm" data-test="policy-file" onChange=${(e) => setFile(e.target.files[0] || null)} /></label>
    <button type="submit" data-test="policy-upload" disabled=${!file || action.busy}>Upload</button>
    <${ErrorBox} error=${action.error} />
  </form>`;
}

function Assign({ prefix, hash, setHash, onAssigned }) {
  const [config, setConfig] = useState("{}");
  const action = useAction();
  const submit = async (event) => {
    event.preventDefault();
    const done = await action.run(() => {
      let parsed;
      try {
        parsed = config.trim() === "" ? {} : JSON.parse(config);
      } catch (e) {
        throw new Error(`The config is not JSON: ${e.message}`);
      }
      return api("PUT", `${prefix}/policy`, { hash: hash.trim(), config: parsed });
    });
    if (done) onAssigned();
  };
  return html`<form class="stack" data-test="policy-assign-form" onSubmit=${submit}>
    <label>Policy hash <input class="mono" data-test="policy-hash" required value=${hash} onInput=${(e) => setHash(e.target.value)} /></label>
    <label>Config (JSON) <textarea class="mono" rows="5" data-test="policy-config" value=${config} onInput=${(e) => setConfig(e.target.value)}></textarea></label>
    <div><button type="submit" data-test="policy-assign" disabled=${action.busy}>Assign</button></div>
    <${ErrorBox} error=${action.error} />
  </form>`;
}

export function Policy({ who, prefix, onChanged }) {
  const [generation, setGeneration] = useState(0);
  const current = useLoad(() => api("GET", `${prefix}/policy`), [prefix, generation]);
  const uploads = useLoad(() => api("GET", `${prefix}/policies`), [prefix, generation]);
  const log = useLoad(() => api("GET", `${prefix}/policy/log`), [prefix, generation]);
  const [hash, setHash] = useState("");
  const [uploaded, setUploaded] = useState(null);
  const action = useAction();
  const refresh = () => {
    setGeneration((g) => g + 1);
    onChanged();
  };
  const rollBack = async () => {
    if (await action.run(() => api("POST", `${prefix}/policy/rollback`))) refresh();
  };
  const remove = async (h) => {
    if (await action.run(() => api("DELETE", `${prefix}/policies/${h}`))) refresh();
  };
  return html`<section class="panel" data-test="policy">
    <h3>Policy</h3>
    <${Loaded} state=${current}>${(p) => html`
      <div class="assignments">
        <${Assignment} title="Current" assignment=${p.policy} test="policy-current" />
        <${Assignment} title="Previous" assignment=${p.previous_policy} test="policy-previous" />
        <div class="assignment"><h4>Gateway default</h4><p class="mono break" data-test="policy-default">${p.default_policy}</p>
          <p class="muted small">Serves when no policy is assigned.</p></div>
      </div>
      <${ConfirmButton} label="Roll back to the previous policy" confirm="Swap current and previous" test="policy-rollback"
        disabled=${!p.previous_policy} onConfirm=${rollBack} />`}
    </${Loaded}>
    <${ErrorBox} error=${action.error} />
    <h4>Upload</h4>
    <${Upload} who=${who} prefix=${prefix} onUploaded=${(h) => {
      setUploaded(h);
      setHash(h);
      setGeneration((g) => g + 1);
    }} />
    ${uploaded && html`<p class="ok" data-test="policy-uploaded">Uploaded <span class="mono" data-test="policy-uploaded-hash">${uploaded}</span>; assign it below.</p>`}
    <h4>Assign</h4>
    <${Assign} prefix=${prefix} hash=${hash} setHash=${setHash} onAssigned=${refresh} />
    <h4>This tenant's uploads</h4>
    <${Loaded} state=${uploads}>${(u) => html`
      <p class="muted small" data-test="policy-quota">${count(u.used_uploads)} of ${count(u.max_uploads)} uploads, ${count(u.used_bytes)} of ${count(u.max_bytes)} bytes</p>
      ${u.data.length === 0 ? html`<${Empty}>No uploads.</${Empty}>` : html`
      <table data-test="policy-uploads">
        <thead><tr><th>Hash</th><th class="num">Bytes</th><th>Uploaded (UTC)</th><th></th></tr></thead>
        <tbody>${u.data.map((r) => html`<tr key=${r.hash} data-test="policy-upload-row" data-hash=${r.hash}>
          <td class="mono break">${r.hash}${r.assigned ? html` <span class="pill">assigned</span>` : ""}</td>
          <td class="num">${count(r.bytes)}</td><td>${time(r.uploaded_millis)}</td>
          <td class="actions"><button type="button" data-test="policy-use" onClick=${() => setHash(r.hash)}>Use</button>
            <${ConfirmButton} label="Delete" confirm="Delete upload" test="policy-delete" disabled=${r.assigned} onConfirm=${() => remove(r.hash)} /></td>
        </tr>`)}</tbody>
      </table>`}`}
    </${Loaded}>
    <h4>Log</h4>
    <${Loaded} state=${log}>${({ data }) => data.length === 0 ? html`<${Empty}>The policy has logged nothing.</${Empty}>` : html`
      <table data-test="policy-log">
        <thead><tr><th>Time (UTC)</th><th>Level</th><th>Message</th><th>Request</th></tr></thead>
        <tbody>${data.map((l, i) => html`<tr key=${i}><td>${time(l.unix_millis)}</td><td>${l.level}</td><td class="break">${l.message}</td><td class="mono">${l.request_id}</td></tr>`)}</tbody>
      </table>`}
    </${Loaded}>
  </section>
  <${Candidate} prefix=${prefix} policy=${current.data} uploads=${uploads.data} generation=${generation} onChanged=${refresh} />`;
}
