//! Crash and recovery loop against the real `tollgate` binary, on each store: the
//! embedded one (sled in the data dir) and the shared one (a throwaway PostgreSQL server;
//! the data dir keeps only compiled policy artifacts).
//!
//! Each round runs mixed load (plain and streaming chats, credential writes, token
//! issues, new tenants, and in some rounds master-key rotations) from several threads,
//! SIGKILLs the gateway at a random moment, reads the store as the kill left it while
//! nothing runs (the data dir with the library, or the database with SQL), restarts the
//! binary and checks that:
//!
//! - the store opens and the gateway serves again;
//! - every acknowledged write is there: tenants, credentials, tokens (they authenticate);
//! - every acknowledged chat's `x-request-id` is in the tenant's ledger exactly once, and
//!   no request id is there twice;
//! - the ledger, the spend counter and the daily rollups agree (they are written in one
//!   transaction);
//! - reservations left in flight by the kill are charged, to the micro-dollar and once, as
//!   `crash_recovered` records: embedded at the restart, shared by the restarted replica
//!   (a new replica id) once the dead one's lease (`[store] lease_ms`) runs out;
//! - credentials still open after a rotation the kill interrupted (a chat through each
//!   tenant's stored credential succeeds), and the audit chain verifies.
//!
//! `CRASH_ROUNDS` sets the number of kills (default 5 embedded, 3 on PostgreSQL, which
//! skips when PostgreSQL is not installed unless `TOLLGATE_REQUIRE_PG=1`); `CRASH_SEED`
//! replays a run. Only 127.0.0.1 is used, every wait is bounded, and the gateway is
//! killed if the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
#[allow(dead_code)] // the helpers this binary does not use
#[path = "../../tests/src/postgres.rs"]
mod postgres;

use common::{Client, Gateway, Reply, ADMIN, MASTER_KEY};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const WORKERS: usize = 4;
/// Tenants created under load stop here, so a long run's checks stay bounded.
const MAX_TENANTS: usize = 40;
/// The reservation lease on PostgreSQL: short, so the dead replica's holds are charged
/// within about a second of the kill (the default, 30 s, would make each round wait).
const LEASE_MS: u64 = 1000;
/// How long the checks wait for the kill's reservations to be charged.
const RECOVERY_WITHIN: Duration = Duration::from_secs(30);

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
    if !(50..97).contains(&roll) {
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
// The store under test.

/// Where the gateway keeps its state.
enum Backend {
    /// sled in the data dir; the master key in a file there.
    Embedded,
    /// A throwaway PostgreSQL server, with the master key from the environment and a short
    /// lease in `config`.
    Postgres { server: postgres::Server, config: PathBuf },
}

impl Backend {
    fn start(&self, data: &Path) -> Gateway {
        match self {
            Backend::Embedded => Gateway::start(data),
            Backend::Postgres { server, config } => {
                let (url, config) = (server.url(), config.to_str().expect("utf-8 path"));
                Gateway::start_with(data, &[("TOLLGATE_STORE_URL", url.as_str()), ("TOLLGATE_MASTER_KEY", MASTER_KEY), ("TOLLGATE_CONFIG", config)])
            }
        }
    }

    /// The body of a master-key rotation. Embedded: a generated key, staged in the data
    /// dir, then swapped in. Shared: the key comes from the environment, so a rotation
    /// re-wraps every data key under the deployed one (one transaction).
    fn rotation(&self) -> Value {
        match self {
            Backend::Embedded => json!({}),
            Backend::Postgres { .. } => json!({"new_master_key": MASTER_KEY}),
        }
    }

    /// Whether the kill left a rotation half done where it can be seen: a staged key file
    /// (a rotation on PostgreSQL is one transaction, never seen half done).
    fn rotation_interrupted(&self, data: &Path) -> bool {
        matches!(self, Backend::Embedded) && data.join(tollgate::sealing::NEXT_MASTER_KEY_FILE).exists()
    }

    /// The store as the kill left it, read while no gateway runs.
    fn read(&self, data: &Path, tenants: &[String]) -> BTreeMap<String, StoreTenant> {
        match self {
            Backend::Embedded => read_disk(data, tenants),
            Backend::Postgres { server, .. } => read_database(server, tenants),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Checks.

/// What the store holds for one tenant as the kill left it.
#[derive(Debug)]
struct StoreTenant {
    /// Spend counter of the current month.
    spent: u64,
    /// Reserved counter of the current month: requests in flight at the kill.
    reserved: u64,
    /// Ledger cost of the records of the current month.
    month_cost: u64,
    /// Ledger cost of every record.
    ledger_cost: u64,
}

impl StoreTenant {
    /// From the counters and the ledger's `(request id, unix millis, cost)` rows; panics
    /// on a request id that is there twice.
    fn tally(id: &str, spent: u64, reserved: u64, ledger: impl IntoIterator<Item = (String, u64, u64)>) -> Self {
        use tollgate::metering::Period;
        let period = Period::Month.id_at(tollgate::clock::unix_millis());
        let (mut seen, mut month_cost, mut ledger_cost) = (BTreeSet::new(), 0, 0);
        for (request_id, unix_millis, cost) in ledger {
            // Records of this period only (a run across a month boundary compares the new one).
            if Period::Month.id_at(unix_millis) == period {
                month_cost += cost;
            }
            ledger_cost += cost;
            assert!(seen.insert(request_id.clone()), "tenant {id}: request {request_id} is in the ledger twice");
        }
        StoreTenant { spent, reserved, month_cost, ledger_cost }
    }
}

/// The data dir, read with the library.
fn read_disk(dir: &Path, tenants: &[String]) -> BTreeMap<String, StoreTenant> {
    use tollgate::metering::{Budget, Embedded, Period};
    use tollgate::store::TenantKey;
    let store = tollgate::Store::open(dir).expect("the store opens after a kill");
    // The embedded authority's synchronous reads: this check runs outside any runtime.
    let metering = Embedded::new(store.clone()).expect("metering");
    let registry = tollgate::tenants::Tenants::load(store.clone()).expect("tenants");
    let now = tollgate::clock::unix_millis();
    let budget = Some(Budget { limit_microdollars: 0, period: Period::Month });
    let mut out = BTreeMap::new();
    for id in tenants {
        // Records are stored under the tenant's incarnation, not its id.
        let storage = registry.get(id).map(|t| t.storage_id().to_string()).expect("tenant on disk");
        let status = metering.status(&TenantKey::of(&storage), budget, now).expect("status");
        let ledger = metering.ledger(&storage, 0, u64::MAX, usize::MAX).expect("ledger");
        let rows = ledger.into_iter().map(|r| (r.request_id, r.unix_millis, r.cost_microdollars));
        out.insert(id.clone(), StoreTenant::tally(id, status.spent_microdollars, status.reserved_microdollars, rows));
    }
    drop(registry);
    drop(metering);
    drop(store);
    out
}

/// The database, read with SQL, once the killed gateway's sessions are gone.
fn read_database(server: &postgres::Server, tenants: &[String]) -> BTreeMap<String, StoreTenant> {
    use tokio_postgres::NoTls;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&server.url(), NoTls).await.expect("connect to the test database");
        let driver = tokio::spawn(connection);
        // A statement the gateway sent before the kill still runs, and commits, until its
        // session notices the closed socket: read once every other session has ended.
        let started = Instant::now();
        loop {
            let others: i64 = client
                .query_one("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()", &[])
                .await
                .expect("sessions")
                .get(0);
            if others == 0 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{others} sessions of the killed gateway are still open after 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let period = tollgate::metering::Period::Month.id_at(tollgate::clock::unix_millis());
        let mut out = BTreeMap::new();
        for id in tenants {
            let row = client.query_opt("SELECT incarnation FROM tenants WHERE tenant_id = $1", &[id]).await.expect("tenant row").expect("tenant in the database");
            // Records are stored under the tenant's incarnation, not its id.
            let incarnation: String = row.get(0);
            let storage = if incarnation.is_empty() { id.clone() } else { incarnation };
            let counters = client
                .query_opt("SELECT spent, reserved FROM budget_counters WHERE tenant_id = $1 AND scope = 'total' AND period_id = $2", &[&storage, &period])
                .await
                .expect("counters");
            let (spent, reserved): (i64, i64) = counters.map(|r| (r.get(0), r.get(1))).unwrap_or_default();
            let held: i64 = client.query_one("SELECT COALESCE(sum(amount), 0)::bigint FROM reservations WHERE tenant_id = $1", &[&storage]).await.expect("reservations").get(0);
            assert_eq!(reserved, held, "tenant {id}: the reserved counter differs from the reservations held");
            let ledger = client.query("SELECT request_id, unix_millis, cost_micro FROM ledger WHERE tenant_id = $1", &[&storage]).await.expect("ledger");
            let unsigned = |n: i64| u64::try_from(n).expect("non-negative");
            let rows = ledger.iter().map(|r| (r.get::<_, String>(0), unsigned(r.get(1)), unsigned(r.get(2))));
            out.insert(id.clone(), StoreTenant::tally(id, unsigned(spent), unsigned(reserved), rows));
        }
        drop(client);
        let _ = driver.await;
        out
    })
}

/// Waits until every tenant's reservations are charged: embedded at the restart (before
/// the gateway listens), shared once the killed replica's lease runs out.
fn wait_for_recovery(gw: &Client, tenants: &[String]) -> Duration {
    let started = Instant::now();
    for id in tenants {
        loop {
            let budget = gw.admin_ok("GET", &format!("/admin/v1/tenants/{id}/budget"), Value::Null);
            if budget["reserved_microdollars"].as_u64() == Some(0) {
                break;
            }
            assert!(started.elapsed() < RECOVERY_WITHIN, "tenant {id}: reservations left by the kill not charged within {RECOVERY_WITHIN:?}: {budget}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    started.elapsed()
}

/// Everything acknowledged is there after a restart and recovery; `before` is what the
/// store held as the kill left it (so the recovered reservations can be checked to the
/// micro-dollar).
fn verify(gw: &Client, acked: &Acked, before: &BTreeMap<String, StoreTenant>, report: &mut Report) {
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
        // Reservations the kill left were charged at their amount, once.
        if let Some(before) = before.get(id) {
            assert_eq!(before.spent, before.month_cost, "tenant {id}: spend counter and ledger disagree in the store");
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
    let dir = tempfile::tempdir().expect("tempdir");
    crash_loop("embedded", &Backend::Embedded, &dir.path().join("data"), 5);
}

#[test]
fn acknowledged_writes_survive_sigkill_at_random_moments_on_postgres() {
    let Some(server) = postgres::Server::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::lease_config(dir.path(), LEASE_MS);
    crash_loop("postgres", &Backend::Postgres { server, config }, &dir.path().join("data"), 3);
}

/// The loop: `CRASH_ROUNDS` (else `default_rounds`) kills of a gateway on `backend`
/// with `data` as its data dir.
fn crash_loop(name: &str, backend: &Backend, data: &Path, default_rounds: usize) {
    let rounds: usize = std::env::var("CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(default_rounds);
    let seed: u64 = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(tollgate::clock::unix_millis);
    eprintln!("crash loop ({name}): {rounds} rounds, CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let mut gw = backend.start(data);
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
            let (client, acked, stop, rotation) = (gw.client, acked.clone(), stop.clone(), backend.rotation());
            rotations_sent += 1;
            threads.push(std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 50 {
                    if let Ok(reply) = client.call("POST", "/admin/v1/keys/rotate", Some(ADMIN), rotation.clone()) {
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

        if backend.rotation_interrupted(data) {
            report.interrupted_rotations += 1;
        }
        // The store as the kill left it, then the restart, the recovery and the checks.
        let ids: Vec<String> = acked.lock().unwrap().tenants.keys().cloned().collect();
        let before = backend.read(data, &ids);
        gw = backend.start(data);
        let waited = wait_for_recovery(&gw.client, &ids);
        verify(&gw.client, &acked.lock().unwrap(), &before, &mut report);
        // A new tenant in the early rounds, created on a store that has been recovered.
        if acked.lock().unwrap().tenants.len() < MAX_TENANTS {
            let id = format!("r{round}");
            let token = create_tenant(&gw.client, &id).expect("create").expect("tenant created");
            acked.lock().unwrap().tenants.insert(id, TenantState { token, credentials: BTreeSet::from(["default".to_string()]), ..Default::default() });
        }
        let recovered = gw.log.lock().unwrap().iter().filter(|l| l.contains("charged reservations")).count();
        eprintln!("round {round}: restarted and verified ({} tenants, {recovered} recovery log lines, recovery waited {waited:.1?})", ids.len());
    }
    gw.kill();
    let acked = acked.lock().unwrap();
    let chats: usize = acked.tenants.values().map(|t| t.chats.len()).sum();
    let credentials: usize = acked.tenants.values().map(|t| t.credentials.len()).sum();
    eprintln!(
        "crash loop ({name}) done: {rounds} kills survived in {:.1?}; acknowledged: {} tenants, {chats} chats ({} streamed), {credentials} credentials, {} rotations ({rotations_sent} rounds rotating, {} kills mid-rotation); {} requests sent, {} cut by the kill, non-2xx answers {:?}; {} crash_recovered records, {} micro-dollars recovered",
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
