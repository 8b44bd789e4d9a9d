// A native test harness: run a policy with `node --test`, no wasm involved.
//
// The harness plays the gateway: it holds fake credentials, memory, metering and a
// catalog, installs them for the duration of one call, and keeps what the policy wrote:
//
//   import { Harness } from "tollgate-policy/testing";
//   import * as policy from "./policy.js";
//   const h = new Harness().config({ provider: "openai", credential: "main" });
//   const plan = h.route(policy, new Request("gpt-4o").user("hi"));

import { MemoryDenied, installHost } from "./host.js";
import { Context, Plan, Rejection } from "./types.js";

/** The host's key limit. */
export const MAX_KEY_BYTES = 256;
/** The host caps `listKeys` at this many keys. */
export const MAX_LIST_KEYS = 1000;

const bytes = (s) => new TextEncoder().encode(s).length;

/** The fake gateway a native test runs a policy against. Starts empty: no credentials,
 * no budget, empty memory and catalog, config `{}`. */
export class Harness {
  constructor() {
    this.context = new Context();
    this.credentials = [];
    /** What the policy stored in memory: key to Uint8Array. */
    this.memory = new Map();
    this.quota = undefined;
    this.budgetStatus = { period: "month", periodId: "2026-11", limitMicrodollars: undefined, spentMicrodollars: 0, reservedMicrodollars: 0 };
    this.userSpends = new Map();
    this.tagSpends = new Map();
    this.models = [];
    /** What the policy logged: [level, message] pairs. */
    this.log = [];
  }

  /** Sets the tenant's policy configuration (a JSON string or an object). */
  config(config) {
    this.context.configJson = typeof config === "string" ? config : JSON.stringify(config);
    return this;
  }

  /** Adds a credential the policy can see. */
  credential(name, provider) {
    this.credentials.push({ name, provider });
    return this;
  }

  /** Adds a model to the catalog (prices in micro-dollars per million tokens). */
  model(provider, model, input, output, contextWindow) {
    this.models.push({ provider, model, inputMicrodollarsPerMtok: input, outputMicrodollarsPerMtok: output, contextWindow });
    return this;
  }

  /** Sets the budget the policy sees (period `month`, id `2026-11`); `limit` undefined for none. */
  budget(limitMicrodollars, spentMicrodollars) {
    this.budgetStatus = { period: "month", periodId: "2026-11", limitMicrodollars, spentMicrodollars, reservedMicrodollars: 0 };
    return this;
  }

  /** Sets one end user's settled spend. */
  userSpend(endUser, microdollars) {
    this.userSpends.set(endUser, microdollars);
    return this;
  }

  /** Sets one tag's settled spend. */
  tagSpend(tag, microdollars) {
    this.tagSpends.set(tag, microdollars);
    return this;
  }

  /** Limits the memory store to `limit` bytes of keys plus values. */
  memoryQuota(limit) {
    this.quota = limit;
    return this;
  }

  /** Runs `policy.route(request, context)` (`policy` is the module, or an object with
   * `route`) against this fake gateway; returns its Plan or Rejection, and throws a
   * TypeError for anything else, as the gateway would refuse it. */
  route(policy, request) {
    const decision = this.#installed(() => policy.route(request, this.context));
    if (!(decision instanceof Plan) && !(decision instanceof Rejection)) {
      throw new TypeError(`route must return a Plan or a Rejection, not ${decision}`);
    }
    return decision;
  }

  /** Runs `policy.onComplete(completion, context)`, if the policy has one. */
  onComplete(policy, completion) {
    if (policy.onComplete) this.#installed(() => policy.onComplete(completion, this.context));
  }

  #installed(call) {
    const previous = installHost(new FakeHost(this));
    try {
      return call();
    } finally {
      installHost(previous);
    }
  }
}

/** The host functions as the harness serves them. */
class FakeHost {
  constructor(harness) {
    this.h = harness;
  }

  static validKey(key) {
    if (key.length === 0 || bytes(key) > MAX_KEY_BYTES) throw new MemoryDenied("invalid-key");
  }

  credentialsList() {
    return this.h.credentials.map((c) => ({ ...c }));
  }

  memoryGet(key) {
    FakeHost.validKey(key);
    const value = this.h.memory.get(key);
    return value === undefined ? undefined : value.slice();
  }

  memorySet(key, value) {
    FakeHost.validKey(key);
    if (this.h.quota !== undefined) {
      let used = 0;
      for (const [k, v] of this.h.memory) if (k !== key) used += bytes(k) + v.length;
      if (used + bytes(key) + value.length > this.h.quota) throw new MemoryDenied("quota-exceeded");
    }
    this.h.memory.set(key, Uint8Array.from(value));
  }

  memoryDelete(key) {
    FakeHost.validKey(key);
    this.h.memory.delete(key);
  }

  memoryListKeys(prefix, limit) {
    const enc = new TextEncoder();
    const byBytes = (a, b) => Buffer.compare(Buffer.from(enc.encode(a)), Buffer.from(enc.encode(b)));
    return [...this.h.memory.keys()].filter((k) => k.startsWith(prefix)).sort(byBytes).slice(0, Math.min(limit, MAX_LIST_KEYS));
  }

  meteringBudget() {
    return { ...this.h.budgetStatus };
  }

  meteringUserSpend(endUser) {
    return this.h.userSpends.get(endUser) ?? 0;
  }

  meteringTagSpend(tag) {
    return this.h.tagSpends.get(tag) ?? 0;
  }

  catalogModels() {
    return this.h.models.map((m) => ({ ...m }));
  }

  catalogLookup(model) {
    const slash = model.indexOf("/");
    const provider = slash >= 0 ? model.slice(0, slash) : undefined;
    const name = slash >= 0 ? model.slice(slash + 1) : model;
    const found = this.h.models.find(
      (m) => (provider === undefined || m.provider === provider) && (m.model === name || name.startsWith(`${m.model}-`)),
    );
    return found === undefined ? undefined : { ...found };
  }

  logWrite(level, message) {
    this.h.log.push([level, message]);
  }
}
