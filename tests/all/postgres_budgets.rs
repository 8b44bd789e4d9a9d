//! The budget authority on PostgreSQL, shared by several replicas: the overshoot bound is
//! zero across replicas, crash-left reservations are charged once by whichever replica
//! sweeps first (also those a live replica lost track of), a late settlement from a dead
//! replica changes nothing, and it keeps the embedded store's semantics. Each test runs
//! its own throwaway server on loopback (skipped without PostgreSQL installed, unless
//! `TOLLGATE_REQUIRE_PG=1`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::metering::{Budget, BudgetError, GroupBy, Hold, LedgerRecord, Metering, Period, Reservation};
use tollgate::postgres::budgets::{PgBudgets, ReplicaSettings};
use tollgate_tests::postgres::Server;

async fn migrated(server: &Server) -> tollgate::postgres::Pool {
    let pool = tollgate::postgres::connect(&server.url()).expect("pool");
    tollgate::postgres::migrate(&pool).await.expect("migrate");
    pool
}

fn replica(pool: &tollgate::postgres::Pool, name: &str, lease: Duration) -> PgBudgets {
    PgBudgets::start(pool.clone(), ReplicaSettings { replica_id: name.into(), lease })
}

fn hold<'a>(tenant: &'a str, budget: Option<Budget>, sub_budgets: &'a [(String, u64)], request_id: &'a str, microdollars: u64, now_millis: u64) -> Hold<'a> {
    Hold { tenant_id: tenant, budget, sub_budgets, request_id, microdollars, now_millis, end_user: None, tags: Vec::new(), caps: Vec::new() }
}

fn record(reservation: &Reservation, cost: u64) -> LedgerRecord {
    LedgerRecord {
        tenant_id: reservation.tenant_id.split('#').next().unwrap_or_default().into(),
        unix_millis: reservation.unix_millis,
        request_id: reservation.request_id.clone(),
        provider: "demo".into(),
        model: "m".into(),
        prompt_tokens: 3,
        completion_tokens: 5,
        cached_tokens: 0,
        cache_write_tokens: 0,
        cost_microdollars: cost,
        latency_ms: 1,
        outcome: "success".into(),
        end_user: reservation.end_user.clone(),
        tags: reservation.tags.clone(),
        policy_hash: String::new(),
    }
}

const NOW: u64 = 1_796_428_800_000; // 2026-12-05

#[tokio::test]
async fn migrations_apply_once_and_every_per_tenant_key_starts_with_tenant_id() {
    let Some(server) = Server::start() else { return };
    let pool = tollgate::postgres::connect(&server.url()).expect("pool");
    // Replicas starting together: each migration still runs once.
    let (a, b) = tokio::join!(tollgate::postgres::migrate(&pool), tollgate::postgres::migrate(&pool));
    let mut applied = [a.expect("first"), b.expect("second")].concat();
    applied.sort();
    assert_eq!(applied, tollgate::postgres::MIGRATIONS.iter().map(|m| m.0).collect::<Vec<_>>());
    assert!(tollgate::postgres::migrate(&pool).await.expect("again").is_empty(), "nothing left to apply");
    // Citus distributes every per-tenant table by tenant_id: each one's primary key must
    // start with it. Only the migrations bookkeeping and tables whose COMMENT declares
    // them global (saying why) are exempt.
    let client = pool.get().await.expect("client");
    let rows = client
        .query(
            "SELECT c.relname::text, a.attname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] \
             WHERE i.indisprimary AND n.nspname = 'public' AND coalesce(obj_description(c.oid, 'pg_class'), '') NOT LIKE 'global:%' ORDER BY 1",
            &[],
        )
        .await
        .expect("primary keys");
    let keys: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(keys.len() >= 4, "{keys:?}");
    // Tables read without a tenant key are global by design (reference or coordinator
    // tables on Citus, as the migrations' comments say); every other must lead with it.
    let global = ["tollgate_migrations", "tokens", "changes", "vault_meta"];
    for (table, first) in &keys {
        if !global.contains(&table.as_str()) {
            assert_eq!(first, "tenant_id", "table {table}'s primary key must start with tenant_id");
        }
    }
}

#[tokio::test]
async fn replicas_sharing_a_budget_never_overspend_it() {
    let Some(server) = Server::start() else { return };
    let pool = migrated(&server).await;
    // Four replicas, each with its own pool, as four processes would have.
    let replicas: Vec<PgBudgets> = (0..4)
        .map(|i| {
            let own = tollgate::postgres::connect(&server.url()).expect("pool");
            PgBudgets::start(own, ReplicaSettings { replica_id: format!("r{i}"), lease: Duration::from_secs(60) })
        })
        .collect();
    let limit = 200_000u64;
    let budget = Some(Budget { limit_microdollars: limit, period: Period::Month });
    let running = Arc::new(AtomicBool::new(true));
    let (admitted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // A poller: spent + reserved never passes the limit, at any moment.
    let poll = {
        let (budgets, running) = (replicas[0].clone(), running.clone());
        tokio::spawn(async move {
            let mut samples = 0;
            while running.load(Ordering::Relaxed) {
                let status = budgets.status("hot", budget, NOW).await.expect("status");
                assert!(status.spent_microdollars + status.reserved_microdollars <= limit, "{status:?}");
                samples += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            samples
        })
    };
    let mut clients = Vec::new();
    for client in 0..32u64 {
        let (budgets, admitted, refused) = (replicas[(client % 4) as usize].clone(), admitted.clone(), refused.clone());
        clients.push(tokio::spawn(async move {
            for i in 0..12u64 {
                let id = format!("c{client}-{i}");
                let amount = 1_000 + (client * 7 + i * 13) % 4_000;
                match budgets.reserve(hold("hot", budget, &[], &id, amount, NOW)).await {
                    Ok(reservation) => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        // Actual cost at most what was reserved.
                        let cost = amount - (i % 3) * 100;
                        assert_eq!(budgets.settle(&reservation, &record(&reservation, cost)).await, Ok(true));
                    }
                    Err(BudgetError::Exceeded { .. }) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("reserve: {e}"),
                }
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    running.store(false, Ordering::Relaxed);
    assert!(poll.await.expect("poller") > 0);
    let status = replicas[1].status("hot", budget, NOW).await.expect("status");
    let ledger = replicas[2].ledger("hot", 0, u64::MAX, usize::MAX).await.expect("ledger");
    let ledger_sum: u64 = ledger.iter().map(|r| r.cost_microdollars).sum();
    assert!(status.spent_microdollars <= limit, "spent {} of {limit}", status.spent_microdollars);
    assert_eq!(status.spent_microdollars, ledger_sum, "spent equals the ledger's costs");
    assert_eq!(status.reserved_microdollars, 0);
    assert_eq!(replicas[3].open_reservations("hot").await.expect("open"), 0);
    assert_eq!(ledger.len() as u64, admitted.load(Ordering::Relaxed), "one ledger row per admitted request");
    assert!(refused.load(Ordering::Relaxed) > 0, "the budget ran out: {status:?}");
    // The headroom left is smaller than any request that was refused could use.
    assert!(limit - status.spent_microdollars < 5_000, "spent {} of {limit}", status.spent_microdollars);
    drop(pool);
}

#[tokio::test]
async fn a_dead_replicas_reservations_are_charged_once_and_its_late_settle_changes_nothing() {
    let Some(server) = Server::start() else { return };
    let pool = migrated(&server).await;
    let lease = Duration::from_millis(600);
    // The replica that dies: it never renews (no maintenance task), as after SIGKILL.
    let dead = replica(&pool, "dead", lease);
    let users = [("user:alice".to_string(), 1_000_000u64)];
    let mut held = Vec::new();
    for i in 0..3 {
        let id = format!("r{i}");
        let mut h = hold("t#1", None, &users, &id, 10_000, NOW);
        h.end_user = Some("alice".into());
        held.push(dead.reserve(h).await.expect("reserve"));
    }
    // Two survivors sweep at the same time; each reservation is charged once.
    let survivors = [replica(&pool, "a", lease), replica(&pool, "b", lease)];
    let _sweeping: Vec<_> = survivors.iter().map(PgBudgets::spawn_maintenance).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while survivors[0].open_reservations("t#1").await.expect("open") > 0 {
        assert!(Instant::now() < deadline, "expired reservations were not charged within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = survivors[0].status("t#1", None, NOW).await.expect("status");
    assert_eq!((status.spent_microdollars, status.reserved_microdollars), (30_000, 0));
    let ledger = survivors[1].ledger("t#1", 0, u64::MAX, 100).await.expect("ledger");
    assert_eq!(ledger.iter().map(|r| (r.outcome.as_str(), r.cost_microdollars, r.tenant_id.as_str())).collect::<Vec<_>>(), vec![("crash_recovered", 10_000, "t"); 3]);
    // The end user's scope was charged too.
    let by_user = survivors[0].usage("t#1", "2026-12-05", "2026-12-05", GroupBy::User).await.expect("usage");
    assert_eq!(by_user.iter().map(|(k, r)| (k.as_str(), r.cost_microdollars, r.requests)).collect::<Vec<_>>(), vec![("alice", 30_000, 3)]);
    // The dead replica comes back late: its settlement is a no-op.
    assert_eq!(dead.settle(&held[0], &record(&held[0], 1)).await, Ok(false));
    let after = survivors[1].status("t#1", None, NOW).await.expect("status");
    assert_eq!(after.spent_microdollars, 30_000);
    assert_eq!(survivors[0].ledger("t#1", 0, u64::MAX, 100).await.expect("ledger").len(), 3);
}

#[tokio::test]
async fn a_live_replica_keeps_its_reservations_past_the_lease() {
    let Some(server) = Server::start() else { return };
    let pool = migrated(&server).await;
    let lease = Duration::from_millis(600);
    let live = replica(&pool, "live", lease);
    let _renewing = live.spawn_maintenance();
    let sweeper = replica(&pool, "sweeper", lease);
    let reservation = live.reserve(hold("t#2", None, &[], "slow", 5_000, NOW)).await.expect("reserve");
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sweeper.recover_expired().await.expect("sweep"), 0, "a renewed lease is never swept");
    }
    assert_eq!(live.settle(&reservation, &record(&reservation, 1_234)).await, Ok(true));
    let status = sweeper.status("t#2", None, NOW).await.expect("status");
    assert_eq!((status.spent_microdollars, status.reserved_microdollars), (1_234, 0));
}

#[tokio::test]
async fn a_reservation_its_live_replica_lost_track_of_is_charged_once_its_lease_runs_out() {
    let Some(server) = Server::start() else { return };
    let pool = migrated(&server).await;
    let lease = Duration::from_millis(600);
    let live = replica(&pool, "live", lease);
    let _renewing = live.spawn_maintenance();
    // A reserve committed under the live replica's id whose answer never reached it (the
    // database failed over mid-call): the same id, another in-flight set.
    let lost = replica(&pool, "live", lease).reserve(hold("t#3", None, &[], "lost", 7_000, NOW)).await.expect("reserve");
    let kept = live.reserve(hold("t#3", None, &[], "kept", 5_000, NOW)).await.expect("reserve");
    let sweeper = replica(&pool, "sweeper", lease);
    let _sweeping = sweeper.spawn_maintenance();
    // The lost one is charged (by either replica's sweep); the one in flight stays renewed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sweeper.open_reservations("t#3").await.expect("open") > 1 {
        assert!(Instant::now() < deadline, "the lost reservation was renewed past its lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sweeper.open_reservations("t#3").await.expect("open"), 1, "a renewed lease is never swept");
    }
    assert_eq!(live.settle(&kept, &record(&kept, 1_000)).await, Ok(true));
    assert_eq!(live.settle(&lost, &record(&lost, 1)).await, Ok(false), "already charged by the sweep");
    let status = sweeper.status("t#3", None, NOW).await.expect("status");
    assert_eq!((status.spent_microdollars, status.reserved_microdollars), (8_000, 0));
    let ledger = sweeper.ledger("t#3", 0, u64::MAX, 100).await.expect("ledger");
    let mut outcomes: Vec<_> = ledger.iter().map(|r| (r.request_id.as_str(), r.outcome.as_str(), r.cost_microdollars)).collect();
    outcomes.sort();
    assert_eq!(outcomes, [("kept", "success", 1_000), ("lost", "crash_recovered", 7_000)]);
}

/// The same script against the embedded store and PostgreSQL answers the same.
#[tokio::test]
async fn postgres_and_the_embedded_store_agree() {
    let Some(server) = Server::start() else { return };
    let pool = migrated(&server).await;
    // Both through the one interface the gateway uses.
    let pg = Metering::shared(replica(&pool, "conformance", Duration::from_secs(60)));
    let sled = Metering::new(tollgate::Store::temporary().expect("store")).expect("metering");
    let day = Some(Budget { limit_microdollars: 25_000, period: Period::Day });
    let bob = [("user:bob".to_string(), 12_000u64)];
    let mut pg_log = Vec::new();
    let mut sled_log = Vec::new();
    // (request, budget, sub-budgets, amount, cost, when, end user, tags)
    let script: Vec<(&str, Option<Budget>, &[(String, u64)], u64, u64, u64, Option<&str>, Vec<String>)> = vec![
        ("a", day, &[], 10_000, 9_000, NOW, None, vec!["x".into()]),
        ("b", day, &bob, 10_000, 10_000, NOW + 1, Some("bob"), vec![]),
        ("c", day, &bob, 5_000, 5_000, NOW + 2, Some("bob"), vec![]), // bob's 12,000 refuses
        ("d", day, &[], 7_000, 7_000, NOW + 3, None, vec!["x".into(), "y".into()]), // 25,000 refuses
        ("e", day, &[], 6_000, 6_000, NOW + 4, None, vec![]),
        ("f", day, &[], 20_000, 1, NOW + 86_400_000, None, vec![]), // the next day has room
        ("g", Some(Budget { limit_microdollars: 26_000, period: Period::Month }), &[], 1_000, 1_000, NOW + 5, None, vec![]), // the month holds 25,001
    ];
    for (id, budget, subs, amount, cost, when, user, tags) in script {
        let make = || Hold { tenant_id: "same#1", budget, sub_budgets: subs, request_id: id, microdollars: amount, now_millis: when, end_user: user.map(String::from), tags: tags.clone(), caps: Vec::new() };
        let from_pg = pg.reserve_for(make()).await;
        let from_sled = sled.reserve_for(make()).await;
        match (from_pg, from_sled) {
            (Ok(p), Ok(s)) => {
                assert_eq!(p, s, "{id}: the same reservation");
                let (pg_record, sled_record) = (record(&p, cost), record(&s, cost));
                assert_eq!(pg.settle_durably(p, pg_record).await, Ok(()));
                assert_eq!(sled.settle_durably(s, sled_record).await, Ok(()));
                pg_log.push(format!("{id} ok"));
                sled_log.push(format!("{id} ok"));
            }
            (Err(p), Err(s)) => {
                pg_log.push(format!("{id} {p}"));
                sled_log.push(format!("{id} {s}"));
            }
            (p, s) => panic!("{id}: postgres {p:?}, embedded {s:?}"),
        }
    }
    assert_eq!(pg_log, sled_log);
    assert!(pg_log.iter().filter(|l| !l.ends_with(" ok")).count() >= 2, "{pg_log:?}");
    for (budget, when) in [(day, NOW), (day, NOW + 86_400_000), (Some(Budget { limit_microdollars: 1, period: Period::Month }), NOW), (Some(Budget { limit_microdollars: 1, period: Period::Total }), NOW)] {
        let p = pg.status("same#1", budget, when).await.expect("pg status");
        let s = sled.status("same#1", budget, when).await.expect("sled status");
        let figures = |b: &tollgate::policy::BudgetStatus| (b.period.clone(), b.period_id.clone(), b.limit_microdollars, b.spent_microdollars, b.reserved_microdollars);
        assert_eq!(figures(&p), figures(&s));
    }
    for group in [GroupBy::Day, GroupBy::Model, GroupBy::Provider, GroupBy::User, GroupBy::Tag] {
        let p = pg.usage("same#1", "2026-12-01", "2026-12-31", group).await.expect("pg usage");
        let s = sled.usage("same#1", "2026-12-01", "2026-12-31", group).await.expect("sled usage");
        assert_eq!(p, s, "{group:?}");
    }
    assert_eq!(pg.ledger("same#1", 0, u64::MAX, 100).await.expect("pg ledger"), sled.ledger("same#1", 0, u64::MAX, 100).await.expect("sled ledger"));
}

#[tokio::test]
async fn a_concurrency_cap_holds_across_replicas() {
    let Some(server) = Server::start() else { return };
    let pool = migrated(&server).await;
    let replicas: Vec<PgBudgets> = (0..3).map(|i| replica(&pool, &format!("cap{i}"), Duration::from_secs(60))).collect();
    let (in_flight, most, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for client in 0..12u64 {
        let (budgets, in_flight, most, refused) = (replicas[(client % 3) as usize].clone(), in_flight.clone(), most.clone(), refused.clone());
        clients.push(tokio::spawn(async move {
            for i in 0..5 {
                let id = format!("c{client}-{i}");
                let mut h = hold("capped#1", None, &[], &id, 10, NOW);
                h.caps = vec![("tenant".into(), 3)];
                match budgets.reserve(h).await {
                    Ok(reservation) => {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        assert_eq!(budgets.settle(&reservation, &record(&reservation, 10)).await, Ok(true));
                    }
                    Err(BudgetError::TooManyInFlight { cap, limit, .. }) => {
                        assert_eq!((cap.as_str(), limit), ("tenant", 3));
                        refused.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(e) => panic!("reserve: {e}"),
                }
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    // Counted before the settlement commits, so the observed figure can only be lower
    // than the database's: never above the cap.
    assert!(most.load(Ordering::SeqCst) <= 3, "{} in flight at once across replicas", most.load(Ordering::SeqCst));
    assert!(most.load(Ordering::SeqCst) >= 2, "the test reached concurrency");
    assert!(refused.load(Ordering::SeqCst) > 0, "the cap refused some");
    assert_eq!(replicas[0].open_reservations("capped#1").await.expect("open"), 0);
}

/// Renewing leases never waits on a reservation row another transaction holds (a
/// settlement deleting it, a sweep charging it): waiting, in whatever order the rows came,
/// deadlocked with settlement batches under load and PostgreSQL aborted the renewal.
#[tokio::test]
async fn renewing_leases_skips_rows_a_settlement_holds_instead_of_waiting() {
    let Some(server) = Server::start() else { return };
    let pool = migrated(&server).await;
    let live = replica(&pool, "live", Duration::from_secs(60));
    let held = live.reserve(hold("t#4", None, &[], "held", 1_000, NOW)).await.expect("reserve");
    let free = live.reserve(hold("t#4", None, &[], "free", 1_000, NOW)).await.expect("reserve");
    // Another transaction holds one row, as a settlement in progress does.
    let mut other = pool.get().await.expect("client");
    let other = other.transaction().await.expect("begin");
    other.execute("SELECT 1 FROM reservations WHERE request_id = 'held' FOR UPDATE", &[]).await.expect("lock");
    let renewed = tokio::time::timeout(Duration::from_secs(3), live.renew_leases()).await.expect("renewal waited for the held row");
    assert_eq!(renewed.expect("renew"), 1, "renews the free reservation at once");
    other.rollback().await.expect("rollback");
    assert_eq!(live.renew_leases().await.expect("renew"), 2, "and both once the row is free");
    for reservation in [held, free] {
        assert_eq!(live.settle(&reservation, &record(&reservation, 10)).await, Ok(true));
    }
}
