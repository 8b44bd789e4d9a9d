// Which host the capability namespaces call: the gateway's imports inside a component
// (installed by component.js), or the fake gateway of testing.js's Harness in a native test.

let current = null;

/** The installed host; a capability called outside a route call is a bug. */
function host() {
  if (current === null) {
    throw new Error("tollgate-policy host functions run only inside the gateway or Harness.route");
  }
  return current;
}

/** Makes `next` the host the capability namespaces call; returns the previous one. */
export function installHost(next) {
  const previous = current;
  current = next;
  return previous;
}

/** A memory call was refused. `kind` is the WIT case (`invalid-key`, `value-too-large`,
 * `quota-exceeded`, `too-many-operations`, `unavailable`); `detail` says why for the last. */
export class MemoryDenied extends Error {
  constructor(kind, detail = "") {
    const messages = {
      "invalid-key": "invalid key",
      "value-too-large": "value too large",
      "quota-exceeded": "memory quota exceeded",
      "too-many-operations": "too many memory operations",
    };
    super(kind === "unavailable" ? `memory unavailable: ${detail}` : (messages[kind] ?? kind));
    this.name = "MemoryDenied";
    this.kind = kind;
    this.detail = detail;
  }
}

/** The calling tenant's credentials: names and providers, never secrets. */
export const credentials = {
  /** Lists the tenant's credentials. */
  list: () => host().credentialsList(),
  /** The first credential stored for `provider`, or undefined. */
  forProvider: (provider) => host().credentialsList().find((c) => c.provider === provider),
};

/** The tenant's key-value store, with a quota. Refusals throw `MemoryDenied`. */
export const memory = {
  /** Reads a value (a Uint8Array); undefined if absent. */
  get: (key) => host().memoryGet(key),
  /** Writes a value (a Uint8Array or a string, stored as UTF-8). */
  set: (key, value) => host().memorySet(key, typeof value === "string" ? new TextEncoder().encode(value) : value),
  /** Deletes a key (absent keys are fine). */
  delete: (key) => host().memoryDelete(key),
  /** Keys starting with `prefix`, in byte order, at most `limit` (the host caps it at 1000). */
  listKeys: (prefix, limit) => host().memoryListKeys(prefix, limit),
  /** Reads a little-endian u64 counter as a number (absent or malformed reads as 0); the
   * bytes the Rust and Python SDKs use, so policies in any language share counters. */
  getU64(key) {
    const bytes = host().memoryGet(key);
    if (bytes === undefined || bytes.length !== 8) return 0;
    return Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  },
  /** Writes a little-endian u64 counter (a number or bigint, 0 to 2**64 - 1). */
  setU64(key, value) {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(value), true);
    host().memorySet(key, bytes);
  },
};

/** Read-only view of the tenant's spend, in micro-dollars. */
export const metering = {
  /** Budget and spend in the current period. */
  budget: () => host().meteringBudget(),
  /** Settled spend of one end user this period. */
  userSpend: (endUser) => host().meteringUserSpend(endUser),
  /** Settled spend under one tag this period. */
  tagSpend: (tag) => host().meteringTagSpend(tag),
};

/** The operator's model catalog with the tenant's prices. */
export const catalog = {
  /** Every model on offer. */
  models: () => host().catalogModels(),
  /** One model by name (`gpt-4o` or `openai/gpt-4o`); dated variants resolve to their family. */
  lookup: (model) => host().catalogLookup(model),
};

/** The tenant's bounded policy log (32 lines per call by default). */
export const log = {
  /** Appends a message at `level`: "trace", "debug", "info", "warn" or "error". */
  write: (level, message) => host().logWrite(level, message),
  info: (message) => host().logWrite("info", message),
  warn: (message) => host().logWrite("warn", message),
};

/** Spent plus reserved as a share of the budget (0 when there is no budget). */
export function usedShare(budget) {
  if (!budget.limitMicrodollars) return 0;
  return (budget.spentMicrodollars + budget.reservedMicrodollars) / budget.limitMicrodollars;
}
