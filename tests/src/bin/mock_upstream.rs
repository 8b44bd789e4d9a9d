//! `mock-upstream --listen 127.0.0.1:PORT`: the mock OpenAI/Anthropic/Gemini upstream from
//! [`tollgate_tests::mock`] in the foreground, for benchmarks and manual runs. Prints the
//! bound address on stdout, then serves until Ctrl-C. Requests are counted, not recorded,
//! so a long run does not grow memory.

use std::io::Write;
use std::net::SocketAddr;

use clap::Parser;
use tollgate_tests::mock::MockUpstream;

/// Serve the mock upstream on a loopback address.
#[derive(Parser)]
#[command(name = "mock-upstream")]
struct Args {
    /// Address to listen on; must be loopback (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // `bind` refuses non-loopback addresses: the mock must never be reachable off-host.
    let mock = MockUpstream::bind(args.listen, false).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", mock.addr)?;
    stdout.flush()?;
    tokio::signal::ctrl_c().await?;
    drop(mock);
    Ok(())
}
