"""The SDK's own behaviour: strict configs, the fake host's limits, the builders."""

import unittest
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from tollgate_policy import ConfigError, Context, MemoryDenied, Plan, Rejection, Request, Target, catalog, memory
from tollgate_policy.testing import Harness


@dataclass
class Inner:
    name: str
    weight: float = 1.0


@dataclass
class Schema:
    inner: Inner
    count: int = 0
    names: List[str] = field(default_factory=list)
    limits: Dict[str, int] = field(default_factory=dict)
    note: Optional[str] = None


def config(text):
    return Context(config_json=text).config(Schema)


class ConfigTest(unittest.TestCase):
    def test_parses_nested_typed_fields_with_defaults(self):
        parsed = config('{"inner": {"name": "a", "weight": 2}, "names": ["x"], "limits": {"k": 3}}')
        self.assertEqual(parsed, Schema(Inner("a", 2.0), 0, ["x"], {"k": 3}, None))

    def test_names_what_is_wrong(self):
        cases = {
            '{"inner": {"name": "a", "wieght": 1}}': "unknown field `wieght` at `inner`, expected one of `name`, `weight`",
            "{}": "missing field `inner`",
            '{"inner": {"name": 1}}': "expected a string at `inner.name`, found a number",
            '{"inner": {"name": "a"}, "count": true}': "expected an integer at `count`, found a boolean",
            '{"inner": {"name": "a"}, "count": -1}': "expected a non-negative integer at `count`, found -1",
            '{"inner": {"name": "a"}, "names": ["x", 2]}': "expected a string at `names[1]`, found a number",
            "[1]": "expected an object, found an array",
        }
        for text, why in cases.items():
            with self.assertRaises(ConfigError, msg=text) as caught:
                config(text)
            self.assertEqual(str(caught.exception), f"invalid policy config: {why}")

    def test_a_config_error_becomes_a_400(self):
        rejection = ConfigError("x").rejection()
        self.assertEqual(rejection, Rejection(400, "invalid_policy_config", "invalid policy config: x"))

    def test_empty_config_reads_as_an_empty_object(self):
        self.assertEqual(Context(config_json="  ").config(), {})


class HarnessTest(unittest.TestCase):
    def test_memory_keys_quota_and_counters(self):
        def route(request, context):
            memory.set_u64("n", 7)
            with self.assertRaises(MemoryDenied) as caught:
                memory.set("", b"x")
            self.assertEqual(caught.exception.kind, "invalid-key")
            with self.assertRaises(MemoryDenied) as caught:
                memory.set("big", b"x" * 10)
            self.assertEqual(str(caught.exception), "memory quota exceeded")
            memory.set("a/2", b"")
            memory.set("a/1", b"")
            self.assertEqual(memory.list_keys("a/", 10), ["a/1", "a/2"])
            return Plan.to(Target("demo", "m"), tags=[str(memory.get_u64("n"))])

        h = Harness().memory_quota(15)
        plan = h.route(route, Request("m"))
        self.assertEqual(plan.tags, ["7"])
        self.assertEqual(h.memory["n"], (7).to_bytes(8, "little"))

    def test_catalog_lookup_resolves_qualified_and_dated_names(self):
        def route(request, context):
            found = catalog.lookup(request.model)
            return Plan.to(Target(found.provider, found.model)) if found else Rejection(404, "unknown", request.model)

        h = Harness().model("anthropic", "claude-sonnet-4", 3, 15, 200_000).model("openai", "gpt-4o", 2, 10, 128_000)
        self.assertEqual(h.route(route, Request("claude-sonnet-4-20250514")).targets[0].model, "claude-sonnet-4")
        self.assertEqual(h.route(route, Request("openai/gpt-4o")).targets[0].provider, "openai")
        self.assertIsInstance(h.route(route, Request("anthropic/gpt-4o")), Rejection)

    def test_route_must_return_a_decision(self):
        with self.assertRaisesRegex(TypeError, "route must return a Plan or a Rejection, not dict"):
            Harness().route(lambda request, context: {}, Request("m"))

    def test_host_functions_outside_a_call_are_a_clear_error(self):
        with self.assertRaisesRegex(RuntimeError, "only inside the gateway or Harness.route"):
            memory.get("k")

    def test_plan_builder(self):
        plan = Plan.to(Target("a", "m", "c", max_tokens=5), trace="t", notify_complete=True).then(Target("b", "n"))
        self.assertEqual([t.provider for t in plan.targets], ["a", "b"])
        self.assertEqual((plan.trace, plan.notify_complete, plan.targets[0].max_tokens), ("t", True, 5))

    def test_request_builder_estimates_tokens(self):
        request = Request.embeddings("e", ["abcd", "efgh"])
        self.assertEqual((request.operation.value, request.api.value), ("embeddings", "openai-embeddings"))
        self.assertEqual((request.messages[0].text, request.prompt_token_estimate), ("abcd\nefgh", 3))


if __name__ == "__main__":
    unittest.main()
