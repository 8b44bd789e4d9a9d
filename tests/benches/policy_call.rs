//! Cost of one policy call with a fresh instance per call (what every request pays):
//! `cargo bench -p tollgate-tests --bench policy_call`.
//!
//! The request is realistic: 20 messages and a ~1 KB tenant config. `default` makes no
//! host-import calls on this path; `aliases` calls `credentials.list` and
//! `catalog.models` (with 20 catalog entries) before choosing.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::catalog::Catalog;
use tollgate::metering::Metering;
use tollgate::policy::{Context, PolicyLimits};
use tollgate::sealing::{Key, Vault};
use tollgate::tenant_scope::ScopeServices;
use tollgate::{PolicyRuntime, Secret, Store};

fn default_config() -> String {
    let allowed: Vec<String> = (0..80).map(|i| format!("\"model-{i:02}\"")).collect();
    format!(r#"{{"provider":"openai","credential":"main","model":"gpt-4o","max_tokens":2000,"temperature":0.7,"allowed_models":["gpt-4o",{}]}}"#, allowed.join(","))
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio");
    let store = Store::temporary().expect("store");
    let vault = Arc::new(Vault::new(store.clone(), Key::random()).expect("vault"));
    let services = ScopeServices { vault: vault.clone(), metering: Metering::new(store.clone()).expect("metering"), catalog: Arc::new(Catalog::new(&[])), memory: tollgate::memory::Memory::embedded(store.clone(), 1 << 20), logs: tollgate::policy_log::PolicyLogs::embedded(store.clone(), 100) };
    // A generous deadline: this measures what a call costs, not where the limit cuts it,
    // and a preempted iteration on a busy machine must not abort the run.
    // The per-tenant CPU share is admission control for sustained load: one tenant calling
    // back to back as fast as criterion does would be throttled by it, and the figure would
    // measure the throttle, not a call. Off here.
    let limits = PolicyLimits { cpu_deadline_ms: 1000, tenant_cpu_ms_per_second: 0, ..PolicyLimits::default() };
    let policies = PolicyRuntime::new(limits, store).expect("runtime");
    let (default_hash, aliases_hash) = runtime.block_on(async {
        vault.put("bench", "main", "openai", &Secret::new("sk-bench".into())).await.expect("put");
        let d = policies.upload(tollgate_tests::guests::wasm("tollgate-policy-default")).await.expect("upload default");
        let a = policies.upload(tollgate_tests::guests::wasm("tollgate-policy-aliases")).await.expect("upload aliases");
        (d, a)
    });
    let config = default_config();
    assert!(config.len() > 900, "config is {} bytes", config.len());
    let context = |config: &str| Context { tenant_id: "bench".into(), request_id: "r".into(), session_id: None, unix_millis: 1, config: config.into() };
    let view = Arc::new(services.scope("bench", None, 1));

    let mut group = c.benchmark_group("policy_call");
    let (req, ctx) = (tollgate_tests::policy_requests::realistic("gpt-4o"), context(&config));
    group.bench_function("default_fresh_instance_no_imports", |b| {
        b.to_async(&runtime).iter(|| async { policies.route(default_hash, view.clone(), &req, &ctx).await.expect("route") })
    });
    let (req, ctx) = (tollgate_tests::policy_requests::realistic("cheap"), context(r#"{"aliases":{"cheap":{"pick":"cheapest"}}}"#));
    group.bench_function("aliases_fresh_instance_with_imports", |b| {
        b.to_async(&runtime).iter(|| async { policies.route(aliases_hash, view.clone(), &req, &ctx).await.expect("route") })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
