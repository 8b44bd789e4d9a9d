// The wasm side: conversions between the component's imports and exports (as
// componentize-js presents them) and the SDK's values. Policy authors never import this;
// build.sh generates the entry module that does.
//
// Only bundled into a component: the `tollgate:policy/*` modules exist only there.

import * as witCatalog from "tollgate:policy/catalog@0.2.0";
import * as witCredentials from "tollgate:policy/credentials@0.2.0";
import * as witLog from "tollgate:policy/log@0.2.0";
import * as witMemory from "tollgate:policy/memory@0.2.0";
import * as witMetering from "tollgate:policy/metering@0.2.0";

import { MemoryDenied, installHost } from "./host.js";
import { Completion, Context, Plan, Rejection } from "./types.js";

/** u64 values arrive as bigints; the SDK hands out numbers. */
const num = (v) => (v === undefined || v === null ? undefined : Number(v));

/** A refused memory call: the binding throws an error whose `payload` is the WIT
 * `memory-error` variant (`{tag: "quota-exceeded"}`, `{tag: "unavailable", val: "..."}`). */
function denied(e) {
  const payload = e?.payload ?? e;
  if (payload && typeof payload.tag === "string") return new MemoryDenied(payload.tag, payload.val ?? "");
  return e;
}

function memoryCall(call) {
  try {
    return call();
  } catch (e) {
    throw denied(e);
  }
}

const model = (m) => ({
  provider: m.provider,
  model: m.model,
  inputMicrodollarsPerMtok: num(m.inputMicrodollarsPerMtok),
  outputMicrodollarsPerMtok: num(m.outputMicrodollarsPerMtok),
  contextWindow: m.contextWindow,
});

/** The host functions as the gateway's imports serve them. */
const witHost = {
  credentialsList: () => witCredentials.list().map((c) => ({ name: c.name, provider: c.provider })),
  memoryGet: (key) => memoryCall(() => witMemory.get(key) ?? undefined),
  memorySet: (key, value) => memoryCall(() => witMemory.set(key, value)),
  memoryDelete: (key) => memoryCall(() => witMemory.delete(key)),
  memoryListKeys: (prefix, limit) => memoryCall(() => witMemory.listKeys(prefix, limit)),
  meteringBudget() {
    const b = witMetering.budget();
    return {
      period: b.period,
      periodId: b.periodId,
      limitMicrodollars: num(b.limitMicrodollars),
      spentMicrodollars: num(b.spentMicrodollars),
      reservedMicrodollars: num(b.reservedMicrodollars),
    };
  },
  meteringUserSpend: (endUser) => num(witMetering.userSpend(endUser)),
  meteringTagSpend: (tag) => num(witMetering.tagSpend(tag)),
  catalogModels: () => witCatalog.models().map(model),
  catalogLookup(name) {
    const m = witCatalog.lookup(name);
    return m === undefined || m === null ? undefined : model(m);
  },
  logWrite: (level, message) => witLog.write(level, message),
};

const context = (c) =>
  new Context({ tenantId: c.tenantId, requestId: c.requestId, sessionId: c.sessionId ?? undefined, unixMillis: num(c.unixMillis), configJson: c.config });

const request = (r) => ({ ...r, endUser: r.endUser ?? undefined, maxTokens: r.maxTokens ?? undefined, temperature: r.temperature ?? undefined });

const completion = (c) =>
  new Completion({
    ...c,
    endUser: c.endUser ?? undefined,
    promptTokens: num(c.promptTokens),
    completionTokens: num(c.completionTokens),
    costMicrodollars: num(c.costMicrodollars),
    latencyMs: num(c.latencyMs),
  });

function decision(d) {
  if (d instanceof Plan) {
    return {
      tag: "route",
      val: {
        targets: d.targets.map((t) => ({
          provider: t.provider,
          model: t.model,
          credential: t.credential ?? "",
          maxTokens: t.maxTokens ?? undefined,
          temperature: t.temperature ?? undefined,
        })),
        reserveMicrodollars: d.reserveMicrodollars === undefined || d.reserveMicrodollars === null ? undefined : BigInt(d.reserveMicrodollars),
        tags: [...d.tags],
        trace: d.trace,
        notifyComplete: Boolean(d.notifyComplete),
      },
    };
  }
  if (d instanceof Rejection) return { tag: "reject", val: { status: d.status, code: d.code, message: d.message } };
  throw new TypeError(`route must return a Plan or a Rejection, not ${d}`);
}

/** Runs `call`; an exception fails the call (the gateway answers `policy_failed`) after
 * its message and stack went to the tenant's policy log, where the author can read it. */
function logged(call) {
  try {
    return call();
  } catch (e) {
    witLog.write("error", `${e?.stack ? `${e}\n${e.stack}` : String(e)}`.slice(0, 1000));
    throw e;
  }
}

/** The world's exports for `policy` (a module with `route` and optionally `onComplete`). */
export function exportPolicy(policy) {
  installHost(witHost);
  return {
    route: (r, c) => logged(() => decision(policy.route(request(r), context(c)))),
    onComplete: (done, c) => {
      if (policy.onComplete) logged(() => policy.onComplete(completion(done), context(c)));
    },
  };
}
