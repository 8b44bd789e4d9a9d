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
    assert!(message.starts_with("policy does not implement the tollgate:policy@0.2.0 world (nor 0.1.0):"), "{message}");
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

/// A gateway whose tenants may hold `uploads` uploaded policies.
async fn gateway_with_upload_quota(uploads: usize) -> crate::support::Gateway {
    let mut config = tollgate::Config::embedded();
    config.policy.max_uploads_per_tenant = uploads;
    crate::support::Gateway::start_with(config).await
}

/// Creates demo tenant `id` and returns a manage token for it.
async fn manage_token(gw: &crate::support::Gateway, id: &str) -> String {
    gw.demo_tenant(id, 10.0).await;
    let reply = gw.admin("POST", &format!("/admin/v1/tenants/{id}/tokens"), serde_json::json!({"scope": "manage"})).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["token"].as_str().expect("token").to_string()
}

/// The stock default policy made distinct by a custom section: it routes like the stock
/// one but has its own hash.
fn default_variant(n: u32) -> Vec<u8> {
    variant(&tollgate_tests::guests::wasm("tollgate-policy-default"), n)
}

async fn tenant_call(gw: &crate::support::Gateway, token: &str, method: &str, path: &str, body: Vec<u8>) -> crate::support::Reply {
    gw.call(method, path, Some(token), &[], body).await
}

/// Uploads `wasm` with a tenant's manage token and returns the hash, asserting 201.
async fn tenant_upload(gw: &crate::support::Gateway, token: &str, wasm: Vec<u8>) -> String {
    let reply = tenant_call(gw, token, "POST", "/v1/tenant/policies", wasm).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["hash"].as_str().expect("hash").to_string()
}

/// The hashes in a tenant's upload list, with their `assigned` flags.
async fn listed(gw: &crate::support::Gateway, token: &str) -> Vec<(String, bool)> {
    let reply = tenant_call(gw, token, "GET", "/v1/tenant/policies", Vec::new()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    body["data"].as_array().expect("data").iter().map(|u| (u["hash"].as_str().unwrap_or("").to_string(), u["assigned"] == true)).collect()
}

/// Assigns `hash` to the token's tenant with a config that routes to the demo provider.
async fn assign(gw: &crate::support::Gateway, token: &str, hash: &str) -> crate::support::Reply {
    let body = serde_json::json!({"hash": hash, "config": {"provider": "demo", "model": "demo-small"}});
    tenant_call(gw, token, "PUT", "/v1/tenant/policy", body.to_string().into_bytes()).await
}

/// A tenant at its upload quota is refused with 409 `upload_quota_exceeded` before
/// anything is compiled or stored; re-uploading bytes it holds is still fine, and
/// deleting an unassigned upload makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_upload_quota_gets_409_until_it_deletes_one() {
    let gw = gateway_with_upload_quota(2).await;
    let manage = manage_token(&gw, "quota").await;
    let first = tenant_upload(&gw, &manage, default_variant(1)).await;
    let second = tenant_upload(&gw, &manage, default_variant(2)).await;
    assert_eq!(tenant_upload(&gw, &manage, default_variant(1)).await, first, "re-uploading held bytes is a no-op");

    let third = default_variant(3);
    let third_hash = tollgate::PolicyHash::of(&third);
    let refused = tenant_call(&gw, &manage, "POST", "/v1/tenant/policies", third.clone()).await;
    assert_eq!((refused.status, refused.error_code()), (409, "upload_quota_exceeded".to_string()), "{}", refused.text());
    let message = refused.json()["error"]["message"].as_str().unwrap_or("").to_string();
    for part in ["holds 2 uploaded policies", "policy.max_uploads_per_tenant (2)", "DELETE /v1/tenant/policies/{hash}"] {
        assert!(message.contains(part), "{part:?} missing from {message:?}");
    }
    assert!(!gw.app.policies.exists(&third_hash).await.expect("exists"), "a refused upload is not stored");
    assert_eq!(listed(&gw, &manage).await, [(first.clone(), false), (second.clone(), false)]);

    let deleted = tenant_call(&gw, &manage, "DELETE", &format!("/v1/tenant/policies/{first}"), Vec::new()).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json()["deleted"], first.as_str());
    assert_eq!(tenant_upload(&gw, &manage, third).await, third_hash.to_string());
    assert_eq!(listed(&gw, &manage).await.len(), 2);
}

/// The byte quota counts every upload the tenant holds and names its setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_upload_bytes_gets_409_naming_the_limit() {
    let size = default_variant(1).len() as u64;
    let mut config = tollgate::Config::embedded();
    config.policy.max_upload_bytes_per_tenant = size * 3 / 2;
    let gw = crate::support::Gateway::start_with(config).await;
    let manage = manage_token(&gw, "bytes").await;
    tenant_upload(&gw, &manage, default_variant(1)).await;
    let refused = tenant_call(&gw, &manage, "POST", "/v1/tenant/policies", default_variant(2)).await;
    assert_eq!((refused.status, refused.error_code()), (409, "upload_quota_exceeded".to_string()), "{}", refused.text());
    let message = refused.json()["error"]["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains(&format!("past policy.max_upload_bytes_per_tenant ({})", size * 3 / 2)), "{message}");
    assert!(message.contains(&format!("it holds 1 uploads of {size} bytes")), "{message}");
}

/// A tenant cannot delete the policy it runs (409 `policy_assigned`), nor the operator
/// one any tenant runs; it keeps serving. Once unassigned it can be deleted, and then a
/// rollback or an assignment naming it gets a clear 4xx, not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_assigned_policy_is_refused_and_it_keeps_serving() {
    let gw = crate::support::Gateway::start().await;
    let manage = manage_token(&gw, "runner").await;
    let inference = gw.admin("POST", "/admin/v1/tenants/runner/tokens", serde_json::json!({"scope": "inference"})).await.json()["token"].as_str().expect("token").to_string();
    let hash = tenant_upload(&gw, &manage, default_variant(7)).await;
    assert_eq!(assign(&gw, &manage, &hash).await.status, 200);

    let refused = tenant_call(&gw, &manage, "DELETE", &format!("/v1/tenant/policies/{hash}"), Vec::new()).await;
    assert_eq!((refused.status, refused.error_code()), (409, "policy_assigned".to_string()), "{}", refused.text());
    let refused = gw.call("DELETE", &format!("/admin/v1/policies/{hash}"), Some(crate::support::ADMIN), &[], Vec::new()).await;
    assert_eq!((refused.status, refused.error_code()), (409, "policy_assigned".to_string()), "{}", refused.text());
    assert!(refused.json()["error"]["message"].as_str().unwrap_or("").contains("assigned to 1 tenant(s)"), "{}", refused.text());
    let hello = serde_json::json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]});
    let served = gw.chat(&inference, hello.clone()).await;
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(served.header("x-tollgate-policy"), hash[..12]);
    assert_eq!(listed(&gw, &manage).await, [(hash.clone(), true)]);

    // Unassigned (it stays the previous assignment), it can be deleted.
    assert_eq!(assign(&gw, &manage, &gw.app.default_policy.to_string()).await.status, 200);
    let deleted = tenant_call(&gw, &manage, "DELETE", &format!("/v1/tenant/policies/{hash}"), Vec::new()).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let rollback = tenant_call(&gw, &manage, "POST", "/v1/tenant/policy/rollback", Vec::new()).await;
    assert_eq!((rollback.status, rollback.error_code()), (409, "conflict".to_string()), "{}", rollback.text());
    assert!(rollback.json()["error"]["message"].as_str().unwrap_or("").contains("has been deleted"), "{}", rollback.text());
    let reassign = assign(&gw, &manage, &hash).await;
    assert_eq!((reassign.status, reassign.error_code()), (404, "not_found".to_string()), "{}", reassign.text());
    let served = gw.chat(&inference, hello).await;
    assert_eq!((served.status, served.header("x-tollgate-policy")), (200, gw.app.default_policy.short()), "{}", served.text());
}

/// A tenant's delete removes the blob (wasm, compiled artifact) when nothing else holds
/// it: the operator can no longer assign it. Bytes another tenant uploaded too stay, and
/// that tenant can still assign them; the operator's delete then takes every claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_policy_is_gone_unless_another_tenant_uploaded_it_too() {
    let gw = crate::support::Gateway::start().await;
    let (a, b) = (manage_token(&gw, "tenant-a").await, manage_token(&gw, "tenant-b").await);
    let own = tenant_upload(&gw, &a, default_variant(11)).await;
    let shared = tenant_upload(&gw, &a, default_variant(12)).await;
    assert_eq!(tenant_upload(&gw, &b, default_variant(12)).await, shared);

    let operator_assign = |hash: String| {
        let gw = &gw;
        async move { gw.admin("PUT", "/admin/v1/tenants/tenant-a/policy", serde_json::json!({"hash": hash})).await }
    };
    assert_eq!(tenant_call(&gw, &a, "DELETE", &format!("/v1/tenant/policies/{own}"), Vec::new()).await.status, 200);
    let gone = operator_assign(own.clone()).await;
    assert_eq!((gone.status, gone.error_code()), (404, "not_found".to_string()), "{}", gone.text());
    assert!(gw.app.store.compiled.get(&own).expect("read").is_none(), "the compiled artifact is removed too");

    assert_eq!(tenant_call(&gw, &a, "DELETE", &format!("/v1/tenant/policies/{shared}"), Vec::new()).await.status, 200);
    assert!(listed(&gw, &a).await.is_empty());
    assert_eq!(assign(&gw, &b, &shared).await.status, 200, "tenant-b's upload keeps the blob");
    assert_eq!(listed(&gw, &b).await, [(shared.clone(), true)]);

    assert_eq!(assign(&gw, &b, &gw.app.default_policy.to_string()).await.status, 200);
    let removed = gw.call("DELETE", &format!("/admin/v1/policies/{shared}"), Some(crate::support::ADMIN), &[], Vec::new()).await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    assert_eq!(removed.json()["claims_removed"], 1);
    assert!(listed(&gw, &b).await.is_empty(), "the operator's delete takes every tenant's claim");
    assert_eq!(assign(&gw, &b, &shared).await.status, 404);
    let stock = gw.call("DELETE", &format!("/admin/v1/policies/{}", gw.app.default_policy), Some(crate::support::ADMIN), &[], Vec::new()).await;
    assert_eq!((stock.status, stock.error_code()), (409, "policy_assigned".to_string()), "{}", stock.text());
}

/// Uploads are listed and deleted only by the tenant that holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_list_or_delete_each_others_uploads() {
    let gw = crate::support::Gateway::start().await;
    let (a, b) = (manage_token(&gw, "owner").await, manage_token(&gw, "other").await);
    let hash = tenant_upload(&gw, &a, default_variant(21)).await;
    assert!(listed(&gw, &b).await.is_empty());
    let refused = tenant_call(&gw, &b, "DELETE", &format!("/v1/tenant/policies/{hash}"), Vec::new()).await;
    assert_eq!((refused.status, refused.error_code()), (404, "not_found".to_string()), "{}", refused.text());
    assert_eq!(listed(&gw, &a).await, [(hash.clone(), false)]);
    assert!(gw.app.policies.exists(&tollgate::PolicyHash::parse(&hash).expect("hash")).await.expect("exists"));
}
