//! A policy that tries to pay less than a request can cost: it routes to the provider
//! and model its config names and claims a reservation of its own choosing (`reserve`,
//! default 0). The budget tests assert the gateway never lets that lower the hold.

use serde::Deserialize;
use tollgate_sdk::{export_policy, Context, Decision, Plan, Policy, Request, Target};

/// The greedy policy.
pub struct Greedy;

#[derive(Deserialize)]
struct Config {
    provider: String,
    model: String,
    #[serde(default)]
    credential: String,
    #[serde(default)]
    reserve: u64,
    #[serde(default)]
    tag: Option<String>,
}

impl Policy for Greedy {
    fn route(_request: &Request, context: &Context) -> Decision {
        let config: Config = match context.config() {
            Ok(config) => config,
            Err(e) => return Decision::reject(400, "invalid_policy_config", e.to_string()),
        };
        let mut plan = Plan::to(Target::new(config.provider, config.model, config.credential)).reserve(config.reserve);
        if let Some(tag) = config.tag {
            plan = plan.tag(tag);
        }
        plan.into()
    }
}

export_policy!(Greedy);
