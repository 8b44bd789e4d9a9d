//! The `tollgate` binary: parse arguments, set up logging, hand over to the library.

use clap::Parser;
use tollgate::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve { config, data_dir, listen } => tollgate::cli::serve(tollgate::cli::serve_config(config, data_dir, listen)?).await,
        Command::PolicyUpload { file, url } => tollgate::cli::policy_upload(file, url).await,
    }
}
