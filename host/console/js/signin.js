// Sign-in: the operator token or a tenant's manage token, pasted by the user.

import { signIn } from "./api.js";
import { ErrorBox, html, useAction, useState } from "./ui.js";

export function SignIn({ onSignedIn }) {
  const [token, setToken] = useState("");
  const action = useAction();
  const submit = async (event) => {
    event.preventDefault();
    const who = await action.run(() => signIn(token.trim()));
    if (who) {
      setToken("");
      onSignedIn(who);
    }
  };
  return html`<main class="signin">
    <h1>Tollgate console</h1>
    <form data-test="signin-form" onSubmit=${submit}>
      <label for="signin-token">Operator token or a tenant's manage token</label>
      <input id="signin-token" data-test="signin-token" type="password" autocomplete="off" required
        value=${token} onInput=${(e) => setToken(e.target.value)} />
      <button type="submit" data-test="signin-submit" disabled=${action.busy}>Sign in</button>
      <p class="muted small">The token stays in this page's memory only: reloading or signing out forgets it.</p>
    </form>
    <${ErrorBox} error=${action.error} />
  </main>`;
}
