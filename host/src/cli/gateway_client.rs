//! The CLI's client of a running gateway's management API: one HTTP/1 request per call,
//! with the operator token (`TOLLGATE_ADMIN_TOKEN`) or a tenant's `manage` token
//! (`TOLLGATE_TOKEN`), which reaches only that tenant's own resources (`/v1/tenant/...`).

use std::path::Path;

use anyhow::{bail, Context as _};
use http::Method;

/// Who the CLI speaks as.
pub enum Credential {
    /// The operator token.
    Operator(String),
    /// A tenant's `manage` token.
    Tenant(String),
}

impl Credential {
    /// The operator token if set, else a tenant's manage token, else a clear error.
    pub fn from_env() -> anyhow::Result<Self> {
        let set = |name: &str| std::env::var(name).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        match (set("TOLLGATE_ADMIN_TOKEN"), set("TOLLGATE_TOKEN")) {
            (Some(operator), _) => Ok(Credential::Operator(operator)),
            (None, Some(manage)) => Ok(Credential::Tenant(manage)),
            (None, None) => bail!("set TOLLGATE_ADMIN_TOKEN to the operator token, or TOLLGATE_TOKEN to a tenant's manage token"),
        }
    }

    fn token(&self) -> &str {
        match self {
            Credential::Operator(t) | Credential::Tenant(t) => t,
        }
    }
}

/// A gateway at `url`, spoken to as `credential`.
pub struct Gateway {
    url: String,
    credential: Credential,
}

impl Gateway {
    /// A client of the gateway at `url` (e.g. `http://127.0.0.1:4200`).
    pub fn new(url: &str, credential: Credential) -> Self {
        Self { url: url.trim_end_matches('/').to_string(), credential }
    }

    /// Sends one request; answers the response (any status).
    pub async fn send(&self, method: Method, path: &str, body: Vec<u8>) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        let uri: http::Uri = format!("{}{path}", self.url).parse().with_context(|| format!("'{}' is not a URL", self.url))?;
        if uri.scheme_str() != Some("http") {
            bail!("--url must be an http:// URL (put TLS in front of the gateway, not in this client)");
        }
        let host = uri.authority().map(|a| a.to_string()).ok_or_else(|| anyhow::anyhow!("--url needs a host"))?;
        let stream = tokio::net::TcpStream::connect(&host).await.with_context(|| format!("connecting to {host}: is the gateway running?"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::HOST, host)
            .header(http::header::AUTHORIZATION, format!("Bearer {}", self.credential.token()))
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
        Ok(sender.send_request(request).await?)
    }

    /// Sends one request and reads a JSON answer; a non-2xx status is an error carrying
    /// the gateway's message.
    pub async fn json(&self, method: Method, path: &str, body: Vec<u8>) -> anyhow::Result<serde_json::Value> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body()).await?.to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
        if !status.is_success() {
            let message = value["error"]["message"].as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
            bail!("the gateway answered HTTP {status}: {message}");
        }
        Ok(value)
    }

    /// The path of `tenant`'s resource `rest` for this credential: the operator names the
    /// tenant; a manage token reaches its own only, and the tenant named must be it.
    pub async fn tenant_path(&self, tenant: &str, rest: &str) -> anyhow::Result<String> {
        match &self.credential {
            Credential::Operator(_) => Ok(format!("/admin/v1/tenants/{tenant}{rest}")),
            Credential::Tenant(_) => {
                let own = self.json(Method::GET, "/v1/tenant", Vec::new()).await?;
                if own["id"].as_str() != Some(tenant) {
                    bail!("TOLLGATE_TOKEN is tenant '{}''s manage token, not '{tenant}''s", own["id"].as_str().unwrap_or("?"));
                }
                Ok(format!("/v1/tenant{rest}"))
            }
        }
    }

    /// Where this credential uploads policies.
    pub fn upload_path(&self) -> &'static str {
        match self.credential {
            Credential::Operator(_) => "/admin/v1/policies",
            Credential::Tenant(_) => "/v1/tenant/policies",
        }
    }
}

/// `tollgate policy upload FILE`: prints `{"hash": ...}`.
pub async fn upload(gateway: &Gateway, file: &Path) -> anyhow::Result<()> {
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let answer = gateway.json(Method::POST, gateway.upload_path(), wasm).await?;
    println!("{answer}");
    Ok(())
}

/// `tollgate policy assign TENANT HASH [--config F]`: the config file is JSON (absent:
/// `{}`), checked here before anything is sent.
pub async fn assign(gateway: &Gateway, tenant: &str, hash: &str, config: Option<&Path>) -> anyhow::Result<()> {
    let config = read_config(config)?;
    let path = gateway.tenant_path(tenant, "/policy").await?;
    let answer = gateway.json(Method::PUT, &path, serde_json::json!({"hash": hash, "config": config}).to_string().into_bytes()).await?;
    println!("{answer}");
    Ok(())
}

/// `tollgate policy replay FILE --tenant T [--since WHEN] [--config F] [--limit N]`:
/// uploads FILE (as `upload` would) and replays it against the tenant's recorded
/// requests; prints the gateway's report. `since` is a UTC date (`2026-12-01`) or an RFC
/// 3339 time.
pub async fn replay(gateway: &Gateway, file: &Path, tenant: &str, since: Option<&str>, config: Option<&Path>, limit: Option<usize>) -> anyhow::Result<()> {
    let since_millis = since.map(parse_since).transpose()?;
    let config = read_config(config)?;
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let path = gateway.tenant_path(tenant, "/policy/replay").await?;
    let uploaded = gateway.json(Method::POST, gateway.upload_path(), wasm).await?;
    let hash = uploaded["hash"].as_str().ok_or_else(|| anyhow::anyhow!("the gateway's upload answer names no hash: {uploaded}"))?;
    let body = serde_json::json!({"hash": hash, "config": config, "since_millis": since_millis, "limit": limit});
    let report = gateway.json(Method::POST, &path, body.to_string().into_bytes()).await?;
    println!("{report}");
    Ok(())
}

fn parse_since(text: &str) -> anyhow::Result<u64> {
    let at = match chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(day) => day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()),
        Err(_) => chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&chrono::Utc)),
    };
    at.map(|t| t.timestamp_millis().max(0) as u64).ok_or_else(|| anyhow::anyhow!("--since '{text}' is not a date like 2026-12-01 or a time like 2026-12-01T09:30:00Z"))
}

/// The JSON config in `path` (absent: `{}`), checked here before anything is sent.
fn read_config(path: Option<&Path>) -> anyhow::Result<serde_json::Value> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
        }
        None => Ok(serde_json::json!({})),
    }
}
