//! The stock policies, built for wasm32-wasip2, upload and return plans through the real
//! runtime and host imports (their logic is unit-tested natively in `policies/`).

use tollgate::policy::{Decision, PolicyLimits, RoutePlan};
use tollgate::Secret;

use crate::support::{context, request, Sandbox};

async fn route(sandbox: &Sandbox, package: &str, tenant: &str, model: &str, config: &str) -> Decision {
    let hash = sandbox.runtime.upload(tollgate_tests::guests::wasm(package)).await.expect("upload");
    sandbox.runtime.route(hash, sandbox.scope(tenant), &request(model), &context(tenant, config)).await.expect("route").decision
}

fn plan(decision: Decision) -> RoutePlan {
    match decision {
        Decision::Route(plan) => plan,
        Decision::Reject(r) => panic!("rejected: {r:?}"),
    }
}

#[tokio::test]
async fn default_policy_routes_and_rejects() {
    let sandbox = Sandbox::new(PolicyLimits::default());
    let config = r#"{"provider":"openai","credential":"main","allowed_models":["gpt-4o"],"max_tokens":100}"#;
    let p = plan(route(&sandbox, "tollgate-policy-default", "t", "gpt-4o", config).await);
    assert_eq!((p.targets[0].provider.as_str(), p.targets[0].model.as_str(), p.targets[0].credential.as_str()), ("openai", "gpt-4o", "main"));
    assert_eq!(p.targets[0].max_tokens, Some(100));
    assert_eq!(p.trace, "default:gpt-4o");
    match route(&sandbox, "tollgate-policy-default", "t", "gpt-4-turbo", config).await {
        Decision::Reject(r) => assert_eq!((r.status, r.code.as_str()), (400, "model_not_allowed")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn failover_policy_returns_the_chain() {
    let sandbox = Sandbox::new(PolicyLimits::default());
    let config = r#"{"chain":[{"provider":"openai","model":"gpt-4o","credential":"oa"},{"provider":"anthropic","model":"claude-sonnet-4","credential":"ant"}]}"#;
    let p = plan(route(&sandbox, "tollgate-policy-failover", "t", "default", config).await);
    assert_eq!(p.targets.len(), 2);
    assert_eq!(p.trace, "openai/gpt-4o > anthropic/claude-sonnet-4");
}

#[tokio::test]
async fn aliases_policy_reads_the_catalog_and_credentials_through_host_imports() {
    let sandbox = Sandbox::new(PolicyLimits::default());
    sandbox.services.vault.put("t", "ant-key", "anthropic", &Secret::new("sk-ant".into())).await.expect("put");
    let config = r#"{"aliases":{"researcher":{"min_context":150000,"pick":"best"}}}"#;
    let p = plan(route(&sandbox, "tollgate-policy-aliases", "t", "researcher", config).await);
    // Held providers: anthropic (credential) and demo. The priciest with >= 150k context
    // (claude-opus-4 and -4-1 cost the same; the later name wins the tie):
    assert_eq!((p.targets[0].provider.as_str(), p.targets[0].model.as_str(), p.targets[0].credential.as_str()), ("anthropic", "claude-opus-4-1", "ant-key"));
}

#[tokio::test]
async fn budget_guard_downgrades_on_real_spend() {
    budget_guard_downgrades(tollgate_tests::guests::wasm("tollgate-policy-budget-guard")).await;
}

/// The same, with the policy as built against `tollgate:policy@0.1.0`: the host calls it
/// through the 0.1.0 contract and its metering import still reads the real budget.
#[tokio::test]
async fn budget_guard_built_for_0_1_0_downgrades_on_real_spend() {
    budget_guard_downgrades(include_bytes!("../fixtures/budget-guard-policy-0.1.0.wasm").to_vec()).await;
}

async fn budget_guard_downgrades(wasm: Vec<u8>) {
    let sandbox = Sandbox::new(PolicyLimits::default());
    let config = r#"{"primary":{"provider":"demo","model":"demo-large"},"fallback":{"provider":"demo","model":"demo-small"},"downgrade_at":0.5}"#;
    let hash = sandbox.runtime.upload(wasm).await.expect("upload");
    let budget = Some(tollgate::metering::Budget { limit_microdollars: 1000, period: tollgate::metering::Period::Month });
    let now = tollgate::clock::unix_millis();
    let scope = std::sync::Arc::new(sandbox.services.scope("t", budget, now));
    let first = sandbox.runtime.route(hash, scope.clone(), &request("x"), &context("t", config)).await.expect("route");
    assert_eq!(plan(first.decision).targets[0].model, "demo-large");
    sandbox.services.metering.reserve("t", budget, "r", 600, now).await.expect("reserve");
    let second = sandbox.runtime.route(hash, scope, &request("x"), &context("t", config)).await.expect("route");
    assert_eq!(plan(second.decision).targets[0].model, "demo-small");
}
