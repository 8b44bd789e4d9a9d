//! The encode phase for a streamed answer: a task pumps the upstream's SSE through the
//! provider's translator into OpenAI chunks for the client, settles what flowed, then
//! sends the last frame. A stream cut by
//! either side is still billed for what flowed; once bytes reached the client the stream is
//! never switched to another target.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use tokio::sync::mpsc;

use super::settle::Settlement;
use super::Body;
use crate::policy::PlanTarget;
use crate::providers::{usage_chunk, RelayedChunk, SseEvent, SseParser, StreamTranslator, Translated, UsageField};
use crate::redact::Redactor;

/// Everything the pump needs.
pub struct StreamJob {
    /// The upstream's SSE body.
    pub source: crate::upstream::UpstreamBody,
    /// The provider's translator.
    pub translator: Box<dyn StreamTranslator>,
    /// Redacts the call's key from every chunk (an upstream may echo it mid-stream).
    pub redactor: Redactor,
    /// Whether the client asked for a usage chunk.
    pub include_usage: bool,
    /// Model name for synthesized chunks.
    pub model: String,
    /// Request id.
    pub request_id: String,
    /// Longest silence from the upstream before the stream counts as cut.
    pub idle_timeout: Duration,
    /// Settles the request when the stream ends.
    pub settlement: Settlement,
    /// The target serving the stream.
    pub target: PlanTarget,
}

/// Chunks buffered between the pump and the client.
const CHANNEL_CHUNKS: usize = 64;

/// One `data:` event holding `value`.
fn sse(value: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // Writing a `Value` to a `Vec` cannot fail: its keys are strings.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// One `data:` event holding `json`, JSON text on one line.
fn sse_text(json: &str) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Starts the pump and returns the streaming response.
pub fn respond(job: StreamJob) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    // In the request's span: settlement's span, in the pump, is one of its children.
    tokio::spawn(tracing::Instrument::instrument(pump(job, tx), tracing::Span::current()));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx)) });
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// What ended the stream.
#[derive(PartialEq, Eq, Clone, Copy)]
enum End {
    Finished,
    ClientGone,
    UpstreamCut,
}

struct Pump {
    tx: mpsc::Sender<Bytes>,
    translator: Box<dyn StreamTranslator>,
    redactor: Redactor,
    include_usage: bool,
    usage_sent: bool,
    /// Reply text seen so far, for the session turn (capped).
    text: String,
}

/// What a chunk's `usage` means for the client.
#[derive(PartialEq, Eq)]
enum UsageAction {
    /// Send the chunk as it is.
    Keep,
    /// Send it without its `usage` field.
    Strip,
    /// Do not send it.
    Drop,
}

impl Pump {
    /// Translates one event and forwards its chunks; `Err` ends the stream.
    async fn event(&mut self, event: &SseEvent) -> Result<(), End> {
        match self.translator.translate(event).map_err(|_| End::UpstreamCut)? {
            Translated::Built(chunks) => {
                for chunk in chunks {
                    self.send_value(chunk).await?;
                }
                Ok(())
            }
            // The key may be in it: redacted in its parsed form.
            Translated::Relayed(chunk) if self.redactor.may_change_json(chunk.json()) => self.send_value(chunk.to_value().map_err(|_| End::UpstreamCut)?).await,
            Translated::Relayed(chunk) => self.send_relayed(chunk).await,
        }
    }

    /// The gateway always asks upstream for usage; a client that did not ask must not get
    /// the extra chunk, nor the `"usage": null` OpenAI puts on every other chunk of a
    /// stream that asked.
    fn usage_action(&mut self, usage: UsageField, choices_empty: bool) -> UsageAction {
        let reported = matches!(usage, UsageField::Present(_));
        if self.include_usage {
            self.usage_sent |= reported;
            UsageAction::Keep
        } else if reported && choices_empty {
            UsageAction::Drop
        } else if usage == UsageField::Absent {
            UsageAction::Keep
        } else {
            UsageAction::Strip
        }
    }

    /// Keeps the start of the reply's text for the session turn.
    fn note_text(&mut self, delta: &str) {
        if self.text.len() < crate::sessions::MAX_TURN_BYTES {
            self.text.push_str(delta);
        }
    }

    /// Redacts, trims and sends a chunk the gateway holds as a `Value`.
    async fn send_value(&mut self, mut chunk: Value) -> Result<(), End> {
        self.redactor.json(&mut chunk);
        let usage = match chunk.get("usage") {
            None => UsageField::Absent,
            Some(Value::Null) => UsageField::Null,
            Some(_) => UsageField::Present(None),
        };
        let choices_empty = chunk.get("choices").and_then(Value::as_array).is_some_and(|c| c.is_empty());
        match self.usage_action(usage, choices_empty) {
            UsageAction::Drop => return Ok(()),
            UsageAction::Strip => {
                if let Some(map) = chunk.as_object_mut() {
                    map.remove("usage");
                }
            }
            UsageAction::Keep => {}
        }
        if let Some(delta) = chunk.pointer("/choices/0/delta/content").and_then(Value::as_str) {
            self.note_text(delta);
        }
        self.tx.send(sse(&chunk)).await.map_err(|_| End::ClientGone)
    }

    /// Sends the upstream's own chunk, cut only of a `usage` the client did not ask for.
    async fn send_relayed(&mut self, chunk: RelayedChunk) -> Result<(), End> {
        let json = match self.usage_action(chunk.usage, chunk.choices_empty) {
            UsageAction::Drop => return Ok(()),
            UsageAction::Strip => chunk.json_without_usage(),
            UsageAction::Keep => std::borrow::Cow::Borrowed(chunk.json()),
        };
        let bytes = sse_text(&json);
        if let Some(delta) = &chunk.first_content {
            self.note_text(delta);
        }
        self.tx.send(bytes).await.map_err(|_| End::ClientGone)
    }
}

async fn pump(job: StreamJob, tx: mpsc::Sender<Bytes>) {
    let StreamJob { source, translator, redactor, include_usage, model, request_id, idle_timeout, mut settlement, target } = job;
    let mut pump = Pump { tx, translator, redactor, include_usage, usage_sent: false, text: String::new() };
    let mut body = source;
    let mut parser = SseParser::new();
    let end = loop {
        match tokio::time::timeout(idle_timeout, body.frame()).await {
            Err(_) | Ok(Some(Err(_))) => break End::UpstreamCut,
            Ok(None) => {
                if let Ok(Some(event)) = parser.finish() {
                    if let Err(e) = pump.event(&event).await {
                        break e;
                    }
                }
                break if pump.translator.finished() { End::Finished } else { End::UpstreamCut };
            }
            Ok(Some(Ok(frame))) => {
                let Some(data) = frame.data_ref() else { continue };
                let events = match parser.feed(data) {
                    Ok(events) => events,
                    Err(_) => break End::UpstreamCut,
                };
                let mut stop = None;
                for event in &events {
                    if let Err(e) = pump.event(event).await {
                        stop = Some(e);
                        break;
                    }
                }
                if let Some(end) = stop {
                    break end;
                }
                if pump.translator.finished() {
                    break End::Finished;
                }
            }
        }
    };
    let usage = pump.translator.usage();
    let outcome = match end {
        End::Finished => "success",
        End::ClientGone => "client_disconnected",
        End::UpstreamCut => "upstream_cut",
    };
    let mut reported = (usage.prompt_tokens > 0 || usage.completion_tokens > 0).then_some(usage);
    if end != End::Finished {
        // Usage seen before the end is partial: providers report the completion count
        // last (Anthropic's `message_start` says 1 output token, Gemini's interim events
        // none), so a cut stream is billed at least for the text that flowed.
        if let Some(partial) = reported.as_mut() {
            partial.completion_tokens = partial.completion_tokens.max(pump.translator.completion_bytes().div_ceil(4));
        }
    }
    // Settle before the last frame, as a plain answer is settled before it is sent: a
    // client that saw `[DONE]` has its ledger record on disk, and a graceful shutdown,
    // which waits for open responses, cannot end between the two.
    settlement.reply = std::mem::take(&mut pump.text);
    let billed = settlement.finish(reported, pump.translator.completion_bytes(), outcome, Some(&target)).await;
    match end {
        End::Finished => {
            if pump.include_usage && !pump.usage_sent {
                // What is billed: the upstream's figures, or the estimate when it sent none.
                let created = crate::clock::unix_millis() / 1000;
                let _ = pump.tx.send(sse(&usage_chunk(&request_id, &model, created, billed))).await;
            }
            let _ = pump.tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
        }
        End::UpstreamCut => {
            let error = serde_json::json!({"error": {"message": "the upstream stream ended early", "type": "server_error", "code": "upstream_stream_cut"}});
            let _ = pump.tx.send(sse(&error)).await;
        }
        End::ClientGone => {}
    }
}
