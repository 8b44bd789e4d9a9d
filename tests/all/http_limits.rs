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
