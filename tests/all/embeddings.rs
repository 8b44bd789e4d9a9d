//! `POST /v1/embeddings` end to end: the exact bodies sent to OpenAI-compatible and Gemini
//! upstreams, the OpenAI-shaped answer (floats or base64), usage and ledger rows priced
//! per input token, budgets, a target with no embeddings endpoint, and bad inputs.

use base64::Engine;
use serde_json::{json, Value};
use tollgate::catalog::ModelEntry;
use tollgate_tests::mock::MockUpstream;

use crate::mocked;
use crate::support::{Gateway, Reply};

/// $1 per Mtok in (one micro-dollar an input token), nothing out.
fn priced(provider: &str, model: &str, usd_per_mtok: f64) -> ModelEntry {
    ModelEntry {
        provider: provider.into(),
        model: model.into(),
        input_usd_per_mtok: usd_per_mtok,
        output_usd_per_mtok: 0.0,
        context_window: 8_192,
        cached_input_usd_per_mtok: None,
        cache_write_usd_per_mtok: None,
    }
}

async fn embed(gw: &Gateway, token: &str, body: Value) -> Reply {
    gw.call("POST", "/v1/embeddings", Some(token), &[], body.to_string().into_bytes()).await
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
}

fn base64_floats(value: &Value) -> Vec<f64> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(value.as_str().unwrap_or_default()).expect("base64");
    bytes.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
}

#[tokio::test]
async fn openai_passes_the_body_through_and_bills_reported_usage() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    config.models.push(priced("openai", "mock-embed", 1.0));
    let gw = Gateway::start_with(config).await;
    let token = mocked::tenant(&gw, "oa", "openai", "sk-oa").await;

    let reply = embed(&gw, &token, json!({"model": "mock-embed", "input": ["abcd", "efgh12"], "dimensions": 3, "user": "u1"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-oa"));
    assert_eq!(sent.json(), Some(json!({"model": "mock-embed", "input": ["abcd", "efgh12"], "dimensions": 3, "user": "u1"})));

    let body = reply.json();
    assert_eq!((body["object"].clone(), body["model"].clone()), (json!("list"), json!("mock-embed")));
    assert_eq!(body["data"][1]["object"], "embedding");
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(floats(&body["data"][0]["embedding"]), vec![1.0, 1.25, 1.5]);
    assert_eq!(floats(&body["data"][1]["embedding"]), vec![2.0, 2.25, 2.5]);
    // The mock reports (4 + 6) / 4, rounded up.
    assert_eq!(body["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));

    let row = mocked::ledger_row(&gw, "oa", &reply.header("x-request-id")).await;
    assert_eq!((row["provider"].as_str(), row["model"].as_str(), row["outcome"].as_str()), (Some("openai"), Some("mock-embed"), Some("success")), "{row}");
    assert_eq!((row["prompt_tokens"].as_u64(), row["completion_tokens"].as_u64(), row["cost_microdollars"].as_u64()), (Some(3), Some(0), Some(3)), "{row}");
    assert_eq!(reply.header("x-tollgate-target"), "openai/mock-embed");
}

#[tokio::test]
async fn gemini_batches_the_inputs_and_is_billed_by_estimate_in_base64() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    config.models.push(priced("gemini", "mock-gembed", 1.0));
    let gw = Gateway::start_with(config).await;
    let token = mocked::tenant(&gw, "gm", "gemini", "AIza-gm").await;

    let reply = embed(&gw, &token, json!({"model": "mock-gembed", "input": ["abcd", "efgh12"], "dimensions": 2, "encoding_format": "base64"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = &mock.requests()[0];
    assert_eq!(sent.path, "/v1beta/models/mock-gembed:batchEmbedContents");
    assert_eq!(sent.header("x-goog-api-key"), Some("AIza-gm"));
    assert_eq!(
        sent.json(),
        Some(json!({"requests": [
            {"model": "models/mock-gembed", "content": {"parts": [{"text": "abcd"}]}, "outputDimensionality": 2},
            {"model": "models/mock-gembed", "content": {"parts": [{"text": "efgh12"}]}, "outputDimensionality": 2},
        ]}))
    );
    let body = reply.json();
    assert_eq!(base64_floats(&body["data"][0]["embedding"]), vec![1.0, 1.25]);
    assert_eq!(base64_floats(&body["data"][1]["embedding"]), vec![2.0, 2.25]);
    // Gemini reports no usage: 10 input bytes at 4 a token.
    assert_eq!(body["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    let row = mocked::ledger_row(&gw, "gm", &reply.header("x-request-id")).await;
    assert_eq!((row["prompt_tokens"].as_u64(), row["cost_microdollars"].as_u64(), row["outcome"].as_str()), (Some(3), Some(3), Some("success")), "{row}");
}

#[tokio::test]
async fn demo_vectors_budgets_refusals_and_bad_inputs() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    // A thousand micro-dollars an input token, so a budget runs out quickly.
    config.models.push(priced("demo", "demo-dear", 1000.0));
    let gw = Gateway::start_with(config).await;
    let token = gw.demo_tenant("dm", 1.0).await;

    let reply = embed(&gw, &token, json!({"model": "demo-embed", "input": "hello"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    let vector = floats(&body["data"][0]["embedding"]);
    assert_eq!(vector.len(), 8);
    assert!((vector.iter().map(|v| v * v).sum::<f64>() - 1.0).abs() < 1e-3, "a unit vector: {vector:?}");
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    let again = embed(&gw, &token, json!({"model": "demo-embed", "input": ["hello"], "dimensions": 4})).await.json();
    assert_eq!(floats(&again["data"][0]["embedding"]).len(), 4);
    let row = mocked::ledger_row(&gw, "dm", &reply.header("x-request-id")).await;
    assert_eq!((row["provider"].as_str(), row["model"].as_str(), row["completion_tokens"].as_u64()), (Some("demo"), Some("demo-embed"), Some(0)), "{row}");

    // 4,400 bytes is 1,100 tokens at $0.001 each: a $1.10 worst case against a $1 budget.
    let refused = embed(&gw, &token, json!({"model": "demo-dear", "input": "a".repeat(4400)})).await;
    assert_eq!((refused.status, refused.error_code().as_str()), (402, "budget_exceeded"), "{}", refused.text());

    for (body, code) in [
        (json!({"model": "demo-embed", "input": []}), "empty_input"),
        (json!({"model": "demo-embed"}), "missing_input"),
        (json!({"model": "demo-embed", "input": [1, 2, 3]}), "token_ids_unsupported"),
        (json!({"model": "demo-embed", "input": vec!["a"; 2049]}), "too_many_inputs"),
        (json!({"model": "demo-embed", "input": "x", "encoding_format": "int8"}), "invalid_encoding_format"),
        (json!({"model": "demo-embed", "input": "x", "dimensions": 0}), "invalid_dimensions"),
    ] {
        let reply = embed(&gw, &token, body.clone()).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (400, code), "{body}: {}", reply.text());
    }
}

#[tokio::test]
async fn an_anthropic_target_has_no_embeddings() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let token = mocked::tenant(&gw, "an", "anthropic", "sk-ant").await;
    let reply = embed(&gw, &token, json!({"model": "claude-haiku", "input": "hi"})).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(reply.text().contains("no embeddings endpoint"), "{}", reply.text());
    assert_eq!(mock.hits(), 0, "nothing reached the upstream");
}
