"""Native tests of the Python `default` policy: the Rust policy's tests, case for case."""

import unittest

import policy
from tollgate_policy import Plan, Rejection, Request, Target
from tollgate_policy.testing import Harness


def plan(decision) -> Plan:
    if not isinstance(decision, Plan):
        raise AssertionError(f"rejected: {decision}")
    return decision


class DefaultPolicyTest(unittest.TestCase):
    def test_routes_requested_model_to_configured_provider(self):
        h = Harness().config({"provider": "openai", "credential": "main", "max_tokens": 500, "temperature": 0.2})
        p = plan(h.route(policy.route, Request("gpt-4o").user("hi")))
        self.assertEqual(p.targets, [Target("openai", "gpt-4o", "main", max_tokens=500, temperature=0.2)])
        self.assertEqual(p.trace, "default:gpt-4o")

    def test_client_temperature_wins_over_config(self):
        h = Harness().config({"provider": "openai", "temperature": 0.2})
        request = Request("gpt-4o", temperature=1.0).user("hi")
        self.assertIsNone(plan(h.route(policy.route, request)).targets[0].temperature)

    def test_default_model_fills_in(self):
        h = Harness().config({"provider": "openai", "model": "gpt-4o-mini"})
        self.assertEqual(plan(h.route(policy.route, Request("default"))).targets[0].model, "gpt-4o-mini")
        rejected = Harness().route(policy.route, Request(""))
        self.assertIsInstance(rejected, Rejection)
        self.assertEqual(rejected.code, "model_required")

    def test_qualified_model_uses_that_providers_credential(self):
        h = Harness().credential("oa", "openai").credential("ant", "anthropic").config({"provider": "openai", "credential": "oa"})
        p = plan(h.route(policy.route, Request("anthropic/claude-sonnet-4")))
        self.assertEqual(p.targets[0], Target("anthropic", "claude-sonnet-4", "ant"))

    def test_allow_list_rejects_other_models(self):
        r = Harness().config({"allowed_models": ["gpt-4o-mini"]}).route(policy.route, Request("gpt-4o"))
        self.assertIsInstance(r, Rejection)
        self.assertEqual((r.status, r.code), (400, "model_not_allowed"))
        self.assertIn("gpt-4o-mini", r.message)

    def test_bad_config_is_a_clear_rejection(self):
        r = Harness().config('{"provder":"typo"}').route(policy.route, Request("x"))
        self.assertIsInstance(r, Rejection)
        self.assertEqual(r.code, "invalid_policy_config")
        self.assertIn("provder", r.message)

    def test_wrong_type_in_config_is_a_clear_rejection(self):
        r = Harness().config({"max_tokens": "many"}).route(policy.route, Request("x"))
        self.assertEqual((r.status, r.code), (400, "invalid_policy_config"))
        self.assertEqual(r.message, "invalid policy config: expected an integer at `max_tokens`, found a string")


if __name__ == "__main__":
    unittest.main()
