//! Builds the Python and JavaScript policies (`policies/python-*`, `policies/js-*`) with
//! their SDKs' build scripts, once per change: a component is cached under
//! `target/language-guests/` by a hash of everything that goes into it (the SDK, the
//! policy, the WIT and the pinned toolchain), so a rerun with nothing changed builds
//! nothing. A Python build takes ~15 s, a JavaScript one ~10 s.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::guests::workspace_root;

/// The language a guest policy is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// `guest-sdk/python`, built with componentize-py.
    Python,
    /// `guest-sdk/js`, built with jco componentize (StarlingMonkey).
    JavaScript,
}

impl Language {
    fn sdk(self) -> PathBuf {
        workspace_root().join("guest-sdk").join(match self {
            Language::Python => "python",
            Language::JavaScript => "js",
        })
    }
}

/// Files that are build outputs or tool state, not sources.
fn is_source(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !matches!(name, "node_modules" | "__pycache__" | "policy.wasm" | ".pytest_cache")
}

/// Appends every source file under `dir` (sorted, so the hash is stable) as path and bytes.
/// Paths are hashed relative to the workspace root, so two checkouts sharing one target
/// dir share the cache.
fn hash_tree(root: &Path, dir: &Path, into: &mut Vec<u8>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries.into_iter().filter(|p| is_source(p)) {
        if path.is_dir() {
            hash_tree(root, &path, into)?;
        } else {
            into.extend_from_slice(path.strip_prefix(root).unwrap_or(&path).to_string_lossy().as_bytes());
            into.extend_from_slice(&std::fs::read(&path)?);
        }
    }
    Ok(())
}

fn build(language: Language, policy: &str) -> Result<Vec<u8>, String> {
    let root = workspace_root();
    let policy_dir = root.join("policies").join(policy);
    let mut inputs = Vec::new();
    for dir in [language.sdk(), policy_dir.clone(), root.join("wit")] {
        hash_tree(&root, &dir, &mut inputs).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    }
    let hash = tollgate::PolicyHash::of(&inputs).to_string();
    let cache = root.join("target").join("language-guests");
    let out = cache.join(format!("{policy}-{}.wasm", &hash[..16]));
    if let Ok(wasm) = std::fs::read(&out) {
        return Ok(wasm);
    }
    std::fs::create_dir_all(&cache).map_err(|e| format!("creating {}: {e}", cache.display()))?;
    // Built beside the cache entry and renamed: a build cut short leaves no entry.
    let partial = cache.join(format!("{policy}-{}.partial.wasm", &hash[..16]));
    let output = Command::new("bash")
        .arg(language.sdk().join("build.sh"))
        .arg(&policy_dir)
        .arg(&partial)
        .output()
        .map_err(|e| format!("running build.sh: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building {policy} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::rename(&partial, &out).map_err(|e| format!("caching {}: {e}", out.display()))?;
    // Older builds of the same policy are stale now: keep the cache one entry per policy.
    let prefix = format!("{policy}-");
    for stale in std::fs::read_dir(&cache).into_iter().flatten().flatten().map(|e| e.path()) {
        let name = stale.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let other_policy = name.strip_prefix(&prefix).is_none_or(|rest| rest.contains('-'));
        if stale != out && !other_policy {
            let _ = std::fs::remove_file(&stale);
        }
    }
    std::fs::read(&out).map_err(|e| format!("reading {}: {e}", out.display()))
}

/// The component of `policies/<policy>` (e.g. `python-default`), built on first use.
/// Panics with the build output if it does not build: every test that needs it fails
/// loudly.
#[allow(clippy::panic)]
pub fn wasm(language: Language, policy: &str) -> Vec<u8> {
    // One build at a time: tests running in parallel must not build the same cache entry
    // twice, nor load the two cores with two toolchains at once.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    build(language, policy).unwrap_or_else(|e| panic!("{e}"))
}
