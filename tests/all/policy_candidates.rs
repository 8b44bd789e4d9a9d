//! Candidate policies (`.../policy/candidate`): in shadow mode a candidate runs beside the
//! live policy and is compared, never acted on (not on the answer, not on the tenant's
//! memory, not when it fails); in canary mode it decides its share of requests (chosen by
//! request id), the live policy decides when it fails; promote and drop are one call each.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{Gateway, Reply, ADMIN};

async fn upload(gw: &Gateway, package: &str) -> String {
    let reply = gw.call("POST", "/admin/v1/policies", Some(ADMIN), &[], tollgate_tests::guests::wasm(package)).await;
    assert!(reply.status == 200 || reply.status == 201, "{}", reply.text());
    reply.json()["hash"].as_str().expect("hash").to_string()
}

async fn call(gw: &Gateway, method: &str, path: &str, body: Value) -> Reply {
    let bytes = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    gw.call(method, path, Some(ADMIN), &[], bytes).await
}

/// A tenant whose live policy is the stock default on `demo-small`; returns its token and
/// the default policy's hash.
async fn tenant(gw: &Gateway, id: &str) -> (String, String) {
    let token = gw.demo_tenant(id, 100.0).await;
    let default = call(gw, "GET", &format!("/admin/v1/tenants/{id}/policy"), Value::Null).await.json()["default_policy"].as_str().expect("default").to_string();
    let assigned = call(gw, "PUT", &format!("/admin/v1/tenants/{id}/policy"), json!({"hash": default, "config": {"provider": "demo", "model": "demo-small"}})).await;
    assert_eq!(assigned.status, 200, "{}", assigned.text());
    (token, default)
}

async fn chat(gw: &Gateway, token: &str, model: &str) -> Reply {
    gw.chat(token, json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})).await
}

/// The candidate report once `compared + canary_failed` reaches `n` (comparisons run after
/// the response), bounded.
async fn report_after(gw: &Gateway, id: &str, n: u64) -> Value {
    let started = Instant::now();
    loop {
        let report = call(gw, "GET", &format!("/admin/v1/tenants/{id}/policy/candidate"), Value::Null).await;
        assert_eq!(report.status, 200, "{}", report.text());
        let report = report.json();
        let seen = report["comparisons"]["compared"].as_u64().unwrap_or(0) + report["comparisons"]["canary_failed"].as_u64().unwrap_or(0);
        if seen >= n {
            return report;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "only {seen} of {n} comparisons after 30 s: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_candidate_is_compared_and_never_acted_on() {
    let gw = Gateway::start().await;
    let (token, default) = tenant(&gw, "shadowed").await;
    let assigned = call(&gw, "PUT", "/admin/v1/tenants/shadowed/policy/candidate", json!({"hash": default, "config": {"provider": "demo", "model": "demo-large"}, "mode": "shadow"})).await;
    assert_eq!(assigned.status, 200, "{}", assigned.text());
    assert_eq!(assigned.json()["candidate_policy"]["percent"], 100);

    for _ in 0..3 {
        let reply = chat(&gw, &token, "default").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-tollgate-target"), "demo/demo-small", "the live policy's decision is the one acted on");
    }
    // Both decide the same when the client names the model.
    assert_eq!(chat(&gw, &token, "demo-small").await.status, 200);

    let report = report_after(&gw, "shadowed", 4).await;
    assert_eq!(report["comparisons"], json!({"compared": 4, "same": 1, "different": 3, "beside_failed": 0, "canary_failed": 0}), "{report}");
    let different = report["recent"].as_array().expect("recent").iter().find(|c| c["same"] == false).expect("a difference").clone();
    assert_eq!(different["mode"], "shadow");
    assert_eq!(different["acting"]["decision"], json!({"route": ["demo/demo-small@default"]}));
    assert_eq!(different["beside"]["decision"], json!({"route": ["demo/demo-large@default"]}));
    // The policy log shows the same lines.
    let log = call(&gw, "GET", "/admin/v1/tenants/shadowed/policy/log", Value::Null).await.json();
    assert_eq!(log["data"].as_array().expect("log").iter().filter(|l| l["level"] == "compare").count(), 4);
    // No ledger record names anything but the live routing.
    let records = call(&gw, "GET", "/admin/v1/tenants/shadowed/usage/records", Value::Null).await.json();
    assert!(records["data"].as_array().expect("records").iter().all(|r| r["model"] == "demo-small"), "{records}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_writing_shadow_changes_nothing_the_live_policy_serves() {
    let gw = Gateway::start().await;
    let (token, _) = tenant(&gw, "guarded").await;
    let hostile = upload(&gw, "tollgate-guest-hostile").await;
    // What the live policy alone answers to each request.
    let mut alone = Vec::new();
    for model in ["panic", "loop", "memory-roundtrip"] {
        let reply = chat(&gw, &token, model).await;
        alone.push((reply.status, reply.header("x-tollgate-target"), reply.error_code()));
    }
    let assigned = call(&gw, "PUT", "/admin/v1/tenants/guarded/policy/candidate", json!({"hash": hostile, "mode": "shadow"})).await;
    assert_eq!(assigned.status, 200, "{}", assigned.text());
    for (model, expected) in ["panic", "loop", "memory-roundtrip"].into_iter().zip(&alone) {
        let started = Instant::now();
        let reply = chat(&gw, &token, model).await;
        assert_eq!((reply.status, reply.header("x-tollgate-target"), reply.error_code()), *expected, "{model}");
        // The candidate spins to its deadline after the answer, not before it.
        assert!(started.elapsed() < Duration::from_secs(5), "{model} took {:?}", started.elapsed());
    }
    let report = report_after(&gw, "guarded", 3).await;
    assert_eq!(report["comparisons"]["beside_failed"], 2, "panic and loop fail beside: {report}");
    // The candidate wrote `note` in its dry run; the tenant's memory never saw it.
    let memory = call(&gw, "GET", "/admin/v1/tenants/guarded/memory", Value::Null).await.json();
    assert_eq!(memory["data"], json!([]), "{memory}");
    // Its failures did not suspend or throttle the live policy.
    for _ in 0..5 {
        assert_eq!(chat(&gw, &token, "default").await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_decides_its_share_and_the_live_policy_takes_over_when_it_fails() {
    let gw = Gateway::start().await;
    let (token, default) = tenant(&gw, "canaried").await;
    let refused = call(&gw, "PUT", "/admin/v1/tenants/canaried/policy/candidate", json!({"hash": default, "mode": "canary"})).await;
    assert_eq!((refused.status, refused.error_code()), (400, "invalid_percent".to_string()));
    let refused = call(&gw, "PUT", "/admin/v1/tenants/canaried/policy/candidate", json!({"hash": default, "mode": "canary", "percent": 0})).await;
    assert_eq!((refused.status, refused.error_code()), (400, "invalid_percent".to_string()));
    let unknown = call(&gw, "PUT", "/admin/v1/tenants/canaried/policy/candidate", json!({"hash": "ab".repeat(32), "mode": "shadow"})).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());

    let assigned = call(&gw, "PUT", "/admin/v1/tenants/canaried/policy/candidate", json!({"hash": default, "config": {"provider": "demo", "model": "demo-large"}, "mode": "canary", "percent": 50})).await;
    assert_eq!(assigned.status, 200, "{}", assigned.text());
    let candidate: tollgate::tenants::CandidatePolicy = serde_json::from_value(assigned.json()["candidate_policy"].clone()).expect("candidate");
    let (mut canary, mut live) = (0, 0);
    for _ in 0..40 {
        let reply = chat(&gw, &token, "default").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        // The request id decides the lane, the same way on every replica.
        let expected = if candidate.selects(&reply.header("x-request-id")) { "demo/demo-large" } else { "demo/demo-small" };
        assert_eq!(reply.header("x-tollgate-target"), expected);
        if expected == "demo/demo-large" { canary += 1 } else { live += 1 }
    }
    assert!(canary > 5 && live > 5, "canary {canary}, live {live} of 40 at 50%");
    let report = report_after(&gw, "canaried", canary).await;
    assert_eq!(report["comparisons"]["different"], canary, "each canary decision is compared with the live one: {report}");

    // A canary that fails hands the request to the live policy.
    let hostile = upload(&gw, "tollgate-guest-hostile").await;
    call(&gw, "DELETE", "/admin/v1/tenants/canaried/policy/candidate", Value::Null).await;
    let alone = chat(&gw, &token, "panic").await;
    let assigned = call(&gw, "PUT", "/admin/v1/tenants/canaried/policy/candidate", json!({"hash": hostile, "mode": "canary", "percent": 100})).await;
    assert_eq!(assigned.status, 200, "{}", assigned.text());
    let reply = chat(&gw, &token, "panic").await;
    assert_eq!((reply.status, reply.error_code(), reply.header("x-tollgate-policy")), (alone.status, alone.error_code(), alone.header("x-tollgate-policy")), "the live policy decided: {}", reply.text());
    let report = report_after(&gw, "canaried", canary + 1).await;
    assert_eq!(report["comparisons"]["canary_failed"], 1, "{report}");
    // While a tenant runs it, the candidate cannot be deleted.
    let deleting = call(&gw, "DELETE", &format!("/admin/v1/policies/{hostile}"), Value::Null).await;
    assert_eq!(deleting.status, 409, "{}", deleting.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_makes_the_candidate_the_policy_and_drop_removes_it() {
    let gw = Gateway::start().await;
    let (token, default) = tenant(&gw, "promoted").await;
    let manage = call(&gw, "POST", "/admin/v1/tenants/promoted/tokens", json!({"scope": "manage"})).await.json()["token"].as_str().expect("token").to_string();
    let as_tenant = |method: &'static str, path: &'static str, body: Value| {
        let (gw, manage) = (&gw, manage.clone());
        async move { gw.call(method, path, Some(&manage), &[], if body.is_null() { Vec::new() } else { body.to_string().into_bytes() }).await }
    };
    assert_eq!(as_tenant("POST", "/v1/tenant/policy/candidate/promote", Value::Null).await.status, 409, "nothing to promote");
    let assigned = as_tenant("PUT", "/v1/tenant/policy/candidate", json!({"hash": default, "config": {"provider": "demo", "model": "demo-large"}, "mode": "shadow", "percent": 10})).await;
    assert_eq!(assigned.status, 200, "{}", assigned.text());
    let promoted = as_tenant("POST", "/v1/tenant/policy/candidate/promote", Value::Null).await;
    assert_eq!(promoted.status, 200, "{}", promoted.text());
    let promoted = promoted.json();
    assert_eq!(promoted["candidate_policy"], Value::Null);
    assert_eq!(promoted["policy"]["config"], json!({"provider": "demo", "model": "demo-large"}).to_string());
    assert_eq!(promoted["previous_policy"]["config"], json!({"provider": "demo", "model": "demo-small"}).to_string());
    assert_eq!(chat(&gw, &token, "default").await.header("x-tollgate-target"), "demo/demo-large");
    // Rolling back returns to the policy before the promotion.
    assert_eq!(as_tenant("POST", "/v1/tenant/policy/rollback", Value::Null).await.status, 200);
    assert_eq!(chat(&gw, &token, "default").await.header("x-tollgate-target"), "demo/demo-small");

    assert_eq!(as_tenant("PUT", "/v1/tenant/policy/candidate", json!({"hash": default, "mode": "shadow"})).await.status, 200);
    assert_eq!(as_tenant("DELETE", "/v1/tenant/policy/candidate", Value::Null).await.status, 200);
    assert_eq!(as_tenant("DELETE", "/v1/tenant/policy/candidate", Value::Null).await.status, 404);
    let audit = as_tenant("GET", "/v1/tenant/audit", Value::Null).await.json();
    let actions: Vec<&str> = audit["data"].as_array().expect("audit").iter().filter_map(|r| r["action"].as_str()).filter(|a| a.starts_with("policy.candidate")).collect();
    assert_eq!(actions, ["policy.candidate.assign", "policy.candidate.promote", "policy.candidate.assign", "policy.candidate.drop"]);
}
