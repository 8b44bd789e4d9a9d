//! Per-tenant conversation sessions. A request names its session with `X-Session-ID` (or
//! a `session_id` body field); the gateway stores each turn under the tenant's key, and
//! when the request asks (`X-Session-History: true` or `"session_history": true`) it
//! prepends the stored turns. Turns count against the tenant's memory quota, and two
//! tenants using the same session id never see each other's turns.

use serde::{Deserialize, Serialize};

use crate::memory::TenantMemory;
use crate::policy::MemoryError;
use crate::store::{decode, encode, Kind, Store, StoreError, TenantKey};

/// Longest session id.
pub const MAX_SESSION_ID_BYTES: usize = 128;
/// Most turns prepended to one request.
pub const MAX_HISTORY_TURNS: usize = 200;
/// Longest stored turn text; longer replies are truncated.
pub const MAX_TURN_BYTES: usize = 64 << 10;
/// Tries of one append against concurrent appends to the same session. Each failed try
/// means another append committed, so this only runs out under a pile-up far beyond what
/// one session's requests produce.
const MAX_APPEND_ATTEMPTS: usize = 1000;

/// One stored turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// One tenant's sessions.
pub struct Sessions {
    store: Store,
    tenant: TenantKey,
    memory: TenantMemory,
}

fn turn_key(session: &str, sequence: u64) -> Vec<u8> {
    let mut key = session.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

impl Sessions {
    /// The sessions of `tenant`, charged to `memory`'s quota.
    pub fn new(store: Store, tenant: TenantKey, memory: TenantMemory) -> Self {
        Self { store, tenant, memory }
    }

    fn prefix(&self, session: &str) -> Vec<u8> {
        let mut prefix = self.tenant.record(Kind::Session, session.as_bytes());
        prefix.push(0);
        prefix
    }

    /// Stored turns, oldest first, at most the newest `limit`.
    pub fn history(&self, session: &str, limit: usize) -> Result<Vec<Turn>, StoreError> {
        let mut turns: Vec<Turn> = self
            .store
            .tenant
            .scan_prefix(self.prefix(session))
            .values()
            .rev()
            .take(limit)
            .map(|v| decode("sessions", &v?))
            .collect::<Result<_, _>>()?;
        turns.reverse();
        Ok(turns)
    }

    /// Appends turns (within the memory quota), all or none. Concurrent appends to one
    /// session never overwrite each other: the turns are written only under sequence
    /// numbers still free at commit, else the next free ones are read and tried again.
    pub fn append(&self, session: &str, turns: &[Turn]) -> Result<(), MemoryError> {
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let next = self
                .store
                .tenant
                .scan_prefix(self.prefix(session))
                .keys()
                .next_back()
                .transpose()
                .map_err(|e| MemoryError::Unavailable(e.to_string()))?
                .and_then(|k| <[u8; 8]>::try_from(&k[k.len() - 8..]).ok())
                .map(|b| u64::from_be_bytes(b) + 1)
                .unwrap_or(0);
            let records: Vec<(Vec<u8>, Vec<u8>)> = turns.iter().enumerate().map(|(i, turn)| (turn_key(session, next + i as u64), encode(turn))).collect();
            if self.memory.insert_new_records(Kind::Session, &records)? {
                return Ok(());
            }
        }
        Err(MemoryError::Unavailable(format!("session turns not stored: {MAX_APPEND_ATTEMPTS} concurrent appends won the same sequence numbers")))
    }

    /// Every session with its turn count (at most `limit` sessions).
    pub fn list(&self, limit: usize) -> Result<Vec<SessionInfo>, StoreError> {
        let skip = self.tenant.prefix(Kind::Session).len();
        let mut out: Vec<SessionInfo> = Vec::new();
        for key in self.store.tenant.scan_prefix(self.tenant.prefix(Kind::Session)).keys() {
            let key = key?;
            let rest = &key[skip..];
            let Some(end) = rest.iter().position(|&b| b == 0) else { continue };
            let id = String::from_utf8_lossy(&rest[..end]).into_owned();
            if let Some(last) = out.last_mut().filter(|last| last.id == id) {
                last.turns += 1;
            } else if out.len() >= limit {
                break;
            } else {
                out.push(SessionInfo { id, turns: 1 });
            }
        }
        Ok(out)
    }

    /// Deletes a session and gives its bytes back to the quota; `false` if it had no turns.
    pub fn delete(&self, session: &str) -> Result<bool, MemoryError> {
        let skip = self.tenant.prefix(Kind::Session).len();
        let keys: Vec<Vec<u8>> = self.store.tenant.scan_prefix(self.prefix(session)).keys().filter_map(|k| k.ok()).map(|k| k[skip..].to_vec()).collect();
        for key in &keys {
            self.memory.put_record(Kind::Session, key, None)?;
        }
        Ok(!keys.is_empty())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_ids_must_survive_a_url_path() {
        for bad in ["a/b", "a?b", "a#b", "a%2Fb", "a b", ".", "..", ""] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        for good in ["s1", "user@example.com:42", "a.b~c", "x=y+z"] {
            assert!(validate_id(good).is_ok(), "{good:?}");
        }
    }

    use super::*;

    fn turn(role: &str, content: &str) -> Turn {
        Turn { role: role.into(), content: content.into(), unix_millis: 0, request_id: "r".into() }
    }

    #[test]
    fn same_session_id_in_two_tenants_is_two_sessions() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let make = |t: &str| Sessions::new(store.clone(), TenantKey::of(t), TenantMemory::new(store.clone(), TenantKey::of(t), 1 << 20));
        let (a, b) = (make("a"), make("b"));
        a.append("s1", &[turn("user", "a's question"), turn("assistant", "a's answer")])?;
        b.append("s1", &[turn("user", "b's question")])?;
        assert_eq!(a.history("s1", 10)?.iter().map(|t| t.content.as_str()).collect::<Vec<_>>(), vec!["a's question", "a's answer"]);
        assert_eq!(b.history("s1", 10)?.len(), 1);
        a.append("s1", &[turn("user", "more")])?;
        assert_eq!(a.history("s1", 2)?.iter().map(|t| t.content.as_str()).collect::<Vec<_>>(), vec!["a's answer", "more"]);
        assert_eq!(a.list(10)?, vec![SessionInfo { id: "s1".into(), turns: 3 }]);
        assert!(a.delete("s1")?);
        assert!(a.history("s1", 10)?.is_empty());
        assert_eq!(b.history("s1", 10)?.len(), 1);
        Ok(())
    }

    #[test]
    fn concurrent_appends_to_one_session_keep_every_turn() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let key = TenantKey::of("t");
        let sessions = Sessions::new(store.clone(), key, TenantMemory::new(store, key, 1 << 20));
        std::thread::scope(|scope| {
            for i in 0..50 {
                let sessions = &sessions;
                scope.spawn(move || sessions.append("s", &[turn("user", &format!("q{i}")), turn("assistant", &format!("a{i}"))]));
            }
        });
        let stored = sessions.history("s", 1000)?;
        assert_eq!(stored.len(), 100);
        // Each request's two turns stay adjacent: question, then its answer.
        for pair in stored.chunks(2) {
            assert_eq!(pair[0].content.replace('q', ""), pair[1].content.replace('a', ""));
        }
        Ok(())
    }

    #[test]
    fn sessions_share_the_memory_quota() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let memory = TenantMemory::new(store.clone(), TenantKey::of("t"), 200);
        let sessions = Sessions::new(store, TenantKey::of("t"), memory.clone());
        assert!(matches!(sessions.append("s", &[turn("user", &"x".repeat(300))]), Err(MemoryError::QuotaExceeded)));
        sessions.append("s", &[turn("user", "short")])?;
        assert!(memory.used_bytes()? > 0);
        sessions.delete("s")?;
        assert_eq!(memory.used_bytes()?, 0);
        Ok(())
    }
}
