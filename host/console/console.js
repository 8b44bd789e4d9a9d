// The web console's entry: who is signed in decides the view. The token is held by
// js/api.js only; signing out (or reloading) forgets it.

import { render } from "./vendor/preact.mjs";
import { signOut } from "./js/api.js";
import { description } from "./js/apidoc.js";
import { html, useState } from "./js/ui.js";
import { SignIn } from "./js/signin.js";
import { Operator } from "./js/operator.js";
import { TenantView } from "./js/tenant.js";

function Header({ who, onSignOut }) {
  const label = who.kind === "operator" ? "Operator" : `Tenant ${who.tenant.id}`;
  return html`<header class="top">
    <h1>Tollgate</h1>
    <span class="who" data-test="signed-in-as">${label}</span>
    <button type="button" data-test="sign-out" onClick=${onSignOut}>Sign out</button>
  </header>`;
}

function App() {
  const [who, setWho] = useState(null);
  // The tenant an operator drilled into; a tenant only ever sees its own.
  const [openTenant, setOpenTenant] = useState(null);
  const signedIn = (caller) => {
    // Read the API description once, now: the views that need it share this load, and
    // each shows its own error if it failed.
    description().catch(() => {});
    setWho(caller);
  };
  if (!who) return html`<${SignIn} onSignedIn=${signedIn} />`;
  const leave = () => {
    signOut();
    setOpenTenant(null);
    setWho(null);
  };
  let body;
  if (who.kind === "tenant") {
    body = html`<${TenantView} who=${who} tenantId=${who.tenant.id} />`;
  } else if (openTenant) {
    body = html`<${TenantView} who=${who} tenantId=${openTenant} onBack=${() => setOpenTenant(null)} />`;
  } else {
    // A tenant's pages start at their top, wherever the list was scrolled to.
    const open = (id) => {
      setOpenTenant(id);
      window.scrollTo(0, 0);
    };
    body = html`<${Operator} who=${who} onOpen=${open} />`;
  }
  return html`<${Header} who=${who} onSignOut=${leave} /><main>${body}</main>`;
}

// A rejection no view caught is shown, not left for the browser console.
window.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  const banner = document.createElement("p");
  banner.className = "error global-error";
  banner.dataset.test = "global-error";
  banner.textContent = `Unexpected error: ${(event.reason && event.reason.message) || event.reason}`;
  document.body.prepend(banner);
});

const root = document.getElementById("app");
// The "Loading" placeholder is static HTML: Preact renders next to what it did not create.
root.replaceChildren();
render(html`<${App} />`, root);
