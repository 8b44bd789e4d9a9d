// The candidate policy: an uploaded policy tried beside the live one (`shadow`: compared,
// never acted on; `canary`: decides its share of requests), how its decisions compared
// with the acting ones, and promoting it (it becomes the policy, the old one is kept for
// rollback) or dropping it.

import { api } from "./api.js";
import { useBodyChoices } from "./apidoc.js";
import { count, shortHash } from "./format.js";
import { ConfirmButton, Empty, ErrorBox, Loaded, html, useAction, useLoad, useState } from "./ui.js";

// The hash select's entry for a hash typed by hand (no real hash is empty).
const TYPED = "";

/** A decision as the comparison log records it, for a person. */
function decisionText(decision) {
  if (!decision || typeof decision !== "object") return "–";
  if (Array.isArray(decision.route)) return decision.route.length ? `route ${decision.route.join(" → ")}` : "route (no target)";
  if (typeof decision.reject === "string") return `reject ${decision.reject}`;
  if (typeof decision.failed === "string") return `failed: ${decision.failed}`;
  return JSON.stringify(decision);
}

/** The hashes worth offering: the tenant's uploads, then the current and default policies, once each. */
function hashChoices(policy, uploads) {
  const labels = new Map();
  const add = (hash, label) => {
    if (!hash) return;
    if (!labels.has(hash)) labels.set(hash, []);
    labels.get(hash).push(label);
  };
  for (const upload of (uploads && uploads.data) || []) add(upload.hash, "upload");
  if (policy) {
    add(policy.policy && policy.policy.hash, "current policy");
    add(policy.default_policy, "gateway default");
  }
  return [...labels].map(([hash, names]) => ({ hash, label: `${shortHash(hash)}… (${names.join(", ")})` }));
}

function Assign({ prefix, policy, uploads, onAssigned }) {
  const choices = hashChoices(policy, uploads);
  const [picked, setPicked] = useState(null);
  const choice = picked !== null ? picked : choices.length ? choices[0].hash : TYPED;
  const [typed, setTyped] = useState("");
  const [config, setConfig] = useState("{}");
  const modes = useBodyChoices("PUT", `${prefix}/policy/candidate`, "mode");
  const [pickedMode, setMode] = useState(null);
  const mode = pickedMode || (modes.data && modes.data.choices[0]);
  const [percent, setPercent] = useState("");
  const action = useAction();
  const submit = async (event) => {
    event.preventDefault();
    const done = await action.run(() => {
      const body = { hash: (choice === TYPED ? typed : choice).trim(), mode };
      try {
        body.config = config.trim() === "" ? {} : JSON.parse(config);
      } catch (e) {
        throw new Error(`The config is not JSON: ${e.message}`);
      }
      // Left empty, the gateway decides: every request for a shadow, a refusal for a canary.
      if (percent.trim() !== "") body.percent = Number(percent);
      return api("PUT", `${prefix}/policy/candidate`, body);
    });
    if (done) onAssigned();
  };
  return html`<form class="stack" data-test="candidate-form" onSubmit=${submit}>
    <label>Policy <select class="mono" data-test="candidate-hash-choice" value=${choice} onChange=${(e) => setPicked(e.target.value)}>
      ${choices.map((c) => html`<option key=${c.hash} value=${c.hash}>${c.label}</option>`)}
      <option value=${TYPED}>Another hash (type it)</option>
    </select></label>
    ${choice === TYPED && html`<label>Policy hash <input class="mono" data-test="candidate-hash" required value=${typed} onInput=${(e) => setTyped(e.target.value)} /></label>`}
    <label>Config (JSON) <textarea class="mono" rows="4" data-test="candidate-config" value=${config} onInput=${(e) => setConfig(e.target.value)}></textarea></label>
    <div class="inline-fields">
      <label>Mode <select data-test="candidate-mode" value=${mode} onChange=${(e) => setMode(e.target.value)} disabled=${!modes.data}>
        ${modes.data && modes.data.choices.map((m) => html`<option key=${m} value=${m}>${m}</option>`)}
      </select></label>
      <label>Share of requests (%) <input type="number" min="1" max="100" step="1" placeholder="shadow: 100" data-test="candidate-percent"
        value=${percent} onInput=${(e) => setPercent(e.target.value)} /></label>
    </div>
    ${modes.data && modes.data.description && html`<p class="muted small" data-test="candidate-mode-help">${modes.data.description}</p>`}
    <${ErrorBox} error=${modes.error} />
    <div><button type="submit" data-test="candidate-submit" disabled=${action.busy || !mode}>Try as candidate</button></div>
    <${ErrorBox} error=${action.error} />
  </form>`;
}

function Current({ candidate, prefix, onChanged }) {
  const action = useAction();
  const act = async (method, path) => {
    if (await action.run(() => api(method, path))) onChanged();
  };
  if (!candidate) return html`<p class="muted" data-test="candidate-none">No candidate: the current policy decides every request.</p>`;
  return html`<div data-test="candidate-current">
    <dl class="pairs">
      <dt>Policy</dt><dd class="mono break" data-test="candidate-hash-shown" data-hash=${candidate.hash} title=${candidate.hash}>${shortHash(candidate.hash)}</dd>
      <dt>Mode</dt><dd data-test="candidate-mode-shown">${candidate.mode}</dd>
      <dt>Share</dt><dd data-test="candidate-percent-shown">${candidate.percent}% of requests</dd>
      <dt>Config</dt><dd><pre class="config" data-test="candidate-config-shown">${candidate.config}</pre></dd>
    </dl>
    <div class="controls">
      <${ConfirmButton} label="Promote" confirm="Make it the current policy" test="candidate-promote" onConfirm=${() => act("POST", `${prefix}/policy/candidate/promote`)} />
      <${ConfirmButton} label="Drop" confirm="Drop the candidate" test="candidate-drop" onConfirm=${() => act("DELETE", `${prefix}/policy/candidate`)} />
    </div>
    <${ErrorBox} error=${action.error} />
  </div>`;
}

function Tally({ comparisons }) {
  const figures = [
    ["Compared", comparisons.compared, "compared"],
    ["Same", comparisons.same, "same"],
    ["Different", comparisons.different, "different"],
    ["Failed beside", comparisons.beside_failed, "beside-failed"],
    ["Canary failures", comparisons.canary_failed, "canary-failed"],
  ];
  return html`<dl class="stats" data-test="candidate-tally">${figures.map(([name, value, test]) => html`
    <div key=${test}><dt>${name}</dt><dd data-test=${`candidate-${test}`}>${count(value)}</dd></div>`)}
  </dl>`;
}

function Decision({ side, test }) {
  return html`<td data-test=${test}>
    <span class="mono break">${decisionText(side && side.decision)}</span>
    ${side && side.policy && html`<div class="muted small mono" title=${side.policy}>${shortHash(side.policy)}</div>`}
  </td>`;
}

/** One comparison line; a failed canary (the live policy then decided) has no `beside`. */
function Comparison({ entry }) {
  const fellBack = entry.fallback !== undefined;
  const [result, kind] = fellBack ? ["canary failed", "bad"] : entry.same ? ["same", "ok"] : ["different", "differs"];
  return html`<tr data-test="candidate-comparison" data-request-id=${entry.request_id} data-result=${result} class=${kind === "ok" ? "" : `row-${kind}`}>
    <td class="mono break">${entry.request_id}</td>
    <td>${entry.mode}</td>
    ${fellBack
      ? html`<td data-test="comparison-acting"><span>the current policy (fallback)</span></td><${Decision} side=${entry.canary} test="comparison-beside" />`
      : html`<${Decision} side=${entry.acting} test="comparison-acting" /><${Decision} side=${entry.beside} test="comparison-beside" />`}
    <td><span class=${`outcome ${kind}`} data-test="comparison-result">${result}</span></td>
  </tr>`;
}

/** The candidate panel of the Policy tab; `generation` changes when the policy did. */
export function Candidate({ prefix, policy, uploads, generation, onChanged }) {
  const report = useLoad(() => api("GET", `${prefix}/policy/candidate`), [prefix, generation]);
  return html`<section class="panel" data-test="candidate">
    <div class="panel-head">
      <h3>Candidate policy</h3>
      <button type="button" data-test="candidate-refresh" disabled=${report.loading} onClick=${report.reload}>Refresh</button>
    </div>
    <p class="muted small">A candidate runs beside the current policy: in shadow mode its decisions are only compared; in canary mode it decides its share of requests (the current policy takes over when it fails).</p>
    <${Loaded} state=${report}>${(r) => html`
      <${Current} candidate=${r.candidate} prefix=${prefix} onChanged=${onChanged} />
      <h4>How its decisions compared</h4>
      <${Tally} comparisons=${r.comparisons} />
      ${r.recent.length === 0 ? html`<${Empty}>No comparisons yet.</${Empty}>` : html`
      <table data-test="candidate-comparisons">
        <thead><tr><th>Request</th><th>Mode</th><th>Acted on</th><th>Beside</th><th>Result</th></tr></thead>
        <tbody>${r.recent.map((entry, i) => html`<${Comparison} key=${`${entry.request_id}-${i}`} entry=${entry} />`)}</tbody>
      </table>`}`}
    </${Loaded}>
    <h4>Try a policy as candidate</h4>
    <${Assign} prefix=${prefix} policy=${policy} uploads=${uploads} onAssigned=${onChanged} />
  </section>`;
}
