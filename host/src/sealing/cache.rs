//! Each process's cache of what the vault's request-path reads need, so a chat opens its
//! credential without a store read: on the shared store without a database round trip,
//! on the embedded one without two sled reads and two decodes. Per tenant (storage id):
//! its unwrapped data key, the sealed records of the credentials opened, and its listing
//! (what a policy's `credentials::list` and `/v1/models` read).
//!
//! What it holds is safe to hold: credentials stay sealed (ciphertext, opened per request,
//! so a plaintext secret only ever lives in that request's [`crate::Secret`]), and the data
//! key is a [`Key`], zeroized when dropped (evicted, expired or pushed out). Misses are not
//! cached, so a credential put on another replica is found at once.
//!
//! Kept honest three ways:
//! - this process's own writes evict their tenant before they return ([`VaultCache::evict`]);
//! - on the shared store, other replicas' writes arrive on the change feed within a second,
//!   as rows the triggers of `migrations/0008_credential_changes.sql` emit
//!   ([`VaultCache::follow`]), and a stretch of the feed missed drops everything;
//! - every entry expires after [`TTL`], should the feed stall.
//!
//! A read that raced a write is not kept: every eviction moves a generation on, and a fill
//! whose read began at an older generation is dropped. A shared vault's cache keeps
//! nothing until it follows a feed, since nothing would evict what other replicas change;
//! an embedded vault's keeps from the start ([`VaultCache::in_process`]): no other process
//! writes its store.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::broadcast;

use crate::postgres::changes::Change;
use crate::sealing::{CredentialMeta, CredentialRecord, Key};

/// How long an entry is trusted without hearing of a change: the backstop should the
/// change feed stall (while it runs, a change lands within a second). As for tokens.
pub const TTL: Duration = Duration::from_secs(30);
/// Tenants a replica caches; past it the least recently used goes. Bounds memory (a few
/// hundred bytes a tenant) whatever the number of tenants.
pub const MAX_TENANTS: usize = 10_000;
/// Credentials kept per tenant, and the longest listing kept: a tenant holding more is
/// served, its reads beyond these just go to the database.
pub const MAX_CREDENTIALS_PER_TENANT: usize = 256;

/// Feed kinds (see the migration): a tenant's credential, a tenant's data key (the key of
/// both is its storage id), and the whole vault.
pub const CREDENTIAL_CHANGE: &str = "credential";
/// See [`CREDENTIAL_CHANGE`].
pub const DATA_KEY_CHANGE: &str = "data_key";
/// See [`CREDENTIAL_CHANGE`].
pub const VAULT_CHANGE: &str = "vault";

/// The cache; see the module docs.
pub(crate) struct VaultCache {
    ttl: Duration,
    state: Mutex<State>,
    /// Opens and listings served from memory, and those that went to the database (for
    /// `/metrics`: a hit rate that drops says the feed is evicting more than it should).
    hits: AtomicU64,
    misses: AtomicU64,
}

struct State {
    /// Whether a change feed is followed; nothing is kept while it is not.
    following: bool,
    /// Moved on by every eviction.
    generation: u64,
    tenants: LruCache<String, Entry>,
}

/// What is cached of one tenant.
struct Entry {
    /// When the oldest read in it began: the entry expires [`TTL`] after.
    read_at: Instant,
    data_key: Option<Key>,
    credentials: HashMap<String, CredentialRecord>,
    listing: Option<Vec<CredentialMeta>>,
}

/// Taken before a database read whose result may be kept: which generation it read at,
/// and when.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadStart {
    generation: u64,
    at: Instant,
}

impl VaultCache {
    /// An empty cache keeping up to `tenants` tenants for `ttl` each.
    pub(crate) fn new(ttl: Duration, tenants: NonZeroUsize) -> Self {
        Self { ttl, state: Mutex::new(State { following: false, generation: 0, tenants: LruCache::new(tenants) }), hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    /// The cache with the defaults above, keeping nothing until it follows a feed.
    pub(crate) fn standard() -> Self {
        Self::new(TTL, NonZeroUsize::new(MAX_TENANTS).unwrap_or(NonZeroUsize::MIN))
    }

    /// The cache of a store only this process writes, keeping from the start.
    pub(crate) fn in_process() -> Self {
        let cache = Self::standard();
        cache.set_following(true);
        cache
    }

    /// A credential's sealed record and its tenant's data key, if both are cached.
    pub(crate) fn credential(&self, tenant_id: &str, name: &str) -> Option<(CredentialRecord, Key)> {
        let found = self.state.lock().ok().and_then(|mut state| {
            let entry = state.fresh(tenant_id, self.ttl)?;
            Some((entry.credentials.get(name)?.clone(), entry.data_key.clone()?))
        });
        self.count(found.is_some());
        found
    }

    /// A tenant's credential listing, if cached.
    pub(crate) fn listing(&self, tenant_id: &str) -> Option<Vec<CredentialMeta>> {
        let found = self.state.lock().ok().and_then(|mut state| state.fresh(tenant_id, self.ttl)?.listing.clone());
        self.count(found.is_some());
        found
    }

    fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads served from memory and reads that went to the database, since start.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// Where a read begins; `None` when nothing it finds may be kept.
    pub(crate) fn read_start(&self) -> Option<ReadStart> {
        let state = self.state.lock().ok()?;
        state.following.then_some(ReadStart { generation: state.generation, at: Instant::now() })
    }

    /// Keeps what a read begun at `start` found: a credential and its tenant's data key.
    pub(crate) fn keep_credential(&self, start: ReadStart, tenant_id: &str, record: &CredentialRecord, data_key: &Key) {
        let Ok(mut state) = self.state.lock() else { return };
        let Some(entry) = state.entry_for(start, tenant_id, self.ttl) else { return };
        if entry.credentials.len() < MAX_CREDENTIALS_PER_TENANT || entry.credentials.contains_key(&record.name) {
            entry.credentials.insert(record.name.clone(), record.clone());
        }
        entry.data_key = Some(data_key.clone());
    }

    /// Keeps what a read begun at `start` found: a tenant's credential listing.
    pub(crate) fn keep_listing(&self, start: ReadStart, tenant_id: &str, listing: &[CredentialMeta]) {
        if listing.len() > MAX_CREDENTIALS_PER_TENANT {
            return;
        }
        let Ok(mut state) = self.state.lock() else { return };
        if let Some(entry) = state.entry_for(start, tenant_id, self.ttl) {
            entry.listing = Some(listing.to_vec());
        }
    }

    /// Forgets a tenant, and whatever reads of it are in flight.
    pub(crate) fn evict(&self, tenant_id: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.generation += 1;
            state.tenants.pop(tenant_id);
        }
    }

    /// Forgets everything, and whatever reads are in flight.
    pub(crate) fn clear(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.generation += 1;
            state.tenants.clear();
        }
    }

    fn set_following(&self, following: bool) {
        if let Ok(mut state) = self.state.lock() {
            state.following = following;
            state.generation += 1;
            state.tenants.clear();
        }
    }

    /// Starts caching, and evicts what the feed `changes` reports changed (all of it when
    /// the feed was missed). If the feed ends, the cache empties and stops keeping.
    pub(crate) fn follow(self: &Arc<Self>, mut changes: broadcast::Receiver<Change>) {
        use broadcast::error::RecvError;
        self.set_following(true);
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let change = changes.recv().await;
                let Some(cache) = cache.upgrade() else { return };
                match change {
                    Ok(Change::Row { kind, key }) if kind == CREDENTIAL_CHANGE || kind == DATA_KEY_CHANGE => cache.evict(&key),
                    Ok(Change::Row { kind, .. }) if kind == VAULT_CHANGE => cache.clear(),
                    Ok(Change::Row { .. }) => {}
                    Ok(Change::ReloadAll) | Err(RecvError::Lagged(_)) => cache.clear(),
                    Err(RecvError::Closed) => {
                        cache.set_following(false);
                        return;
                    }
                }
            }
        });
    }
}

impl State {
    /// The tenant's entry if it has not expired (an expired one is dropped).
    fn fresh(&mut self, tenant_id: &str, ttl: Duration) -> Option<&mut Entry> {
        if self.tenants.peek(tenant_id).is_some_and(|entry| entry.read_at.elapsed() >= ttl) {
            self.tenants.pop(tenant_id);
        }
        self.tenants.get_mut(tenant_id)
    }

    /// The entry a read begun at `start` may fill: `None` if the cache evicted anything
    /// since (what the read found may be older than the eviction) or is not following.
    fn entry_for(&mut self, start: ReadStart, tenant_id: &str, ttl: Duration) -> Option<&mut Entry> {
        if !self.following || self.generation != start.generation {
            return None;
        }
        if self.fresh(tenant_id, ttl).is_none() {
            let entry = Entry { read_at: start.at, data_key: None, credentials: HashMap::new(), listing: None };
            self.tenants.put(tenant_id.to_string(), entry);
        }
        self.tenants.get_mut(tenant_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealing::Sealed;

    type Outcome = Result<(), Box<dyn std::error::Error>>;

    fn record(name: &str, provider: &str) -> CredentialRecord {
        CredentialRecord { name: name.into(), provider: provider.into(), created_millis: 1, sealed: Sealed::from_bytes(1, &[7; 40]) }
    }

    fn provider_of(cache: &VaultCache, tenant: &str, name: &str) -> Option<String> {
        cache.credential(tenant, name).map(|(record, _)| record.provider)
    }

    /// A cache following a feed that the returned sender feeds.
    fn following(ttl: Duration, tenants: usize) -> (Arc<VaultCache>, broadcast::Sender<Change>) {
        let cache = Arc::new(VaultCache::new(ttl, NonZeroUsize::new(tenants).unwrap_or(NonZeroUsize::MIN)));
        let (send, receive) = broadcast::channel(16);
        cache.follow(receive);
        (cache, send)
    }

    fn keep(cache: &VaultCache, tenant: &str, name: &str, provider: &str) -> Outcome {
        let start = cache.read_start().ok_or("not following")?;
        cache.keep_credential(start, tenant, &record(name, provider), &Key::random());
        Ok(())
    }

    /// Gives the follower task a chance to apply what was sent.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn nothing_is_kept_until_a_feed_is_followed_or_after_it_ends() -> Outcome {
        let cache = Arc::new(VaultCache::standard());
        assert!(cache.read_start().is_none(), "not following: reads are not kept");
        let (send, receive) = broadcast::channel(16);
        cache.follow(receive);
        keep(&cache, "t#1", "main", "openai")?;
        assert_eq!(provider_of(&cache, "t#1", "main").as_deref(), Some("openai"));
        drop(send);
        settle().await;
        assert_eq!(provider_of(&cache, "t#1", "main"), None, "the feed ended: nothing could evict what others change");
        assert!(cache.read_start().is_none());
        Ok(())
    }

    #[tokio::test]
    async fn feed_rows_evict_their_tenant_and_a_missed_feed_everything() -> Outcome {
        let (cache, send) = following(TTL, 100);
        for tenant in ["a#1", "b#1"] {
            keep(&cache, tenant, "main", "openai")?;
        }
        let start = cache.read_start().ok_or("not following")?;
        cache.keep_listing(start, "a#1", &[CredentialMeta { name: "main".into(), provider: "openai".into(), created_millis: 1 }]);
        assert_eq!(cache.listing("a#1").map(|l| l.len()), Some(1));
        // Rows of other kinds, and of other tenants, leave it alone.
        send.send(Change::Row { kind: "token".into(), key: "a#1".into() })?;
        send.send(Change::Row { kind: CREDENTIAL_CHANGE.into(), key: "b#1".into() })?;
        settle().await;
        assert!(provider_of(&cache, "a#1", "main").is_some() && cache.listing("a#1").is_some());
        assert_eq!(provider_of(&cache, "b#1", "main"), None);
        send.send(Change::Row { kind: DATA_KEY_CHANGE.into(), key: "a#1".into() })?;
        settle().await;
        assert_eq!(provider_of(&cache, "a#1", "main"), None);
        assert_eq!(cache.listing("a#1"), None);
        for change in [Change::ReloadAll, Change::Row { kind: VAULT_CHANGE.into(), key: String::new() }] {
            keep(&cache, "a#1", "main", "openai")?;
            send.send(change)?;
            settle().await;
            assert_eq!(provider_of(&cache, "a#1", "main"), None);
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_read_that_raced_an_eviction_is_not_kept() -> Outcome {
        let (cache, _send) = following(TTL, 100);
        let start = cache.read_start().ok_or("not following")?;
        // A write lands (here or on another replica) while the read is in flight.
        cache.evict("t#1");
        cache.keep_credential(start, "t#1", &record("main", "stale"), &Key::random());
        assert_eq!(provider_of(&cache, "t#1", "main"), None);
        keep(&cache, "t#1", "main", "fresh")?;
        assert_eq!(provider_of(&cache, "t#1", "main").as_deref(), Some("fresh"));
        Ok(())
    }

    #[tokio::test]
    async fn hits_and_misses_are_counted() -> Outcome {
        let (cache, _send) = following(TTL, 100);
        assert_eq!(provider_of(&cache, "t#1", "main"), None);
        keep(&cache, "t#1", "main", "openai")?;
        assert!(provider_of(&cache, "t#1", "main").is_some() && provider_of(&cache, "t#1", "main").is_some());
        assert_eq!(cache.listing("t#1"), None, "no listing kept yet");
        assert_eq!(cache.counts(), (2, 2));
        Ok(())
    }

    #[tokio::test]
    async fn entries_expire() -> Outcome {
        let (cache, _send) = following(Duration::from_millis(50), 2);
        keep(&cache, "a#1", "main", "openai")?;
        assert!(provider_of(&cache, "a#1", "main").is_some());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(provider_of(&cache, "a#1", "main"), None);
        Ok(())
    }

    #[tokio::test]
    async fn the_cache_is_bounded() -> Outcome {
        let (cache, _send) = following(TTL, 2);
        for tenant in ["a#1", "b#1", "c#1"] {
            keep(&cache, tenant, "main", "openai")?;
        }
        assert_eq!(provider_of(&cache, "a#1", "main"), None, "the least recently used tenant went");
        assert!(provider_of(&cache, "c#1", "main").is_some());
        // A tenant's credentials are bounded too.
        for i in 0..MAX_CREDENTIALS_PER_TENANT + 5 {
            keep(&cache, "c#1", &format!("k{i}"), "openai")?;
        }
        assert!(provider_of(&cache, "c#1", "k0").is_some());
        assert_eq!(provider_of(&cache, "c#1", &format!("k{}", MAX_CREDENTIALS_PER_TENANT + 4)), None);
        Ok(())
    }
}
