//! A policy that misbehaves on request: the request's `model` names the attack. The sandbox
//! tests build it once per run and assert what the gateway does about each attack.

use tollgate_sdk::{credentials, export_policy, log, memory, metering, Context, Decision, Operation, Plan, Policy, Request, Target};

/// The hostile policy.
pub struct Hostile;

/// Recursion the optimiser cannot turn into a loop: the result indexes memory.
#[allow(unconditional_recursion)]
fn recurse(depth: u64, pad: &mut [u8; 256]) -> u64 {
    pad[(depth % 256) as usize] = depth as u8;
    let r = recurse(depth + 1, pad);
    r.wrapping_mul(31) ^ u64::from(pad[(r % 256) as usize])
}

fn plan(trace: String) -> Decision {
    Plan::to(Target::new("demo", "demo-small", "")).trace(trace).into()
}

impl Policy for Hostile {
    fn route(request: &Request, context: &Context) -> Decision {
        let attack = request.model.as_str();
        match attack {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            // Spins for 8 ms of wall time, then routes normally: a heavy policy that stays
            // just within the 10 ms deadline, so it is never suspended.
            "burn-8ms" => {
                let started = std::time::Instant::now();
                let mut n: u64 = 0;
                while started.elapsed() < std::time::Duration::from_millis(8) {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
                plan(format!("burned {n}"))
            }
            // Spins for `N` loop turns, a fixed amount of CPU (where `burn-8ms` spins for
            // wall time, however little of it the guest ran), then routes.
            spin if spin.starts_with("spin-") => {
                let turns: u64 = spin["spin-".len()..].parse().unwrap_or(0);
                let mut n: u64 = 0;
                for _ in 0..turns {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
                plan(format!("spun {n}"))
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recursion" => {
                let mut pad = [0u8; 256];
                let n = recurse(0, &mut pad);
                plan(format!("{n}"))
            }
            "panic" => panic!("hostile guest panicked on purpose"),
            "huge-return" => {
                let targets = (0..10_000).map(|i| Target::new("demo", format!("m{i}"), "")).collect();
                Plan { targets, trace: "x".repeat(256 << 10), ..Plan::default() }.into()
            }
            "bad-status" => Decision::reject(200, "ok", "a rejection that pretends to succeed"),
            "log-flood" => {
                for i in 0..2_000 {
                    log::info(&format!("flood line {i}"));
                    eprintln!("stderr flood line {i}");
                }
                plan("flooded".into())
            }
            "quota-abuse" => {
                let chunk = vec![7u8; 1024];
                let mut written = 0;
                let outcome = loop {
                    match memory::set(&format!("abuse/{written}"), &chunk) {
                        Ok(()) => written += 1,
                        Err(e) => break e.to_string(),
                    }
                    if written > 100_000 {
                        break "no limit".into();
                    }
                };
                plan(format!("wrote {written} then: {outcome}"))
            }
            "steal-keys" => {
                let mine: Vec<String> = credentials::list().into_iter().map(|c| format!("{}:{}", c.provider, c.name)).collect();
                let mut found = Vec::new();
                for guess in ["secret", "../secret", "victim/secret", "\0victim\0secret", "tenant/victim/memory/secret"] {
                    if let Ok(Some(v)) = memory::get(guess) {
                        found.push(format!("{guess}={}", String::from_utf8_lossy(&v)));
                    }
                }
                let listed = memory::list_keys("", 1000).unwrap_or_default();
                // Try to route with a credential name this tenant does not hold.
                let victim_cred = context.config.trim_matches('"').to_string();
                Plan::to(Target::new("openai", "gpt-4o", victim_cred))
                    .trace(format!("creds=[{}] found=[{}] keys=[{}]", mine.join(","), found.join(","), listed.join(",")))
                    .into()
            }
            "wasi-probe" => {
                let fs = std::fs::read_dir("/").map(|_| "fs-open").unwrap_or("fs-denied");
                let env = if std::env::vars().next().is_some() { "env-visible" } else { "env-empty" };
                // No network probe: a component that links `wasi:sockets` is refused at
                // upload (see policy_upload::forbidden_imports_are_named).
                plan(format!("{fs} {env}"))
            }
            "memory-roundtrip" => {
                let seen = memory::get("note").ok().flatten().map(|v| String::from_utf8_lossy(&v).into_owned());
                let _ = memory::set("note", context.tenant_id.as_bytes());
                plan(format!("saw={}", seen.unwrap_or_else(|| "none".into())))
            }
            // Spends its time inside host calls: 24 memory imports, each handed an 8 MiB
            // key that the host must copy and check (and answer `invalid-key`), then routes. Epoch interruption only
            // fires in wasm, so only charging host time ends this at the deadline.
            "host-heavy" => {
                let big = "x".repeat(8 << 20);
                for i in 0..24 {
                    match i % 3 {
                        0 => drop(memory::get(&big)),
                        1 => drop(memory::list_keys(&big, 1)),
                        _ => drop(memory::delete(&big)),
                    }
                }
                plan("host calls were free".into())
            }
            // Names an end user far longer than any the gateway accepts.
            "long-user-name" => plan(format!("spent {}", metering::user_spend(&"u".repeat(100_000)))),
            // Reports what the host says the budget is.
            "read-budget" => plan(format!("spent {}", metering::budget().spent_microdollars)),
            // Reports how many credentials the host lists.
            "count-credentials" => plan(format!("{} credentials", credentials::list().len())),
            // Reports which operation and API the host says the request is, served by a
            // demo model that can serve it.
            "report-operation" => {
                let model = if request.operation == Operation::Embeddings { "demo-embed" } else { "demo-small" };
                Plan::to(Target::new("demo", model, "")).trace(format!("{:?} via {:?}", request.operation, request.api)).into()
            }
            _ => plan("well-behaved".into()),
        }
    }
}

export_policy!(Hostile);
