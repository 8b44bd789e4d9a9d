//! `POST /v1/chat/completions`, and the chat path every chat API shares (the Messages and
//! Responses formats translate into it): the request path of DESIGN §2, phase by phase.
//!
//! authenticate (`server.rs`, [`Caller`]) -> decode ([`wire`]) -> admit (session history,
//! rate limits) -> route ([`route`]) -> reserve ([`reserve`]) -> dispatch ([`dispatch`]) ->
//! encode (whole here, or [`stream`]) -> settle ([`settle`]), always, also on error or
//! disconnect.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Map, Value};

use super::dispatch::{self, Answer};
use super::route;
use super::settle::{Opening, Settlement};
use super::stream::{self, StreamJob};
use super::wire::{self, ChatBody};
use super::{json_response, reserve, Body};
use crate::app::App;
use crate::error::GatewayError;
use crate::providers::ChatCall;

pub use super::caller::Caller;

/// Handles one chat request. `permit` holds the request's concurrency slots, taken
/// before its body was read.
pub async fn handle(app: &Arc<App>, caller: Caller, permit: crate::ratelimit::Permit, bytes: Bytes) -> Result<Response<Body>, GatewayError> {
    // Decode.
    handle_parsed(app, caller, permit, wire::parse(&bytes)?).await
}

/// The chat path from a decoded body on: where the Messages and Responses formats join
/// it with their translated bodies.
pub async fn handle_parsed(app: &Arc<App>, caller: Caller, permit: crate::ratelimit::Permit, mut parsed: ChatBody) -> Result<Response<Body>, GatewayError> {
    parsed.summary.api = caller.api;
    // Admit: the session's history joins the prompt before the prompt is counted.
    let session_id = caller.session_id.clone().or_else(|| parsed.session_id.clone());
    if let Some(session) = &session_id {
        crate::sessions::validate_id(session).map_err(|e| GatewayError::bad_request("invalid_session_id", e))?;
        if caller.session_history || parsed.session_history {
            let turns = app.sessions.tenant(caller.tenant.storage_id()).history(session, crate::sessions::MAX_HISTORY_TURNS).await?;
            parsed.prepend_history(&turns);
        }
    }
    let session_turn = session_id.clone().and_then(|s| parsed.last_user_text().map(|text| (s, text)));
    let scopes: Vec<(&str, crate::ratelimit::RateLimits)> = permit.scopes().iter().map(|(k, l)| (k.as_str(), *l)).collect();
    app.limiter.admit(&scopes, parsed.summary.prompt_token_estimate as u64)?;
    // Route.
    let routed = route::route(app, &caller, &parsed.summary, session_id).await?;
    // Reserve.
    let catalog = app.services.catalog_for(&caller.tenant);
    let reserved = reserve::amount(routed.plan.reserve_microdollars, reserve::worst_case(&catalog, &routed.plan, &parsed), reserve::is_budgeted(&caller.tenant))?;
    let reservation = reserve::hold(app, &caller, parsed.summary.end_user.as_ref(), &routed.plan.tags, reserved).await?;
    let opening = Opening { end_user: parsed.summary.end_user.clone(), prompt_estimate: parsed.summary.prompt_token_estimate as u64, permit, session: session_turn };
    let settlement = Settlement::open(app, &caller, &routed, reservation, catalog, opening);
    // Dispatch.
    let stream = parsed.summary.stream;
    let build = |adapter: &dyn crate::providers::Provider, provider: &crate::config::ProviderConfig, target: &crate::policy::PlanTarget, key: Option<&crate::secret::Secret>| {
        let body = body_for(&parsed, target);
        adapter.build(&provider.base_url, &ChatCall { body: &body, model: &target.model, stream }, key)
    };
    let (answer, settlement) = dispatch::first_answer(app, &caller, &routed.plan, settlement, build).await?;
    // Encode and settle.
    let target = answer.target.clone();
    let mut response = if stream { encode_stream(app, &caller, &parsed, answer, settlement) } else { encode_whole(app, &caller, answer, settlement).await? };
    routed.annotate(&mut response, &target, reserved);
    Ok(response)
}

/// Encodes a streamed answer: a task pumps it to the client and settles when it ends.
fn encode_stream(app: &App, caller: &Caller, parsed: &ChatBody, answer: Answer<'_>, settlement: Settlement) -> Response<Body> {
    let Answer { target, adapter, response, redactor } = answer;
    stream::respond(StreamJob {
        source: response.into_body(),
        translator: adapter.stream(&target.model, &caller.request_id),
        redactor,
        include_usage: parsed.include_usage,
        model: target.model.clone(),
        request_id: caller.request_id.clone(),
        idle_timeout: app.upstream.config.timeout,
        settlement,
        target: target.clone(),
    })
}

/// Encodes a whole answer as an OpenAI `chat.completion`, settled before it is sent.
async fn encode_whole(app: &App, caller: &Caller, answer: Answer<'_>, settlement: Settlement) -> Result<Response<Body>, GatewayError> {
    let Answer { target, adapter, response, redactor } = answer;
    let (bytes, mut settlement) = dispatch::read_whole(app, target, response, settlement).await?;
    match adapter.translate(&bytes, &target.model, &caller.request_id) {
        Ok((mut value, usage)) => {
            redactor.json(&mut value);
            settlement.reply = reply_text(&value);
            // Billed by estimate from the answer when the upstream reports no usage.
            settlement.finish(Some(usage), completion_bytes(&value), "success", Some(target)).await;
            Ok(json_response(StatusCode::OK, &value))
        }
        Err(e) => {
            settlement.finish(None, 0, "upstream_error", Some(target)).await;
            Err(GatewayError::Upstream { status: StatusCode::BAD_GATEWAY, code: "upstream_bad_response", message: redactor.message(&e.to_string()) })
        }
    }
}

/// The body for one target: the client's, with model, the completion limit reserved and
/// temperature set.
fn body_for(parsed: &ChatBody, target: &crate::policy::PlanTarget) -> Map<String, Value> {
    let mut out = parsed.body.clone();
    out.insert("model".into(), Value::String(target.model.clone()));
    reserve::apply_completion_limit(&mut out, reserve::completion_limit(parsed, target));
    if let Some(t) = target.temperature {
        out.insert("temperature".into(), Value::from(t as f64));
    }
    out
}

/// The assistant text of an OpenAI `chat.completion`.
fn reply_text(value: &Value) -> String {
    value.pointer("/choices/0/message/content").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Bytes of generated output in an OpenAI `chat.completion`: every choice's text and
/// tool-call arguments.
fn completion_bytes(value: &Value) -> u64 {
    let choices = value.get("choices").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut bytes = 0;
    for message in choices.iter().filter_map(|c| c.get("message")) {
        bytes += message.get("content").and_then(Value::as_str).map_or(0, str::len);
        for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            bytes += call.pointer("/function/arguments").and_then(Value::as_str).map_or(0, str::len);
        }
    }
    bytes as u64
}
