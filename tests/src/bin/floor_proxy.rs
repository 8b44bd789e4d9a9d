//! `floor-proxy --listen 127.0.0.1:PORT --upstream http://127.0.0.1:PORT [--journal FILE]`:
//! the least a governed chat proxy built on Tollgate's fixed dependencies does, for the
//! benchmark's S1 floor (issue 12, `tests/bench/HOTPATH.md`).
//!
//! Per request: hyper's server side reads the body, serde_json parses it (a gateway must
//! read the model), hyper-util's client forwards the bytes unchanged and collects the
//! answer, serde_json parses that (a gateway must read the usage), and, with `--journal`,
//! a record is appended and `fdatasync`ed before the answer goes back, as Tollgate's
//! ledger promises. A streamed answer (`"stream": true`) is relayed frame by frame as it
//! comes, and the frame holding `[DONE]` waits for the record's sync. No authentication, policy, budget or credentials: what Tollgate adds
//! above this proxy is its own cost; what this adds above nginx is the dependencies'.
//!
//! The journal file is written ahead in zeros that the records overwrite, as Tollgate's
//! ledger journal is, so a sync carries the records alone, not the file's growing size.
//! It is group-committed by one thread (every record waiting is written, then one
//! sync answers them all), as a real ledger must be under concurrency. `--inline-sync`
//! instead writes and syncs on the worker that serves the request: no hand-off at all, the
//! least one connection can wait, but it stalls the worker, so it is a floor for one
//! connection only.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::oneshot;

/// Serve the floor proxy on a loopback address.
#[derive(Parser)]
#[command(name = "floor-proxy")]
struct Args {
    /// Address to listen on; must be loopback (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where requests go, e.g. http://127.0.0.1:8081 (loopback only).
    #[arg(long)]
    upstream: String,
    /// Append a record per answer to this file and sync it before answering.
    #[arg(long)]
    journal: Option<PathBuf>,
    /// With --journal: write and sync on the request's own worker, not a journal thread.
    #[arg(long, requires = "journal")]
    inline_sync: bool,
}

/// Where records go: a group-committing thread, or the file itself, synced in place.
enum Journal {
    Thread(mpsc::Sender<(Vec<u8>, oneshot::Sender<std::io::Result<()>>)>),
    Inline(std::sync::Mutex<ZeroedFile>),
}

/// A file written ahead in zeros (at least 1 MiB at a time, doubling), with records
/// overwriting them from the start.
struct ZeroedFile {
    file: File,
    end: u64,
    size: u64,
}

impl ZeroedFile {
    fn create(path: &std::path::Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        Ok(Self { file, end: 0, size: 0 })
    }

    /// Writes `bytes` after the last record and syncs them.
    fn append_synced(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let needed = self.end + bytes.len() as u64;
        if needed > self.size {
            let grow = (needed - self.size).max(self.size).max(1 << 20);
            self.file.write_all_at(&vec![0; grow as usize], self.size)?;
            self.file.sync_all()?;
            self.size += grow;
        }
        self.file.write_all_at(bytes, self.end)?;
        self.file.sync_data()?;
        self.end = needed;
        Ok(())
    }
}

impl Journal {
    async fn append(&self, mut record: Vec<u8>) -> anyhow::Result<()> {
        record.push(b'\n');
        match self {
            Journal::Thread(tx) => {
                let (done, synced) = oneshot::channel();
                tx.send((record, done)).context("journal thread gone")?;
                Ok(synced.await.context("journal thread gone")??)
            }
            Journal::Inline(file) => Ok(file.lock().map_err(|_| anyhow::anyhow!("journal lock poisoned"))?.append_synced(&record)?),
        }
    }
}

/// The answer's body: collected whole, or relayed as it streams.
type AnswerBody = BoxBody<Bytes, std::io::Error>;

struct Proxy {
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
    journal: Option<Journal>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.listen.ip().is_loopback(), "--listen must be a loopback address");
    anyhow::ensure!(args.upstream.starts_with("http://127.0.0.1:"), "--upstream must be http://127.0.0.1:PORT");
    let journal = match &args.journal {
        Some(path) => {
            let file = ZeroedFile::create(path).with_context(|| format!("creating {}", path.display()))?;
            Some(if args.inline_sync { Journal::Inline(std::sync::Mutex::new(file)) } else { start_journal(file).context("starting the journal thread")? })
        }
        None => None,
    };
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(http);
    let proxy = Arc::new(Proxy { client, upstream: args.upstream.trim_end_matches('/').to_string(), journal });

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", listener.local_addr()?)?;
    stdout.flush()?;
    loop {
        let (socket, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let _ = socket.set_nodelay(true);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.forward(request).await.unwrap_or_else(failed)) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), service).await;
        });
    }
}

impl Proxy {
    async fn forward(self: Arc<Self>, request: Request<Incoming>) -> anyhow::Result<Response<AnswerBody>> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await?.to_bytes();
        let parsed: serde_json::Value = serde_json::from_slice(&body)?;
        let model = parsed.get("model").and_then(|m| m.as_str()).context("no model")?.to_string();
        let streamed = parsed.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let upstream = Request::post(format!("{}{path}", self.upstream)).header("content-type", "application/json").body(Full::new(body))?;
        let answer = self.client.request(upstream).await?;
        let status = answer.status();
        if streamed {
            let (frames, mut relayed) = tokio::sync::mpsc::channel(16);
            tokio::spawn(self.clone().relay(answer.into_body(), model, status, frames));
            let body = StreamBody::new(futures_util::stream::poll_fn(move |cx| relayed.poll_recv(cx)));
            return Ok(Response::builder().status(status).header("content-type", "text/event-stream").body(body.boxed())?);
        }
        let answer = answer.into_body().collect().await?.to_bytes();
        let usage: serde_json::Value = serde_json::from_slice(&answer)?;
        self.record(&model, usage.get("usage"), status).await?;
        Ok(Response::builder().status(status).header("content-type", "application/json").body(Full::new(answer).map_err(|never| match never {}).boxed())?)
    }

    /// Relays a streamed answer frame by frame; the frame holding `[DONE]` (or the end,
    /// without one) waits for the record's sync. Stops when the client goes.
    async fn relay(self: Arc<Self>, mut body: Incoming, model: String, status: StatusCode, frames: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>) {
        let mut recorded = false;
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => {
                    let _ = frames.send(Err(std::io::Error::other(e))).await;
                    return;
                }
            };
            if !recorded && frame.data_ref().is_some_and(|data| data.windows(6).any(|w| w == b"[DONE]")) {
                recorded = true;
                if let Err(e) = self.record(&model, None, status).await {
                    let _ = frames.send(Err(std::io::Error::other(format!("{e:#}")))).await;
                    return;
                }
            }
            if frames.send(Ok(frame)).await.is_err() {
                return;
            }
        }
        if !recorded && let Err(e) = self.record(&model, None, status).await {
            let _ = frames.send(Err(std::io::Error::other(format!("{e:#}")))).await;
        }
    }

    /// With a journal, appends the answer's record (about the size of a Tollgate ledger
    /// record) and waits for its sync.
    async fn record(&self, model: &str, usage: Option<&serde_json::Value>, status: StatusCode) -> anyhow::Result<()> {
        let Some(journal) = &self.journal else { return Ok(()) };
        let record = serde_json::to_vec(&serde_json::json!({
            "tenant": "floor", "model": model, "usage": usage, "status": status.as_u16(),
            "request_id": format!("{:032x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos()),
            "padding": "x".repeat(320),
        }))?;
        journal.append(record).await
    }
}

fn failed(error: anyhow::Error) -> Response<AnswerBody> {
    let mut response = Response::new(Full::new(Bytes::from(format!("floor-proxy: {error:#}\n"))).map_err(|never| match never {}).boxed());
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// One thread appends every waiting record, syncs once, and answers them all.
fn start_journal(mut file: ZeroedFile) -> std::io::Result<Journal> {
    let (tx, rx) = mpsc::channel::<(Vec<u8>, oneshot::Sender<std::io::Result<()>>)>();
    std::thread::Builder::new()
        .name("floor-journal".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                let mut bytes = Vec::new();
                for (record, _) in &batch {
                    bytes.extend_from_slice(record);
                }
                let written = file.append_synced(&bytes);
                for (_, done) in batch {
                    let _ = done.send(written.as_ref().map(|_| ()).map_err(|e| std::io::Error::new(e.kind(), e.to_string())));
                }
            }
        })?;
    Ok(Journal::Thread(tx))
}
