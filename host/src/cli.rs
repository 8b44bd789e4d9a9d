//! Command-line interface. `serve` runs the gateway; `policy` is the policy author's
//! loop (`cli/policy_project.rs` on this machine, with `cli/toolchains.rs` for the pinned
//! Python and JavaScript build tools; `cli/gateway_client.rs` against a
//! gateway); the other subcommands are a thin client over the admin API of a running
//! gateway.

pub mod gateway_client;
pub mod policy_project;
mod toolchains;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::secret::Secret;

/// Tollgate: a multi-tenant LLM gateway with per-tenant WebAssembly policies.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Config file (TOML); embedded defaults when absent.
        #[arg(long, env = "TOLLGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory (overrides the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Listen address (overrides the config), e.g. 127.0.0.1:4200.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Write, test, build, upload and assign policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Upload a policy .wasm to a running gateway; prints its hash (`policy upload`).
    #[command(hide = true)]
    PolicyUpload {
        /// The .wasm file.
        file: PathBuf,
        /// Gateway URL.
        #[arg(long, default_value = "http://127.0.0.1:4200")]
        url: String,
    },
    /// Back up a running gateway's store to a file (the master key is not included).
    Backup {
        /// Where to write the backup.
        #[arg(long)]
        out: PathBuf,
        /// Gateway URL.
        #[arg(long, default_value = "http://127.0.0.1:4200")]
        url: String,
    },
    /// Restore a backup into an empty data dir (the gateway must not be running on it).
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// The data dir to create.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Create or migrate the shared PostgreSQL store's schema, then exit (replicas also do
    /// this on start; run it alone to migrate before a rollout).
    Migrate {
        /// The store, e.g. postgres://tollgate@db.internal/tollgate.
        #[arg(long, env = "TOLLGATE_STORE_URL", hide_env_values = true)]
        url: String,
    },
    /// Verify the audit chain of a running gateway.
    AuditVerify {
        /// Gateway URL.
        #[arg(long, default_value = "http://127.0.0.1:4200")]
        url: String,
    },
}

/// `tollgate policy ...`: the author's loop. `upload` and `assign` speak to a running
/// gateway as the operator (`TOLLGATE_ADMIN_TOKEN`) or as a tenant (`TOLLGATE_TOKEN`, a
/// manage token).
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Make a policy project in DIR (a new or empty directory) that behaves like the stock
    /// `default` policy, with its tests and a README.
    New {
        /// Where to make it.
        dir: PathBuf,
        /// The language to write it in.
        #[arg(long, value_enum)]
        lang: policy_project::Language,
    },
    /// Run the project's native tests (host imports faked; no wasm).
    Test {
        /// The project.
        dir: PathBuf,
    },
    /// Build the project's component into DIR/policy.wasm.
    Build {
        /// The project.
        dir: PathBuf,
    },
    /// Upload a policy .wasm; prints `{"hash": ...}`.
    Upload {
        /// The .wasm file.
        file: PathBuf,
        /// Gateway URL.
        #[arg(long, default_value = "http://127.0.0.1:4200")]
        url: String,
    },
    /// Assign an uploaded policy to a tenant, with its config.
    Assign {
        /// The tenant.
        tenant: String,
        /// The policy's hash, as `upload` printed it.
        hash: String,
        /// A JSON file holding the tenant's config for the policy (default `{}`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Gateway URL.
        #[arg(long, default_value = "http://127.0.0.1:4200")]
        url: String,
    },
    /// Replay a policy .wasm against a tenant's recorded requests (uploading it first)
    /// and report where it decides differently from what was served.
    Replay {
        /// The .wasm file.
        file: PathBuf,
        /// The tenant whose requests to replay.
        #[arg(long)]
        tenant: String,
        /// Only requests since this UTC date (2026-12-01) or RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// A JSON file holding the config to replay it with (default `{}`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// At most this many of the newest requests (the gateway keeps up to
        /// `[policy] decision_inputs_kept` per tenant).
        #[arg(long)]
        limit: Option<usize>,
        /// Gateway URL.
        #[arg(long, default_value = "http://127.0.0.1:4200")]
        url: String,
    },
}

/// Runs a `tollgate policy` subcommand.
pub async fn policy(command: PolicyCommand) -> anyhow::Result<()> {
    use gateway_client::{Credential, Gateway};
    match command {
        PolicyCommand::New { dir, lang } => policy_project::new(&dir, lang),
        PolicyCommand::Test { dir } => policy_project::test(&dir),
        PolicyCommand::Build { dir } => policy_project::build(&dir).map(|_| ()),
        PolicyCommand::Upload { file, url } => gateway_client::upload(&Gateway::new(&url, Credential::from_env()?), &file).await,
        PolicyCommand::Assign { tenant, hash, config, url } => gateway_client::assign(&Gateway::new(&url, Credential::from_env()?), &tenant, &hash, config.as_deref()).await,
        PolicyCommand::Replay { file, tenant, since, config, limit, url } => {
            gateway_client::replay(&Gateway::new(&url, Credential::from_env()?), &file, &tenant, since.as_deref(), config.as_deref(), limit).await
        }
    }
}

/// `tollgate migrate`: applies the migrations the database lacks and says which.
pub async fn migrate(url: String) -> anyhow::Result<()> {
    let pool = crate::postgres::connect(&url)?;
    let applied = crate::postgres::migrate(&pool).await?;
    let latest = crate::postgres::MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if applied.is_empty() {
        println!("the store is at schema version {latest}; nothing to apply");
    } else {
        println!("applied migrations {applied:?}; the store is at schema version {latest}");
    }
    Ok(())
}

/// Loads the config for `serve`, applying command-line overrides.
pub fn serve_config(config: Option<PathBuf>, data_dir: Option<PathBuf>, listen: Option<String>) -> anyhow::Result<Config> {
    let mut config = match config {
        Some(path) => Config::load(&path)?,
        None => Config::embedded(),
    };
    if let Some(dir) = data_dir {
        config.server.data_dir = dir;
    }
    // The environment wins over the file, so a password need not be written to disk.
    if let Ok(url) = std::env::var("TOLLGATE_STORE_URL") {
        config.store.url = Some(url).filter(|u| !u.is_empty());
    }
    if let Some(listen) = listen {
        config.server.listen = listen.parse().map_err(|_| anyhow::anyhow!("--listen '{listen}' is not an address like 127.0.0.1:4200"))?;
    }
    Ok(config)
}

/// The admin token from `TOLLGATE_ADMIN_TOKEN`, or one generated on first start and kept
/// as `admin.token` (mode 0600) in the data dir. `printed` is true when newly generated.
pub fn admin_token(data_dir: &std::path::Path) -> anyhow::Result<(Secret, bool)> {
    if let Ok(token) = std::env::var("TOLLGATE_ADMIN_TOKEN") {
        if !token.trim().is_empty() {
            return Ok((Secret::new(token.trim().to_string()), false));
        }
    }
    let path = data_dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(token) => Ok((Secret::new(token.trim().to_string()), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)?;
            let token = format!("tga_{}", &crate::tokens::generate()[3..]);
            crate::sealing::write_private(&path, token.as_bytes())?;
            Ok((Secret::new(token), true))
        }
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// Runs the gateway until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let (token, generated) = admin_token(&config.server.data_dir)?;
    let master = std::env::var("TOLLGATE_MASTER_KEY").ok();
    let app = crate::app::App::start(config.clone(), master.as_deref(), &token).await?;
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    let addr = listener.local_addr()?;
    if generated {
        // Shown once; stored only in the data dir with mode 0600.
        eprintln!("Generated operator token (saved to {}/admin.token): {}", config.server.data_dir.display(), token.expose());
    }
    eprintln!("tollgate listening on http://{addr} (data dir {})", config.server.data_dir.display());
    tracing::info!(%addr, "listening");
    crate::server::serve(app, listener, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The gateway at `url`, spoken to with the operator token.
fn operator_at(url: &str) -> anyhow::Result<gateway_client::Gateway> {
    let token = std::env::var("TOLLGATE_ADMIN_TOKEN").map_err(|_| anyhow::anyhow!("set TOLLGATE_ADMIN_TOKEN to the operator token"))?;
    Ok(gateway_client::Gateway::new(url, gateway_client::Credential::Operator(token)))
}

/// Uploads a policy file through the admin API (`policy-upload`, kept for scripts
/// written before `policy upload`).
pub async fn policy_upload(file: PathBuf, url: String) -> anyhow::Result<()> {
    gateway_client::upload(&operator_at(&url)?, &file).await
}

/// Verifies the audit chain.
pub async fn audit_verify(url: String) -> anyhow::Result<()> {
    println!("{}", operator_at(&url)?.json(http::Method::GET, "/admin/v1/audit/verify", Vec::new()).await?);
    Ok(())
}

/// Streams a backup of a running gateway into `out` (written to a temporary name and
/// renamed once complete, so a failed backup never looks like a good one).
pub async fn backup(out: PathBuf, url: String) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let gateway = operator_at(&url)?;
    let response = gateway.send(http::Method::GET, "/admin/v1/backup", Vec::new()).await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body()).await?.to_bytes();
        anyhow::bail!("the gateway answered HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    let partial = out.with_extension("partial");
    let mut file = tokio::fs::File::create(&partial).await?;
    let mut body = response.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        if let Some(data) = frame?.data_ref() {
            file.write_all(data).await?;
            bytes += data.len() as u64;
        }
    }
    file.sync_all().await?;
    tokio::fs::rename(&partial, &out).await?;
    println!("{{\"backup\": \"{}\", \"bytes\": {bytes}}}", out.display());
    Ok(())
}

/// Restores a backup file into a new data dir.
pub fn restore(from: PathBuf, data_dir: PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir)?;
    let file = std::io::BufReader::new(std::fs::File::open(&from)?);
    let stats = crate::backup::restore(&data_dir, file)?;
    println!("{}", serde_json::json!({"restored_into": data_dir.display().to_string(), "trees": stats.trees, "records": stats.records}));
    Ok(())
}
