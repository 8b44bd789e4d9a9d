//! The budget rule, end to end: a budgeted tenant never spends more than its limit plus
//! what already-admitted requests cost, and an admitted request never costs more than
//! its reservation, whatever the tenant's policy or request says.

use serde_json::{json, Value};
use tollgate::catalog::ModelEntry;
use tollgate_tests::mock::MockUpstream;

use crate::mocked::{self, Kind, ANTHROPIC, GEMINI, KINDS, OPENAI};
use crate::support::Gateway;

/// $1 per Mtok in and out (one micro-dollar a token), cache reads at $0.10: every
/// billed token shows in the cost.
fn priced(provider: &str, model: &str) -> ModelEntry {
    ModelEntry {
        provider: provider.into(),
        model: model.into(),
        input_usd_per_mtok: 1.0,
        output_usd_per_mtok: 1.0,
        context_window: 100_000,
        cached_input_usd_per_mtok: Some(0.1),
        cache_write_usd_per_mtok: None,
    }
}

fn reservation(reply: &crate::support::Reply) -> u64 {
    reply.header("x-tollgate-reservation-microdollars").parse().unwrap_or(0)
}

/// A tenant with `budget_usd`, a credential for openai and the greedy policy with `config`.
async fn greedy_tenant(gw: &Gateway, id: &str, budget_usd: f64, config: Value) -> String {
    let token = mocked::create_tenant(gw, id, json!({"budget_usd": budget_usd})).await;
    mocked::put_credential(gw, id, "main", "openai", "sk-greedy").await;
    let hash = mocked::upload(gw, "tollgate-guest-greedy").await;
    mocked::admin_ok(gw, "PUT", &format!("/admin/v1/tenants/{id}/policy"), json!({"hash": hash, "config": config})).await;
    token
}

#[tokio::test]
async fn a_policy_cannot_lower_the_reservation_nor_serve_an_unpriced_model() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    config.models.push(priced("openai", "mock-latency=1000"));
    let gw = Gateway::start_with(config).await;

    // An unpriced model with `reserve: 0` fails closed for a budgeted tenant.
    let token = greedy_tenant(&gw, "unpriced", 1.0, json!({"provider": "openai", "model": "mock", "credential": "main", "reserve": 0})).await;
    let reply = gw.chat(&token, mocked::chat("default", "hi")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (400, "price_unknown"), "{}", reply.text());
    assert_eq!(mock.hits(), 0, "nothing reached the upstream");

    // A priced model with `reserve: 0`: the gateway's worst case is held anyway, so a
    // burst of concurrent requests cannot pass the budget. The worst case here is the
    // prompt plus 4,096 completion tokens, about $0.0041; the budget is $0.02.
    let token = greedy_tenant(&gw, "greedy", 0.02, json!({"provider": "openai", "model": "mock-latency=1000", "credential": "main", "reserve": 0})).await;
    let mut burst = Vec::new();
    for _ in 0..20 {
        let gw_addr = gw.addr;
        let token = token.clone();
        burst.push(tokio::spawn(async move {
            crate::mocked::call_at(gw_addr, "POST", "/v1/chat/completions", Some(&token), &[], mocked::chat("default", "hi").to_string().into_bytes()).await
        }));
    }
    let mut served = 0;
    for call in burst {
        let reply = call.await.expect("join");
        match reply.status {
            200 => {
                served += 1;
                assert!(reservation(&reply) >= 4096, "the worst case is held, not the policy's 0: {}", reservation(&reply));
            }
            402 => assert_eq!(reply.error_code(), "budget_exceeded"),
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert!((1..=4).contains(&served), "at most budget / worst case requests are admitted at once: {served}");
    let spent: u64 = mocked::ledger(&gw, "greedy").await.iter().map(|r| r["cost_microdollars"].as_u64().unwrap_or(0)).sum();
    assert!(spent <= 20_000, "spent {spent} of a 20,000 budget");
}

/// The completion limit each kind's upstream was sent, from the recorded request body.
fn limit_sent(kind: Kind, body: &Value) -> Vec<u64> {
    let fields: &[&str] = match kind.name {
        "openai" => &["/max_tokens", "/max_completion_tokens"],
        "anthropic" => &["/max_tokens"],
        _ => &["/generationConfig/maxOutputTokens"],
    };
    fields.iter().filter_map(|f| body.pointer(f).and_then(Value::as_u64)).collect()
}

#[tokio::test]
async fn the_completion_limit_reserved_is_the_one_every_provider_is_sent() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    for kind in KINDS {
        config.models.push(priced(kind.name, "mock"));
    }
    let gw = Gateway::start_with(config).await;
    for kind in KINDS {
        let id = format!("limits-{}", kind.name);
        let token = mocked::tenant(&gw, &id, kind.name, "sk-limits").await;
        // Both fields: the smaller one is reserved and sent, whichever the upstream reads.
        let mut body = mocked::chat("mock", "hi");
        body["max_tokens"] = json!(10);
        body["max_completion_tokens"] = json!(100_000);
        let before = mock.requests().len();
        let reply = gw.chat(&token, body).await;
        assert_eq!(reply.status, 200, "{}: {}", kind.name, reply.text());
        let sent = mock.requests()[before].json().expect("json body");
        let limits = limit_sent(kind, &sent);
        assert!(!limits.is_empty() && limits.iter().all(|l| *l == 10), "{}: sent {limits:?} in {sent}", kind.name);
        assert!(reservation(&reply) < 100, "{}: reserved {}", kind.name, reservation(&reply));

        // No limit from the client: the one reserved is sent.
        let before = mock.requests().len();
        let reply = gw.chat(&token, mocked::chat("mock", "hi")).await;
        assert_eq!(reply.status, 200, "{}: {}", kind.name, reply.text());
        let sent = mock.requests()[before].json().expect("json body");
        assert_eq!(limit_sent(kind, &sent), vec![tollgate::server::reserve::DEFAULT_RESERVED_COMPLETION_TOKENS], "{}: {sent}", kind.name);
    }
    // `n` choices each may run to the limit: all of them are reserved.
    let token = mocked::tenant(&gw, "choices", OPENAI.name, "sk-n").await;
    let mut body = mocked::chat("mock", "hi");
    body["max_tokens"] = json!(100);
    body["n"] = json!(3);
    let reply = gw.chat(&token, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reservation(&reply) >= 300, "three choices of 100 tokens: reserved {}", reservation(&reply));
    let mut body = mocked::chat("mock", "hi");
    body["n"] = json!(0);
    assert_eq!(gw.chat(&token, body).await.error_code(), "invalid_type");
}

#[tokio::test]
async fn cached_prompt_tokens_are_billed_at_the_cached_price() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    for kind in [OPENAI, ANTHROPIC, GEMINI] {
        config.models.push(priced(kind.name, "mock-cached=1000"));
    }
    let gw = Gateway::start_with(config).await;
    for kind in [OPENAI, ANTHROPIC, GEMINI] {
        let id = format!("cache-{}", kind.name);
        let token = mocked::tenant(&gw, &id, kind.name, "sk-cache").await;
        let reply = gw.chat(&token, mocked::chat("mock-cached=1000", "hi")).await;
        assert_eq!(reply.status, 200, "{}: {}", kind.name, reply.text());
        let row = mocked::ledger_row(&gw, &id, &reply.header("x-request-id")).await;
        let (prompt, cached, completion) = (row["prompt_tokens"].as_u64().unwrap_or(0), row["cached_tokens"].as_u64().unwrap_or(0), row["completion_tokens"].as_u64().unwrap_or(0));
        assert_eq!(cached, 1000, "{}: {row}", kind.name);
        // 1,000 cached tokens at $0.10/Mtok are 100 micro-dollars, not 1,000.
        let expected = (prompt - cached) + 100 + completion;
        assert_eq!(row["cost_microdollars"].as_u64(), Some(expected), "{}: {row}", kind.name);
    }
}

#[tokio::test]
async fn a_streamed_usage_chunk_shows_what_is_billed_when_the_upstream_sends_none() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    config.models.push(priced("openai", "mock-nousage"));
    let gw = Gateway::start_with(config).await;
    let token = mocked::tenant(&gw, "estimated", "openai", "sk-est").await;
    let reply = gw.chat(&token, mocked::streamed(mocked::chat("mock-nousage", "hello there"), true)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let chunks = mocked::sse_chunks(&reply);
    let usage = chunks.iter().rev().find_map(|c| c.get("usage").filter(|u| !u.is_null()).cloned()).expect("a usage chunk");
    let row = mocked::ledger_row(&gw, "estimated", &reply.header("x-request-id")).await;
    assert!(row["completion_tokens"].as_u64().unwrap_or(0) > 0, "{row}");
    assert_eq!((usage["prompt_tokens"].clone(), usage["completion_tokens"].clone()), (row["prompt_tokens"].clone(), row["completion_tokens"].clone()), "chunk {usage} vs ledger {row}");
}

#[tokio::test]
async fn an_admitted_request_never_costs_more_than_its_reservation() {
    // The upstream reports a million prompt tokens for a two-word prompt: far past the
    // estimate the reservation was made from.
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    config.models.push(priced("openai", "mock-cached=1000000"));
    let gw = Gateway::start_with(config).await;
    let token = mocked::create_tenant(&gw, "overrun", json!({"budget_usd": 10.0})).await;
    mocked::put_credential(&gw, "overrun", "main", "openai", "sk-overrun").await;
    mocked::default_policy(&gw, "overrun", json!({"provider": "openai", "credential": "main"})).await;
    let reply = gw.chat(&token, mocked::chat("mock-cached=1000000", "hi there")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reserved = reservation(&reply);
    let row = mocked::ledger_row(&gw, "overrun", &reply.header("x-request-id")).await;
    assert_eq!(row["prompt_tokens"].as_u64(), Some(1_000_000), "the usage is recorded as reported: {row}");
    assert_eq!(row["cost_microdollars"].as_u64(), Some(reserved), "billed at the reservation, not past it: {row}");
}
