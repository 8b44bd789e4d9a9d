//! The vault on PostgreSQL, shared by several replicas: one script through the one
//! interface the gateway uses ([`Vault`]) answers the same on the embedded store and on
//! PostgreSQL; a credential one replica writes another opens; a replica with the wrong
//! master key, or none, is refused at start; rotations from several replicas racing first
//! credentials leave every data key under one master key; and the database holds no
//! plaintext and no key. Each test runs its own throwaway server on loopback (skipped
//! without PostgreSQL installed, unless `TOLLGATE_REQUIRE_PG=1`).

use std::sync::Arc;

use tollgate::sealing::{Key, MasterKeys, SealError, Vault};
use tollgate::store::TenantKey;
use tollgate::Secret;
use tollgate_tests::postgres::Server;

async fn migrated(server: &Server) -> tollgate::postgres::Pool {
    let pool = tollgate::postgres::connect(&server.url()).expect("pool");
    tollgate::postgres::migrate(&pool).await.expect("migrate");
    pool
}

fn key(digit: &str) -> Key {
    Key::parse(&digit.repeat(32)).expect("key")
}

fn keys(primary: &Key, previous: Option<&Key>) -> MasterKeys {
    MasterKeys { primary: primary.clone(), previous: previous.cloned(), file: None }
}

/// Where a vault keeps its bytes; each [`Store::replica`] is another process on it.
enum Store {
    Embedded(tollgate::Store),
    Shared(String),
}

impl Store {
    /// Another process on this store: embedded, another vault over the same sled
    /// database; shared, another replica with its own pool on the same server.
    async fn replica(&self, keys: MasterKeys) -> Result<Vault, SealError> {
        match self {
            Store::Embedded(store) => Vault::with_keys(store.clone(), keys),
            Store::Shared(url) => Vault::shared(tollgate::postgres::connect(url).expect("pool"), keys).await,
        }
    }

    /// What a tenant deletion does after the shred: the embedded store purges every
    /// record of the tenant; the shared one deletes its vault rows.
    async fn purge(&self, vault: &Vault, tenant: &str) {
        vault.forget_tenant(tenant).await.expect("forget");
        if let Store::Embedded(store) = self {
            store.purge_tenant(&TenantKey::of(tenant)).expect("purge");
        }
    }
}

fn outcome<T>(result: Result<T, SealError>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => format!("error: {e}"),
    }
}

async fn opened(vault: &Vault, tenant: &str, name: &str) -> String {
    match vault.open(tenant, name).await {
        Ok((provider, secret)) => format!("{provider} {}", secret.expose()),
        Err(SealError::NotFound(name)) => format!("not found: {name}"),
        Err(SealError::Tampered) => "tampered".into(),
        Err(e) => format!("error: {e}"),
    }
}

async fn listed(vault: &Vault, tenant: &str) -> String {
    let names: Vec<String> = vault.list(tenant).await.expect("list").into_iter().map(|c| format!("{}={}", c.name, c.provider)).collect();
    names.join(",")
}

/// The script both stores run; returns what each step answered.
async fn script(store: &Store) -> Vec<String> {
    let (k1, k2, k3) = (key("11"), key("22"), key("33"));
    let mut log = Vec::new();
    let a = store.replica(keys(&k1, None)).await.expect("replica a");
    for (tenant, name, provider, secret) in [
        ("alice#1", "main", "openai", "sk-canary-alice-main"),
        ("alice#1", "backup", "anthropic", "sk-canary-alice-backup"),
        ("bob#1", "main", "openai", "sk-canary-bob-main"),
    ] {
        let meta = a.put(tenant, name, provider, &Secret::new(secret.into())).await.expect("put");
        log.push(format!("put {tenant} {}={}", meta.name, meta.provider));
    }
    // Tenants are isolated: same names, own secrets; no reach into the other's names.
    log.push(format!("open alice main: {}", opened(&a, "alice#1", "main").await));
    log.push(format!("open bob main: {}", opened(&a, "bob#1", "main").await));
    log.push(format!("open bob backup: {}", opened(&a, "bob#1", "backup").await));
    log.push(format!("list alice: {}", listed(&a, "alice#1").await));
    log.push(format!("list bob: {}", listed(&a, "bob#1").await));
    log.push(format!("list nobody: {}", listed(&a, "nobody#1").await));

    // Another process opens what the first wrote, and the first what it writes.
    let b = store.replica(keys(&k1, None)).await.expect("replica b");
    log.push(format!("b opens alice main: {}", opened(&b, "alice#1", "main").await));
    b.put("carol#1", "main", "openai", &Secret::new("sk-canary-carol".into())).await.expect("put carol");
    log.push(format!("a opens carol main: {}", opened(&a, "carol#1", "main").await));

    // Delete and replace.
    log.push(format!("delete alice backup: {:?}", a.delete("alice#1", "backup").await.expect("delete")));
    log.push(format!("delete alice backup again: {:?}", a.delete("alice#1", "backup").await.expect("delete")));
    log.push(format!("b opens alice backup: {}", opened(&b, "alice#1", "backup").await));
    b.put("alice#1", "main", "openai", &Secret::new("sk-canary-alice-main-2".into())).await.expect("replace");
    log.push(format!("a opens replaced alice main: {}", opened(&a, "alice#1", "main").await));
    log.push(format!("list alice after: {}", listed(&a, "alice#1").await));

    // A key that wraps none of the data keys is refused at start.
    log.push(format!("start with k3: {}", outcome(store.replica(keys(&k3, None)).await)));

    // Rotation, as a rollout: a process with the new key and the old one as previous
    // re-wraps every data key; then the new key alone opens everything, the old one alone
    // is refused, and a process still holding only the old key can no longer open.
    let rotating = store.replica(keys(&k2, Some(&k1))).await.expect("rotating replica");
    log.push(format!("rotate to k2: {}", rotating.rotate(k2.clone()).await.expect("rotate")));
    log.push(format!("rotating opens bob main: {}", opened(&rotating, "bob#1", "main").await));
    let after = store.replica(keys(&k2, None)).await.expect("k2 alone");
    log.push(format!("k2 opens alice main: {}", opened(&after, "alice#1", "main").await));
    log.push(format!("k2 opens carol main: {}", opened(&after, "carol#1", "main").await));
    log.push(format!("stale k1 opens alice main: {}", opened(&a, "alice#1", "main").await));
    log.push(format!("start with k1: {}", outcome(store.replica(keys(&k1, None)).await)));

    // Shred: the tenant's credentials stay listed but no longer open; the neighbour's do.
    after.shred("bob#1").await.expect("shred");
    log.push(format!("shredded bob main: {}", opened(&after, "bob#1", "main").await));
    log.push(format!("list shredded bob: {}", listed(&after, "bob#1").await));
    log.push(format!("alice after bob's shred: {}", opened(&after, "alice#1", "main").await));
    store.purge(&after, "bob#1").await;
    log.push(format!("list purged bob: {}", listed(&after, "bob#1").await));
    log.push(format!("start with k2 after the shred: {}", outcome(store.replica(keys(&k2, None)).await)));
    log
}

/// The same script against the embedded store and PostgreSQL answers the same.
#[tokio::test]
async fn postgres_and_the_embedded_store_agree() {
    let Some(server) = Server::start() else { return };
    drop(migrated(&server).await);
    let pg = script(&Store::Shared(server.url())).await;
    let sled = script(&Store::Embedded(tollgate::Store::temporary().expect("store"))).await;
    assert_eq!(pg, sled);
    // The script means something: isolation, refusals and the rotation all showed.
    for expected in [
        "open bob main: openai sk-canary-bob-main",
        "open bob backup: not found: backup",
        "b opens alice main: openai sk-canary-alice-main",
        "a opens carol main: openai sk-canary-carol",
        "rotate to k2: 3",
        "stale k1 opens alice main: tampered",
        "shredded bob main: tampered",
        "list purged bob: ",
        "alice after bob's shred: openai sk-canary-alice-main-2",
    ] {
        assert!(pg.iter().any(|line| line == expected), "missing {expected:?} in {pg:#?}");
    }
    let refused = format!("start with k3: error: master key {} does not open the store's data keys", key("33").fingerprint());
    assert!(pg.iter().any(|line| line.starts_with(&refused)), "{pg:#?}");
    assert!(pg.iter().any(|line| line.starts_with(&format!("start with k1: error: master key {} does not open", key("11").fingerprint()))), "{pg:#?}");
}

/// A replica never generates a master key on the shared store, and never starts with
/// one that is not the store's, even before any data key exists.
#[tokio::test]
async fn a_replica_needs_the_stores_master_key_from_the_environment() {
    let Some(server) = Server::start() else { return };
    let pool = migrated(&server).await;
    assert!(matches!(MasterKeys::from_env(None, None), Err(SealError::MasterKeyRequired)));
    // Keys from a (generated) key file are refused.
    let dir = tempfile::tempdir().expect("dir");
    let from_file = tollgate::sealing::load_master_keys(None, None, dir.path()).expect("key file");
    assert!(matches!(Vault::shared(pool.clone(), from_file).await, Err(SealError::MasterKeyRequired)));
    // The first replica on an empty store seals the check value under its key; another
    // key is refused before any tenant has a data key.
    let first = Vault::shared(pool.clone(), MasterKeys::from_env(Some(&"11".repeat(32)), None).expect("keys")).await.expect("first replica");
    match Vault::shared(pool.clone(), keys(&key("44"), None)).await {
        Err(SealError::WrongMasterKey { fingerprint }) => assert_eq!(fingerprint, key("44").fingerprint()),
        other => panic!("expected WrongMasterKey, got {}", outcome(other)),
    }
    // A rotation to a key this replica was not started with would strand the others.
    first.put("t#1", "main", "openai", &Secret::new("sk-canary-t".into())).await.expect("put");
    assert!(matches!(first.rotate(key("55")).await, Err(SealError::RotationKeyNotDeployed { .. })));
    assert_eq!(opened(&first, "t#1", "main").await, "openai sk-canary-t");
    // A replica left on the old key after a rotation elsewhere refuses to wrap a new
    // tenant's key under it (it would be unreadable to the rest), and cannot open.
    let rotating = Vault::shared(pool.clone(), keys(&key("22"), Some(&key("11")))).await.expect("rotating replica");
    assert_eq!(rotating.rotate(key("22")).await.expect("rotate"), 1);
    assert!(matches!(first.put("u#1", "main", "openai", &Secret::new("sk-canary-u".into())).await, Err(SealError::WrongMasterKey { .. })));
    assert_eq!(opened(&first, "t#1", "main").await, "tampered");
    assert_eq!(opened(&rotating, "t#1", "main").await, "openai sk-canary-t");
}

/// Ciphertext stays bound to its tenant and name: bytes copied to another row fail to
/// open, as on the embedded store.
#[tokio::test]
async fn sealed_bytes_moved_to_another_row_fail_to_open() {
    let Some(server) = Server::start() else { return };
    let pool = migrated(&server).await;
    let vault = Vault::shared(pool.clone(), keys(&key("11"), None)).await.expect("vault");
    vault.put("a#1", "main", "openai", &Secret::new("sk-canary-a".into())).await.expect("put a");
    vault.put("b#1", "main", "openai", &Secret::new("sk-canary-b".into())).await.expect("put b");
    vault.put("a#1", "other", "openai", &Secret::new("sk-canary-other".into())).await.expect("put other");
    let client = pool.get().await.expect("client");
    let copy = "UPDATE credentials SET sealed = (SELECT sealed FROM credentials WHERE tenant_id = 'a#1' AND name = 'main') WHERE tenant_id = $1 AND name = $2";
    client.execute(copy, &[&"b#1", &"main"]).await.expect("copy to b");
    client.execute(copy, &[&"a#1", &"other"]).await.expect("copy to other");
    assert_eq!(opened(&vault, "b#1", "main").await, "tampered");
    assert_eq!(opened(&vault, "a#1", "other").await, "tampered");
    // Another tenant's data key does not open it either.
    client.execute("UPDATE data_keys SET sealed = (SELECT sealed FROM data_keys WHERE tenant_id = 'a#1') WHERE tenant_id = 'b#1'", &[]).await.expect("copy key");
    assert_eq!(opened(&vault, "b#1", "main").await, "tampered");
    assert_eq!(opened(&vault, "a#1", "main").await, "openai sk-canary-a");
}

/// Replicas holding the two keys in either order rotate back and forth while others
/// create tenants' first data keys: afterwards exactly one of the keys alone starts, and
/// it opens every credential, so no data key was wrapped under a key a rotation retired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_racing_first_credentials_across_replicas_leave_one_master_key() {
    let Some(server) = Server::start() else { return };
    drop(migrated(&server).await);
    let (k1, k2) = (key("11"), key("22"));
    let replica = |primary: &Key, previous: &Key| {
        let pool = tollgate::postgres::connect(&server.url()).expect("pool");
        let keys = keys(primary, Some(previous));
        async move { Arc::new(Vault::shared(pool, keys).await.expect("replica")) }
    };
    let replicas = [replica(&k1, &k2).await, replica(&k2, &k1).await, replica(&k1, &k2).await, replica(&k2, &k1).await];
    let primaries = [k1.clone(), k2.clone(), k1.clone(), k2.clone()];
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (vault, primary)) in replicas.iter().zip(&primaries).enumerate().take(2) {
        let (vault, primary) = (vault.clone(), primary.clone());
        tasks.spawn(async move {
            let mut done = 0;
            for _ in 0..8 {
                match vault.rotate(primary.clone()).await {
                    Ok(_) => done += 1,
                    Err(SealError::RotationInProgress) => {}
                    Err(e) => return Err(format!("rotator {i}: {e}")),
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Ok(done)
        });
    }
    for (writer, vault) in replicas.iter().enumerate() {
        let vault = vault.clone();
        tasks.spawn(async move {
            for i in 0..25 {
                let tenant = format!("t{writer}-{i}#1");
                vault.put(&tenant, "main", "openai", &Secret::new(format!("sk-canary-{tenant}"))).await.map_err(|e| format!("{tenant}: {e}"))?;
            }
            Ok(0)
        });
    }
    let mut rotations = 0;
    while let Some(done) = tasks.join_next().await {
        rotations += done.expect("task").unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(rotations >= 2, "only {rotations} rotations ran");
    let alone_k1 = Vault::shared(tollgate::postgres::connect(&server.url()).expect("pool"), keys(&k1, None)).await;
    let alone_k2 = Vault::shared(tollgate::postgres::connect(&server.url()).expect("pool"), keys(&k2, None)).await;
    let survivor = match (alone_k1, alone_k2) {
        (Ok(v), Err(SealError::WrongMasterKey { .. })) | (Err(SealError::WrongMasterKey { .. }), Ok(v)) => v,
        (a, b) => panic!("exactly one key must start: k1 {}, k2 {}", outcome(a), outcome(b)),
    };
    for writer in 0..4 {
        for i in 0..25 {
            let tenant = format!("t{writer}-{i}#1");
            assert_eq!(opened(&survivor, &tenant, "main").await, format!("openai sk-canary-{tenant}"));
        }
    }
}

/// The tables hold ciphertext only: no secret, no master key, in raw bytes or as text.
#[tokio::test]
async fn the_database_never_holds_a_plaintext_secret_or_a_key() {
    let Some(server) = Server::start() else { return };
    let pool = migrated(&server).await;
    let (k1, k2) = (key("11"), key("22"));
    let secrets = ["sk-canary-plain-1", "sk-canary-plain-2"];
    let vault = Vault::shared(pool.clone(), keys(&k2, Some(&k1))).await.expect("vault");
    for (i, secret) in secrets.iter().enumerate() {
        vault.put(&format!("t{i}#1"), "main", "openai", &Secret::new((*secret).into())).await.expect("put");
    }
    vault.rotate(k2.clone()).await.expect("rotate");
    let client = pool.get().await.expect("client");
    let sealed: Vec<Vec<u8>> = client.query("SELECT sealed FROM credentials UNION ALL SELECT sealed FROM data_keys", &[]).await.expect("rows").iter().map(|r| r.get(0)).collect();
    assert_eq!(sealed.len(), 4);
    let text: Vec<String> = client
        .query("SELECT c::text FROM credentials c UNION ALL SELECT d::text FROM data_keys d UNION ALL SELECT m::text FROM vault_meta m", &[])
        .await
        .expect("text")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let contains = |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    let mut needles: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
    needles.push(vec![0x11; 32]);
    needles.push(vec![0x22; 32]);
    for needle in &needles {
        for bytes in &sealed {
            assert!(!contains(bytes, needle), "a sealed column holds {:?}", String::from_utf8_lossy(needle));
        }
        for row in &text {
            assert!(!row.contains(&hex(needle)) && !contains(row.as_bytes(), needle), "a row holds {:?}: {row}", String::from_utf8_lossy(needle));
        }
    }
    assert_eq!(opened(&vault, "t0#1", "main").await, "openai sk-canary-plain-1");
}

/// The change feed's rows since `after`, as `kind key`; returns them and the new position.
async fn feed_rows(pool: &tollgate::postgres::Pool, after: i64) -> (Vec<String>, i64) {
    let client = pool.get().await.expect("client");
    let rows = client.query("SELECT id, kind, key FROM changes WHERE id > $1 ORDER BY id", &[&after]).await.expect("changes");
    let last = rows.last().map(|r| r.get(0)).unwrap_or(after);
    (rows.iter().map(|r| format!("{} {}", r.get::<_, String>(1), r.get::<_, String>(2))).collect(), last)
}

/// Every write to credentials and data keys is on the change feed, whoever makes it: the
/// gateway's puts, deletes, shreds, purges and rotations, and an operator's SQL by hand.
#[tokio::test]
async fn every_vault_write_is_on_the_change_feed() {
    let Some(server) = Server::start() else { return };
    let pool = migrated(&server).await;
    let (k1, k2) = (key("11"), key("22"));
    let vault = Vault::shared(pool.clone(), keys(&k2, Some(&k1))).await.expect("vault");
    let (_, mut at) = feed_rows(&pool, 0).await;
    let mut step = async |what: &str| {
        let (rows, last) = feed_rows(&pool, at).await;
        at = last;
        format!("{what}: {}", rows.join(", "))
    };
    let secret = || Secret::new("sk-canary-feed".into());
    let mut log = Vec::new();
    vault.put("t#1", "main", "openai", &secret()).await.expect("put");
    log.push(step("first put").await);
    vault.put("t#1", "main", "openai", &secret()).await.expect("replace");
    log.push(step("replace").await);
    vault.open("t#1", "main").await.expect("open");
    vault.list("t#1").await.expect("list");
    log.push(step("open and list").await);
    vault.delete("t#1", "main").await.expect("delete");
    log.push(step("delete").await);
    vault.shred("t#1").await.expect("shred");
    log.push(step("shred").await);
    vault.put("u#1", "main", "openai", &secret()).await.expect("put u");
    vault.put("u#1", "backup", "openai", &secret()).await.expect("put u backup");
    step("puts").await;
    vault.forget_tenant("u#1").await.expect("forget");
    log.push(step("forget").await);
    vault.put("v#1", "main", "openai", &secret()).await.expect("put v");
    step("put").await;
    vault.rotate(k2.clone()).await.expect("rotate");
    log.push(step("rotate").await);
    pool.get().await.expect("client").execute("DELETE FROM data_keys WHERE tenant_id = 'v#1'", &[]).await.expect("shred by hand");
    log.push(step("shred by hand").await);
    assert_eq!(
        log,
        [
            "first put: data_key t#1, credential t#1",
            "replace: credential t#1",
            "open and list: ",
            "delete: credential t#1",
            "shred: data_key t#1",
            "forget: data_key u#1, credential u#1, credential u#1",
            "rotate: vault ",
            "shred by hand: data_key v#1",
        ]
    );
}

/// Two replicas following the feed: the second opens a credential it has read before
/// without the database (it serves while the vault's tables are unreachable), and drops
/// it within a second of the first replacing, deleting or shredding it, or rotating the
/// master key away from one it holds; so does an operator's shred by hand. A replica's own
/// writes take effect on it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_credentials_from_its_cache_and_drops_them_when_another_writes() {
    use std::time::{Duration, Instant};
    use tollgate::postgres::changes::{Change, ChangeFeed};
    let Some(server) = Server::start() else { return };
    let pool = migrated(&server).await;
    let (k1, k2) = (key("11"), key("22"));
    let replica = async |keys: MasterKeys| {
        let pool = tollgate::postgres::connect(&server.url()).expect("pool");
        let vault = Vault::shared(pool.clone(), keys).await.expect("replica");
        let feed = ChangeFeed::start(&server.url(), pool).await.expect("feed");
        vault.follow(feed.subscribe());
        (vault, feed)
    };
    // b first: the store is sealed under k1, which a holds as its previous key (a
    // rollout to k2 under way).
    let (b, feed_b) = replica(keys(&k1, None)).await;
    let (a, _feed_a) = replica(keys(&k2, Some(&k1))).await;
    // Within a second of `change`, `b` answers `expected`.
    let within_a_second = async |what: &str, expected: &str| {
        let started = Instant::now();
        loop {
            let now = opened(&b, "t#1", "main").await;
            if now == expected {
                return format!("{what}: {now}");
            }
            assert!(started.elapsed() < Duration::from_secs(1), "{what}: b still answers {now:?} after a second, not {expected:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let mut b_hears = feed_b.subscribe();
    a.put("t#1", "main", "openai", &Secret::new("sk-canary-first".into())).await.expect("put");
    // Once b has heard of the put (which evicts t#1 there), what b reads next stays.
    while b_hears.recv().await.expect("feed") != (Change::Row { kind: "credential".into(), key: "t#1".into() }) {}
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(opened(&b, "t#1", "main").await, "openai sk-canary-first");
    assert_eq!(listed(&b, "t#1").await, "main=openai");

    // Served from memory: with the vault's tables out of reach, b still opens and lists
    // what it read; a, which never opened it, cannot.
    let client = pool.get().await.expect("client");
    client.batch_execute("ALTER TABLE credentials RENAME TO credentials_away; ALTER TABLE data_keys RENAME TO data_keys_away").await.expect("hide");
    assert_eq!(opened(&b, "t#1", "main").await, "openai sk-canary-first");
    assert_eq!(listed(&b, "t#1").await, "main=openai");
    assert!(opened(&a, "t#1", "main").await.starts_with("error: "), "a reads the database");
    client.batch_execute("ALTER TABLE credentials_away RENAME TO credentials; ALTER TABLE data_keys_away RENAME TO data_keys").await.expect("restore");

    let mut log = Vec::new();
    a.put("t#1", "main", "openai", &Secret::new("sk-canary-second".into())).await.expect("replace");
    log.push(within_a_second("replaced", "openai sk-canary-second").await);
    a.put("t#1", "backup", "anthropic", &Secret::new("sk-canary-backup".into())).await.expect("put backup");
    let started = Instant::now();
    while listed(&b, "t#1").await != "backup=anthropic,main=openai" {
        assert!(started.elapsed() < Duration::from_secs(1), "b's listing is stale after a second");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.delete("t#1", "main").await.expect("delete");
    log.push(within_a_second("deleted", "not found: main").await);
    a.put("t#1", "main", "openai", &Secret::new("sk-canary-third".into())).await.expect("put again");
    log.push(within_a_second("put again", "openai sk-canary-third").await);
    a.shred("t#1").await.expect("shred");
    log.push(within_a_second("shredded", "tampered").await);
    a.forget_tenant("t#1").await.expect("forget");
    a.put("t#1", "main", "openai", &Secret::new("sk-canary-fourth".into())).await.expect("new data key");
    log.push(within_a_second("new data key", "openai sk-canary-fourth").await);
    // b holds only the old master key: once a re-wraps every data key under the new one,
    // b must not keep opening with a data key it could no longer unwrap.
    a.rotate(k2.clone()).await.expect("rotate");
    log.push(within_a_second("rotated away", "tampered").await);
    // An operator's shred by hand reaches a replica that can open (a) as well.
    assert_eq!(opened(&a, "t#1", "main").await, "openai sk-canary-fourth");
    client.execute("DELETE FROM data_keys WHERE tenant_id = 't#1'", &[]).await.expect("shred by hand");
    let started = Instant::now();
    while opened(&a, "t#1", "main").await != "tampered" {
        assert!(started.elapsed() < Duration::from_secs(1), "a still opens a credential shredded by hand after a second");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A replica's own writes take effect on it at once, without the feed: c's feed is
    // silent, so only its own writes evict what it cached.
    let c = Vault::shared(tollgate::postgres::connect(&server.url()).expect("pool"), keys(&k2, None)).await.expect("replica c");
    let (_silent, nothing) = tokio::sync::broadcast::channel(1);
    c.follow(nothing);
    c.forget_tenant("t#1").await.expect("forget");
    c.put("t#1", "main", "openai", &Secret::new("sk-canary-fifth".into())).await.expect("put");
    let mut own = vec![opened(&c, "t#1", "main").await, listed(&c, "t#1").await];
    c.put("t#1", "main", "openai", &Secret::new("sk-canary-sixth".into())).await.expect("replace");
    own.push(opened(&c, "t#1", "main").await);
    c.put("t#1", "backup", "openai", &Secret::new("sk-canary-backup".into())).await.expect("put backup");
    own.push(listed(&c, "t#1").await);
    c.delete("t#1", "main").await.expect("delete");
    own.push(opened(&c, "t#1", "main").await);
    own.push(opened(&c, "t#1", "backup").await);
    c.shred("t#1").await.expect("shred");
    own.push(opened(&c, "t#1", "backup").await);
    assert_eq!(own, ["openai sk-canary-fifth", "main=openai", "openai sk-canary-sixth", "backup=openai,main=openai", "not found: main", "openai sk-canary-backup", "tampered"]);
    assert_eq!(
        log,
        [
            "replaced: openai sk-canary-second",
            "deleted: not found: main",
            "put again: openai sk-canary-third",
            "shredded: tampered",
            "new data key: openai sk-canary-fourth",
            "rotated away: tampered",
        ]
    );
}
