// The stock `default` policy in JavaScript: route the requested model (or the tenant's
// default model) to the provider and credential named in the tenant's config, within an
// allow-list. Same config and decisions as the Rust `policies/default`.
//
// Config (every field optional):
//   {"provider": "openai", "credential": "default", "model": "gpt-4o",
//    "allowed_models": ["gpt-4o", "gpt-4o-mini"], "max_tokens": 2000, "temperature": 0.7}
// A provider-qualified model (`anthropic/claude-sonnet-4`) goes to that provider with the
// tenant's first credential for it.

import { ConfigError, Plan, Target, credentials, reject, t } from "tollgate-policy";

const Config = t.object({
  // Provider for unqualified models (default `demo`).
  provider: t.optional(t.string),
  // Credential name for that provider (default: the tenant's first for it, or none).
  credential: t.optional(t.string),
  // Model used when the request names `default` or nothing.
  model: t.optional(t.string),
  // If non-empty, the only models (bare names) the tenant may use.
  allowed_models: t.withDefault(t.array(t.string), []),
  // Cap on completion tokens.
  max_tokens: t.optional(t.integer),
  // Temperature used when the client sets none.
  temperature: t.optional(t.number),
});

/** @type {import("tollgate-policy").Route} */
export function route(request, context) {
  let config;
  try {
    config = context.config(Config);
  } catch (e) {
    if (e instanceof ConfigError) return e.rejection();
    throw e;
  }
  let requested = request.model;
  if (requested === "" || requested === "default") {
    if (config.model === undefined) {
      return reject(400, "model_required", "the request names no model and the tenant has no default model");
    }
    requested = config.model;
  }
  const slash = requested.indexOf("/");
  const qualifier = slash >= 0 ? requested.slice(0, slash) : undefined;
  const model = slash >= 0 ? requested.slice(slash + 1) : requested;
  if (config.allowed_models.length > 0 && !config.allowed_models.includes(model)) {
    const allowed = config.allowed_models.join(", ");
    return reject(400, "model_not_allowed", `model '${model}' is not allowed for this tenant; allowed: ${allowed}`);
  }
  const provider = qualifier ?? config.provider ?? "demo";
  const credential =
    qualifier === undefined && config.credential !== undefined
      ? config.credential
      : (credentials.forProvider(provider)?.name ?? "");
  const target = new Target(provider, model, credential, { maxTokens: config.max_tokens });
  if (request.temperature === undefined) target.temperature = config.temperature;
  return Plan.to(target, { trace: `default:${requested}` });
}
