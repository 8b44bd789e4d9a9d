"""Native tests of the Python `budget-guard` policy: the Rust policy's tests, case for case."""

import unittest

import policy
from tollgate_policy import Completion, Level, Plan, Request
from tollgate_policy.testing import Harness

CONFIG = {
    "primary": {"provider": "openai", "model": "gpt-4o", "credential": "oa"},
    "fallback": {"provider": "openai", "model": "gpt-4o-mini", "credential": "oa"},
    "user_cap_microdollars": 1000,
}


def model(decision) -> str:
    return decision.targets[0].model if isinstance(decision, Plan) else f"rejected:{decision.code}"


class BudgetGuardTest(unittest.TestCase):
    def test_downgrades_past_threshold(self):
        self.assertEqual(model(Harness().config(CONFIG).budget(100, 79).route(policy.route, Request("x"))), "gpt-4o")
        self.assertEqual(model(Harness().config(CONFIG).budget(100, 80).route(policy.route, Request("x"))), "gpt-4o-mini")
        self.assertEqual(model(Harness().config(CONFIG).budget(None, 10_000).route(policy.route, Request("x"))), "gpt-4o")

    def test_trace_names_the_share(self):
        self.assertEqual(Harness().config(CONFIG).budget(100, 79).route(policy.route, Request("x")).trace, "primary at 79% of budget")
        self.assertEqual(Harness().config(CONFIG).budget(1000, 805).route(policy.route, Request("x")).trace, "downgraded at 80% of budget")
        # 2.5% prints as 2%: ties go to even, as in Rust's `{:.0}`.
        config = dict(CONFIG, downgrade_at=1.0)
        self.assertEqual(Harness().config(config).budget(1000, 25).route(policy.route, Request("x")).trace, "primary at 2% of budget")

    def test_user_cap_enforced_from_memory_counters(self):
        h = Harness().config(CONFIG).budget(1_000_000, 0)
        request = Request("x", end_user="alice")
        first = h.route(policy.route, request)
        self.assertEqual(model(first), "gpt-4o")
        self.assertTrue(first.notify_complete)
        done = Completion(end_user="alice", cost_microdollars=600)
        h.on_complete(policy.on_complete, done)
        self.assertEqual(model(h.route(policy.route, request)), "gpt-4o")
        h.on_complete(policy.on_complete, done)
        self.assertEqual(h.memory["user-spend/2026-11/alice"], (1200).to_bytes(8, "little"))
        refused = h.route(policy.route, request)
        self.assertEqual(model(refused), "rejected:user_budget_exceeded")
        self.assertEqual((refused.status, refused.message), (429, "end user 'alice' has used its budget for 2026-11"))
        self.assertEqual(model(h.route(policy.route, Request("x", end_user="bob"))), "gpt-4o")

    def test_quota_failure_is_logged_not_fatal(self):
        h = Harness().config(CONFIG).budget(1_000_000, 0).memory_quota(4)
        h.on_complete(policy.on_complete, Completion(end_user="alice", cost_microdollars=5))
        self.assertEqual(h.log, [(Level.WARN, "could not record spend of end user 'alice': memory quota exceeded")])

    def test_missing_section_is_a_clear_rejection(self):
        r = Harness().config({"primary": CONFIG["primary"]}).route(policy.route, Request("x"))
        self.assertEqual((r.status, r.code, r.message), (400, "invalid_policy_config", "invalid policy config: missing field `fallback`"))


if __name__ == "__main__":
    unittest.main()
