//! The `tollgate` binary: parse arguments, set up logging, hand over to the library.

use clap::Parser;
use tollgate::cli::{Cli, Command};
use tollgate::telemetry::Telemetry;

/// jemalloc rather than glibc malloc: the request path allocates many small, short-lived
/// buffers across worker threads, and glibc's arenas spent ~12% of a loaded gateway's CPU
/// in malloc, free and consolidation (tests/bench/HOTPATH.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { config, data_dir, listen } => {
            let config = tollgate::cli::serve_config(config, data_dir, listen)?;
            // `[telemetry] otlp_endpoint` unset: no exporter, no layer.
            let telemetry = Telemetry::start(&config.telemetry, tokio::runtime::Handle::current())?;
            init_logging(telemetry.as_ref());
            let served = tollgate::cli::serve(config).await;
            if let Some(telemetry) = telemetry {
                // Blocks until the last spans are sent, which the runtime's workers do.
                match tokio::task::spawn_blocking(move || telemetry.shutdown()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "the last spans were not exported"),
                    Err(e) => tracing::warn!(error = %e, "the last spans were not exported"),
                }
            }
            served
        }
        command => {
            init_logging(None);
            match command {
                Command::Serve { .. } => Ok(()), // handled above
                Command::Policy(command) => tollgate::cli::policy(command).await,
                Command::PolicyUpload { file, url } => tollgate::cli::policy_upload(file, url).await,
                Command::Backup { out, url } => tollgate::cli::backup(out, url).await,
                Command::Restore { from, data_dir } => tollgate::cli::restore(from, data_dir),
                Command::AuditVerify { url } => tollgate::cli::audit_verify(url).await,
                Command::Migrate { url } => tollgate::cli::migrate(url).await,
            }
        }
    }
}

/// Logs to stderr: `RUST_LOG` picks the level; `TOLLGATE_LOG_FORMAT=json` gives one JSON
/// object per line. With trace export on, the exporter's layer sits beside the log output,
/// each with its own filter (it takes the phase spans whatever `RUST_LOG` says).
fn init_logging(telemetry: Option<&Telemetry>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let json = std::env::var("TOLLGATE_LOG_FORMAT").is_ok_and(|f| f == "json");
    // Colour codes only for a terminal: in a log file they are noise, and each line paid
    // for writing them.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let Some(telemetry) = telemetry else {
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
        if json {
            builder.json().init();
        } else {
            builder.init();
        }
        return;
    };
    let logs = if json {
        tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).boxed()
    };
    tracing_subscriber::registry().with(logs.with_filter(filter)).with(telemetry.layer()).init();
}
