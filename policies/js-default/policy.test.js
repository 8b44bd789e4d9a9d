// Native tests of the JavaScript `default` policy: the Rust policy's tests, case for case.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Plan, Rejection, Request, Target } from "tollgate-policy";
import { Harness } from "tollgate-policy/testing";

import * as policy from "./policy.js";

function plan(decision) {
  assert.ok(decision instanceof Plan, `rejected: ${JSON.stringify(decision)}`);
  return decision;
}

test("routes the requested model to the configured provider", () => {
  const h = new Harness().config({ provider: "openai", credential: "main", max_tokens: 500, temperature: 0.2 });
  const p = plan(h.route(policy, new Request("gpt-4o").user("hi")));
  assert.deepEqual(p.targets, [new Target("openai", "gpt-4o", "main", { maxTokens: 500, temperature: 0.2 })]);
  assert.equal(p.trace, "default:gpt-4o");
});

test("the client's temperature wins over the config's", () => {
  const h = new Harness().config({ provider: "openai", temperature: 0.2 });
  const request = new Request("gpt-4o", { temperature: 1.0 }).user("hi");
  assert.equal(plan(h.route(policy, request)).targets[0].temperature, undefined);
});

test("the default model fills in", () => {
  const h = new Harness().config({ provider: "openai", model: "gpt-4o-mini" });
  assert.equal(plan(h.route(policy, new Request("default"))).targets[0].model, "gpt-4o-mini");
  const rejected = new Harness().route(policy, new Request(""));
  assert.ok(rejected instanceof Rejection);
  assert.equal(rejected.code, "model_required");
});

test("a qualified model uses that provider's credential", () => {
  const h = new Harness().credential("oa", "openai").credential("ant", "anthropic").config({ provider: "openai", credential: "oa" });
  const p = plan(h.route(policy, new Request("anthropic/claude-sonnet-4")));
  assert.deepEqual(p.targets[0], new Target("anthropic", "claude-sonnet-4", "ant"));
});

test("the allow-list rejects other models", () => {
  const r = new Harness().config({ allowed_models: ["gpt-4o-mini"] }).route(policy, new Request("gpt-4o"));
  assert.ok(r instanceof Rejection);
  assert.deepEqual([r.status, r.code], [400, "model_not_allowed"]);
  assert.match(r.message, /gpt-4o-mini/);
});

test("a bad config is a clear rejection", () => {
  const r = new Harness().config('{"provder":"typo"}').route(policy, new Request("x"));
  assert.equal(r.code, "invalid_policy_config");
  assert.match(r.message, /provder/);
});

test("a wrong type in the config is a clear rejection", () => {
  const r = new Harness().config({ max_tokens: "many" }).route(policy, new Request("x"));
  assert.deepEqual([r.status, r.code, r.message], [400, "invalid_policy_config", "invalid policy config: expected a non-negative integer at `max_tokens`, found a string"]);
});
