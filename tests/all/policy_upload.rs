//! Upload validation: every refusal says what is wrong; content addressing shares one
//! compiled copy; the LRU bounds residency without losing policies.

use tollgate::policy::{PolicyLimits, UploadError};
use tollgate::PolicyError;

use crate::support::{context, request, Sandbox};

async fn upload_error(sandbox: &Sandbox, bytes: Vec<u8>) -> String {
    match sandbox.runtime.upload(bytes).await {
        Err(PolicyError::Upload(e)) => e.to_string(),
        other => panic!("expected an upload error, got {other:?}"),
    }
}

#[tokio::test]
async fn random_bytes_are_not_wasm() {
    let sandbox = Sandbox::new(PolicyLimits::default());
    let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    assert_eq!(upload_error(&sandbox, noise).await, "not a WebAssembly binary (missing the \\0asm header)");
    assert_eq!(upload_error(&sandbox, Vec::new()).await, "not a WebAssembly binary (missing the \\0asm header)");
}

#[tokio::test]
async fn core_module_is_refused_with_a_hint() {
    let sandbox = Sandbox::new(PolicyLimits::default());
    let module = wat::parse_str("(module (func (export \"route\")))").expect("wat");
    assert_eq!(
        upload_error(&sandbox, module).await,
        "this is a core WebAssembly module, not a component; build the policy with `--target wasm32-wasip2`"
    );
}

#[tokio::test]
async fn component_of_another_world_is_refused() {
    let sandbox = Sandbox::new(PolicyLimits::default());
    let empty = wat::parse_str("(component)").expect("wat");
    let message = upload_error(&sandbox, empty).await;
    assert!(message.starts_with("policy does not implement the tollgate:policy@0.1.0 world:"), "{message}");
}

#[tokio::test]
async fn forbidden_imports_are_named() {
    let sandbox = Sandbox::new(PolicyLimits::default());
    let sockets = wat::parse_str(r#"(component (import "wasi:sockets/tcp@0.2.0" (instance)))"#).expect("wat");
    assert_eq!(
        upload_error(&sandbox, sockets).await,
        "policy imports 'wasi:sockets/tcp@0.2.0', which policies may not use (allowed: tollgate:policy/*, and the wasi:cli, io, clocks, random, filesystem interfaces Rust's std links)"
    );
}

#[tokio::test]
async fn broken_component_reports_a_compile_error() {
    let sandbox = Sandbox::new(PolicyLimits::default());
    let mut wasm = tollgate_tests::guests::wasm("tollgate-policy-default");
    let cut = wasm.len() / 2;
    wasm.truncate(cut);
    let message = upload_error(&sandbox, wasm).await;
    assert!(message.starts_with("policy does not compile:"), "{message}");
}

#[tokio::test]
async fn oversized_upload_is_refused_before_compiling() {
    let sandbox = Sandbox::new(PolicyLimits { upload_bytes: 1000, ..PolicyLimits::default() });
    let wasm = tollgate_tests::guests::wasm("tollgate-policy-default");
    let size = wasm.len();
    assert_eq!(upload_error(&sandbox, wasm).await, format!("policy is {size} bytes; the limit is 1000"));
    assert!(matches!(sandbox.runtime.upload(vec![0; 2000]).await, Err(PolicyError::Upload(UploadError::TooLarge { .. }))));
}

/// A copy of `wasm` with a custom section appended: a distinct, equally valid component.
fn variant(wasm: &[u8], n: u32) -> Vec<u8> {
    let name = format!("variant-{n}");
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.push((1 + name.len()) as u8); // section size (small: one LEB byte)
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out
}

#[tokio::test]
async fn same_bytes_share_one_compiled_copy_and_the_lru_reloads_evicted_ones() {
    let sandbox = Sandbox::new(PolicyLimits { compiled_cache: 2, ..PolicyLimits::default() });
    let wasm = tollgate_tests::guests::wasm("tollgate-policy-default");
    let a = sandbox.runtime.upload(wasm.clone()).await.expect("upload");
    assert_eq!(sandbox.runtime.upload(wasm.clone()).await.expect("again"), a);
    assert_eq!(sandbox.runtime.cached_components(), 1);
    let mut hashes = vec![a];
    for n in 0..3 {
        hashes.push(sandbox.runtime.upload(variant(&wasm, n)).await.expect("variant"));
    }
    assert_eq!(sandbox.runtime.cached_components(), 2, "the LRU holds at most its capacity");
    for (i, hash) in hashes.iter().enumerate() {
        let tenant = format!("t{i}");
        let outcome = sandbox.runtime.route(*hash, sandbox.scope(&tenant), &request("gpt-4o"), &context(&tenant, "{}")).await;
        assert!(outcome.is_ok(), "evicted policy {hash} must reload: {outcome:?}");
    }
    assert_eq!(sandbox.runtime.cached_components(), 2);
}

#[tokio::test]
async fn unknown_hash_is_not_found() {
    let sandbox = Sandbox::new(PolicyLimits::default());
    let hash = tollgate::PolicyHash::of(b"never uploaded");
    let result = sandbox.runtime.route(hash, sandbox.scope("t"), &request("x"), &context("t", "{}")).await;
    assert_eq!(result.expect_err("not found").to_string(), format!("policy {hash} is not uploaded"));
}

/// A component whose one core module is `module` (WAT).
fn component_with(module: &str) -> Vec<u8> {
    wat::parse_str(format!("(component (core module {module}))")).expect("wat")
}

/// Compile bombs (hundreds of thousands of functions, a function with huge locals or a
/// huge body) are refused with 400 `policy_too_complex` naming the limit, before any
/// compiling: quickly. The stock policies pass the same limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_bombs_are_refused_quickly_naming_the_limit() {
    let gw = crate::support::Gateway::start().await;
    let bombs = [
        (component_with(&"(func)".repeat(200_000)), "policy defines functions: 200000; the limit is 20000 (policy.max_functions)"),
        (component_with(&format!("(func (local {}))", "i64 ".repeat(40_000))), "policy has a function with locals: 40000; the limit is 5000 (policy.max_function_locals)"),
        (component_with(&format!("(func {})", "nop ".repeat(600_000))), "policy has a function body of bytes: 600002; the limit is 524288 (policy.max_function_body_bytes)"),
    ];
    for (wasm, message) in bombs {
        let started = std::time::Instant::now();
        let reply = gw.call("POST", "/admin/v1/policies", Some(crate::support::ADMIN), &[], wasm).await;
        let took = started.elapsed();
        assert_eq!((reply.status, reply.error_code()), (400, "policy_too_complex".to_string()), "{}", reply.text());
        assert_eq!(reply.json()["error"]["message"], message);
        assert!(took < std::time::Duration::from_secs(2), "refusing took {took:?}");
    }
    for stock in ["tollgate-policy-default", "tollgate-policy-failover", "tollgate-policy-budget-guard", "tollgate-policy-aliases", "tollgate-guest-hostile"] {
        tollgate::policy::check_complexity(&tollgate_tests::guests::wasm(stock), &PolicyLimits::default()).unwrap_or_else(|e| panic!("{stock}: {e}"));
    }
}

/// Compiles run in a bounded pool, and a tenant may have one compile queued or running:
/// a tenant's concurrent uploads past that get 429 `compile_busy`, while its first
/// upload (and the operator's) go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_gets_one_compile_at_a_time() {
    let gw = crate::support::Gateway::start().await;
    gw.demo_tenant("uploader", 10.0).await;
    let reply = gw.admin("POST", "/admin/v1/tenants/uploader/tokens", serde_json::json!({"scope": "manage"})).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let manage = reply.json()["token"].as_str().expect("token").to_string();
    let wasm = tollgate_tests::guests::wasm("tollgate-guest-hostile");
    let uploads = (0..4).map(|n| {
        let (gw, manage, wasm) = (&gw, &manage, variant(&wasm, 100 + n));
        async move { gw.call("POST", "/v1/tenant/policies", Some(manage), &[], wasm).await }
    });
    let replies = futures_util::future::join_all(uploads).await;
    let statuses: Vec<(u16, String)> = replies.iter().map(|r| (r.status, if r.status == 201 { String::new() } else { r.error_code() })).collect();
    assert!(statuses.contains(&(201, String::new())), "{statuses:?}");
    assert!(statuses.contains(&(429, "compile_busy".to_string())), "{statuses:?}");
    assert!(statuses.iter().all(|s| s.0 == 201 || *s == (429, "compile_busy".to_string())), "{statuses:?}");
    // Once the tenant's compile is done, it may upload again.
    let again = gw.call("POST", "/v1/tenant/policies", Some(&manage), &[], variant(&wasm, 200)).await;
    assert_eq!(again.status, 201, "{}", again.text());
}
