//! One tenant's sessions in the embedded store (sled): each turn is a record under the
//! tenant's key, the session id and a sequence number, written through the tenant's
//! [`EmbeddedMemory`] so it counts against the memory quota.

use super::{SessionInfo, Turn};
use crate::memory::EmbeddedMemory;
use crate::policy::MemoryError;
use crate::store::{decode, encode, Kind, Store, StoreError, TenantKey};

/// Tries of one append against concurrent appends to the same session. Each failed try
/// means another append committed, so this only runs out under a pile-up far beyond what
/// one session's requests produce.
const MAX_APPEND_ATTEMPTS: usize = 1000;

/// One tenant's sessions in the embedded store.
pub struct EmbeddedSessions {
    store: Store,
    tenant: TenantKey,
    memory: EmbeddedMemory,
}

fn turn_key(session: &str, sequence: u64) -> Vec<u8> {
    let mut key = session.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

impl EmbeddedSessions {
    /// The sessions of `tenant`, charged to `memory`'s quota.
    pub fn new(store: Store, tenant: TenantKey, memory: EmbeddedMemory) -> Self {
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
    use super::*;

    fn turn(role: &str, content: &str) -> Turn {
        Turn { role: role.into(), content: content.into(), unix_millis: 0, request_id: "r".into() }
    }

    #[test]
    fn same_session_id_in_two_tenants_is_two_sessions() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let make = |t: &str| EmbeddedSessions::new(store.clone(), TenantKey::of(t), EmbeddedMemory::new(store.clone(), TenantKey::of(t), 1 << 20));
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
        let sessions = EmbeddedSessions::new(store.clone(), key, EmbeddedMemory::new(store, key, 1 << 20));
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
        let memory = EmbeddedMemory::new(store.clone(), TenantKey::of("t"), 200);
        let sessions = EmbeddedSessions::new(store, TenantKey::of("t"), memory.clone());
        assert!(matches!(sessions.append("s", &[turn("user", &"x".repeat(300))]), Err(MemoryError::QuotaExceeded)));
        sessions.append("s", &[turn("user", "short")])?;
        assert!(memory.used_bytes()? > 0);
        sessions.delete("s")?;
        assert_eq!(memory.used_bytes()?, 0);
        Ok(())
    }
}
