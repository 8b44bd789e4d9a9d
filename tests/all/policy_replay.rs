//! Replay before assign (`POST .../policy/replay`): a policy runs against the tenant's
//! recorded decision inputs, in dry runs, and the report says where it decides
//! differently from what was served. The inputs keep message text only for requests in a
//! session, and go with the tenant.

use serde_json::{json, Value};

use crate::support::{Gateway, Reply, ADMIN};

async fn call(gw: &Gateway, method: &str, path: &str, body: Value) -> Reply {
    let bytes = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    gw.call(method, path, Some(ADMIN), &[], bytes).await
}

async fn chat(gw: &Gateway, token: &str, model: &str, headers: &[(&str, &str)]) -> Reply {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "a secret plan"}]});
    gw.call("POST", "/v1/chat/completions", Some(token), headers, body.to_string().into_bytes()).await
}

/// Recorded inputs are written after the answer: waits (bounded) until `n` are there.
async fn recorded(gw: &Gateway, id: &str, n: usize) -> Vec<tollgate::decision_inputs::DecisionInput> {
    let started = std::time::Instant::now();
    loop {
        let inputs = gw.app.decision_inputs.read(&gw.storage_id(id), 0, 1000).await.expect("read inputs");
        if inputs.len() >= n {
            return inputs;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{} of {n} inputs recorded", inputs.len());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_reports_where_a_policy_would_decide_differently_without_acting() {
    let gw = Gateway::start().await;
    let token = gw.demo_tenant("replayed", 100.0).await;
    let default = call(&gw, "GET", "/admin/v1/tenants/replayed/policy", Value::Null).await.json()["default_policy"].as_str().expect("hash").to_string();
    let assigned = call(&gw, "PUT", "/admin/v1/tenants/replayed/policy", json!({"hash": default, "config": {"provider": "demo", "model": "demo-small"}})).await;
    assert_eq!(assigned.status, 200, "{}", assigned.text());
    for _ in 0..3 {
        assert_eq!(chat(&gw, &token, "default", &[]).await.status, 200);
    }
    assert_eq!(chat(&gw, &token, "demo-small", &[("x-session-id", "kept")]).await.status, 200);
    assert_eq!(chat(&gw, &token, "demo-small", &[]).await.status, 200);

    // Message text is kept only for the request in a session.
    let inputs = recorded(&gw, "replayed", 5).await;
    assert_eq!(inputs.len(), 5);
    for input in &inputs {
        let message = &input.request.messages[0];
        assert_eq!(message.text_bytes, "a secret plan".len());
        let expected = if input.session_id.as_deref() == Some("kept") { "a secret plan" } else { "" };
        assert_eq!(message.text, expected, "{input:?}");
        assert!(input.policy.starts_with(&default[..8]));
    }

    // The same policy with another default model differs exactly where the client named none.
    let report = call(&gw, "POST", "/admin/v1/tenants/replayed/policy/replay", json!({"hash": default, "config": {"provider": "demo", "model": "demo-large"}})).await;
    assert_eq!(report.status, 200, "{}", report.text());
    let report = report.json();
    assert_eq!((report["replayed"].as_u64(), report["same"].as_u64(), report["different"].as_u64(), report["failed"].as_u64()), (Some(5), Some(2), Some(3), Some(0)), "{report}");
    let difference = &report["differences"][0];
    assert_eq!(difference["served"]["decision"], json!({"route": ["demo/demo-small@default"]}));
    assert_eq!(difference["replayed"], json!({"route": ["demo/demo-large@default"]}));
    assert_eq!(difference["model"], "default");

    // A policy that fails or writes memory: counted, and nothing of the tenant changes.
    let hostile = gw.call("POST", "/admin/v1/policies", Some(ADMIN), &[], tollgate_tests::guests::wasm("tollgate-guest-hostile")).await.json()["hash"].as_str().expect("hash").to_string();
    // (Served by the live policy, whatever the demo makes of these model names.)
    chat(&gw, &token, "panic", &[]).await;
    chat(&gw, &token, "memory-roundtrip", &[]).await;
    recorded(&gw, "replayed", 7).await;
    let report = call(&gw, "POST", "/admin/v1/tenants/replayed/policy/replay", json!({"hash": hostile})).await.json();
    assert_eq!(report["failed"], 1, "the panic: {report}");
    let memory = call(&gw, "GET", "/admin/v1/tenants/replayed/memory", Value::Null).await.json();
    assert_eq!(memory["data"], json!([]), "a replay's memory writes are dropped: {memory}");
    let log = call(&gw, "GET", "/admin/v1/tenants/replayed/policy/log", Value::Null).await.json();
    assert!(log["data"].as_array().expect("log").is_empty(), "a replay writes nothing to the policy log: {log}");

    // Only requests since a time; limits; errors.
    let future = tollgate::clock::unix_millis() + 60_000;
    let none = call(&gw, "POST", "/admin/v1/tenants/replayed/policy/replay", json!({"hash": default, "since_millis": future})).await.json();
    assert_eq!(none["replayed"], 0);
    let two = call(&gw, "POST", "/admin/v1/tenants/replayed/policy/replay", json!({"hash": default, "limit": 2})).await.json();
    assert_eq!(two["replayed"], 2);
    let unknown = call(&gw, "POST", "/admin/v1/tenants/replayed/policy/replay", json!({"hash": "cd".repeat(32)})).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());

    // The inputs go with the tenant.
    let storage = gw.storage_id("replayed");
    assert_eq!(call(&gw, "DELETE", "/admin/v1/tenants/replayed", Value::Null).await.status, 200);
    assert!(gw.app.decision_inputs.read(&storage, 0, 1000).await.expect("read").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_replays_only_against_its_own_requests() {
    let gw = Gateway::start().await;
    let mine = gw.demo_tenant("mine", 100.0).await;
    let theirs = gw.demo_tenant("theirs", 100.0).await;
    assert_eq!(chat(&gw, &mine, "demo-small", &[]).await.status, 200);
    for _ in 0..4 {
        assert_eq!(chat(&gw, &theirs, "demo-small", &[]).await.status, 200);
    }
    recorded(&gw, "mine", 1).await;
    recorded(&gw, "theirs", 4).await;
    let manage = call(&gw, "POST", "/admin/v1/tenants/mine/tokens", json!({"scope": "manage"})).await.json()["token"].as_str().expect("token").to_string();
    let default = call(&gw, "GET", "/admin/v1/tenants/mine/policy", Value::Null).await.json()["default_policy"].as_str().expect("hash").to_string();
    let body = json!({"hash": default, "config": {"provider": "demo", "model": "demo-small"}}).to_string().into_bytes();
    let report = gw.call("POST", "/v1/tenant/policy/replay", Some(&manage), &[], body.clone()).await;
    assert_eq!(report.status, 200, "{}", report.text());
    assert_eq!(report.json()["replayed"], 1, "only its own request: {}", report.text());
    let other = gw.call("POST", "/admin/v1/tenants/theirs/policy/replay", Some(&manage), &[], body).await;
    assert!(matches!(other.status, 401 | 403), "{}", other.text());
}
