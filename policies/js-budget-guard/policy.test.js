// Native tests of the JavaScript `budget-guard` policy: the Rust policy's tests, case for case.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Completion, Plan, Request } from "tollgate-policy";
import { Harness } from "tollgate-policy/testing";

import * as policy from "./policy.js";

const CONFIG = {
  primary: { provider: "openai", model: "gpt-4o", credential: "oa" },
  fallback: { provider: "openai", model: "gpt-4o-mini", credential: "oa" },
  user_cap_microdollars: 1000,
};

const model = (d) => (d instanceof Plan ? d.targets[0].model : `rejected:${d.code}`);

test("downgrades past the threshold", () => {
  assert.equal(model(new Harness().config(CONFIG).budget(100, 79).route(policy, new Request("x"))), "gpt-4o");
  assert.equal(model(new Harness().config(CONFIG).budget(100, 80).route(policy, new Request("x"))), "gpt-4o-mini");
  assert.equal(model(new Harness().config(CONFIG).budget(undefined, 10_000).route(policy, new Request("x"))), "gpt-4o");
});

test("the trace names the share, rounded as Rust rounds it", () => {
  assert.equal(new Harness().config(CONFIG).budget(100, 79).route(policy, new Request("x")).trace, "primary at 79% of budget");
  assert.equal(new Harness().config(CONFIG).budget(1000, 805).route(policy, new Request("x")).trace, "downgraded at 80% of budget");
  assert.equal(new Harness().config({ ...CONFIG, downgrade_at: 1 }).budget(1000, 25).route(policy, new Request("x")).trace, "primary at 2% of budget");
});

test("the user cap is enforced from memory counters", () => {
  const h = new Harness().config(CONFIG).budget(1_000_000, 0);
  const request = new Request("x", { endUser: "alice" });
  const first = h.route(policy, request);
  assert.equal(model(first), "gpt-4o");
  assert.equal(first.notifyComplete, true);
  const done = new Completion({ endUser: "alice", costMicrodollars: 600 });
  h.onComplete(policy, done);
  assert.equal(model(h.route(policy, request)), "gpt-4o");
  h.onComplete(policy, done);
  assert.deepEqual([...h.memory.get("user-spend/2026-11/alice")], [0xb0, 0x04, 0, 0, 0, 0, 0, 0]);
  const refused = h.route(policy, request);
  assert.equal(model(refused), "rejected:user_budget_exceeded");
  assert.deepEqual([refused.status, refused.message], [429, "end user 'alice' has used its budget for 2026-11"]);
  assert.equal(model(h.route(policy, new Request("x", { endUser: "bob" }))), "gpt-4o");
});

test("a quota failure is logged, not fatal", () => {
  const h = new Harness().config(CONFIG).budget(1_000_000, 0).memoryQuota(4);
  h.onComplete(policy, new Completion({ endUser: "alice", costMicrodollars: 5 }));
  assert.deepEqual(h.log, [["warn", "could not record spend of end user 'alice': memory quota exceeded"]]);
});

test("a missing section is a clear rejection", () => {
  const r = new Harness().config({ primary: CONFIG.primary }).route(policy, new Request("x"));
  assert.deepEqual([r.status, r.code, r.message], [400, "invalid_policy_config", "invalid policy config: missing field `fallback`"]);
});
