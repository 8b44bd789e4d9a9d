//! Operating the shared store with PostgreSQL's own tools, against the real `tollgate`
//! binary on throwaway servers on loopback: a `pg_dump` restored into another server
//! serves the tenant's sealed credentials with the same master key (and the gateway
//! refuses to start with another key); a gateway given every host of a primary and its
//! synchronous standby serves again soon after the primary crashes and the standby is
//! promoted, without a restart, losing no acknowledged request and never overspending.
//!
//! Skipped when PostgreSQL is not installed, unless `TOLLGATE_REQUIRE_PG=1` (CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[allow(dead_code)] // the helpers this binary does not use
#[path = "../../tests/src/postgres.rs"]
mod postgres;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, Client, Gateway, MASTER_KEY};
use serde_json::{json, Value};

/// Not the key the store was sealed under.
const OTHER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";
/// The failover test's budget left once the gateway serves again: runs out within seconds.
const HEADROOM_MICRODOLLARS: u64 = 10_000;
/// The reservation lease: short, so anything a crash leaves held is charged soon.
const LEASE_MS: u64 = 1000;
/// The gateway serves again this soon after the standby is promoted, without a restart.
const SERVED_WITHIN: Duration = Duration::from_secs(5);

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

/// What the load threads saw.
#[derive(Debug, Default)]
struct Seen {
    /// Request ids of chats answered 200.
    acknowledged: BTreeSet<String>,
    /// Answers by status (0: no complete answer).
    statuses: BTreeMap<u16, usize>,
}

#[test]
fn the_gateway_follows_a_failover_to_a_synchronous_standby_without_a_restart() {
    let Some(primary) = postgres::Server::start() else { return };
    let standby = primary.synchronous_standby().expect("a synchronous standby");
    // Every host, the writable one chosen: what a failover manager's clients are given.
    let url = format!("host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres target_session_attrs=read-write", primary.port(), standby.port());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::lease_config(dir.path(), LEASE_MS);
    let gateway = Gateway::start_with(&dir.path().join("data"), &[("TOLLGATE_STORE_URL", url.as_str()), ("TOLLGATE_MASTER_KEY", MASTER_KEY), ("TOLLGATE_CONFIG", config.to_str().expect("utf-8"))]);
    let client = gateway.client;
    let created = client.admin_ok("POST", "/api/v1/tenants", json!({"tenant_id": "steady", "provider": "demo", "api_key": "sk-demo", "model": "demo-small", "max_tokens": 16, "budget_usd_per_month": 1000}));
    let token = created["token"].as_str().expect("token").to_string();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|worker| {
            let (token, seen, stop) = (token.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let reply = client.call("POST", "/v1/chat/completions", Some(&token), json!({"model": "default", "messages": [{"role": "user", "content": format!("w{worker} {i}")}]}));
                    let mut seen = seen.lock().unwrap();
                    match reply {
                        Ok(reply) => {
                            *seen.statuses.entry(reply.status).or_default() += 1;
                            if reply.status == 200 {
                                seen.acknowledged.insert(reply.header("x-request-id").expect("request id").to_string());
                            }
                        }
                        Err(_) => *seen.statuses.entry(0).or_default() += 1,
                    }
                    drop(seen);
                    i += 1;
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(1500));
    primary.crash().expect("crash the primary");
    let crashed = Instant::now();
    // A failover manager notices, then promotes.
    std::thread::sleep(Duration::from_millis(500));
    standby.promote().expect("promote the standby");
    let promoted = Instant::now();
    let served = eventually(Duration::from_secs(30), || chat(client, &token, "after the failover").status == 200);
    let served = served.unwrap_or_else(|| panic!("the gateway did not serve within 30 s of the promotion\n{}", gateway.log.lock().unwrap().join("\n")));
    // Load on the new primary until a budget set now runs out.
    let spent = client.admin_ok("GET", "/admin/v1/tenants/steady/budget", Value::Null)["spent_microdollars"].as_u64().expect("spent");
    let headroom = (spent + HEADROOM_MICRODOLLARS) as f64 / 1e6;
    client.admin_ok("PATCH", "/admin/v1/tenants/steady", json!({"budget_usd": headroom, "budget_period": "month"}));
    let exhausted = eventually(Duration::from_secs(60), || seen.lock().unwrap().statuses.contains_key(&402));
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        thread.join().expect("load thread");
    }
    let seen = seen.lock().unwrap();
    eprintln!("failover: served again {served:.1?} after the promotion ({:.1?} after the crash); answers by status {:?}", promoted.duration_since(crashed) + served, seen.statuses);
    assert!(served < SERVED_WITHIN, "the gateway served again only {served:.1?} after the promotion");
    assert!(exhausted.is_some(), "the budget never ran out: {:?}", seen.statuses);

    // Nothing stays reserved: requests cut by the crash were settled or charged.
    let settled = eventually(Duration::from_secs(15), || client.admin_ok("GET", "/admin/v1/tenants/steady/budget", Value::Null)["reserved_microdollars"].as_u64() == Some(0));
    let budget = client.admin_ok("GET", "/admin/v1/tenants/steady/budget", Value::Null);
    assert!(settled.is_some(), "reservations held after the failover: {budget}");
    let records = client.admin_ok("GET", "/admin/v1/tenants/steady/usage/records?start=2000-01-01&end=2100-12-31&limit=10000", Value::Null);
    let records = records["data"].as_array().expect("data");
    let ids: Vec<&str> = records.iter().filter_map(|r| r["request_id"].as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a request is in the ledger twice");
    for id in &seen.acknowledged {
        assert!(unique.contains(id.as_str()), "acknowledged request {id} is not in the ledger");
    }
    let ledger: u64 = records.iter().map(|r| r["cost_microdollars"].as_u64().expect("cost")).sum();
    let (spent, limit) = (budget["spent_microdollars"].as_u64().expect("spent"), budget["limit_microdollars"].as_u64().expect("limit"));
    assert_eq!(spent, ledger, "spend differs from the ledger: {budget}");
    assert!(spent <= limit, "spent {spent} of {limit}");
    let recovered: Vec<&str> = records.iter().filter(|r| r["outcome"] == "crash_recovered").filter_map(|r| r["request_id"].as_str()).collect();
    let answered = recovered.iter().filter(|id| seen.acknowledged.contains(**id)).count();
    eprintln!("failover: {} ledger records, {} crash_recovered ({answered} of them answered 200: their settlement met the crash); spent {spent} of {limit}", ids.len(), recovered.len());
}
