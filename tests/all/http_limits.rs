//! Hostile HTTP input on a raw socket: too many headers, slow headers, unbounded chunked
//! bodies. Each gets a clear 4xx or a closed connection, never a panic, and the gateway
//! keeps serving.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::Gateway;

fn small_limits() -> tollgate::Config {
    let mut config = tollgate::Config::embedded();
    config.server.header_read_timeout = Duration::from_millis(300);
    config.server.max_body_bytes = 64 << 10;
    config
}

/// Reads until EOF or `limit`; returns what arrived.
async fn read_all(socket: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, socket.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn too_many_headers_get_431() {
    let gw = Gateway::start_with(small_limits()).await;
    let mut socket = TcpStream::connect(gw.addr).await.expect("connect");
    let mut request = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        request.push_str(&format!("X-Filler-{i}: y\r\n"));
    }
    request.push_str("\r\n");
    socket.write_all(request.as_bytes()).await.expect("write");
    let answer = read_all(&mut socket, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(gw.call("GET", "/healthz", None, &[], Vec::new()).await.status, 200);
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let gw = Gateway::start_with(small_limits()).await;
    let mut socket = TcpStream::connect(gw.addr).await.expect("connect");
    socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.expect("write");
    let started = std::time::Instant::now();
    let answer = read_all(&mut socket, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(4), "connection must close soon after the header timeout");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn unbounded_chunked_body_is_refused_while_streaming() {
    let gw = Gateway::start_with(small_limits()).await;
    let token = gw.demo_tenant("t", 10.0).await;
    let mut socket = TcpStream::connect(gw.addr).await.expect("connect");
    let head = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n");
    socket.write_all(head.as_bytes()).await.expect("write");
    let chunk = format!("{:x}\r\n{}\r\n", 8192, "a".repeat(8192));
    // Keep sending well past the 64 KiB cap; the gateway answers without waiting for an end.
    for _ in 0..64 {
        if socket.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let answer = read_all(&mut socket, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request_too_large"), "{answer}");
}

#[tokio::test]
async fn garbage_request_line_gets_400_not_a_panic() {
    let gw = Gateway::start_with(small_limits()).await;
    let mut socket = TcpStream::connect(gw.addr).await.expect("connect");
    socket.write_all(b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n").await.expect("write");
    let answer = read_all(&mut socket, Duration::from_secs(5)).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(gw.call("GET", "/healthz", None, &[], Vec::new()).await.status, 200);
}

/// Sends a chat request's headers announcing a 1 KiB body, then its first byte; returns
/// the socket, for the caller to trickle the rest.
async fn start_trickle(gw: &Gateway, token: &str) -> TcpStream {
    let mut socket = TcpStream::connect(gw.addr).await.expect("connect");
    let head = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 1024\r\n\r\n{{");
    socket.write_all(head.as_bytes()).await.expect("write");
    socket
}

#[tokio::test]
async fn a_body_trickled_one_byte_a_second_gets_408() {
    let mut config = small_limits();
    config.server.body_read_timeout = Duration::from_millis(1500);
    let gw = Gateway::start_with(config).await;
    let token = gw.demo_tenant("trickler", 10.0).await;
    let socket = start_trickle(&gw, &token).await;
    let started = std::time::Instant::now();
    let (mut read, mut write) = socket.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if write.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4), "408 and close soon after the 1.5 s body timeout, not {:?}", started.elapsed());
    trickle.abort();
    assert_eq!(gw.chat(&token, serde_json::json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]})).await.status, 200);
}

#[tokio::test]
async fn trickling_bodies_count_against_the_tenants_concurrency_cap() {
    let mut config = small_limits();
    config.server.body_read_timeout = Duration::from_secs(30);
    let gw = Gateway::start_with(config).await;
    let token = gw.demo_tenant("holder", 10.0).await;
    let patch = gw.admin("PATCH", "/admin/v1/tenants/holder", serde_json::json!({"rate_limits": {"max_concurrent": 2}})).await;
    assert_eq!(patch.status, 200, "{}", patch.text());
    let first = start_trickle(&gw, &token).await;
    let second = start_trickle(&gw, &token).await;
    // Both trickling requests are authenticated and waiting on their bodies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hello = serde_json::json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]});
    let refused = gw.chat(&token, hello.clone()).await;
    assert_eq!((refused.status, refused.error_code().as_str()), (429, "rate_limit_exceeded"), "{}", refused.text());
    // Hanging up gives the slots back.
    drop((first, second));
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let reply = gw.chat(&token, hello.clone()).await;
        if reply.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slots not released: {}", reply.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
