//! Security sweep: provider keys (stored credentials and per-request
//! `X-Provider-API-Key`) are canaries that must reach the upstream and nowhere else: not
//! the logs at TRACE, not any response body or header (also when the upstream echoes the
//! key in a 401), not `/metrics`, not the policy log, and not the raw bytes of the data dir.
//! Also: nothing in a request body or model name can aim the gateway at another host.

use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::mock::MockUpstream;

use crate::mocked::{self, KeyEchoStub, KINDS, OPENAI};
use crate::support::{Reply, ADMIN};

/// A fresh random canary.
fn canary(label: &str) -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    format!("sk-canary-{label}-{:016x}{:08x}", hasher.finish(), std::process::id())
}

/// Log output collected in memory.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }
}

/// Whether the process-wide capture is on.
static CAPTURING: AtomicBool = AtomicBool::new(false);

/// Turns on capture of every TRACE-level event of the process (and `log` records, through
/// the `tracing-log` bridge) into one buffer. It is a global subscriber, not a thread-local
/// `set_default`: with tests running in parallel, tracing's per-callsite interest cache
/// made a thread-local capture miss events (seen: "request failed" absent). It records
/// only while a capture is on, so the rest of the suite pays one atomic load per event.
/// Compiler internals (Cranelift, wasmtime, regalloc) see wasm bytecode, never a key,
/// and log at TRACE in volume, so they are left out.
fn capture() -> Logs {
    let logs = install_subscriber();
    CAPTURING.store(true, Ordering::SeqCst);
    logs
}

/// Installs the process-wide subscriber once: the in-memory capture above, and during a
/// whole-suite sweep (`sweep.rs`) a second layer writing every event to its `trace.log`.
pub fn install_subscriber() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        use tracing_subscriber::Layer;
        let logs = Logs::default();
        let writer = logs.clone();
        let filter = tracing_subscriber::filter::filter_fn(|meta| CAPTURING.load(Ordering::Relaxed) && not_compiler(meta.target()));
        let layer = tracing_subscriber::fmt::layer().with_ansi(false).with_writer(move || writer.clone()).with_filter(filter);
        let sweep = crate::sweep::trace_file().map(|file| {
            let file = Arc::new(file);
            // sled's TRACE lines dump store pages by the hundred thousand and slowed the
            // suite past its policy deadlines; what they show is in the data dirs, which the
            // sweep searches byte for byte anyway.
            let keep = tracing_subscriber::filter::filter_fn(|meta| {
                not_compiler(meta.target()) && !(meta.target().starts_with("sled") && tracing_subscriber::filter::LevelFilter::TRACE == *meta.level())
            });
            tracing_subscriber::fmt::layer().with_ansi(false).with_writer(file).with_filter(keep)
        });
        tracing_subscriber::registry().with(layer).with(sweep).try_init().expect("no other global subscriber in the test binary");
        logs
    })
    .clone()
}

fn not_compiler(target: &str) -> bool {
    !["cranelift", "wasmtime", "regalloc"].iter().any(|t| target.starts_with(t))
}

/// Ends the capture, also when the test fails.
struct StopCapture;

impl Drop for StopCapture {
    fn drop(&mut self) {
        CAPTURING.store(false, Ordering::SeqCst);
    }
}

/// A gateway on a real on-disk data dir, and every reply it gave.
struct DiskGateway {
    addr: SocketAddr,
    app: Arc<tollgate::App>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    replies: Vec<Reply>,
}

impl DiskGateway {
    async fn start(config: tollgate::Config) -> DiskGateway {
        let app = tollgate::App::start(config, None, &tollgate::Secret::new(ADMIN.into())).await.expect("app on disk");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(tollgate::server::serve(app.clone(), listener, async move {
            let _ = rx.await;
        }));
        DiskGateway { addr, app, shutdown: Some(tx), served: Some(served), replies: Vec::new() }
    }

    async fn call(&mut self, method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: Vec<u8>) -> &Reply {
        let reply = mocked::call_at(self.addr, method, path, token, headers, body).await;
        self.replies.push(reply);
        self.replies.last().expect("just pushed")
    }

    async fn admin(&mut self, method: &str, path: &str, body: Value) -> Value {
        let reply = self.call(method, path, Some(ADMIN), &[], body.to_string().into_bytes()).await;
        assert!(reply.status == 200 || reply.status == 201, "{method} {path}: {} {}", reply.status, reply.text());
        reply.json()
    }

    async fn chat(&mut self, token: &str, headers: &[(&str, &str)], body: Value) -> &Reply {
        self.call("POST", "/v1/chat/completions", Some(token), headers, body.to_string().into_bytes()).await
    }

    /// A tenant on the default policy routed to `provider`, with credential `main` = `key`
    /// if given.
    async fn tenant(&mut self, id: &str, provider: &str, key: Option<&str>, allow_request_keys: bool) -> String {
        self.admin("POST", "/admin/v1/tenants", json!({"id": id, "allow_request_keys": allow_request_keys})).await;
        let mut config = json!({"provider": provider});
        if let Some(key) = key {
            self.admin("PUT", &format!("/admin/v1/tenants/{id}/credentials/main"), json!({"provider": provider, "api_key": key})).await;
            config["credential"] = json!("main");
        }
        let hash = self.app.default_policy.to_string();
        self.admin("PUT", &format!("/admin/v1/tenants/{id}/policy"), json!({"hash": hash, "config": config})).await;
        let issued = self.admin("POST", &format!("/admin/v1/tenants/{id}/tokens"), json!({"scope": "inference"})).await;
        issued["token"].as_str().expect("token").to_string()
    }

    /// Stops serving (drains, flushes) and waits for it.
    async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(served) = self.served.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), served).await.expect("serve ends after shutdown").expect("serve task");
            result.expect("serve returns Ok");
        }
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn reply_text(reply: &Reply) -> String {
    let mut text = format!("{}\n", reply.status);
    for (name, value) in &reply.headers {
        text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
    }
    text.push_str(&reply.text());
    text
}

#[tokio::test(flavor = "current_thread")]
async fn provider_keys_reach_the_upstream_and_nowhere_else() {
    let logs = capture();
    let _stop = StopCapture;

    let stored = canary("stored");
    let per_request = canary("request");
    let mock = MockUpstream::start().await.expect("mock");
    let mut config = mocked::config(&mock);
    let mut stubs = Vec::new();
    for kind in KINDS {
        let stub = KeyEchoStub::start(kind).await;
        mocked::point(&mut config, &format!("{}-denied", kind.name), kind, &stub.url());
        stubs.push(stub);
    }
    let data = tempfile::tempdir().expect("tempdir");
    config.server.data_dir = data.path().join("data");
    let mut gw = DiskGateway::start(config).await;

    let mut tenants = Vec::new();
    for kind in KINDS {
        // A stored credential, answered by the mock...
        let ok = format!("canary-{}", kind.name);
        let token = gw.tenant(&ok, kind.name, Some(&stored), false).await;
        let plain = gw.chat(&token, &[], mocked::chat("mock", "hi")).await;
        assert_eq!(plain.status, 200, "{}: {}", kind.name, plain.text());
        let streamed = gw.chat(&token, &[], mocked::streamed(mocked::chat("mock", "hi"), true)).await;
        assert_eq!(streamed.status, 200, "{}: {}", kind.name, streamed.text());
        assert!(streamed.text().ends_with("data: [DONE]\n\n"));
        let failed = gw.chat(&token, &[], mocked::chat("mock-500", "hi")).await;
        assert_eq!(failed.status, 502);
        let cut = gw.chat(&token, &[], mocked::streamed(mocked::chat("mock-cut=1", "hi"), true)).await;
        assert!(cut.text().contains("upstream_stream_cut"), "{}", cut.text());
        // The other inbound APIs, on the same keys.
        for stream in [false, true] {
            let messages = json!({"model": "mock", "max_tokens": 20, "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
            let reply = gw.call("POST", "/v1/messages", Some(&token), &[], messages.to_string().into_bytes()).await;
            assert_eq!(reply.status, 200, "{}: {}", kind.name, reply.text());
        }
        for stream in [false, true] {
            let responses = json!({"model": "mock", "stream": stream, "input": "hi"});
            let reply = gw.call("POST", "/v1/responses", Some(&token), &[], responses.to_string().into_bytes()).await;
            assert_eq!(reply.status, 200, "{}: {}", kind.name, reply.text());
        }
        let embeddings = json!({"model": "mock", "input": ["hi", "there"]});
        let reply = gw.call("POST", "/v1/embeddings", Some(&token), &[], embeddings.to_string().into_bytes()).await;
        // Anthropic has no embeddings endpoint.
        assert_eq!(reply.status, if kind.name == "anthropic" { 502 } else { 200 }, "{}: {}", kind.name, reply.text());
        tenants.push(ok);

        // ...and refused by an upstream that echoes the key back in its 401 body.
        let denied = format!("canary-denied-{}", kind.name);
        let token = gw.tenant(&denied, &format!("{}-denied", kind.name), Some(&stored), false).await;
        for body in [mocked::chat("mock", "hi"), mocked::streamed(mocked::chat("mock", "hi"), true)] {
            let reply = gw.chat(&token, &[], body).await;
            assert_eq!((reply.status, reply.error_code().as_str()), (502, "upstream_auth_failed"), "{}", reply.text());
            assert!(reply.text().contains("[redacted]"), "{}", reply.text());
        }
        let messages = json!({"model": "mock", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
        let responses = json!({"model": "mock", "input": "hi"});
        for (path, body) in [("/v1/messages", messages), ("/v1/responses", responses)] {
            let reply = gw.call("POST", path, Some(&token), &[], body.to_string().into_bytes()).await;
            assert_eq!(reply.status, 502, "{path}: {}", reply.text());
            assert!(reply.text().contains("[redacted]"), "{path}: {}", reply.text());
        }
        tenants.push(denied);

        // A per-request key, on a tenant that allows them.
        let byok = format!("canary-byok-{}", kind.name);
        let token = gw.tenant(&byok, kind.name, None, true).await;
        let key_header = [("x-provider-api-key", per_request.as_str())];
        let reply = gw.chat(&token, &key_header, mocked::chat("mock", "hi")).await;
        assert_eq!(reply.status, 200, "{}: {}", kind.name, reply.text());
        let reply = gw.chat(&token, &key_header, mocked::streamed(mocked::chat("mock", "hi"), true)).await;
        assert_eq!(reply.status, 200, "{}: {}", kind.name, reply.text());
        let reply = gw.chat(&token, &key_header, mocked::chat("mock-429", "hi")).await;
        assert_eq!(reply.status, 429);
        tenants.push(byok);

        let byok_denied = format!("canary-byok-denied-{}", kind.name);
        let token = gw.tenant(&byok_denied, &format!("{}-denied", kind.name), None, true).await;
        let reply = gw.chat(&token, &key_header, mocked::chat("mock", "hi")).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (502, "upstream_auth_failed"), "{}", reply.text());
        tenants.push(byok_denied);
    }
    // A per-request key on a tenant that does not allow them is refused, not echoed.
    let token = gw.tenant("canary-no-byok", "openai", None, false).await;
    let reply = gw.chat(&token, &[("x-provider-api-key", per_request.as_str())], mocked::chat("mock", "hi")).await;
    assert_eq!(reply.status, 403);
    tenants.push("canary-no-byok".into());

    // Everything an operator can read back.
    for id in &tenants {
        for path in [format!("/admin/v1/tenants/{id}"), format!("/admin/v1/tenants/{id}/credentials"), format!("/admin/v1/tenants/{id}/usage"), format!("/admin/v1/tenants/{id}/usage/records"), format!("/admin/v1/tenants/{id}/policy/log")] {
            let reply = gw.call("GET", &path, Some(ADMIN), &[], Vec::new()).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        }
    }
    let metrics = gw.call("GET", "/metrics", None, &[], Vec::new()).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("tollgate_"), "{}", metrics.text());
    let tenants_list = gw.call("GET", "/admin/v1/tenants", Some(ADMIN), &[], Vec::new()).await;
    assert_eq!(tenants_list.status, 200);

    // The keys really were used, in the right header, and only there.
    let requests = mock.requests();
    for (secret, label) in [(&stored, "stored"), (&per_request, "per-request")] {
        let carrying: Vec<_> = requests.iter().filter(|r| r.headers.iter().any(|(_, v)| v.contains(secret.as_str()))).collect();
        assert!(carrying.len() >= 3, "the mock must have received the {label} key from every kind");
        for request in &carrying {
            let kind = KINDS.iter().find(|k| request.header(k.auth_header).is_some_and(|v| v.contains(secret.as_str()))).unwrap_or(&OPENAI);
            assert_eq!(request.header(kind.auth_header), Some(kind.auth_value(secret).as_str()));
        }
        assert!(requests.iter().all(|r| !contains(&r.body, secret.as_bytes()) && !r.path.contains(secret.as_str())), "the {label} key went upstream outside its header");
    }
    for stub in &stubs {
        assert_eq!(stub.keys().iter().filter(|k| **k == stored).count(), 4);
        assert_eq!(stub.keys().iter().filter(|k| **k == per_request).count(), 1);
    }

    gw.stop().await;
    gw.app.store.flush_blocking().expect("flush");

    // Nowhere else: responses, logs, the data dir.
    CAPTURING.store(false, Ordering::SeqCst);
    let log_text = logs.text();
    for expected in ["request failed", "Incorrect API key provided: [redacted]", "TRACE hyper"] {
        assert!(log_text.contains(expected), "the log capture missed {expected:?}: {log_text}");
    }
    for secret in [&stored, &per_request] {
        for reply in &gw.replies {
            let text = reply_text(reply);
            assert!(!text.contains(secret.as_str()), "a response carried a key: {text}");
        }
        if let Some(at) = log_text.find(secret.as_str()) {
            panic!("the logs carried a key: ...{}...", &log_text[at.saturating_sub(300)..(at + 100).min(log_text.len())]);
        }
        let mut all = Vec::new();
        files(data.path(), &mut all);
        assert!(!all.is_empty());
        for file in &all {
            let bytes = std::fs::read(file).expect("read data file");
            assert!(!contains(&bytes, secret.as_bytes()), "{} holds a key in the clear", file.display());
            assert!(!contains(&bytes, hex(secret.as_bytes()).as_bytes()), "{} holds a key in hex", file.display());
        }
    }
}

#[tokio::test]
async fn nothing_in_a_request_can_aim_the_gateway_at_another_host() {
    let mock = MockUpstream::start().await.expect("mock");
    let decoy = MockUpstream::start().await.expect("decoy");
    let gw = crate::support::Gateway::start_with(mocked::config(&mock)).await;
    let decoy_url = decoy.url();
    let url_model = format!("{decoy_url}/x");
    for kind in KINDS {
        let token = mocked::tenant(&gw, &format!("ssrf-{}", kind.name), kind.name, "sk-ssrf").await;
        let redirects = json!({"api_base": decoy_url, "base_url": decoy_url, "api_key": "sk-attacker", "baseURL": decoy_url, "endpoint": decoy_url, "url": decoy_url});
        let models = [
            "mock".to_string(),
            url_model.clone(),
            format!("{}/{url_model}", kind.name),
            format!("{}/../../x@{}", kind.name, decoy.addr),
            format!("mock@{}", decoy.addr),
        ];
        for model in &models {
            for stream in [false, true] {
                let mut body = mocked::chat(model, "hi");
                if let (Some(map), Value::Object(extra)) = (body.as_object_mut(), redirects.clone()) {
                    map.extend(extra);
                }
                if stream {
                    body = mocked::streamed(body, true);
                }
                let headers = [("x-api-base", decoy_url.as_str()), ("x-forwarded-host", &decoy.addr.to_string()), ("x-provider-base-url", decoy_url.as_str())];
                let reply = gw.call("POST", "/v1/chat/completions", Some(&token), &headers, body.to_string().into_bytes()).await;
                assert!(reply.status < 500 || reply.status == 502, "{} {model}: {} {}", kind.name, reply.status, reply.text());
                if model == "mock" {
                    assert_eq!(reply.status, 200, "{}: extra fields do not break a request: {}", kind.name, reply.text());
                }
            }
        }
    }
    assert_eq!(decoy.hits(), 0, "a request reached the decoy: {:?}", decoy.requests());
    // Whatever did go out went to the configured upstream only.
    assert!(mock.hits() > 0);
    for request in mock.requests() {
        assert!(!request.path.contains(&decoy.addr.to_string()), "{request:?}");
        assert_eq!(request.header("host"), Some(mock.addr.to_string().as_str()), "{request:?}");
    }
}
