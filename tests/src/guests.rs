//! Builds the stock policies and the hostile guest for `wasm32-wasip2` once per test run,
//! in their own target dir (a nested cargo on the outer one would wait on its lock).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Crates built as guests, by package name.
pub const GUESTS: &[&str] = &[
    "tollgate-policy-default",
    "tollgate-policy-failover",
    "tollgate-policy-budget-guard",
    "tollgate-policy-aliases",
    "tollgate-guest-hostile",
    "tollgate-guest-greedy",
];

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn build_all() -> Result<PathBuf, String> {
    let target_dir = workspace_root().join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root()).args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"]).arg(&target_dir);
    for guest in GUESTS {
        command.args(["-p", guest]);
    }
    // The outer test build's flags (coverage, sanitizers) must not leak into the guests.
    command.env_remove("RUSTFLAGS").env_remove("CARGO_ENCODED_RUSTFLAGS");
    let output = command.output().map_err(|e| format!("running cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!("building guests failed:\n{}", String::from_utf8_lossy(&output.stderr)));
    }
    Ok(target_dir.join("wasm32-wasip2").join("release"))
}

/// The wasm bytes of guest `package` (e.g. `tollgate-policy-default`). Panics with the
/// build output if the guests do not build: every test that needs them fails loudly.
#[allow(clippy::panic)]
pub fn wasm(package: &str) -> Vec<u8> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = match BUILT.get_or_init(build_all) {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let path = dir.join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
