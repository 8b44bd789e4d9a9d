//! Tenants and tokens on PostgreSQL, seen from several replicas: what one replica writes
//! the others serve, a revocation on one is refused by the others within a second (by
//! LISTEN/NOTIFY, and by polling when the listener is gone), and concurrent writers on
//! different replicas lose nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate::postgres::changes::ChangeFeed;
use tollgate::postgres::tenants::{PgTenants, PgTokens};
use tollgate::tenants::{Tenant, TenantError, Tenants};
use tollgate::tokens::{Scope, Tokens};
use tollgate_tests::postgres::Server;

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
