//! What a policy costs per language, side by side in one run: the stock `default` policy
//! in Rust and its Python and JavaScript ports (`policies/python-default`,
//! `policies/js-default`), on the same request and config.
//!
//! `cargo bench -p tollgate-tests --bench policy_languages`
//!
//! Printed first, measured once each: the component's size, its compile time at upload,
//! the resident memory its compiled form adds, and its first call. Then criterion times
//! the call every request pays (a fresh instance + `route`).

use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::catalog::Catalog;
use tollgate::metering::Metering;
use tollgate::policy::{Context, PolicyLimits};
use tollgate::sealing::{Key, Vault};
use tollgate::tenant_scope::ScopeServices;
use tollgate::{PolicyRuntime, Store};
use tollgate_tests::language_guests::{self, Language};

/// Resident set size of this process, from /proc (0 where there is none).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok()).map_or(0, |kb| kb * 1024)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio");
    let store = Store::temporary().expect("store");
    let vault = Arc::new(Vault::new(store.clone(), Key::random()).expect("vault"));
    let services = ScopeServices { vault, metering: Metering::new(store.clone()).expect("metering"), catalog: Arc::new(Catalog::new(&[])), memory: tollgate::memory::Memory::embedded(store.clone(), 1 << 20), logs: tollgate::policy_log::PolicyLogs::embedded(store.clone(), 100) };
    // What an interpreter's component needs admitted (see tests/all/policy_languages.rs);
    // a generous deadline and no CPU share: this measures a call, not where limits cut it.
    let limits = PolicyLimits { upload_bytes: 32 << 20, max_core_instances_per_component: 40, cpu_deadline_ms: 1000, tenant_cpu_ms_per_second: 0, ..PolicyLimits::default() };
    let policies = PolicyRuntime::new(limits, store).expect("runtime");
    let view = Arc::new(services.scope("bench", None, 1));
    let request = tollgate_tests::policy_requests::realistic("demo-small");
    let context = Context { tenant_id: "bench".into(), request_id: "r".into(), session_id: None, unix_millis: 1, config: r#"{"provider":"demo","model":"demo-small","max_tokens":2000}"#.into() };

    let languages = [
        ("rust", tollgate_tests::guests::wasm("tollgate-policy-default")),
        ("python", language_guests::wasm(Language::Python, "python-default")),
        ("js", language_guests::wasm(Language::JavaScript, "js-default")),
    ];
    let mut hashes = Vec::new();
    eprintln!("| language | component bytes | compile at upload | resident memory added | first call |");
    eprintln!("| --- | --- | --- | --- | --- |");
    for (language, wasm) in languages {
        let bytes = wasm.len();
        let before = rss_bytes();
        let started = Instant::now();
        let hash = runtime.block_on(policies.upload(wasm)).expect("upload");
        let compiled = started.elapsed();
        let started = Instant::now();
        runtime.block_on(policies.route(hash, view.clone(), &request, &context)).expect("first call");
        let first = started.elapsed();
        let added = rss_bytes().saturating_sub(before);
        eprintln!("| {language} | {bytes} | {:.2} s | {:.1} MiB | {:.2} ms |", compiled.as_secs_f64(), added as f64 / (1 << 20) as f64, first.as_secs_f64() * 1000.0);
        hashes.push((language, hash));
    }

    let mut group = c.benchmark_group("policy_language_call");
    for (language, hash) in hashes {
        group.bench_function(format!("default_{language}"), |b| {
            b.to_async(&runtime).iter(|| async { policies.route(hash, view.clone(), &request, &context).await.expect("route") })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
