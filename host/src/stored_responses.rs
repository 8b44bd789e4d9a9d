//! Per-tenant stored Responses API answers, so a request can continue a conversation with
//! `previous_response_id` (`POST /v1/responses`, see `server/responses.rs`).
//!
//! Each stored response holds only what it added (its input and its output, as OpenAI
//! chat messages) and the id it continued; a conversation is read by following those
//! links back. Records are keyed by the tenant's storage id (its incarnation), so one
//! tenant can never read another's, and they go with the tenant's purge. They count
//! against the tenant's memory quota, as session turns do.
//!
//! [`StoredResponses`] is the one interface, over the embedded store (sled, a record of
//! [`Kind::Response`] written through the tenant's [`EmbeddedMemory`]) or the shared one
//! ([`PgResponses`], PostgreSQL).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::memory::{unavailable, EmbeddedMemory};
use crate::policy::MemoryError;
use crate::postgres::responses::PgResponses;
use crate::store::{decode, encode, Kind, Store, StoreError, TenantKey};

/// Largest stored record (a response's input and output): a request whose own part of the
/// conversation is larger is answered but not stored, so one huge prompt cannot take the
/// whole memory quota.
pub const MAX_STORED_RESPONSE_BYTES: usize = 256 << 10;
/// Most responses one conversation is read back through: bounds the reads of one request
/// (each link is one lookup) whatever chain a client built.
pub const MAX_CHAIN_LINKS: usize = 256;
/// Longest response id accepted in `previous_response_id` (ours are 29 bytes).
pub const MAX_RESPONSE_ID_BYTES: usize = 128;

/// What one stored response added to its conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// The response it continued, if any.
    pub previous: Option<String>,
    /// Its input and output as OpenAI chat messages (no system message: instructions are
    /// not carried over, as in OpenAI's API).
    pub messages: Vec<Value>,
    /// When it was stored.
    pub unix_millis: u64,
}

/// Why a response was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreRefused {
    /// Larger than [`MAX_STORED_RESPONSE_BYTES`].
    #[error("the response's input and output are {0} bytes, more than the {MAX_STORED_RESPONSE_BYTES} stored per response")]
    TooLarge(usize),
    /// Over the memory quota, or the store failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
}

/// What a stored response counts against the memory quota: what the embedded store
/// charges for its record (key plus encoded value), so usage reads the same in either store.
pub(crate) fn record_bytes(id: &str, encoded: &[u8]) -> u64 {
    (id.len() + encoded.len()) as u64
}

/// Every tenant's stored responses, in one store, charged to the memory quota of
/// `quota_bytes`. Clones share it.
#[derive(Clone)]
pub struct StoredResponses {
    place: Place,
    quota_bytes: u64,
}

#[derive(Clone)]
enum Place {
    Embedded(Store),
    Shared(PgResponses),
}

impl StoredResponses {
    /// In the embedded store.
    pub fn embedded(store: Store, quota_bytes: u64) -> Self {
        Self { place: Place::Embedded(store), quota_bytes }
    }

    /// In the shared store (PostgreSQL), on the same database as the tenants' memory.
    pub fn shared(table: PgResponses, quota_bytes: u64) -> Self {
        Self { place: Place::Shared(table), quota_bytes }
    }

    /// The responses of the tenant stored under `storage_id` (its incarnation).
    pub fn tenant(&self, storage_id: &str) -> TenantResponses {
        TenantResponses { place: self.place.clone(), storage_id: storage_id.into(), quota_bytes: self.quota_bytes }
    }

    /// Removes every stored response of a deleted tenant: shared, its rows; embedded,
    /// nothing (its records go with the store's purge of the tenant).
    pub async fn purge_tenant(&self, storage_id: &str) -> Result<(), StoreError> {
        match &self.place {
            Place::Embedded(_) => Ok(()),
            Place::Shared(table) => table.purge_tenant(storage_id).await,
        }
    }
}

/// One tenant's stored responses.
pub struct TenantResponses {
    place: Place,
    storage_id: String,
    quota_bytes: u64,
}

impl TenantResponses {
    /// The conversation up to and including response `id`, oldest message first; `None`
    /// if this tenant stored no response `id`. A link whose response is gone (or the
    /// [`MAX_CHAIN_LINKS`]th) starts the conversation.
    pub async fn conversation(&self, id: &str) -> Result<Option<Vec<Value>>, StoreError> {
        let links = match &self.place {
            Place::Embedded(store) => {
                let tenant = TenantKey::of(&self.storage_id);
                let mut links = Vec::new();
                let mut next = Some(id.to_string());
                while let Some(id) = next.take().filter(|_| links.len() < MAX_CHAIN_LINKS) {
                    let Some(bytes) = store.tenant.get(tenant.record(Kind::Response, id.as_bytes()))? else { break };
                    let link: StoredResponse = decode("responses", &bytes)?;
                    next = link.previous.clone();
                    links.push(link.messages);
                }
                links
            }
            Place::Shared(table) => table.chain(&self.storage_id, id, MAX_CHAIN_LINKS).await?,
        };
        if links.is_empty() {
            return Ok(None);
        }
        Ok(Some(links.into_iter().rev().flatten().collect()))
    }

    /// Deletes response `id` and gives its bytes back to the quota; `false` if this tenant
    /// stored no response `id`. Conversations continuing it then start after it.
    pub async fn delete(&self, id: &str) -> Result<bool, MemoryError> {
        match &self.place {
            Place::Embedded(store) => {
                let tenant = TenantKey::of(&self.storage_id);
                if store.tenant.get(tenant.record(Kind::Response, id.as_bytes())).map_err(unavailable)?.is_none() {
                    return Ok(false);
                }
                EmbeddedMemory::new(store.clone(), tenant, self.quota_bytes).put_record(Kind::Response, id.as_bytes(), None)?;
                Ok(true)
            }
            Place::Shared(table) => table.delete(&self.storage_id, id).await.map_err(unavailable),
        }
    }

    /// Stores response `id`, within the memory quota and [`MAX_STORED_RESPONSE_BYTES`].
    pub async fn put(&self, id: &str, response: &StoredResponse) -> Result<(), StoreRefused> {
        let encoded = encode(response);
        if encoded.len() > MAX_STORED_RESPONSE_BYTES {
            return Err(StoreRefused::TooLarge(encoded.len()));
        }
        match &self.place {
            Place::Embedded(store) => {
                let tenant = TenantKey::of(&self.storage_id);
                let memory = EmbeddedMemory::new(store.clone(), tenant, self.quota_bytes);
                memory.put_record(Kind::Response, id.as_bytes(), Some(&encoded))?;
                Ok(())
            }
            Place::Shared(table) => match table.put(&self.storage_id, id, response, &encoded, self.quota_bytes).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(MemoryError::QuotaExceeded.into()),
                Err(e) => Err(unavailable(e).into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(previous: Option<&str>, text: &str) -> StoredResponse {
        StoredResponse { previous: previous.map(str::to_owned), messages: vec![json!({"role": "user", "content": text})], unix_millis: 0 }
    }

    #[tokio::test]
    async fn a_chain_reads_back_oldest_first_and_only_for_its_tenant() -> Result<(), Box<dyn std::error::Error>> {
        let store = Store::temporary()?;
        let responses = StoredResponses::embedded(store.clone(), 1 << 20);
        let (a, b) = (responses.tenant("a"), responses.tenant("b"));
        a.put("resp_1", &stored(None, "one")).await?;
        a.put("resp_2", &stored(Some("resp_1"), "two")).await?;
        assert_eq!(a.conversation("resp_2").await?, Some(vec![json!({"role": "user", "content": "one"}), json!({"role": "user", "content": "two"})]));
        assert_eq!(b.conversation("resp_2").await?, None);
        assert_eq!(a.conversation("resp_9").await?, None);
        assert!(!b.delete("resp_1").await?, "another tenant cannot delete it");
        let charged = crate::memory::Memory::embedded(store.clone(), 1 << 20).tenant("a").used_bytes().await?;
        assert_eq!(charged, record_bytes("resp_1", &encode(&stored(None, "one"))) + record_bytes("resp_2", &encode(&stored(Some("resp_1"), "two"))));
        // Deleting the first gives its bytes back; the second then starts its conversation.
        assert!(a.delete("resp_1").await?);
        assert!(!a.delete("resp_1").await?);
        assert_eq!(a.conversation("resp_2").await?, Some(vec![json!({"role": "user", "content": "two"})]));
        let charged = crate::memory::Memory::embedded(store, 1 << 20).tenant("a").used_bytes().await?;
        assert_eq!(charged, record_bytes("resp_2", &encode(&stored(Some("resp_1"), "two"))));
        Ok(())
    }

    #[tokio::test]
    async fn oversized_and_over_quota_responses_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let responses = StoredResponses::embedded(Store::temporary()?, 100).tenant("t");
        assert!(matches!(responses.put("r", &stored(None, &"x".repeat(MAX_STORED_RESPONSE_BYTES))).await, Err(StoreRefused::TooLarge(_))));
        assert!(matches!(responses.put("r", &stored(None, &"x".repeat(200))).await, Err(StoreRefused::Memory(MemoryError::QuotaExceeded))));
        assert_eq!(responses.conversation("r").await?, None);
        Ok(())
    }
}
