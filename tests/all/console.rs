//! The web console (`/console/`). Its assets are served under the Content-Security-Policy
//! with no secret in any of them and no way for the page to keep a token; a tenant's token
//! reaches nothing of another tenant's through any call the console makes. Then a real
//! headless Chromium, driven through Selenium by `tests/console/drive.py`, uses the console
//! as the operator and as a tenant, and what the page shows is checked against the API and
//! the ledger: spend, requests, tokens, credentials, sessions, policy uploads, and a
//! candidate policy tried, compared (the test sends chats while the page waits) and
//! promoted. The forms' choices (token scopes, budget periods, candidate modes) and the
//! API tab are checked against `/openapi.json`, and a page that cannot read it must say so.
//!
//! The browser tests need Debian's `chromium` and `chromium-driver`. Without them they
//! skip, unless `TOLLGATE_REQUIRE_BROWSER=1` (set by `.ci/run`), where they fail.
//! Screenshots land in `target/console-screenshots/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::mocked::{admin_ok, chat};
use crate::support::{python_with, Gateway, ADMIN};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Selenium's Python bindings, pinned (4.52 needs a certifi newer than the registry holds).
const SELENIUM: &str = "selenium==4.51.0";
/// One scenario is a browser start and a few dozen page steps, each waiting at most 30 s
/// (drive.py); this bounds a hung browser, not a slow one.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);

const ACME: &str = "console-acme";
const GLOBEX: &str = "console-globex";
/// Every response under `/console` carries exactly this policy.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn workspace_root() -> PathBuf {
    tollgate_tests::guests::workspace_root()
}

fn browser_required() -> bool {
    std::env::var("TOLLGATE_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

/// The Python that drives the browser, or `None` (the test skips) with no browser installed.
async fn browser() -> Option<PathBuf> {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        assert!(!browser_required(), "TOLLGATE_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)");
        eprintln!("skipped: no headless browser at {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)");
        return None;
    }
    Some(python_with("py-selenium", SELENIUM).await)
}

/// Runs one scenario of `drive.py` against `gw` and returns what the page showed.
async fn drive(python: &Path, gw: &Gateway, scenario: &str, config: Value) -> Value {
    Scenario::start(python, gw, scenario, config).await.finish().await
}

/// A running scenario of `drive.py`. It may pause at a named step (`reached`) for the test
/// to act on the gateway before the page goes on (`resume`). The config (tokens included)
/// goes through stdin, not the command line.
struct Scenario {
    name: String,
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// Read to the end beside stdout, so a chatty browser cannot fill the pipe and stall.
    stderr: tokio::task::JoinHandle<String>,
    /// Every stdout line so far, for the failure message.
    printed: Vec<String>,
}

impl Scenario {
    async fn start(python: &Path, gw: &Gateway, scenario: &str, mut config: Value) -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        config["base_url"] = json!(format!("http://{}", gw.addr));
        config["chromium"] = json!(CHROMIUM);
        config["chromedriver"] = json!(CHROMEDRIVER);
        config["screenshot_dir"] = json!(workspace_root().join("target").join("console-screenshots"));
        let mut child = tokio::process::Command::new(python)
            .arg(workspace_root().join("tests").join("console").join("drive.py"))
            .arg(scenario)
            // Selenium Manager would try to download a browser: there is no network for it.
            .env("SE_OFFLINE", "true")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start python");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(format!("{config}\n").as_bytes()).await.expect("write the config");
        let stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Scenario { name: scenario.to_string(), child, stdin: Some(stdin), stdout, stderr, printed: Vec::new() }
    }

    /// The next stdout line, or `None` at its end; bounded like the whole scenario.
    async fn line(&mut self) -> Option<String> {
        let line = tokio::time::timeout(SCENARIO_TIMEOUT, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("console scenario {} printed nothing for {SCENARIO_TIMEOUT:?}", self.name))
            .expect("read the scenario's output")?;
        self.printed.push(line.clone());
        Some(line)
    }

    /// Fails the test with what the scenario printed and logged.
    async fn fail(&mut self, why: &str) -> ! {
        drop(self.stdin.take());
        let _ = tokio::time::timeout(SCENARIO_TIMEOUT, self.child.wait()).await;
        let stderr = tokio::time::timeout(SCENARIO_TIMEOUT, &mut self.stderr).await.ok().and_then(Result::ok).unwrap_or_default();
        panic!("console scenario {} {why}\nstdout:\n{}\nstderr:\n{stderr}", self.name, self.printed.join("\n"));
    }

    /// Waits until the page paused at `step`; returns what it reported there.
    async fn reached(&mut self, step: &str) -> Value {
        loop {
            let Some(line) = self.line().await else {
                self.fail(&format!("ended before the step {step}")).await;
            };
            match serde_json::from_str::<Value>(&line) {
                Ok(report) if report["paused"] == step => return report,
                _ => {}
            }
        }
    }

    /// Lets the page go on from the step it paused at.
    async fn resume(&mut self) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().expect("the scenario's stdin is open");
        stdin.write_all(b"go\n").await.expect("resume the scenario");
        stdin.flush().await.expect("resume the scenario");
    }

    /// Waits for the scenario to end and returns its result; the browser must have logged
    /// no error (SEVERE) the scenario did not set apart.
    async fn finish(mut self) -> Value {
        drop(self.stdin.take());
        while self.line().await.is_some() {}
        let status = tokio::time::timeout(SCENARIO_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("console scenario {} did not finish within {SCENARIO_TIMEOUT:?}", self.name))
            .expect("run python");
        if !status.success() {
            self.fail(&format!("failed ({status})")).await;
        }
        let Some(result) = self.printed.last().and_then(|l| serde_json::from_str::<Value>(l).ok()) else {
            self.fail("printed no JSON result").await;
        };
        let errors: Vec<&Value> = result["browser_log"].as_array().into_iter().flatten().filter(|e| e["level"] == "SEVERE").collect();
        assert!(errors.is_empty(), "the console logged errors in scenario {}: {errors:#?}", self.name);
        result
    }
}

/// A gateway with two demo tenants and some real chats: acme spends on two models (the
/// dearer one makes it the top spender), globex on one.
async fn fixture() -> (Gateway, String) {
    let gw = Gateway::start().await;
    let acme = gw.demo_tenant(ACME, 100.0).await;
    let globex = gw.demo_tenant(GLOBEX, 50.0).await;
    for (token, model) in [(&acme, "demo-small"), (&acme, "demo-small"), (&acme, "demo-large"), (&globex, "demo-small")] {
        let reply = gw.chat(token, chat(model, "Hello from the console test")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    (gw, acme)
}

async fn manage_token(gw: &Gateway, tenant: &str) -> String {
    let issued = admin_ok(gw, "POST", &format!("/admin/v1/tenants/{tenant}/tokens"), json!({"scope": "manage"})).await;
    issued["token"].as_str().expect("token").to_string()
}

async fn get(gw: &Gateway, path: &str) -> Value {
    admin_ok(gw, "GET", path, Value::Null).await
}

/// `$1,234.50`-style text, as the console formats micro-dollars (2 to 6 decimals).
fn usd(microdollars: u64) -> String {
    let whole = microdollars / 1_000_000;
    let mut fraction = format!("{:06}", microdollars % 1_000_000);
    while fraction.len() > 2 && fraction.ends_with('0') {
        fraction.pop();
    }
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("${grouped}.{fraction}")
}

fn bar_labels(chart: &Value) -> Vec<String> {
    chart["datasets"].as_array().expect("datasets").iter().filter(|d| d["type"] == "bar").map(|d| d["label"].as_str().unwrap_or("").to_string()).collect()
}

fn series_keys(daily: &Value) -> Vec<String> {
    daily["series"].as_array().expect("series").iter().map(|s| s["key"].as_str().unwrap_or("").to_string()).collect()
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}

/// `GET /openapi.json`, as anyone (no token) reads it.
async fn description(gw: &Gateway) -> Value {
    let reply = gw.call("GET", "/openapi.json", None, &[], Vec::new()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// The choices the description gives for `field` of the `schema` body: the `enum` its
/// `$ref` (directly or in a `oneOf` beside `null`) points at.
fn body_enum(doc: &Value, schema: &str, field: &str) -> Vec<String> {
    let property = &doc["components"]["schemas"][schema]["properties"][field];
    let refs: Vec<&str> = std::iter::once(property).chain(property["oneOf"].as_array().into_iter().flatten()).filter_map(|s| s["$ref"].as_str()).collect();
    assert_eq!(refs.len(), 1, "{schema}.{field} names one schema: {property}");
    let target = doc.pointer(refs[0].trim_start_matches('#')).unwrap_or_else(|| panic!("{} resolves", refs[0]));
    let choices = strings(&target["enum"]);
    assert!(!choices.is_empty(), "{} has an enum: {target}", refs[0]);
    choices
}

/// Every operation of the description as `METHOD path`, with its first tag, sorted.
fn operations(doc: &Value) -> Vec<(String, String, String)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if let Some(tag) = op["tags"][0].as_str() {
                all.push((method.to_uppercase(), path.clone(), tag.to_string()));
            }
        }
    }
    all.sort();
    all
}

/// The API tab's routes as `(METHOD, path, tag)`, sorted.
fn listed_routes(page: &Value) -> Vec<(String, String, String)> {
    let text = |r: &Value, k: &str| r[k].as_str().unwrap_or("").to_string();
    let mut routes: Vec<_> = page["routes"].as_array().expect("routes").iter().map(|r| (text(r, "method"), text(r, "path"), text(r, "tag"))).collect();
    routes.sort();
    routes
}

/// Every file of the console as the gateway serves it: its path under `/console/` and
/// the reply.
async fn served_assets(gw: &Gateway) -> Vec<(String, crate::support::Reply)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read host/console") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                out.push(path.strip_prefix(base).expect("under base").to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let root = workspace_root().join("host").join("console");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();
    assert!(files.contains(&"index.html".to_string()) && files.len() > 10, "the console's files: {files:?}");
    let mut replies = Vec::new();
    for file in files {
        let reply = gw.call("GET", &format!("/console/{file}"), None, &[], Vec::new()).await;
        replies.push((file, reply));
    }
    replies
}

fn assert_secured(what: &str, reply: &crate::support::Reply) {
    assert_eq!(reply.header("content-security-policy"), CSP, "{what}");
    assert_eq!(reply.header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(reply.header("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(reply.header("x-frame-options"), "DENY", "{what}");
}

#[tokio::test]
async fn every_console_asset_is_served_under_the_policy_with_no_secret_in_it() {
    let (gw, acme_token) = fixture().await;
    let manage = manage_token(&gw, ACME).await;
    let api_key = "sk-console-credential-canary-7f3a";
    admin_ok(&gw, "PUT", &format!("/admin/v1/tenants/{ACME}/credentials/console-key"), json!({"provider": "demo", "api_key": api_key})).await;
    let secrets = [ADMIN, acme_token.as_str(), manage.as_str(), api_key, "sk-canary-console-acme"];

    let bare = gw.call("GET", "/console", None, &[], Vec::new()).await;
    assert_eq!(bare.status, 308);
    assert_eq!(bare.header("location"), "/console/");
    assert_secured("GET /console", &bare);
    let index = gw.call("GET", "/console/", None, &[], Vec::new()).await;
    assert_eq!(index.status, 200);
    assert!(index.header("content-type").starts_with("text/html"), "{}", index.header("content-type"));
    assert_secured("GET /console/", &index);
    let page = index.text();
    // The policy forbids inline code and styles: the page must not need them.
    assert!(!page.contains("<style") && !page.contains("style="), "inline style in index.html");
    for script in page.split("<script").skip(1) {
        let tag = &script[..script.find('>').expect("closed tag")];
        assert!(tag.contains(" src="), "inline script in index.html: <script{tag}>");
    }
    let missing = gw.call("GET", "/console/no-such-file.js", None, &[], Vec::new()).await;
    assert_eq!(missing.status, 404);
    assert_secured("a missing file", &missing);

    for (file, reply) in served_assets(&gw).await {
        assert_eq!(reply.status, 200, "/console/{file}");
        assert_secured(&file, &reply);
        let expected_type = match file.rsplit('.').next() {
            Some("js" | "mjs") => "javascript",
            Some("css") => "text/css",
            Some("html") => "text/html",
            _ => "",
        };
        assert!(reply.header("content-type").contains(expected_type), "/console/{file}: {}", reply.header("content-type"));
        let bytes = String::from_utf8_lossy(&reply.body);
        for secret in secrets {
            assert!(!bytes.contains(secret), "/console/{file} holds a secret");
        }
        // The token lives in one module variable: our own code never stores it anywhere
        // a reload (or another page) could find it, nor evaluates strings as code.
        if !file.starts_with("vendor/") {
            for banned in ["localStorage", "sessionStorage", "document.cookie", "indexedDB", "eval(", "new Function"] {
                assert!(!bytes.contains(banned), "/console/{file} uses {banned}");
            }
        }
    }
}

#[tokio::test]
async fn a_tenant_token_reaches_nothing_of_another_tenant_through_the_console_api() {
    let (gw, acme_token) = fixture().await;
    let globex_manage = manage_token(&gw, GLOBEX).await;
    let calls = [
        ("GET", "/admin/v1/tenants".to_string()),
        ("GET", "/admin/v1/tenants?q=acme".to_string()),
        ("GET", "/admin/v1/usage/top?limit=10".to_string()),
        ("POST", "/admin/v1/tenants".to_string()),
        ("POST", "/admin/v1/policies".to_string()),
        ("PATCH", format!("/admin/v1/tenants/{ACME}")),
        ("GET", format!("/admin/v1/tenants/{ACME}")),
        ("GET", format!("/admin/v1/tenants/{ACME}/usage/daily?group_by=model")),
        ("GET", format!("/admin/v1/tenants/{ACME}/usage/records?limit=1000")),
        ("GET", format!("/admin/v1/tenants/{ACME}/budget")),
        ("GET", format!("/admin/v1/tenants/{ACME}/tokens")),
        ("POST", format!("/admin/v1/tenants/{ACME}/tokens")),
        ("GET", format!("/admin/v1/tenants/{ACME}/credentials")),
        ("GET", format!("/admin/v1/tenants/{ACME}/policy")),
        ("GET", format!("/admin/v1/tenants/{ACME}/policies")),
        ("GET", format!("/admin/v1/tenants/{ACME}/policy/log")),
        ("GET", format!("/admin/v1/tenants/{ACME}/sessions")),
        ("GET", format!("/admin/v1/tenants/{ACME}/memory")),
        ("GET", format!("/admin/v1/tenants/{ACME}/audit")),
    ];
    for (method, path) in &calls {
        let body = if *method == "GET" { Vec::new() } else { br#"{"scope":"manage"}"#.to_vec() };
        let reply = gw.call(method, path, Some(&globex_manage), &[], body).await;
        assert!(reply.status == 403 || reply.status == 404, "{method} {path} with another tenant's manage token: {} {}", reply.status, reply.text());
        assert!(!reply.text().contains(ACME) || reply.status == 404, "{method} {path} leaks: {}", reply.text());
    }
    // The tenant's own prefix names no tenant: it is always the token's.
    let own = gw.call("GET", "/v1/tenant", Some(&globex_manage), &[], Vec::new()).await;
    assert_eq!(own.json()["id"], GLOBEX);
    let daily = gw.call("GET", "/v1/tenant/usage/daily?group_by=model", Some(&globex_manage), &[], Vec::new()).await;
    assert_eq!(daily.status, 200, "{}", daily.text());
    assert_eq!(daily.json()["tenant_id"], GLOBEX);
    // An inference token cannot sign in to the console at all.
    let inference = gw.call("GET", "/v1/tenant", Some(&acme_token), &[], Vec::new()).await;
    assert_eq!(inference.status, 403, "{}", inference.text());
}

#[tokio::test]
async fn the_operator_finds_a_tenant_and_sees_its_spend_requests_and_budget() {
    let Some(python) = browser().await else { return };
    let (gw, _) = fixture().await;
    let globex_manage = manage_token(&gw, GLOBEX).await;
    // More tenants than one page holds, so the list pages (ids sort between acme and globex).
    for i in 0..120 {
        admin_ok(&gw, "POST", "/admin/v1/tenants", json!({"id": format!("console-bulk-{i:03}")})).await;
    }
    let ids = |page: &Value| -> Vec<String> { page["data"].as_array().expect("data").iter().map(|t| t["id"].as_str().unwrap_or("").to_string()).collect() };
    let doc = description(&gw).await;
    let first = get(&gw, "/admin/v1/tenants").await;
    let second = get(&gw, &format!("/admin/v1/tenants?after={}", first["next_after"].as_str().expect("a second page"))).await;
    let page = drive(
        &python,
        &gw,
        "operator",
        json!({"admin_token": ADMIN, "search": "acme", "open": ACME, "new_budget_usd": "250", "new_budget_text": "$250.00", "create_id": "console-created"}),
    )
    .await;

    assert_eq!(page["landed_on"], "/console/");
    assert_eq!(page["signed_in_as"], "Operator");
    assert_eq!(strings(&page["listed"]), ids(&first));
    assert_eq!(strings(&page["listed"]).len(), 100);
    assert_eq!(strings(&page["page2"]), ids(&second));
    assert!(strings(&page["listed"]).contains(&ACME.to_string()) && strings(&page["page2"]).contains(&GLOBEX.to_string()));
    assert_eq!(page["page2_has_next"], second["next_after"].is_string());
    assert_eq!(page["total_text"], "122 tenants");
    assert_eq!(strings(&page["searched"]), [ACME], "searching 'acme' lists only acme");
    assert!(page["searched_total_text"].as_str().unwrap_or("").contains("“acme”"), "{}", page["searched_total_text"]);

    // Top spenders: the order and amounts of the API's answer (acme ran the dear model).
    let top = get(&gw, "/admin/v1/usage/top?limit=10").await;
    let expected_top: Vec<Value> = top["data"].as_array().expect("top").iter().map(|t| json!({"tenant": t["tenant_id"], "spend": usd(t["cost_microdollars"].as_u64().unwrap_or(0))})).collect();
    assert_eq!(page["top"], json!(expected_top));
    assert_eq!(page["top"][0]["tenant"], ACME);

    // The spend chart draws the daily API's series for the range the page shows, and its
    // totals are the ledger's.
    assert!(page["title"].as_str().unwrap_or("").contains(ACME));
    let (start, end) = (page["range"]["start"].as_str().expect("start"), page["range"]["end"].as_str().expect("end"));
    let by_model = get(&gw, &format!("/admin/v1/tenants/{ACME}/usage/daily?start={start}&end={end}&group_by=model")).await;
    let by_provider = get(&gw, &format!("/admin/v1/tenants/{ACME}/usage/daily?start={start}&end={end}&group_by=provider")).await;
    let usage = get(&gw, &format!("/admin/v1/tenants/{ACME}/usage?start={start}&end={end}")).await;
    let ledger = get(&gw, &format!("/admin/v1/tenants/{ACME}/usage/records?start={start}&end={end}")).await;
    let records = ledger["data"].as_array().expect("records");
    let ledger_cost: u64 = records.iter().map(|r| r["cost_microdollars"].as_u64().unwrap_or(0)).sum();
    assert_eq!(records.len(), 3);
    assert!(ledger_cost > 0);
    assert_eq!(usage["cost_microdollars"].as_u64(), Some(ledger_cost));
    assert_eq!(page["spend_total_microdollars"].as_u64(), Some(ledger_cost));
    assert_eq!(page["spend_total_text"], usd(ledger_cost));
    assert_eq!(page["spend_requests_text"], "3");

    let chart = &page["chart_by_model"];
    assert_eq!(chart["days"], by_model["days"]);
    assert_eq!(bar_labels(chart), series_keys(&by_model));
    assert_eq!(bar_labels(chart).len(), 2, "two models: {:?}", bar_labels(chart));
    for series in by_model["series"].as_array().expect("series") {
        let drawn = chart["datasets"].as_array().expect("datasets").iter().find(|d| d["label"] == series["key"]).expect("drawn");
        let expected: Vec<f64> = series["cost_microdollars"].as_array().expect("costs").iter().map(|c| c.as_f64().unwrap_or(0.0) / 1e6).collect();
        let drawn: Vec<f64> = drawn["data"].as_array().expect("data").iter().map(|v| v.as_f64().unwrap_or(-1.0)).collect();
        assert_eq!(drawn, expected, "{}", series["key"]);
    }
    let lines: Vec<&Value> = chart["datasets"].as_array().expect("datasets").iter().filter(|d| d["type"] == "line").collect();
    let budget = lines.iter().find(|d| d["label"].as_str().unwrap_or("").starts_with("Budget ($100.00 per month)")).expect("the budget line");
    assert!(budget["data"].as_array().expect("data").iter().all(|v| v.as_f64() == Some(100.0)));
    let cumulative = lines.iter().find(|d| d["label"].as_str().unwrap_or("").starts_with("Cumulative spend")).expect("the cumulative line");
    let last = cumulative["data"].as_array().and_then(|d| d.last()).and_then(Value::as_f64).expect("a last day");
    assert!((last - ledger_cost as f64 / 1e6).abs() < 1e-9, "cumulative {last} vs ledger {ledger_cost}");
    let breakdown: u64 = page["breakdown"].as_array().expect("breakdown").iter().map(|r| r["microdollars"].as_u64().unwrap_or(0)).sum();
    assert_eq!(breakdown, ledger_cost);
    assert_eq!(bar_labels(&page["chart_by_provider"]), series_keys(&by_provider));

    // Requests: the ledger's records, and one record's decision trace.
    assert_eq!(page["requests"]["count"], "3");
    assert_eq!(page["requests"]["errors"], "0");
    assert_eq!(page["requests"]["cost"], usd(ledger_cost));
    let mut shown = strings(&page["request_ids"]);
    let mut stored: Vec<String> = records.iter().map(|r| r["request_id"].as_str().unwrap_or("").to_string()).collect();
    shown.sort();
    stored.sort();
    assert_eq!(shown, stored);
    let traced = records.iter().find(|r| r["request_id"] == page["trace"]["request-id"]).expect("the traced request is in the ledger");
    assert_eq!(page["trace"]["policy"], traced["policy_hash"]);
    assert_eq!(page["trace"]["target"], format!("{} / {}", traced["provider"].as_str().unwrap_or(""), traced["model"].as_str().unwrap_or("")));
    assert_eq!(page["trace"]["outcome"], "success");
    assert_eq!(page["trace"]["cost"], usd(traced["cost_microdollars"].as_u64().unwrap_or(0)));

    // The budget the operator set, and the tenant the operator created, are the API's.
    let acme = get(&gw, &format!("/admin/v1/tenants/{ACME}")).await;
    assert_eq!(acme["budget"], json!({"limit_microdollars": 250_000_000u64, "period": "month"}));
    assert!(page["budget_pill"].as_str().unwrap_or("").contains("$250.00 per month"));
    let created = get(&gw, "/admin/v1/tenants/console-created").await;
    assert_eq!(created["budget"], json!({"limit_microdollars": 5_000_000u64, "period": "month"}));

    // The budget periods offered are the description's, in both forms that offer them.
    let periods = body_enum(&doc, "CreateTenant", "budget_period");
    assert_eq!(periods, body_enum(&doc, "UpdateTenant", "budget_period"));
    assert_eq!(strings(&page["create_periods"]), periods);
    assert_eq!(strings(&page["limits_periods"]), periods);
    // The operator's API tab lists every operation of the description, under its tag.
    let routes = listed_routes(&page);
    assert!(routes.iter().any(|(m, p, _)| m == "GET" && p == "/admin/v1/usage/top"), "{routes:?}");
    assert_eq!(routes, operations(&doc));
    assert_eq!(page["description_fetches"], 1, "the description is read once");

    // Every call the operator's console made is refused to another tenant's manage token
    // (bar the public description).
    let calls = strings(&page["api_calls"]);
    for expected in ["/openapi.json", "/admin/v1/usage/top", &format!("/admin/v1/tenants/{ACME}/usage/daily"), &format!("/admin/v1/tenants/{ACME}/usage/records")] {
        assert!(calls.iter().any(|c| c.starts_with(expected)), "the console never called {expected}: {calls:?}");
    }
    for call in calls.iter().filter(|c| *c != "/openapi.json") {
        assert!(call.starts_with("/admin/v1/"), "the operator's console called {call}");
        let reply = gw.call("GET", call, Some(&globex_manage), &[], Vec::new()).await;
        assert!(reply.status == 403 || reply.status == 404, "GET {call} with another tenant's manage token: {}", reply.status);
    }
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_pages_and_manages_credentials_and_sessions() {
    let Some(python) = browser().await else { return };
    let (gw, acme_token) = fixture().await;
    let manage = manage_token(&gw, ACME).await;
    let session = "console-session-1";
    let reply = gw
        .call("POST", "/v1/chat/completions", Some(&acme_token), &[("x-session-id", session), ("x-session-history", "true")], chat("demo-small", "Remember the console test").to_string().into_bytes())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let credential_key = "sk-ui-typed-canary-91c2";
    let page = drive(
        &python,
        &gw,
        "tenant",
        json!({"manage_token": manage, "wrong_token": "tg_not-a-real-token", "other_tenant": GLOBEX, "credential_name": "typed-in-ui", "credential_key": credential_key, "session": session}),
    )
    .await;

    // A refused sign-in shows the gateway's reason; its own refused calls are the only
    // failures the page logged.
    let refused = gw.call("GET", "/v1/tenant", Some("tg_not-a-real-token"), &[], Vec::new()).await;
    assert_eq!(page["wrong_token_error"], refused.json()["error"]["message"]);
    for entry in page["sign_in_refusal_log"].as_array().expect("log") {
        let message = entry["message"].as_str().unwrap_or("");
        assert!(entry["source"] == "network" && (message.contains("/v1/tenant ") || message.contains("/admin/v1/tenants ")), "unexpected log entry: {entry}");
    }

    assert_eq!(page["signed_in_as"], format!("Tenant {ACME}"));
    for (element, shown) in page["operator_only"].as_object().expect("operator_only") {
        assert_eq!(shown, 0, "a tenant sees the operator's {element}");
    }
    assert_eq!(strings(&page["tabs"]), ["tab-spend", "tab-requests", "tab-tokens", "tab-credentials", "tab-policy", "tab-sessions", "tab-audit", "tab-api"]);
    for (name, shown) in page["pages"].as_object().expect("pages") {
        assert!(!shown["text"].as_str().unwrap_or("").contains(GLOBEX), "the {name} page shows the other tenant");
        assert_eq!(shown["source_has_other"], false, "the {name} page's DOM holds the other tenant");
        assert!(shown["text"].as_str().unwrap_or("").contains(ACME), "the {name} page does not say whose it is");
    }
    // The scopes offered are the description's; the API tab lists the model APIs and the
    // tenant's own resources, nothing of the operator's.
    let doc = description(&gw).await;
    assert_eq!(strings(&page["scopes"]), body_enum(&doc, "IssueToken", "scope"));
    let routes = listed_routes(&page);
    assert!(routes.iter().any(|(m, p, _)| m == "GET" && p == "/v1/tenant/tokens"), "{routes:?}");
    assert!(routes.iter().all(|(_, p, _)| !p.starts_with("/admin/")), "a tenant's API tab lists the operator's routes: {routes:?}");
    let expected: Vec<_> = operations(&doc).into_iter().filter(|(_, p, tag)| tag == "models" || p == "/v1/tenant" || p.starts_with("/v1/tenant/")).collect();
    assert_eq!(routes, expected);
    assert_eq!(page["description_fetches"], 1, "the description is read once");

    let daily = gw.call("GET", "/v1/tenant/usage/daily", Some(&manage), &[], Vec::new()).await.json();
    assert_eq!(bar_labels(&page["chart"]), series_keys(&daily));
    assert!(!series_keys(&daily).is_empty());

    // The credential typed into the page is stored, and the page forgot it.
    assert_eq!(page["credential_key_field_after"], "");
    assert_eq!(page["credential_key_in_page"], false);
    let credentials = get(&gw, &format!("/admin/v1/tenants/{ACME}/credentials")).await;
    let stored = credentials["data"].as_array().expect("data").iter().find(|c| c["name"] == "typed-in-ui").expect("the credential is stored");
    assert_eq!(stored["provider"], "demo");
    assert!(!credentials.to_string().contains(credential_key));

    // The session's turns were shown, then it was deleted.
    let turns = strings(&page["session_turns"]).join("\n");
    assert!(turns.contains("Remember the console test"), "{turns}");
    assert!(!strings(&page["sessions_after_delete"]).contains(&session.to_string()));
    let gone = gw.call("GET", &format!("/admin/v1/tenants/{ACME}/sessions/{session}"), Some(ADMIN), &[], Vec::new()).await;
    assert_eq!(gone.status, 404, "{}", gone.text());
    let audit = page["audit_text"].as_str().unwrap_or("");
    assert!(audit.contains("credential.put") && audit.contains("session.delete"), "{audit}");

    // Signed out, nothing of the tenant remains on the page.
    assert!(!page["after_sign_out"].as_str().unwrap_or("").contains(ACME));
    let calls = strings(&page["api_calls"]);
    assert!(calls.contains(&"/openapi.json".to_string()), "the console never read its description: {calls:?}");
    assert!(calls.iter().all(|c| c.starts_with("/v1/tenant") || c == "/openapi.json"), "a tenant's console called outside /v1/tenant: {calls:?}");
}

#[tokio::test]
async fn a_console_that_cannot_read_the_description_says_so() {
    let Some(python) = browser().await else { return };
    let (gw, _) = fixture().await;
    let manage = manage_token(&gw, ACME).await;
    let page = drive(&python, &gw, "description_unreadable", json!({"token": manage})).await;
    for key in ["tokens_error", "api_error"] {
        let shown = page[key].as_str().unwrap_or("");
        assert!(shown.contains("/openapi.json") && shown.contains("could not be read"), "{key}: {shown}");
    }
    // No guessed choices: nothing to pick, nothing to issue.
    assert_eq!(page["scope_options"], 0);
    assert_eq!(page["issue_enabled"], false);
    assert_eq!(page["api_routes"], 0);
    for entry in page["blocked_log"].as_array().expect("log") {
        assert!(entry["message"].as_str().unwrap_or("").contains("/openapi.json"), "unexpected log entry: {entry}");
    }
}

#[tokio::test]
async fn tokens_issued_and_revoked_in_the_console_work_and_stop_working() {
    let Some(python) = browser().await else { return };
    let (gw, _) = fixture().await;
    let manage = manage_token(&gw, ACME).await;
    let ids = |list: &Value| -> Vec<String> { list["data"].as_array().expect("data").iter().map(|t| t["id"].as_str().unwrap_or("").to_string()).collect() };
    let before = ids(&get(&gw, &format!("/admin/v1/tenants/{ACME}/tokens")).await);

    let created = drive(&python, &gw, "token_create", json!({"token": manage, "rows_before": before.len()})).await;
    let token = created["token"].as_str().expect("token").to_string();
    assert!(token.starts_with("tg_"), "{token}");
    assert!(created["warning"].as_str().unwrap_or("").contains("shown once"), "{}", created["warning"]);
    let after = ids(&get(&gw, &format!("/admin/v1/tenants/{ACME}/tokens")).await);
    let new: Vec<&String> = after.iter().filter(|id| !before.contains(id)).collect();
    assert_eq!(new.len(), 1, "{before:?} -> {after:?}");
    let new_id = new[0].clone();
    assert!(strings(&created["ids"]).contains(&new_id));
    let works = gw.chat(&token, chat("demo-small", "issued in the console")).await;
    assert_eq!(works.status, 200, "{}", works.text());

    let revoked = drive(&python, &gw, "token_revoke", json!({"token": manage, "revoke": new_id})).await;
    assert!(!strings(&revoked["ids"]).contains(&new_id));
    assert!(!ids(&get(&gw, &format!("/admin/v1/tenants/{ACME}/tokens")).await).contains(&new_id));
    let refused = gw.chat(&token, chat("demo-small", "revoked in the console")).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
}

#[tokio::test]
async fn a_policy_uploaded_and_assigned_in_the_console_is_the_tenants() {
    let Some(python) = browser().await else { return };
    let (gw, _) = fixture().await;
    let manage = manage_token(&gw, ACME).await;
    let wasm = tollgate_tests::guests::wasm("tollgate-policy-failover");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("failover.wasm");
    std::fs::write(&path, &wasm).expect("write the policy");
    let config = json!({"chain": [{"provider": "demo", "model": "demo-small", "credential": "default"}], "pass_through": false});

    let page = drive(&python, &gw, "policy_upload", json!({"token": manage, "wasm_path": path, "config": config.to_string()})).await;
    let hash = page["hash"].as_str().expect("hash");
    assert_eq!(hash.len(), 64, "{hash}");
    assert_eq!(page["assign_field"], hash, "the upload fills the assign form");

    let uploads = get(&gw, &format!("/admin/v1/tenants/{ACME}/policies")).await;
    let listed = uploads["data"].as_array().expect("data").iter().find(|p| p["hash"] == hash).expect("the API lists the upload");
    assert_eq!(listed["bytes"].as_u64(), Some(wasm.len() as u64));
    assert_eq!(listed["assigned"], true);
    let policy = get(&gw, &format!("/admin/v1/tenants/{ACME}/policy")).await;
    assert_eq!(policy["policy"]["hash"], hash);
    assert_eq!(serde_json::from_str::<Value>(policy["policy"]["config"].as_str().expect("config")).expect("JSON"), config);
    assert_eq!(page["current"], hash);
    assert_eq!(page["previous"], policy["previous_policy"]["hash"]);
    assert!(page["bad_config_error"].as_str().unwrap_or("").contains("not JSON"), "{}", page["bad_config_error"]);
}

/// The candidate report of `path` once `n` comparisons are logged (they run after the
/// response), bounded.
async fn comparisons_after(gw: &Gateway, path: &str, n: u64) -> Value {
    let started = std::time::Instant::now();
    loop {
        let report = get(gw, path).await;
        if report["comparisons"]["compared"].as_u64().unwrap_or(0) >= n {
            return report;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "fewer than {n} comparisons after 30 s: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn parsed(text: &Value) -> Value {
    serde_json::from_str(text.as_str().unwrap_or_else(|| panic!("JSON text: {text}"))).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_tried_in_the_console_is_compared_then_promoted() {
    let Some(python) = browser().await else { return };
    let gw = Gateway::start().await;
    let tenant = "console-candidate";
    let token = gw.demo_tenant(tenant, 100.0).await;
    // The live policy: the stock default on demo-small.
    let policy_path = format!("/admin/v1/tenants/{tenant}/policy");
    let default = get(&gw, &policy_path).await["default_policy"].as_str().expect("default").to_string();
    let live = json!({"provider": "demo", "model": "demo-small"});
    admin_ok(&gw, "PUT", &policy_path, json!({"hash": default, "config": live})).await;
    let live_config = get(&gw, &policy_path).await["policy"]["config"].clone();
    let manage = manage_token(&gw, tenant).await;
    let candidate = json!({"provider": "demo", "model": "demo-large"});
    let report_path = format!("/admin/v1/tenants/{tenant}/policy/candidate");

    let mut scenario = Scenario::start(&python, &gw, "policy_candidate", json!({"token": manage, "hash": default, "config": candidate.to_string(), "live_config": live_config})).await;
    // The page assigned the default policy on demo-large as a shadow candidate.
    let paused = scenario.reached("assigned").await;
    let report = get(&gw, &report_path).await;
    assert_eq!(report["candidate"]["hash"], default, "{report}");
    assert_eq!(report["candidate"]["mode"], "shadow");
    assert_eq!(report["candidate"]["percent"], 100, "a shadow with no share runs on every request");
    assert_eq!(parsed(&report["candidate"]["config"]), candidate);
    assert_eq!(paused["shown"]["config"], report["candidate"]["config"]);
    let mut served = Vec::new();
    for _ in 0..3 {
        let reply = gw.chat(&token, chat("default", "tried beside")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-tollgate-target"), "demo/demo-small", "the live policy's decision is the one acted on");
        served.push(reply.header("x-request-id"));
    }
    let report = comparisons_after(&gw, &report_path, 3).await;
    scenario.resume().await;
    let page = scenario.finish().await;

    // Before: no candidate; the choices offered are the description's modes and the
    // tenant's policies.
    assert_eq!(page["before"], Value::Null);
    let doc = description(&gw).await;
    assert_eq!(strings(&page["modes"]), body_enum(&doc, "AssignCandidate", "mode"));
    assert!(strings(&page["hash_choices"]).contains(&default), "{}", page["hash_choices"]);
    // A bad config is refused in the page; a canary with no share by the gateway, in its words.
    assert!(page["bad_config_error"].as_str().unwrap_or("").contains("not JSON"), "{}", page["bad_config_error"]);
    let refused = gw.admin("PUT", &report_path, json!({"hash": default, "config": candidate, "mode": "canary"})).await;
    assert_eq!((refused.status, refused.error_code()), (400, "invalid_percent".to_string()));
    assert_eq!(page["canary_error"], refused.json()["error"]["message"]);
    let refusals = page["refusal_log"].as_array().expect("log");
    assert!(!refusals.is_empty(), "the refused PUT was logged");
    for entry in refusals {
        let message = entry["message"].as_str().unwrap_or("");
        assert!(entry["source"] == "network" && message.contains("/v1/tenant/policy/candidate") && message.contains("400"), "unexpected log entry: {entry}");
    }

    // The candidate as assigned, and the tally before anything ran beside it.
    let shown = &page["assigned"];
    assert_eq!(shown["hash"], default);
    assert_eq!(shown["hash_text"], &default[..12]);
    assert_eq!(shown["mode"], "shadow");
    assert_eq!(shown["percent"], "100% of requests");
    let zero = json!({"compared": "0", "same": "0", "different": "0", "beside-failed": "0", "canary-failed": "0"});
    assert_eq!(page["tally_assigned"], zero);
    assert_eq!(page["tally_before_refresh"], zero, "the page shows what it loaded until refreshed");

    // Refreshed: the API's tally, and each chat's comparison, live on demo-small beside
    // the candidate on demo-large.
    let counts = &report["comparisons"];
    assert_eq!(counts, &json!({"compared": 3, "same": 0, "different": 3, "beside_failed": 0, "canary_failed": 0}), "{report}");
    let text = |k: &str| counts[k].to_string();
    assert_eq!(page["tally"], json!({"compared": text("compared"), "same": text("same"), "different": text("different"), "beside-failed": text("beside_failed"), "canary-failed": text("canary_failed")}));
    let rows = page["comparisons"].as_array().expect("comparisons");
    let mut shown_ids: Vec<String> = rows.iter().map(|r| r["request_id"].as_str().unwrap_or("").to_string()).collect();
    shown_ids.sort();
    served.sort();
    assert_eq!(shown_ids, served, "a row for each chat");
    for row in rows {
        let (acting, beside) = (row["acting"].as_str().unwrap_or(""), row["beside"].as_str().unwrap_or(""));
        assert!(acting.contains("demo/demo-small") && !acting.contains("demo-large"), "{row}");
        assert!(beside.contains("demo/demo-large") && !beside.contains("demo-small"), "{row}");
        assert_eq!(row["result"], "different", "{row}");
        assert!(row["highlight"].as_str().unwrap_or("").contains("row-differs"), "a difference stands out: {row}");
    }

    // Promoted in the page: the candidate is the policy, the old one kept for rollback.
    let promoted = &page["after_promote"];
    assert_eq!(promoted["candidate"], Value::Null);
    assert_eq!(promoted["current_hash"], default);
    assert_eq!(parsed(&promoted["current_config"]), candidate);
    assert_eq!(parsed(&promoted["previous_config"]), live);
    let policy = get(&gw, &policy_path).await;
    assert_eq!(parsed(&policy["policy"]["config"]), candidate, "{policy}");
    assert_eq!(parsed(&policy["previous_policy"]["config"]), live, "{policy}");
    assert!(policy["candidate_policy"].is_null(), "{policy}");
    let reply = gw.chat(&token, chat("default", "after the promotion")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-tollgate-target"), "demo/demo-large");

    // Tried again, a cancelled drop kept it, a confirmed one dropped it.
    assert_eq!(page["reassigned"]["mode"], "shadow");
    assert_eq!(page["drop_cancelled"], page["reassigned"]);
    assert_eq!(page["after_drop"], Value::Null);
    assert!(get(&gw, &report_path).await["candidate"].is_null());
    let audit = get(&gw, &format!("/admin/v1/tenants/{tenant}/audit")).await;
    let actions: Vec<&str> = audit["data"].as_array().expect("audit").iter().filter_map(|r| r["action"].as_str()).filter(|a| a.starts_with("policy.candidate")).collect();
    assert_eq!(actions, ["policy.candidate.assign", "policy.candidate.promote", "policy.candidate.assign", "policy.candidate.drop"]);
    let calls = strings(&page["api_calls"]);
    assert!(calls.contains(&"/v1/tenant/policy/candidate".to_string()), "{calls:?}");
    assert!(calls.iter().all(|c| c.starts_with("/v1/tenant") || c == "/openapi.json"), "a tenant's console called outside /v1/tenant: {calls:?}");
}
