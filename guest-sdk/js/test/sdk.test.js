// The SDK's own behaviour: strict configs, the fake host's limits, the builders.

import assert from "node:assert/strict";
import { test } from "node:test";

import { ConfigError, Context, MemoryDenied, Plan, Rejection, Request, Target, catalog, formatWhole, memory, t } from "../src/index.js";
import { Harness } from "../src/testing.js";

const Schema = t.object({
  inner: t.object({ name: t.string, weight: t.withDefault(t.number, 1) }),
  count: t.withDefault(t.integer, 0),
  names: t.withDefault(t.array(t.string), []),
  note: t.optional(t.string),
});

const config = (text) => new Context({ configJson: text }).config(Schema);

test("a config parses nested typed fields with defaults", () => {
  assert.deepEqual(config('{"inner": {"name": "a", "weight": 2}, "names": ["x"]}'), {
    inner: { name: "a", weight: 2 },
    count: 0,
    names: ["x"],
    note: undefined,
  });
});

test("a config error names what is wrong", () => {
  const cases = {
    '{"inner": {"name": "a", "wieght": 1}}': "unknown field `wieght` at `inner`, expected one of `name`, `weight`",
    "{}": "missing field `inner`",
    '{"inner": {"name": 1}}': "expected a string at `inner.name`, found a number",
    '{"inner": {"name": "a"}, "count": 1.5}': "expected a non-negative integer at `count`, found a number",
    '{"inner": {"name": "a"}, "names": ["x", 2]}': "expected a string at `names[1]`, found a number",
  };
  for (const [text, why] of Object.entries(cases)) {
    assert.throws(() => config(text), (e) => e instanceof ConfigError && e.message === `invalid policy config: ${why}`, text);
  }
  assert.deepEqual(new ConfigError("x").rejection(), new Rejection(400, "invalid_policy_config", "invalid policy config: x"));
  assert.deepEqual(new Context({ configJson: " " }).config(), {});
});

test("the harness's memory checks keys and quota and keeps u64 counters", () => {
  const h = new Harness().memoryQuota(15);
  const plan = h.route(
    {
      route() {
        memory.setU64("n", 7);
        assert.throws(() => memory.set("", "x"), (e) => e instanceof MemoryDenied && e.kind === "invalid-key");
        assert.throws(() => memory.set("big", "x".repeat(10)), { message: "memory quota exceeded" });
        memory.set("a/2", "");
        memory.set("a/1", "");
        assert.deepEqual(memory.listKeys("a/", 10), ["a/1", "a/2"]);
        return Plan.to(new Target("demo", "m"), { tags: [String(memory.getU64("n"))] });
      },
    },
    new Request("m"),
  );
  assert.deepEqual(plan.tags, ["7"]);
  assert.deepEqual([...h.memory.get("n")], [7, 0, 0, 0, 0, 0, 0, 0]);
});

test("catalog lookup resolves qualified and dated names", () => {
  const policy = {
    route(request) {
      const found = catalog.lookup(request.model);
      return found ? Plan.to(new Target(found.provider, found.model)) : new Rejection(404, "unknown", request.model);
    },
  };
  const h = new Harness().model("anthropic", "claude-sonnet-4", 3, 15, 200_000).model("openai", "gpt-4o", 2, 10, 128_000);
  assert.equal(h.route(policy, new Request("claude-sonnet-4-20250514")).targets[0].model, "claude-sonnet-4");
  assert.equal(h.route(policy, new Request("openai/gpt-4o")).targets[0].provider, "openai");
  assert.ok(h.route(policy, new Request("anthropic/gpt-4o")) instanceof Rejection);
});

test("route must return a decision; host calls outside a call are a clear error", () => {
  assert.throws(() => new Harness().route({ route: () => ({}) }, new Request("m")), TypeError);
  assert.throws(() => memory.get("k"), /only inside the gateway or Harness.route/);
});

test("builders", () => {
  const plan = Plan.to(new Target("a", "m", "c", { maxTokens: 5 }), { trace: "t", notifyComplete: true }).fallback(new Target("b", "n"));
  assert.deepEqual(plan.targets.map((x) => x.provider), ["a", "b"]);
  assert.deepEqual([plan.trace, plan.notifyComplete, plan.targets[0].maxTokens], ["t", true, 5]);
  const request = Request.embeddings("e", ["abcd", "efgh"]);
  assert.deepEqual([request.operation, request.api, request.messages[0].text, request.promptTokenEstimate], ["embeddings", "openai-embeddings", "abcd\nefgh", 3]);
});

test("whole numbers print with ties to even, as Rust's {:.0} does", () => {
  assert.deepEqual([0.5, 1.5, 2.5, 79.4, 79.6, 0].map(formatWhole), ["0", "2", "2", "79", "80", "0"]);
});
