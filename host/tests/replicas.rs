//! Several `tollgate serve` processes on one PostgreSQL, on loopback: what one replica
//! writes the others serve, a revocation on one is refused by the others within a second,
//! so is a credential replaced or deleted (the others cache it), a budget raced from every
//! replica is never overspent, and a replica SIGKILLed mid-load loses no acknowledged
//! request while the others charge its reservations once its lease runs out.
//!
//! Skipped when PostgreSQL is not installed, unless `TOLLGATE_REQUIRE_PG=1` (CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[allow(dead_code)] // the helpers this binary does not use
#[path = "../../tests/src/mock.rs"]
mod mock;
#[allow(dead_code)] // the helpers this binary does not use
#[path = "../../tests/src/postgres.rs"]
mod postgres;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, Client, Gateway, MASTER_KEY};
use serde_json::{json, Value};

/// The reservation lease: short, so a killed replica's holds are charged soon.
const LEASE_MS: u64 = 1500;

/// The lease config, and `extra` (TOML) after it.
fn config_file(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = common::lease_config(dir, LEASE_MS);
    let lease = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, format!("{lease}{extra}")).expect("config");
    path
}

struct Cluster {
    replicas: Vec<Option<Gateway>>,
    _dirs: Vec<tempfile::TempDir>,
}

fn cluster(server: &postgres::Server, n: usize) -> Cluster {
    cluster_with(server, n, "")
}

/// `n` replicas whose config also holds `extra` (TOML).
fn cluster_with(server: &postgres::Server, n: usize, extra: &str) -> Cluster {
    let mut replicas = Vec::new();
    let mut dirs = Vec::new();
    let url = server.url();
    for _ in 0..n {
        let dir = tempfile::tempdir().expect("dir");
        let config = config_file(dir.path(), extra);
        let env = [("TOLLGATE_STORE_URL", url.as_str()), ("TOLLGATE_MASTER_KEY", MASTER_KEY), ("TOLLGATE_CONFIG", config.to_str().expect("utf-8"))];
        replicas.push(Some(Gateway::start_with(dir.path(), &env)));
        dirs.push(dir);
    }
    Cluster { replicas, _dirs: dirs }
}

impl Cluster {
    fn client(&self, i: usize) -> Client {
        self.replicas[i].as_ref().expect("running").client
    }
}

fn chat(text: &str) -> Value {
    json!({"model": "default", "messages": [{"role": "user", "content": text}]})
}

/// A tenant made through replica `via` with the demo provider; returns its inference token.
fn tenant(client: Client, id: &str) -> String {
    let created = client.admin_ok("POST", "/api/v1/tenants", json!({"tenant_id": id, "provider": "demo", "api_key": "sk-demo", "model": "demo-small"}));
    created["token"].as_str().expect("token").to_string()
}

#[test]
fn replicas_share_tenants_tokens_revocations_and_one_budget() {
    let Some(server) = postgres::Server::start() else { return };
    let cluster = cluster(&server, 3);
    let (a, b, c) = (cluster.client(0), cluster.client(1), cluster.client(2));
    let token = tenant(a, "shared");
    // A tenant and token created on a are served by b and c.
    for replica in [b, c] {
        let served = eventually(Duration::from_secs(2), || replica.call("POST", "/v1/chat/completions", Some(&token), chat("hi")).is_ok_and(|r| r.status == 200));
        assert!(served.is_some(), "a replica did not serve a tenant created on another");
    }
    // A manage token minted on a, revoked on a: b refuses it within a second.
    let minted = a.admin_ok("POST", "/admin/v1/tenants/shared/tokens", json!({"scope": "manage"}));
    let manage = minted["token"].as_str().expect("token").to_string();
    assert_eq!(b.call("GET", "/v1/tenant/usage", Some(&manage), Value::Null).expect("usage").status, 200);
    let id = minted["id"].as_str().expect("id").to_string();
    a.admin_ok("DELETE", &format!("/admin/v1/tenants/shared/tokens/{id}"), Value::Null);
    let refused = eventually(Duration::from_secs(3), || b.call("GET", "/v1/tenant/usage", Some(&manage), Value::Null).is_ok_and(|r| r.status == 401));
    assert!(refused.is_some_and(|t| t < Duration::from_secs(1)), "b refused the revoked token after {refused:?}");
    // One budget raced from all three replicas: never overspent, and the ledger is the spend.
    b.admin_ok("PATCH", "/admin/v1/tenants/shared", json!({"budget_usd": 0.002, "budget_period": "month"}));
    let statuses = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for (i, replica) in [a, b, c].into_iter().cycle().take(12).enumerate() {
            let (token, statuses) = (token.clone(), statuses.clone());
            scope.spawn(move || {
                for j in 0..10 {
                    let status = replica.call("POST", "/v1/chat/completions", Some(&token), chat(&format!("race {i} {j}"))).map(|r| r.status).unwrap_or(0);
                    statuses.lock().unwrap().push(status);
                }
            });
        }
    });
    let statuses = statuses.lock().unwrap().clone();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 402), "{statuses:?}");
    assert!(statuses.contains(&402), "the budget ran out");
    let budget = c.admin_ok("GET", "/admin/v1/tenants/shared/budget", Value::Null);
    let records = c.admin_ok("GET", "/admin/v1/tenants/shared/usage/records?start=2000-01-01&end=2100-12-31&limit=10000", Value::Null);
    let ledger: u64 = records["data"].as_array().expect("records").iter().map(|r| r["cost_microdollars"].as_u64().unwrap_or(0)).sum();
    let spent = budget["spent_microdollars"].as_u64().expect("spent");
    assert!(spent <= 2_000, "spent {spent} of 2000: {budget}");
    assert_eq!(spent, ledger, "spend equals the ledger's costs");
    assert_eq!(budget["reserved_microdollars"].as_u64(), Some(0), "no reservation left: {budget}");
}

#[test]
fn a_replica_killed_mid_load_loses_no_acknowledged_request_and_its_holds_are_charged_once() {
    let Some(server) = postgres::Server::start() else { return };
    let mut cluster = cluster(&server, 3);
    let (a, b, c) = (cluster.client(0), cluster.client(1), cluster.client(2));
    let token = tenant(a, "survivor");
    eventually(Duration::from_secs(2), || c.call("POST", "/v1/chat/completions", Some(&token), chat("warm")).is_ok_and(|r| r.status == 200)).expect("c serves");
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    std::thread::scope(|scope| {
        for (i, replica) in [a, b, c].into_iter().cycle().take(6).enumerate() {
            let (token, acknowledged) = (token.clone(), acknowledged.clone());
            scope.spawn(move || {
                let until = Instant::now() + Duration::from_secs(3);
                let mut j = 0;
                while Instant::now() < until {
                    if let Ok(reply) = replica.call("POST", "/v1/chat/completions", Some(&token), chat(&format!("load {i} {j}"))) {
                        if reply.status == 200 {
                            acknowledged.lock().unwrap().insert(reply.header("x-request-id").expect("request id").to_string());
                        }
                    }
                    j += 1;
                }
            });
        }
        // b dies mid-load.
        std::thread::sleep(Duration::from_millis(1200));
        cluster.replicas[1].take().expect("b").kill();
    });
    // Its reservations expire (1.5 s lease) and a survivor charges them.
    let settled = eventually(Duration::from_secs(15), || {
        let budget = a.admin_ok("GET", "/admin/v1/tenants/survivor/budget", Value::Null);
        budget["reserved_microdollars"].as_u64() == Some(0)
    });
    assert!(settled.is_some(), "the dead replica's reservations were never charged");
    let records = c.admin_ok("GET", "/admin/v1/tenants/survivor/usage/records?start=2000-01-01&end=2100-12-31&limit=10000", Value::Null);
    let ids: Vec<String> = records["data"].as_array().expect("records").iter().map(|r| r["request_id"].as_str().unwrap_or_default().to_string()).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a request is in the ledger twice");
    for id in acknowledged.lock().unwrap().iter() {
        assert!(unique.contains(id), "acknowledged request {id} is not in the ledger");
    }
    let budget = a.admin_ok("GET", "/admin/v1/tenants/survivor/budget", Value::Null);
    let ledger: u64 = records["data"].as_array().expect("records").iter().map(|r| r["cost_microdollars"].as_u64().unwrap_or(0)).sum();
    assert_eq!(budget["spent_microdollars"].as_u64(), Some(ledger), "spend equals the ledger: {budget}");
}

/// Polls `check` until it holds, for up to three seconds; how long after `since` (the
/// write a replica must see) it first held.
fn held_after(since: Instant, check: impl FnMut() -> bool) -> Option<Duration> {
    eventually(Duration::from_secs(3), check).map(|_| since.elapsed())
}

/// A replica's credential cache counters from `/metrics`: (hits, misses).
fn vault_cache(replica: Client) -> (u64, u64) {
    let reply = replica.call("GET", "/metrics", None, Value::Null).expect("metrics");
    let text = String::from_utf8_lossy(&reply.body);
    let value = |name: &str| -> u64 { text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or_else(|| panic!("no {name} in {text}")) };
    (value("tollgate_vault_cache_hits_total"), value("tollgate_vault_cache_misses_total"))
}

#[test]
fn a_credential_replaced_or_deleted_on_one_replica_is_used_or_refused_by_the_others_within_a_second() {
    let Some(server) = postgres::Server::start() else { return };
    // The upstream records the key of every request it gets.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let upstream = runtime.block_on(mock::MockUpstream::start()).expect("mock upstream");
    let cluster = cluster_with(&server, 3, &format!("[providers.openai]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n", upstream.url()));
    let (a, b, c) = (cluster.client(0), cluster.client(1), cluster.client(2));
    let created = a.admin_ok("POST", "/api/v1/tenants", json!({"tenant_id": "keyed", "provider": "openai", "api_key": "sk-first", "model": "gpt-4o-mini"}));
    let token = created["token"].as_str().expect("token").to_string();
    let probes = std::cell::Cell::new(0);
    // One chat through `replica`: its status, its error code, and the key the upstream got.
    let probe = |replica: Client| -> (u16, String, Option<String>) {
        probes.set(probes.get() + 1);
        let text = format!("probe {}", probes.get());
        let Ok(reply) = replica.call("POST", "/v1/chat/completions", Some(&token), chat(&text)) else { return (0, String::new(), None) };
        let code = serde_json::from_slice::<Value>(&reply.body).ok().and_then(|v| v["error"]["code"].as_str().map(str::to_owned)).unwrap_or_default();
        let key = upstream.requests().iter().rev().find(|r| String::from_utf8_lossy(&r.body).contains(&text)).and_then(|r| r.header("authorization").map(str::to_owned));
        (reply.status, code, key)
    };
    let uses = |replica: Client, key: &str| probe(replica) == (200, String::new(), Some(format!("Bearer {key}")));
    // b and c serve the tenant (and from then on hold its credential).
    for replica in [b, c] {
        assert!(eventually(Duration::from_secs(2), || uses(replica, "sk-first")).is_some(), "a replica did not serve a tenant created on another");
    }
    // Once the creation's feed rows have reached b (well under the 200 ms waited) and one
    // chat has refilled what they evicted, b's chats open the credential from memory.
    std::thread::sleep(Duration::from_millis(200));
    assert!(uses(b, "sk-first"));
    let (hits, misses) = vault_cache(b);
    for _ in 0..5 {
        assert!(uses(b, "sk-first"));
    }
    let (hits_after, misses_after) = vault_cache(b);
    assert!(hits_after >= hits + 5 && misses_after == misses, "b read the vault from the database: hits {hits} -> {hits_after}, misses {misses} -> {misses_after}");

    // Replaced on a: b and c send the new key within a second.
    a.admin_ok("PUT", "/admin/v1/tenants/keyed/credentials/default", json!({"provider": "openai", "api_key": "sk-second"}));
    let replaced = Instant::now();
    for replica in [b, c] {
        let took = held_after(replaced, || uses(replica, "sk-second"));
        assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "a replica sent the replaced key for {took:?}");
    }

    // Deleted on a: b and c answer 502 credential_unavailable within a second.
    a.admin_ok("DELETE", "/admin/v1/tenants/keyed/credentials/default", Value::Null);
    let deleted = Instant::now();
    for replica in [b, c] {
        let took = held_after(deleted, || {
            let (status, code, _) = probe(replica);
            status == 502 && code == "credential_unavailable"
        });
        assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "a replica used a deleted credential for {took:?}");
    }
    a.admin_ok("PUT", "/admin/v1/tenants/keyed/credentials/default", json!({"provider": "openai", "api_key": "sk-third"}));
    for replica in [b, c] {
        assert!(held_after(Instant::now(), || uses(replica, "sk-third")).is_some(), "a replica did not pick up a credential put again");
    }

    // The tenant deleted on a: b and c refuse its token within a second.
    a.admin_ok("DELETE", "/admin/v1/tenants/keyed", Value::Null);
    let gone = Instant::now();
    for replica in [b, c] {
        let took = held_after(gone, || probe(replica).0 == 401);
        assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "a replica served a deleted tenant for {took:?}");
    }
}
