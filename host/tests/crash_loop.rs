//! Crash and recovery loop against the real `tollgate` binary.
//!
//! Each round runs mixed load (plain and streaming chats, credential writes, token
//! issues, new tenants, and in some rounds master-key rotations) from several threads,
//! SIGKILLs the gateway at a random moment, checks the store on disk with the library
//! while nothing runs, restarts the binary on the same data dir and checks that:
//!
//! - the store opens and the gateway serves again;
//! - every acknowledged write is there: tenants, credentials, tokens (they authenticate);
//! - every acknowledged chat's `x-request-id` is in the tenant's ledger exactly once, and
//!   no request id is there twice;
//! - the ledger, the spend counter and the daily rollups agree (they are written in one
//!   transaction);
//! - reservations left in flight by the kill are charged on restart, to the micro-dollar,
//!   as `crash_recovered` records;
//! - credentials still open after a rotation the kill interrupted (a chat through each
//!   tenant's stored credential succeeds), and the audit chain verifies.
//!
//! `CRASH_ROUNDS` (default 5) sets the number of kills; `CRASH_SEED` replays a run. Only
//! 127.0.0.1 is used, every wait is bounded, and the gateway is killed if the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::{Client, Gateway, Reply, ADMIN};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const WORKERS: usize = 4;
/// Tenants created under load stop here, so a long run's checks stay bounded.
const MAX_TENANTS: usize = 40;


// ---------------------------------------------------------------------------------------
// What the gateway acknowledged.

#[derive(Debug, Default, Clone)]
struct TenantState {
    token: String,
    credentials: BTreeSet<String>,
    extra_tokens: Vec<String>,
    /// Request ids of acknowledged chats.
    chats: Vec<String>,
}

#[derive(Debug, Default)]
struct Acked {
    tenants: BTreeMap<String, TenantState>,
    rotations: usize,
    streams: usize,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicUsize,
    /// Connection errors and cut answers: the kill.
    failed: AtomicUsize,
    /// Complete answers that were not 2xx, by status (none expected under this load).
    statuses: Mutex<BTreeMap<u16, usize>>,
}

impl Counters {
    fn status(&self, reply: &Reply) {
        if !reply.ok() {
            *self.statuses.lock().unwrap().entry(reply.status).or_default() += 1;
        }
    }
}

fn chat_body(text: &str, stream: bool) -> Value {
    let mut body = json!({"model": "demo-small", "messages": [{"role": "user", "content": text}], "max_tokens": 64});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn create_tenant(gw: &Client, id: &str) -> std::io::Result<Option<String>> {
    let reply = gw.call(
        "POST",
        "/api/v1/tenants",
        Some(ADMIN),
        json!({"tenant_id": id, "provider": "demo", "api_key": format!("sk-crash-{id}"), "model": "demo-small", "max_tokens": 64, "temperature": 0.5, "budget_usd_per_month": 1000}),
    )?;
    Ok(if reply.status == 201 { reply.json()["token"].as_str().map(str::to_owned) } else { None })
}

/// One load operation; records it in `acked` only when the gateway acknowledged it.
fn operation(gw: &Client, rng: &mut StdRng, acked: &Mutex<Acked>, counters: &Counters, round: usize, worker: usize, i: usize) -> std::io::Result<()> {
    let (tenant, token) = {
        let acked = acked.lock().unwrap();
        let pick = rng.random_range(0..acked.tenants.len());
        let (id, state) = acked.tenants.iter().nth(pick).unwrap();
        (id.clone(), state.token.clone())
    };
    let roll = rng.random_range(0..100);
    if roll < 50 || roll >= 97 {
        let stream = roll < 25;
        let reply = gw.call("POST", "/v1/chat/completions", Some(&token), chat_body(&format!("round {round} worker {worker} op {i}"), stream))?;
        counters.status(&reply);
        // A stream is acknowledged once its end reached the client.
        let complete = !stream || reply.body.ends_with(b"data: [DONE]\n\n");
        if reply.status == 200 && complete {
            let id = reply.header("x-request-id").expect("x-request-id").to_string();
            let mut acked = acked.lock().unwrap();
            acked.streams += usize::from(stream);
            acked.tenants.get_mut(&tenant).unwrap().chats.push(id);
        }
    } else if roll < 85 {
        let name = format!("c-{round}-{worker}-{i}");
        let reply = gw.call("PUT", &format!("/admin/v1/tenants/{tenant}/credentials/{name}"), Some(ADMIN), json!({"provider": "demo", "api_key": format!("sk-{name}")}))?;
        counters.status(&reply);
        if reply.ok() {
            acked.lock().unwrap().tenants.get_mut(&tenant).unwrap().credentials.insert(name);
        }
    } else if roll < 96 || acked.lock().unwrap().tenants.len() >= MAX_TENANTS {
        let reply = gw.call("POST", &format!("/admin/v1/tenants/{tenant}/tokens"), Some(ADMIN), json!({"scope": "inference"}))?;
        counters.status(&reply);
        if reply.ok() {
            let token = reply.json()["token"].as_str().expect("token").to_string();
            acked.lock().unwrap().tenants.get_mut(&tenant).unwrap().extra_tokens.push(token);
        }
    } else {
        let id = format!("t-{round}-{worker}-{i}");
        if let Some(token) = create_tenant(gw, &id)? {
            let state = TenantState { token, credentials: BTreeSet::from(["default".to_string()]), ..Default::default() };
            acked.lock().unwrap().tenants.insert(id, state);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Checks.

/// What the store on disk holds for one tenant, read with the library while no gateway
/// runs.
#[derive(Debug)]
struct DiskTenant {
    /// Spend counter of the current month.
    spent: u64,
    /// Reserved counter of the current month: requests in flight at the kill.
    reserved: u64,
    /// Ledger cost of the records of the current month.
    month_cost: u64,
    /// Ledger cost of every record.
    ledger_cost: u64,
}

fn read_disk(dir: &Path, tenants: &[String]) -> BTreeMap<String, DiskTenant> {
    use tollgate::metering::{Budget, Embedded, Period};
    use tollgate::store::TenantKey;
    let store = tollgate::Store::open(dir).expect("the store opens after a kill");
    // The embedded authority's synchronous reads: this check runs outside any runtime.
    let metering = Embedded::new(store.clone()).expect("metering");
    let registry = tollgate::tenants::Tenants::load(store.clone()).expect("tenants");
    let now = tollgate::clock::unix_millis();
    let budget = Some(Budget { limit_microdollars: 0, period: Period::Month });
    let period = Period::Month.id_at(now);
    let mut out = BTreeMap::new();
    for id in tenants {
        // Records are stored under the tenant's incarnation, not its id.
        let storage = registry.get(id).map(|t| t.storage_id().to_string()).expect("tenant on disk");
        let status = metering.status(&TenantKey::of(&storage), budget, now).expect("status");
        let ledger = metering.ledger(&storage, 0, u64::MAX, usize::MAX).expect("ledger");
        let mut seen = BTreeSet::new();
        for record in &ledger {
            assert!(seen.insert(record.request_id.clone()), "tenant {id}: request {} is in the ledger twice", record.request_id);
        }
        // Records of this period only (a run across a month boundary compares the new one).
        let month_cost = ledger.iter().filter(|r| Period::Month.id_at(r.unix_millis) == period).map(|r| r.cost_microdollars).sum();
        let ledger_cost = ledger.iter().map(|r| r.cost_microdollars).sum();
        out.insert(id.clone(), DiskTenant { spent: status.spent_microdollars, reserved: status.reserved_microdollars, month_cost, ledger_cost });
    }
    drop(registry);
    drop(metering);
    drop(store);
    out
}

/// Everything acknowledged is there after a restart; `disk` is what the store held before
/// the restart (so the recovered reservations can be checked to the micro-dollar).
fn verify(gw: &Client, acked: &Acked, disk: &BTreeMap<String, DiskTenant>, report: &mut Report) {
    let mut listed = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/admin/v1/tenants?after={a}"),
            None => "/admin/v1/tenants".to_string(),
        };
        let page = gw.admin_ok("GET", &path, Value::Null);
        for t in page["data"].as_array().expect("data") {
            listed.insert(t["id"].as_str().expect("id").to_string());
        }
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    for (id, state) in &acked.tenants {
        assert!(listed.contains(id), "acknowledged tenant {id} is missing after the restart");
        let credentials: BTreeSet<String> = gw.admin_ok("GET", &format!("/admin/v1/tenants/{id}/credentials"), Value::Null)["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|c| c["name"].as_str().expect("name").to_string())
            .collect();
        for name in &state.credentials {
            assert!(credentials.contains(name), "acknowledged credential {id}/{name} is missing after the restart");
        }
        // The ledger, before any new request.
        let records = gw.admin_ok("GET", &format!("/admin/v1/tenants/{id}/usage/records?start=2000-01-01&end=2100-12-31&limit=10000"), Value::Null);
        let records = records["data"].as_array().expect("data");
        assert!(records.len() < 10_000, "tenant {id}: too many records to check in one page");
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        let mut cost = 0u64;
        for r in records {
            *count.entry(r["request_id"].as_str().expect("request_id")).or_default() += 1;
            cost += r["cost_microdollars"].as_u64().expect("cost");
            if r["outcome"] == "crash_recovered" {
                report.crash_recovered.insert(r["request_id"].as_str().expect("request_id").to_string());
            }
        }
        for (request, n) in &count {
            assert_eq!(*n, 1, "tenant {id}: request {request} is in the ledger {n} times");
        }
        for request in &state.chats {
            assert_eq!(count.get(request.as_str()), Some(&1), "tenant {id}: acknowledged chat {request} is not in the ledger");
        }
        // The daily rollups are written in the settle transaction: they agree with the ledger.
        let usage = gw.admin_ok("GET", &format!("/admin/v1/tenants/{id}/usage?start=2000-01-01&end=2100-12-31"), Value::Null);
        assert_eq!(usage["requests"].as_u64(), Some(records.len() as u64), "tenant {id}: rollup request count differs from the ledger");
        assert_eq!(usage["cost_microdollars"].as_u64(), Some(cost), "tenant {id}: rollup cost differs from the ledger");
        // Reservations the kill left were charged at their amount on this start.
        if let Some(before) = disk.get(id) {
            assert_eq!(before.spent, before.month_cost, "tenant {id}: spend counter and ledger disagree on disk");
            assert_eq!(cost, before.ledger_cost + before.reserved, "tenant {id}: the {} micro-dollars reserved at the kill were not charged exactly once", before.reserved);
            report.recovered_microdollars += before.reserved;
        }
    }
    // Credentials still open (also after an interrupted rotation): each tenant's chats go
    // through its stored `default` credential. Tokens issued before the kill still work.
    for (id, state) in &acked.tenants {
        let reply = gw.call("POST", "/v1/chat/completions", Some(&state.token), chat_body("after restart", false)).expect("chat after restart");
        assert_eq!(reply.status, 200, "tenant {id}: chat through the stored credential failed after the restart: {}", String::from_utf8_lossy(&reply.body));
        for token in state.extra_tokens.iter().rev().take(2) {
            let reply = gw.call("GET", "/v1/models", Some(token), Value::Null).expect("models");
            assert_eq!(reply.status, 200, "tenant {id}: an acknowledged token no longer authenticates");
        }
    }
    let audit = gw.admin_ok("GET", "/admin/v1/audit/verify", Value::Null);
    assert_eq!(audit["ok"], true, "audit chain broken after the restart: {audit}");
}

#[derive(Debug, Default)]
struct Report {
    /// Request ids charged by recovery.
    crash_recovered: BTreeSet<String>,
    recovered_microdollars: u64,
    /// Kills that left a staged master key (`master.key.next`): a rotation in progress.
    interrupted_rotations: usize,
}

#[test]
fn acknowledged_writes_survive_sigkill_at_random_moments() {
    let rounds: usize = std::env::var("CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let seed: u64 = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| tollgate::clock::unix_millis());
    eprintln!("crash loop: {rounds} rounds, CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let started = Instant::now();

    let mut gw = Gateway::start(&data);
    let acked = Arc::new(Mutex::new(Acked::default()));
    for id in ["alpha", "beta", "gamma"] {
        let token = create_tenant(&gw.client, id).expect("create").expect("tenant created");
        acked.lock().unwrap().tenants.insert(id.to_string(), TenantState { token, credentials: BTreeSet::from(["default".to_string()]), ..Default::default() });
    }
    let counters = Arc::new(Counters::default());
    let mut report = Report::default();
    let mut rotations_sent = 0;

    for round in 0..rounds {
        // Load, with a key rotation running in every other round.
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for worker in 0..WORKERS {
            let (client, acked, stop, counters) = (gw.client, acked.clone(), stop.clone(), counters.clone());
            let seed = rng.random::<u64>();
            threads.push(std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) && i < 2000 {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    if operation(&client, &mut rng, &acked, &counters, round, worker, i).is_err() {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    i += 1;
                }
            }));
        }
        if round % 2 == 1 {
            let (client, acked, stop) = (gw.client, acked.clone(), stop.clone());
            rotations_sent += 1;
            threads.push(std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 50 {
                    if let Ok(reply) = client.call("POST", "/admin/v1/keys/rotate", Some(ADMIN), json!({})) {
                        if reply.ok() {
                            acked.lock().unwrap().rotations += 1;
                        }
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(100..1500)));
        gw.kill();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("load thread");
        }

        if data.join(tollgate::sealing::NEXT_MASTER_KEY_FILE).exists() {
            report.interrupted_rotations += 1;
        }
        // The store as the kill left it, then the restart and the checks.
        let ids: Vec<String> = acked.lock().unwrap().tenants.keys().cloned().collect();
        let disk = read_disk(&data, &ids);
        gw = Gateway::start(&data);
        verify(&gw.client, &acked.lock().unwrap(), &disk, &mut report);
        // A new tenant in the early rounds, created on a store that has been recovered.
        if acked.lock().unwrap().tenants.len() < MAX_TENANTS {
            let id = format!("r{round}");
            let token = create_tenant(&gw.client, &id).expect("create").expect("tenant created");
            acked.lock().unwrap().tenants.insert(id, TenantState { token, credentials: BTreeSet::from(["default".to_string()]), ..Default::default() });
        }
        let recovered = gw.log.lock().unwrap().iter().filter(|l| l.contains("charged reservations left unsettled")).count();
        eprintln!("round {round}: restarted and verified ({} tenants, {} recovery log lines)", ids.len(), recovered);
    }
    gw.kill();
    let acked = acked.lock().unwrap();
    let chats: usize = acked.tenants.values().map(|t| t.chats.len()).sum();
    let credentials: usize = acked.tenants.values().map(|t| t.credentials.len()).sum();
    eprintln!(
        "crash loop done: {rounds} kills survived in {:.1?}; acknowledged: {} tenants, {chats} chats ({} streamed), {credentials} credentials, {} rotations ({rotations_sent} rounds rotating, {} kills mid-rotation); {} requests sent, {} cut by the kill, non-2xx answers {:?}; {} crash_recovered records, {} micro-dollars recovered",
        started.elapsed(),
        acked.tenants.len(),
        acked.streams,
        acked.rotations,
        report.interrupted_rotations,
        counters.sent.load(Ordering::Relaxed),
        counters.failed.load(Ordering::Relaxed),
        counters.statuses.lock().unwrap(),
        report.crash_recovered.len(),
        report.recovered_microdollars,
    );
}
