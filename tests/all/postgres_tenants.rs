//! Tenants and tokens on PostgreSQL, seen from several replicas: what one replica writes
//! the others serve, a revocation on one is refused by the others within a second (by
//! LISTEN/NOTIFY, and by polling when the listener is gone), and concurrent writers on
//! different replicas lose nothing. Whole gateways (two `App`s on one database) show
//! that a replica starting leaves another's creation in progress alone, that whichever
//! replica lives purges what a dead incarnation wrote late, and that a creation a dead
//! replica abandoned is rolled back without a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate::postgres::changes::ChangeFeed;
use tollgate::postgres::tenants::{PgTenants, PgTokens};
use tollgate::tenants::{Tenant, TenantError, Tenants};
use tollgate::tokens::{Scope, Tokens};
use tollgate_tests::postgres::Server;

use crate::support::shared_gateway;

/// One replica's view of the shared store: its own pool, caches and change feed.
struct Replica {
    tenants: Arc<Tenants>,
    tokens: Tokens,
    _feed: ChangeFeed,
}

async fn replica(server: &Server) -> Replica {
    let pool = tollgate::postgres::connect(&server.url()).expect("pool");
    tollgate::postgres::migrate(&pool).await.expect("migrate");
    // Subscribed before loading: nothing written in between is missed.
    let feed = ChangeFeed::start(&server.url(), pool.clone()).await.expect("feed");
    let (tenant_changes, token_changes) = (feed.subscribe(), feed.subscribe());
    let tenants = Arc::new(Tenants::shared(PgTenants::new(pool.clone())).await.expect("tenants"));
    let tokens = Tokens::shared(PgTokens::new(pool));
    tenants.follow(tenant_changes);
    tokens.follow(token_changes);
    Replica { tenants, tokens, _feed: feed }
}

fn tenant(id: &str) -> Tenant {
    serde_json::from_value(json!({"id": id})).expect("tenant")
}

/// Polls `check` every 10 ms for up to `within`; returns how long it took.
async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test]
async fn what_one_replica_writes_the_others_serve_and_revocations_land_within_a_second() {
    let Some(server) = Server::start() else { return };
    let (a, b) = (replica(&server).await, replica(&server).await);
    let created = a.tenants.create(tenant("acme")).await.expect("create");
    let seen = eventually(Duration::from_secs(2), async || b.tenants.get("acme").is_some()).await;
    assert!(seen.is_some_and(|t| t < Duration::from_secs(1)), "replica b saw the new tenant after {seen:?}");
    assert_eq!(b.tenants.get("acme").map(|t| t.incarnation.clone()), Some(created.incarnation.clone()));
    // A token issued on a works on b at once (misses are never cached).
    let (token, _) = a.tokens.issue(&created, Scope::Inference, Default::default()).await.expect("issue");
    let found = b.tokens.lookup(&token).await.expect("lookup").expect("b finds the token");
    assert!(found.belongs_to(&created));
    // b now holds it in its cache; a revokes it: b refuses it within a second.
    let id = found.id.clone();
    assert!(a.tokens.revoke(&created, &id).await.expect("revoke"));
    let refused = eventually(Duration::from_secs(2), async || b.tokens.lookup(&token).await.expect("lookup").is_none()).await;
    assert!(refused.is_some_and(|t| t < Duration::from_secs(1)), "replica b refused the revoked token after {refused:?}");
    // A delete on b reaches a.
    b.tenants.mark_deleting("acme").await.expect("mark deleting");
    let gone = eventually(Duration::from_secs(2), async || a.tenants.get("acme").is_none()).await;
    assert!(gone.is_some(), "replica a still serves a tenant being deleted");
}

#[tokio::test]
async fn revocations_reach_a_replica_whose_listener_was_killed_by_polling() {
    let Some(server) = Server::start() else { return };
    let (a, b) = (replica(&server).await, replica(&server).await);
    let created = a.tenants.create(tenant("poll")).await.expect("create");
    let (token, record) = a.tokens.issue(&created, Scope::Inference, Default::default()).await.expect("issue");
    assert!(b.tokens.lookup(&token).await.expect("lookup").is_some());
    // Cut every LISTEN connection (both replicas'), as a network blip or failover would.
    let pool = tollgate::postgres::connect(&server.url()).expect("pool");
    let client = pool.get().await.expect("client");
    let killed = client
        .query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()", &[])
        .await
        .expect("terminate");
    assert!(!killed.is_empty(), "the replicas were listening");
    assert!(a.tokens.revoke(&created, &record.id).await.expect("revoke"));
    let refused = eventually(Duration::from_secs(3), async || b.tokens.lookup(&token).await.expect("lookup").is_none()).await;
    assert!(refused.is_some_and(|t| t < Duration::from_millis(1500)), "polling alone took {refused:?}");
}

#[tokio::test]
async fn writers_on_different_replicas_lose_nothing() {
    let Some(server) = Server::start() else { return };
    let (a, b) = (Arc::new(replica(&server).await), Arc::new(replica(&server).await));
    // Two creates of one id, one on each replica: one tenant.
    let (first, second) = tokio::join!(a.tenants.create(tenant("twin")), b.tenants.create(tenant("twin")));
    assert_eq!([first.is_ok(), second.is_ok()].iter().filter(|ok| **ok).count(), 1, "{first:?} {second:?}");
    assert!(matches!(first.as_ref().err().or(second.as_ref().err()), Some(TenantError::Exists(_))));
    let live = first.or(second).expect("one created");
    eventually(Duration::from_secs(2), async || b.tenants.get("twin").is_some() && a.tenants.get("twin").is_some()).await.expect("both see it");
    // The operator on a sets the budget, the tenant on b its display name, 10 times each
    // and interleaved: every change of each survives in the final record.
    let mut writers = Vec::new();
    for i in 0..10u64 {
        let (a, b, live_a, live_b) = (a.clone(), b.clone(), live.clone(), live.clone());
        writers.push(tokio::spawn(async move {
            a.tenants
                .update(&live_a, |t| {
                    let mut t = t.clone();
                    let budget = t.budget.get_or_insert(tollgate::metering::Budget { limit_microdollars: 0, period: Default::default() });
                    budget.limit_microdollars += 1;
                    Ok(t)
                })
                .await
                .map(|_| ())
        }));
        writers.push(tokio::spawn(async move {
            b.tenants
                .update(&live_b, move |t| {
                    let mut t = t.clone();
                    t.display_name.push_str(&i.to_string());
                    Ok(t)
                })
                .await
                .map(|_| ())
        }));
    }
    for writer in writers {
        writer.await.expect("writer").expect("update");
    }
    let pool = tollgate::postgres::connect(&server.url()).expect("pool");
    let stored = PgTenants::new(pool).get("twin").await.expect("read").expect("stored");
    assert_eq!(stored.budget.map(|b| b.limit_microdollars), Some(10), "every budget increment kept");
    assert_eq!(stored.display_name.len(), 10, "every name change kept: {:?}", stored.display_name);
    assert_eq!(stored.incarnation, live.incarnation, "identity unchanged");
    let synced = eventually(Duration::from_secs(2), async || a.tenants.get("twin").is_some_and(|t| t.display_name.len() == 10)).await;
    assert!(synced.is_some(), "replica a's cache follows b's writes");
}

/// One shared-store query's single count.
async fn count(server: &Server, sql: &str, storage_id: &str) -> i64 {
    let client = tollgate::postgres::connect(&server.url()).expect("pool").get().await.expect("client");
    client.query_one(sql, &[&storage_id]).await.expect("count").get(0)
}

/// Session turns of `storage_id`: what a request writes as it ends, late or not.
async fn turns(server: &Server, storage_id: &str) -> i64 {
    count(server, "SELECT count(*) FROM session_turns WHERE tenant_id = $1", storage_id).await
}

async fn write_turn(app: &tollgate::App, storage_id: &str, content: &str) {
    let turn = tollgate::sessions::Turn { role: "user".into(), content: content.into(), unix_millis: tollgate::clock::unix_millis(), request_id: "late".into() };
    app.sessions.tenant(storage_id).append("diary", &[turn]).await.expect("append");
}

/// What `POST /api/v1/tenants` has written before it makes a tenant live: the record,
/// `creating`, with a credential and a token.
async fn half_create(app: &tollgate::App, id: &str) -> Arc<Tenant> {
    let mut half = tenant(id);
    half.lifecycle = tollgate::tenants::Lifecycle::Creating;
    let half = app.tenants.create(half).await.expect("create");
    app.vault.put(half.storage_id(), "default", "openai", &tollgate::Secret::new("sk-half".into())).await.expect("put");
    app.tokens.issue(&half, Scope::Inference, Default::default()).await.expect("issue");
    half
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_starting_leaves_another_replicas_creation_in_progress_alone() {
    let Some(server) = Server::start() else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let a = shared_gateway(&server, dir_a.path()).await;
    let half = half_create(&a, "young").await;
    // Replica b starts while a is between the first and the last step of the creation.
    let b = shared_gateway(&server, dir_b.path()).await;
    let credentials = "SELECT count(*) FROM credentials WHERE tenant_id = $1";
    assert_eq!(count(&server, credentials, half.storage_id()).await, 1, "b's start purged a creation in progress");
    let live = a.tenants.activate("young").await.expect("a finishes its creation");
    assert_eq!(live.incarnation, half.incarnation);
    let opened = a.vault.open(half.storage_id(), "default").await.expect("the credential opens");
    assert_eq!(opened.1.expose(), "sk-half");
    let seen = eventually(Duration::from_secs(2), async || b.tenants.get("young").is_some()).await;
    assert!(seen.is_some(), "b serves the tenant a created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_writes_of_a_tenant_deleted_by_a_replica_that_died_are_purged_by_another() {
    let Some(server) = Server::start() else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let a = shared_gateway(&server, dir_a.path()).await;
    let doomed = a.tenants.create(tenant("doomed")).await.expect("create");
    write_turn(&a, doomed.storage_id(), "before the delete").await;
    tollgate::tenant_lifecycle::delete(&a, "doomed").await.expect("delete");
    assert_eq!(turns(&server, doomed.storage_id()).await, 0, "the delete purged");
    // A request of the dead incarnation in flight on a ends after the purge; then a dies,
    // its repurge schedule with it.
    write_turn(&a, doomed.storage_id(), "late secret").await;
    drop(a);
    assert_eq!(turns(&server, doomed.storage_id()).await, 1);

    // Any replica's start purges it again.
    let b = shared_gateway(&server, dir_b.path()).await;
    assert_eq!(turns(&server, doomed.storage_id()).await, 0, "the late write of the dead incarnation survived b's start");
    let tombstone = "SELECT count(*) FROM tenant_tombstones WHERE tenant_id = $1";
    assert_eq!(count(&server, tombstone, doomed.storage_id()).await, 1, "kept for the passes still due: other replicas' requests may still write");

    // And the schedule goes on on b: each pass as it falls due, the tombstone dropped after
    // the last. (The death is moved back in time instead of waiting for it.)
    let client = tollgate::postgres::connect(&server.url()).expect("pool").get().await.expect("client");
    let died = async |ago: &str| {
        client.execute(&format!("UPDATE tenant_tombstones SET died_at = now() - interval '{ago}' WHERE tenant_id = $1"), &[&doomed.storage_id()]).await.expect("age");
    };
    assert_eq!(tollgate::tenant_lifecycle::upkeep(&b).await.expect("upkeep").repurged, 0, "no pass is due yet");
    write_turn(&b, doomed.storage_id(), "later still").await;
    died("61 seconds").await;
    assert_eq!(tollgate::tenant_lifecycle::upkeep(&b).await.expect("upkeep").repurged, 1, "the first pass");
    assert_eq!(turns(&server, doomed.storage_id()).await, 0);
    assert_eq!(tollgate::tenant_lifecycle::upkeep(&b).await.expect("upkeep").repurged, 0, "a pass is made once");
    write_turn(&b, doomed.storage_id(), "last of all").await;
    died("2 hours").await;
    assert_eq!(tollgate::tenant_lifecycle::upkeep(&b).await.expect("upkeep").repurged, 1, "the last pass");
    assert_eq!(turns(&server, doomed.storage_id()).await, 0);
    assert_eq!(count(&server, tombstone, doomed.storage_id()).await, 0, "dropped after the last pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_a_dead_replica_abandoned_is_rolled_back_without_a_restart() {
    let Some(server) = Server::start() else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let (a, b) = (shared_gateway(&server, dir_a.path()).await, shared_gateway(&server, dir_b.path()).await);
    let half = half_create(&a, "orphan").await;
    drop(a);
    eventually(Duration::from_secs(2), async || b.tenants.unfinished().iter().any(|t| t.id == "orphan")).await.expect("b hears of the creation");
    assert_eq!(tollgate::tenant_lifecycle::upkeep(&b).await.expect("upkeep").finished, 0, "too young to be taken for abandoned");
    // Left unchanged past the bound (moved back in time instead of waiting).
    let client = tollgate::postgres::connect(&server.url()).expect("pool").get().await.expect("client");
    let bound = tollgate::tenant_lifecycle::ABANDONED_AFTER.as_secs() + 1;
    client.execute(&format!("UPDATE tenants SET updated_at = now() - interval '{bound} seconds' WHERE tenant_id = 'orphan'"), &[]).await.expect("age");
    assert_eq!(tollgate::tenant_lifecycle::upkeep(&b).await.expect("upkeep").finished, 1);
    assert_eq!(count(&server, "SELECT count(*) FROM tenants WHERE incarnation = $1", half.storage_id()).await, 0, "the record remains");
    assert_eq!(count(&server, "SELECT count(*) FROM credentials WHERE tenant_id = $1", half.storage_id()).await, 0, "its credential remains");
    assert_eq!(count(&server, "SELECT count(*) FROM tokens WHERE tenant_id = $1", half.storage_id()).await, 0, "its token remains");
    assert!(b.tenants.create(tenant("orphan")).await.is_ok(), "the id is free again");
}

/// Feed rows take their ids at insert but commit in any order: a change whose writer
/// commits after a later writer's must still reach every replica (a reader that moved past
/// the later id used to skip it for good, and a replica then refused a live tenant's
/// tokens with 401 until it restarted).
#[tokio::test]
async fn a_change_committed_after_a_later_one_still_reaches_the_replicas() {
    use tollgate::postgres::changes::Change;
    let Some(server) = Server::start() else { return };
    let pool = tollgate::postgres::connect(&server.url()).expect("pool");
    tollgate::postgres::migrate(&pool).await.expect("migrate");
    let feed = ChangeFeed::start(&server.url(), pool.clone()).await.expect("feed");
    let mut changes = feed.subscribe();
    // The slow writer takes its place in the feed first and stays open.
    let mut slow = pool.get().await.expect("client");
    let slow = slow.transaction().await.expect("begin");
    slow.execute("SELECT tg_changed('tenant', 'slow')", &[]).await.expect("slow change");
    let fast = pool.get().await.expect("client");
    fast.execute("SELECT tg_changed('tenant', 'fast')", &[]).await.expect("fast change");
    // Long enough for the listener and a poll to read past the fast one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    slow.commit().await.expect("commit");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while seen.len() < 2 {
        let Ok(Ok(change)) = tokio::time::timeout_at(deadline.into(), changes.recv()).await else { break };
        if let Change::Row { key, .. } = change {
            seen.push(key);
        }
    }
    seen.sort();
    assert_eq!(seen, ["fast", "slow"], "the replica's feed delivered {seen:?}");
}
