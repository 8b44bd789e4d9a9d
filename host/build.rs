//! Builds the stock `default` policy for wasm32-wasip2 and embeds it, so a tenant with no
//! policy of its own runs it from the first start. Uses its own target dir: the outer
//! build holds the lock on the workspace's.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest.join("..");
    for watched in ["policies/default", "guest-sdk/src", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = root.join("target").join("embedded-policies");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "--target", "wasm32-wasip2", "-p", "tollgate-policy-default", "--target-dir"])
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!(
            "building the stock default policy failed ({other:?}); is the target installed? run `rustup target add wasm32-wasip2`"
        ),
    }
    let built = target_dir.join("wasm32-wasip2").join("release").join("tollgate_policy_default.wasm");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("default_policy.wasm");
    if let Err(e) = std::fs::copy(&built, &out) {
        panic!("copying {}: {e}", built.display());
    }
}
