//! Access tokens: random, shown once, stored as blake3 hashes. Lookup hashes the
//! presented token and reads by hash, so no comparison against stored secrets happens;
//! the operator token is compared in constant time.

use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::store::{decode, encode, Store, StoreError};

/// Prefix of tenant tokens, so leaked ones are recognisable in scanners.
pub const TOKEN_PREFIX: &str = "tg_";
/// Longest bearer token considered at all; longer ones are refused without hashing.
pub const MAX_TOKEN_BYTES: usize = 256;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Call `/v1/chat/completions` and `/v1/models`.
    Inference,
    /// Manage the tenant's own keys, policy and usage (and infer).
    Manage,
}

/// A stored token (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenRecord {
    /// Short id for listing and revoking (first 8 hex digits of the hash).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Scope.
    pub scope: Scope,
    /// Creation time.
    pub created_millis: u64,
    /// Limits of this token on top of its tenant's.
    #[serde(default)]
    pub rate_limits: crate::ratelimit::RateLimits,
    /// The tenant incarnation it was issued for: a token minted for a tenant that was
    /// deleted (even while it was being minted) never opens a tenant re-created under the
    /// same id. Empty for tenants and tokens from before incarnations.
    #[serde(default)]
    pub incarnation: String,
    /// The full hash in hex (the record's store key), set when the record is read: unique
    /// where the short `id` may collide, so rate-limit buckets are keyed by it. Not stored
    /// twice, not listed.
    #[serde(skip)]
    pub digest: String,
}

impl TokenRecord {
    /// Whether this token belongs to `tenant` as it is now (same id, same incarnation).
    pub fn belongs_to(&self, tenant: &crate::tenants::Tenant) -> bool {
        self.tenant_id == tenant.id && self.incarnation == tenant.incarnation
    }
}

fn hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// A fresh random token: `tg_` + 32 random bytes in URL-safe base64.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A fresh token for a tenant, its hash and its record.
fn new_record(tenant: &crate::tenants::Tenant, scope: Scope, rate_limits: crate::ratelimit::RateLimits) -> (String, [u8; 32], TokenRecord) {
    let token = generate();
    let digest = hash(&token);
    let record = TokenRecord {
        id: blake3::Hash::from_bytes(digest).to_hex()[..8].to_string(),
        tenant_id: tenant.id.clone(),
        scope,
        created_millis: crate::clock::unix_millis(),
        rate_limits,
        incarnation: tenant.incarnation.clone(),
        digest: blake3::Hash::from_bytes(digest).to_hex().to_string(),
    };
    (token, digest, record)
}

/// Issues a token for a tenant in the embedded store; returns the token (shown once) and
/// its record.
pub async fn issue(store: &Store, tenant: &crate::tenants::Tenant, scope: Scope, rate_limits: crate::ratelimit::RateLimits) -> Result<(String, TokenRecord), StoreError> {
    let (token, digest, record) = new_record(tenant, scope, rate_limits);
    store.tokens.insert(digest, encode(&record))?;
    store.flush().await?;
    Ok((token, record))
}

/// The record of a presented token, if it is valid.
pub fn lookup(store: &Store, token: &str) -> Result<Option<TokenRecord>, StoreError> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Ok(None);
    }
    let digest = hash(token);
    match store.tokens.get(digest)? {
        Some(bytes) => Ok(Some(TokenRecord { digest: blake3::Hash::from_bytes(digest).to_hex().to_string(), ..decode("tokens", &bytes)? })),
        None => Ok(None),
    }
}

/// A tenant's tokens.
pub fn list(store: &Store, tenant: &crate::tenants::Tenant) -> Result<Vec<TokenRecord>, StoreError> {
    let mut out = Vec::new();
    for item in store.tokens.iter() {
        let (_, value) = item?;
        let record: TokenRecord = decode("tokens", &value)?;
        if record.belongs_to(tenant) {
            out.push(record);
        }
    }
    Ok(out)
}

/// Revokes a tenant's token by id; `false` if none matched.
pub async fn revoke(store: &Store, tenant: &crate::tenants::Tenant, id: &str) -> Result<bool, StoreError> {
    let mut found = false;
    for item in store.tokens.iter() {
        let (key, value) = item?;
        let record: TokenRecord = decode("tokens", &value)?;
        if record.belongs_to(tenant) && record.id == id {
            store.tokens.remove(key)?;
            found = true;
        }
    }
    store.flush().await?;
    Ok(found)
}

/// Revokes every token of one tenant incarnation.
pub fn revoke_all(store: &Store, tenant: &crate::tenants::Tenant) -> Result<(), StoreError> {
    for item in store.tokens.iter() {
        let (key, value) = item?;
        if decode::<TokenRecord>("tokens", &value)?.belongs_to(tenant) {
            store.tokens.remove(key)?;
        }
    }
    Ok(())
}

/// How long a replica trusts a token it looked up in the shared store without hearing of a
/// change: the backstop should the change feed be down (a revocation reaches every replica
/// through the feed within a second while it is up).
const SHARED_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// Tokens a replica caches; past it the cache starts over (lookups refill it).
const SHARED_CACHE_ENTRIES: usize = 100_000;

type TokenCache = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], (TokenRecord, std::time::Instant)>>>;

/// The gateway's tokens: in the embedded store (the functions above), or in the shared
/// one with a per-replica cache of looked-up tokens that the change feed keeps honest.
#[derive(Clone)]
pub struct Tokens {
    authority: TokenAuthority,
}

#[derive(Clone)]
enum TokenAuthority {
    Embedded(Store),
    Shared { table: crate::postgres::tenants::PgTokens, cache: TokenCache },
}

impl Tokens {
    /// Over the embedded store.
    pub fn embedded(store: Store) -> Self {
        Self { authority: TokenAuthority::Embedded(store) }
    }

    /// Over the shared store.
    pub fn shared(table: crate::postgres::tenants::PgTokens) -> Self {
        Self { authority: TokenAuthority::Shared { table, cache: TokenCache::default() } }
    }

    /// Issues a token for a tenant; returns the token (shown once) and its record.
    pub async fn issue(&self, tenant: &crate::tenants::Tenant, scope: Scope, rate_limits: crate::ratelimit::RateLimits) -> Result<(String, TokenRecord), StoreError> {
        match &self.authority {
            TokenAuthority::Embedded(store) => issue(store, tenant, scope, rate_limits).await,
            TokenAuthority::Shared { table, .. } => {
                let (token, digest, record) = new_record(tenant, scope, rate_limits);
                table.insert(&digest, tenant.storage_id(), &record).await?;
                Ok((token, record))
            }
        }
    }

    /// The record of a presented token, if it is valid.
    pub async fn lookup(&self, token: &str) -> Result<Option<TokenRecord>, StoreError> {
        match &self.authority {
            TokenAuthority::Embedded(store) => lookup(store, token),
            TokenAuthority::Shared { table, cache } => {
                if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
                    return Ok(None);
                }
                let digest = hash(token);
                let cached = cache.lock().ok().and_then(|c| c.get(&digest).filter(|(_, at)| at.elapsed() < SHARED_CACHE_TTL).map(|(r, _)| r.clone()));
                if cached.is_some() {
                    return Ok(cached);
                }
                // Misses are not cached: a token issued on another replica works here at once.
                let found = table.get(&digest).await?.map(|r| TokenRecord { digest: blake3::Hash::from_bytes(digest).to_hex().to_string(), ..r });
                if let (Some(record), Ok(mut cache)) = (&found, cache.lock()) {
                    if cache.len() >= SHARED_CACHE_ENTRIES {
                        cache.clear();
                    }
                    cache.insert(digest, (record.clone(), std::time::Instant::now()));
                }
                Ok(found)
            }
        }
    }

    /// A tenant's tokens.
    pub async fn list(&self, tenant: &crate::tenants::Tenant) -> Result<Vec<TokenRecord>, StoreError> {
        match &self.authority {
            TokenAuthority::Embedded(store) => list(store, tenant),
            TokenAuthority::Shared { table, .. } => Ok(table.list(tenant.storage_id()).await?.into_iter().filter(|r| r.belongs_to(tenant)).collect()),
        }
    }

    /// Revokes a tenant's token by id; `false` if none matched. On the shared store every
    /// replica drops it within a second (the change feed).
    pub async fn revoke(&self, tenant: &crate::tenants::Tenant, id: &str) -> Result<bool, StoreError> {
        match &self.authority {
            TokenAuthority::Embedded(store) => revoke(store, tenant, id).await,
            TokenAuthority::Shared { table, cache } => {
                let hashes = table.delete(tenant.storage_id(), Some(id)).await?;
                forget(cache, &hashes);
                Ok(!hashes.is_empty())
            }
        }
    }

    /// Revokes every token of one tenant incarnation.
    pub async fn revoke_all(&self, tenant: &crate::tenants::Tenant) -> Result<(), StoreError> {
        match &self.authority {
            TokenAuthority::Embedded(store) => revoke_all(store, tenant),
            TokenAuthority::Shared { table, cache } => {
                let hashes = table.delete(tenant.storage_id(), None).await?;
                forget(cache, &hashes);
                Ok(())
            }
        }
    }

    /// Drops cached tokens as other replicas revoke them (shared store; a no-op on the
    /// embedded one). Runs until the feed ends.
    pub fn follow(&self, mut changes: tokio::sync::broadcast::Receiver<crate::postgres::changes::Change>) {
        use crate::postgres::changes::Change;
        let TokenAuthority::Shared { cache, .. } = &self.authority else { return };
        let cache = cache.clone();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(Change::Row { kind, key }) if kind == "token" => {
                        if let (Ok(hash), Ok(mut cache)) = (blake3::Hash::from_hex(&key), cache.lock()) {
                            cache.remove(hash.as_bytes());
                        }
                    }
                    Ok(Change::Row { .. }) => {}
                    Ok(Change::ReloadAll) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if let Ok(mut cache) = cache.lock() {
                            cache.clear();
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

fn forget(cache: &TokenCache, hashes: &[Vec<u8>]) {
    if let Ok(mut cache) = cache.lock() {
        for hash in hashes {
            if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
                cache.remove(&hash);
            }
        }
    }
}

/// The operator token, held as a hash so it is compared in constant time.
pub struct AdminToken([u8; 32]);

impl AdminToken {
    /// From the plaintext token.
    pub fn new(token: &str) -> Self {
        AdminToken(hash(token))
    }

    /// Whether `presented` is the admin token (constant time over the hashes).
    pub fn matches(&self, presented: &str) -> bool {
        presented.len() <= MAX_TOKEN_BYTES && bool::from(self.0.ct_eq(&hash(presented)))
    }
}
