//! The encode phase for a stream in another API's shape (Messages, Responses): the chat
//! path's OpenAI SSE stream, read one `data:` payload at a time, becomes the client's
//! events through that API's [`StreamEncoder`]. Dropping the chat body when the client
//! goes away ends the chat stream as a disconnect, which settles it.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

use super::Body;

/// Events buffered between the re-encoder and the client.
const CHANNEL_EVENTS: usize = 64;

/// One inbound API's stream events for the chat path's chunks.
pub trait StreamEncoder: Send + 'static {
    /// The client's events for one chat `data:` payload (a chunk, `[DONE]` or an error).
    /// Asynchronous: an encoder may store something before its final event.
    fn data(&mut self, payload: &str) -> impl Future<Output = Vec<Bytes>> + Send;
    /// Whether the client's stream is complete.
    fn ended(&self) -> bool;
    /// The events that end a stream the chat path cut short.
    fn fail(&mut self, message: &str) -> Vec<Bytes>;
}

/// Re-encodes `response`, a chat SSE stream, with `encoder`; status and headers kept.
pub fn respond(response: Response<Body>, encoder: impl StreamEncoder) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_EVENTS);
    tokio::spawn(pump(body, tx, encoder));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx)) });
    let mut out = Response::new(StreamBody::new(stream).boxed_unsync());
    *out.status_mut() = parts.status;
    *out.headers_mut() = parts.headers;
    out.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    out
}

async fn pump(mut body: Body, tx: mpsc::Sender<Bytes>, mut encoder: impl StreamEncoder) {
    let mut buffer = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Some(data) = frame.data_ref() else { continue };
        buffer.extend_from_slice(data);
        while let Some(at) = buffer.windows(2).position(|w| w == b"\n\n") {
            let raw: Vec<u8> = buffer.drain(..at + 2).collect();
            let text = String::from_utf8_lossy(&raw);
            let Some(payload) = text.trim_end().strip_prefix("data: ") else { continue };
            for out in encoder.data(payload).await {
                if tx.send(out).await.is_err() {
                    return;
                }
            }
            if encoder.ended() {
                return;
            }
        }
    }
    // The chat stream ended with neither `[DONE]` nor an error.
    for out in encoder.fail("the stream ended early") {
        let _ = tx.send(out).await;
    }
}
