//! The policy author's loop with the real `tollgate` binary, as the project README a new
//! project gets tells it: `policy new` in an empty directory, an edit, `policy test`,
//! `policy build`, then `policy upload` and `policy assign` against a running gateway
//! (as the operator, and as the tenant with its manage token), and a chat the new policy
//! routes; in Rust, Python and JavaScript. The Rust projects build into
//! `target/policy-cli`, and the Python and JavaScript toolchains install into
//! `target/policy-cli-toolchains` (both kept between runs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

use common::{Gateway, ADMIN};

/// A build of the project's dependencies, or an install of a toolchain, from cold fits
/// well within this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

fn workspace_target() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target")
}

/// Runs `tollgate ARGS` with only `env` of the gateway tokens set; bounded.
fn tollgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .args(args)
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .env_remove("TOLLGATE_TOKEN")
        // The outer test build's flags must not leak into the project's build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", workspace_target().join("policy-cli"))
        .env("TOLLGATE_TOOLCHAINS", workspace_target().join("policy-cli-toolchains"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().expect("spawn tollgate");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let started = Instant::now();
    match rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok(output) => output.expect("tollgate output"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            panic!("tollgate {args:?} ran past {:?}", started.elapsed());
        }
    }
}

fn succeeded(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = tollgate(args, env);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "tollgate {args:?}: {}\nstdout:\n{stdout}\nstderr:\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Both streams of a command that must succeed (unittest reports on stderr).
fn succeeded_all(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = tollgate(args, env);
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "tollgate {args:?}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    format!("{stdout}{stderr}")
}

fn failed(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = tollgate(args, env);
    assert!(!output.status.success(), "tollgate {args:?} succeeded:\n{}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The last line of a command's output, as JSON.
fn last_json(stdout: &str) -> Value {
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON in:\n{stdout}"));
    serde_json::from_str(line).expect("JSON")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn a_rust_policy_goes_from_an_empty_directory_to_serving_a_chat() {
    let work = tempfile::tempdir().expect("tempdir");
    let project = work.path().join("my-policy");

    succeeded(&["policy", "new", path(&project), "--lang", "rust"], &[]);
    for file in ["Cargo.toml", "README.md", "src/lib.rs", "wit/policy.wit", "tollgate-sdk/src/testing.rs"] {
        assert!(project.join(file).is_file(), "{file} was not written");
    }
    assert!(failed(&["policy", "new", path(&project), "--lang", "rust"], &[]).contains("is not empty"));

    // The author's change: a trace of its own, so the served chat shows this build ran.
    let source = project.join("src/lib.rs");
    let edited = std::fs::read_to_string(&source).unwrap().replace("format!(\"default:{requested}\")", "format!(\"mine:{requested}\")");
    assert!(edited.contains("mine:"), "the template's trace line moved; update this test");
    std::fs::write(&source, edited).unwrap();
    // The template's own tests hold the stock trace: the edit makes them fail, as a test
    // run must show.
    let broken = tollgate(&["policy", "test", path(&project)], &[]);
    assert!(!broken.status.success(), "the native tests passed a changed trace");
    let tests = std::fs::read_to_string(&source).unwrap().replace("\"default:gpt-4o\"", "\"mine:gpt-4o\"");
    std::fs::write(&source, tests).unwrap();
    let tested = succeeded(&["policy", "test", path(&project)], &[]);
    assert!(tested.contains("test result: ok"), "{tested}");

    let built = last_json(&succeeded(&["policy", "build", path(&project)], &[]));
    let wasm = std::fs::read(project.join("policy.wasm")).expect("policy.wasm");
    assert_eq!(built["bytes"], wasm.len());
    let hash = built["hash"].as_str().expect("hash").to_string();

    let data = tempfile::tempdir().expect("tempdir");
    let gateway = Gateway::start(data.path());
    let url = format!("http://{}", gateway.client.addr);
    gateway.client.admin_ok("POST", "/admin/v1/tenants", json!({"id": "author"}));
    gateway.client.admin_ok("POST", "/admin/v1/tenants", json!({"id": "neighbour"}));
    let inference = gateway.client.admin_ok("POST", "/admin/v1/tenants/author/tokens", json!({"scope": "inference"}))["token"].as_str().unwrap().to_string();
    let manage = gateway.client.admin_ok("POST", "/admin/v1/tenants/author/tokens", json!({"scope": "manage"}))["token"].as_str().unwrap().to_string();

    // Without a token the CLI says which to set, before sending anything.
    assert!(failed(&["policy", "upload", path(&project.join("policy.wasm")), "--url", &url], &[]).contains("TOLLGATE_ADMIN_TOKEN"));

    // As the operator.
    let uploaded = last_json(&succeeded(&["policy", "upload", path(&project.join("policy.wasm")), "--url", &url], &[("TOLLGATE_ADMIN_TOKEN", ADMIN)]));
    assert_eq!(uploaded["hash"], hash.as_str(), "the hash `build` printed is the gateway's");
    let config = work.path().join("config.json");
    std::fs::write(&config, r#"{"provider": "demo", "model": "demo-small"}"#).unwrap();
    succeeded(&["policy", "assign", "author", &hash, "--config", path(&config), "--url", &url], &[("TOLLGATE_ADMIN_TOKEN", ADMIN)]);
    let chat = gateway.client.call("POST", "/v1/chat/completions", Some(&inference), json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
    assert_eq!(chat.status, 200, "{}", String::from_utf8_lossy(&chat.body));
    assert_eq!(chat.header("x-tollgate-policy-trace"), Some("mine:demo-small"));
    assert_eq!(chat.json()["model"], "demo-small");

    // As the tenant: its own upload and assignment, and nobody else's.
    let own = last_json(&succeeded(&["policy", "upload", path(&project.join("policy.wasm")), "--url", &url], &[("TOLLGATE_TOKEN", &manage)]));
    assert_eq!(own["hash"], hash.as_str());
    let uploads = gateway.client.admin_ok("GET", "/admin/v1/tenants/author/policies", Value::Null);
    assert!(uploads["data"].as_array().unwrap().iter().any(|u| u["hash"] == hash.as_str()), "{uploads}");
    let refused = failed(&["policy", "assign", "neighbour", &hash, "--url", &url], &[("TOLLGATE_TOKEN", &manage)]);
    assert!(refused.contains("not 'neighbour'"), "{refused}");
    let not_json = work.path().join("broken.json");
    std::fs::write(&not_json, "{provider").unwrap();
    assert!(failed(&["policy", "assign", "author", &hash, "--config", path(&not_json), "--url", &url], &[("TOLLGATE_TOKEN", &manage)]).contains("is not JSON"));
    std::fs::write(&config, r#"{"provider": "demo", "model": "demo-large"}"#).unwrap();
    succeeded(&["policy", "assign", "author", &hash, "--config", path(&config), "--url", &url], &[("TOLLGATE_TOKEN", &manage)]);
    let chat = gateway.client.call("POST", "/v1/chat/completions", Some(&inference), json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
    assert_eq!(chat.header("x-tollgate-policy-trace"), Some("mine:demo-large"));

    // Replay before assign: the policy with the first config against the requests served.
    std::fs::write(&config, r#"{"provider": "demo", "model": "demo-small"}"#).unwrap();
    let replayed = std::time::Instant::now();
    let report = loop {
        let report = last_json(&succeeded(&["policy", "replay", path(&project.join("policy.wasm")), "--tenant", "author", "--config", path(&config), "--url", &url], &[("TOLLGATE_TOKEN", &manage)]));
        // The inputs of the last chat are recorded just after its answer.
        if report["replayed"] == 2 || replayed.elapsed() > Duration::from_secs(10) {
            break report;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!((report["replayed"].as_u64(), report["same"].as_u64(), report["different"].as_u64()), (Some(2), Some(1), Some(1)), "{report}");
    assert!(failed(&["policy", "replay", path(&project.join("policy.wasm")), "--tenant", "author", "--since", "yesterday", "--url", &url], &[("TOLLGATE_TOKEN", &manage)]).contains("is not a date"));
    gateway.kill();
}

#[test]
fn build_and_test_refuse_a_directory_that_is_not_a_policy_project() {
    let empty = tempfile::tempdir().expect("tempdir");
    for command in ["test", "build"] {
        let message = failed(&["policy", command, path(empty.path())], &[]);
        assert!(message.contains("is not a policy project"), "{command}: {message}");
    }
}

/// The limits a Python or JavaScript component needs raised to be admitted and to run
/// (as `tests/all/policy_languages.rs` explains): it carries an interpreter.
const INTERPRETER_LIMITS: &str = "[policy]
upload_bytes = 33554432
max_core_instances_per_component = 40
cpu_deadline_ms = 100
tenant_cpu_ms_per_second = 1000
";

/// How a language's template is edited and tested, for [`interpreter_loop`].
struct Port {
    lang: &'static str,
    /// The policy's source, its trace line, and that line with the author's trace.
    source: &'static str,
    trace: (&'static str, &'static str),
    /// The tests' file, and the stock trace they expect.
    tests: &'static str,
    expected: (&'static str, &'static str),
    /// What the test run prints when every test passed.
    passed: &'static str,
    /// The files `new` must write besides the common ones.
    files: &'static [&'static str],
    /// Directories of the repository (from its root) the project must hold the same
    /// files of, at these paths: the SDK and the port `new` embeds.
    copies: &'static [(&'static str, &'static str)],
}

/// Every file under `repo` (but tool state) is in `project` at the same path, byte for
/// byte: a file added to the SDK and not to the CLI's template fails here.
fn assert_copied(repo: &Path, project: &Path) {
    for entry in std::fs::read_dir(repo).unwrap_or_else(|e| panic!("{}: {e}", repo.display())) {
        let from = entry.unwrap().path();
        let name = from.file_name().unwrap();
        if ["node_modules", "__pycache__", "policy.wasm", "package.json", "package-lock.json"].iter().any(|n| name == *n) {
            continue;
        }
        let to = project.join(name);
        if from.is_dir() {
            assert_copied(&from, &to);
        } else {
            assert!(std::fs::read(&to).ok() == std::fs::read(&from).ok(), "{} is not the same as {}", to.display(), from.display());
        }
    }
}

/// new → edit the trace → the tests fail → fix their expectation → they pass → build →
/// upload → assign → a chat whose trace shows the edit.
fn interpreter_loop(port: &Port) {
    let work = tempfile::tempdir().expect("tempdir");
    let project = work.path().join("my-policy");

    succeeded(&["policy", "new", path(&project), "--lang", port.lang], &[]);
    for file in ["README.md", "config.json", ".gitignore", "wit/policy.wit", port.source, port.tests].iter().chain(port.files) {
        assert!(project.join(file).is_file(), "{file} was not written");
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for (repo, copy) in port.copies {
        assert_copied(&root.join(repo), &project.join(copy));
    }

    let source = project.join(port.source);
    let edited = std::fs::read_to_string(&source).unwrap().replace(port.trace.0, port.trace.1);
    assert!(edited.contains(port.trace.1), "the template's trace line moved; update this test");
    std::fs::write(&source, edited).unwrap();
    let broken = tollgate(&["policy", "test", path(&project)], &[]);
    assert!(!broken.status.success(), "the native tests passed a changed trace");
    let tests = project.join(port.tests);
    let fixed = std::fs::read_to_string(&tests).unwrap().replace(port.expected.0, port.expected.1);
    assert!(fixed.contains(port.expected.1), "the template's test of the trace moved; update this test");
    std::fs::write(&tests, fixed).unwrap();
    let tested = succeeded_all(&["policy", "test", path(&project)], &[]);
    assert!(tested.contains(port.passed), "{tested}");

    let built = last_json(&succeeded(&["policy", "build", path(&project)], &[]));
    let wasm = std::fs::read(project.join("policy.wasm")).expect("policy.wasm");
    assert_eq!(built["bytes"], wasm.len());
    let hash = built["hash"].as_str().expect("hash").to_string();

    let data = tempfile::tempdir().expect("tempdir");
    let config = common::config_file(work.path(), INTERPRETER_LIMITS);
    let gateway = Gateway::start_with(data.path(), &[("TOLLGATE_CONFIG", path(&config))]);
    let url = format!("http://{}", gateway.client.addr);
    gateway.client.admin_ok("POST", "/admin/v1/tenants", json!({"id": "author"}));
    let inference = gateway.client.admin_ok("POST", "/admin/v1/tenants/author/tokens", json!({"scope": "inference"}))["token"].as_str().unwrap().to_string();

    let uploaded = last_json(&succeeded(&["policy", "upload", path(&project.join("policy.wasm")), "--url", &url], &[("TOLLGATE_ADMIN_TOKEN", ADMIN)]));
    assert_eq!(uploaded["hash"], hash.as_str(), "the hash `build` printed is the gateway's");
    // The project's own config.json, as its README says.
    succeeded(&["policy", "assign", "author", &hash, "--config", path(&project.join("config.json")), "--url", &url], &[("TOLLGATE_ADMIN_TOKEN", ADMIN)]);
    let chat = gateway.client.call("POST", "/v1/chat/completions", Some(&inference), json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
    assert_eq!(chat.status, 200, "{}", String::from_utf8_lossy(&chat.body));
    assert_eq!(chat.header("x-tollgate-policy-trace"), Some("mine:demo-small"));
    assert_eq!(chat.json()["model"], "demo-small");
    gateway.kill();
}

#[test]
fn a_python_policy_goes_from_an_empty_directory_to_serving_a_chat() {
    interpreter_loop(&Port {
        lang: "python",
        source: "policy.py",
        trace: ("trace=f\"default:{requested}\"", "trace=f\"mine:{requested}\""),
        tests: "test_policy.py",
        expected: ("\"default:gpt-4o\"", "\"mine:gpt-4o\""),
        passed: "\nOK",
        files: &["tollgate_policy/__init__.py", "tollgate_policy/testing.py"],
        copies: &[("guest-sdk/python/tollgate_policy", "tollgate_policy"), ("policies/python-default", "")],
    });
}

#[test]
fn a_javascript_policy_goes_from_an_empty_directory_to_serving_a_chat() {
    interpreter_loop(&Port {
        lang: "js",
        source: "policy.js",
        trace: ("trace: `default:${requested}`", "trace: `mine:${requested}`"),
        tests: "policy.test.js",
        expected: ("\"default:gpt-4o\"", "\"mine:gpt-4o\""),
        passed: "# fail 0",
        files: &["package.json", "tollgate-policy/package.json", "tollgate-policy/src/testing.js"],
        copies: &[("guest-sdk/js/src", "tollgate-policy/src"), ("policies/js-default", "")],
    });
}

#[test]
fn test_and_build_say_which_tool_is_missing() {
    let work = tempfile::tempdir().expect("tempdir");
    // No tools on the PATH, and no toolchain installed yet.
    let bare = [("PATH", ""), ("TOLLGATE_TOOLCHAINS", path(work.path()))];
    for (lang, tool) in [("python", "`python3` is needed"), ("js", "`node` is needed")] {
        let project = work.path().join(lang);
        succeeded(&["policy", "new", path(&project), "--lang", lang], &[]);
        for command in ["test", "build"] {
            let message = failed(&["policy", command, path(&project)], &bare);
            assert!(message.contains(tool), "{lang} {command}: {message}");
        }
    }
}

#[test]
fn a_toolchain_install_cut_short_is_not_used() {
    let work = tempfile::tempdir().expect("tempdir");
    let toolchains = work.path().join("toolchains");
    // What an install killed before its marker leaves: the tools, and no marker. `build`
    // must install again (here it stops at the missing python3 or node), not run them.
    for (lang, tool, leftover) in [
        ("python", "`python3` is needed", "componentize-py-0.25.1/bin/componentize-py"),
        ("js", "`node` is needed", "jco-1.34.0-componentize-js-0.22.0/node_modules/.bin/jco"),
    ] {
        let project = work.path().join(lang);
        succeeded(&["policy", "new", path(&project), "--lang", lang], &[]);
        let fake = toolchains.join(leftover);
        std::fs::create_dir_all(fake.parent().unwrap()).unwrap();
        std::fs::write(&fake, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let message = failed(&["policy", "build", path(&project)], &[("PATH", ""), ("TOLLGATE_TOOLCHAINS", path(&toolchains))]);
        assert!(message.contains(tool), "{lang}: {message}");
        assert!(!project.join("policy.wasm").exists(), "{lang}: the unfinished toolchain ran");
    }
}
