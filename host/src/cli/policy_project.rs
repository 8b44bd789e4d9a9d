//! `tollgate policy new|test|build`: a policy project on the author's machine, whatever
//! its language. `new` writes a project that starts as the stock `default` policy (its
//! very source, with the SDK and the contract the CLI ships, so the project builds with
//! no checkout of Tollgate); `test` runs its native tests; `build` writes the component
//! to `DIR/policy.wasm`, checking the language's toolchain first with a clear message.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

/// A language a policy can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust, with the `tollgate-sdk` crate.
    Rust,
}

/// The files of a new project: (path inside the project, contents).
fn template(language: Language) -> Vec<(&'static str, &'static str)> {
    match language {
        Language::Rust => vec![
            ("Cargo.toml", include_str!("templates/rust/Cargo.toml.template")),
            ("README.md", include_str!("templates/rust/README.md")),
            ("src/lib.rs", include_str!("../../../policies/default/src/lib.rs")),
            ("wit/policy.wit", include_str!("../../../wit/policy.wit")),
            ("tollgate-sdk/Cargo.toml", include_str!("templates/rust/sdk-Cargo.toml.template")),
            ("tollgate-sdk/src/lib.rs", include_str!("../../../guest-sdk/src/lib.rs")),
            ("tollgate-sdk/src/config.rs", include_str!("../../../guest-sdk/src/config.rs")),
            ("tollgate-sdk/src/glue.rs", include_str!("../../../guest-sdk/src/glue.rs")),
            ("tollgate-sdk/src/host.rs", include_str!("../../../guest-sdk/src/host.rs")),
            ("tollgate-sdk/src/testing.rs", include_str!("../../../guest-sdk/src/testing.rs")),
            ("tollgate-sdk/src/types.rs", include_str!("../../../guest-sdk/src/types.rs")),
            ("tollgate-sdk/README.md", include_str!("../../../guest-sdk/README.md")),
            ("config.json", "{\"provider\": \"demo\", \"model\": \"demo-small\"}\n"),
            (".gitignore", "/target\n/policy.wasm\n"),
        ],
    }
}

/// The language of the project in `dir`, from the files it holds.
pub fn detect(dir: &Path) -> anyhow::Result<Language> {
    if dir.join("Cargo.toml").is_file() {
        return Ok(Language::Rust);
    }
    bail!("{} is not a policy project (no Cargo.toml); make one with `tollgate policy new DIR --lang rust`", dir.display())
}

/// `tollgate policy new DIR --lang L`: refuses a directory that holds anything.
pub fn new(dir: &Path, language: Language) -> anyhow::Result<()> {
    if dir.exists() && dir.read_dir().with_context(|| format!("reading {}", dir.display()))?.next().is_some() {
        bail!("{} is not empty; choose a new directory", dir.display());
    }
    for (path, contents) in template(language) {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, contents).with_context(|| format!("writing {}", target.display()))?;
    }
    println!("{}", serde_json::json!({"created": dir.display().to_string(), "language": format!("{language:?}").to_lowercase(), "next": format!("tollgate policy test {0} && tollgate policy build {0}", dir.display())}));
    Ok(())
}

/// `tollgate policy test DIR`: the project's native tests, their output passed through.
pub fn test(dir: &Path) -> anyhow::Result<()> {
    match detect(dir)? {
        Language::Rust => {
            require_tool("cargo", "install Rust from https://rustup.rs")?;
            run(Command::new("cargo").arg("test").arg("--manifest-path").arg(dir.join("Cargo.toml")), "the policy's tests failed")
        }
    }
}

/// `tollgate policy build DIR`: writes `DIR/policy.wasm` and prints its size and hash
/// (the hash the gateway will give it).
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let built = match detect(dir)? {
        Language::Rust => build_rust(dir)?,
    };
    let out = dir.join("policy.wasm");
    if built != out {
        std::fs::copy(&built, &out).with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
    }
    let bytes = std::fs::read(&out)?;
    println!("{}", serde_json::json!({"wasm": out.display().to_string(), "bytes": bytes.len(), "hash": blake3::hash(&bytes).to_hex().to_string()}));
    Ok(out)
}

fn build_rust(dir: &Path) -> anyhow::Result<PathBuf> {
    require_tool("cargo", "install Rust from https://rustup.rs")?;
    // rustup is how most install the target; without it, let cargo say what is missing.
    if let Ok(output) = Command::new("rustup").args(["target", "list", "--installed"]).output() {
        if output.status.success() && !String::from_utf8_lossy(&output.stdout).lines().any(|t| t.trim() == "wasm32-wasip2") {
            bail!("the wasm32-wasip2 target is not installed; run `rustup target add wasm32-wasip2`");
        }
    }
    // Cargo names the artifact it wrote (wherever CARGO_TARGET_DIR puts it).
    let output = Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-wasip2", "--message-format", "json-render-diagnostics", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !output.status.success() {
        bail!("cargo build failed (its errors are above)");
    }
    let artifact = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact" && message["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "cdylib")))
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "wasm"));
    artifact.ok_or_else(|| anyhow::anyhow!("cargo built no .wasm: is the crate a `cdylib`?"))
}

/// Fails with `hint` when `tool` cannot be run.
fn require_tool(tool: &str, hint: &str) -> anyhow::Result<()> {
    match Command::new(tool).arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        _ => bail!("`{tool}` is needed and was not found: {hint}"),
    }
}

/// Runs `command` with its output passed through; `failure` when it exits non-zero.
fn run(command: &mut Command, failure: &str) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{failure} ({status})");
    }
    Ok(())
}
