//! The reserve phase: how much a request may cost, and the completion limit the gateway
//! sends so that it cannot cost more.
//!
//! The rule (SECURITY.md): a budgeted tenant never spends more than its limit plus the
//! cost of requests already admitted, and an admitted request never costs more than what
//! was reserved for it. So the reservation is the larger of the policy's estimate and
//! the gateway's own worst case (a policy can raise it, never lower it), every target is
//! sent the completion limit the worst case assumed, and settlement never bills past the
//! reservation.

use serde_json::{Map, Value};

use super::wire::ChatBody;
use crate::catalog::{worst_case_microdollars, Catalog};
use crate::error::GatewayError;
use crate::policy::{PlanTarget, RoutePlan};
use crate::tenants::Tenant;

/// Completion tokens per choice reserved, and sent upstream as the limit, when neither the
/// client nor the policy set one.
pub const DEFAULT_RESERVED_COMPLETION_TOKENS: u64 = 4096;

/// The completion limit per choice one target is sent: the smallest of the client's
/// `max_tokens` / `max_completion_tokens` and the policy's cap, else the default.
pub fn completion_limit(parsed: &ChatBody, target: &PlanTarget) -> u64 {
    let client = parsed.summary.max_tokens.map(u64::from);
    let cap = target.max_tokens.map(u64::from);
    match (client, cap) {
        (Some(c), Some(p)) => c.min(p),
        (Some(limit), None) | (None, Some(limit)) => limit,
        (None, None) => DEFAULT_RESERVED_COMPLETION_TOKENS,
    }
}

/// Writes `limit` into every completion-limit field the body carries, so whichever one
/// an adapter or upstream honours is the one reserved; a body with neither gets
/// `max_completion_tokens` (OpenAI's current field; the other adapters read either).
pub fn apply_completion_limit(body: &mut Map<String, Value>, limit: u64) {
    let mut set = false;
    for field in ["max_completion_tokens", "max_tokens"] {
        if body.get(field).is_some_and(|v| !v.is_null()) {
            body.insert(field.into(), Value::from(limit));
            set = true;
        }
    }
    if !set {
        body.insert("max_completion_tokens".into(), Value::from(limit));
    }
}

/// A plan target with no known price.
#[derive(Debug)]
pub struct Unpriced {
    /// Provider name.
    pub provider: String,
    /// Model name.
    pub model: String,
}

/// The most a plan can cost: at its dearest target, every prompt token at the dearest
/// prompt rate plus every choice running to the completion limit sent.
#[derive(Debug)]
pub struct WorstCase {
    /// Over the targets with a known price (an unpriced target is billed nothing).
    pub microdollars: u64,
    /// The first target with no known price, if any.
    pub unpriced: Option<Unpriced>,
}

/// The worst case of `plan` for `parsed`.
pub fn worst_case(catalog: &Catalog, plan: &RoutePlan, parsed: &ChatBody) -> WorstCase {
    let mut worst = WorstCase { microdollars: 0, unpriced: None };
    for target in &plan.targets {
        let Some(price) = catalog.price(&target.provider, &target.model) else {
            worst.unpriced.get_or_insert_with(|| Unpriced { provider: target.provider.clone(), model: target.model.clone() });
            continue;
        };
        let completion = completion_limit(parsed, target).saturating_mul(parsed.choices);
        worst.microdollars = worst.microdollars.max(worst_case_microdollars(&price, parsed.summary.prompt_token_estimate.into(), completion));
    }
    worst
}

/// Whether any budget (the tenant's, its end users' or a tag's) applies to the tenant.
pub fn is_budgeted(tenant: &Tenant) -> bool {
    tenant.budget.is_some() || tenant.user_budget_microdollars.is_some() || !tenant.tag_budgets_microdollars.is_empty()
}

/// The amount to reserve: the larger of the policy's estimate and the worst case. A
/// budgeted tenant's plan with an unpriced target fails closed (400 `price_unknown`),
/// whatever the policy estimated; an unbudgeted one is served, unpriced targets billed
/// at zero.
pub fn amount(policy_estimate: Option<u64>, worst_case: WorstCase, budgeted: bool) -> Result<u64, GatewayError> {
    match worst_case.unpriced {
        Some(Unpriced { provider, model }) if budgeted => Err(GatewayError::bad_request(
            "price_unknown",
            format!("no price is known for {provider}/{model}, and this tenant has a budget; the operator must add it to the catalog"),
        )),
        _ => Ok(worst_case.microdollars.max(policy_estimate.unwrap_or(0))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn priced(microdollars: u64) -> WorstCase {
        WorstCase { microdollars, unpriced: None }
    }

    fn partly_unpriced(microdollars: u64) -> WorstCase {
        WorstCase { microdollars, unpriced: Some(Unpriced { provider: "p".into(), model: "m".into() }) }
    }

    #[test]
    fn a_policy_can_raise_the_reservation_but_never_lower_it() -> Result<(), GatewayError> {
        assert_eq!(amount(Some(0), priced(500), true)?, 500);
        assert_eq!(amount(Some(1), priced(500), false)?, 500);
        assert_eq!(amount(Some(900), priced(500), true)?, 900);
        assert_eq!(amount(None, priced(500), true)?, 500);
        Ok(())
    }

    #[test]
    fn unknown_prices_fail_closed_for_budgeted_tenants_whatever_the_policy_says() -> Result<(), GatewayError> {
        assert!(matches!(amount(Some(1_000_000), partly_unpriced(0), true), Err(GatewayError::BadRequest { code: "price_unknown", .. })));
        // Unbudgeted: the priced targets still bound what may be billed.
        assert_eq!(amount(Some(0), partly_unpriced(700), false)?, 700);
        Ok(())
    }

    #[test]
    fn the_limit_is_written_into_every_field_present_or_added() {
        let mut body = Map::new();
        apply_completion_limit(&mut body, 7);
        assert_eq!(body.get("max_completion_tokens"), Some(&Value::from(7)));
        let mut both: Map<String, Value> = serde_json::from_str(r#"{"max_tokens": 5, "max_completion_tokens": 100000}"#).unwrap_or_default();
        apply_completion_limit(&mut both, 5);
        assert_eq!((both.get("max_tokens"), both.get("max_completion_tokens")), (Some(&Value::from(5)), Some(&Value::from(5))));
    }
}

/// Holds `microdollars` against the tenant's budget, its end user's and its tags' (the
/// plan's), and its concurrency caps. Work for a tenant deleted since authentication is
/// refused: its records are being purged, and nothing may be held or written for it.
#[tracing::instrument(name = "tollgate.reserve", level = "debug", skip_all, fields(tollgate.reserve.microdollars = crate::telemetry::int(microdollars)))]
pub async fn hold(
    app: &crate::app::App,
    caller: &super::caller::Caller,
    end_user: Option<&String>,
    tags: &[String],
    microdollars: u64,
) -> Result<crate::metering::Reservation, GatewayError> {
    let tenant = &caller.tenant;
    let mut sub_budgets = Vec::new();
    if let (Some(limit), Some(user)) = (tenant.user_budget_microdollars, end_user) {
        sub_budgets.push((format!("user:{user}"), limit));
    }
    for tag in tags {
        if let Some(limit) = tenant.tag_budgets_microdollars.get(tag) {
            sub_budgets.push((format!("tag:{tag}"), *limit));
        }
    }
    if !app.tenants.is_current(tenant) {
        return Err(GatewayError::Unauthorized("invalid token"));
    }
    Ok(app
        .metering
        .reserve_for(crate::metering::Hold {
            tenant_id: tenant.storage_id(),
            budget: tenant.budget,
            sub_budgets: &sub_budgets,
            request_id: &caller.request_id,
            microdollars,
            now_millis: caller.unix_millis,
            end_user: end_user.cloned(),
            tags: tags.to_vec(),
            caps: super::caller::concurrency_caps(tenant, &caller.token),
        })
        .await?)
}
