//! Tenancy through HTTP: the operator and self-service APIs, usage queries, rate limits,
//! sessions, budgets under concurrency, deletion and crash recovery.

use serde_json::json;

use crate::support::{Gateway, ADMIN};

fn hello(text: &str) -> serde_json::Value {
    json!({"model": "default", "messages": [{"role": "user", "content": text}]})
}

async fn get(gw: &Gateway, path: &str, token: &str) -> crate::support::Reply {
    gw.call("GET", path, Some(token), &[], Vec::new()).await
}

async fn token(gw: &Gateway, tenant: &str, scope: &str) -> String {
    let reply = gw.admin("POST", &format!("/admin/v1/tenants/{tenant}/tokens"), json!({"scope": scope})).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["token"].as_str().expect("token").to_string()
}

#[tokio::test]
async fn operator_creates_lists_updates_and_deletes_tenants() {
    let gw = Gateway::start().await;
    for i in 0..3 {
        let reply = gw.admin("POST", "/admin/v1/tenants", json!({"id": format!("t{i}"), "budget_usd": 5.0})).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    assert_eq!(gw.admin("POST", "/admin/v1/tenants", json!({"id": "t0"})).await.status, 409);
    assert_eq!(gw.admin("POST", "/admin/v1/tenants", json!({"id": "bad id!"})).await.error_code(), "invalid_tenant_id");
    assert_eq!(gw.admin("POST", "/admin/v1/tenants", json!({"id": "x", "budjet": 1})).await.error_code(), "invalid_json");
    let list = get(&gw, "/admin/v1/tenants", ADMIN).await.json();
    assert_eq!(list["total"], 3);
    let page = get(&gw, "/admin/v1/tenants?after=t0", ADMIN).await.json();
    assert_eq!(page["data"].as_array().map(|a| a.len()), Some(2));
    let updated = gw.admin("PATCH", "/admin/v1/tenants/t1", json!({"budget_usd": 7.5, "budget_period": "day", "rate_limits": {"requests_per_minute": 10}})).await;
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(updated.json()["budget"], json!({"limit_microdollars": 7_500_000, "period": "day"}));
    assert_eq!(updated.json()["rate_limits"]["requests_per_minute"], 10);
    assert_eq!(gw.admin("PATCH", "/admin/v1/tenants/t1", json!({"budget_usd": null})).await.json()["budget"], json!(null));
    assert_eq!(gw.admin("DELETE", "/admin/v1/tenants/t2", json!({})).await.status, 200);
    assert_eq!(get(&gw, "/admin/v1/tenants/t2", ADMIN).await.status, 404);
}

#[tokio::test]
async fn deleting_a_tenant_removes_every_record_and_its_data_key() {
    let gw = Gateway::start().await;
    let inference = gw.demo_tenant("doomed", 10.0).await;
    let chat = gw.call("POST", "/v1/chat/completions", Some(&inference), &[("x-session-id", "s1")], hello("remember me").to_string().into_bytes()).await;
    assert_eq!(chat.status, 200);
    let storage = gw.storage_id("doomed");
    let prefix = gw.tenant_key("doomed").0;
    let before = gw.app.store.tenant.scan_prefix(prefix).count();
    assert!(before >= 4, "credential, data key, ledger, rollups and session turns exist: {before}");
    let reply = gw.admin("DELETE", "/admin/v1/tenants/doomed", json!({})).await;
    assert_eq!(reply.status, 200);
    assert_eq!(gw.app.store.tenant.scan_prefix(prefix).count(), 0);
    assert_eq!(gw.chat(&inference, hello("x")).await.status, 401, "its tokens are gone too");
    assert!(gw.app.vault.open(&storage, "default").await.is_err());
}

#[tokio::test]
async fn manage_tokens_serve_their_own_tenant_only() {
    let gw = Gateway::start().await;
    let inference = gw.demo_tenant("self", 10.0).await;
    gw.demo_tenant("neighbour", 10.0).await;
    let manage = token(&gw, "self", "manage").await;
    let me = get(&gw, "/v1/tenant", &manage).await;
    assert_eq!((me.status, me.json()["id"].as_str()), (200, Some("self")));
    assert_eq!(get(&gw, "/v1/tenant", &inference).await.status, 403, "inference tokens cannot manage");
    assert_eq!(get(&gw, "/v1/tenant", ADMIN).await.status, 403);
    let put = gw.call("PUT", "/v1/tenant/credentials/extra", Some(&manage), &[], json!({"provider": "openai", "api_key": "sk-self-canary"}).to_string().into_bytes()).await;
    assert_eq!(put.status, 200, "{}", put.text());
    let listed = get(&gw, "/v1/tenant/credentials", &manage).await;
    assert!(listed.text().contains("extra") && !listed.text().contains("sk-self-canary"));
    assert!(gw.app.vault.list(&gw.storage_id("neighbour")).await.expect("list").iter().all(|c| c.name != "extra"));
    let wasm = tollgate_tests::guests::wasm("tollgate-policy-failover");
    let upload = gw.call("POST", "/v1/tenant/policies", Some(&manage), &[], wasm).await;
    assert_eq!(upload.status, 201, "{}", upload.text());
    let hash = upload.json()["hash"].as_str().expect("hash").to_string();
    let config = json!({"chain": [{"provider": "demo", "model": "demo-large"}]});
    let assigned = gw.call("PUT", "/v1/tenant/policy", Some(&manage), &[], json!({"hash": hash, "config": config}).to_string().into_bytes()).await;
    assert_eq!(assigned.status, 200, "{}", assigned.text());
    let served = gw.chat(&inference, hello("hi")).await;
    assert_eq!(served.header("x-tollgate-target"), "demo/demo-large");
    let rolled = gw.call("POST", "/v1/tenant/policy/rollback", Some(&manage), &[], Vec::new()).await;
    assert_eq!(rolled.status, 200, "{}", rolled.text());
    assert_eq!(gw.chat(&inference, hello("hi")).await.header("x-tollgate-target"), "demo/demo-small");
}

#[tokio::test]
async fn usage_groups_by_model_user_tag_and_day_as_json_and_csv() {
    let gw = Gateway::start().await;
    let token = gw.demo_tenant("metered", 10.0).await;
    for (user, model) in [("alice", "demo-small"), ("bob", "demo-large"), ("alice", "demo-large")] {
        let body = json!({"model": model, "user": user, "messages": [{"role": "user", "content": "count me"}]});
        assert_eq!(gw.chat(&token, body).await.status, 200);
    }
    let by_model = get(&gw, "/api/v1/metering/tenant/metered?start=2000-01-01&end=2100-12-31&group_by=model", ADMIN).await.json();
    assert_eq!(by_model["requests"], 3);
    let rows: Vec<(String, u64)> = by_model["rows"].as_array().expect("rows").iter().map(|r| (r["key"].as_str().unwrap_or("").to_string(), r["requests"].as_u64().unwrap_or(0))).collect();
    assert_eq!(rows, vec![("demo/demo-large".to_string(), 2), ("demo/demo-small".to_string(), 1)]);
    let by_user = get(&gw, "/admin/v1/tenants/metered/usage?start=2000-01-01&end=2100-12-31&group_by=user", ADMIN).await.json();
    assert_eq!(by_user["rows"][0]["key"], "alice");
    assert_eq!(by_user["rows"][0]["requests"], 2);
    let by_day = get(&gw, "/admin/v1/tenants/metered/usage?start=2000-01-01&end=2100-12-31&group_by=day", ADMIN).await.json();
    assert_eq!(by_day["rows"].as_array().map(|r| r.len()), Some(1));
    let csv = get(&gw, "/admin/v1/tenants/metered/usage?start=2000-01-01&end=2100-12-31&group_by=model&format=csv", ADMIN).await;
    assert_eq!(csv.header("content-type"), "text/csv");
    assert_eq!(csv.text().lines().count(), 3, "header and two models");
    assert!(csv.text().starts_with("key,requests,prompt_tokens,completion_tokens,cached_tokens,cost_microdollars\ndemo/demo-large,2,"), "{}", csv.text());
    assert_eq!(get(&gw, "/api/v1/metering/tenant/metered?start=2026-13-01", ADMIN).await.error_code(), "invalid_date");
    assert_eq!(get(&gw, "/api/v1/metering/tenant/metered?group_by=colour", ADMIN).await.error_code(), "invalid_group_by");
    let nothing = get(&gw, "/api/v1/metering/tenant/metered?start=2000-01-01&end=2000-01-31", ADMIN).await.json();
    assert_eq!(nothing["requests"], 0);
}

#[tokio::test]
async fn usage_csv_neutralises_formulas_and_quotes_fields() {
    let gw = Gateway::start().await;
    let inference = gw.demo_tenant("csv", 10.0).await;
    let formula = r#"=HYPERLINK("http://x","y")"#;
    let body = json!({"model": "default", "user": formula, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(gw.chat(&inference, body).await.status, 200);
    // A tag with a comma and one starting with '@', as a policy could attach them.
    let storage_id = gw.storage_id("csv");
    let mut record = gw.app.metering.ledger(&storage_id, 0, u64::MAX, 1).await.expect("ledger").remove(0);
    record.request_id = "tagged".into();
    record.tags = vec!["team,red".into(), "@SUM(A1)".into()];
    gw.app.metering.embedded().expect("the embedded store").record(&storage_id, &record).expect("record");
    let users = get(&gw, "/admin/v1/tenants/csv/usage?start=2000-01-01&end=2100-12-31&group_by=user&format=csv", ADMIN).await.text();
    let row = users.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with(r#""'=HYPERLINK(""http://x"",""y"")",2,"#), "{users}");
    let manage = token(&gw, "csv", "manage").await;
    let tags = get(&gw, "/v1/tenant/usage?start=2000-01-01&end=2100-12-31&group_by=tag&format=csv", &manage).await.text();
    let keys: Vec<&str> = tags.lines().skip(1).map(|l| l.rsplitn(6, ',').last().unwrap_or_default()).collect();
    assert_eq!(keys, vec!["'@SUM(A1)", r#""team,red""#], "{tags}");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_per_tenant() {
    let gw = Gateway::start().await;
    let limited = gw.demo_tenant("limited", 10.0).await;
    let other = gw.demo_tenant("other", 10.0).await;
    let patch = gw.admin("PATCH", "/admin/v1/tenants/limited", json!({"rate_limits": {"requests_per_minute": 2}})).await;
    assert_eq!(patch.status, 200);
    assert_eq!(gw.chat(&limited, hello("1")).await.status, 200);
    assert_eq!(gw.chat(&limited, hello("2")).await.status, 200);
    let refused = gw.chat(&limited, hello("3")).await;
    assert_eq!((refused.status, refused.error_code().as_str()), (429, "rate_limit_exceeded"));
    assert_eq!(refused.header("retry-after"), "30");
    assert_eq!(gw.chat(&other, hello("unaffected")).await.status, 200);
}

#[tokio::test]
async fn tokens_with_the_same_short_id_in_two_tenants_have_their_own_rate_limits() {
    let gw = Gateway::start().await;
    let mut tokens = Vec::new();
    for tenant in ["bucket-a", "bucket-b"] {
        gw.demo_tenant(tenant, 10.0).await;
        let reply = gw.admin("POST", &format!("/admin/v1/tenants/{tenant}/tokens"), json!({"scope": "inference", "rate_limits": {"requests_per_minute": 1}})).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        tokens.push(reply.json()["token"].as_str().expect("token").to_string());
    }
    // Short ids are 8 hex digits of the hash: give both tokens the same one.
    for item in gw.app.store.tokens.iter() {
        let (key, value) = item.expect("token record");
        let mut record: tollgate::tokens::TokenRecord = tollgate::store::decode("tokens", &value).expect("decode");
        record.id = "0000beef".into();
        gw.app.store.tokens.insert(key, tollgate::store::encode(&record)).expect("insert");
    }
    assert_eq!(gw.chat(&tokens[0], hello("a's one request")).await.status, 200);
    let b = gw.chat(&tokens[1], hello("b's one request"));
    assert_eq!(b.await.status, 200, "b's token has its own bucket");
    assert_eq!(gw.chat(&tokens[0], hello("a's second")).await.status, 429);
}

#[tokio::test]
async fn sessions_store_turns_prepend_history_and_stay_per_tenant() {
    let gw = Gateway::start().await;
    let a = gw.demo_tenant("sess-a", 10.0).await;
    let b = gw.demo_tenant("sess-b", 10.0).await;
    let first = gw.call("POST", "/v1/chat/completions", Some(&a), &[("x-session-id", "shared-id")], hello("my name is Ada").to_string().into_bytes()).await;
    assert_eq!(first.status, 200);
    let second = gw
        .call("POST", "/v1/chat/completions", Some(&a), &[("x-session-id", "shared-id"), ("x-session-history", "true")], hello("what is my name?").to_string().into_bytes())
        .await;
    assert_eq!(second.status, 200);
    // History (2 turns) was prepended: the prompt is larger than the question alone.
    assert!(second.json()["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > first.json()["usage"]["prompt_tokens"].as_u64().unwrap_or(0) + 10);
    let manage = token(&gw, "sess-a", "manage").await;
    let session = get(&gw, "/v1/tenant/sessions/shared-id", &manage).await.json();
    let turns: Vec<(String, String)> = session["turns"].as_array().expect("turns").iter().map(|t| (t["role"].as_str().unwrap_or("").into(), t["content"].as_str().unwrap_or("").into())).collect();
    assert_eq!(turns.len(), 4);
    assert_eq!(turns[0], ("user".to_string(), "my name is Ada".to_string()));
    assert_eq!(turns[1].1, "Hello from the Tollgate demo provider. You said: my name is Ada");
    // Tenant B with the same session id sees nothing of A.
    let b_reply = gw.call("POST", "/v1/chat/completions", Some(&b), &[("x-session-id", "shared-id"), ("x-session-history", "true")], hello("hi").to_string().into_bytes()).await;
    let b_prompt = b_reply.json()["usage"]["prompt_tokens"].as_u64().unwrap_or(u64::MAX);
    assert!(b_prompt <= 2, "tenant B got no history of A: {b_prompt} prompt tokens");
    let b_sessions = get(&gw, "/admin/v1/tenants/sess-b/sessions/shared-id", ADMIN).await.json();
    assert_eq!(b_sessions["turns"].as_array().map(|t| t.len()), Some(2));
    assert_eq!(gw.call("DELETE", "/v1/tenant/sessions/shared-id", Some(&manage), &[], Vec::new()).await.status, 200);
    assert_eq!(get(&gw, "/v1/tenant/sessions/shared-id", &manage).await.status, 404);
    assert_eq!(get(&gw, "/admin/v1/tenants/sess-b/sessions/shared-id", ADMIN).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_overspend_the_budget() {
    let gw = std::sync::Arc::new(Gateway::start().await);
    // Each request reserves prompt + 100 completion tokens at demo-small prices (~205
    // micro-dollars) and spends far less; 2,000 micro-dollars admit about ten at a time.
    let token = gw.demo_tenant("tight", 0.002).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (gw, token) = (gw.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": "default", "max_tokens": 100, "messages": [{"role": "user", "content": format!("request {i}")}]});
            gw.chat(&token, body).await.status
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    assert!(statuses.iter().all(|s| *s == 200 || *s == 402), "{statuses:?}");
    let status = gw.app.metering.status(&gw.storage_id("tight"), gw.app.tenants.get("tight").and_then(|t| t.budget), tollgate::clock::unix_millis()).await.expect("status");
    assert!(status.spent_microdollars <= 2000, "spent {} of 2000", status.spent_microdollars);
    assert_eq!(status.reserved_microdollars, 0, "every reservation settled");
    let ledger = get(&gw, "/admin/v1/tenants/tight/usage/records?start=2000-01-01&end=2100-12-31", ADMIN).await.json();
    assert_eq!(ledger["data"].as_array().map(|d| d.len()), Some(statuses.iter().filter(|s| **s == 200).count()));
}

#[tokio::test]
async fn reservations_left_by_a_crash_are_charged_on_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tollgate::Config::embedded();
    config.server.data_dir = dir.path().to_path_buf();
    let admin = tollgate::Secret::new(ADMIN.into());
    {
        let app = tollgate::App::start(config.clone(), None, &admin).await.expect("start");
        app.metering.reserve("crashed", None, "in-flight-1", 1234, tollgate::clock::unix_millis()).await.expect("reserve");
        app.store.flush().await.expect("flush");
        // Dropped without settling: what a SIGKILL mid-request leaves behind.
    }
    let app = tollgate::App::start(config, None, &admin).await.expect("restart");
    let ledger = app.metering.ledger("crashed", 0, u64::MAX, 10).await.expect("ledger");
    assert_eq!(ledger.len(), 1);
    assert_eq!((ledger[0].outcome.as_str(), ledger[0].cost_microdollars), ("crash_recovered", 1234));
    let status = app.metering.status("crashed", None, tollgate::clock::unix_millis()).await.expect("status");
    assert_eq!((status.spent_microdollars, status.reserved_microdollars), (1234, 0));
    assert_eq!(std::fs::metadata(dir.path().join("master.key")).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777).ok(), Some(0o600));
}

#[tokio::test]
async fn end_user_budgets_and_tenant_price_overrides_apply() {
    let gw = Gateway::start().await;
    let token = gw.demo_tenant("priced", 10.0).await;
    // At the tenant's price ($100/Mtok) a request reserves 600 micro-dollars (4 prompt
    // tokens estimated + 2 completion) and spends 300; each end user may hold 800.
    let patch = gw
        .admin("PATCH", "/admin/v1/tenants/priced", json!({"user_budget_usd": 0.0008,
            "price_overrides": [{"provider": "demo", "model": "demo-small", "input_usd_per_mtok": 100.0, "output_usd_per_mtok": 100.0, "context_window": 32000}]}))
        .await;
    assert_eq!(patch.status, 200, "{}", patch.text());
    let body = |user: &str| json!({"model": "default", "user": user, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]});
    let first = gw.chat(&token, body("alice")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    // At the tenant's price ($100/Mtok), 1 prompt + 2 completion tokens cost 300 micro-dollars.
    let usage = get(&gw, "/admin/v1/tenants/priced/usage?start=2000-01-01&end=2100-12-31", ADMIN).await.json();
    assert_eq!(usage["cost_microdollars"], 300);
    let second = gw.chat(&token, body("alice")).await;
    assert_eq!(second.status, 402, "{}", second.text());
    assert!(second.text().contains("end user 'alice'"), "{}", second.text());
    assert_eq!(gw.chat(&token, body("bob")).await.status, 200, "other end users keep their own budget");
}

#[tokio::test]
async fn every_change_lands_in_a_verifiable_audit_chain_without_secrets() {
    let gw = Gateway::start().await;
    gw.demo_tenant("audited", 10.0).await;
    let manage = token(&gw, "audited", "manage").await;
    let put = gw.call("PUT", "/v1/tenant/credentials/k2", Some(&manage), &[], json!({"provider": "openai", "api_key": "sk-audit-canary"}).to_string().into_bytes()).await;
    assert_eq!(put.status, 200);
    assert_eq!(gw.admin("PATCH", "/admin/v1/tenants/audited", json!({"budget_usd": 20.0})).await.status, 200);
    assert_eq!(gw.admin("POST", "/admin/v1/keys/rotate", json!({"new_master_key": "c4e2a9f17b3d5806e1a9c7b5d3f2048a6e9c1b7d3f5a2e8c0b4d6f1a3c5e7b92"})).await.status, 200);
    let log = get(&gw, "/admin/v1/audit", ADMIN).await;
    assert!(!log.text().contains("sk-audit-canary") && !log.text().contains("sk-canary-audited"), "{}", log.text());
    let actions: Vec<(String, String)> = log.json()["data"].as_array().expect("data").iter().map(|r| (r["actor"].as_str().unwrap_or("").to_string(), r["action"].as_str().unwrap_or("").to_string())).collect();
    let names: Vec<&str> = actions.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(names, vec!["tenant.create", "token.issue", "credential.put", "tenant.update", "keys.rotate"]);
    assert!(actions[2].0.starts_with("tenant:audited/token:"), "self-service changes name the token: {:?}", actions[2]);
    let own = get(&gw, "/v1/tenant/audit", &manage).await.json();
    assert_eq!(own["data"].as_array().map(|d| d.len()), Some(4), "the tenant sees its own records, not the gateway-wide rotation");
    let verified = get(&gw, "/admin/v1/audit/verify", ADMIN).await.json();
    assert_eq!((verified["ok"].as_bool(), verified["records"].as_u64()), (Some(true), Some(5)));
    // Tamper with record 2 on disk: verification points at it.
    let raw = gw.app.store.audit.get(2u64.to_be_bytes()).expect("read").expect("record");
    let edited = String::from_utf8_lossy(&raw).replace("token.issue", "token.issuE");
    gw.app.store.audit.insert(2u64.to_be_bytes(), edited.as_bytes()).expect("write");
    let broken = get(&gw, "/admin/v1/audit/verify", ADMIN).await.json();
    assert_eq!((broken["ok"].as_bool(), broken["broken_at"].as_u64()), (Some(false), Some(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_taken_while_serving_restores_tenants_ledger_and_credentials() {
    // A key of no repeating pattern: the canary sweep looks for its raw bytes on disk, and
    // 32 equal bytes occur in the compiled interpreters other tests store.
    let key = tollgate::sealing::Key::parse("3a9c5e17b2d48f60c1e7a93b5d2f8046e9b1c37d5a2f84e06b9d1c3f7a5e2b48").expect("key");
    let gw = std::sync::Arc::new(Gateway::start_with_key(tollgate::Config::embedded(), key.clone()).await);
    let token = gw.demo_tenant("backed-up", 10.0).await;
    assert_eq!(gw.chat(&token, hello("before the backup")).await.status, 200);
    // Keep traffic flowing while the backup streams.
    let load = {
        let (gw, token) = (gw.clone(), token.clone());
        tokio::spawn(async move {
            for i in 0..20 {
                assert_eq!(gw.chat(&token, hello(&format!("during {i}"))).await.status, 200);
            }
        })
    };
    let backup = get(&gw, "/admin/v1/backup", ADMIN).await;
    assert_eq!(backup.status, 200);
    load.await.expect("load");
    assert!(backup.body.starts_with(b"TOLLGATE-BACKUP-1\n"));
    let dir = tempfile::tempdir().expect("tempdir");
    let stats = tollgate::backup::restore(dir.path(), backup.body.as_slice()).expect("restore");
    assert!(stats.records > 5, "{stats:?}");
    let restored = tollgate::Store::open(dir.path()).expect("open restored");
    assert!(restored.tenants.get("backed-up").expect("read").is_some());
    let storage = gw.storage_id("backed-up");
    let metering = tollgate::metering::Metering::new(restored.clone()).expect("metering");
    let ledger = metering.ledger(&storage, 0, u64::MAX, 100).await.expect("ledger");
    assert!(!ledger.is_empty() && ledger.iter().any(|r| r.outcome == "success"));
    // The same master key opens the restored credential; the audit chain still verifies.
    let vault = tollgate::sealing::Vault::new(restored.clone(), key).expect("vault");
    assert_eq!(vault.open(&storage, "default").await.expect("open").1.expose(), "sk-canary-backed-up");
    assert!(tollgate::audit::AuditLog::open(restored).expect("audit").verify().await.expect("verify").ok);
    let mut truncated = backup.body.clone();
    truncated.truncate(truncated.len() - 1);
    assert!(tollgate::backup::restore(tempfile::tempdir().expect("dir").path(), truncated.as_slice()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_is_a_snapshot_whose_spend_matches_its_ledger() {
    let gw = std::sync::Arc::new(Gateway::start().await);
    let token = gw.demo_tenant("snapshot", 100.0).await;
    let budget = gw.app.tenants.get("snapshot").and_then(|t| t.budget);
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut load = Vec::new();
    for client in 0..6 {
        let (gw, token, running) = (gw.clone(), token.clone(), running.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(gw.chat(&token, hello(&format!("client {client} request {i}"))).await.status, 200);
                i += 1;
            }
        }));
    }
    // A longer ledger widens the window between a tenant's spend counters and its last
    // ledger record in a backup that is not a snapshot.
    let storage_id = gw.storage_id("snapshot");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while gw.app.metering.ledger(&storage_id, 0, u64::MAX, 300).await.expect("ledger").len() < 300 {
        assert!(std::time::Instant::now() < deadline, "300 requests did not land within 120 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for round in 0..16 {
        let backup = get(&gw, "/admin/v1/backup", ADMIN).await;
        assert_eq!(backup.status, 200);
        let dir = tempfile::tempdir().expect("tempdir");
        tollgate::backup::restore(dir.path(), backup.body.as_slice()).expect("restore");
        let restored = tollgate::Store::open(dir.path()).expect("open restored");
        let metering = tollgate::metering::Metering::new(restored).expect("metering");
        let ledger: u64 = metering.ledger(&storage_id, 0, u64::MAX, usize::MAX).await.expect("ledger").iter().map(|r| r.cost_microdollars).sum();
        let spent = metering.status(&storage_id, budget, tollgate::clock::unix_millis()).await.expect("status").spent_microdollars;
        assert!(ledger > 0);
        assert_eq!(spent, ledger, "backup {round}: the restored spend counter must equal the restored ledger's costs");
    }
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.expect("load");
    }
}
