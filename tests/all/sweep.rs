//! The whole-suite canary sweep (`tests/canary_sweep.sh`). With `TOLLGATE_CANARY_SWEEP`
//! set to a directory, every gateway the suite starts through `support::Gateway` keeps its
//! store there on disk, every reply it gives is appended to `replies.log`, every event of
//! the process at TRACE goes to `trace.log`, and every secret the suite hands the gateway
//! (master keys, the operator token, provider keys in bodies and headers, minted tokens)
//! is listed in `canaries.txt`. The `canary-sweep` binary then searches it all.
//! Without the variable, nothing here does anything.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::support::Reply;

/// The sweep directory, when this run is a sweep.
pub fn dir() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| std::env::var_os("TOLLGATE_CANARY_SWEEP").map(PathBuf::from)).as_ref()
}

/// Appends to one file of the sweep directory.
fn append(name: &str, bytes: &[u8]) {
    static LOCK: Mutex<()> = Mutex::new(());
    let Some(dir) = dir() else { return };
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(name)).expect("sweep file");
    file.write_all(bytes).expect("sweep write");
}

/// Lists a secret to search for. `kind` decides where it may legitimately appear: a
/// `token` is in the reply that minted it, nothing else anywhere.
pub fn canary(kind: &str, value: &str) {
    if value.len() >= 12 {
        append("canaries.txt", format!("{kind}\t{value}\n").as_bytes());
    }
}

/// A fresh data dir for the next gateway.
pub fn data_dir() -> Option<PathBuf> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = dir()?.join("data").join(NEXT.fetch_add(1, Ordering::Relaxed).to_string());
    std::fs::create_dir_all(&path).expect("sweep data dir");
    Some(path)
}

/// Records a request's secrets: provider keys in JSON bodies (`api_key`, at any depth)
/// and in the `X-Provider-API-Key` header.
pub fn request(headers: &[(&str, &str)], body: &[u8]) {
    if dir().is_none() {
        return;
    }
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("x-provider-api-key") {
            canary("provider_key", value);
        }
    }
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        visit(&json, &mut |key, value| {
            if key == "api_key" {
                canary("provider_key", value);
            }
        });
    }
}

/// Records a reply, and the tokens it minted.
pub fn reply(method: &str, path: &str, reply: &Reply) {
    if dir().is_none() {
        return;
    }
    let mut text = format!("=== {method} {path} -> {}\n", reply.status);
    for (name, value) in &reply.headers {
        text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
    }
    text.push('\n');
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(&reply.body);
    bytes.push(b'\n');
    append("replies.log", &bytes);
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&reply.body) {
        visit(&json, &mut |key, value| {
            if key == "token" {
                canary("token", value);
            }
        });
    }
}

fn visit(value: &serde_json::Value, found: &mut dyn FnMut(&str, &str)) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                if let serde_json::Value::String(text) = value {
                    found(key, text);
                }
                visit(value, found);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| visit(item, found)),
        _ => {}
    }
}

/// Where TRACE output goes during a sweep.
pub fn trace_file() -> Option<std::fs::File> {
    let dir = dir()?;
    Some(std::fs::OpenOptions::new().create(true).append(true).open(dir.join("trace.log")).expect("trace.log"))
}
