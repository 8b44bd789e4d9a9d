//! Helpers shared by the suite.

use std::sync::Arc;

use tollgate::catalog::Catalog;
use tollgate::metering::Metering;
use tollgate::policy::{Api, Context, Message, Operation, PolicyLimits, Request};
use tollgate::sealing::{Key, Vault};
use tollgate::tenant_scope::{ScopeServices, TenantScope};
use tollgate::{PolicyRuntime, Store};

/// A policy runtime over a temporary store, with the services a tenant scope needs.
pub struct Sandbox {
    pub runtime: PolicyRuntime,
    pub services: ScopeServices,
    pub store: Store,
}

impl Sandbox {
    pub fn new(limits: PolicyLimits) -> Self {
        Self::build(limits, None)
    }

    /// A sandbox whose uploaded wasm and claims live in `blobs` (a replica of a shared
    /// store); compiled artifacts stay in its own temporary store.
    pub fn with_blobs(limits: PolicyLimits, blobs: tollgate::policy::PolicyBlobs) -> Self {
        Self::build(limits, Some(blobs))
    }

    fn build(limits: PolicyLimits, blobs: Option<tollgate::policy::PolicyBlobs>) -> Self {
        let store = Store::temporary().expect("temporary store");
        let vault = Arc::new(Vault::new(store.clone(), Key::random()).expect("vault"));
        let services = ScopeServices {
            vault,
            metering: Metering::new(store.clone()).expect("metering"),
            catalog: Arc::new(Catalog::new(&[])),
            memory: tollgate::memory::Memory::embedded(store.clone(), limits.memory_quota_bytes),
            logs: tollgate::policy_log::PolicyLogs::embedded(store.clone(), limits.log_lines_kept),
        };
        let runtime = match blobs {
            Some(blobs) => PolicyRuntime::with_blobs(limits, store.clone(), blobs),
            None => PolicyRuntime::new(limits, store.clone()),
        }
        .expect("runtime");
        Self { runtime, services, store }
    }

    pub fn scope(&self, tenant: &str) -> Arc<TenantScope> {
        Arc::new(self.services.scope(tenant, None, tollgate::clock::unix_millis()))
    }
}

pub fn request(model: &str) -> Request {
    Request {
        operation: Operation::Chat,
        api: Api::OpenaiChatCompletions,
        model: model.into(),
        messages: vec![Message { role: "user".into(), text: "hello".into(), image_count: 0, tool_call_count: 0 }],
        max_tokens: None,
        temperature: None,
        stream: false,
        tool_count: 0,
        end_user: None,
        metadata: Vec::new(),
        prompt_token_estimate: 2,
    }
}

pub fn context(tenant: &str, config: &str) -> Context {
    Context {
        tenant_id: tenant.into(),
        request_id: format!("req-{tenant}"),
        session_id: None,
        unix_millis: tollgate::clock::unix_millis(),
        config: config.into(),
    }
}

/// A gateway serving on a loopback port for the duration of a test.
pub struct Gateway {
    pub addr: std::net::SocketAddr,
    pub app: Arc<tollgate::App>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

pub const ADMIN: &str = "test-admin-token";

/// The master key every replica of one shared store holds (32 bytes, hex).
const REPLICA_MASTER_KEY: &str = "6b6579206f6620746865207265706c6963612074657374732c20333220627974";

/// A whole gateway (no listener) with `server` as its shared store and `dir` as its data
/// dir: one replica, as one process would be. Every replica started here holds one master
/// key and [`ADMIN`] as its operator token.
pub async fn shared_gateway(server: &tollgate_tests::postgres::Server, dir: &std::path::Path) -> Arc<tollgate::App> {
    let mut config = tollgate::Config::embedded();
    config.server.data_dir = dir.to_path_buf();
    config.store.url = Some(server.url());
    tollgate::App::start(config, Some(REPLICA_MASTER_KEY), &tollgate::Secret::new(ADMIN.into())).await.expect("start a replica")
}

impl Gateway {
    pub async fn start() -> Self {
        Self::start_with(tollgate::Config::embedded()).await
    }

    pub async fn start_with(config: tollgate::Config) -> Self {
        Self::start_with_key(config, Key::random()).await
    }

    /// A gateway whose master key the test knows (to open a restored store).
    pub async fn start_with_key(config: tollgate::Config, key: Key) -> Self {
        // A canary sweep keeps every gateway's store on disk and lists its secrets.
        let store = match crate::sweep::data_dir() {
            Some(dir) => {
                crate::canary::install_subscriber();
                crate::sweep::canary("master_key", &key.to_hex());
                crate::sweep::canary("admin_token", ADMIN);
                Store::open(&dir).expect("sweep store")
            }
            None => Store::temporary().expect("store"),
        };
        let app = tollgate::App::with_store(config, store, key, &tollgate::Secret::new(ADMIN.into())).await.expect("app");
        Self::serving(app).await
    }

    /// Serves `app` (e.g. a replica of a shared store, see [`shared_gateway`]) on a
    /// loopback port.
    pub async fn serving(app: Arc<tollgate::App>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = app.clone();
        tokio::spawn(async move {
            let _ = tollgate::server::serve(served, listener, async move {
                let _ = rx.await;
            })
            .await;
        });
        Gateway { addr, app, shutdown: Some(tx) }
    }

    /// Sends a request; returns status, headers and body.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        crate::mocked::call_at(self.addr, method, path, token, headers, body).await
    }

    pub async fn admin(&self, method: &str, path: &str, body: serde_json::Value) -> Reply {
        self.call(method, path, Some(ADMIN), &[], body.to_string().into_bytes()).await
    }

    /// Creates a tenant on the demo provider through the user-requested shape; returns its token.
    pub async fn demo_tenant(&self, id: &str, budget_usd: f64) -> String {
        let reply = self
            .admin("POST", "/api/v1/tenants", serde_json::json!({"tenant_id": id, "provider": "demo", "api_key": format!("sk-canary-{id}"), "model": "demo-small", "budget_usd_per_month": budget_usd}))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        reply.json()["token"].as_str().expect("token").to_string()
    }

    /// What tenant `id`'s records are stored under (its incarnation).
    pub fn storage_id(&self, id: &str) -> String {
        self.app.tenants.get(id).map(|t| t.storage_id().to_string()).unwrap_or_else(|| panic!("no tenant {id}"))
    }

    /// The key prefixing every record of tenant `id`.
    pub fn tenant_key(&self, id: &str) -> tollgate::store::TenantKey {
        tollgate::store::TenantKey::of(&self.storage_id(id))
    }

    pub async fn chat(&self, token: &str, body: serde_json::Value) -> Reply {
        self.call("POST", "/v1/chat/completions", Some(token), &[], body.to_string().into_bytes()).await
    }
}

impl Gateway {
    /// Signals the server to stop accepting and drain in-flight requests (as on SIGTERM).
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or("").to_string()
    }
}

/// The Python of a virtual environment `target/NAME` holding `package` (pinned, e.g.
/// `openai==3.57.0`), created and installed on first use; later runs reuse it.
pub async fn python_with(name: &str, package: &str) -> std::path::PathBuf {
    // One install at a time: two tests sharing a venv must not see it half installed.
    static INSTALLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = INSTALLING.lock().await;
    let venv = tollgate_tests::guests::workspace_root().join("target").join(name);
    let python = venv.join("bin").join("python");
    // Written once pip succeeded: a venv cut short by a killed run is installed again.
    let installed_marker = venv.join(format!("installed-{}", package.replace(['=', '<', '>', ' '], "_")));
    if installed_marker.exists() {
        return python;
    }
    let created = tokio::process::Command::new("python3").args(["-m", "venv"]).arg(&venv).status().await.expect("python3 -m venv");
    assert!(created.success(), "creating the virtual environment failed");
    let pip = venv.join("bin").join("pip");
    let installed = tokio::time::timeout(std::time::Duration::from_secs(300), tokio::process::Command::new(pip).args(["install", "--quiet", package]).status())
        .await
        .expect("pip install within 5 minutes")
        .expect("pip");
    assert!(installed.success(), "pip install {package} failed");
    std::fs::write(&installed_marker, b"").expect("marking the venv installed");
    python
}

/// Runs `script` with `python -c` and `args` (bounded to 60 s); asserts it exited 0 and
/// returns its stdout lines.
pub async fn run_python(python: &std::path::Path, script: &str, args: &[&str]) -> Vec<String> {
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), tokio::process::Command::new(python).arg("-c").arg(script).args(args).output())
        .await
        .expect("script within 60 s")
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&output.stderr));
    stdout.lines().map(str::to_owned).collect()
}
