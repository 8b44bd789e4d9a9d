//! What the process-level tests share: a minimal blocking HTTP/1.1 client and the
//! `tollgate` binary run as a child process on loopback.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The operator token every test gateway is started with.
pub const ADMIN: &str = "crash-loop-admin-token";
/// The master key gateways on a shared store are given (64 hex digits), as an operator
/// would deploy it: the same on every replica.
pub const MASTER_KEY: &str = "4f1c2e3d5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f";
/// A request that takes longer than this failed (and was not acknowledged).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// The gateway must be listening this long after it is started.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// A minimal blocking HTTP/1.1 client: one connection per request, `Connection: close`.

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

pub fn io_error(message: impl Into<String>) -> std::io::Error {
    std::io::Error::other(message.into())
}

/// Sends one request and reads the whole answer. A body cut short (the gateway died
/// mid-answer) is an error: such an answer was not acknowledged.
pub fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> std::io::Result<Reply> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        if Instant::now() > deadline {
            return Err(io_error("request timed out"));
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e),
        }
        if raw.len() > 64 << 20 {
            return Err(io_error("answer over 64 MiB"));
        }
    }
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> std::io::Result<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| io_error("no complete head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| io_error("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).ok_or_else(|| io_error("bad status line"))?;
    let headers: Vec<(String, String)> = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let rest = &raw[end + 4..];
    let find = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(length) = find("content-length") {
        let length: usize = length.parse().map_err(|_| io_error("bad content-length"))?;
        if rest.len() < length {
            return Err(io_error("body cut short"));
        }
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Reply { status, headers, body })
}

fn dechunk(mut rest: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| io_error("chunked body cut short"))?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| io_error("bad chunk size"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).map_err(|_| io_error("bad chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(io_error("chunked body cut short"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Checks every 20 ms until `check` holds; how long that took, or `None` after `within`.
pub fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

// ---------------------------------------------------------------------------------------
// The gateway process.

/// Writes `tollgate.toml` into `dir` with the reservation lease `lease_ms`; a short one
/// has a killed replica's holds charged soon.
pub fn lease_config(dir: &Path, lease_ms: u64) -> PathBuf {
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, format!("[store]\nlease_ms = {lease_ms}\n")).expect("config");
    path
}

/// Writes `tollgate.toml` holding `toml` into `dir`: pass it as `TOLLGATE_CONFIG` to
/// [`Gateway::start_with`].
pub fn config_file(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, toml).expect("config");
    path
}

/// Where a running gateway listens; cheap to copy into load threads.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub addr: SocketAddr,
}

impl Client {
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Value) -> std::io::Result<Reply> {
        let bytes = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        http(self.addr, method, path, token, &bytes)
    }

    /// An admin call that must succeed (verification, setup).
    pub fn admin_ok(&self, method: &str, path: &str, body: Value) -> Value {
        let reply = self.call(method, path, Some(ADMIN), body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(reply.ok(), "{method} {path}: {} {}", reply.status, String::from_utf8_lossy(&reply.body));
        reply.json()
    }
}

pub struct Gateway {
    pub child: Child,
    pub client: Client,
    /// The last lines the process wrote to stderr (warnings and errors).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Starts `tollgate serve` on `dir` with the embedded defaults.
    pub fn start(dir: &Path) -> Gateway {
        Self::start_with(dir, &[])
    }

    /// Starts `tollgate serve` on `dir`, with `env` set (the master key and store url
    /// are taken from it, never from the test's own environment).
    pub fn start_with(dir: &Path, env: &[(&str, &str)]) -> Gateway {
        let mut child = serve_command(dir, env).spawn().expect("spawn tollgate");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let kept = log.clone();
        // Drains stderr for the life of the process (a full pipe would block it).
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("tollgate listening on http://").and_then(|rest| rest.split(' ').next()) {
                    let _ = tx.send(addr.to_string());
                }
                let mut kept = kept.lock().unwrap();
                kept.push(line);
                if kept.len() > 200 {
                    kept.remove(0);
                }
            }
        });
        let started = Instant::now();
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(addr) => break addr.parse().expect("listen address"),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the gateway exited at start ({status}); the store did not open?\n{}", log.lock().unwrap().join("\n"));
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                panic!("the gateway did not listen within {START_TIMEOUT:?}\n{}", log.lock().unwrap().join("\n"));
            }
        };
        Gateway { child, client: Client { addr }, log }
    }

    /// Starts `tollgate serve` as [`Gateway::start_with`] does, expecting it to refuse to
    /// start: returns what it wrote to stderr once it exited with a failure. Panics if it
    /// listens, or still runs after [`START_TIMEOUT`].
    pub fn refused(dir: &Path, env: &[(&str, &str)]) -> String {
        let mut child = serve_command(dir, env).spawn().expect("spawn tollgate");
        let mut stderr = child.stderr.take().expect("stderr");
        // Read on a thread: a full pipe would block the process.
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                panic!("the gateway neither exited nor failed within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = reader.join().expect("stderr reader");
        assert!(!status.success(), "the gateway exited successfully instead of refusing to start:\n{log}");
        assert!(!log.contains("tollgate listening on"), "the gateway listened before it exited:\n{log}");
        log
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

}

/// `tollgate serve` on `dir`, listening on a free loopback port, stderr piped; the
/// environment's master keys and store url are replaced by `env`'s.
fn serve_command(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .env_remove("TOLLGATE_MASTER_KEY")
        .env_remove("TOLLGATE_MASTER_KEY_PREVIOUS")
        .env_remove("TOLLGATE_STORE_URL")
        .env_remove("TOLLGATE_CONFIG")
        .env("RUST_LOG", "warn");
    for (name, value) in env {
        command.env(name, value);
    }
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    command
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
