//! Spend, reservations and the usage ledger, all in integer micro-dollars.
//!
//! Counters are keyed by period id (`2026-11`, `2026-11-30`, `total`), so a new period
//! starts at zero without a reset job. A reservation is checked and held atomically
//! against every budget that applies, and a settlement replaces it with the actual cost
//! and writes the ledger record and rollups in one transaction, batched across requests.
//! So concurrent requests can never together pass the budget by more than the amount by
//! which actual usage exceeded what each reserved (zero: the gateway caps a settlement at
//! its reservation), and a crash charges every reservation not yet settled.
//!
//! [`Metering`] is the one interface the gateway uses, over one of two authorities: the
//! embedded one ([`Embedded`], sled, one process) or the shared one
//! ([`crate::postgres::budgets::PgBudgets`], PostgreSQL, any number of replicas).

mod counters;
mod embedded;
mod journal;
mod writer;

use serde::{Deserialize, Serialize};

pub use embedded::Embedded;
pub use writer::LedgerStats;

use crate::policy::BudgetStatus;
use crate::postgres::budgets::PgBudgets;
use crate::store::{Store, StoreError};

/// How often a budget starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// Per UTC day.
    Day,
    /// Per UTC calendar month.
    #[default]
    Month,
    /// Never resets.
    Total,
}

impl Period {
    /// The id of the period containing `unix_millis`.
    pub fn id_at(self, unix_millis: u64) -> String {
        let at = chrono::DateTime::from_timestamp_millis(unix_millis as i64).unwrap_or_default();
        match self {
            Period::Day => at.format("%Y-%m-%d").to_string(),
            Period::Month => at.format("%Y-%m").to_string(),
            Period::Total => "total".into(),
        }
    }

    /// `day`, `month` or `total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
            Period::Total => "total",
        }
    }
}

/// A tenant's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Budget {
    /// The most the tenant may spend per period, in micro-dollars.
    pub limit_microdollars: u64,
    /// The period.
    #[serde(default)]
    pub period: Period,
}

/// A reservation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// Spent plus reserved plus this request would pass the budget.
    #[error("budget of {scope} exceeded: {spent} spent and {reserved} reserved of {limit} micro-dollars this {period}; this request needs up to {needed}")]
    Exceeded {
        /// `the tenant`, `end user 'alice'` or `tag 'x'`.
        scope: String,
        /// Settled spend.
        spent: u64,
        /// In flight.
        reserved: u64,
        /// The budget.
        limit: u64,
        /// The request's reservation.
        needed: u64,
        /// `day`, `month` or `total`.
        period: &'static str,
    },
    /// A concurrency cap had no free slot (shared authority: counted over every replica).
    #[error("too many concurrent requests: {in_flight} in flight under {cap}, the most allowed is {limit}")]
    TooManyInFlight {
        /// `tenant` or `token:<hash>`.
        cap: String,
        /// Requests holding a reservation under it.
        in_flight: u64,
        /// The cap.
        limit: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Money held for one request in flight. Persisted, so a crash before settlement charges
/// it at the reserved amount on the next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The tenant's storage id (its incarnation; see `Tenant::storage_id`).
    pub tenant_id: String,
    /// Request id.
    pub request_id: String,
    /// Period id the reservation counts against.
    pub period_id: String,
    /// Amount held.
    pub microdollars: u64,
    /// Sub-budget scopes (`user:alice`, `tag:x`) whose reserved counters hold it too.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// When the request arrived (ms since the Unix epoch): its ledger record's time, so a
    /// settlement and a crash recovery of the same request write the same record. 0 in
    /// records written before this field.
    #[serde(default)]
    pub unix_millis: u64,
    /// The request's end user, charged on crash recovery too.
    #[serde(default)]
    pub end_user: Option<String>,
    /// The plan's tags, charged on crash recovery too.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Reservation {
    /// The periods whose counters hold this reservation and take its settled cost: the
    /// day, the month and all time, so a budget whose period changes, or a budget added
    /// later, reads spend that was counted all along. Records written before the three
    /// counters existed hold only their budget's period.
    pub fn period_ids(&self) -> Vec<String> {
        if self.unix_millis == 0 {
            return vec![self.period_id.clone()];
        }
        [Period::Day, Period::Month, Period::Total].iter().map(|p| p.id_at(self.unix_millis)).collect()
    }

    /// Every (scope, period) counter this reservation holds: the tenant's and each
    /// sub-budget's, in every period.
    pub(crate) fn held_cells(&self) -> impl Iterator<Item = (&str, String)> + '_ {
        let periods = self.period_ids();
        std::iter::once("total").chain(self.scopes.iter().map(String::as_str)).flat_map(move |scope| periods.clone().into_iter().map(move |p| (scope, p)))
    }
}

/// What a request asks to hold; see [`Metering::reserve_for`].
#[derive(Debug)]
pub struct Hold<'a> {
    /// Tenant id.
    pub tenant_id: &'a str,
    /// The tenant's budget, if any.
    pub budget: Option<Budget>,
    /// Sub-budgets `(scope, limit)` (`user:alice`, `tag:x`) that must have room too.
    pub sub_budgets: &'a [(String, u64)],
    /// Request id.
    pub request_id: &'a str,
    /// The amount.
    pub microdollars: u64,
    /// The request's arrival time.
    pub now_millis: u64,
    /// The request's end user.
    pub end_user: Option<String>,
    /// The plan's tags.
    pub tags: Vec<String>,
    /// Concurrency caps `(name, most in flight)` the request counts under while it holds
    /// its reservation (`tenant`, `token:<hash>`). Enforced across replicas by the shared
    /// authority; the embedded one leaves them to the in-process limiter, which already
    /// sees every request.
    pub caps: Vec<(String, u32)>,
}

impl Hold<'_> {
    /// The reservation this hold makes: counted in its budget's period at its time.
    pub(crate) fn reservation(&self) -> Reservation {
        Reservation {
            tenant_id: self.tenant_id.into(),
            request_id: self.request_id.into(),
            period_id: self.budget.map(|b| b.period).unwrap_or_default().id_at(self.now_millis),
            microdollars: self.microdollars,
            scopes: self.sub_budgets.iter().map(|(s, _)| s.clone()).collect(),
            unix_millis: self.now_millis,
            end_user: self.end_user.clone(),
            tags: self.tags.clone(),
        }
    }
}

/// One usage ledger record: what a request did and cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerRecord {
    /// Tenant id.
    pub tenant_id: String,
    /// Milliseconds since the Unix epoch when the request arrived.
    pub unix_millis: u64,
    /// Request id.
    pub request_id: String,
    /// Provider that served it (empty if none).
    pub provider: String,
    /// Model that served it (empty if none).
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cached prompt tokens, where the provider reports them.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache (Anthropic).
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// Cost in micro-dollars.
    pub cost_microdollars: u64,
    /// Milliseconds from accept to last byte.
    pub latency_ms: u64,
    /// `success`, `upstream_error`, `upstream_cut`, `client_disconnected`,
    /// `internal_error`, `crash_recovered`.
    pub outcome: String,
    /// End user from the request.
    pub end_user: Option<String>,
    /// Plan tags.
    pub tags: Vec<String>,
    /// The policy that routed it.
    pub policy_hash: String,
}

/// One day's totals for one dimension value (`model` = `openai/gpt-4o`, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollup {
    /// Requests.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cached prompt tokens.
    pub cached_tokens: u64,
    /// Cost in micro-dollars.
    pub cost_microdollars: u64,
}

impl Rollup {
    /// Saturating: token counts come from upstreams, which may report anything.
    pub(crate) fn add(&mut self, other: &Rollup) {
        self.requests = self.requests.saturating_add(other.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(other.cached_tokens);
        self.cost_microdollars = self.cost_microdollars.saturating_add(other.cost_microdollars);
    }
}

/// How usage queries group rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// One row per UTC day.
    Day,
    /// Per `provider/model`.
    Model,
    /// Per provider.
    Provider,
    /// Per end user (requests without a user are left out).
    User,
    /// Per tag (a request counts once under each of its tags).
    Tag,
}

impl GroupBy {
    /// Parses `day|model|provider|user|tag`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "day" => GroupBy::Day,
            "model" => GroupBy::Model,
            "provider" => GroupBy::Provider,
            "user" => GroupBy::User,
            "tag" => GroupBy::Tag,
            _ => return None,
        })
    }

    /// The rollup dimension it reads (`all` for days).
    pub(crate) fn dimension(self) -> &'static str {
        match self {
            GroupBy::Day => "all",
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
            GroupBy::User => "user",
            GroupBy::Tag => "tag",
        }
    }
}

/// The UTC day (`2026-11-30`) of a timestamp.
pub fn day_of(unix_millis: u64) -> String {
    Period::Day.id_at(unix_millis)
}

/// A scope as a budget error names it: `the tenant`, `end user 'alice'`, `tag 'x'`.
pub(crate) fn describe_scope(scope: &str) -> String {
    match scope.split_once(':') {
        Some(("user", name)) => format!("end user '{name}'"),
        Some(("tag", name)) => format!("tag '{name}'"),
        _ => "the tenant".into(),
    }
}

/// Scopes a settled cost is added to: the tenant's total, its end user and its tags.
pub(crate) fn spend_scopes(record: &LedgerRecord) -> Vec<String> {
    let mut scopes = vec!["total".to_string()];
    if let Some(user) = &record.end_user {
        scopes.push(format!("user:{user}"));
    }
    scopes.extend(record.tags.iter().map(|t| format!("tag:{t}")));
    scopes
}


/// Spend, reservations and the ledger, over the embedded or the shared authority.
/// Clones share one authority.
#[derive(Clone)]
pub struct Metering {
    authority: Authority,
}

#[derive(Clone)]
enum Authority {
    Embedded(Embedded),
    Shared(PgBudgets),
}

impl Metering {
    /// The embedded authority over `store`, with its settlement threads.
    pub fn new(store: Store) -> Result<Self, StoreError> {
        Ok(Self { authority: Authority::Embedded(Embedded::new(store)?) })
    }

    /// The shared authority (PostgreSQL).
    pub fn shared(budgets: PgBudgets) -> Self {
        Self { authority: Authority::Shared(budgets) }
    }

    /// The embedded authority, for what only it has (its testing surface, crash recovery
    /// at start); `None` on the shared one.
    pub fn embedded(&self) -> Option<&Embedded> {
        match &self.authority {
            Authority::Embedded(embedded) => Some(embedded),
            Authority::Shared(_) => None,
        }
    }

    /// The embedded settlement threads' figures; `None` on the shared authority.
    pub fn ledger_stats(&self) -> Option<&LedgerStats> {
        self.embedded().map(Embedded::ledger_stats)
    }

    /// Budget and spend of the period containing `now_millis`, for the tenant stored
    /// under `storage_id`.
    pub async fn status(&self, storage_id: &str, budget: Option<Budget>, now_millis: u64) -> Result<BudgetStatus, StoreError> {
        match &self.authority {
            Authority::Embedded(e) => e.status(&crate::store::TenantKey::of(storage_id), budget, now_millis),
            Authority::Shared(p) => p.status(storage_id, budget, now_millis).await,
        }
    }

    /// Settled spend of one scope (`user:alice`, `tag:x`) in a period.
    pub async fn scope_spend(&self, storage_id: &str, scope: &str, period_id: &str) -> Result<u64, StoreError> {
        match &self.authority {
            Authority::Embedded(e) => e.scope_spend(&crate::store::TenantKey::of(storage_id), scope, period_id),
            Authority::Shared(p) => p.scope_spend(storage_id, scope, period_id).await,
        }
    }

    /// Holds `hold.microdollars` for a request if the tenant's budget and each
    /// `(scope, limit)` sub-budget have room, in every period's counter. The reservation is
    /// durable (embedded: written; shared: committed) before this returns, so a crash from
    /// here on charges it.
    pub async fn reserve_for(&self, hold: Hold<'_>) -> Result<Reservation, BudgetError> {
        match &self.authority {
            Authority::Embedded(e) => e.reserve_for(hold),
            Authority::Shared(p) => p.reserve(hold).await,
        }
    }

    /// [`Metering::reserve_for`] with no sub-budgets, end user or tags.
    pub async fn reserve(&self, storage_id: &str, budget: Option<Budget>, request_id: &str, microdollars: u64, now_millis: u64) -> Result<Reservation, BudgetError> {
        self.reserve_for(Hold { tenant_id: storage_id, budget, sub_budgets: &[], request_id, microdollars, now_millis, end_user: None, tags: Vec::new(), caps: Vec::new() }).await
    }

    /// Replaces a reservation with the actual cost and writes the ledger record, batched
    /// with other requests' settlements; returns once it is durable. Settling twice counts
    /// once.
    pub async fn settle_durably(&self, reservation: Reservation, record: LedgerRecord) -> Result<(), String> {
        match &self.authority {
            Authority::Embedded(e) => e.settle_durably(reservation, record).await,
            Authority::Shared(p) => p.settle(&reservation, &record).await.map(|_| ()),
        }
    }

    /// Settles without waiting, for a request whose handler is being dropped (its client
    /// hung up): embedded at once, shared on a task of the current runtime.
    pub fn settle_detached(&self, reservation: Reservation, record: LedgerRecord) {
        let request_id = record.request_id.clone();
        let failed = move |e: &dyn std::fmt::Display| {
            tracing::error!(request_id = %request_id, error = %e, "settling a dropped request failed; the reservation stays and is charged by crash recovery");
        };
        match &self.authority {
            Authority::Embedded(e) => {
                if let Err(error) = e.settle(&reservation, &record) {
                    failed(&error);
                }
            }
            Authority::Shared(p) => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let p = p.clone();
                    runtime.spawn(async move {
                        if let Err(error) = p.settle(&reservation, &record).await {
                            failed(&error);
                        }
                    });
                }
                Err(error) => failed(&error),
            },
        }
    }

    /// Charges reservations left by a crash at their reserved amount: embedded, every
    /// reservation in the store (run once at start); shared, those whose lease expired.
    pub async fn recover_reservations(&self) -> Result<usize, BudgetError> {
        match &self.authority {
            Authority::Embedded(e) => e.recover_reservations(),
            Authority::Shared(p) => Ok(p.recover_expired().await?),
        }
    }

    /// Forgets a deleted tenant's spend: embedded, the counters in memory (its records
    /// were purged with the tenant's); shared, every row stored under it.
    pub async fn forget_tenant(&self, storage_id: &str) -> Result<(), StoreError> {
        match &self.authority {
            Authority::Embedded(e) => e.forget_tenant(storage_id).await,
            Authority::Shared(p) => p.purge_tenant(storage_id).await,
        }
    }

    /// Usage between two UTC days (inclusive), grouped; rows sorted by key.
    pub async fn usage(&self, storage_id: &str, first_day: &str, last_day: &str, group_by: GroupBy) -> Result<Vec<(String, Rollup)>, StoreError> {
        match &self.authority {
            Authority::Embedded(e) => e.usage(storage_id, first_day, last_day, group_by),
            Authority::Shared(p) => p.usage(storage_id, first_day, last_day, group_by).await,
        }
    }

    /// Usage between two UTC days (inclusive) per day and value of `group_by`'s
    /// dimension: `(day, value, rollup)` sorted by day, then value; days without usage
    /// are absent.
    pub async fn usage_daily(&self, storage_id: &str, first_day: &str, last_day: &str, group_by: GroupBy) -> Result<Vec<(String, String, Rollup)>, StoreError> {
        match &self.authority {
            Authority::Embedded(e) => e.usage_daily(storage_id, first_day, last_day, group_by),
            Authority::Shared(p) => p.usage_daily(storage_id, first_day, last_day, group_by).await,
        }
    }

    /// Spend between two UTC days (inclusive) of each of `storage_ids` that spent
    /// anything, most first (ties by id), at most `limit`. The embedded store reads each
    /// tenant's daily totals (an operator's query, not the request path); the shared store
    /// sums in one query.
    pub async fn top_spenders(&self, storage_ids: &[String], first_day: &str, last_day: &str, limit: usize) -> Result<Vec<(String, Rollup)>, StoreError> {
        match &self.authority {
            Authority::Embedded(e) => {
                let mut spenders = Vec::new();
                for id in storage_ids {
                    let total = e.totals(id, first_day, last_day)?;
                    if total.requests > 0 || total.cost_microdollars > 0 {
                        spenders.push((id.clone(), total));
                    }
                }
                spenders.sort_by(|(a_id, a), (b_id, b)| b.cost_microdollars.cmp(&a.cost_microdollars).then_with(|| a_id.cmp(b_id)));
                spenders.truncate(limit);
                Ok(spenders)
            }
            Authority::Shared(p) => p.top_spenders(storage_ids, first_day, last_day, limit).await,
        }
    }

    /// Totals between two UTC days (inclusive).
    pub async fn totals(&self, storage_id: &str, first_day: &str, last_day: &str) -> Result<Rollup, StoreError> {
        let mut total = Rollup::default();
        for (_, rollup) in self.usage(storage_id, first_day, last_day, GroupBy::Day).await? {
            total.add(&rollup);
        }
        Ok(total)
    }

    /// Ledger records of a tenant between two times (inclusive start, exclusive end), in
    /// time order.
    pub async fn ledger(&self, storage_id: &str, from_millis: u64, to_millis: u64, limit: usize) -> Result<Vec<LedgerRecord>, StoreError> {
        match &self.authority {
            Authority::Embedded(e) => e.ledger(storage_id, from_millis, to_millis, limit),
            Authority::Shared(p) => p.ledger(storage_id, from_millis, to_millis, limit).await,
        }
    }

    /// Counter cells held in memory (embedded; bounded, see `metering/counters.rs`).
    pub fn cells_len(&self) -> usize {
        self.embedded().map(Embedded::cells_len).unwrap_or(0)
    }
}
