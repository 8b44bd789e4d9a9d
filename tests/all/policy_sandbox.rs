//! Hostile guests: each attack fails only its own call, with the exact error the caller
//! sees, while a well-behaved tenant served at the same time is unaffected.

use std::sync::Arc;

use tollgate::policy::{Decision, PolicyLimits};
use tollgate::{PolicyError, PolicyHash, Secret};

use crate::support::{context, request, Sandbox};

/// Test limits: the defaults, but a CPU deadline with room for a loaded 2-core CI machine
/// to preempt a well-behaved call without failing it.
fn test_limits() -> PolicyLimits {
    PolicyLimits { cpu_deadline_ms: 40, ..PolicyLimits::default() }
}

async fn hostile() -> (Arc<Sandbox>, PolicyHash) {
    hostile_with(test_limits()).await
}

async fn hostile_with(limits: PolicyLimits) -> (Arc<Sandbox>, PolicyHash) {
    let sandbox = Arc::new(Sandbox::new(limits));
    let hash = sandbox.runtime.upload(tollgate_tests::guests::wasm("tollgate-guest-hostile")).await.expect("upload hostile");
    (sandbox, hash)
}

async fn attack(sandbox: &Sandbox, hash: PolicyHash, tenant: &str, model: &str) -> Result<Decision, PolicyError> {
    sandbox
        .runtime
        .route(hash, sandbox.scope(tenant), &request(model), &context(tenant, "{}"))
        .await
        .map(|outcome| outcome.decision)
}

fn trace(decision: Decision) -> String {
    match decision {
        Decision::Route(plan) => plan.trace,
        Decision::Reject(r) => panic!("unexpected rejection {r:?}"),
    }
}

/// Runs an attack on one tenant while a neighbour makes well-behaved calls; returns the
/// attack's result after checking every neighbour call succeeded.
async fn with_neighbour(model: &str) -> (Arc<Sandbox>, PolicyHash, Result<Decision, PolicyError>) {
    let (sandbox, hash) = hostile().await;
    let neighbour = {
        let sandbox = sandbox.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                let decision = attack(&sandbox, hash, "neighbour", "fine").await.expect("neighbour call");
                assert_eq!(trace(decision), "well-behaved");
            }
        })
    };
    let result = attack(&sandbox, hash, "attacker", model).await;
    neighbour.await.expect("neighbour task");
    (sandbox, hash, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_hits_the_cpu_deadline() {
    let (_, hash, result) = with_neighbour("loop").await;
    let error = result.expect_err("loop must not finish");
    assert!(matches!(error, PolicyError::Timeout { deadline_ms: 40, .. }), "{error:?}");
    assert_eq!(error.to_string(), format!("policy {hash} exceeded its CPU deadline of 40 ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_hits_the_memory_cap() {
    let (_, hash, result) = with_neighbour("memory-bomb").await;
    let error = result.expect_err("bomb must fail");
    assert_eq!(error.to_string(), format!("policy {hash} exceeded its memory limit of 16777216 bytes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_exhausts_only_the_guest_stack() {
    let (_, hash, result) = with_neighbour("recursion").await;
    assert_eq!(result.expect_err("recursion must fail").to_string(), format!("policy {hash} exhausted its stack"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_a_trap_and_its_message_lands_in_the_policy_log() {
    let (sandbox, hash, result) = with_neighbour("panic").await;
    assert_eq!(
        result.expect_err("panic must fail").to_string(),
        format!("policy {hash} trapped: the policy panicked (see its policy log)")
    );
    let lines = sandbox.services.logs.tenant("attacker").read(100).await.expect("read log");
    assert!(lines.iter().any(|l| l.level == "stderr" && l.message.contains("hostile guest panicked on purpose")), "{lines:?}");
    assert!(sandbox.services.logs.tenant("neighbour").read(100).await.expect("read").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_return_value_is_refused_as_invalid() {
    let (_, hash, result) = with_neighbour("huge-return").await;
    assert_eq!(
        result.expect_err("huge plan must be refused").to_string(),
        format!("policy {hash} returned an invalid decision: plan has 10000 targets (limit 8)")
    );
}

#[tokio::test]
async fn rejection_cannot_pretend_to_succeed() {
    let (sandbox, hash) = hostile().await;
    match attack(&sandbox, hash, "t", "bad-status").await.expect("call") {
        Decision::Reject(r) => assert_eq!((r.status, r.code.as_str()), (403, "ok")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn log_flood_is_bounded_per_call() {
    // Thousands of host calls: a long deadline so a busy CI machine cannot turn this into
    // a timeout test.
    let (sandbox, hash) = hostile_with(PolicyLimits { cpu_deadline_ms: 5000, ..test_limits() }).await;
    assert_eq!(trace(attack(&sandbox, hash, "flooder", "log-flood").await.expect("call")), "flooded");
    let lines = sandbox.services.logs.tenant("flooder").read(1000).await.expect("read");
    assert_eq!(lines.len(), 33, "32 lines plus the drop note");
    assert_eq!(lines[0].message, "flood line 0");
    assert!(lines[32].message.ends_with("log lines dropped (limit 32 per call)"), "{:?}", lines[32]);
}

#[tokio::test]
async fn memory_operations_per_call_are_bounded() {
    // 256 store writes before the refusal: a long deadline, as for the floods above, so a
    // slow disk or the canary sweep's TRACE logging cannot turn this into a timeout test
    // (the sweep once timed it out at the 40 ms default).
    let (sandbox, hash) = hostile_with(PolicyLimits { cpu_deadline_ms: 5000, ..test_limits() }).await;
    let got = trace(attack(&sandbox, hash, "hoarder", "quota-abuse").await.expect("call"));
    assert_eq!(got, "wrote 256 then: too many memory operations");
}

#[tokio::test]
async fn memory_quota_abuse_gets_error_values_not_traps() {
    let (sandbox, hash) = hostile_with(PolicyLimits { memory_ops_per_call: 5000, cpu_deadline_ms: 5000, ..test_limits() }).await;
    let got = trace(attack(&sandbox, hash, "hoarder", "quota-abuse").await.expect("call"));
    // A thousand store writes take longer than the default deadline (host calls count
    // against it), hence the long deadline above.
    // 1 MiB quota; 1 KiB values under keys `abuse/N` of 7 to 10 bytes: 1015 writes fit.
    assert_eq!(got, "wrote 1015 then: memory quota exceeded");
    let used = sandbox.services.memory.tenant("hoarder").used_bytes().await.expect("usage");
    assert!(used <= 1 << 20, "{used}");
}

#[tokio::test]
async fn guessing_names_never_reaches_another_tenants_keys_or_memory() {
    let (sandbox, hash) = hostile().await;
    sandbox.services.vault.put("victim", "victim-openai", "openai", &Secret::new("sk-victim-canary".into())).await.expect("put");
    sandbox.services.memory.tenant("victim").set("secret", b"victim data").await.expect("set");
    let got = trace(attack(&sandbox, hash, "thief", "steal-keys").await.expect("call"));
    assert_eq!(got, "creds=[] found=[] keys=[]");
    assert!(!got.contains("sk-victim"));
}

#[tokio::test]
async fn same_memory_key_in_two_tenants_is_two_values() {
    let (sandbox, hash) = hostile().await;
    assert_eq!(trace(attack(&sandbox, hash, "a", "memory-roundtrip").await.expect("a1")), "saw=none");
    assert_eq!(trace(attack(&sandbox, hash, "b", "memory-roundtrip").await.expect("b1")), "saw=none");
    assert_eq!(trace(attack(&sandbox, hash, "a", "memory-roundtrip").await.expect("a2")), "saw=a");
    assert_eq!(trace(attack(&sandbox, hash, "b", "memory-roundtrip").await.expect("b2")), "saw=b");
}

#[tokio::test]
async fn guest_sees_no_filesystem_or_environment() {
    let (sandbox, hash) = hostile().await;
    assert_eq!(trace(attack(&sandbox, hash, "t", "wasi-probe").await.expect("call")), "fs-denied env-empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_sheds_with_busy_instead_of_crashing() {
    let limits = PolicyLimits { pool_instances: 1, pool_wait_ms: 20, cpu_deadline_ms: 300, ..PolicyLimits::default() };
    let sandbox = Arc::new(Sandbox::new(limits));
    let hash = sandbox.runtime.upload(tollgate_tests::guests::wasm("tollgate-guest-hostile")).await.expect("upload");
    let hog = {
        let sandbox = sandbox.clone();
        tokio::spawn(async move { attack(&sandbox, hash, "hog", "loop").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let shed = attack(&sandbox, hash, "other", "fine").await;
    assert!(matches!(shed, Err(PolicyError::Busy)), "{shed:?}");
    assert!(matches!(hog.await.expect("hog task"), Err(PolicyError::Timeout { .. })));
    assert_eq!(trace(attack(&sandbox, hash, "other", "fine").await.expect("after the hog")), "well-behaved");
    assert_eq!(sandbox.runtime.stats.shed.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// A policy that spends its time inside host calls (8 MiB arguments the host must copy
/// and check) runs into its deadline like one spinning in wasm, within a bounded time, and
/// its deadline hits count towards suspension.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_inside_host_calls_counts_against_the_deadline_and_towards_suspension() {
    let (sandbox, hash) = hostile_with(PolicyLimits { cpu_deadline_ms: 10, ..test_limits() }).await;
    for attempt in 0..3 {
        let started = std::time::Instant::now();
        let result = attack(&sandbox, hash, "busy-host", "host-heavy").await;
        let took = started.elapsed();
        eprintln!("host-heavy attempt {attempt}: {took:?}");
        assert!(matches!(result, Err(PolicyError::Timeout { deadline_ms: 10, .. })), "attempt {attempt}: {result:?}");
        assert!(took < std::time::Duration::from_secs(1), "attempt {attempt} took {took:?}");
    }
    let result = attack(&sandbox, hash, "busy-host", "host-heavy").await;
    assert!(matches!(result, Err(PolicyError::Suspended { .. })), "{result:?}");
    assert_eq!(sandbox.runtime.stats.timeouts.load(std::sync::atomic::Ordering::Relaxed), 3);
}

/// A call is billed for what it ran, not for where its worker got back to it. On a worker
/// shared with a busy neighbour, a call that yields at a tick resumes mid-tick; a tick's
/// worth for each stretch to the next tick billed it up to twice its run time, and a call
/// running well within its deadline hit it.
#[tokio::test(flavor = "current_thread")]
async fn a_call_sharing_its_worker_is_billed_for_what_it_ran() {
    use std::time::{Duration, Instant};
    let (sandbox, hash) = hostile_with(PolicyLimits { cpu_deadline_ms: 8, tenant_cpu_ms_per_second: 0, ..test_limits() }).await;
    async fn spin_for(sandbox: &Sandbox, hash: PolicyHash, turns: u64) -> Result<Decision, PolicyError> {
        attack(sandbox, hash, "shares-a-worker", &format!("spin-{turns}")).await
    }
    let spin = |turns| spin_for(&sandbox, hash, turns);
    // This thread's CPU time (the call runs on it: one worker, and no neighbour yet).
    let cpu = || {
        let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
        Duration::from_nanos(schedstat.split_whitespace().next().and_then(|ns| ns.parse().ok()).expect("CPU time"))
    };
    // Loop turns for 6 ms of run time, measured alone on the CPU clock (the least of three
    // runs).
    let mut turns = 100_000u64;
    let per_turn = loop {
        let mut quickest = Duration::MAX;
        for _ in 0..3 {
            let started = cpu();
            assert_eq!(trace(spin(turns).await.expect("a call alone")), format!("spun {turns}"));
            quickest = quickest.min(cpu() - started);
        }
        if quickest >= Duration::from_millis(1) {
            break quickest.as_secs_f64() / turns as f64;
        }
        turns *= 4;
    };
    let turns = (0.006 / per_turn) as u64;

    // A busy neighbour on the same (only) worker: turns of 300 to 549 µs of work, with a
    // yield between them.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let neighbour = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut turn = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                turn += 1;
                let work = Duration::from_micros(300 + turn * 97 % 250);
                let started = Instant::now();
                while started.elapsed() < work {
                    std::hint::black_box(0u64);
                }
                // Yields as the call does: wakes itself and returns pending once. (Tokio's
                // `yield_now` would wait for the runtime to park, and the call would run on
                // undisturbed.)
                let mut yielded = false;
                std::future::poll_fn(|cx| {
                    if std::mem::replace(&mut yielded, true) {
                        std::task::Poll::Ready(())
                    } else {
                        cx.waker().wake_by_ref();
                        std::task::Poll::Pending
                    }
                })
                .await;
            }
        }
    });
    // The calls are the test's own future, which the runtime polls after a batch of the
    // neighbour's turns: a call resumes wherever between two ticks that batch ends. Billed
    // a tick's worth per stretch, most calls hit the 8 ms deadline.
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.push(spin(turns).await.map(trace));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    neighbour.await.expect("neighbour");
    for outcome in outcomes {
        assert_eq!(outcome.expect("6 ms of run time within an 8 ms deadline"), format!("spun {turns}"));
    }
}

/// An import argument past its limit, where the interface has no error value, traps the
/// call with a message naming the import and the limit.
#[tokio::test]
async fn oversized_import_arguments_trap_with_the_limit_named() {
    let (sandbox, hash) = hostile().await;
    let error = attack(&sandbox, hash, "t", "long-user-name").await.expect_err("must trap");
    assert_eq!(error.to_string(), format!("policy {hash} trapped: metering.user-spend was passed 100000 bytes; the limit is 256"));
}

/// A tenant view whose store reads fail: spend, budget and credential reads report the
/// failure; everything else is the real scope's.
struct FailingStore(Arc<tollgate::tenant_scope::TenantScope>);

impl tollgate::policy::TenantView for FailingStore {
    fn credentials(&self) -> tollgate::policy::BoxFuture<'_, Result<Vec<tollgate::policy::CredentialInfo>, tollgate::policy::Unavailable>> {
        Box::pin(async { Err(tollgate::policy::Unavailable { what: "credentials", cause: "storage failure: injected".into() }) })
    }
    fn memory_get<'a>(&'a self, key: &'a str) -> tollgate::policy::BoxFuture<'a, Result<Option<Vec<u8>>, tollgate::policy::MemoryError>> {
        self.0.memory_get(key)
    }
    fn memory_set<'a>(&'a self, key: &'a str, value: &'a [u8]) -> tollgate::policy::BoxFuture<'a, Result<(), tollgate::policy::MemoryError>> {
        self.0.memory_set(key, value)
    }
    fn memory_delete<'a>(&'a self, key: &'a str) -> tollgate::policy::BoxFuture<'a, Result<(), tollgate::policy::MemoryError>> {
        self.0.memory_delete(key)
    }
    fn memory_list<'a>(&'a self, prefix: &'a str, limit: u32) -> tollgate::policy::BoxFuture<'a, Result<Vec<String>, tollgate::policy::MemoryError>> {
        self.0.memory_list(prefix, limit)
    }
    fn budget(&self) -> tollgate::policy::BoxFuture<'_, Result<tollgate::policy::BudgetStatus, tollgate::policy::Unavailable>> {
        Box::pin(async { Err(tollgate::policy::Unavailable { what: "budget", cause: "storage failure: injected".into() }) })
    }
    fn user_spend<'a>(&'a self, _end_user: &'a str) -> tollgate::policy::BoxFuture<'a, Result<u64, tollgate::policy::Unavailable>> {
        Box::pin(async { Err(tollgate::policy::Unavailable { what: "end-user spend", cause: "storage failure: injected".into() }) })
    }
    fn tag_spend<'a>(&'a self, _tag: &'a str) -> tollgate::policy::BoxFuture<'a, Result<u64, tollgate::policy::Unavailable>> {
        Box::pin(async { Err(tollgate::policy::Unavailable { what: "tag spend", cause: "storage failure: injected".into() }) })
    }
    fn models(&self) -> Vec<tollgate::policy::ModelInfo> {
        self.0.models()
    }
    fn lookup_model(&self, model: &str) -> Option<tollgate::policy::ModelInfo> {
        self.0.lookup_model(model)
    }
    fn append_log(&self, lines: Vec<tollgate::policy::LogLine>) {
        self.0.append_log(lines)
    }
}

/// A store failure behind `metering.budget` or `credentials.list` fails the call (500
/// `policy_failed` naming the cause) instead of reporting no spend or no credentials, so
/// a budget guard cannot fail open.
#[tokio::test]
async fn store_failures_behind_imports_fail_the_call_instead_of_reading_as_zero() {
    let (sandbox, hash) = hostile().await;
    for (model, cause) in [("read-budget", "budget unavailable: storage failure: injected"), ("count-credentials", "credentials unavailable: storage failure: injected")] {
        let view = Arc::new(FailingStore(sandbox.scope("t")));
        let result = sandbox.runtime.route(hash, view, &request(model), &context("t", "{}")).await;
        let error = result.expect_err(model);
        assert_eq!(error.to_string(), format!("policy {hash} trapped: {cause}"), "{model}");
        let gateway_error = tollgate::error::GatewayError::Policy(error);
        assert_eq!(gateway_error.parts().0.as_u16(), 500);
        assert_eq!(gateway_error.parts().2, "policy_failed");
    }
    // The real view reports the real figures.
    assert_eq!(trace(attack(&sandbox, hash, "t", "read-budget").await.expect("budget")), "spent 0");
}

/// A caller that gives up on a call mid-flight (a client hanging up) does not let the
/// tenant escape its accounting: the call's run time is charged to the tenant's CPU share,
/// the in-flight gauge returns to 0, and the dropped call counts as a deadline hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_mid_flight_is_charged_and_counted() {
    let give_up = std::time::Duration::from_millis(300);
    // CPU share: 1 ms/s with a 50 ms burst. Calls given up on after 300 ms soon take the
    // tenant past its burst (how soon depends on how much of that time the guest ran on a
    // loaded machine), and the next call is refused.
    let (sandbox, hash) = hostile_with(PolicyLimits { cpu_deadline_ms: 2000, tenant_cpu_ms_per_second: 1, ..test_limits() }).await;
    let mut refused = false;
    for _ in 0..5 {
        match tokio::time::timeout(give_up, attack(&sandbox, hash, "hangs-up", "loop")).await {
            Err(_) => assert_eq!(sandbox.runtime.stats.in_flight.load(std::sync::atomic::Ordering::Relaxed), 0, "the in-flight gauge returns to 0"),
            Ok(Err(PolicyError::CpuShareExhausted { .. })) => {
                refused = true;
                break;
            }
            Ok(other) => panic!("the call must still be running when its caller gives up: {other:?}"),
        }
    }
    assert!(refused, "the dropped calls' run time was not charged to the tenant's CPU share");

    // Suspension: three calls dropped mid-flight in a row suspend the policy like three
    // deadline hits.
    let (sandbox, hash) = hostile_with(PolicyLimits { cpu_deadline_ms: 2000, tenant_cpu_ms_per_second: 0, ..test_limits() }).await;
    for _ in 0..3 {
        assert!(tokio::time::timeout(give_up, attack(&sandbox, hash, "hangs-up", "loop")).await.is_err());
    }
    let next = attack(&sandbox, hash, "hangs-up", "fine").await;
    assert!(matches!(next, Err(PolicyError::Suspended { .. })), "dropped calls escaped suspension: {next:?}");
    assert_eq!(trace(attack(&sandbox, hash, "neighbour", "fine").await.expect("neighbour")), "well-behaved");
}
