//! The policy contract's versions through the gateway: a policy built for the current
//! `tollgate:policy@0.2.0` sees which operation and API each request came in, and one built
//! for 0.1.0 (a committed binary of the stock `budget-guard`, built before 0.2.0) keeps
//! working unchanged: its route, its `on-complete`, and the memory and metering imports.

use serde_json::json;

use crate::support::{Gateway, Reply};

/// The stock `budget-guard` policy as built against `tollgate:policy@0.1.0`.
const BUDGET_GUARD_0_1_0: &[u8] = include_bytes!("../fixtures/budget-guard-policy-0.1.0.wasm");

/// Creates demo tenant `id`, uploads `wasm` with its manage token and assigns it with
/// `config`; returns the tenant's chat token.
async fn tenant_running(gw: &Gateway, id: &str, wasm: Vec<u8>, config: serde_json::Value) -> String {
    let token = gw.demo_tenant(id, 10.0).await;
    let reply = gw.admin("POST", &format!("/admin/v1/tenants/{id}/tokens"), json!({"scope": "manage"})).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let manage = reply.json()["token"].as_str().expect("token").to_string();
    let uploaded = gw.call("POST", "/v1/tenant/policies", Some(&manage), &[], wasm).await;
    assert_eq!(uploaded.status, 201, "{}", uploaded.text());
    let hash = uploaded.json()["hash"].as_str().expect("hash").to_string();
    let assigned = gw.call("PUT", "/v1/tenant/policy", Some(&manage), &[], json!({"hash": hash, "config": config}).to_string().into_bytes()).await;
    assert_eq!(assigned.status, 200, "{}", assigned.text());
    token
}

async fn post(gw: &Gateway, token: &str, path: &str, body: serde_json::Value) -> Reply {
    gw.call("POST", path, Some(token), &[], body.to_string().into_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_sees_which_operation_and_api_each_request_came_in() {
    let gw = Gateway::start().await;
    let token = tenant_running(&gw, "ops", tollgate_tests::guests::wasm("tollgate-guest-hostile"), json!({})).await;
    let model = "report-operation";
    let calls = [
        ("/v1/chat/completions", json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}), "Chat via OpenaiChatCompletions"),
        ("/v1/messages", json!({"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}), "Chat via AnthropicMessages"),
        ("/v1/responses", json!({"model": model, "input": "hi"}), "Chat via OpenaiResponses"),
        ("/v1/embeddings", json!({"model": model, "input": "hi"}), "Embeddings via OpenaiEmbeddings"),
    ];
    for (path, body, seen) in calls {
        let reply = post(&gw, &token, path, body).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.header("x-tollgate-policy-trace"), seen, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_built_for_0_1_0_routes_completes_and_uses_its_imports() {
    let gw = Gateway::start().await;
    // Downgrades at half the tenant's $10 budget; each end user may spend 1 micro-dollar,
    // which `on-complete` tracks in the policy's memory.
    let config = json!({
        "primary": {"provider": "demo", "model": "demo-large"},
        "fallback": {"provider": "demo", "model": "demo-small"},
        "downgrade_at": 0.5,
        "user_cap_microdollars": 1,
    });
    let token = tenant_running(&gw, "legacy", BUDGET_GUARD_0_1_0.to_vec(), config).await;
    let chat = |user: &'static str| json!({"model": "any", "user": user, "messages": [{"role": "user", "content": "hello"}]});

    let first = post(&gw, &token, "/v1/chat/completions", chat("ann")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-tollgate-policy-trace"), "primary at 0% of budget");
    assert_eq!(first.json()["model"], "demo-large");

    // `on-complete` records ann's spend in memory, after her answer was sent; once it has,
    // her requests are over her cap, and the refusal is the 0.1.0 policy's own.
    let mut refused = None;
    for _ in 0..100 {
        let next = post(&gw, &token, "/v1/chat/completions", chat("ann")).await;
        if next.status != 200 {
            refused = Some(next);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let refused = refused.expect("ann was never refused: on-complete did not record her spend");
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.error_code(), "user_budget_exceeded");

    // Another end user is still served, also through the Messages API.
    let other = post(&gw, &token, "/v1/messages", json!({"model": "any", "max_tokens": 20, "metadata": {"user_id": "bob"}, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!(other.header("x-tollgate-policy-trace"), "primary at 0% of budget");
}
