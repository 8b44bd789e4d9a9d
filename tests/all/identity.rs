//! A tenant id reused is a new tenant: deletion races with traffic, re-creation, atomic
//! creates and updates, and creations a crash interrupted.

use serde_json::json;
use tollgate::catalog::ModelEntry;
use tollgate_tests::mock::MockUpstream;

use crate::mocked;
use crate::support::{Gateway, ADMIN};

async fn get(gw: &Gateway, path: &str, token: &str) -> crate::support::Reply {
    gw.call("GET", path, Some(token), &[], Vec::new()).await
}

async fn manage_token(gw: &Gateway, id: &str) -> String {
    let issued = mocked::admin_ok(gw, "POST", &format!("/admin/v1/tenants/{id}/tokens"), json!({"scope": "manage"})).await;
    issued["token"].as_str().expect("token").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_deleted_while_busy_and_created_again_inherits_nothing() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    for model in ["mock", "mock-latency=800"] {
        config.models.push(ModelEntry { provider: "openai".into(), model: model.into(), input_usd_per_mtok: 1.0, output_usd_per_mtok: 1.0, context_window: 100_000, cached_input_usd_per_mtok: None, cache_write_usd_per_mtok: None });
    }
    let gw = std::sync::Arc::new(Gateway::start_with(config).await);
    let token = mocked::create_tenant(&gw, "phoenix", json!({"budget_usd": 5.0})).await;
    mocked::put_credential(&gw, "phoenix", "main", "openai", "sk-phoenix").await;
    mocked::default_policy(&gw, "phoenix", json!({"provider": "openai", "credential": "main"})).await;
    let session = [("x-session-id", "diary")];
    let first = gw.call("POST", "/v1/chat/completions", Some(&token), &session, mocked::chat("mock", "my first secret").to_string().into_bytes()).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let old = gw.app.tenants.get("phoenix").expect("tenant");

    // Requests in flight when the delete comes; they settle, and append session turns,
    // after the purge.
    let mut in_flight = Vec::new();
    for i in 0..3 {
        let (gw, token) = (gw.clone(), token.clone());
        in_flight.push(tokio::spawn(async move {
            let body = mocked::chat("mock-latency=800", &format!("late secret {i}")).to_string().into_bytes();
            gw.call("POST", "/v1/chat/completions", Some(&token), &[("x-session-id", "diary")], body).await.status
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let deleted = gw.admin("DELETE", "/admin/v1/tenants/phoenix", json!({})).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    // A manage token minted for the old incarnation while it was being deleted.
    let (stale_manage, _) = tollgate::tokens::issue(&gw.app.store, &old, tollgate::tokens::Scope::Manage, Default::default()).await.expect("issue");
    let created = gw.admin("POST", "/admin/v1/tenants", json!({"id": "phoenix", "budget_usd": 5.0})).await;
    assert_eq!(created.status, 201, "{}", created.text());
    for task in in_flight {
        let status = task.await.expect("join");
        assert!(status == 200 || status == 401, "in-flight request: {status}");
    }

    // The new tenant sees none of the old one's spend, ledger, sessions, audit or tokens.
    assert_eq!(gw.chat(&token, mocked::chat("mock", "x")).await.status, 401, "old tokens are gone");
    assert_eq!(get(&gw, "/v1/tenant", &stale_manage).await.status, 401, "a token minted during the delete opens nothing");
    let manage = manage_token(&gw, "phoenix").await;
    let records = get(&gw, "/v1/tenant/usage/records?start=2000-01-01&end=2100-12-31", &manage).await.json();
    assert_eq!(records["data"], json!([]), "ledger rows inherited: {records}");
    let usage = get(&gw, "/v1/tenant/usage?start=2000-01-01&end=2100-12-31", &manage).await.json();
    assert_eq!((usage["requests"].as_u64(), usage["cost_microdollars"].as_u64()), (Some(0), Some(0)), "{usage}");
    let sessions = get(&gw, "/v1/tenant/sessions", &manage).await;
    assert!(!sessions.text().contains("diary") && !sessions.text().contains("secret"), "session text inherited: {}", sessions.text());
    assert_eq!(get(&gw, "/v1/tenant/sessions/diary", &manage).await.status, 404);
    let audit = get(&gw, "/v1/tenant/audit", &manage).await.json();
    let actions: Vec<&str> = audit["data"].as_array().expect("audit").iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(actions, vec!["tenant.create", "token.issue"], "audit inherited: {audit}");
    let status = gw.app.metering.status(&gw.storage_id("phoenix"), gw.app.tenants.get("phoenix").and_then(|t| t.budget), tollgate::clock::unix_millis()).await.expect("status");
    assert_eq!((status.spent_microdollars, status.reserved_microdollars), (0, 0));

    // What the old incarnation's requests wrote after the purge is purged again (here by
    // the start-up pass; a running gateway also does it on a schedule): no byte of it stays.
    tollgate::tenant_lifecycle::finish_interrupted(&gw.app).await.expect("purge");
    assert_eq!(gw.app.store.tenant.scan_prefix(old.key().0).count(), 0, "records of the dead incarnation remain");
    assert!(gw.app.store.tenant.scan_prefix(gw.tenant_key("phoenix").0).all(|kv| kv.map(|(_, v)| !String::from_utf8_lossy(&v).contains("secret")).unwrap_or(true)));
}

#[tokio::test]
async fn concurrent_creates_of_one_id_make_one_tenant() {
    let gw = std::sync::Arc::new(Gateway::start().await);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move { gw.admin("POST", "/admin/v1/tenants", json!({"id": "twin"})).await.status }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("join"));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 409), "{statuses:?}");
}

#[tokio::test]
async fn concurrent_operator_and_tenant_updates_are_both_kept() {
    let gw = std::sync::Arc::new(Gateway::start().await);
    gw.demo_tenant("shared", 10.0).await;
    let manage = manage_token(&gw, "shared").await;
    let hash = gw.app.default_policy.to_string();
    for round in 0..20 {
        let patch = {
            let gw = gw.clone();
            tokio::spawn(async move { gw.admin("PATCH", "/admin/v1/tenants/shared", json!({"display_name": format!("round {round}")})).await.status })
        };
        let assign = {
            let (gw, manage, hash) = (gw.clone(), manage.clone(), hash.clone());
            tokio::spawn(async move {
                let body = json!({"hash": hash, "config": {"model": format!("demo-{round}")}});
                gw.call("PUT", "/v1/tenant/policy", Some(&manage), &[], body.to_string().into_bytes()).await.status
            })
        };
        assert_eq!((patch.await.expect("join"), assign.await.expect("join")), (200, 200));
        let tenant = get(&gw, "/admin/v1/tenants/shared", ADMIN).await.json();
        assert_eq!(tenant["display_name"], format!("round {round}"), "the operator's change was lost: {tenant}");
        assert!(tenant["policy"]["config"].as_str().unwrap_or("").contains(&format!("demo-{round}")), "the tenant's change was lost: {tenant}");
    }
}

#[tokio::test]
async fn a_creation_cut_by_a_crash_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tollgate::Config::embedded();
    config.server.data_dir = dir.path().to_path_buf();
    let admin = tollgate::Secret::new(ADMIN.into());
    let (key, token) = {
        let app = tollgate::App::start(config.clone(), None, &admin).await.expect("start");
        // What `POST /api/v1/tenants` has written when a crash comes before its last step.
        let mut tenant: tollgate::tenants::Tenant = serde_json::from_value(json!({"id": "half"})).expect("tenant");
        tenant.lifecycle = tollgate::tenants::Lifecycle::Creating;
        let tenant = app.tenants.create(tenant).await.expect("create");
        app.vault.put(tenant.storage_id(), "default", "openai", &tollgate::Secret::new("sk-half-canary".into())).await.expect("put");
        let (token, _) = tollgate::tokens::issue(&app.store, &tenant, tollgate::tokens::Scope::Inference, Default::default()).await.expect("token");
        assert!(app.tenants.get("half").is_none(), "not served before it is whole");
        app.store.flush_blocking().expect("flush");
        (tenant.key(), token)
    };
    let app = tollgate::App::start(config, None, &admin).await.expect("restart");
    assert!(app.tenants.get("half").is_none() && app.tenants.unfinished().is_empty());
    assert_eq!(app.store.tenant.scan_prefix(key.0).count(), 0, "the half-made tenant's credential and data key remain");
    assert!(tollgate::tokens::lookup(&app.store, &token).expect("lookup").is_none(), "its token remains");
    // And the id is free again.
    assert!(app.tenants.create(serde_json::from_value(json!({"id": "half"})).expect("tenant")).await.is_ok());
}

#[tokio::test]
async fn ids_that_do_not_survive_a_url_are_refused() {
    let gw = Gateway::start().await;
    for id in [".", ".."] {
        let reply = gw.admin("POST", "/admin/v1/tenants", json!({"id": id})).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (400, "invalid_tenant_id"), "{id}: {}", reply.text());
    }
    let token = gw.demo_tenant("sessions", 10.0).await;
    let reply = gw.call("POST", "/v1/chat/completions", Some(&token), &[("x-session-id", "a/b")], mocked::chat("default", "hi").to_string().into_bytes()).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (400, "invalid_session_id"), "{}", reply.text());
}
