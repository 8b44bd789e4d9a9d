// The values a policy receives (request, context, completion) and builds (targets, plans,
// rejections), with the WIT records' fields in camelCase. Integers are numbers, also the
// WIT's u64 ones (micro-dollars stay exact up to $9 billion).

import { parseConfig } from "./config.js";

/** One place to send the request. */
export class Target {
  /**
   * @param {string} provider a provider name from the operator's configuration
   * @param {string} model the model to ask that provider for
   * @param {string} [credential] the tenant credential to use; "" for a per-request key or none
   * @param {{maxTokens?: number, temperature?: number}} [options] a `max_tokens` cap and a
   *   temperature override for this target
   */
  constructor(provider, model, credential = "", { maxTokens, temperature } = {}) {
    this.provider = provider;
    this.model = model;
    this.credential = credential;
    this.maxTokens = maxTokens;
    this.temperature = temperature;
  }
}

/** What to do with an accepted request: targets in order, plus attribution. */
export class Plan {
  /**
   * @param {Target[]} targets tried in order; the next when one fails before any byte was sent
   * @param {{trace?: string, tags?: string[], reserveMicrodollars?: number, notifyComplete?: boolean}} [options]
   */
  constructor(targets, { trace = "", tags = [], reserveMicrodollars, notifyComplete = false } = {}) {
    this.targets = targets;
    this.trace = trace;
    this.tags = tags;
    this.reserveMicrodollars = reserveMicrodollars;
    this.notifyComplete = notifyComplete;
  }

  /** A plan with one target; `options` as for the constructor. */
  static to(target, options) {
    return new Plan([target], options);
  }

  /** Appends a fallback target, tried when the earlier ones fail. (Not named `then`: that
   * would make a plan look like a promise.) */
  fallback(target) {
    this.targets.push(target);
    return this;
  }
}

/** A refusal, sent to the client as an OpenAI-style error. */
export class Rejection {
  /**
   * @param {number} status HTTP status, 400 to 499 (anything else becomes 403)
   * @param {string} code machine-readable, e.g. `model_not_allowed`
   * @param {string} message for the client
   */
  constructor(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message;
  }
}

/** Refuses with `status`, a machine-readable `code` and a message for the client. */
export function reject(status, code, message) {
  return new Rejection(status, code, message);
}

/** Formats `x` with no decimals, ties to even: how Rust's `{:.0}` and Python's `:.0f`
 * print the same number, so traces read the same whichever language wrote the policy. */
export function formatWhole(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  const rounded = diff > 0.5 || (diff === 0.5 && floor % 2 !== 0) ? floor + 1 : floor;
  return String(rounded);
}

/** The request the client sent, validated by the gateway and translated into one shape
 * whatever API it came in. In tests: `new Request("gpt-4o").user("hi")`. */
export class Request {
  /** @param {string} model the `model` field as sent; @param {object} [fields] any other fields */
  constructor(model, fields = {}) {
    this.operation = "chat";
    this.api = "openai-chat-completions";
    this.model = model;
    this.messages = [];
    this.maxTokens = undefined;
    this.temperature = undefined;
    this.stream = false;
    this.toolCount = 0;
    this.endUser = undefined;
    this.metadata = [];
    this.promptTokenEstimate = 0;
    Object.assign(this, fields);
  }

  /** Appends a user message and grows the prompt estimate (4 bytes per token). */
  user(text) {
    this.promptTokenEstimate += Math.ceil(new TextEncoder().encode(text).length / 4);
    this.messages.push({ role: "user", text, imageCount: 0, toolCallCount: 0 });
    return this;
  }

  /** An embeddings request (`POST /v1/embeddings`), the inputs as one user message. */
  static embeddings(model, inputs) {
    return new Request(model, { operation: "embeddings", api: "openai-embeddings" }).user(inputs.join("\n"));
  }
}

/** Facts about the call that the client did not send. */
export class Context {
  constructor({ tenantId = "test-tenant", requestId = "test-request", sessionId, unixMillis = 0, configJson = "{}" } = {}) {
    this.tenantId = tenantId;
    this.requestId = requestId;
    this.sessionId = sessionId;
    this.unixMillis = unixMillis;
    /** The tenant's policy configuration as JSON; read it with `config(schema)`. */
    this.configJson = configJson;
  }

  /** Parses the tenant's configuration with `schema` (see `t`), or as a plain object
   * without one. Throws ConfigError naming what is wrong. */
  config(schema) {
    return parseConfig(this.configJson, schema);
  }
}

/** What happened to a routed request, given to `onComplete`. */
export class Completion {
  constructor(fields = {}) {
    this.requestId = "test-request";
    this.outcome = "success";
    this.provider = "";
    this.model = "";
    this.endUser = undefined;
    this.promptTokens = 0;
    this.completionTokens = 0;
    this.costMicrodollars = 0;
    this.latencyMs = 0;
    this.tags = [];
    Object.assign(this, fields);
  }
}
