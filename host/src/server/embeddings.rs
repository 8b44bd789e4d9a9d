//! `POST /v1/embeddings` (OpenAI's wire format): the chat request path of DESIGN §2 for
//! vectors instead of text.
//!
//! decode -> admit -> route (the policy sees the inputs as one user message, operation
//! `embeddings`) -> reserve (every input token at the dearest target's input price) ->
//! dispatch (retry, fallback; a target with no embeddings endpoint fails and the next is
//! tried) -> encode -> settle at actual usage.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use super::caller::Caller;
use super::dispatch::{self, Answer};
use super::reserve::{self, Unpriced, WorstCase};
use super::route;
use super::settle::{Opening, Settlement};
use super::{json_response, Body};
use crate::app::App;
use crate::catalog::{worst_case_microdollars, Catalog};
use crate::config::ProviderConfig;
use crate::error::GatewayError;
use crate::policy::{Api, Message, Operation, PlanTarget, Request, RoutePlan};
use crate::providers::embeddings::estimate_tokens;
use crate::providers::{Embeddings, EmbeddingsCall, Provider};
use crate::secret::Secret;

/// Most inputs in one request: OpenAI's own limit, so a client that works there works here.
pub const MAX_INPUTS: usize = 2048;
/// Longest single input, in bytes: OpenAI's 8192-token input cap at up to 4 bytes a token.
/// A bigger input would fail upstream after the reservation; refused before it instead.
pub const MAX_INPUT_BYTES: usize = 8192 * 4;
/// Largest `dimensions` accepted: above every public embedding model's (3072), and it
/// bounds the demo provider's allocation.
pub const MAX_DIMENSIONS: u64 = 4096;

/// A validated embeddings request.
#[derive(Debug)]
pub struct EmbeddingsBody {
    /// The body as sent (pass-through upstreams get it with the target's model).
    pub body: Map<String, Value>,
    /// The client's `model`.
    pub model: String,
    /// The texts, in order.
    pub inputs: Vec<String>,
    /// `dimensions`, if asked.
    pub dimensions: Option<u64>,
    /// `encoding_format: base64`.
    pub base64: bool,
    /// `user`.
    pub end_user: Option<String>,
}

fn bad(code: &'static str, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(code, message)
}

/// Validates an embeddings body. Errors are 400s naming the field.
pub fn parse(bytes: &[u8]) -> Result<EmbeddingsBody, GatewayError> {
    let body = super::wire::parse_object(bytes)?;
    let model = match body.get("model") {
        Some(Value::String(m)) if m.len() <= super::wire::MAX_MODEL_BYTES => m.clone(),
        Some(Value::String(_)) => return Err(bad("invalid_model", format!("'model' is longer than {} bytes", super::wire::MAX_MODEL_BYTES))),
        None => String::new(),
        Some(_) => return Err(bad("invalid_type", "'model' must be a string")),
    };
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            if items.iter().any(|i| i.is_number() || i.is_array()) {
                return Err(bad("token_ids_unsupported", "'input' as token ids is not supported: send the text as a string or an array of strings"));
            }
            items.iter().map(|i| i.as_str().map(str::to_owned).ok_or_else(|| bad("invalid_type", "'input' must be a string or an array of strings"))).collect::<Result<_, _>>()?
        }
        None | Some(Value::Null) => return Err(bad("missing_input", "'input' is required: a string or an array of strings")),
        Some(_) => return Err(bad("invalid_type", "'input' must be a string or an array of strings")),
    };
    if inputs.is_empty() {
        return Err(bad("empty_input", "'input' must hold at least one string"));
    }
    if inputs.len() > MAX_INPUTS {
        return Err(bad("too_many_inputs", format!("'input' holds {} strings; at most {MAX_INPUTS} are allowed", inputs.len())));
    }
    if inputs.iter().any(String::is_empty) {
        return Err(bad("empty_input", "'input' must not contain an empty string"));
    }
    if let Some(i) = inputs.iter().position(|s| s.len() > MAX_INPUT_BYTES) {
        return Err(bad("input_too_large", format!("input {i} is longer than {MAX_INPUT_BYTES} bytes")));
    }
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|d| (1..=MAX_DIMENSIONS).contains(d)).ok_or_else(|| bad("invalid_dimensions", format!("'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}")))?),
    };
    let base64 = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => return Err(bad("invalid_encoding_format", "'encoding_format' must be \"float\" or \"base64\"")),
    };
    let end_user = match body.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if u.len() <= 256 => Some(u.clone()),
        Some(_) => return Err(bad("invalid_type", "'user' must be a string of at most 256 bytes")),
    };
    Ok(EmbeddingsBody { body, model, inputs, dimensions, base64, end_user })
}

/// What the policy sees: the client's model and the inputs as one user message, so its
/// size estimates work unchanged.
fn summary(parsed: &EmbeddingsBody, estimate: u64) -> Request {
    Request {
        operation: Operation::Embeddings,
        api: Api::OpenaiEmbeddings,
        model: parsed.model.clone(),
        messages: vec![Message { role: "user".into(), text: parsed.inputs.join("\n"), image_count: 0, tool_call_count: 0 }],
        max_tokens: None,
        temperature: None,
        stream: false,
        tool_count: 0,
        end_user: parsed.end_user.clone(),
        metadata: Vec::new(),
        prompt_token_estimate: estimate.min(u64::from(u32::MAX)) as u32,
    }
}

/// The most a plan can cost: every input token at the dearest target's dearest input rate.
fn worst_case(catalog: &Catalog, plan: &RoutePlan, tokens: u64) -> WorstCase {
    let mut worst = WorstCase { microdollars: 0, unpriced: None };
    for target in &plan.targets {
        match catalog.price(&target.provider, &target.model) {
            Some(price) => worst.microdollars = worst.microdollars.max(worst_case_microdollars(&price, tokens, 0)),
            None => {
                worst.unpriced.get_or_insert_with(|| Unpriced { provider: target.provider.clone(), model: target.model.clone() });
            }
        }
    }
    worst
}

/// Handles one embeddings request. `permit` holds its concurrency slots.
pub async fn handle(app: &Arc<App>, caller: Caller, permit: crate::ratelimit::Permit, bytes: Bytes) -> Result<Response<Body>, GatewayError> {
    // Decode.
    let parsed = parse(&bytes)?;
    let estimate = estimate_tokens(&parsed.inputs);
    // Admit.
    let scopes: Vec<(&str, crate::ratelimit::RateLimits)> = permit.scopes().iter().map(|(k, l)| (k.as_str(), *l)).collect();
    app.limiter.admit(&scopes, estimate)?;
    // Route.
    let routed = route::route(app, &caller, &summary(&parsed, estimate), None).await?;
    // Reserve.
    let catalog = app.services.catalog_for(&caller.tenant);
    let reserved = reserve::amount(routed.plan.reserve_microdollars, worst_case(&catalog, &routed.plan, estimate), reserve::is_budgeted(&caller.tenant))?;
    let reservation = reserve::hold(app, &caller, parsed.end_user.as_ref(), &routed.plan.tags, reserved).await?;
    // What an upstream that reports no usage (Gemini) is billed for: the input estimate.
    let opening = Opening { end_user: parsed.end_user.clone(), prompt_estimate: estimate, permit, session: None };
    let settlement = Settlement::open(app, &caller, &routed, reservation, catalog, opening);
    // Dispatch: a target that cannot embed fails like one that is down, and the next is
    // tried.
    let build = |adapter: &dyn Provider, provider: &ProviderConfig, target: &PlanTarget, key: Option<&Secret>| {
        adapter.build_embeddings(&provider.base_url, &call_for(&parsed, target), key)
    };
    let (answer, settlement) = dispatch::first_answer(app, &caller, &routed.plan, settlement, build).await?;
    // Encode and settle.
    let Answer { target, adapter, response, redactor } = answer;
    let (bytes, settlement) = dispatch::read_whole(app, target, response, settlement).await?;
    let mut response = match adapter.translate_embeddings(&bytes, &call_for(&parsed, target)) {
        Ok(answer) => respond(&parsed, target, answer, settlement).await,
        Err(e) => {
            settlement.finish(None, 0, "upstream_error", Some(target)).await;
            return Err(GatewayError::Upstream { status: StatusCode::BAD_GATEWAY, code: "upstream_bad_response", message: redactor.message(&e.to_string()) });
        }
    };
    routed.annotate(&mut response, target, reserved);
    Ok(response)
}

fn call_for<'a>(parsed: &'a EmbeddingsBody, target: &'a PlanTarget) -> EmbeddingsCall<'a> {
    EmbeddingsCall { body: &parsed.body, model: &target.model, inputs: &parsed.inputs, dimensions: parsed.dimensions }
}

/// Settles at the usage billed and answers in OpenAI's shape, each vector as floats or
/// base64 little-endian `f32`s as the client asked.
async fn respond(parsed: &EmbeddingsBody, target: &PlanTarget, answer: Embeddings, settlement: Settlement) -> Response<Body> {
    // No usage reported: billed by the input estimate (`prompt_estimate`).
    let usage = settlement.finish(answer.usage, 0, "success", Some(target)).await;
    let data: Vec<Value> = answer
        .vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if parsed.base64 { Value::String(crate::providers::embeddings::encode_base64(vector)) } else { json!(vector) };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "model": target.model, "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(bytes: &[u8]) -> String {
        match parse(bytes) {
            Ok(_) => "ok".into(),
            Err(e) => e.parts().2,
        }
    }

    #[test]
    fn parse_refuses_bad_inputs_with_named_codes() -> Result<(), GatewayError> {
        let ok = parse(br#"{"model":"m","input":["a","b"],"dimensions":3,"encoding_format":"base64","user":"u"}"#)?;
        assert_eq!((ok.inputs.len(), ok.dimensions, ok.base64, ok.end_user.as_deref()), (2, Some(3), true, Some("u")));
        assert_eq!(parse(br#"{"model":"m","input":"x"}"#)?.inputs, vec!["x".to_string()]);
        assert_eq!(code(br#"{"model":"m"}"#), "missing_input");
        assert_eq!(code(br#"{"model":"m","input":[]}"#), "empty_input");
        assert_eq!(code(br#"{"model":"m","input":""}"#), "empty_input");
        assert_eq!(code(br#"{"model":"m","input":[1,2]}"#), "token_ids_unsupported");
        assert_eq!(code(br#"{"model":"m","input":"x","dimensions":0}"#), "invalid_dimensions");
        assert_eq!(code(br#"{"model":"m","input":"x","encoding_format":"int8"}"#), "invalid_encoding_format");
        let many = serde_json::to_vec(&json!({"model": "m", "input": vec!["a"; MAX_INPUTS + 1]})).map_err(|e| GatewayError::Internal(e.to_string()))?;
        assert_eq!(code(&many), "too_many_inputs");
        let big = serde_json::to_vec(&json!({"model": "m", "input": "a".repeat(MAX_INPUT_BYTES + 1)})).map_err(|e| GatewayError::Internal(e.to_string()))?;
        assert_eq!(code(&big), "input_too_large");
        Ok(())
    }
}
