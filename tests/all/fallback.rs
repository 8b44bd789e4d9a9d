//! Retries and fallback across targets: a transient failure is retried on the same target,
//! a failing target falls back to the next in the plan, 4xx is not retried, and a stream
//! that has started is never switched to another target (it ends with an error event and
//! is billed for what flowed).

use serde_json::{json, Value};
use tollgate::catalog::ModelEntry;
use tollgate_tests::mock::MockUpstream;

use crate::mocked::{self, Kind, ANTHROPIC, KINDS, OPENAI};
use crate::support::Gateway;

fn hello(model: &str) -> Value {
    mocked::chat(model, "Hello fallback")
}

#[tokio::test]
async fn one_transient_failure_is_retried_on_the_same_target_for_every_kind() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    for kind in KINDS {
        let token = mocked::tenant(&gw, &format!("retry-{}", kind.name), kind.name, "sk-retry").await;
        for stream in [false, true] {
            // `fail-first` counts per model name, so each case gets its own.
            let model = format!("mock-{}-{stream}-fail-first=1", kind.name);
            let before = mock.hits();
            let mut body = hello(&model);
            if stream {
                body = mocked::streamed(body, true);
            }
            let reply = gw.chat(&token, body).await;
            assert_eq!(reply.status, 200, "{} stream={stream}: {}", kind.name, reply.text());
            assert_eq!(mock.hits() - before, 2, "{} stream={stream}: one failure, one success", kind.name);
            if stream {
                assert_eq!(mocked::sse_data(&reply).last().map(String::as_str), Some("[DONE]"));
                assert_eq!(mocked::streamed_text(&mocked::sse_chunks(&reply)), "mock reply to: Hello fallback");
            } else {
                assert_eq!(reply.json()["choices"][0]["message"]["content"], "mock reply to: Hello fallback");
            }
            let row = mocked::ledger_row(&gw, &format!("retry-{}", kind.name), &reply.header("x-request-id")).await;
            assert_eq!(row["outcome"], "success");
        }
    }
}

/// A tenant on the stock failover policy with credentials `oa` (openai) and `ant`
/// (anthropic) and the given chain.
async fn failover_tenant(gw: &Gateway, id: &str, chain: Value) -> String {
    let token = mocked::create_tenant(gw, id, json!({})).await;
    for (name, provider) in [("oa", "openai"), ("ant", "anthropic"), ("gem", "gemini"), ("bk", "backup")] {
        if gw.app.config.providers.contains_key(provider) {
            mocked::put_credential(gw, id, name, provider, &format!("sk-{name}")).await;
        }
    }
    let hash = mocked::upload(gw, "tollgate-policy-failover").await;
    mocked::admin_ok(gw, "PUT", &format!("/admin/v1/tenants/{id}/policy"), json!({"hash": hash, "config": {"chain": chain}})).await;
    token
}

#[tokio::test]
async fn a_failing_target_falls_back_to_the_next_and_the_response_names_it() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let chain = json!([{"provider": "openai", "model": "mock-a-500", "credential": "oa"}, {"provider": "anthropic", "model": "mock-b", "credential": "ant"}]);
    let token = failover_tenant(&gw, "fo", chain).await;
    for stream in [false, true] {
        let before = mock.requests().len();
        let mut body = hello("default");
        if stream {
            body = mocked::streamed(body, true);
        }
        let reply = gw.chat(&token, body).await;
        assert_eq!(reply.status, 200, "stream={stream}: {}", reply.text());
        assert_eq!(reply.header("x-tollgate-target"), "anthropic/mock-b");
        assert_eq!(reply.header("x-tollgate-policy-trace"), "openai/mock-a-500 > anthropic/mock-b");
        if stream {
            assert_eq!(mocked::sse_data(&reply).last().map(String::as_str), Some("[DONE]"));
            assert_eq!(mocked::streamed_text(&mocked::sse_chunks(&reply)), "mock reply to: Hello fallback");
        } else {
            assert_eq!(reply.json()["choices"][0]["message"]["content"], "mock reply to: Hello fallback");
        }
        // The first target was tried attempts_per_target times, then the second once.
        let seen: Vec<(String, Option<String>)> = mock.requests()[before..].iter().map(|r| (r.path.clone(), r.header("x-api-key").map(str::to_owned))).collect();
        assert_eq!(seen, vec![
            ("/v1/chat/completions".to_string(), None),
            ("/v1/chat/completions".to_string(), None),
            ("/v1/messages".to_string(), Some("sk-ant".to_string())),
        ]);
        // Each target gets its own credential.
        assert_eq!(mock.requests()[before].header("authorization"), Some("Bearer sk-oa"));
        let row = mocked::ledger_row(&gw, "fo", &reply.header("x-request-id")).await;
        assert_eq!((row["outcome"].as_str(), row["provider"].as_str(), row["model"].as_str()), (Some("success"), Some("anthropic"), Some("mock-b")));
    }
}

#[tokio::test]
async fn a_client_error_from_the_upstream_is_not_retried() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    for kind in KINDS {
        let token = mocked::tenant(&gw, &format!("bad-{}", kind.name), kind.name, "sk-bad").await;
        let before = mock.hits();
        let reply = gw.chat(&token, hello("mock-400")).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (400, "upstream_rejected"), "{}: {}", kind.name, reply.text());
        assert_eq!(mock.hits() - before, 1, "{}: 400 is not retried", kind.name);
    }
}

/// A config where the kinds under test are served by `primary` and a `backup` provider
/// (OpenAI-shaped) by `secondary`, with a price for the cut model so its cost shows.
fn two_mock_config(primary: &MockUpstream, secondary: &MockUpstream, cut_model: &str) -> tollgate::Config {
    let mut config = mocked::config(primary);
    mocked::point(&mut config, "backup", OPENAI, &secondary.url());
    for kind in KINDS {
        // $1 per Mtok: a micro-dollar per token, so any billed token shows in the cost.
        config.models.push(ModelEntry { provider: kind.name.into(), model: cut_model.into(), input_usd_per_mtok: 1.0, output_usd_per_mtok: 1.0, context_window: 100_000, cached_input_usd_per_mtok: None, cache_write_usd_per_mtok: None });
    }
    config
}

#[tokio::test]
async fn a_started_stream_that_is_cut_is_not_switched_and_is_billed_for_what_flowed() {
    let primary = MockUpstream::start().await.expect("mock");
    let secondary = MockUpstream::start().await.expect("mock");
    let cut_model = "mock-cut=2";
    let gw = Gateway::start_with(two_mock_config(&primary, &secondary, cut_model)).await;
    let credential = |kind: Kind| match kind.name {
        "openai" => "oa",
        "anthropic" => "ant",
        _ => "gem",
    };
    for kind in [OPENAI, ANTHROPIC, mocked::GEMINI] {
        let id = format!("cut-{}", kind.name);
        let chain = json!([{"provider": kind.name, "model": cut_model, "credential": credential(kind)}, {"provider": "backup", "model": "mock", "credential": "bk"}]);
        let token = failover_tenant(&gw, &id, chain).await;
        let before = primary.hits();
        let reply = gw.chat(&token, mocked::streamed(hello("default"), true)).await;
        assert_eq!(reply.status, 200, "{}: {}", kind.name, reply.text());
        assert_eq!(reply.header("x-tollgate-target"), format!("{}/{cut_model}", kind.name));
        let data = mocked::sse_data(&reply);
        assert!(!data.iter().any(|d| d == "[DONE]"), "{}: {data:?}", kind.name);
        let chunks = mocked::sse_chunks(&reply);
        assert_eq!(chunks.last(), Some(&json!({"error": {"message": "the upstream stream ended early", "type": "server_error", "code": "upstream_stream_cut"}})), "{}", kind.name);
        // Two of the three pieces flowed, and nothing from any other target.
        let text = mocked::streamed_text(&chunks);
        assert!(!text.is_empty() && "mock reply to: Hello fallback".starts_with(&text) && text.len() < "mock reply to: Hello fallback".len(), "{}: {text:?}", kind.name);
        assert_eq!(primary.hits() - before, 1, "{}: a started stream is not retried", kind.name);
        assert_eq!(secondary.hits(), 0, "{}: a started stream is not switched to the next target", kind.name);

        let row = mocked::ledger_row(&gw, &id, &reply.header("x-request-id")).await;
        assert_eq!((row["outcome"].as_str(), row["provider"].as_str(), row["model"].as_str()), (Some("upstream_cut"), Some(kind.name), Some(cut_model)), "{row}");
        let prompt = row["prompt_tokens"].as_u64().unwrap_or(0);
        let completion = row["completion_tokens"].as_u64().unwrap_or(0);
        assert!(prompt > 0 && completion >= (text.len() as u64).div_ceil(4), "{}: a cut stream is billed for what flowed ({} bytes): {row}", kind.name, text.len());
        assert_eq!(row["cost_microdollars"].as_u64(), Some(prompt + completion), "{}: {row}", kind.name);
    }
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_is_billed_for_what_flowed() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    for kind in KINDS {
        let id = format!("hangup-{}", kind.name);
        let token = mocked::tenant(&gw, &id, kind.name, "sk-hangup").await;
        // Ten pieces, 100 ms apart; the client leaves after the first.
        let body = mocked::streamed(hello("mock-chunks=10-pace=100"), true);
        let (mut sender, connection, request) = raw_chat(&gw, &token, &body).await;
        let response = tokio::time::timeout(std::time::Duration::from_secs(5), sender.send_request(request)).await.expect("in time").expect("response");
        assert_eq!(response.status(), 200);
        let request_id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let mut body = response.into_body();
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), http_body_util::BodyExt::frame(&mut body)).await.expect("first chunk");
        assert!(matches!(first, Some(Ok(_))), "{}", kind.name);
        drop(body);
        drop(sender);
        connection.abort();

        let row = mocked::ledger_row(&gw, &id, &request_id).await;
        assert_eq!(row["outcome"], "client_disconnected", "{}: {row}", kind.name);
        assert!(row["prompt_tokens"].as_u64().unwrap_or(0) > 0, "{}: {row}", kind.name);
        assert!(row["latency_ms"].as_u64().unwrap_or(u64::MAX) < 900, "{}: the gateway noticed before the upstream finished: {row}", kind.name);
    }
}

type RawSender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// A chat request on a connection of its own, which the test can cut at any moment.
async fn raw_chat(gw: &Gateway, token: &str, body: &Value) -> (RawSender, tokio::task::JoinHandle<hyper::Result<()>>, http::Request<http_body_util::Full<bytes::Bytes>>) {
    let stream = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    let connection = tokio::spawn(connection);
    let request = http::Request::post(format!("http://{}/v1/chat/completions", gw.addr))
        .header("host", gw.addr.to_string())
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .expect("request");
    (sender, connection, request)
}

/// A client that hangs up while the gateway still waits on the upstream (no byte of the
/// answer sent yet): hyper drops the handler, and the request is still settled at once as
/// a disconnect billed for its prompt; its reservation does not linger until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_before_the_answer_is_settled_at_once() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(mocked::config(&mock)).await;
    let id = "hangup-plain";
    let token = mocked::tenant(&gw, id, OPENAI.name, "sk-hangup").await;
    let (mut sender, connection, request) = raw_chat(&gw, &token, &hello("mock-latency=2000")).await;
    let pending = tokio::spawn(async move { sender.send_request(request).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    pending.abort();
    connection.abort();

    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = mocked::ledger(&gw, id).await;
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(rows.len(), 1, "the dropped request was not settled before the upstream answered: {rows:?}");
    assert_eq!(rows[0]["outcome"], "client_disconnected", "{}", rows[0]);
    assert_eq!(rows[0]["model"], "mock-latency=2000", "billed at the target being tried: {}", rows[0]);
    assert!(rows[0]["prompt_tokens"].as_u64().unwrap_or(0) > 0, "{}", rows[0]);
    let status = gw.app.metering.status(&gw.storage_id(id), None, tollgate::clock::unix_millis()).await.expect("status");
    assert_eq!(status.reserved_microdollars, 0, "the reservation was released");
}

#[tokio::test]
async fn one_tenants_revoked_key_never_cools_a_model_down_for_other_tenants() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    config.upstream.cooldown_after = 2;
    config.upstream.cooldown = std::time::Duration::from_secs(60);
    let gw = Gateway::start_with(config).await;
    let hash = mocked::upload(&gw, "tollgate-policy-failover").await;
    let chain = json!([{"provider": "openai", "model": "mock-shared", "credential": "oa"}, {"provider": "anthropic", "model": "mock-backup", "credential": "ant"}]);
    let mut tokens = Vec::new();
    for (id, key) in [("revoked", format!("{}-a", tollgate_tests::mock::REVOKED_KEY_PREFIX)), ("healthy", "sk-healthy".to_string())] {
        let token = mocked::create_tenant(&gw, id, json!({})).await;
        mocked::put_credential(&gw, id, "oa", "openai", &key).await;
        mocked::put_credential(&gw, id, "ant", "anthropic", "sk-ant").await;
        mocked::admin_ok(&gw, "PUT", &format!("/admin/v1/tenants/{id}/policy"), json!({"hash": hash, "config": {"chain": chain}})).await;
        tokens.push(token);
    }
    for round in 0..4 {
        let reply = gw.chat(&tokens[0], hello("default")).await;
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
        assert_eq!(reply.header("x-tollgate-target"), "anthropic/mock-backup", "round {round}: the revoked key falls back");
    }
    let before = mock.hits();
    let reply = gw.chat(&tokens[1], hello("default")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-tollgate-target"), "openai/mock-shared", "the other tenant is still served by the model");
    assert_eq!(mock.hits() - before, 1);
}
