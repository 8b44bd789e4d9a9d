//! Graceful shutdown: a stream in flight when the gateway is told to stop still completes
//! (with `[DONE]`) and is settled in the ledger; new connections are not served.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tollgate_tests::mock::MockUpstream;

use crate::mocked;
use crate::support::Gateway;

#[tokio::test]
async fn an_in_flight_stream_completes_and_is_settled_while_new_connections_are_refused() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut gw = Gateway::start_with(mocked::config(&mock)).await;
    let token = mocked::tenant(&gw, "drain", "openai", "sk-drain").await;

    // Ten pieces, 50 ms apart: about half a second of streaming.
    let body = mocked::streamed(mocked::chat("mock-chunks=10-pace=50", "Hello graceful shutdown"), true);
    let stream = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{}/v1/chat/completions", gw.addr))
        .header("host", gw.addr.to_string())
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request)).await.expect("headers in time").expect("response");
    assert_eq!(response.status(), 200);
    let request_id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut body = response.into_body();
    let mut received = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("first chunk in time");
    if let Some(Ok(frame)) = first {
        received.extend_from_slice(frame.data_ref().map(|d| d.as_ref()).unwrap_or_default());
    }
    assert!(!received.is_empty(), "the stream started before shutdown");

    let signalled = Instant::now();
    gw.shutdown();

    // While the stream drains, a new connection is not served.
    let late = tokio::time::timeout(Duration::from_millis(300), async {
        let stream = tokio::net::TcpStream::connect(gw.addr).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
        tokio::spawn(connection);
        let request = http::Request::get(format!("http://{}/healthz", gw.addr)).header("host", gw.addr.to_string()).body(Full::new(Bytes::new())).ok()?;
        sender.send_request(request).await.ok().map(|r| r.status())
    })
    .await;
    assert!(!matches!(late, Ok(Some(_))), "a connection opened after shutdown was served: {late:?}");

    // The in-flight stream runs to its end.
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect()).await.expect("stream completes in time").expect("stream completes cleanly");
    received.extend_from_slice(&rest.to_bytes());
    let text = String::from_utf8_lossy(&received).into_owned();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let reply = crate::support::Reply { status: 200, headers: http::HeaderMap::new(), body: received };
    assert_eq!(mocked::streamed_text(&mocked::sse_chunks(&reply)), "mock reply to: Hello graceful shutdown");
    assert!(signalled.elapsed() >= Duration::from_millis(200), "the stream was really in flight during shutdown");

    // It was settled, though the server has stopped taking requests.
    let mut row = None;
    for _ in 0..100 {
        row = gw.app.metering.ledger(&gw.storage_id("drain"), 0, u64::MAX, 100).await.expect("ledger").into_iter().find(|r| r.request_id == request_id);
        if row.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let row = row.expect("the drained stream has a ledger row");
    assert_eq!(row.outcome, "success");
    assert!(row.completion_tokens > 0 && row.prompt_tokens > 0, "{row:?}");

    // Once drained, the listener is gone: connections are refused.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match tokio::net::TcpStream::connect(gw.addr).await {
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
                break;
            }
            Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Ok(_) => panic!("the gateway still accepts connections {:?} after shutdown", signalled.elapsed()),
        }
    }
}
