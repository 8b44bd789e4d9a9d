//! Operator configuration, loaded in two steps: strict raw structs (unknown fields are
//! errors) from TOML, then a validated [`Config`] with defaults filled in.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::catalog::ModelEntry;
use crate::policy::PolicyLimits;
use crate::providers::ProviderKind;

/// Default listen address: loopback, so a first start exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4200";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./tollgate-data";
/// Largest request body; bigger bodies are refused while streaming in (413).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;
/// Time a client has to send its request headers (slowloris defence).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send its whole request body once the headers are in: without
/// it, a client trickling bytes holds its connection, and its tenant's concurrency
/// slots, for as long as it likes (408 `request_timeout`).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Most request headers accepted (hyper refuses more with 431).
pub const DEFAULT_MAX_HEADERS: usize = 64;
/// How long shutdown waits for in-flight requests and streams.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Per-attempt upstream timeout (to the response headers, and between stream chunks).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);
/// Attempts per target, first try included.
pub const DEFAULT_ATTEMPTS_PER_TARGET: u32 = 2;
/// Base and cap of the exponential retry backoff.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Cap of the retry backoff; also caps how long a `Retry-After` is honoured.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(2);
/// Failures in a row after which a target cools down.
pub const DEFAULT_COOLDOWN_AFTER: u32 = 5;
/// How long a failing target is skipped.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);

/// The config file could not be used. The message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// TOML syntax or an unknown/mistyped field.
    #[error("invalid config: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    policy: PolicyLimits,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    models: Vec<ModelEntry>,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    telemetry: RawTelemetry,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
    lease_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    body_read_timeout_ms: Option<u64>,
    max_headers: Option<usize>,
    drain_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    timeout_ms: Option<u64>,
    attempts_per_target: Option<u32>,
    backoff_base_ms: Option<u64>,
    backoff_cap_ms: Option<u64>,
    cooldown_after: Option<u32>,
    cooldown_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    kind: ProviderKind,
    base_url: Option<String>,
}

/// Where shared state lives. With no `url`, the embedded store in the data dir (one
/// process); with one, PostgreSQL shared by every replica (`TOLLGATE_STORE_URL` overrides
/// it).
#[derive(Clone, Default)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/db` (or the key=value form).
    pub url: Option<String>,
    /// How long a dead replica's reservations are held before another charges them.
    pub lease: Duration,
}

// The url may carry a password.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig").field("url", &self.url.as_ref().map(|_| "[set]")).field("lease", &self.lease).finish()
    }
}

/// The `service.name` traces are exported under when `[telemetry] service_name` is unset.
pub const DEFAULT_SERVICE_NAME: &str = "tollgate";

/// OpenTelemetry traces (see [`crate::telemetry`]). Off unless `otlp_endpoint` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`; spans are
    /// POSTed as JSON to `<otlp_endpoint>/v1/traces`. `None`: nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: DEFAULT_SERVICE_NAME.into() }
    }
}

/// Default reservation lease on the shared store.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Server limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Request body cap.
    pub max_body_bytes: usize,
    /// Header read timeout.
    pub header_read_timeout: Duration,
    /// Whole-body read timeout, from the end of the headers.
    pub body_read_timeout: Duration,
    /// Header count cap.
    pub max_headers: usize,
    /// Shutdown drain timeout.
    pub drain_timeout: Duration,
}

/// Upstream call behaviour.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Attempts per target.
    pub attempts_per_target: u32,
    /// Backoff base.
    pub backoff_base: Duration,
    /// Backoff cap.
    pub backoff_cap: Duration,
    /// Failures before cool-down.
    pub cooldown_after: u32,
    /// Cool-down length.
    pub cooldown: Duration,
}

/// One configured provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL (the only source of upstream hosts).
    pub base_url: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Server limits.
    pub server: ServerConfig,
    /// Sandbox limits.
    pub policy: PolicyLimits,
    /// Upstream behaviour.
    pub upstream: UpstreamConfig,
    /// Providers by name.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Catalog additions and overrides.
    pub models: Vec<ModelEntry>,
    /// The store.
    pub store: StoreConfig,
    /// Trace export.
    pub telemetry: TelemetryConfig,
}

fn ms(value: Option<u64>, default: Duration) -> Duration {
    value.map(Duration::from_millis).unwrap_or(default)
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: path.display().to_string(), reason: e.to_string() })?;
        Self::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        Self::validate(raw)
    }

    /// The embedded defaults: loopback, `./tollgate-data`, every provider kind at its
    /// public endpoint plus the built-in `demo`.
    pub fn embedded() -> Self {
        // The default raw config is valid by construction; fall back field by field
        // rather than panic if that ever changes.
        Self::validate(RawConfig::default()).unwrap_or_else(|_| Self {
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 4200)),
                data_dir: PathBuf::from(DEFAULT_DATA_DIR),
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
                max_headers: DEFAULT_MAX_HEADERS,
                drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            },
            policy: PolicyLimits::default(),
            upstream: default_upstream(),
            providers: default_providers(),
            models: Vec::new(),
            store: StoreConfig { url: None, lease: DEFAULT_LEASE },
            telemetry: TelemetryConfig::default(),
        })
    }

    fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        let listen_text = raw.server.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_text.parse().map_err(|_| ConfigError::Invalid(format!("server.listen '{listen_text}' is not an address like 127.0.0.1:4200")))?;
        let max_body_bytes = raw.server.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes < 1024 {
            return Err(ConfigError::Invalid("server.max_body_bytes must be at least 1024".into()));
        }
        if raw.server.body_read_timeout_ms == Some(0) {
            return Err(ConfigError::Invalid("server.body_read_timeout_ms must be at least 1".into()));
        }
        raw.policy.validate().map_err(|e| ConfigError::Invalid(e.into()))?;
        let mut providers = default_providers();
        for (name, p) in raw.providers {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(ConfigError::Invalid(format!("provider name '{name}' may contain only letters, digits, '-' and '_'")));
            }
            let base_url = p.base_url.unwrap_or_else(|| p.kind.default_base_url().into());
            if p.kind != ProviderKind::Demo && !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!("providers.{name}.base_url must start with http:// or https://")));
            }
            providers.insert(name, ProviderConfig { kind: p.kind, base_url: base_url.trim_end_matches('/').into() });
        }
        let telemetry = validate_telemetry(raw.telemetry)?;
        let upstream = UpstreamConfig {
            timeout: ms(raw.upstream.timeout_ms, DEFAULT_UPSTREAM_TIMEOUT),
            attempts_per_target: raw.upstream.attempts_per_target.unwrap_or(DEFAULT_ATTEMPTS_PER_TARGET).clamp(1, 10),
            backoff_base: ms(raw.upstream.backoff_base_ms, DEFAULT_BACKOFF_BASE),
            backoff_cap: ms(raw.upstream.backoff_cap_ms, DEFAULT_BACKOFF_CAP),
            cooldown_after: raw.upstream.cooldown_after.unwrap_or(DEFAULT_COOLDOWN_AFTER).max(1),
            cooldown: ms(raw.upstream.cooldown_ms, DEFAULT_COOLDOWN),
        };
        Ok(Self {
            server: ServerConfig {
                listen,
                data_dir: raw.server.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
                max_body_bytes,
                header_read_timeout: ms(raw.server.header_read_timeout_ms, DEFAULT_HEADER_READ_TIMEOUT),
                body_read_timeout: ms(raw.server.body_read_timeout_ms, DEFAULT_BODY_READ_TIMEOUT),
                max_headers: raw.server.max_headers.unwrap_or(DEFAULT_MAX_HEADERS).clamp(8, 1024),
                drain_timeout: ms(raw.server.drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT),
            },
            policy: raw.policy,
            upstream,
            providers,
            models: raw.models,
            store: StoreConfig { url: raw.store.url.filter(|u| !u.is_empty()), lease: ms(raw.store.lease_ms, DEFAULT_LEASE).max(Duration::from_millis(300)) },
            telemetry,
        })
    }
}

/// An endpoint must be a plain http(s) URL with a host: no user info (credentials in a
/// URL end up in logs), no query.
fn validate_telemetry(raw: RawTelemetry) -> Result<TelemetryConfig, ConfigError> {
    let service_name = raw.service_name.filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_SERVICE_NAME.into());
    let Some(endpoint) = raw.otlp_endpoint.filter(|e| !e.is_empty()) else {
        return Ok(TelemetryConfig { otlp_endpoint: None, service_name });
    };
    let invalid = || ConfigError::Invalid("telemetry.otlp_endpoint must be an http:// or https:// URL with a host and no user info or query, like http://127.0.0.1:4318".into());
    let uri: http::Uri = endpoint.parse().map_err(|_| invalid())?;
    let plain = matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some_and(|h| !h.is_empty()) && uri.query().is_none();
    if !plain || uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid());
    }
    Ok(TelemetryConfig { otlp_endpoint: Some(endpoint.trim_end_matches('/').into()), service_name })
}

fn default_upstream() -> UpstreamConfig {
    UpstreamConfig {
        timeout: DEFAULT_UPSTREAM_TIMEOUT,
        attempts_per_target: DEFAULT_ATTEMPTS_PER_TARGET,
        backoff_base: DEFAULT_BACKOFF_BASE,
        backoff_cap: DEFAULT_BACKOFF_CAP,
        cooldown_after: DEFAULT_COOLDOWN_AFTER,
        cooldown: DEFAULT_COOLDOWN,
    }
}

fn default_providers() -> BTreeMap<String, ProviderConfig> {
    [ProviderKind::Openai, ProviderKind::Anthropic, ProviderKind::Gemini, ProviderKind::Demo]
        .into_iter()
        .map(|kind| {
            let name = match kind {
                ProviderKind::Openai => "openai",
                ProviderKind::Anthropic => "anthropic",
                ProviderKind::Gemini => "gemini",
                ProviderKind::Demo => "demo",
            };
            (name.to_string(), ProviderConfig { kind, base_url: kind.default_base_url().into() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_errors_naming_the_field() {
        let error = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n").expect_err("typo");
        assert!(error.to_string().contains("lisen"), "{error}");
    }

    #[test]
    fn providers_default_and_override() -> Result<(), ConfigError> {
        let config = Config::parse("[providers.openai]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1/\"\n[providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:8/v1\"\n")?;
        assert_eq!(config.providers["openai"].base_url, "http://127.0.0.1:9/v1");
        assert_eq!(config.providers["anthropic"].base_url, "https://api.anthropic.com");
        assert_eq!(config.providers["gemini"].base_url, "https://generativelanguage.googleapis.com");
        assert!(config.providers.contains_key("local"));
        assert!(Config::parse("[providers.x]\nkind = \"openai\"\nbase_url = \"ftp://h\"\n").is_err());
        Ok(())
    }

    #[test]
    fn telemetry_is_off_unless_an_endpoint_is_set() -> Result<(), ConfigError> {
        assert_eq!(Config::embedded().telemetry, TelemetryConfig::default());
        assert_eq!(Config::parse("[telemetry]\n")?.telemetry.otlp_endpoint, None);
        let on = Config::parse("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/\"\nservice_name = \"gw-eu\"\n")?.telemetry;
        assert_eq!((on.otlp_endpoint.as_deref(), on.service_name.as_str()), (Some("http://127.0.0.1:4318"), "gw-eu"));
        for bad in ["127.0.0.1:4318", "ftp://h:1", "http://user:pw@h:4318", "http://h:4318/?k=v"] {
            let error = Config::parse(&format!("[telemetry]\notlp_endpoint = \"{bad}\"\n")).expect_err(bad);
            assert!(error.to_string().contains("telemetry.otlp_endpoint"), "{bad}: {error}");
        }
        assert!(Config::parse("[telemetry]\nendpoint = \"http://h\"\n").is_err());
        Ok(())
    }
}
