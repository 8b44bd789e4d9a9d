// The few building blocks every view shares: htm bound to Preact, loading with errors
// shown, and small controls.

import { h } from "../vendor/preact.mjs";
import { useCallback, useEffect, useState } from "../vendor/hooks.mjs";
import htm from "../vendor/htm.mjs";

export const html = htm.bind(h);
export { useEffect, useRef, useState } from "../vendor/hooks.mjs";

/** The message of anything thrown, for a person. */
export function messageOf(error) {
  return (error && error.message) || String(error);
}

/**
 * Loads `load()` when `deps` change. Returns `{data, error, loading, reload}`; a failure
 * lands in `error`, never as an uncaught rejection. An answer that arrives after a newer
 * load began is dropped.
 */
export function useLoad(load, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [generation, setGeneration] = useState(0);
  useEffect(() => {
    let current = true;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => current && setState({ data, error: null, loading: false }),
      (error) => current && setState({ data: null, error, loading: false }),
    );
    return () => {
      current = false;
    };
  }, [...deps, generation]);
  const reload = useCallback(() => setGeneration((g) => g + 1), []);
  return { ...state, reload };
}

/**
 * Runs an action (a form submit, a button) and keeps its error and busy state.
 * `run(fn)` resolves to fn's result, or undefined when it failed (the error is shown).
 */
export function useAction() {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const run = useCallback(async (fn) => {
    setBusy(true);
    setError(null);
    try {
      return await fn();
    } catch (e) {
      setError(e);
      return undefined;
    } finally {
      setBusy(false);
    }
  }, []);
  return { error, busy, run, clear: () => setError(null) };
}

export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<p class="error" role="alert" data-test="error">${messageOf(error)}</p>`;
}

/** The loading line, the error, or the loaded view. */
export function Loaded({ state, children }) {
  if (state.error) return html`<${ErrorBox} error=${state.error} />`;
  if (state.data === null) return html`<p class="muted" data-test="loading">Loading…</p>`;
  return children(state.data);
}

/** A button that asks once more before a destructive action. */
export function ConfirmButton({ label, confirm, onConfirm, test, disabled }) {
  const [asking, setAsking] = useState(false);
  if (!asking) {
    return html`<button type="button" class="danger" data-test=${test} disabled=${disabled} onClick=${() => setAsking(true)}>${label}</button>`;
  }
  return html`<span class="confirm">
    <button type="button" class="danger" data-test=${`${test}-confirm`} onClick=${() => {
      setAsking(false);
      onConfirm();
    }}>${confirm}</button>
    <button type="button" data-test=${`${test}-cancel`} onClick=${() => setAsking(false)}>Cancel</button>
  </span>`;
}

export function Empty({ children }) {
  return html`<p class="muted" data-test="empty">${children}</p>`;
}
