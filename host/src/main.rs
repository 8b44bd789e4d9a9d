//! The `tollgate` binary: parse arguments, set up logging, hand over to the library.

use clap::Parser;
use tollgate::cli::{Cli, Command};

/// jemalloc rather than glibc malloc: the request path allocates many small, short-lived
/// buffers across worker threads, and glibc's arenas spent ~12% of a loaded gateway's CPU
/// in malloc, free and consolidation (tests/bench/HOTPATH.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `RUST_LOG` picks the level; `TOLLGATE_LOG_FORMAT=json` gives one JSON object per line.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("TOLLGATE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
    match Cli::parse().command {
        Command::Serve { config, data_dir, listen } => tollgate::cli::serve(tollgate::cli::serve_config(config, data_dir, listen)?).await,
        Command::PolicyUpload { file, url } => tollgate::cli::policy_upload(file, url).await,
        Command::Backup { out, url } => tollgate::cli::backup(out, url).await,
        Command::Restore { from, data_dir } => tollgate::cli::restore(from, data_dir),
        Command::AuditVerify { url } => tollgate::cli::audit_verify(url).await,
        Command::Migrate { url } => tollgate::cli::migrate(url).await,
    }
}
