//! The stock `budget-guard` policy: serve with the primary model until the tenant's spend
//! passes a share of its budget, then downgrade to a cheaper model; cap each end user's
//! spend with counters kept in the tenant's memory.
//!
//! Config:
//! ```json
//! {"primary": {"provider": "openai", "model": "gpt-4o", "credential": "oa"},
//!  "fallback": {"provider": "openai", "model": "gpt-4o-mini", "credential": "oa"},
//!  "downgrade_at": 0.8, "user_cap_microdollars": 2000000}
//! ```
//! End-user spend is counted per budget period in memory keys `user-spend/<period>/<user>`,
//! updated by `on_complete`; a user at the cap gets 429 `user_budget_exceeded`.

use serde::Deserialize;
use tollgate_sdk::{export_policy, log, memory, metering, Completion, Context, Decision, Plan, Policy, Request, Target};

/// A provider and model to send to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Provider name.
    pub provider: String,
    /// Model name.
    pub model: String,
    /// Credential name.
    #[serde(default)]
    pub credential: String,
}

/// The tenant's configuration of this policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Used while spend is below `downgrade_at`.
    pub primary: TargetConfig,
    /// Used once spend passes `downgrade_at`.
    pub fallback: TargetConfig,
    /// Share of the budget (spent plus reserved) at which to downgrade; default 0.8.
    #[serde(default = "default_downgrade_at")]
    pub downgrade_at: f64,
    /// Per-end-user cap for the period, in micro-dollars.
    #[serde(default)]
    pub user_cap_microdollars: Option<u64>,
}

fn default_downgrade_at() -> f64 {
    0.8
}

/// The policy.
pub struct BudgetGuard;

fn user_key(period_id: &str, user: &str) -> String {
    format!("user-spend/{period_id}/{user}")
}

impl Policy for BudgetGuard {
    fn route(request: &Request, context: &Context) -> Decision {
        let config: Config = match context.config() {
            Ok(config) => config,
            Err(e) => return e.into_decision(),
        };
        let budget = metering::budget();
        if let (Some(cap), Some(user)) = (config.user_cap_microdollars, &request.end_user) {
            match memory::get_u64(&user_key(&budget.period_id, user)) {
                Ok(spent) if spent >= cap => {
                    return Decision::reject(429, "user_budget_exceeded", format!("end user '{user}' has used its budget for {}", budget.period_id));
                }
                Ok(_) => {}
                // Fail closed: a cap that cannot be read is not enforced by guessing.
                Err(e) => return Decision::reject(429, "user_budget_unavailable", format!("end-user budget unavailable: {e}")),
            }
        }
        let share = budget.used_share();
        let (chosen, why) = if share >= config.downgrade_at {
            (&config.fallback, format!("downgraded at {:.0}% of budget", share * 100.0))
        } else {
            (&config.primary, format!("primary at {:.0}% of budget", share * 100.0))
        };
        let mut plan = Plan::to(Target::new(&chosen.provider, &chosen.model, &chosen.credential)).trace(why);
        if config.user_cap_microdollars.is_some() && request.end_user.is_some() {
            plan = plan.notify_complete();
        }
        plan.into()
    }

    fn on_complete(completion: &Completion, _context: &Context) {
        let Some(user) = &completion.end_user else { return };
        let key = user_key(&metering::budget().period_id, user);
        let spent = memory::get_u64(&key).unwrap_or(0).saturating_add(completion.cost_microdollars);
        if let Err(e) = memory::set_u64(&key, spent) {
            log::warn(&format!("could not record spend of end user '{user}': {e}"));
        }
    }
}

export_policy!(BudgetGuard);

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_sdk::testing::Harness;

    const CONFIG: &str = r#"{"primary":{"provider":"openai","model":"gpt-4o","credential":"oa"},
        "fallback":{"provider":"openai","model":"gpt-4o-mini","credential":"oa"},"user_cap_microdollars":1000}"#;

    fn model(d: Decision) -> String {
        match d {
            Decision::Route(p) => p.targets[0].model.clone(),
            Decision::Reject(r) => format!("rejected:{}", r.code),
        }
    }

    #[test]
    fn downgrades_past_threshold() {
        assert_eq!(model(Harness::new().config(CONFIG).budget(Some(100), 79).route::<BudgetGuard>(&Request::new("x"))), "gpt-4o");
        assert_eq!(model(Harness::new().config(CONFIG).budget(Some(100), 80).route::<BudgetGuard>(&Request::new("x"))), "gpt-4o-mini");
        assert_eq!(model(Harness::new().config(CONFIG).budget(None, 10_000).route::<BudgetGuard>(&Request::new("x"))), "gpt-4o");
    }

    #[test]
    fn user_cap_enforced_from_memory_counters() {
        let mut h = Harness::new().config(CONFIG).budget(Some(1_000_000), 0);
        let req = Request::new("x").end_user("alice");
        assert_eq!(model(h.route::<BudgetGuard>(&req)), "gpt-4o");
        let done = Completion { end_user: Some("alice".into()), cost_microdollars: 600, ..Completion::default() };
        h.on_complete::<BudgetGuard>(&done);
        assert_eq!(model(h.route::<BudgetGuard>(&req)), "gpt-4o");
        h.on_complete::<BudgetGuard>(&done);
        assert_eq!(h.memory().get("user-spend/2026-11/alice"), Some(&1200u64.to_le_bytes().to_vec()));
        assert_eq!(model(h.route::<BudgetGuard>(&req)), "rejected:user_budget_exceeded");
        assert_eq!(model(h.route::<BudgetGuard>(&Request::new("x").end_user("bob"))), "gpt-4o");
    }

    #[test]
    fn quota_failure_is_logged_not_fatal() {
        let mut h = Harness::new().config(CONFIG).budget(Some(1_000_000), 0).memory_quota(4);
        h.on_complete::<BudgetGuard>(&Completion { end_user: Some("alice".into()), cost_microdollars: 5, ..Completion::default() });
        assert!(h.log()[0].1.contains("memory quota exceeded"));
    }
}
