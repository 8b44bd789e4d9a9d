//! Per-tenant conversation sessions. A request names its session with `X-Session-ID` (or
//! a `session_id` body field); the gateway stores each turn under the tenant's key, and
//! when the request asks (`X-Session-History: true` or `"session_history": true`) it
//! prepends the stored turns. Turns count against the tenant's memory quota, and two
//! tenants using the same session id never see each other's turns. Concurrent appends to
//! one session (from one replica or several) all keep their turns, each append's turns
//! adjacent.
//!
//! [`Sessions`] is the one interface the gateway uses, over the embedded store
//! ([`EmbeddedSessions`], sled) or the shared one ([`PgSessions`], PostgreSQL).

mod embedded;

use serde::{Deserialize, Serialize};

pub use embedded::EmbeddedSessions;

use crate::memory::{unavailable, EmbeddedMemory};
use crate::policy::MemoryError;
use crate::postgres::sessions::PgSessions;
use crate::store::{Store, StoreError, TenantKey};

/// Longest session id.
pub const MAX_SESSION_ID_BYTES: usize = 128;
/// Most turns prepended to one request.
pub const MAX_HISTORY_TURNS: usize = 200;
/// Longest stored turn text; longer replies are truncated.
pub const MAX_TURN_BYTES: usize = 64 << 10;

/// One stored turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Turn {
    /// `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
    /// When it was stored.
    pub unix_millis: u64,
    /// The request that produced it.
    pub request_id: String,
}

/// A session in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    /// The session id.
    pub id: String,
    /// Stored turns.
    pub turns: usize,
}

/// Why a session id is refused.
/// Session ids are path segments of the API (`DELETE .../sessions/{id}`), so only those
/// that survive a URL unchanged are accepted: no `/`, `?`, `#`, `%` or spaces, and not `.`
/// or `..`, which clients resolve away.
pub fn validate_id(id: &str) -> Result<(), &'static str> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'@' | b'+' | b'=');
    if id.is_empty() || id.len() > MAX_SESSION_ID_BYTES || !id.bytes().all(allowed) || id.bytes().all(|b| b == b'.') {
        return Err("session ids are 1 to 128 of the characters A-Z a-z 0-9 - _ . ~ : @ + = (not only dots)");
    }
    Ok(())
}

/// What one stored turn counts against the memory quota: what the embedded store charges
/// for its record (the key's session id, a separator and an 8-byte sequence number, plus the
/// encoded turn), so a tenant's usage reads the same in either store.
pub(crate) fn turn_bytes(session: &str, turn: &Turn) -> u64 {
    (session.len() + 1 + 8 + crate::store::encode(turn).len()) as u64
}

/// Every tenant's sessions, in one store, charged to the memory quota of `quota_bytes`.
/// Clones share it.
#[derive(Clone)]
pub struct Sessions {
    place: Place,
    quota_bytes: u64,
}

#[derive(Clone)]
enum Place {
    Embedded(Store),
    Shared(PgSessions),
}

impl Sessions {
    /// In the embedded store.
    pub fn embedded(store: Store, quota_bytes: u64) -> Self {
        Self { place: Place::Embedded(store), quota_bytes }
    }

    /// In the shared store (PostgreSQL), on the same database as the tenants' memory.
    pub fn shared(table: PgSessions, quota_bytes: u64) -> Self {
        Self { place: Place::Shared(table), quota_bytes }
    }

    /// The sessions of the tenant stored under `storage_id` (its incarnation).
    pub fn tenant(&self, storage_id: &str) -> TenantSessions {
        let arm = match &self.place {
            Place::Embedded(store) => {
                let key = TenantKey::of(storage_id);
                Arm::Embedded(EmbeddedSessions::new(store.clone(), key, EmbeddedMemory::new(store.clone(), key, self.quota_bytes)))
            }
            Place::Shared(table) => Arm::Shared { table: table.clone(), tenant_id: storage_id.into(), quota_bytes: self.quota_bytes },
        };
        TenantSessions { arm }
    }

    /// Removes every turn of a deleted tenant: shared, its rows; embedded, nothing (its
    /// records go with the store's purge of the tenant).
    pub async fn purge_tenant(&self, storage_id: &str) -> Result<(), StoreError> {
        match &self.place {
            Place::Embedded(_) => Ok(()),
            Place::Shared(table) => table.purge_tenant(storage_id).await,
        }
    }
}

/// One tenant's sessions.
pub struct TenantSessions {
    arm: Arm,
}

// A handle lives for one request on the stack, never in bulk: boxing the larger embedded arm
// would only add an allocation to every embedded call.
#[allow(clippy::large_enum_variant)]
enum Arm {
    Embedded(EmbeddedSessions),
    Shared { table: PgSessions, tenant_id: String, quota_bytes: u64 },
}

impl TenantSessions {
    /// Stored turns, oldest first, at most the newest `limit`.
    pub async fn history(&self, session: &str, limit: usize) -> Result<Vec<Turn>, StoreError> {
        match &self.arm {
            Arm::Embedded(e) => e.history(session, limit),
            Arm::Shared { table, tenant_id, .. } => table.history(tenant_id, session, limit).await,
        }
    }

    /// Appends turns, all or none, if they fit the memory quota (`QuotaExceeded` if not).
    /// Concurrent appends to one session all keep their turns, each append's adjacent.
    pub async fn append(&self, session: &str, turns: &[Turn]) -> Result<(), MemoryError> {
        match &self.arm {
            Arm::Embedded(e) => e.append(session, turns),
            Arm::Shared { table, tenant_id, quota_bytes } => match table.append(tenant_id, session, turns, *quota_bytes).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(MemoryError::QuotaExceeded),
                Err(e) => Err(unavailable(e)),
            },
        }
    }

    /// Every session with its turn count, in session id (byte) order, at most `limit`.
    pub async fn list(&self, limit: usize) -> Result<Vec<SessionInfo>, StoreError> {
        match &self.arm {
            Arm::Embedded(e) => e.list(limit),
            Arm::Shared { table, tenant_id, .. } => table.list(tenant_id, limit).await,
        }
    }

    /// Deletes a session and gives its bytes back to the quota; `false` if it had no turns.
    pub async fn delete(&self, session: &str) -> Result<bool, MemoryError> {
        match &self.arm {
            Arm::Embedded(e) => e.delete(session),
            Arm::Shared { table, tenant_id, .. } => table.delete(tenant_id, session).await.map_err(unavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_must_survive_a_url_path() {
        for bad in ["a/b", "a?b", "a#b", "a%2Fb", "a b", ".", "..", ""] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        for good in ["s1", "user@example.com:42", "a.b~c", "x=y+z"] {
            assert!(validate_id(good).is_ok(), "{good:?}");
        }
    }

    /// The shared store charges `turn_bytes` per turn; it must be what the embedded store
    /// charges, or one tenant's quota would mean two things.
    #[tokio::test]
    async fn turn_bytes_is_what_the_embedded_store_charges() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let sessions = Sessions::embedded(store.clone(), 1 << 20).tenant("t");
        let turns = [
            Turn { role: "user".into(), content: "héllo \u{0} there".into(), unix_millis: 1_796_428_800_000, request_id: "req-1".into() },
            Turn { role: "assistant".into(), content: "x".repeat(1000), unix_millis: 1_796_428_800_001, request_id: "req-1".into() },
        ];
        sessions.append("session-1", &turns).await?;
        let charged = crate::memory::Memory::embedded(store, 1 << 20).tenant("t").used_bytes().await?;
        assert_eq!(charged, turns.iter().map(|t| turn_bytes("session-1", t)).sum::<u64>());
        Ok(())
    }
}
