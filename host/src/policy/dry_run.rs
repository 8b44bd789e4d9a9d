//! A tenant's view for a policy whose decisions are compared, never acted on (a shadow
//! candidate, or the live policy beside a canary): it reads the tenant's real data, but
//! its memory writes land in a per-call overlay that is dropped afterwards, so it never
//! changes the state the acting policy reads. Its log lines go to the tenant's policy log
//! marked with the policy they came from.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::view::{BoxFuture, LogLine, TenantView, Unavailable};
use super::{BudgetStatus, CredentialInfo, MemoryError, ModelInfo};

/// `inner`, with memory writes kept to this call.
pub struct DryRunView {
    inner: Arc<dyn TenantView>,
    /// What the call wrote: a value, or `None` for a key it deleted.
    overlay: Mutex<BTreeMap<String, Option<Vec<u8>>>>,
    /// Prefixes each log line, e.g. `[shadow 1a2b3c4d]`; `None` drops the lines.
    label: Option<String>,
}

impl DryRunView {
    /// A dry run over `inner`; `label` marks its log lines (`None`: they are dropped, as a
    /// replay's hundreds of calls would push the tenant's own lines out of its log).
    pub fn new(inner: Arc<dyn TenantView>, label: Option<String>) -> Self {
        Self { inner, overlay: Mutex::new(BTreeMap::new()), label }
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<Vec<u8>>>> {
        self.overlay.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TenantView for DryRunView {
    fn credentials(&self) -> BoxFuture<'_, Result<Vec<CredentialInfo>, Unavailable>> {
        self.inner.credentials()
    }

    fn memory_get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, MemoryError>> {
        let written = self.overlay().get(key).cloned();
        match written {
            Some(value) => Box::pin(async move { Ok(value) }),
            None => self.inner.memory_get(key),
        }
    }

    fn memory_set<'a>(&'a self, key: &'a str, value: &'a [u8]) -> BoxFuture<'a, Result<(), MemoryError>> {
        self.overlay().insert(key.to_string(), Some(value.to_vec()));
        Box::pin(async { Ok(()) })
    }

    fn memory_delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), MemoryError>> {
        self.overlay().insert(key.to_string(), None);
        Box::pin(async { Ok(()) })
    }

    fn memory_list<'a>(&'a self, prefix: &'a str, limit: u32) -> BoxFuture<'a, Result<Vec<String>, MemoryError>> {
        let written = self.overlay().len() as u32;
        Box::pin(async move {
            // The stored keys as this call changed them: its deletions gone, its writes in.
            let stored = self.inner.memory_list(prefix, limit.saturating_add(written)).await?;
            let overlay = self.overlay().clone();
            let mut keys: std::collections::BTreeSet<String> = stored.into_iter().filter(|k| !matches!(overlay.get(k), Some(None))).collect();
            keys.extend(overlay.into_iter().filter(|(k, v)| v.is_some() && k.starts_with(prefix)).map(|(k, _)| k));
            Ok(keys.into_iter().take(limit as usize).collect())
        })
    }

    fn budget(&self) -> BoxFuture<'_, Result<BudgetStatus, Unavailable>> {
        self.inner.budget()
    }

    fn user_spend<'a>(&'a self, end_user: &'a str) -> BoxFuture<'a, Result<u64, Unavailable>> {
        self.inner.user_spend(end_user)
    }

    fn tag_spend<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Result<u64, Unavailable>> {
        self.inner.tag_spend(tag)
    }

    fn models(&self) -> Vec<ModelInfo> {
        self.inner.models()
    }

    fn lookup_model(&self, model: &str) -> Option<ModelInfo> {
        self.inner.lookup_model(model)
    }

    fn append_log(&self, lines: Vec<LogLine>) {
        let Some(label) = &self.label else { return };
        self.inner.append_log(lines.into_iter().map(|line| LogLine { message: format!("{label} {}", line.message), ..line }).collect());
    }
}
