//! The host's validated form of what `route` returned. A guest's return value is input
//! like any other: it is checked against the limits before the gateway acts on it.

use super::bindings::tollgate::policy::types;
use super::limits::PolicyLimits;

/// One validated target.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanTarget {
    /// Provider name (must exist in the operator's config; checked by the router).
    pub provider: String,
    /// Model to ask for.
    pub model: String,
    /// Tenant credential name; empty for a per-request key or none.
    pub credential: String,
    /// Cap on completion tokens.
    pub max_tokens: Option<u32>,
    /// Temperature override.
    pub temperature: Option<f32>,
}

/// A validated plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePlan {
    /// Targets in order, at least one.
    pub targets: Vec<PlanTarget>,
    /// Reservation the policy asked for, in micro-dollars.
    pub reserve_microdollars: Option<u64>,
    /// Attribution tags.
    pub tags: Vec<String>,
    /// Short trace, safe for a response header.
    pub trace: String,
    /// Whether to call `on-complete`.
    pub notify_complete: bool,
}

/// A refusal the policy chose.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// 400..=499.
    pub status: u16,
    /// Machine-readable code.
    pub code: String,
    /// Message for the client.
    pub message: String,
}

/// What `route` decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Serve with this plan.
    Route(RoutePlan),
    /// Refuse.
    Reject(Rejection),
}

/// Longest rejection message passed to the client.
const MAX_REJECTION_MESSAGE_BYTES: usize = 1024;
/// Longest rejection code.
const MAX_REJECTION_CODE_BYTES: usize = 64;
/// Longest provider, model or credential name in a target.
const MAX_NAME_BYTES: usize = 256;

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Keeps header-safe printable ASCII; everything else becomes `?`.
fn header_safe(text: &str, max: usize) -> String {
    truncate(text, max).chars().map(|c| if (' '..='~').contains(&c) { c } else { '?' }).collect()
}

impl Decision {
    /// Validates a guest's decision. The error says what is wrong, for the operator and
    /// the policy author; the client sees only that the policy misbehaved.
    pub fn validate(raw: types::Decision, limits: &PolicyLimits) -> Result<Decision, String> {
        match raw {
            types::Decision::Reject(r) => Ok(Decision::Reject(Rejection {
                // A policy may only refuse; anything outside 4xx would let it fake success
                // or blame the gateway.
                status: if (400..=499).contains(&r.status) { r.status } else { 403 },
                code: header_safe(&r.code, MAX_REJECTION_CODE_BYTES),
                message: truncate(&r.message, MAX_REJECTION_MESSAGE_BYTES),
            })),
            types::Decision::Route(plan) => {
                if plan.targets.is_empty() {
                    return Err("plan has no targets".into());
                }
                if plan.targets.len() > limits.max_targets {
                    return Err(format!("plan has {} targets (limit {})", plan.targets.len(), limits.max_targets));
                }
                if plan.tags.len() > limits.max_tags {
                    return Err(format!("plan has {} tags (limit {})", plan.tags.len(), limits.max_tags));
                }
                if let Some(tag) = plan.tags.iter().find(|t| t.len() > limits.max_tag_bytes) {
                    return Err(format!("tag of {} bytes (limit {})", tag.len(), limits.max_tag_bytes));
                }
                let mut targets = Vec::with_capacity(plan.targets.len());
                for t in plan.targets {
                    for (what, value) in [("provider", &t.provider), ("model", &t.model), ("credential", &t.credential)] {
                        if value.len() > MAX_NAME_BYTES {
                            return Err(format!("target {what} of {} bytes (limit {MAX_NAME_BYTES})", value.len()));
                        }
                    }
                    if t.provider.is_empty() || t.model.is_empty() {
                        return Err("target with an empty provider or model".into());
                    }
                    if t.temperature.is_some_and(|x| !x.is_finite() || !(0.0..=2.0).contains(&x)) {
                        return Err("target temperature outside 0..=2".into());
                    }
                    targets.push(PlanTarget {
                        provider: t.provider,
                        model: t.model,
                        credential: t.credential,
                        max_tokens: t.max_tokens,
                        temperature: t.temperature,
                    });
                }
                Ok(Decision::Route(RoutePlan {
                    targets,
                    reserve_microdollars: plan.reserve_microdollars,
                    tags: plan.tags,
                    trace: header_safe(&plan.trace, limits.max_trace_bytes),
                    notify_complete: plan.notify_complete,
                }))
            }
        }
    }
}
