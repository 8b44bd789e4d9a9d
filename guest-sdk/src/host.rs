//! The tenant-scoped host capabilities a policy may call.
//!
//! Inside the gateway these call the WIT imports; in a native `cargo test` they call the
//! fake host installed by [`testing::Harness`](crate::testing::Harness).

use crate::types::{BudgetStatus, CredentialInfo, Level, MemoryError, ModelInfo};

#[cfg(target_arch = "wasm32")]
use crate::glue as backend;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::fake as backend;

/// The calling tenant's credentials: names and providers, never secrets.
pub mod credentials {
    use super::*;

    /// Lists the tenant's credentials.
    pub fn list() -> Vec<CredentialInfo> {
        backend::credentials_list()
    }

    /// The first credential stored for `provider`, if any.
    pub fn for_provider(provider: &str) -> Option<CredentialInfo> {
        list().into_iter().find(|c| c.provider == provider)
    }
}

/// The tenant's key-value store, with a quota. Denials are [`MemoryError`] values.
pub mod memory {
    use super::*;

    /// Reads a value; `Ok(None)` if absent.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, MemoryError> {
        backend::memory_get(key)
    }

    /// Writes a value. Fails with `QuotaExceeded`, `ValueTooLarge` or `InvalidKey`.
    pub fn set(key: &str, value: &[u8]) -> Result<(), MemoryError> {
        backend::memory_set(key, value)
    }

    /// Deletes a key (absent keys are fine).
    pub fn delete(key: &str) -> Result<(), MemoryError> {
        backend::memory_delete(key)
    }

    /// Keys starting with `prefix`, in byte order, at most `limit`.
    pub fn list_keys(prefix: &str, limit: u32) -> Result<Vec<String>, MemoryError> {
        backend::memory_list_keys(prefix, limit)
    }

    /// Reads a little-endian `u64` counter (absent or malformed reads as 0).
    pub fn get_u64(key: &str) -> Result<u64, MemoryError> {
        Ok(get(key)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0))
    }

    /// Writes a little-endian `u64` counter.
    pub fn set_u64(key: &str, value: u64) -> Result<(), MemoryError> {
        set(key, &value.to_le_bytes())
    }
}

/// Read-only view of the tenant's spend.
pub mod metering {
    use super::*;

    /// Budget and spend in the current period.
    pub fn budget() -> BudgetStatus {
        backend::metering_budget()
    }

    /// Settled spend of one end user this period, in micro-dollars.
    pub fn user_spend(end_user: &str) -> u64 {
        backend::metering_user_spend(end_user)
    }

    /// Settled spend under one tag this period, in micro-dollars.
    pub fn tag_spend(tag: &str) -> u64 {
        backend::metering_tag_spend(tag)
    }
}

/// The operator's model catalog with the tenant's prices.
pub mod catalog {
    use super::*;

    /// Every model on offer.
    pub fn models() -> Vec<ModelInfo> {
        backend::catalog_models()
    }

    /// One model by name; dated variants resolve to their family.
    pub fn lookup(model: &str) -> Option<ModelInfo> {
        backend::catalog_lookup(model)
    }
}

/// The tenant's bounded policy log.
pub mod log {
    use super::*;

    /// Appends a message at `level`.
    pub fn write(level: Level, message: &str) {
        backend::log_write(level, message)
    }

    /// Appends an info message.
    pub fn info(message: &str) {
        write(Level::Info, message)
    }

    /// Appends a warning.
    pub fn warn(message: &str) {
        write(Level::Warn, message)
    }
}
