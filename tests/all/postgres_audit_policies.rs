//! The audit chain, policy blobs and upload records on PostgreSQL, shared by replicas:
//! appends from several replicas at once form one chain that verifies, an edited or
//! missing record is named by verify, tenants read only their own trail; a policy uploaded
//! through one replica runs on another (compiled there from the stored wasm), a tenant's
//! upload quota holds across replicas, the delete rules answer as on the embedded store,
//! and an assignment on one replica racing a delete on another never leaves a tenant
//! running a policy that is gone. Each script runs through the same facade on both stores.
//! Each test runs its own
//! throwaway server on loopback (skipped without PostgreSQL installed, unless
//! `TOLLGATE_REQUIRE_PG=1`).

use std::sync::Arc;

use serde_json::json;
use tollgate::audit::{AuditLog, AuditRecord, Verification};
use tollgate::policy::{Owner, PolicyBlobs, PolicyLimits, QuotaExceeded};
use tollgate::policy_deletion::{delete_claim, delete_everywhere, DeleteRefused, Deleted, Holders};
use tollgate::postgres::audit::PgAudit;
use tollgate::postgres::policies::PgPolicies;
use tollgate::postgres::Pool;
use tollgate::tenants::Tenant;
use tollgate::{GatewayError, PolicyError, PolicyHash, Store};
use tollgate_tests::postgres::Server;

use crate::support::{context, request, shared_gateway, Sandbox};

/// A pool on `server`, migrated: one per replica, as each process would have its own.
async fn replica_pool(server: &Server) -> Pool {
    let pool = tollgate::postgres::connect(&server.url()).expect("pool");
    tollgate::postgres::migrate(&pool).await.expect("migrate");
    pool
}

fn tenant(id: &str, incarnation: &str, assigned: Option<PolicyHash>) -> Tenant {
    let policy = assigned.map(|h| json!({"hash": h.to_string(), "config": "{}"}));
    serde_json::from_value(json!({"id": id, "incarnation": incarnation, "policy": policy})).expect("tenant")
}

/// A record without what depends on the clock (its time, and so its hashes).
fn content(records: &[AuditRecord]) -> Vec<(u64, String, String, String, String, serde_json::Value)> {
    records.iter().map(|r| (r.seq, r.actor.clone(), r.action.clone(), r.tenant.clone(), r.incarnation.clone(), r.detail.clone())).collect()
}

/// Each record names its predecessor's hash.
fn linked(records: &[AuditRecord]) -> bool {
    records.windows(2).all(|w| w[1].prev_hash == w[0].hash && w[1].seq == w[0].seq + 1)
}

fn verdict(v: &Verification) -> (u64, bool, Option<u64>) {
    (v.records, v.ok, v.broken_at)
}

/// Where one arm's records are, to edit them behind the facade's back.
enum Disk {
    Embedded(Store),
    Shared(Pool),
}

impl Disk {
    async fn edit_actor(&self, seq: u64, actor: &str) {
        match self {
            Disk::Embedded(store) => {
                let raw = store.audit.get(seq.to_be_bytes()).expect("read").expect("record");
                let mut record: AuditRecord = serde_json::from_slice(&raw).expect("decode");
                record.actor = actor.into();
                store.audit.insert(seq.to_be_bytes(), serde_json::to_vec(&record).expect("encode")).expect("write");
            }
            Disk::Shared(pool) => {
                let client = pool.get().await.expect("client");
                let edited = client.execute("UPDATE audit SET actor = $1 WHERE seq = $2", &[&actor, &(seq as i64)]).await.expect("update");
                assert_eq!(edited, 1);
            }
        }
    }

    async fn delete(&self, seq: u64) {
        match self {
            Disk::Embedded(store) => assert!(store.audit.remove(seq.to_be_bytes()).expect("remove").is_some()),
            Disk::Shared(pool) => {
                let client = pool.get().await.expect("client");
                assert_eq!(client.execute("DELETE FROM audit WHERE seq = $1", &[&(seq as i64)]).await.expect("delete"), 1);
            }
        }
    }
}

/// What one run of the audit script saw.
#[derive(Debug, PartialEq)]
struct AuditAnswers {
    all: Vec<(u64, String, String, String, String, serde_json::Value)>,
    about_a: Vec<u64>,
    page: Vec<u64>,
    own_a1: Vec<u64>,
    own_a2: Vec<u64>,
    own_b: Vec<u64>,
    verified: (u64, bool, Option<u64>),
    after_edit: (u64, bool, Option<u64>),
    after_delete: (u64, bool, Option<u64>),
}

async fn audit_script(log: &AuditLog, disk: &Disk) -> AuditAnswers {
    let (a1, a2, b) = (tenant("a", "a#01", None), tenant("a", "a#02", None), tenant("b", "b#01", None));
    log.append("operator", "tenant.create", "a", json!({"budget": null})).await.expect("append");
    log.append_tenant("operator", "token.issue", &a1, json!({"token_id": "tk1", "scope": "manage"})).await.expect("append");
    log.append_tenant("tenant:a/token:tk1", "credential.put", &a1, json!({"name": "default", "provider": "openai"})).await.expect("append");
    log.append_tenant("operator", "tenant.delete", &a1, json!({"records_removed": 12})).await.expect("append");
    log.append_tenant("operator", "tenant.create", &a2, json!({"budget": {"limit_microdollars": 5_000_000, "period": "month"}})).await.expect("append");
    log.append_tenant("operator", "tenant.create", &b, json!({"zeta": 1, "alpha": [1.5, -2, "x"], "nested": {"b": true, "a": null}})).await.expect("append");
    log.append("operator", "keys.rotate", "", json!({"new_key_fingerprint": "ab12", "rewrapped_data_keys": 2, "ratio": 0.1})).await.expect("append");
    let all = log.read(0, 100, None).await.expect("read");
    assert!(linked(&all), "{all:?}");
    let seqs = |records: Vec<AuditRecord>| records.iter().map(|r| r.seq).collect::<Vec<_>>();
    let verified = log.verify().await.expect("verify");
    assert_eq!(verified.head, all.last().expect("records").hash, "the verdict names the head");
    let answers_before = (
        content(&all),
        seqs(log.read(0, 100, Some("a")).await.expect("read")),
        seqs(log.read(2, 3, None).await.expect("read")),
        seqs(log.read_own(0, 100, &a1).await.expect("read")),
        seqs(log.read_own(0, 100, &a2).await.expect("read")),
        seqs(log.read_own(0, 100, &b).await.expect("read")),
    );
    disk.edit_actor(3, "someone else").await;
    let after_edit = verdict(&log.verify().await.expect("verify"));
    disk.delete(2).await;
    let after_delete = verdict(&log.verify().await.expect("verify"));
    let (all, about_a, page, own_a1, own_a2, own_b) = answers_before;
    AuditAnswers { all, about_a, page, own_a1, own_a2, own_b, verified: verdict(&verified), after_edit, after_delete }
}

/// The same audit script answers the same through both stores: reads by tenant and by
/// incarnation, a chain that verifies, and verify naming an edited and a deleted record.
#[tokio::test]
async fn the_audit_script_answers_the_same_on_both_stores() {
    let Some(server) = Server::start() else { return };
    let pool = replica_pool(&server).await;
    let store = Store::temporary().expect("store");
    let embedded = audit_script(&AuditLog::open(store.clone()).expect("open"), &Disk::Embedded(store)).await;
    let shared = audit_script(&AuditLog::shared(PgAudit::new(pool.clone())), &Disk::Shared(pool)).await;
    assert_eq!(shared, embedded);
    // What the script must have seen, on either store.
    assert_eq!(shared.verified, (7, true, None));
    assert_eq!(shared.about_a, [1, 2, 3, 4, 5], "the operator sees every incarnation of a");
    assert_eq!(shared.page, [3, 4, 5]);
    assert_eq!((shared.own_a1, shared.own_a2, shared.own_b), (vec![2, 3, 4], vec![5], vec![6]), "a tenant reads only its own incarnation's trail");
    assert_eq!(shared.after_edit, (2, false, Some(3)), "an edited record is named");
    assert_eq!(shared.after_delete, (1, false, Some(2)), "a missing record is named");
}

/// Two replicas, each with its own pool, appending at once: one chain, every record in
/// it, and it verifies from either. Deleting the newest record is seen too: the shared
/// chain ends at the head it keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_from_two_replicas_at_once_form_one_chain() {
    let Some(server) = Server::start() else { return };
    let replicas = [Arc::new(AuditLog::shared(PgAudit::new(replica_pool(&server).await))), Arc::new(AuditLog::shared(PgAudit::new(replica_pool(&server).await)))];
    let mut writers = Vec::new();
    for (r, log) in replicas.iter().enumerate() {
        for w in 0..4 {
            let log = log.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..10 {
                    log.append(&format!("replica-{r}"), "tenant.update", &format!("t{w}"), json!({"i": i})).await.expect("append");
                }
            }));
        }
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let all = replicas[0].read(0, 1000, None).await.expect("read");
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=80).collect::<Vec<_>>());
    assert!(linked(&all), "every record names its predecessor's hash");
    for r in 0..2 {
        assert_eq!(all.iter().filter(|x| x.actor == format!("replica-{r}")).count(), 40);
    }
    let verified = replicas[1].verify().await.expect("verify");
    assert_eq!(verdict(&verified), (80, true, None));
    assert_eq!(verified.head, all[79].hash);
    let client = tollgate::postgres::connect(&server.url()).expect("pool").get().await.expect("client");
    client.execute("DELETE FROM audit WHERE seq = 80", &[]).await.expect("delete");
    assert_eq!(verdict(&replicas[0].verify().await.expect("verify")), (79, false, Some(80)), "a truncated tail is named");
}

/// The tables this migration declares global say so, and say why.
#[tokio::test]
async fn the_global_tables_are_declared() {
    let Some(server) = Server::start() else { return };
    let pool = replica_pool(&server).await;
    let client = pool.get().await.expect("client");
    let rows = client
        .query("SELECT relname::text FROM pg_class WHERE relkind = 'r' AND obj_description(oid, 'pg_class') LIKE 'global:%' ORDER BY 1", &[])
        .await
        .expect("comments");
    let global: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for table in ["audit", "audit_head", "policies"] {
        assert!(global.iter().any(|g| g == table), "{table} is not declared global: {global:?}");
    }
    assert!(!global.iter().any(|g| g == "policy_uploads"), "upload records are per tenant");
}

/// A copy of `wasm` with a custom section appended: a distinct, equally valid component.
fn variant(wasm: &[u8], n: u32) -> Vec<u8> {
    let name = format!("variant-{n}");
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.push((1 + name.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out
}

fn default_variant(n: u32) -> Vec<u8> {
    variant(&tollgate_tests::guests::wasm("tollgate-policy-default"), n)
}

fn shared_replica(pool: &Pool, limits: PolicyLimits) -> Sandbox {
    Sandbox::with_blobs(limits, PolicyBlobs::shared(PgPolicies::new(pool.clone())))
}

/// A policy uploaded through replica A runs on replica B, which compiles it into its own
/// local store from the wasm in the database (only the wasm is shared). Wasm edited in
/// the database is refused, never run under the hash it no longer has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_uploaded_through_one_replica_runs_on_another() {
    let Some(server) = Server::start() else { return };
    let (a, b) = (shared_replica(&replica_pool(&server).await, PolicyLimits::default()), shared_replica(&replica_pool(&server).await, PolicyLimits::default()));
    let wasm = default_variant(1);
    let hash = a.runtime.upload_for(Owner::Tenant("t#01"), wasm.clone()).await.expect("upload");
    let key = hash.to_string();
    assert!(a.store.compiled.get(&key).expect("read").is_some(), "the uploading replica keeps its compiled artifact");
    assert!(b.runtime.exists(&hash).await.expect("exists"));
    assert!(b.store.compiled.get(&key).expect("read").is_none(), "nothing compiled is shared");
    let routed = b.runtime.route(hash, b.scope("t"), &request("gpt-4o"), &context("t", "{}")).await;
    assert!(routed.is_ok(), "{routed:?}");
    assert!(b.store.compiled.get(&key).expect("read").is_some(), "replica B compiled it into its own store");
    assert_eq!(b.runtime.stats.loads.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(b.runtime.blobs().list(Owner::Tenant("t#01")).await.expect("list").iter().map(|r| (r.hash.clone(), r.bytes)).collect::<Vec<_>>(), [(key.clone(), wasm.len() as u64)]);

    let client = tollgate::postgres::connect(&server.url()).expect("pool").get().await.expect("client");
    let stored: Vec<u8> = client.query_one("SELECT wasm FROM policies WHERE hash = $1", &[&hash.0.as_slice()]).await.expect("row").get(0);
    assert_eq!(stored, wasm, "the database holds the uploaded wasm, byte for byte");
    client.execute("UPDATE policies SET wasm = $1 WHERE hash = $2", &[&default_variant(2), &hash.0.as_slice()]).await.expect("edit");
    let c = shared_replica(&replica_pool(&server).await, PolicyLimits::default());
    let refused = c.runtime.route(hash, c.scope("t"), &request("gpt-4o"), &context("t", "{}")).await;
    assert!(matches!(refused, Err(PolicyError::Store(tollgate::store::StoreError::Corrupt { tree: "policies", .. }))), "{refused:?}");
}

/// A step's outcome, the same text on either store (hashes are content addresses).
fn outcome<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<T, E>) -> String {
    match result {
        Ok(value) => format!("ok {value:?}"),
        Err(e) => format!("refused: {e}"),
    }
}

/// Deletes `hash` on `replica` for a tenant, or for the operator (`who` = `None`), under
/// the blob's lock.
async fn delete(replica: &Sandbox, holders: &Holders, who: Option<&Tenant>, hash: PolicyHash) -> Result<Deleted, GatewayError> {
    let held = replica.runtime.lock_blob(hash).await.expect("lock");
    match who {
        Some(tenant) => delete_claim(&replica.runtime, &held, holders, tenant, hash).await,
        None => delete_everywhere(&replica.runtime, &held, holders, hash).await,
    }
}

/// Upload quota and delete rules, through two replicas, scripted once and run on both
/// stores (embedded: both replicas on one store, as two runtimes of one process would be).
async fn upload_script(a: &Sandbox, b: &Sandbox) -> Vec<String> {
    let (t1, t2) = (Owner::Tenant("t1#01"), Owner::Tenant("t2#01"));
    let (v1, v2, v3) = (default_variant(11), default_variant(12), default_variant(13));
    let (h1, h2, h3) = (PolicyHash::of(&v1), PolicyHash::of(&v2), PolicyHash::of(&v3));
    let stock = PolicyHash::of(b"the stock policy stands in here");
    let mut log = Vec::new();
    log.push(outcome(a.runtime.upload_for(t1, v1.clone()).await));
    log.push(outcome(b.runtime.upload_for(t1, v2.clone()).await));
    log.push(outcome(b.runtime.upload_for(t1, v1.clone()).await)); // held already: a no-op
    let past_quota = a.runtime.upload_for(t1, v3.clone()).await;
    assert!(matches!(past_quota, Err(PolicyError::UploadQuota(QuotaExceeded::Uploads { held: 2, limit: 2, .. }))), "B's upload counts on A: {past_quota:?}");
    log.push(outcome(past_quota));
    log.push(outcome(b.runtime.upload_for(t2, v1.clone()).await)); // t2's own quota; the blob is there
    for (replica, owner) in [(a, t1), (b, t1), (b, t2)] {
        let listed = replica.runtime.blobs().list(owner).await.expect("list");
        log.push(format!("{owner:?} holds {:?}", listed.iter().map(|r| (r.hash.clone(), r.bytes)).collect::<Vec<_>>()));
    }
    let holders = Holders { default_policy: stock, tenants: vec![Arc::new(tenant("t1", "t1#01", Some(h2))), Arc::new(tenant("t2", "t2#01", None))] };
    let (tenant1, tenant2) = (holders.tenants[0].as_ref().clone(), holders.tenants[1].as_ref().clone());
    let delete = |replica, who, hash| delete(replica, &holders, who, hash);
    let not_held = delete(a, Some(&tenant1), h3).await;
    assert!(matches!(not_held, Err(GatewayError::PolicyDeleteRefused(DeleteRefused::NotHeld(_)))), "{not_held:?}");
    log.push(outcome(not_held));
    let assigned_here = delete(b, Some(&tenant1), h2).await;
    assert!(matches!(assigned_here, Err(GatewayError::PolicyDeleteRefused(DeleteRefused::AssignedHere(_)))), "{assigned_here:?}");
    log.push(outcome(assigned_here));
    // t2 holds h1 too: t1's delete drops only its claim.
    let own_claim = delete(a, Some(&tenant1), h1).await;
    assert!(matches!(own_claim, Ok(Deleted { claims: 1, blob_removed: false })), "{own_claim:?}");
    log.push(outcome(own_claim));
    log.push(format!("h1 stored: {}", b.runtime.exists(&h1).await.expect("exists")));
    let assigned_to = delete(b, None, h2).await;
    assert!(matches!(assigned_to, Err(GatewayError::PolicyDeleteRefused(DeleteRefused::AssignedTo { tenants: 1, .. }))), "{assigned_to:?}");
    log.push(outcome(assigned_to));
    log.push(outcome(delete(a, None, stock).await));
    // The operator's delete takes every claim and the blob.
    let everywhere = delete(a, None, h1).await;
    assert!(matches!(everywhere, Ok(Deleted { claims: 1, blob_removed: true })), "{everywhere:?}");
    log.push(outcome(everywhere));
    log.push(format!("h1 stored: {} {}", a.runtime.exists(&h1).await.expect("exists"), b.runtime.exists(&h1).await.expect("exists")));
    log.push(format!("t2 holds {}", b.runtime.blobs().list(t2).await.expect("list").len()));
    log.push(outcome(delete(b, None, h1).await));
    log.push(outcome(delete(b, Some(&tenant2), h1).await));
    // t1 holds only h2 now: room for one more.
    log.push(outcome(b.runtime.upload_for(t1, v3).await));
    log.push(format!("h3 stored: {}", a.runtime.exists(&h3).await.expect("exists")));
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_quota_and_delete_rules_answer_the_same_on_both_stores() {
    let Some(server) = Server::start() else { return };
    let limits = PolicyLimits { max_uploads_per_tenant: 2, ..PolicyLimits::default() };
    let one_store = Store::temporary().expect("store");
    let (ea, eb) = (Sandbox::with_blobs(limits.clone(), PolicyBlobs::embedded(one_store.clone())), Sandbox::with_blobs(limits.clone(), PolicyBlobs::embedded(one_store)));
    let embedded = upload_script(&ea, &eb).await;
    let (sa, sb) = (shared_replica(&replica_pool(&server).await, limits.clone()), shared_replica(&replica_pool(&server).await, limits));
    let shared = upload_script(&sa, &sb).await;
    assert_eq!(shared, embedded);
    // A deleted tenant's claims go with it (embedded: purged with its other records).
    assert_eq!(sa.runtime.blobs().forget_owner("t1#01").await.expect("forget"), 2);
    assert!(sb.runtime.blobs().list(Owner::Tenant("t1#01")).await.expect("list").is_empty());
}

/// One tenant uploading through two replicas at once, with room for one more upload:
/// exactly one is stored. Each replica's own check passed (neither saw the other's
/// upload); the quota is checked again under the tenant's lock in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_through_two_replicas_at_once_cannot_pass_the_quota() {
    let Some(server) = Server::start() else { return };
    let limits = PolicyLimits { max_uploads_per_tenant: 1, ..PolicyLimits::default() };
    let (a, b) = (shared_replica(&replica_pool(&server).await, limits.clone()), shared_replica(&replica_pool(&server).await, limits));
    let owner = Owner::Tenant("racer#01");
    let (v1, v2) = (default_variant(21), default_variant(22));
    let (from_a, from_b) = tokio::join!(a.runtime.upload_for(owner, v1.clone()), b.runtime.upload_for(owner, v2.clone()));
    let refused = [&from_a, &from_b].iter().filter(|r| matches!(r, Err(PolicyError::UploadQuota(QuotaExceeded::Uploads { held: 1, limit: 1, .. })))).count();
    assert_eq!((from_a.is_ok() as u8 + from_b.is_ok() as u8, refused), (1, 1), "{from_a:?} {from_b:?}");
    let held = a.runtime.blobs().list(owner).await.expect("list");
    assert_eq!(held.len(), 1);
    let stored = [a.runtime.exists(&PolicyHash::of(&v1)).await.expect("exists"), a.runtime.exists(&PolicyHash::of(&v2)).await.expect("exists")];
    assert_eq!(stored.iter().filter(|s| **s).count(), 1, "the refused upload's wasm is not stored: {stored:?}");
    let (loser, refused_wasm) = if from_a.is_err() { (&a, &v1) } else { (&b, &v2) };
    assert!(loser.store.compiled.get(PolicyHash::of(refused_wasm).to_string()).expect("read").is_none(), "nor its compiled artifact");
}

/// A tenant assigning a policy on replica A while its only uploader deletes it on replica
/// B, round after round: either the assignment is refused (the blob went first) or the
/// blob stays (the delete saw the assignment). Both take the blob's lock in the database,
/// and the delete reads the tenants from the database under it: B's cache may not have
/// heard of A's assignment yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_racing_a_delete_on_another_replica_never_runs_a_missing_policy() {
    let Some(server) = Server::start() else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let (a, b) = (shared_gateway(&server, dir_a.path()).await, shared_gateway(&server, dir_b.path()).await);
    let uploader = a.tenants.create(tenant("uploader", "", None)).await.expect("create");
    let runner = a.tenants.create(tenant("runner", "", None)).await.expect("create");
    for id in ["uploader", "runner"] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while b.tenants.get(id).is_none() {
            assert!(std::time::Instant::now() < deadline, "b never heard of {id}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let limits = a.policies.limits().clone();
    let (mut kept, mut refused) = (0, 0);
    for round in 0..8 {
        // Stored without compiling: each round needs a fresh blob, not a compile.
        let wasm = default_variant(100 + round);
        let hash = PolicyHash::of(&wasm);
        a.policies.blobs().store(Owner::Tenant(uploader.storage_id()), &wasm, &limits).await.expect("upload");
        let assign = tollgate::server::tenant_api::assign_policy(&a, &runner, tollgate::server::tenant_api::AssignPolicy { hash: hash.to_string(), config: None });
        let delete = tollgate::policy_deletion::delete_for_tenant(&b, &uploader, hash);
        let (assigned, deleted) = tokio::join!(assign, delete);
        let stored = a.policies.exists(&hash).await.expect("exists");
        match assigned {
            Ok(t) => {
                assert_eq!(t.policy_hash(), Some(hash));
                assert!(stored, "round {round}: the runner runs {hash}, which the delete removed ({deleted:?})");
                kept += 1;
            }
            Err(GatewayError::NotFound(_)) => {
                assert!(matches!(deleted, Ok(Deleted { claims: 1, blob_removed: true })), "round {round}: {deleted:?}");
                refused += 1;
            }
            Err(e) => panic!("round {round}: {e}"),
        }
        deleted.expect("the uploader's claim is dropped either way");
    }
    assert_eq!(kept + refused, 8);
}
