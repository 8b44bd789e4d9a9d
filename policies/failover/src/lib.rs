//! The stock `failover` policy: an ordered chain of targets across providers. The gateway
//! tries them in turn when one fails before the answer starts.
//!
//! Config:
//! ```json
//! {"chain": [{"provider": "openai", "model": "gpt-4o", "credential": "oa"},
//!            {"provider": "anthropic", "model": "claude-sonnet-4", "credential": "ant"}],
//!  "pass_through": false}
//! ```
//! With `pass_through`, a request naming a model other than `default` is tried first on
//! the chain's first provider with that model, then the chain follows.

use serde::Deserialize;
use tollgate_sdk::{export_policy, Context, Decision, Plan, Policy, Request, Target};

/// One link of the chain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Provider name.
    pub provider: String,
    /// Model name.
    pub model: String,
    /// Credential name (empty for none).
    #[serde(default)]
    pub credential: String,
    /// Cap on completion tokens for this link.
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

/// The tenant's configuration of this policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Targets in order.
    pub chain: Vec<Link>,
    /// Try the requested model first.
    #[serde(default)]
    pub pass_through: bool,
}

/// The policy.
pub struct Failover;

fn target(link: &Link) -> Target {
    let mut target = Target::new(&link.provider, &link.model, &link.credential);
    target.max_tokens = link.max_tokens;
    target
}

impl Policy for Failover {
    fn route(request: &Request, context: &Context) -> Decision {
        let config: Config = match context.config() {
            Ok(config) => config,
            Err(e) => return e.into_decision(),
        };
        let Some(first) = config.chain.first() else {
            return Decision::reject(400, "invalid_policy_config", "invalid policy config: the failover chain is empty");
        };
        let mut targets = Vec::with_capacity(config.chain.len() + 1);
        if config.pass_through && !matches!(request.model.as_str(), "" | "default") && request.model != first.model {
            targets.push(Target::new(&first.provider, &request.model, &first.credential));
        }
        targets.extend(config.chain.iter().map(target));
        let trace = targets.iter().map(|t| format!("{}/{}", t.provider, t.model)).collect::<Vec<_>>().join(" > ");
        Plan { targets, trace, ..Plan::default() }.into()
    }
}

export_policy!(Failover);

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_sdk::testing::Harness;

    const CHAIN: &str = r#"{"chain":[{"provider":"openai","model":"gpt-4o","credential":"oa"},{"provider":"anthropic","model":"claude-sonnet-4","credential":"ant","max_tokens":100}]}"#;

    #[test]
    fn chain_in_order() {
        let Decision::Route(plan) = Harness::new().config(CHAIN).route::<Failover>(&Request::new("default")) else { panic!() };
        assert_eq!(plan.targets, vec![
            Target::new("openai", "gpt-4o", "oa"),
            Target::new("anthropic", "claude-sonnet-4", "ant").max_tokens(100),
        ]);
        assert_eq!(plan.trace, "openai/gpt-4o > anthropic/claude-sonnet-4");
    }

    #[test]
    fn pass_through_puts_requested_model_first() {
        let config = CHAIN.replacen('{', r#"{"pass_through":true,"#, 1);
        let Decision::Route(plan) = Harness::new().config(&config).route::<Failover>(&Request::new("gpt-4o-mini")) else { panic!() };
        assert_eq!(plan.targets.len(), 3);
        assert_eq!(plan.targets[0], Target::new("openai", "gpt-4o-mini", "oa"));
    }

    #[test]
    fn empty_chain_rejected() {
        let d = Harness::new().config(r#"{"chain":[]}"#).route::<Failover>(&Request::new("x"));
        assert!(matches!(d, Decision::Reject(r) if r.code == "invalid_policy_config"));
    }
}
