//! End-to-end through HTTP on loopback: the request path, authentication, bad input,
//! budgets and metering, with the built-in demo provider.

use serde_json::json;

use crate::support::{Gateway, ADMIN};

fn hello(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]})
}

#[tokio::test]
async fn demo_chat_runs_the_whole_request_path_and_lands_in_the_ledger() {
    let gw = Gateway::start().await;
    let token = gw.demo_tenant("tenant-a", 100.0).await;
    let reply = gw.chat(&token, hello("default")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "demo-small");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from the Tollgate demo provider. You said: Hello there");
    assert_eq!(body["usage"]["completion_tokens"], 10);
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(reply.header("x-tollgate-target"), "demo/demo-small");
    assert_eq!(reply.header("x-tollgate-policy"), gw.app.default_policy.short());
    assert_eq!(reply.header("x-tollgate-policy-trace"), "default:demo-small");
    assert_eq!(reply.header("x-request-id").len(), 24);
    let usage = gw.call("GET", "/api/v1/metering/tenant/tenant-a?start=2000-01-01&end=2100-01-01", Some(ADMIN), &[], Vec::new()).await;
    let usage = usage.json();
    assert_eq!(usage["requests"], 1);
    // demo-small: $1 per Mtok in, $2 out: 3 * 1 + 10 * 2 = 23 micro-dollars.
    assert_eq!(usage["cost_microdollars"], 23);
    let ledger = gw.call("GET", "/admin/v1/tenants/tenant-a/usage/records?start=2000-01-01&end=2100-12-31", Some(ADMIN), &[], Vec::new()).await.json();
    assert_eq!(ledger["data"][0]["request_id"].as_str(), Some(reply.header("x-request-id").as_str()));
    assert_eq!(ledger["data"][0]["outcome"], "success");
}

#[tokio::test]
async fn streaming_sends_chunks_usage_and_done() {
    let gw = Gateway::start().await;
    let token = gw.demo_tenant("streamer", 100.0).await;
    let mut body = hello("demo-small");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = gw.chat(&token, body.clone()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "text/event-stream");
    let events: Vec<String> = reply.text().split("\n\n").filter(|e| !e.is_empty()).map(|e| e.trim_start_matches("data: ").to_string()).collect();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let usage: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 10);
    let text: String = events[..events.len() - 2]
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "Hello from the Tollgate demo provider. You said: Hello there");
    // Without include_usage there is no usage chunk.
    body["stream_options"] = json!({"include_usage": false});
    let plain = gw.chat(&token, body).await.text();
    assert!(!plain.contains("\"usage\""), "{plain}");
    assert!(plain.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn bad_tokens_of_any_shape_get_401_never_500() {
    let gw = Gateway::start().await;
    let long = "x".repeat(10_000);
    for token in ["", "nope", "tg_", long.as_str(), "Bearer Bearer", "tg_!!==//"] {
        let reply = gw.call("POST", "/v1/chat/completions", Some(token), &[], hello("x").to_string().into_bytes()).await;
        assert_eq!(reply.status, 401, "token {token:?}: {}", reply.text());
        assert_eq!(reply.error_code(), "invalid_api_key");
    }
    let missing = gw.call("POST", "/v1/chat/completions", None, &[], Vec::new()).await;
    assert_eq!((missing.status, missing.json()["error"]["type"].as_str()), (401, Some("authentication_error")));
}

#[tokio::test]
async fn x_tenant_id_must_name_the_tokens_tenant() {
    let gw = Gateway::start().await;
    let token = gw.demo_tenant("tenant-a", 10.0).await;
    gw.demo_tenant("tenant-b", 10.0).await;
    let reply = gw.call("POST", "/v1/chat/completions", Some(&token), &[("x-tenant-id", "tenant-b")], hello("x").to_string().into_bytes()).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (403, "permission_denied"));
    let same = gw.call("POST", "/v1/chat/completions", Some(&token), &[("x-tenant-id", "tenant-a")], hello("default").to_string().into_bytes()).await;
    assert_eq!(same.status, 200);
}

#[tokio::test]
async fn bad_bodies_get_clear_4xx() {
    let gw = Gateway::start().await;
    let token = gw.demo_tenant("t", 10.0).await;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{bad".to_vec(), 400, "invalid_json"),
        (br#"{"model":"x","messages":"no"}"#.to_vec(), 400, "missing_messages"),
        (br#"{"model":"x","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#.to_vec(), 400, "invalid_type"),
        (format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), 400, "invalid_json"),
        (vec![b' '; 5 << 20], 413, "request_too_large"),
    ];
    for (body, status, code) in cases {
        let reply = gw.call("POST", "/v1/chat/completions", Some(&token), &[], body).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (status, code), "{}", reply.text());
    }
}

#[tokio::test]
async fn over_budget_is_402_and_reservations_never_overspend() {
    let gw = Gateway::start().await;
    // 30 micro-dollars: one demo reservation (prompt estimate + 4096 completion tokens at
    // $2/Mtok) is far more, so the first request is refused before any upstream call.
    let token = gw.demo_tenant("frugal", 0.00003).await;
    let reply = gw.chat(&token, hello("default")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (402, "budget_exceeded"), "{}", reply.text());
    assert_eq!(reply.json()["error"]["type"], "insufficient_quota");
    let mut capped = hello("default");
    capped["max_tokens"] = json!(5);
    let ok = gw.chat(&token, capped).await;
    assert_eq!(ok.status, 200, "a request whose worst case fits is served: {}", ok.text());
}

#[tokio::test]
async fn per_request_provider_keys_need_the_tenants_permission() {
    let gw = Gateway::start().await;
    let token = gw.demo_tenant("t", 10.0).await;
    let reply = gw.call("POST", "/v1/chat/completions", Some(&token), &[("x-provider-api-key", "sk-canary-request")], hello("default").to_string().into_bytes()).await;
    assert_eq!(reply.status, 403);
    assert!(!reply.text().contains("sk-canary-request"));
}

#[tokio::test]
async fn credentials_are_listed_without_secrets_and_operator_routes_need_the_admin_token() {
    let gw = Gateway::start().await;
    let token = gw.demo_tenant("t", 10.0).await;
    let list = gw.call("GET", "/admin/v1/tenants/t/credentials", Some(ADMIN), &[], Vec::new()).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["data"][0]["name"], "default");
    assert!(!list.text().contains("sk-canary-t"), "{}", list.text());
    let forbidden = gw.call("GET", "/admin/v1/tenants/t/credentials", Some(&token), &[], Vec::new()).await;
    assert_eq!(forbidden.status, 403);
    let metrics = gw.call("GET", "/metrics", None, &[], Vec::new()).await.text();
    assert!(metrics.contains("tollgate_policy_pool_size 64"), "{metrics}");
    assert!(!metrics.contains("sk-canary"));
}

#[tokio::test]
async fn metrics_count_the_ledger_batches_each_answer_waited_for() {
    let gw = Gateway::start().await;
    let token = gw.demo_tenant("t", 10.0).await;
    for _ in 0..3 {
        assert_eq!(gw.chat(&token, hello("default")).await.status, 200);
    }
    let metrics = gw.call("GET", "/metrics", None, &[], Vec::new()).await.text();
    let value = |name: &str| metric(&metrics, name);
    // Each answer waited for its settlement to be committed and synced.
    assert_eq!(value("tollgate_ledger_settlements_total"), 3.0, "{metrics}");
    let batches = value("tollgate_ledger_batches_total");
    assert!((1.0..=3.0).contains(&batches), "{metrics}");
    assert_eq!(value("tollgate_ledger_commit_seconds_count"), batches, "{metrics}");
    // One sync covers every batch committed before it began.
    assert!((1.0..=batches).contains(&value("tollgate_ledger_sync_seconds_count")), "{metrics}");
    assert!(metrics.contains("tollgate_ledger_commit_seconds_bucket{le=\"0.0001\"}"), "{metrics}");
}

/// A sample's value in a `/metrics` text.
fn metric(metrics: &str, name: &str) -> f64 {
    let line = metrics.lines().find(|l| l.split_whitespace().next().map(|n| n.trim_end_matches("{}")) == Some(name)).unwrap_or_else(|| panic!("no {name} in {metrics}"));
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

#[tokio::test]
async fn writes_answered_as_stored_and_ledger_checkpoints_wait_for_the_store_files_to_sync() {
    // sled's own flush never calls fsync on Linux: what it wrote could sit in the disk's
    // cache, and its blob files were never synced at all.
    let dir = tempfile::tempdir().expect("dir");
    let store = tollgate::Store::open(dir.path()).expect("store");
    let app = tollgate::App::with_store(tollgate::Config::embedded(), store, tollgate::sealing::Key::random(), &tollgate::Secret::new(ADMIN.into())).await.expect("app");
    let gw = Gateway::serving(app).await;
    let syncs = |metrics: String| metric(&metrics, "tollgate_store_syncs_total");
    let before = syncs(gw.call("GET", "/metrics", None, &[], Vec::new()).await.text());
    let token = gw.demo_tenant("t", 10.0).await;
    let after_create = syncs(gw.call("GET", "/metrics", None, &[], Vec::new()).await.text());
    assert!(after_create > before, "creating a tenant and its token is answered once synced: {before} -> {after_create}");
    assert_eq!(gw.chat(&token, hello("default")).await.status, 200);
    // Deleting a tenant checkpoints the ledger (sled flushed, then the journal emptied):
    // the journal's frames may only go once sled's files are synced.
    assert_eq!(gw.admin("DELETE", "/admin/v1/tenants/t", json!({})).await.status, 200);
    let metrics = gw.call("GET", "/metrics", None, &[], Vec::new()).await.text();
    assert!(metric(&metrics, "tollgate_ledger_checkpoints_total") >= 1.0, "{metrics}");
    assert!(syncs(metrics) >= after_create + 2.0, "the deletion's own write and the checkpoint each synced");
}

#[tokio::test]
async fn a_trapping_policy_fails_only_its_tenant_with_a_clear_error() {
    let gw = Gateway::start().await;
    let good = gw.demo_tenant("good", 10.0).await;
    let bad = gw.demo_tenant("bad", 10.0).await;
    let wasm = tollgate_tests::guests::wasm("tollgate-guest-hostile");
    let upload = gw.call("POST", "/admin/v1/policies", Some(ADMIN), &[("content-type", "application/wasm")], wasm).await;
    assert_eq!(upload.status, 201, "{}", upload.text());
    let hash = upload.json()["hash"].as_str().expect("hash").to_string();
    let assign = gw.admin("PUT", "/admin/v1/tenants/bad/policy", json!({"hash": hash, "config": {}})).await;
    assert_eq!(assign.status, 200, "{}", assign.text());
    let reply = gw.chat(&bad, hello("panic")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (500, "policy_failed"));
    assert!(reply.json()["error"]["message"].as_str().unwrap_or("").contains(&hash), "{}", reply.text());
    assert_eq!(gw.chat(&good, hello("default")).await.status, 200);
    let bogus = gw.call("POST", "/admin/v1/policies", Some(ADMIN), &[], b"\0asm\x01\0\0\0".to_vec()).await;
    assert_eq!((bogus.status, bogus.error_code().as_str()), (400, "invalid_policy"));
}
