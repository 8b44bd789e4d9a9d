//! Operating the shared store with PostgreSQL's own tools, against the real `tollgate`
//! binary on throwaway servers on loopback: a `pg_dump` restored into another server
//! serves the tenant's sealed credentials with the same master key (and the gateway
//! refuses to start with another key).
//!
//! Skipped when PostgreSQL is not installed, unless `TOLLGATE_REQUIRE_PG=1` (CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[allow(dead_code)] // the helpers this binary does not use
#[path = "../../tests/src/postgres.rs"]
mod postgres;

use std::path::Path;

use common::{Client, Gateway, MASTER_KEY};
use serde_json::{json, Value};

/// Not the key the store was sealed under.
const OTHER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";

fn serve(dir: &Path, url: &str, master_key: &str) -> Gateway {
    Gateway::start_with(dir, &[("TOLLGATE_STORE_URL", url), ("TOLLGATE_MASTER_KEY", master_key)])
}

fn chat(client: Client, token: &str, text: &str) -> common::Reply {
    client.call("POST", "/v1/chat/completions", Some(token), json!({"model": "default", "messages": [{"role": "user", "content": text}]})).expect("chat")
}

#[test]
fn a_pg_dump_restored_into_another_server_opens_the_credentials_with_the_same_master_key() {
    let Some(original) = postgres::Server::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = serve(&dir.path().join("a"), &original.url(), MASTER_KEY);
    let created = gateway.client.admin_ok("POST", "/api/v1/tenants", json!({"tenant_id": "kept", "provider": "demo", "api_key": "sk-first", "model": "demo-small"}));
    let token = created["token"].as_str().expect("token").to_string();
    // The credential the chats use, written again through the API, and a second one.
    gateway.client.admin_ok("PUT", "/admin/v1/tenants/kept/credentials/default", json!({"provider": "demo", "api_key": "sk-second"}));
    gateway.client.admin_ok("PUT", "/admin/v1/tenants/kept/credentials/spare", json!({"provider": "demo", "api_key": "sk-spare"}));
    let before = chat(gateway.client, &token, "before the backup");
    assert_eq!(before.status, 200, "{}", String::from_utf8_lossy(&before.body));
    let request_id = before.header("x-request-id").expect("request id").to_string();
    let chain = gateway.client.admin_ok("GET", "/admin/v1/audit/verify", Value::Null);

    // The backup is taken while the gateway serves (pg_dump reads one snapshot), then the
    // original server and gateway are gone.
    let dump = dir.path().join("tollgate.dump");
    let dump_arg = dump.to_str().expect("utf-8 path");
    original.client("pg_dump", &["--format=custom", "--file", dump_arg, "postgres"]).expect("pg_dump");
    gateway.kill();
    drop(original);
    let restored = postgres::Server::start().expect("a second server");
    restored.client("createdb", &["tollgate"]).expect("createdb");
    restored.client("pg_restore", &["--exit-on-error", "--no-owner", "--dbname=tollgate", dump_arg]).expect("pg_restore");
    let url = restored.url_of("tollgate");

    // Another master key does not open the restored data keys: the gateway says so and exits.
    let refusal = Gateway::refused(&dir.path().join("b"), &[("TOLLGATE_STORE_URL", url.as_str()), ("TOLLGATE_MASTER_KEY", OTHER_KEY)]);
    assert!(refusal.contains("does not open the store's data keys"), "unclear refusal:\n{refusal}");

    // The same key: a fresh replica (empty data dir) serves the restored tenant.
    let gateway = serve(&dir.path().join("c"), &url, MASTER_KEY);
    let client = gateway.client;
    let listed: Vec<Value> = client.admin_ok("GET", "/admin/v1/tenants/kept/credentials", Value::Null)["data"].as_array().expect("data").clone();
    let names: Vec<&str> = listed.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["default", "spare"]);
    let after = chat(client, &token, "after the restore");
    assert_eq!(after.status, 200, "the restored credential did not open: {}", String::from_utf8_lossy(&after.body));
    let records = client.admin_ok("GET", "/admin/v1/tenants/kept/usage/records?start=2000-01-01&end=2100-12-31&limit=100", Value::Null);
    let ids: Vec<&str> = records["data"].as_array().expect("data").iter().filter_map(|r| r["request_id"].as_str()).collect();
    assert!(ids.contains(&request_id.as_str()), "the chat before the backup is not in the restored ledger: {ids:?}");
    let audit = client.admin_ok("GET", "/admin/v1/audit/verify", Value::Null);
    assert_eq!(audit["ok"], true, "the restored audit chain does not verify: {audit}");
    assert_eq!((&audit["records"], &audit["head"]), (&chain["records"], &chain["head"]), "the restored chain is not the one backed up");
    assert!(chain["records"].as_u64() >= Some(3), "the tenant and credential writes are audited: {chain}");
}
