//! Command-line interface. `serve` runs the gateway; the other subcommands are a thin
//! client over the admin API of a running gateway.

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
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (overrides the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Listen address (overrides the config), e.g. 127.0.0.1:4200.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Upload a policy .wasm to a running gateway; prints its hash.
    PolicyUpload {
        /// The .wasm file.
        file: PathBuf,
        /// Gateway URL.
        #[arg(long, default_value = "http://127.0.0.1:4200")]
        url: String,
    },
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

/// Uploads a policy file through the admin API.
pub async fn policy_upload(file: PathBuf, url: String) -> anyhow::Result<()> {
    let token = std::env::var("TOLLGATE_ADMIN_TOKEN").map_err(|_| anyhow::anyhow!("set TOLLGATE_ADMIN_TOKEN to the operator token"))?;
    let wasm = std::fs::read(&file)?;
    let uri: http::Uri = format!("{}/admin/v1/policies", url.trim_end_matches('/')).parse()?;
    let host = uri.authority().map(|a| a.to_string()).ok_or_else(|| anyhow::anyhow!("--url needs a host"))?;
    let stream = tokio::net::TcpStream::connect(&host).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::post(uri)
        .header(http::header::HOST, host)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_TYPE, "application/wasm")
        .body(http_body_util::Full::new(bytes::Bytes::from(wasm)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body()).await?.to_bytes();
    println!("{}", String::from_utf8_lossy(&body));
    if !status.is_success() {
        anyhow::bail!("upload failed with HTTP {status}");
    }
    Ok(())
}
