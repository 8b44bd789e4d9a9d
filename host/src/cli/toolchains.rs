//! The pinned tools that turn a Python or JavaScript policy into a component
//! (componentize-py; jco with componentize-js), installed once per user outside any
//! project: under `$TOLLGATE_TOOLCHAINS`, else `$XDG_CACHE_HOME/tollgate/toolchains`, else
//! `~/.cache/tollgate/toolchains`. Each install writes a marker last, so one cut short is
//! done again from scratch. Two first builds at the same moment may both install; run
//! the first alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

/// componentize-py, the version `guest-sdk/python/build.sh` pins and the SDK is tested with.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// The jco toolchain's manifest and lock (jco 1.34.0, componentize-js 0.22.0), as
/// `guest-sdk/js/build.sh` installs them. The lock is the pin: `npm ci` installs exactly it.
const JS_PACKAGE_JSON: &str = include_str!("../../../guest-sdk/js/toolchain/package.json");
const JS_PACKAGE_LOCK: &str = include_str!("../../../guest-sdk/js/toolchain/package-lock.json");
/// The directory the JS toolchain goes in, named by its pins.
const JS_TOOLCHAIN_DIR: &str = "jco-1.34.0-componentize-js-0.22.0";
/// Written after an install succeeded.
const MARKER: &str = "installed";

/// Oldest Python the SDK and componentize-py run on.
const MIN_PYTHON: (u32, u32) = (3, 10);

/// Where the toolchains live.
pub fn root() -> anyhow::Result<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("TOLLGATE_TOOLCHAINS") {
        return Ok(dir);
    }
    let cache = set("XDG_CACHE_HOME").or_else(|| set("HOME").map(|home| home.join(".cache")));
    cache
        .map(|c| c.join("tollgate").join("toolchains"))
        .ok_or_else(|| anyhow::anyhow!("set TOLLGATE_TOOLCHAINS (or HOME) to a directory for the build toolchains"))
}

/// Fails with a clear message unless `python3` is 3.10 or later.
pub fn require_python() -> anyhow::Result<()> {
    let hint = "install Python 3.10 or later with venv (Debian/Ubuntu: apt-get install python3 python3-venv)";
    let output = Command::new("python3").args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).output();
    let version = match output {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout).trim().to_string(),
        _ => bail!("`python3` is needed and was not found: {hint}"),
    };
    if parse_version(&version) < (MIN_PYTHON.0, MIN_PYTHON.1, 0) {
        bail!("python3 is {version}; a Python policy needs 3.10 or later: {hint}");
    }
    Ok(())
}

/// Fails with a clear message unless `node` runs the SDK and jco: 20.19+ or 22.12+
/// (jco bundles with rolldown, which needs them; the SDK's `engines` says the same).
pub fn require_node() -> anyhow::Result<()> {
    let hint = "install Node.js 20.19 or later (or 22.12+) with npm (Debian/Ubuntu: apt-get install nodejs npm)";
    let version = match Command::new("node").arg("--version").output() {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout).trim().trim_start_matches('v').to_string(),
        _ => bail!("`node` is needed and was not found: {hint}"),
    };
    let (major, minor, _) = parse_version(&version);
    if !(major > 22 || (major == 22 && minor >= 12) || (major == 20 && minor >= 19)) {
        bail!("node is {version}, too old for a JavaScript policy: {hint}");
    }
    Ok(())
}

/// Fails with a clear message unless `npm` runs.
pub fn require_npm() -> anyhow::Result<()> {
    match Command::new("npm").arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        _ => bail!("`npm` is needed and was not found: install it with Node.js (Debian/Ubuntu: apt-get install npm)"),
    }
}

fn parse_version(text: &str) -> (u32, u32, u32) {
    let mut parts = text.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The `componentize-py` executable, installed into a venv on first use (from PyPI).
pub fn componentize_py() -> anyhow::Result<PathBuf> {
    let dir = root()?.join(format!("componentize-py-{COMPONENTIZE_PY_VERSION}"));
    let bin = dir.join("bin").join("componentize-py");
    if dir.join(MARKER).is_file() {
        return Ok(bin);
    }
    require_python()?;
    start_over(&dir)?;
    eprintln!("installing componentize-py {COMPONENTIZE_PY_VERSION} into {} (once)", dir.display());
    let venv = Command::new("python3").arg("-m").arg("venv").arg(&dir).status().context("running python3 -m venv")?;
    if !venv.success() {
        bail!("`python3 -m venv` failed: install the venv module (Debian/Ubuntu: apt-get install python3-venv)");
    }
    let pip = Command::new(dir.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("componentize-py=={COMPONENTIZE_PY_VERSION}"))
        .status()
        .context("running pip")?;
    if !pip.success() {
        bail!("installing componentize-py {COMPONENTIZE_PY_VERSION} from PyPI failed (pip's errors are above)");
    }
    finish(&dir)?;
    Ok(bin)
}

/// The `jco` executable, installed with `npm ci` from the embedded lock on first use.
pub fn jco() -> anyhow::Result<PathBuf> {
    let dir = root()?.join(JS_TOOLCHAIN_DIR);
    let bin = dir.join("node_modules").join(".bin").join("jco");
    let same_lock = std::fs::read_to_string(dir.join("package-lock.json")).is_ok_and(|lock| lock == JS_PACKAGE_LOCK);
    if dir.join(MARKER).is_file() && same_lock {
        return Ok(bin);
    }
    require_node()?;
    require_npm()?;
    start_over(&dir)?;
    eprintln!("installing jco 1.34.0 and componentize-js 0.22.0 into {} (once)", dir.display());
    std::fs::write(dir.join("package.json"), JS_PACKAGE_JSON)?;
    std::fs::write(dir.join("package-lock.json"), JS_PACKAGE_LOCK)?;
    let npm = Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(&dir).status().context("running npm ci")?;
    if !npm.success() {
        bail!("installing jco from npm failed (npm's errors are above)");
    }
    finish(&dir)?;
    Ok(bin)
}

/// Removes what an earlier, unfinished install left, and makes `dir` anew.
fn start_over(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing the unfinished install in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn finish(dir: &Path) -> anyhow::Result<()> {
    std::fs::write(dir.join(MARKER), "").with_context(|| format!("writing the marker in {}", dir.display()))
}
