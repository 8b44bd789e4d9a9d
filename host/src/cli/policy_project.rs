//! `tollgate policy new|test|build`: a policy project on the author's machine, whatever
//! its language. `new` writes a project that starts as the stock `default` policy (its
//! very source, with the SDK and the contract the CLI ships, so the project builds with
//! no checkout of Tollgate); `test` runs its native tests; `build` writes the component
//! to `DIR/policy.wasm`, checking the language's toolchain first with a clear message.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use super::toolchains;

/// A language a policy can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust, with the `tollgate-sdk` crate.
    Rust,
    /// Python, with the `tollgate_policy` package (componentize-py).
    Python,
    /// JavaScript, with the `tollgate-policy` package (jco componentize).
    #[value(alias = "javascript")]
    Js,
}

/// Where in DIR `build` writes the component's entry module (gitignored). Inside DIR,
/// because jco reads only its working directory; not a package, so componentize-py's
/// search of DIR for modules passes it by.
const BUILD_DIR: &str = ".tollgate-build";

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
        Language::Python => vec![
            ("README.md", include_str!("templates/python/README.md")),
            ("policy.py", include_str!("../../../policies/python-default/policy.py")),
            ("test_policy.py", include_str!("../../../policies/python-default/test_policy.py")),
            ("wit/policy.wit", include_str!("../../../wit/policy.wit")),
            ("tollgate_policy/__init__.py", include_str!("../../../guest-sdk/python/tollgate_policy/__init__.py")),
            ("tollgate_policy/_component.py", include_str!("../../../guest-sdk/python/tollgate_policy/_component.py")),
            ("tollgate_policy/_host.py", include_str!("../../../guest-sdk/python/tollgate_policy/_host.py")),
            ("tollgate_policy/catalog.py", include_str!("../../../guest-sdk/python/tollgate_policy/catalog.py")),
            ("tollgate_policy/config.py", include_str!("../../../guest-sdk/python/tollgate_policy/config.py")),
            ("tollgate_policy/credentials.py", include_str!("../../../guest-sdk/python/tollgate_policy/credentials.py")),
            ("tollgate_policy/log.py", include_str!("../../../guest-sdk/python/tollgate_policy/log.py")),
            ("tollgate_policy/memory.py", include_str!("../../../guest-sdk/python/tollgate_policy/memory.py")),
            ("tollgate_policy/metering.py", include_str!("../../../guest-sdk/python/tollgate_policy/metering.py")),
            ("tollgate_policy/testing.py", include_str!("../../../guest-sdk/python/tollgate_policy/testing.py")),
            ("tollgate_policy/types.py", include_str!("../../../guest-sdk/python/tollgate_policy/types.py")),
            ("tollgate_policy/README.md", include_str!("../../../guest-sdk/python/README.md")),
            ("config.json", "{\"provider\": \"demo\", \"model\": \"demo-small\"}\n"),
            (".gitignore", "__pycache__/\n/.tollgate-build/\n/policy.wasm\n"),
        ],
        Language::Js => vec![
            ("README.md", include_str!("templates/js/README.md")),
            ("package.json", include_str!("templates/js/package.json")),
            ("policy.js", include_str!("../../../policies/js-default/policy.js")),
            ("policy.test.js", include_str!("../../../policies/js-default/policy.test.js")),
            ("wit/policy.wit", include_str!("../../../wit/policy.wit")),
            ("tollgate-policy/package.json", include_str!("../../../guest-sdk/js/package.json")),
            ("tollgate-policy/bundle.config.mjs", include_str!("../../../guest-sdk/js/bundle.config.mjs")),
            ("tollgate-policy/src/component.js", include_str!("../../../guest-sdk/js/src/component.js")),
            ("tollgate-policy/src/config.js", include_str!("../../../guest-sdk/js/src/config.js")),
            ("tollgate-policy/src/host.js", include_str!("../../../guest-sdk/js/src/host.js")),
            ("tollgate-policy/src/index.d.ts", include_str!("../../../guest-sdk/js/src/index.d.ts")),
            ("tollgate-policy/src/index.js", include_str!("../../../guest-sdk/js/src/index.js")),
            ("tollgate-policy/src/testing.d.ts", include_str!("../../../guest-sdk/js/src/testing.d.ts")),
            ("tollgate-policy/src/testing.js", include_str!("../../../guest-sdk/js/src/testing.js")),
            ("tollgate-policy/src/types.js", include_str!("../../../guest-sdk/js/src/types.js")),
            ("tollgate-policy/README.md", include_str!("../../../guest-sdk/js/README.md")),
            ("config.json", "{\"provider\": \"demo\", \"model\": \"demo-small\"}\n"),
            (".gitignore", "/node_modules/\n/.tollgate-build/\n/policy.wasm\n"),
        ],
    }
}

/// The language of the project in `dir`, from the files it holds.
pub fn detect(dir: &Path) -> anyhow::Result<Language> {
    if dir.join("Cargo.toml").is_file() {
        return Ok(Language::Rust);
    }
    if dir.join("policy.py").is_file() {
        return Ok(Language::Python);
    }
    if dir.join("policy.js").is_file() {
        return Ok(Language::Js);
    }
    bail!("{} is not a policy project (no Cargo.toml, policy.py or policy.js); make one with `tollgate policy new DIR --lang rust|python|js`", dir.display())
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
        Language::Python => {
            toolchains::require_python()?;
            // Discovery from DIR puts DIR on the path: `policy` and `tollgate_policy` import.
            run(Command::new("python3").args(["-m", "unittest", "discover", "-p", "test*.py"]).current_dir(dir), "the policy's tests failed")
        }
        Language::Js => {
            toolchains::require_node()?;
            link_js_dependencies(dir)?;
            run(Command::new("node").arg("--test").current_dir(dir), "the policy's tests failed")
        }
    }
}

/// `tollgate policy build DIR`: writes `DIR/policy.wasm` and prints its size and hash
/// (the hash the gateway will give it).
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let built = match detect(dir)? {
        Language::Rust => build_rust(dir)?,
        Language::Python => build_python(dir)?,
        Language::Js => build_js(dir)?,
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

/// componentize-py with the flags `guest-sdk/python/build.sh` uses.
fn build_python(dir: &Path) -> anyhow::Result<PathBuf> {
    let componentize_py = toolchains::componentize_py()?;
    let app = dir.join(BUILD_DIR);
    std::fs::create_dir_all(&app).with_context(|| format!("creating {}", app.display()))?;
    std::fs::write(app.join("tollgate_policy_app.py"), include_str!("templates/python/app.py"))?;
    let out = dir.join("policy.wasm");
    // --stub-wasi: the component imports only tollgate:policy (the gateway refuses
    // wasi:sockets, which CPython's runtime links); a WASI call (print, time.time) traps.
    run(
        Command::new(componentize_py)
            .args(["--quiet", "-d"])
            .arg(dir.join("wit"))
            .args(["-w", "policy", "componentize", "--stub-wasi", "-p"])
            .arg(dir)
            .arg("-p")
            .arg(&app)
            .arg("-o")
            .arg(&out)
            .arg("tollgate_policy_app"),
        "componentize-py failed (its errors are above)",
    )?;
    Ok(out)
}

/// jco componentize with the flags `guest-sdk/js/build.sh` uses.
fn build_js(dir: &Path) -> anyhow::Result<PathBuf> {
    let jco = toolchains::jco()?;
    link_js_dependencies(dir)?;
    let entry = dir.join(BUILD_DIR).join("entry.js");
    std::fs::create_dir_all(dir.join(BUILD_DIR))?;
    std::fs::write(&entry, include_str!("templates/js/entry.js"))?;
    let out = std::path::absolute(dir.join("policy.wasm"))?;
    // --disable all: the component imports only tollgate:policy (no WASI at all). jco
    // reads the WIT through a sandbox that sees only its working directory: run it from
    // DIR with relative paths.
    run(
        Command::new(jco)
            .args(["componentize", ".tollgate-build/entry.js", "--bundle", "--bundle-config", "tollgate-policy/bundle.config.mjs"])
            .args(["--wit", "wit/policy.wit", "--world-name", "policy", "--disable", "all", "-o"])
            .arg(&out)
            .current_dir(dir)
            .stdout(std::process::Stdio::null()),
        "jco componentize failed (its errors are above)",
    )?;
    Ok(out)
}

/// `npm install` of the project's `file:` dependencies (the SDK), once: no registry.
fn link_js_dependencies(dir: &Path) -> anyhow::Result<()> {
    if !dir.join("package.json").is_file() || dir.join("node_modules").is_dir() {
        return Ok(());
    }
    toolchains::require_npm()?;
    run(
        Command::new("npm").args(["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(dir),
        "npm install of the project's dependencies failed",
    )
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
