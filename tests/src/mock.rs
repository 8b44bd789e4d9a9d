//! A loopback mock of the three upstream wire formats Tollgate speaks: OpenAI
//! (`POST /v1/chat/completions`), Anthropic (`POST /v1/messages`) and Gemini
//! (`POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`), each whole or streamed, with usage; and embeddings
//! (`POST /v1/embeddings`, `:batchEmbedContents`), see [`embeddings`].
//!
//! Answers are deterministic: `mock reply to: <last user text>`, or, when the request
//! offers tools (and the last message is not already a tool result, and tool choice is not
//! "none"), a call to the first tool with arguments `{"q":"mock"}`.
//!
//! Usage: prompt tokens are the request's message text bytes / 4, rounded up (at least 1);
//! completion tokens are the reply's word count ([`TOOL_CALL_TOKENS`] for a tool call).
//!
//! Behaviour is chosen by the requested model name, so a test needs no side channel (the
//! TensorZero trick). A name starting with `mock` is read as dash-separated directives;
//! tokens that are not directives are ignored, so they can label targets (`mock-a-500`):
//!
//! | directive      | effect                                                              |
//! |----------------|---------------------------------------------------------------------|
//! | `latency=MS`   | wait before sending headers                                         |
//! | `chunks=N`     | stream the reply in N content pieces (default 3; at most its length)|
//! | `pace=MS`      | wait before each streamed piece after the first, and before the end |
//! | `nousage`      | report no usage                                                     |
//! | `cached=N`     | report N of the prompt tokens as cache hits                         |
//! | `429`          | HTTP 429 with `Retry-After: 1` and the provider's error JSON        |
//! | `500`, `400`   | that status with the provider's error JSON                          |
//! | `hang`         | never answer                                                        |
//! | `reset`        | close the connection without an answer                              |
//! | `badsse`       | stream a malformed event (`data: {not json`) after the first piece  |
//! | `cut=N`        | stream N pieces, then drop the connection before the final events   |
//! | `fail-first=N` | the first N requests for this exact model name get 500              |
//! | `echokey`      | whole: HTTP 401 whose error message holds the request's key across   |
//! |                | byte [`ECHO_KEY_AT`]..; streamed: an error event holding the key     |
//! |                | after the first piece, then the rest of the stream                  |
//! | `bloat=N`      | HTTP 200: a valid N-byte answer padded with `"pad":[0,0,...]`        |
//!
//! Example: `mock-latency=50-chunks=5-pace=10`.
//!
//! One behaviour is chosen by the key instead, so two tenants can share a model name: a
//! request whose provider key starts with [`REVOKED_KEY_PREFIX`] gets HTTP 401.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Completion tokens reported for a tool-call reply.
pub const TOOL_CALL_TOKENS: u64 = 5;

/// A provider key starting with this is refused with 401, whatever the model.
pub const REVOKED_KEY_PREFIX: &str = "sk-revoked";

/// Where `echokey` puts the key in its error message: 12 bytes before the 512th, so a
/// gateway that cuts the message at 512 bytes before redacting leaks a 12-byte prefix.
pub const ECHO_KEY_AT: usize = 500;

/// Largest request body the mock reads.
const MAX_BODY_BYTES: usize = 16 << 20;

/// Pieces a streamed reply is split into when the model name does not say.
const DEFAULT_CHUNKS: usize = 3;

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// A running mock upstream on a loopback port. Dropping it stops the server and every
/// open connection (including hung ones).
pub struct MockUpstream {
    /// The bound address (always loopback).
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

/// One request the mock received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path with query, e.g. `/v1beta/models/m:streamGenerateContent?alt=sse`.
    pub path: String,
    /// Headers in arrival order, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// State shared by all connections of one mock.
#[derive(Default)]
struct State {
    /// Whether to keep request copies (off for long benchmark runs, which would grow it).
    record: bool,
    hits: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Requests seen per model name, for `fail-first=N`.
    attempts: Mutex<HashMap<String, u64>>,
}

/// A poisoned lock only means another handler panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MockUpstream {
    /// Starts a recording mock on `127.0.0.1:0`.
    pub async fn start() -> anyhow::Result<MockUpstream> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), true).await
    }

    /// Starts a mock on `addr`, which must be a loopback address. With `record` off, only
    /// [`hits`](Self::hits) is kept.
    pub async fn bind(addr: SocketAddr, record: bool) -> anyhow::Result<MockUpstream> {
        anyhow::ensure!(addr.ip().is_loopback(), "the mock upstream listens on loopback only, not {addr}");
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State { record, ..State::default() });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(MockUpstream { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`: the base URL for Anthropic and Gemini targets (OpenAI
    /// targets add `/v1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far, in arrival order (empty when not recording).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// How many requests arrived (counted once the body was read, before any delay).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // The accept loop owns the connection tasks, so aborting it ends them too.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| handle(state.clone(), req));
                        // Client hang-ups, `reset` and `cut` all end here as errors; expected.
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                    });
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The three wire formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    OpenAi,
    Anthropic,
    Gemini,
}

/// Behaviour chosen by the model name; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Knobs {
    latency: Duration,
    chunks: usize,
    pace: Duration,
    usage: bool,
    cached: u64,
    status: Option<u16>,
    hang: bool,
    reset: bool,
    bad_sse: bool,
    cut: Option<usize>,
    fail_first: u64,
    echo_key: bool,
    bloat: Option<usize>,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            latency: Duration::ZERO,
            chunks: DEFAULT_CHUNKS,
            pace: Duration::ZERO,
            usage: true,
            cached: 0,
            status: None,
            hang: false,
            reset: false,
            bad_sse: false,
            cut: None,
            fail_first: 0,
            echo_key: false,
            bloat: None,
        }
    }
}

impl Knobs {
    fn parse(model: &str) -> Knobs {
        let mut knobs = Knobs::default();
        if !model.starts_with("mock") {
            return knobs;
        }
        let tokens: Vec<&str> = model.split('-').collect();
        let mut i = 0;
        while i < tokens.len() {
            let mut token = tokens[i].to_owned();
            // `fail-first=N` is the one directive with a dash in it.
            if token == "fail" && tokens.get(i + 1).is_some_and(|t| t.starts_with("first=")) {
                token = format!("fail-{}", tokens[i + 1]);
                i += 1;
            }
            i += 1;
            let (name, value) = match token.split_once('=') {
                Some((name, value)) => (name, value.parse::<u64>().ok()),
                None => (token.as_str(), None),
            };
            match (name, value) {
                ("latency", Some(ms)) => knobs.latency = Duration::from_millis(ms),
                ("chunks", Some(n)) => knobs.chunks = (n as usize).max(1),
                ("pace", Some(ms)) => knobs.pace = Duration::from_millis(ms),
                ("cached", Some(n)) => knobs.cached = n,
                ("cut", Some(n)) => knobs.cut = Some(n as usize),
                ("fail-first", Some(n)) => knobs.fail_first = n,
                ("nousage", None) => knobs.usage = false,
                ("429", None) => knobs.status = Some(429),
                ("500", None) => knobs.status = Some(500),
                ("400", None) => knobs.status = Some(400),
                ("hang", None) => knobs.hang = true,
                ("reset", None) => knobs.reset = true,
                ("badsse", None) => knobs.bad_sse = true,
                ("echokey", None) => knobs.echo_key = true,
                ("bloat", Some(n)) => knobs.bloat = Some(n as usize),
                _ => {}
            }
        }
        knobs
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, io::Error> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path_and_query().map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => return Ok(json_response(StatusCode::PAYLOAD_TOO_LARGE, &json!({"error": {"message": "mock: body unreadable or too large"}}))),
    };
    let hit = state.hits.fetch_add(1, Ordering::SeqCst) + 1;
    let recorded = RecordedRequest { method, path, headers, body };
    if state.record {
        lock(&state.requests).push(recorded.clone());
    }
    respond(&state, &recorded, hit).await
}

/// Embeddings, OpenAI (`POST /v1/embeddings`) or Gemini (`:batchEmbedContents`): input
/// `i` gets `dimensions` (default 2) values `i + 1 + j / 4`, exact in `f32`. OpenAI's
/// answer reports usage (input bytes / 4, rounded up, at least 1); Gemini's reports none.
fn embeddings(path: &str, body: &Value) -> Response<Body> {
    let vector = |i: usize, dims: u64| -> Vec<f64> { (0..dims).map(|j| (i + 1) as f64 + j as f64 / 4.0).collect() };
    if path.ends_with(":batchEmbedContents") {
        let requests = body.get("requests").and_then(Value::as_array).cloned().unwrap_or_default();
        let embeddings: Vec<Value> = requests
            .iter()
            .enumerate()
            .map(|(i, r)| json!({"values": vector(i, r.get("outputDimensionality").and_then(Value::as_u64).unwrap_or(2))}))
            .collect();
        return json_response(StatusCode::OK, &json!({"embeddings": embeddings}));
    }
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().map(|i| i.as_str().unwrap_or_default().to_owned()).collect(),
        _ => Vec::new(),
    };
    let dims = body.get("dimensions").and_then(Value::as_u64).unwrap_or(2);
    let data: Vec<Value> = (0..inputs.len()).map(|i| json!({"object": "embedding", "index": i, "embedding": vector(i, dims)})).collect();
    let tokens = (inputs.iter().map(String::len).sum::<usize>() as u64).div_ceil(4).max(1);
    json_response(StatusCode::OK, &json!({"object": "list", "data": data, "model": str_at(body, "/model"), "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
}

/// Works out the API, model and mode of a request, applies the knobs, and answers.
async fn respond(state: &State, req: &RecordedRequest, hit: usize) -> Result<Response<Body>, io::Error> {
    let (path, query) = req.path.split_once('?').unwrap_or((req.path.as_str(), ""));
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let (api, model, stream) = if req.method != "POST" {
        return Ok(json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": {"message": "mock: POST only"}})));
    } else if path == "/v1/embeddings" || path.ends_with(":batchEmbedContents") {
        return Ok(embeddings(path, &body));
    } else if path == "/v1/chat/completions" {
        (Api::OpenAi, str_at(&body, "/model").to_owned(), body.get("stream") == Some(&Value::Bool(true)))
    } else if path == "/v1/messages" {
        (Api::Anthropic, str_at(&body, "/model").to_owned(), body.get("stream") == Some(&Value::Bool(true)))
    } else if let Some((model, method)) = path.strip_prefix("/v1beta/models/").and_then(|rest| rest.rsplit_once(':')) {
        match method {
            "generateContent" => (Api::Gemini, model.to_owned(), false),
            "streamGenerateContent" if query.split('&').any(|kv| kv == "alt=sse") => (Api::Gemini, model.to_owned(), true),
            "streamGenerateContent" => return Ok(error_response(Api::Gemini, 400, "mock: streamGenerateContent is only mocked with alt=sse")),
            _ => return Ok(json_response(StatusCode::NOT_FOUND, &json!({"error": {"message": "mock: unknown Gemini method"}}))),
        }
    } else {
        return Ok(json_response(StatusCode::NOT_FOUND, &json!({"error": {"message": format!("mock: no route for {path}")}})));
    };
    if body.is_null() {
        return Ok(error_response(api, 400, "mock: body is not JSON"));
    }

    let knobs = Knobs::parse(&model);
    let attempt = {
        let mut attempts = lock(&state.attempts);
        let count = attempts.entry(model.clone()).or_insert(0);
        *count += 1;
        *count
    };
    tokio::time::sleep(knobs.latency).await;
    if knobs.hang {
        let never: Infallible = std::future::pending().await;
        match never {}
    }
    if knobs.reset {
        // An error from the service makes hyper close the connection without answering.
        return Err(io::Error::new(io::ErrorKind::ConnectionReset, "mock: reset"));
    }
    if attempt <= knobs.fail_first {
        return Ok(error_response(api, 500, &format!("mock: failing attempt {attempt} of the first {}", knobs.fail_first)));
    }
    if let Some(status) = knobs.status {
        return Ok(error_response(api, status, &format!("mock: forced {status}")));
    }
    let key = request_key(req);
    if key.starts_with(REVOKED_KEY_PREFIX) {
        return Ok(error_response(api, 401, "mock: this key has been revoked"));
    }
    if knobs.echo_key && !stream {
        let message = format!("{}{key} is not a valid key", "x".repeat(ECHO_KEY_AT));
        return Ok(error_response(api, 401, &message));
    }
    if let Some(bytes) = knobs.bloat {
        // A valid answer, so only the padding can make a gateway refuse it.
        let mut body = match api {
            Api::OpenAi => r#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"#,
            Api::Anthropic => r#"{"type":"message","role":"assistant","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","#,
            Api::Gemini => r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"ok"}]},"finishReason":"STOP"}],"#,
        }
        .to_owned();
        let zeros = bytes.saturating_sub(body.len() + 10) / 2;
        body.reserve(bytes);
        body.push_str("\"pad\":[");
        for i in 0..zeros {
            body.push_str(if i == 0 { "0" } else { ",0" });
        }
        body.push_str("]}");
        let mut response = Response::new(full(body));
        response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        return Ok(response);
    }

    let reply = Reply::new(api, &body, &knobs);
    let id = hit.to_string();
    let plan = match (api, stream) {
        (Api::OpenAi, false) => return Ok(json_response(StatusCode::OK, &openai_body(&reply, &model, &id))),
        (Api::Anthropic, false) => return Ok(json_response(StatusCode::OK, &anthropic_body(&reply, &model, &id))),
        (Api::Gemini, false) => return Ok(json_response(StatusCode::OK, &gemini_body(&reply, &model, &id))),
        (Api::OpenAi, true) => {
            let include_usage = body.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
            openai_stream(&reply, &model, &id, include_usage)
        }
        (Api::Anthropic, true) => anthropic_stream(&reply, &model, &id),
        (Api::Gemini, true) => gemini_stream(&reply, &model, &id),
    };
    let mut plan = plan;
    if knobs.echo_key {
        let at = plan.pieces.len().min(1);
        plan.pieces.insert(at, echo_key_event(api, &key));
    }
    Ok(sse_response(plan, &knobs, api))
}

/// The provider key a request carried, in any of the three auth headers.
fn request_key(req: &RecordedRequest) -> String {
    let raw = req.header("authorization").or_else(|| req.header("x-api-key")).or_else(|| req.header("x-goog-api-key")).unwrap_or("");
    raw.strip_prefix("Bearer ").unwrap_or(raw).to_owned()
}

/// A mid-stream error event, in the provider's shape, that echoes the key.
fn echo_key_event(api: Api, key: &str) -> String {
    let message = format!("mock: overloaded while serving key {key}");
    match api {
        Api::OpenAi => data_event(&json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})),
        Api::Anthropic => named_event("error", &json!({"type": "error", "error": {"type": "overloaded_error", "message": message}})),
        Api::Gemini => format!("data: {}\r\n\r\n", json!({"error": {"code": 503, "message": message, "status": "UNAVAILABLE"}})),
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Token counts the mock reports.
#[derive(Debug, Clone, Copy)]
struct MockUsage {
    prompt: u64,
    completion: u64,
    cached: u64,
}

/// What the mock answers.
struct Reply {
    /// The answer text, or the tool name and the arguments JSON for a tool call.
    text: String,
    tool: Option<String>,
    /// `None` with `nousage`.
    usage: Option<MockUsage>,
    chunks: usize,
}

impl Reply {
    fn new(api: Api, body: &Value, knobs: &Knobs) -> Reply {
        let texts = request_texts(api, body);
        let prompt_bytes: usize = texts.iter().map(|(_, t)| t.len()).sum();
        let last_user = texts.iter().rev().find(|(user, t)| *user && !t.is_empty()).map(|(_, t)| t.clone()).unwrap_or_default();
        let tool = tool_to_call(api, body);
        let (text, completion) = match &tool {
            Some(_) => (json!({"q": "mock"}).to_string(), TOOL_CALL_TOKENS),
            None => {
                let text = format!("mock reply to: {last_user}");
                let words = text.split_whitespace().count() as u64;
                (text, words)
            }
        };
        let prompt = (prompt_bytes as u64).div_ceil(4).max(1).max(knobs.cached);
        let usage = knobs.usage.then_some(MockUsage { prompt, completion, cached: knobs.cached });
        Reply { text, tool, usage, chunks: knobs.chunks }
    }

    /// The text (or tool arguments) split into at most `chunks` non-empty pieces.
    fn pieces(&self) -> Vec<String> {
        let chars: Vec<char> = self.text.chars().collect();
        let n = self.chunks.clamp(1, chars.len().max(1));
        (0..n).map(|i| chars[i * chars.len() / n..(i + 1) * chars.len() / n].iter().collect()).collect()
    }
}

/// Every message text in the request with whether it is the user's, in order.
fn request_texts(api: Api, body: &Value) -> Vec<(bool, String)> {
    let empty = Vec::new();
    let join_parts = |parts: &Vec<Value>| parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n");
    let content_text = |content: Option<&Value>| match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => join_parts(parts),
        _ => String::new(),
    };
    match api {
        Api::OpenAi | Api::Anthropic => {
            let mut out = Vec::new();
            if api == Api::Anthropic {
                out.push((false, content_text(body.get("system"))));
            }
            for message in body.get("messages").and_then(Value::as_array).unwrap_or(&empty) {
                out.push((str_at(message, "/role") == "user", content_text(message.get("content"))));
            }
            out
        }
        Api::Gemini => {
            let mut out = vec![(false, join_parts(body.pointer("/systemInstruction/parts").and_then(Value::as_array).unwrap_or(&empty)))];
            for content in body.get("contents").and_then(Value::as_array).unwrap_or(&empty) {
                out.push((str_at(content, "/role") == "user", join_parts(content.get("parts").and_then(Value::as_array).unwrap_or(&empty))));
            }
            out
        }
    }
}

/// The first tool's name, if the mock should call it: tools were offered, tool choice is
/// not "none", and the conversation does not already end in a tool result (so a tool loop
/// ends with a text answer).
fn tool_to_call(api: Api, body: &Value) -> Option<String> {
    let (name, disabled, answered) = match api {
        Api::OpenAi => {
            let last = body.get("messages").and_then(Value::as_array).and_then(|m| m.last());
            (
                body.pointer("/tools/0/function/name"),
                body.get("tool_choice").and_then(Value::as_str) == Some("none"),
                last.is_some_and(|m| str_at(m, "/role") == "tool"),
            )
        }
        Api::Anthropic => {
            let last = body.get("messages").and_then(Value::as_array).and_then(|m| m.last());
            let answered = last
                .and_then(|m| m.get("content"))
                .and_then(Value::as_array)
                .is_some_and(|blocks| blocks.iter().any(|b| str_at(b, "/type") == "tool_result"));
            (body.pointer("/tools/0/name"), str_at(body, "/tool_choice/type") == "none", answered)
        }
        Api::Gemini => {
            let last = body.get("contents").and_then(Value::as_array).and_then(|c| c.last());
            let answered = last
                .and_then(|c| c.get("parts"))
                .and_then(Value::as_array)
                .is_some_and(|parts| parts.iter().any(|p| p.get("functionResponse").is_some()));
            (
                body.pointer("/tools/0/functionDeclarations/0/name"),
                str_at(body, "/toolConfig/functionCallingConfig/mode") == "NONE",
                answered,
            )
        }
    };
    let name = name.and_then(Value::as_str)?;
    (!disabled && !answered).then(|| name.to_owned())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|never: Infallible| match never {}).boxed_unsync()
}

/// An error in the provider's own shape; 429 carries `Retry-After: 1`.
fn error_response(api: Api, status: u16, message: &str) -> Response<Body> {
    let body = match api {
        Api::OpenAi => {
            let (kind, code) = match status {
                429 => ("requests", "rate_limit_exceeded"),
                400 => ("invalid_request_error", "invalid_request"),
                _ => ("server_error", "server_error"),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Api::Anthropic => {
            let kind = match status {
                429 => "rate_limit_error",
                400 => "invalid_request_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Api::Gemini => {
            let kind = match status {
                429 => "RESOURCE_EXHAUSTED",
                400 => "INVALID_ARGUMENT",
                _ => "INTERNAL",
            };
            json!({"error": {"code": status, "message": message, "status": kind}})
        }
    };
    let mut response = json_response(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &body);
    if status == 429 {
        response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    }
    response
}

/// The pieces of one SSE response: events before the content, one event per content piece,
/// and the closing events (which `cut` withholds).
struct SsePlan {
    preamble: Vec<String>,
    pieces: Vec<String>,
    closing: Vec<String>,
}

/// One step of a streamed body.
enum Step {
    Data(Bytes),
    Pause(Duration),
    Abort,
}

fn sse_response(plan: SsePlan, knobs: &Knobs, api: Api) -> Response<Body> {
    let bad_event = match api {
        Api::Anthropic => "event: content_block_delta\ndata: {not json\n\n",
        Api::OpenAi | Api::Gemini => "data: {not json\n\n",
    };
    let mut steps: Vec<Step> = plan.preamble.into_iter().map(|e| Step::Data(e.into())).collect();
    for (i, piece) in plan.pieces.into_iter().enumerate() {
        if knobs.cut == Some(i) {
            break;
        }
        if i > 0 {
            steps.push(Step::Pause(knobs.pace));
        }
        steps.push(Step::Data(piece.into()));
        if knobs.bad_sse && i == 0 {
            steps.push(Step::Data(Bytes::from_static(bad_event.as_bytes())));
        }
    }
    if knobs.cut.is_some() {
        steps.push(Step::Abort);
    } else {
        steps.push(Step::Pause(knobs.pace));
        steps.extend(plan.closing.into_iter().map(|e| Step::Data(e.into())));
    }
    let stream = futures_util::stream::unfold(steps.into_iter(), |mut steps| async move {
        loop {
            match steps.next()? {
                Step::Pause(delay) => {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                }
                Step::Data(data) => return Some((Ok(Frame::data(data)), steps)),
                // A body error makes hyper drop the connection mid-body. It discards its
                // unflushed buffer when it does, so pause first: the pending poll lets it
                // flush what was "sent", and the client sees a stream that stops.
                Step::Abort => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return Some((Err(io::Error::new(io::ErrorKind::ConnectionAborted, "mock: cut")), steps));
                }
            }
        }
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
    headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    response
}

fn data_event(data: &Value) -> String {
    format!("data: {data}\n\n")
}

fn named_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

// ---- OpenAI ----------------------------------------------------------------------------

fn openai_usage(usage: MockUsage) -> Value {
    json!({
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached},
    })
}

fn openai_body(reply: &Reply, model: &str, id: &str) -> Value {
    let (message, finish) = match &reply.tool {
        Some(name) => (
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_mock_{id}"), "type": "function", "function": {"name": name, "arguments": reply.text}}], "refusal": null}),
            "tool_calls",
        ),
        None => (json!({"role": "assistant", "content": reply.text, "refusal": null}), "stop"),
    };
    let mut body = json!({
        "id": format!("chatcmpl-mock-{id}"),
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
    });
    if let Some(usage) = reply.usage {
        body["usage"] = openai_usage(usage);
    }
    body
}

fn openai_stream(reply: &Reply, model: &str, id: &str, include_usage: bool) -> SsePlan {
    let created = now_secs();
    let include_usage = include_usage && reply.usage.is_some();
    let chunk = |delta: Value, finish: Value| {
        let mut chunk = json!({
            "id": format!("chatcmpl-mock-{id}"),
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        // With include_usage, OpenAI puts `"usage": null` on every chunk but the last.
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        data_event(&chunk)
    };
    let (first, finish) = match &reply.tool {
        Some(name) => (
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": format!("call_mock_{id}"), "type": "function", "function": {"name": name, "arguments": ""}}]}),
            "tool_calls",
        ),
        None => (json!({"role": "assistant", "content": ""}), "stop"),
    };
    let pieces = reply
        .pieces()
        .into_iter()
        .map(|piece| match reply.tool {
            Some(_) => chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), Value::Null),
            None => chunk(json!({"content": piece}), Value::Null),
        })
        .collect();
    let mut closing = vec![chunk(json!({}), json!(finish))];
    if let (true, Some(usage)) = (include_usage, reply.usage) {
        closing.push(data_event(&json!({
            "id": format!("chatcmpl-mock-{id}"),
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": openai_usage(usage),
        })));
    }
    closing.push("data: [DONE]\n\n".to_owned());
    SsePlan { preamble: vec![chunk(first, Value::Null)], pieces, closing }
}

// ---- Anthropic -------------------------------------------------------------------------

/// Anthropic's `input_tokens` excludes cache reads, unlike OpenAI's `prompt_tokens`.
fn anthropic_usage(usage: MockUsage, output_tokens: u64) -> Value {
    json!({
        "input_tokens": usage.prompt - usage.cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached,
        "output_tokens": output_tokens,
    })
}

fn anthropic_body(reply: &Reply, model: &str, id: &str) -> Value {
    let (content, stop) = match &reply.tool {
        Some(name) => (json!([{"type": "tool_use", "id": format!("toolu_mock_{id}"), "name": name, "input": {"q": "mock"}}]), "tool_use"),
        None => (json!([{"type": "text", "text": reply.text}]), "end_turn"),
    };
    let mut body = json!({
        "id": format!("msg_mock_{id}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
    });
    if let Some(usage) = reply.usage {
        body["usage"] = anthropic_usage(usage, usage.completion);
    }
    body
}

fn anthropic_stream(reply: &Reply, model: &str, id: &str) -> SsePlan {
    let mut message = json!({
        "id": format!("msg_mock_{id}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": null,
        "stop_sequence": null,
    });
    if let Some(usage) = reply.usage {
        message["usage"] = anthropic_usage(usage, 1);
    }
    let (block, stop) = match &reply.tool {
        Some(name) => (json!({"type": "tool_use", "id": format!("toolu_mock_{id}"), "name": name, "input": {}}), "tool_use"),
        None => (json!({"type": "text", "text": ""}), "end_turn"),
    };
    let preamble = vec![
        named_event("message_start", &json!({"type": "message_start", "message": message})),
        named_event("content_block_start", &json!({"type": "content_block_start", "index": 0, "content_block": block})),
        named_event("ping", &json!({"type": "ping"})),
    ];
    let pieces = reply
        .pieces()
        .into_iter()
        .map(|piece| {
            let delta = match reply.tool {
                Some(_) => json!({"type": "input_json_delta", "partial_json": piece}),
                None => json!({"type": "text_delta", "text": piece}),
            };
            named_event("content_block_delta", &json!({"type": "content_block_delta", "index": 0, "delta": delta}))
        })
        .collect();
    let mut message_delta = json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}});
    if let Some(usage) = reply.usage {
        message_delta["usage"] = json!({"output_tokens": usage.completion});
    }
    let closing = vec![
        named_event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})),
        named_event("message_delta", &message_delta),
        named_event("message_stop", &json!({"type": "message_stop"})),
    ];
    SsePlan { preamble, pieces, closing }
}

// ---- Gemini ----------------------------------------------------------------------------

fn gemini_usage(usage: MockUsage, completion: Option<u64>) -> Value {
    let mut meta = json!({"promptTokenCount": usage.prompt, "totalTokenCount": usage.prompt + completion.unwrap_or(0)});
    if let Some(completion) = completion {
        meta["candidatesTokenCount"] = completion.into();
    }
    if usage.cached > 0 {
        meta["cachedContentTokenCount"] = usage.cached.into();
    }
    meta
}

fn gemini_response(parts: Value, finish: Option<&str>, usage: Option<Value>, model: &str, id: &str) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(finish) = finish {
        candidate["finishReason"] = finish.into();
    }
    let mut response = json!({"candidates": [candidate], "modelVersion": model, "responseId": format!("mock-{id}")});
    if let Some(usage) = usage {
        response["usageMetadata"] = usage;
    }
    response
}

fn gemini_body(reply: &Reply, model: &str, id: &str) -> Value {
    let parts = match &reply.tool {
        Some(name) => json!([{"functionCall": {"name": name, "args": {"q": "mock"}}}]),
        None => json!([{"text": reply.text}]),
    };
    gemini_response(parts, Some("STOP"), reply.usage.map(|u| gemini_usage(u, Some(u.completion))), model, id)
}

/// Gemini frames events with CRLF and sends usage (prompt so far) on every event.
fn gemini_stream(reply: &Reply, model: &str, id: &str) -> SsePlan {
    let event = |response: Value| format!("data: {response}\r\n\r\n");
    let partial_usage = reply.usage.map(|u| gemini_usage(u, None));
    let pieces = match &reply.tool {
        // Gemini sends a function call whole, in one event.
        Some(name) => vec![event(gemini_response(json!([{"functionCall": {"name": name, "args": {"q": "mock"}}}]), None, partial_usage.clone(), model, id))],
        None => reply
            .pieces()
            .into_iter()
            .map(|piece| event(gemini_response(json!([{"text": piece}]), None, partial_usage.clone(), model, id)))
            .collect(),
    };
    let final_usage = reply.usage.map(|u| gemini_usage(u, Some(u.completion)));
    let closing = vec![event(gemini_response(json!([{"text": ""}]), Some("STOP"), final_usage, model, id))];
    SsePlan { preamble: Vec::new(), pieces, closing }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    /// A bound on every network step, so a broken mock fails the test instead of hanging it.
    const STEP: Duration = Duration::from_secs(5);

    struct Answer {
        status: StatusCode,
        headers: http::HeaderMap,
        body: Result<Bytes, String>,
    }

    async fn post(addr: SocketAddr, path: &str, body: Value) -> anyhow::Result<Answer> {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr)).await??;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let request = Request::post(path)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let response = tokio::time::timeout(STEP, sender.send_request(request)).await??;
        let status = response.status();
        let headers = response.headers().clone();
        let body = match tokio::time::timeout(STEP, response.into_body().collect()).await? {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) => Err(e.to_string()),
        };
        conn.abort();
        Ok(Answer { status, headers, body })
    }

    fn json_of(answer: &Answer) -> anyhow::Result<Value> {
        let body = answer.body.as_ref().map_err(|e| anyhow::anyhow!("body failed: {e}"))?;
        Ok(serde_json::from_slice(body)?)
    }

    fn text_of(answer: &Answer) -> anyhow::Result<String> {
        let body = answer.body.as_ref().map_err(|e| anyhow::anyhow!("body failed: {e}"))?;
        Ok(String::from_utf8(body.to_vec())?)
    }

    fn data_lines(sse: &str) -> Vec<&str> {
        sse.lines().filter_map(|l| l.strip_prefix("data: ")).collect()
    }

    #[test]
    fn knobs_parse_from_the_model_name() {
        let knobs = Knobs::parse("mock-a-latency=50-chunks=5-pace=10-fail-first=2-nousage-cut=1-429");
        assert_eq!(knobs, Knobs {
            latency: Duration::from_millis(50),
            chunks: 5,
            pace: Duration::from_millis(10),
            usage: false,
            cut: Some(1),
            fail_first: 2,
            status: Some(429),
            ..Knobs::default()
        });
        assert_eq!(Knobs::parse("gpt-4o-500"), Knobs::default());
    }

    #[tokio::test]
    async fn openai_whole_and_streamed() -> anyhow::Result<()> {
        let mock = MockUpstream::start().await?;
        let request = json!({"model": "mock", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hello"}]});
        let answer = post(mock.addr, "/v1/chat/completions", request.clone()).await?;
        assert_eq!(answer.status, StatusCode::OK);
        let body = json_of(&answer)?;
        assert_eq!(body["choices"][0]["message"]["content"], "mock reply to: hello");
        assert_eq!(body["usage"]["prompt_tokens"], 2);
        assert_eq!(body["usage"]["completion_tokens"], 4);

        let mut streamed = request.clone();
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        streamed["model"] = json!("mock-chunks=4");
        let answer = post(mock.addr, "/v1/chat/completions", streamed).await?;
        let sse = text_of(&answer)?;
        let data = data_lines(&sse);
        assert_eq!(data.last(), Some(&"[DONE]"));
        let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d)).collect::<Result<_, _>>()?;
        let text: String = chunks.iter().filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str)).collect();
        assert_eq!(text, "mock reply to: hello");
        assert_eq!(chunks.len(), 1 + 4 + 1 + 1);
        assert_eq!(chunks[chunks.len() - 1]["usage"]["completion_tokens"], 4);
        assert_eq!(mock.hits(), 2);
        assert_eq!(mock.requests()[0].path, "/v1/chat/completions");
        Ok(())
    }

    #[tokio::test]
    async fn anthropic_tool_call_and_stream() -> anyhow::Result<()> {
        let mock = MockUpstream::start().await?;
        let request = json!({"model": "mock", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "lookup", "input_schema": {"type": "object"}}]});
        let body = json_of(&post(mock.addr, "/v1/messages", request).await?)?;
        assert_eq!(body["content"][0], json!({"type": "tool_use", "id": "toolu_mock_1", "name": "lookup", "input": {"q": "mock"}}));
        assert_eq!(body["stop_reason"], "tool_use");

        let request = json!({"model": "mock-cached=1", "stream": true, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
        let sse = text_of(&post(mock.addr, "/v1/messages", request).await?)?;
        let kinds: Vec<&str> = sse.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(kinds, ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]);
        assert!(sse.contains(r#""cache_read_input_tokens":1"#));
        Ok(())
    }

    #[tokio::test]
    async fn gemini_model_from_path_and_sse() -> anyhow::Result<()> {
        let mock = MockUpstream::start().await?;
        let request = json!({"contents": [{"role": "user", "parts": [{"text": "yo"}]}]});
        let body = json_of(&post(mock.addr, "/v1beta/models/mock-x:generateContent", request.clone()).await?)?;
        assert_eq!(body["candidates"][0]["content"]["parts"][0]["text"], "mock reply to: yo");
        assert_eq!(body["modelVersion"], "mock-x");
        let answer = post(mock.addr, "/v1beta/models/mock-chunks=2:streamGenerateContent?alt=sse", request).await?;
        let sse = text_of(&answer)?;
        assert!(sse.contains("\r\n\r\n"));
        assert_eq!(data_lines(&sse).len(), 3);
        assert!(sse.contains(r#""finishReason":"STOP""#));
        Ok(())
    }

    #[tokio::test]
    async fn failures_by_model_name() -> anyhow::Result<()> {
        let mock = MockUpstream::start().await?;
        let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "x"}]});
        let answer = post(mock.addr, "/v1/chat/completions", chat("mock-429")).await?;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.headers.get(http::header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert_eq!(json_of(&answer)?["error"]["code"], "rate_limit_exceeded");

        for expected in [500, 500, 200] {
            assert_eq!(post(mock.addr, "/v1/chat/completions", chat("mock-fail-first=2")).await?.status.as_u16(), expected);
        }
        assert!(post(mock.addr, "/v1/chat/completions", chat("mock-reset")).await.is_err());

        let mut cut = chat("mock-cut=1-chunks=3");
        cut["stream"] = json!(true);
        let answer = post(mock.addr, "/v1/chat/completions", cut).await?;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.body.is_err(), "a cut stream must not end cleanly");

        let hang = tokio::time::timeout(Duration::from_millis(200), post(mock.addr, "/v1/chat/completions", chat("mock-hang"))).await;
        assert!(hang.is_err());
        Ok(())
    }
}
