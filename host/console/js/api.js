// The one place the console talks to the gateway. The token lives only in this module's
// variable: never in web storage, a cookie or anything else that outlives the page, so a
// reload signs out and there is no ambient credential for another site to ride (no CSRF
// surface).

let token = null;

/** An API answer that was not 2xx, with the gateway's own message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

export function setToken(value) {
  token = value;
}

/** The error's message for a person: the gateway's `error.message`, else the status. */
async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's page, an empty body): the status line says enough.
  }
  const error = body && body.error;
  const message = (error && error.message) || `${response.status} ${response.statusText || "error"}`;
  return new ApiError(response.status, (error && error.code) || "", message);
}

/**
 * Calls `path` with the signed-in token. `body` is JSON unless it is an ArrayBuffer
 * (a policy upload, sent as raw bytes). Resolves to the parsed JSON; rejects with an
 * ApiError (HTTP errors) or a TypeError (the network).
 */
export async function api(method, path, body) {
  return send(method, path, body, token);
}

/** GETs `path` without the token (a public document such as `/openapi.json`), like `api`. */
export async function getPublic(path) {
  return send("GET", path, undefined, null);
}

async function send(method, path, body, bearer) {
  const headers = {};
  if (bearer !== null) headers["Authorization"] = `Bearer ${bearer}`;
  let payload;
  if (body instanceof ArrayBuffer) {
    headers["Content-Type"] = "application/wasm";
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, cache: "no-store", credentials: "omit" });
  } catch (e) {
    throw new ApiError(0, "network", `the gateway did not answer (${e.message})`);
  }
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** A query string from the defined values of `params`. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** The path prefix of one tenant's resources, as the caller reaches them. */
export function tenantPrefix(who, tenantId) {
  return who.kind === "operator" ? `/admin/v1/tenants/${encodeURIComponent(tenantId)}` : "/v1/tenant";
}

// Tokens the gateway issues start with this (tokens.rs TOKEN_PREFIX); the operator token is
// whatever the operator chose.
const TENANT_TOKEN_PREFIX = "tg_";

/**
 * Signs in with `value` and says who it is: `{kind: "operator"}` or
 * `{kind: "tenant", tenant}`. A `tg_` token is tried as a tenant's first, anything else as
 * the operator's first, so the usual sign-in makes no failing request.
 */
export async function signIn(value) {
  setToken(value);
  const asOperator = async () => {
    await api("GET", "/admin/v1/tenants");
    return { kind: "operator" };
  };
  const asTenant = async () => ({ kind: "tenant", tenant: await api("GET", "/v1/tenant") });
  const order = value.startsWith(TENANT_TOKEN_PREFIX) ? [asTenant, asOperator] : [asOperator, asTenant];
  let first = null;
  for (const attempt of order) {
    try {
      return await attempt();
    } catch (e) {
      if (!(e instanceof ApiError) || e.status === 0) {
        setToken(null);
        throw e;
      }
      first = first || e;
    }
  }
  setToken(null);
  throw first;
}

export function signOut() {
  setToken(null);
}
