//! Policies written in Python and JavaScript (`guest-sdk/python`, `guest-sdk/js`) run in
//! the gateway like Rust ones: the ports of the stock `default` and `budget-guard`
//! policies upload, and serve and refuse chats exactly as the Rust originals do, through
//! the real runtime and host imports. Their logic is unit-tested natively beside them
//! (`guest-sdk/test-native.sh`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate::policy::{Decision, PolicyLimits};
use tollgate::PolicyError;
use tollgate_tests::language_guests::{self, Language};

use crate::support::{context, request, Gateway, Reply, Sandbox, ADMIN};

/// The limits a Python or JavaScript policy needs raised. Its component carries an
/// interpreter (CPython ~19 MB, SpiderMonkey ~13 MB), over the default 8 MiB upload limit;
/// a Python one creates 38 core module instances (CPython's libraries are linked as
/// separate modules), over the default 8. A call costs ~5 ms in Python and ~2 ms in
/// JavaScript (a Rust one ~0.15 ms): on this loaded two-core machine a Python call passed
/// the default 10 ms deadline now and then, and a tenant calling back to back would use
/// the default 250 ms-a-second CPU share. Their memory (a 13 MiB and a 9 MiB initial heap)
/// fits the default 16 MiB.
fn interpreter_limits() -> PolicyLimits {
    PolicyLimits {
        upload_bytes: 32 << 20,
        max_core_instances_per_component: 40,
        cpu_deadline_ms: 100,
        tenant_cpu_ms_per_second: 1000,
        ..PolicyLimits::default()
    }
}

async fn gateway() -> Gateway {
    let mut config = tollgate::Config::embedded();
    config.policy = interpreter_limits();
    Gateway::start_with(config).await
}

/// A stock policy in each language: Rust (the original) first, then its ports.
fn ports(rust: &str, port: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("rust", tollgate_tests::guests::wasm(rust)),
        ("python", language_guests::wasm(Language::Python, &format!("python-{port}"))),
        ("js", language_guests::wasm(Language::JavaScript, &format!("js-{port}"))),
    ]
}

/// Creates demo tenant `id` ($10 a month), uploads `wasm` as the operator and assigns it
/// with `config`.
async fn tenant_running(gw: &Gateway, id: &str, wasm: Vec<u8>, config: &Value) -> Tenant {
    let token = gw.demo_tenant(id, 10.0).await;
    let started = Instant::now();
    let uploaded = crate::mocked::call_at_within(Duration::from_secs(300), gw.addr, "POST", "/admin/v1/policies", Some(ADMIN), &[("content-type", "application/wasm")], wasm).await;
    let upload_time = started.elapsed();
    assert_eq!(uploaded.status, 201, "{id}: {}", uploaded.text());
    let hash = uploaded.json()["hash"].as_str().expect("hash").to_string();
    let tenant = Tenant { id: id.into(), token, hash, upload_time };
    tenant.configure(gw, config).await;
    tenant
}

struct Tenant {
    id: String,
    token: String,
    hash: String,
    upload_time: Duration,
}

impl Tenant {
    /// Assigns the tenant's policy again, with `config`.
    async fn configure(&self, gw: &Gateway, config: &Value) {
        let assigned = gw.admin("PUT", &format!("/admin/v1/tenants/{}/policy", self.id), json!({"hash": self.hash, "config": config})).await;
        assert_eq!(assigned.status, 200, "{}: {}", self.id, assigned.text());
    }
}

fn chat(model: &str, user: Option<&str>) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hello"}]});
    if let Some(user) = user {
        body["user"] = json!(user);
    }
    body
}

/// What a client observes of a policy's decision: status, the target and trace headers,
/// and the error object of a refusal.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    status: u16,
    target: String,
    trace: String,
    error: Value,
}

fn seen(reply: &Reply) -> Seen {
    let error = if reply.status == 200 { Value::Null } else { reply.json()["error"].clone() };
    Seen { status: reply.status, target: reply.header("x-tollgate-target"), trace: reply.header("x-tollgate-policy-trace"), error }
}

fn served(target: &str, trace: &str) -> Seen {
    Seen { status: 200, target: target.into(), trace: trace.into(), error: Value::Null }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_decides_alike_in_rust_python_and_javascript() {
    let gw = gateway().await;
    let config = json!({"provider": "demo", "model": "demo-large", "allowed_models": ["demo-small", "demo-large"], "max_tokens": 50});
    let mut decisions = Vec::new();
    for (language, wasm) in ports("tollgate-policy-default", "default") {
        let size = wasm.len();
        let tenant = tenant_running(&gw, &format!("default-{language}"), wasm, &config).await;
        let started = Instant::now();
        let first = gw.chat(&tenant.token, chat("demo-small", None)).await;
        println!("{language} default: {size} bytes, upload {:?}, first chat {:?}", tenant.upload_time, started.elapsed());
        let mut seen_here = vec![seen(&first)];
        for model in ["default", "demo/demo-small", "gpt-4o"] {
            seen_here.push(seen(&gw.chat(&tenant.token, chat(model, None)).await));
        }
        // A typo in the config: refused alike, only the parser's words differ.
        tenant.configure(&gw, &json!({"provder": "demo"})).await;
        let typo = gw.chat(&tenant.token, chat("demo-small", None)).await;
        assert_eq!((typo.status, typo.error_code().as_str()), (400, "invalid_policy_config"), "{language}: {}", typo.text());
        let message = typo.json()["error"]["message"].as_str().unwrap_or("").to_string();
        assert!(message.starts_with("invalid policy config: unknown field `provder`"), "{language}: {message}");
        decisions.push((language, seen_here));
    }
    let (_, rust) = &decisions[0];
    assert_eq!(rust[0], served("demo/demo-small", "default:demo-small"));
    assert_eq!(rust[1], served("demo/demo-large", "default:demo-large"));
    assert_eq!(rust[2], served("demo/demo-small", "default:demo/demo-small"));
    assert_eq!(rust[3].status, 400);
    assert_eq!(rust[3].error["code"], "model_not_allowed");
    assert_eq!(rust[3].error["message"], "model 'gpt-4o' is not allowed for this tenant; allowed: demo-small, demo-large");
    for (language, port) in &decisions[1..] {
        assert_eq!(port, rust, "{language} decides as the Rust policy does");
    }
}

/// Sends `body` until `done` holds for the reply (bounded): `on-complete` and settlement
/// run after the answer was sent, so their effect shows on a later request.
async fn until(gw: &Gateway, token: &str, body: &Value, done: impl Fn(&Reply) -> bool) -> Reply {
    for _ in 0..100 {
        let reply = gw.chat(token, body.clone()).await;
        if done(&reply) {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no reply to {body} met the condition within 100 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_guard_caps_users_and_downgrades_alike_in_rust_python_and_javascript() {
    let gw = gateway().await;
    // Each end user may spend 1 micro-dollar, which `on-complete` counts in the policy's
    // memory; the tenant downgrades at a millionth of its $10 budget, so after one chat.
    let capped = json!({
        "primary": {"provider": "demo", "model": "demo-large"},
        "fallback": {"provider": "demo", "model": "demo-small"},
        "downgrade_at": 0.5,
        "user_cap_microdollars": 1,
    });
    let downgrading = json!({
        "primary": {"provider": "demo", "model": "demo-large"},
        "fallback": {"provider": "demo", "model": "demo-small"},
        "downgrade_at": 0.000001,
    });
    let mut decisions = Vec::new();
    for (language, wasm) in ports("tollgate-policy-budget-guard", "budget-guard") {
        let size = wasm.len();
        let tenant = tenant_running(&gw, &format!("guard-{language}"), wasm, &capped).await;
        let started = Instant::now();
        let first = gw.chat(&tenant.token, chat("any", Some("ann"))).await;
        println!("{language} budget-guard: {size} bytes, upload {:?}, first chat {:?}", tenant.upload_time, started.elapsed());
        let refused = until(&gw, &tenant.token, &chat("any", Some("ann")), |r| r.status != 200).await;
        let other = gw.chat(&tenant.token, chat("any", Some("bob"))).await;

        tenant.configure(&gw, &downgrading).await;
        let downgraded = until(&gw, &tenant.token, &chat("any", None), |r| r.header("x-tollgate-policy-trace").starts_with("downgraded")).await;
        decisions.push((language, vec![seen(&first), seen(&refused), seen(&other), seen(&downgraded)]));
    }
    let (_, rust) = &decisions[0];
    assert_eq!(rust[0], served("demo/demo-large", "primary at 0% of budget"));
    assert_eq!(rust[1].status, 429);
    assert_eq!(rust[1].error["code"], "user_budget_exceeded");
    let message = rust[1].error["message"].as_str().unwrap_or("");
    assert!(message.starts_with("end user 'ann' has used its budget for "), "{message}");
    assert_eq!(rust[2], served("demo/demo-large", "primary at 0% of budget"));
    assert_eq!(rust[3], served("demo/demo-small", "downgraded at 0% of budget"));
    for (language, port) in &decisions[1..] {
        assert_eq!(port, rust, "{language} decides as the Rust policy does");
    }
}

/// A refused memory write reaches each language's policy as its own error value (Rust's
/// `MemoryError`, Python's and JavaScript's `MemoryDenied`): budget-guard's `on-complete`
/// logs the same warning in all three when the tenant's memory quota is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_memory_write_is_logged_alike_in_rust_python_and_javascript() {
    let mut config = tollgate::Config::embedded();
    // Smaller than one counter (a 22-byte key and 8 bytes): every write is refused.
    config.policy = PolicyLimits { memory_quota_bytes: 16, ..interpreter_limits() };
    let gw = Gateway::start_with(config).await;
    let capped = json!({
        "primary": {"provider": "demo", "model": "demo-large"},
        "fallback": {"provider": "demo", "model": "demo-small"},
        "user_cap_microdollars": 1,
    });
    let mut logged = Vec::new();
    for (language, wasm) in ports("tollgate-policy-budget-guard", "budget-guard") {
        let tenant = tenant_running(&gw, &format!("full-{language}"), wasm, &capped).await;
        let reply = gw.chat(&tenant.token, chat("any", Some("ann"))).await;
        assert_eq!(reply.status, 200, "{language}: {}", reply.text());
        // `on-complete` runs after the answer was sent.
        let mut lines = Vec::new();
        for _ in 0..100 {
            let log = gw.admin("GET", &format!("/admin/v1/tenants/{}/policy/log", tenant.id), Value::Null).await.json();
            lines = log["data"].as_array().cloned().unwrap_or_default();
            if !lines.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seen: Vec<(String, String)> =
            lines.iter().map(|l| (l["level"].as_str().unwrap_or("").to_string(), l["message"].as_str().unwrap_or("").to_string())).collect();
        logged.push((language, seen));
    }
    let expected = vec![("warn".to_string(), "could not record spend of end user 'ann': memory quota exceeded".to_string())];
    for (language, seen) in &logged {
        assert_eq!(seen, &expected, "{language}");
    }
}

/// Prints each component's size, compile time (upload) and time per call through the
/// policy runtime, beside the Rust original's (run with `--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_and_call_times() {
    let sandbox = Sandbox::new(interpreter_limits());
    let config = r#"{"provider":"openai","credential":"main"}"#;
    for (language, wasm) in ports("tollgate-policy-default", "default") {
        let size = wasm.len();
        let started = Instant::now();
        let hash = sandbox.runtime.upload(wasm).await.expect("upload");
        let compile = started.elapsed();
        let (chat, ctx) = (request("gpt-4o"), context("t", config));
        let call = || sandbox.runtime.route(hash, sandbox.scope("t"), &chat, &ctx);
        let started = Instant::now();
        let first = call().await.expect("route");
        let first_call = started.elapsed();
        assert!(matches!(first.decision, Decision::Route(_)), "{language}: {:?}", first.decision);
        let calls = 50u32;
        let started = Instant::now();
        for _ in 0..calls {
            call().await.expect("route");
        }
        let per_call = started.elapsed() / calls;
        println!("{language} default: {size} bytes, compile {compile:?}, first call {first_call:?}, per call {per_call:?}");
    }
}

/// With the default limits, both interpreters' components are refused at upload, each
/// with the limit it passes named: the operator learns which one to raise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limits_refuse_interpreter_components_naming_the_limit() {
    let sandbox = Sandbox::new(PolicyLimits::default());
    let js = language_guests::wasm(Language::JavaScript, "js-default");
    let size = js.len();
    match sandbox.runtime.upload(js).await {
        Err(PolicyError::Upload(e)) => assert_eq!(e.to_string(), format!("policy is {size} bytes; the limit is 8388608")),
        other => panic!("expected the upload limit, got {other:?}"),
    }
    let sandbox = Sandbox::new(PolicyLimits { upload_bytes: 32 << 20, ..PolicyLimits::default() });
    match sandbox.runtime.upload(language_guests::wasm(Language::Python, "python-default")).await {
        Err(PolicyError::Upload(e)) => assert_eq!(
            e.to_string(),
            "policy does not compile: The component transitively contains 38 core module instances, which exceeds the configured maximum of 8 in the pooling allocator"
        ),
        other => panic!("expected the core instance limit, got {other:?}"),
    }
}

/// The SDKs' and the ported policies' own native tests (`python -m unittest`,
/// `node --test`), run by `guest-sdk/test-native.sh`, pass: `cargo test` runs them too.
#[tokio::test]
async fn the_native_tests_of_the_python_and_javascript_sdks_pass() {
    let script = tollgate_tests::guests::workspace_root().join("guest-sdk").join("test-native.sh");
    let run = tokio::process::Command::new("bash").arg(&script).kill_on_drop(true).output();
    let output = tokio::time::timeout(Duration::from_secs(300), run).await.expect("the native tests within 5 minutes").expect("bash");
    assert!(
        output.status.success(),
        "guest-sdk/test-native.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
