//! Resident memory with many distinct compiled components:
//! `cargo bench -p tollgate-tests --bench policy_memory` (set `COMPONENTS`, default 1000).
//!
//! Uploads N distinct components (the stock default policy with a distinct custom
//! section each, so N hashes and N compiled copies), with the compiled-component LRU large
//! enough to keep them all (or `CACHE` entries), and prints resident memory before and
//! after, per component. The store is sled's in-memory temporary mode, so the figure also
//! holds each wasm and its compiled artifact as stored bytes; run once with the default
//! and once with `CACHE=10` to separate what the LRU of compiled components costs.

use std::sync::Arc;

use tollgate::policy::PolicyLimits;
use tollgate::{PolicyRuntime, Store};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn variant(wasm: &[u8], n: u32) -> Vec<u8> {
    let name = format!("variant-{n:06}");
    let mut out = wasm.to_vec();
    out.extend_from_slice(&[0, (1 + name.len()) as u8, name.len() as u8]);
    out.extend_from_slice(name.as_bytes());
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("policy_memory: bench");
        return;
    }
    let count: u32 = std::env::var("COMPONENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let wasm = tollgate_tests::guests::wasm("tollgate-policy-default");
    let store = Store::temporary().expect("store");
    let cache: usize = std::env::var("CACHE").ok().and_then(|v| v.parse().ok()).unwrap_or(count as usize + 1);
    let policies = Arc::new(PolicyRuntime::new(PolicyLimits { compiled_cache: cache, ..PolicyLimits::default() }, store).expect("runtime"));
    let before = rss_kib();
    let started = std::time::Instant::now();
    runtime.block_on(async {
        for n in 0..count {
            policies.upload(variant(&wasm, n)).await.expect("upload");
        }
    });
    let after = rss_kib();
    println!("components: {count} distinct, {} resident in the LRU", policies.cached_components());
    println!("wasm size: {} bytes each", wasm.len());
    println!("upload+compile time: {:.1} s ({:.0} ms each)", started.elapsed().as_secs_f64(), started.elapsed().as_secs_f64() * 1000.0 / count as f64);
    println!("RSS before: {} MiB, after: {} MiB, per component: {} KiB", before / 1024, after / 1024, after.saturating_sub(before) / count.max(1) as u64);
}
