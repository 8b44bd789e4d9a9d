//! The stock `aliases` policy: map tenant aliases (`researcher`, `coder`, `cheap`) to real
//! models picked from the operator's catalog by price and context window, among the
//! providers the tenant holds credentials for. Other model names pass through.
//!
//! Config:
//! ```json
//! {"aliases": {"researcher": {"min_context": 200000, "pick": "best"},
//!              "cheap": {"pick": "cheapest"},
//!              "coder": {"model": "anthropic/claude-sonnet-4"}},
//!  "providers": ["openai", "anthropic"]}
//! ```
//! `providers` limits the candidates (default: every provider the tenant has a credential
//! for, plus `demo`).

use std::collections::BTreeMap;

use serde::Deserialize;
use tollgate_sdk::{catalog, credentials, export_policy, Context, Decision, ModelInfo, Plan, Policy, Request, Target};

/// How to choose among candidates.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Pick {
    /// Lowest input plus output price.
    #[default]
    Cheapest,
    /// Highest input plus output price (a proxy for the strongest model).
    Best,
}

/// One alias.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alias {
    /// A fixed model (`provider/model` or bare) instead of a catalog pick.
    #[serde(default)]
    pub model: Option<String>,
    /// Smallest acceptable context window.
    #[serde(default)]
    pub min_context: u32,
    /// Cheapest or best.
    #[serde(default)]
    pub pick: Pick,
}

/// The tenant's configuration of this policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Alias name to rule.
    pub aliases: BTreeMap<String, Alias>,
    /// Providers to pick from.
    #[serde(default)]
    pub providers: Option<Vec<String>>,
}

/// The policy.
pub struct Aliases;

fn credential_for(provider: &str) -> String {
    credentials::for_provider(provider).map(|c| c.name).unwrap_or_default()
}

fn target_for(info: &ModelInfo) -> Target {
    Target::new(&info.provider, &info.model, credential_for(&info.provider))
}

fn price(info: &ModelInfo) -> u64 {
    info.input_microdollars_per_mtok.saturating_add(info.output_microdollars_per_mtok)
}

impl Policy for Aliases {
    fn route(request: &Request, context: &Context) -> Decision {
        let config: Config = match context.config() {
            Ok(config) => config,
            Err(e) => return e.into_decision(),
        };
        let Some(alias) = config.aliases.get(&request.model) else {
            return pass_through(&request.model);
        };
        if let Some(model) = &alias.model {
            return match catalog::lookup(model) {
                Some(info) => Plan::to(target_for(&info)).trace(format!("alias {} = {model}", request.model)).into(),
                None => Decision::reject(400, "model_not_found", format!("alias '{}' names '{model}', which the catalog does not offer", request.model)),
            };
        }
        let allowed: Vec<String> = config.providers.unwrap_or_else(|| {
            let mut held: Vec<String> = credentials::list().into_iter().map(|c| c.provider).collect();
            held.push("demo".into());
            held
        });
        let needed = alias.min_context.max(request.prompt_token_estimate);
        let candidates = catalog::models()
            .into_iter()
            .filter(|m| allowed.contains(&m.provider) && m.context_window >= needed);
        let chosen = match alias.pick {
            Pick::Cheapest => candidates.min_by_key(|m| (price(m), m.model.clone())),
            Pick::Best => candidates.max_by_key(|m| (price(m), m.model.clone())),
        };
        match chosen {
            Some(info) => Plan::to(target_for(&info)).trace(format!("alias {} = {}/{}", request.model, info.provider, info.model)).tag(format!("alias:{}", request.model)).into(),
            None => Decision::reject(400, "model_not_found", format!("no model on offer fits alias '{}' (context >= {needed})", request.model)),
        }
    }
}

fn pass_through(model: &str) -> Decision {
    match catalog::lookup(model) {
        Some(info) => Plan::to(target_for(&info)).trace(format!("model {model}")).into(),
        None => Decision::reject(400, "model_not_found", format!("'{model}' is neither an alias of this tenant nor a model on offer")),
    }
}

export_policy!(Aliases);

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_sdk::testing::Harness;

    fn harness(config: &str) -> Harness {
        Harness::new()
            .credential("oa", "openai")
            .credential("ant", "anthropic")
            .model("openai", "gpt-4o", 2_500_000, 10_000_000, 128_000)
            .model("openai", "gpt-4o-mini", 150_000, 600_000, 128_000)
            .model("anthropic", "claude-sonnet-4", 3_000_000, 15_000_000, 200_000)
            .model("gemini", "gemini-2.5-flash", 300_000, 2_500_000, 1_000_000)
            .config(config)
    }

    fn routed(d: Decision) -> Target {
        match d {
            Decision::Route(p) => p.targets[0].clone(),
            Decision::Reject(r) => panic!("rejected {r:?}"),
        }
    }

    const CONFIG: &str = r#"{"aliases":{"researcher":{"min_context":150000,"pick":"best"},"cheap":{},"coder":{"model":"anthropic/claude-sonnet-4"}}}"#;

    #[test]
    fn picks_by_price_among_held_providers() {
        assert_eq!(routed(harness(CONFIG).route::<Aliases>(&Request::new("cheap"))), Target::new("openai", "gpt-4o-mini", "oa"));
        assert_eq!(routed(harness(CONFIG).route::<Aliases>(&Request::new("researcher"))), Target::new("anthropic", "claude-sonnet-4", "ant"));
    }

    #[test]
    fn fixed_alias_and_pass_through() {
        assert_eq!(routed(harness(CONFIG).route::<Aliases>(&Request::new("coder"))), Target::new("anthropic", "claude-sonnet-4", "ant"));
        assert_eq!(routed(harness(CONFIG).route::<Aliases>(&Request::new("gpt-4o"))), Target::new("openai", "gpt-4o", "oa"));
    }

    #[test]
    fn unknown_model_rejected() {
        let d = harness(CONFIG).route::<Aliases>(&Request::new("nope"));
        assert!(matches!(d, Decision::Reject(r) if r.code == "model_not_found"));
    }

    #[test]
    fn context_need_filters_candidates() {
        let d = harness(r#"{"aliases":{"huge":{"min_context":2000000}}}"#).route::<Aliases>(&Request::new("huge"));
        assert!(matches!(d, Decision::Reject(r) if r.message.contains("2000000")));
    }
}
