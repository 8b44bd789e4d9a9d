//! The stock `default` policy: route the requested model (or the tenant's default model)
//! to the provider and credential named in the tenant's config, within an allow-list.
//!
//! Config (every field optional):
//! ```json
//! {"provider": "openai", "credential": "default", "model": "gpt-4o",
//!  "allowed_models": ["gpt-4o", "gpt-4o-mini"], "max_tokens": 2000, "temperature": 0.7}
//! ```
//! A provider-qualified model (`anthropic/claude-sonnet-4`) goes to that provider with the
//! tenant's first credential for it.

use serde::Deserialize;
use tollgate_sdk::{credentials, export_policy, Context, Decision, Plan, Policy, Request, Target};

/// The tenant's configuration of this policy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Provider for unqualified models (default `demo`).
    #[serde(default)]
    pub provider: Option<String>,
    /// Credential name for that provider (default: the tenant's first for it, or none).
    #[serde(default)]
    pub credential: Option<String>,
    /// Model used when the request names `default` or nothing.
    #[serde(default)]
    pub model: Option<String>,
    /// If non-empty, the only models (bare names) the tenant may use.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    /// Cap on completion tokens.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Temperature used when the client sets none.
    #[serde(default)]
    pub temperature: Option<f32>,
}

/// The policy.
pub struct DefaultPolicy;

impl Policy for DefaultPolicy {
    fn route(request: &Request, context: &Context) -> Decision {
        let config: Config = match context.config() {
            Ok(config) => config,
            Err(e) => return e.into_decision(),
        };
        let requested = match request.model.as_str() {
            "" | "default" => match &config.model {
                Some(model) => model.clone(),
                None => return Decision::reject(400, "model_required", "the request names no model and the tenant has no default model"),
            },
            model => model.to_string(),
        };
        let (qualifier, model) = match requested.split_once('/') {
            Some((provider, model)) => (Some(provider.to_string()), model.to_string()),
            None => (None, requested.clone()),
        };
        if !config.allowed_models.is_empty() && !config.allowed_models.iter().any(|m| *m == model) {
            return Decision::reject(
                400,
                "model_not_allowed",
                format!("model '{model}' is not allowed for this tenant; allowed: {}", config.allowed_models.join(", ")),
            );
        }
        let provider = qualifier.clone().or(config.provider.clone()).unwrap_or_else(|| "demo".into());
        let credential = match (&qualifier, &config.credential) {
            (None, Some(name)) => name.clone(),
            _ => credentials::for_provider(&provider).map(|c| c.name).unwrap_or_default(),
        };
        let mut target = Target::new(provider, model, credential);
        target.max_tokens = config.max_tokens;
        if request.temperature.is_none() {
            target.temperature = config.temperature;
        }
        Plan::to(target).trace(format!("default:{requested}")).into()
    }
}

export_policy!(DefaultPolicy);

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_sdk::testing::Harness;

    fn plan(decision: Decision) -> Plan {
        match decision {
            Decision::Route(plan) => plan,
            Decision::Reject(r) => panic!("rejected: {r:?}"),
        }
    }

    #[test]
    fn routes_requested_model_to_configured_provider() {
        let mut h = Harness::new().config(r#"{"provider":"openai","credential":"main","max_tokens":500,"temperature":0.2}"#);
        let p = plan(h.route::<DefaultPolicy>(&Request::new("gpt-4o").user("hi")));
        assert_eq!(p.targets, vec![Target::new("openai", "gpt-4o", "main").max_tokens(500).temperature(0.2)]);
        assert_eq!(p.trace, "default:gpt-4o");
    }

    #[test]
    fn client_temperature_wins_over_config() {
        let mut h = Harness::new().config(r#"{"provider":"openai","temperature":0.2}"#);
        let mut req = Request::new("gpt-4o").user("hi");
        req.temperature = Some(1.0);
        assert_eq!(plan(h.route::<DefaultPolicy>(&req)).targets[0].temperature, None);
    }

    #[test]
    fn default_model_fills_in() {
        let mut h = Harness::new().config(r#"{"provider":"openai","model":"gpt-4o-mini"}"#);
        assert_eq!(plan(h.route::<DefaultPolicy>(&Request::new("default"))).targets[0].model, "gpt-4o-mini");
        let rejected = Harness::new().route::<DefaultPolicy>(&Request::new(""));
        assert!(matches!(rejected, Decision::Reject(r) if r.code == "model_required"));
    }

    #[test]
    fn qualified_model_uses_that_providers_credential() {
        let mut h = Harness::new()
            .credential("oa", "openai")
            .credential("ant", "anthropic")
            .config(r#"{"provider":"openai","credential":"oa"}"#);
        let p = plan(h.route::<DefaultPolicy>(&Request::new("anthropic/claude-sonnet-4")));
        assert_eq!(p.targets[0], Target::new("anthropic", "claude-sonnet-4", "ant"));
    }

    #[test]
    fn allow_list_rejects_other_models() {
        let mut h = Harness::new().config(r#"{"allowed_models":["gpt-4o-mini"]}"#);
        match h.route::<DefaultPolicy>(&Request::new("gpt-4o")) {
            Decision::Reject(r) => {
                assert_eq!((r.status, r.code.as_str()), (400, "model_not_allowed"));
                assert!(r.message.contains("gpt-4o-mini"));
            }
            other => panic!("expected rejection, got {other:?}"),
        }
    }

    #[test]
    fn bad_config_is_a_clear_rejection() {
        let mut h = Harness::new().config(r#"{"provder":"typo"}"#);
        assert!(matches!(h.route::<DefaultPolicy>(&Request::new("x")), Decision::Reject(r) if r.code == "invalid_policy_config" && r.message.contains("provder")));
    }
}
