// tollgate-policy: write Tollgate routing policies in JavaScript.
//
// A policy is an ES module `policy.js` exporting `route(request, context)`, which returns a
// Plan (targets to try, in order) or a Rejection, and optionally
// `onComplete(completion, context)`. It runs in the gateway as a WebAssembly component in a
// fresh sandbox per call and sees only its own tenant's credentials (names, never
// secrets), memory, spend and the operator's model catalog, through `credentials`,
// `memory`, `metering`, `catalog` and `log`.
//
// Test it natively with `Harness` from "tollgate-policy/testing"; build it with
// `guest-sdk/js/build.sh DIR` (writes DIR/policy.wasm).

export { ConfigError, t } from "./config.js";
export { MemoryDenied, catalog, credentials, log, memory, metering, usedShare } from "./host.js";
export { Completion, Context, Plan, Rejection, Request, Target, formatWhole, reject } from "./types.js";
