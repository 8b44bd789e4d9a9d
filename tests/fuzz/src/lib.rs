//! The bodies of Tollgate's fuzz targets. Each `fuzz_targets/*.rs` is one line calling a
//! function here, so the same checks can also be run over a corpus without libFuzzer.
//!
//! Every target asserts properties, not just "no panic": a parsed request keeps its
//! bounds, chunking never changes what the SSE parser sees, an issued token is found and a
//! changed one is not, a validated decision is within the limits and header-safe, and so
//! on. Allocation stays bounded by the input size (times a small constant): strings built
//! from fuzz data are capped, and nothing loops on a fuzz-chosen count without a cap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{Map, Value};
use tollgate::providers::{self, ChatCall, ProviderKind, SseEvent, SseParser};
use tollgate::Secret;

pub mod json;

/// Every provider kind the gateway ships.
pub const PROVIDERS: [ProviderKind; 4] = [ProviderKind::Openai, ProviderKind::Anthropic, ProviderKind::Gemini, ProviderKind::Demo];

// ---------------------------------------------------------------------------------------
// chat_request: `server::wire::parse`, then every adapter's `build` on what it accepted.

/// First byte even: the rest is the body as sent. Odd: the rest drives a structured
/// generator that writes request-shaped JSON (so the fuzzer spends its time past the JSON
/// syntax).
pub fn chat_request(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        check_chat_body(rest);
    } else {
        let mut u = Unstructured::new(rest);
        if let Ok(body) = json::chat_body(&mut u) {
            check_chat_body(&serde_json::to_vec(&body).unwrap());
        }
    }
}

/// The properties of `wire::parse` on one body.
pub fn check_chat_body(bytes: &[u8]) {
    use tollgate::server::wire;
    match wire::parse(bytes) {
        Err(e) => {
            let (status, _, code) = e.parts();
            assert_eq!(status.as_u16(), 400, "a bad body is a 400, never a 5xx: {e}");
            assert!(!code.is_empty());
        }
        Ok(mut parsed) => {
            let s = &parsed.summary;
            assert!(!s.messages.is_empty() && s.messages.len() <= wire::MAX_MESSAGES);
            assert!(s.model.len() <= wire::MAX_MODEL_BYTES);
            assert!(s.metadata.len() <= wire::MAX_METADATA);
            assert!(s.max_tokens.is_none_or(|m| m > 0));
            assert!(s.temperature.is_none_or(|t| (0.0..=2.0).contains(&t)));
            assert!(s.end_user.as_ref().is_none_or(|u| u.len() <= 256));
            assert!(!parsed.body.contains_key("stream_options"), "stream_options is the gateway's to set");
            assert!(!parsed.body.contains_key("session_id") && !parsed.body.contains_key("session_history"));
            let _ = parsed.last_user_text();
            check_builds(&parsed.body, &parsed.summary.model);
            let before = parsed.summary.messages.len();
            let turn = |role: &str| tollgate::sessions::Turn { role: role.into(), content: "earlier turn".into(), unix_millis: 0, request_id: "r".into() };
            parsed.prepend_history(&[turn("user"), turn("assistant")]);
            assert_eq!(parsed.summary.messages.len(), before + 2);
        }
    }
}

/// Every adapter builds an upstream request from an accepted body, or refuses it; the URL
/// always stays under the operator's base URL and the body is JSON.
pub fn check_builds(body: &Map<String, Value>, requested_model: &str) {
    const BASE: &str = "http://127.0.0.1:9/base";
    let key = Secret::new("sk-fuzz".into());
    for kind in PROVIDERS {
        for model in [requested_model, "m"] {
            for stream in [false, true] {
                let call = ChatCall { body, model, stream };
                let Ok(request) = kind.adapter().build(BASE, &call, Some(&key)) else { continue };
                if kind != ProviderKind::Demo {
                    assert!(request.url.starts_with("http://127.0.0.1:9/base/"), "{kind:?} left the base URL: {}", request.url);
                    let path = &request.url[BASE.len()..];
                    assert!(!path.contains(".."), "{kind:?} path has a dot segment: {path}");
                }
                let sent: Value = serde_json::from_slice(&request.body).expect("adapter bodies are JSON");
                assert!(sent.is_object());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// sse_parser: arbitrary bytes in arbitrary chunks.

/// The first (up to) 8 bytes give chunk sizes (cycled), the rest is the stream. Chunking
/// must not change the events, and no event may pass the size bound.
pub fn sse_parser(data: &[u8]) {
    let split = data.len().min(8);
    let (sizes, stream) = data.split_at(split);
    let sizes: Vec<usize> = if sizes.is_empty() { vec![1] } else { sizes.iter().map(|s| *s as usize % 67 + 1).collect() };
    let whole = parse_sse(std::iter::once(stream));
    let mut chunks = Vec::new();
    let mut at = 0;
    for size in sizes.iter().cycle() {
        if at >= stream.len() {
            break;
        }
        let end = (at + size).min(stream.len());
        chunks.push(&stream[at..end]);
        at = end;
    }
    let chunked = parse_sse(chunks.into_iter());
    for events in [&whole, &chunked].into_iter().flatten() {
        assert!(events.iter().all(|e| e.data.len() <= providers::sse::MAX_EVENT_BYTES));
    }
    if stream.len() < providers::sse::MAX_EVENT_BYTES {
        assert_eq!(whole, chunked, "chunking changed the parse");
    }
}

fn parse_sse<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Result<Vec<SseEvent>, providers::sse::SseError> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(parser.feed(chunk)?);
    }
    events.extend(parser.finish()?);
    Ok(events)
}

// ---------------------------------------------------------------------------------------
// provider_translate: whole answers and streams of every provider.

/// Which provider, which path, and the answer or events.
pub fn provider_translate(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(kind) = u.choose(&PROVIDERS).copied() else { return };
    let Ok(mode) = u8::arbitrary(&mut u) else { return };
    let adapter = kind.adapter();
    match mode % 4 {
        0 => {
            let body = u.take_rest();
            check_translate(kind, body);
            // What a client sees: redacted, then cut.
            let key = tollgate::Secret::new("sk-fuzz-0123456789".into());
            let message = tollgate::redact::Redactor::new(Some(&key)).message(&adapter.error_message(502, body));
            assert!(message.len() <= tollgate::redact::MAX_UPSTREAM_MESSAGE_BYTES);
            assert!(!message.contains("sk-fuzz-"));
        }
        1 => {
            if let Ok(body) = json::response(&mut u, kind) {
                check_translate(kind, &serde_json::to_vec(&body).unwrap());
            }
        }
        _ => {
            let mut events = Vec::new();
            while !u.is_empty() && events.len() < 64 {
                let Ok(event) = json::stream_event(&mut u, kind) else { break };
                events.push(event);
            }
            check_stream(kind, &events);
        }
    }
}

/// `translate` either refuses or gives an OpenAI `chat.completion` with usage that the
/// gateway can bill and report.
pub fn check_translate(kind: ProviderKind, body: &[u8]) {
    let Ok((value, usage)) = kind.adapter().translate(body, "fuzz-model", "req") else { return };
    assert!(value.get("choices").and_then(Value::as_array).is_some(), "{kind:?}: no choices in {value}");
    let _ = value.to_string();
    bill(usage);
}

/// What the gateway does with usage: the usage chunk (with `total_tokens`) and the cost.
fn bill(usage: providers::Usage) {
    let _ = providers::usage_chunk("req", "m", 0, usage).to_string();
    let price = tollgate::catalog::Price { input: 15_000_000, output: 75_000_000, cached_input: 1_500_000, cache_write: 18_750_000 };
    let _ = tollgate::catalog::cost_microdollars(&price, &usage);
    let _ = tollgate::catalog::worst_case_microdollars(&price, usage.prompt_tokens, usage.completion_tokens);
}

/// Feeds events until the translator refuses one (the gateway then ends the stream).
pub fn check_stream(kind: ProviderKind, events: &[SseEvent]) {
    let mut translator = kind.adapter().stream("fuzz-model", "req");
    let mut bytes = 0;
    for event in events {
        match translator.event(event) {
            Ok(chunks) => {
                for chunk in chunks {
                    assert_eq!(chunk.get("object").and_then(Value::as_str).filter(|_| kind != ProviderKind::Openai).unwrap_or("chat.completion.chunk"), "chat.completion.chunk");
                    let _ = chunk.to_string();
                }
            }
            Err(_) => break,
        }
        let now = translator.completion_bytes();
        assert!(now >= bytes, "completion bytes went down");
        bytes = now;
        let _ = translator.finished();
    }
    bill(translator.usage());
    check_relay(kind, events);
}

/// The stream pump's way through the same events ([`providers::StreamTranslator::translate`],
/// which relays OpenAI chunks as their own bytes) reads what the `Value` way reads: the
/// same chunks, usage, completion bytes and end; and a chunk it forwards unparsed is one
/// that redaction would leave as it is.
fn check_relay(kind: ProviderKind, events: &[SseEvent]) {
    let key = tollgate::Secret::new("sk-fuzz-0123456789".into());
    let redactor = tollgate::redact::Redactor::new(Some(&key));
    let (mut relay, mut reference) = (kind.adapter().stream("fuzz-model", "req"), kind.adapter().stream("fuzz-model", "req"));
    for event in events {
        let expected = reference.event(event);
        match relay.translate(event) {
            Ok(providers::Translated::Built(chunks)) => assert_eq!(Ok(chunks), expected),
            Ok(providers::Translated::Relayed(chunk)) => {
                // Text the `Value` way refuses (a number out of its range) ends the check.
                let Ok(expected) = expected else { break };
                let [mut value]: [Value; 1] = expected.try_into().expect("one chunk per OpenAI event");
                assert_eq!(chunk.to_value().ok().as_ref(), Some(&value));
                if !redactor.may_change_json(chunk.json()) {
                    let before = value.clone();
                    redactor.json(&mut value);
                    assert_eq!(value, before, "redaction changed a chunk said to be safe to forward: {}", chunk.json());
                }
                let mut stripped = value;
                if let Some(map) = stripped.as_object_mut() {
                    map.remove("usage");
                }
                assert_eq!(serde_json::from_str::<Value>(&chunk.json_without_usage()).ok(), Some(stripped));
            }
            Err(_) => {
                assert!(expected.is_err(), "{kind:?}: relayed refused {event:?}");
                break;
            }
        }
        assert_eq!((relay.usage(), relay.completion_bytes(), relay.finished()), (reference.usage(), reference.completion_bytes(), reference.finished()), "{event:?}");
    }
}

// ---------------------------------------------------------------------------------------
// tokens: bearer-token lookup, the operator token, master keys, policy hashes, session ids.

struct TokenFixture {
    store: tollgate::Store,
    issued: Vec<(String, String)>,
    admin: tollgate::tokens::AdminToken,
}

const ADMIN_TOKEN: &str = "tga_fuzz-operator-token";

fn token_fixture() -> &'static TokenFixture {
    static FIXTURE: OnceLock<TokenFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let store = tollgate::Store::temporary().expect("temporary store");
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let issued = ["tenant-a", "tenant-b"]
            .iter()
            .map(|tenant| {
                let scope = tollgate::tokens::Scope::Inference;
                let record: tollgate::tenants::Tenant = serde_json::from_value(serde_json::json!({"id": tenant})).expect("tenant");
                let (token, _) = runtime.block_on(tollgate::tokens::issue(&store, &record, scope, Default::default())).expect("issue");
                (token, tenant.to_string())
            })
            .collect();
        TokenFixture { store, issued, admin: tollgate::tokens::AdminToken::new(ADMIN_TOKEN) }
    })
}

/// First byte picks the path: a presented string as is, or an issued token (or the admin
/// token) with fuzz-chosen edits.
pub fn tokens(data: &[u8]) {
    let fixture = token_fixture();
    let Some((&mode, rest)) = data.split_first() else { return };
    let presented: String = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        _ => {
            let base = if mode % 3 == 1 { fixture.issued[usize::from(mode / 3) % fixture.issued.len()].0.as_str() } else { ADMIN_TOKEN };
            let mut bytes = base.as_bytes().to_vec();
            // Pairs (position, byte): overwrite, or past the end append; 0xff truncates.
            for pair in rest.chunks(2).take(16) {
                let at = usize::from(pair[0]);
                match pair.get(1) {
                    Some(0xff) => bytes.truncate(at),
                    Some(&b) if at < bytes.len() => bytes[at] = b,
                    Some(&b) => bytes.push(b),
                    None => {}
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
    };
    check_token(fixture, &presented);
    // A bearer header's value is trimmed before lookup; a padded token is the same token.
    check_token(fixture, presented.trim());
}

fn check_token(fixture: &TokenFixture, presented: &str) {
    let found = tollgate::tokens::lookup(&fixture.store, presented).expect("lookup never fails on input");
    match fixture.issued.iter().find(|(token, _)| token == presented) {
        Some((_, tenant)) => assert_eq!(found.map(|r| r.tenant_id), Some(tenant.clone())),
        None => assert!(found.is_none(), "a token that was never issued was accepted: {presented:?}"),
    }
    assert_eq!(fixture.admin.matches(presented), presented == ADMIN_TOKEN);
    if let Ok(key) = tollgate::sealing::Key::parse(presented) {
        let again = tollgate::sealing::Key::parse(&key.to_hex()).expect("a key's hex parses");
        assert_eq!(again.fingerprint(), key.fingerprint());
    }
    if let Some(hash) = tollgate::PolicyHash::parse(presented) {
        assert_eq!(tollgate::PolicyHash::parse(&hash.to_string()), Some(hash));
        assert_eq!(hash.short().len(), 12);
    }
    let _ = tollgate::sessions::validate_id(presented);
}

// ---------------------------------------------------------------------------------------
// decision_validate: what a guest's `route` may return.

/// Builds a `types::Decision` (and sometimes tighter limits) from fuzz data and checks
/// `Decision::validate` against an independent statement of the rules.
pub fn decision_validate(data: &[u8]) {
    use tollgate::policy::bindings::tollgate::policy::types;
    use tollgate::policy::{Decision, PolicyLimits};
    let mut u = Unstructured::new(data);
    let mut limits = PolicyLimits::default();
    if bool::arbitrary(&mut u).unwrap_or(false) {
        limits.max_targets = u.int_in_range(1..=16).unwrap_or(1);
        limits.max_tags = u.int_in_range(0..=32).unwrap_or(0);
        limits.max_tag_bytes = u.int_in_range(0..=128).unwrap_or(0);
        limits.max_trace_bytes = u.int_in_range(0..=512).unwrap_or(0);
    }
    let Ok(raw) = json::decision(&mut u) else { return };
    let original = raw.clone();
    let result = Decision::validate(raw, &limits);
    match (original, result) {
        (types::Decision::Reject(r), Ok(Decision::Reject(v))) => {
            assert!((400..=499).contains(&v.status));
            if (400..=499).contains(&r.status) {
                assert_eq!(v.status, r.status);
            }
            assert!(v.code.len() <= 64 && header_safe(&v.code), "code {:?}", v.code);
            assert!(v.message.len() <= 1024 && r.message.starts_with(&v.message));
        }
        (types::Decision::Reject(_), other) => panic!("a rejection must validate to a rejection: {other:?}"),
        (types::Decision::Route(plan), result) => {
            let expected_ok = !plan.targets.is_empty()
                && plan.targets.len() <= limits.max_targets
                && plan.tags.len() <= limits.max_tags
                && plan.tags.iter().all(|t| t.len() <= limits.max_tag_bytes)
                && plan.targets.iter().all(|t| {
                    !t.provider.is_empty()
                        && !t.model.is_empty()
                        && t.provider.len() <= 256
                        && t.model.len() <= 256
                        && t.credential.len() <= 256
                        && t.temperature.is_none_or(|x| x.is_finite() && (0.0..=2.0).contains(&x))
                });
            match result {
                Ok(Decision::Route(v)) => {
                    assert!(expected_ok, "an out-of-bounds plan validated");
                    assert_eq!(v.targets.len(), plan.targets.len());
                    assert!(v.trace.len() <= limits.max_trace_bytes && header_safe(&v.trace), "trace {:?}", v.trace);
                    assert!(http_header_value_ok(&v.trace));
                    assert_eq!(v.tags, plan.tags);
                    assert_eq!(v.reserve_microdollars, plan.reserve_microdollars);
                }
                Ok(Decision::Reject(_)) => panic!("a plan validated to a rejection"),
                Err(reason) => {
                    assert!(!expected_ok, "a plan within bounds was refused: {reason}");
                    assert!(!reason.is_empty());
                }
            }
        }
    }
}

fn header_safe(text: &str) -> bool {
    text.chars().all(|c| (' '..='~').contains(&c))
}

fn http_header_value_ok(text: &str) -> bool {
    // What `http::HeaderValue::from_str` accepts: visible ASCII, space and tab.
    text.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

// ---------------------------------------------------------------------------------------
// policy_upload: the upload check on raw bytes and on wasm-smith modules and components.

struct UploadFixture {
    runtime: tokio::runtime::Runtime,
    policies: tollgate::PolicyRuntime,
}

/// Upload size limit for the fuzz runtime: small, so the size check is reachable.
pub const UPLOAD_LIMIT: usize = 1 << 20;

fn upload_fixture() -> &'static UploadFixture {
    static FIXTURE: OnceLock<UploadFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).max_blocking_threads(2).build().expect("runtime");
        let limits = tollgate::policy::PolicyLimits { pool_instances: 4, upload_bytes: UPLOAD_LIMIT, compiled_cache: 8, ..Default::default() };
        let store = tollgate::Store::temporary().expect("temporary store");
        let policies = runtime.block_on(async { tollgate::PolicyRuntime::new(limits, store) }).expect("policy runtime");
        UploadFixture { runtime, policies }
    })
}

/// Bytes starting with `\0asm` are uploaded as they are (so a seed corpus of real policies
/// is mutated directly). Otherwise the first byte picks: raw bytes behind a component
/// header, a wasm-smith core module (must be refused as a core module), a wasm-smith core
/// module wrapped in a component, or a wasm-smith component.
pub fn policy_upload(data: &[u8]) {
    if data.starts_with(b"\0asm") {
        check_upload(data.to_vec());
        return;
    }
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut u = Unstructured::new(rest);
    let wasm = match mode % 4 {
        0 => {
            let mut wasm = b"\0asm\x0d\0\x01\0".to_vec();
            wasm.extend_from_slice(rest);
            wasm
        }
        1 => match wasm_smith::Module::new(smith_config(), &mut u) {
            Ok(module) => {
                let wasm = module.to_bytes();
                let outcome = upload(wasm);
                assert!(
                    matches!(outcome, Err(tollgate::PolicyError::Upload(tollgate::policy::UploadError::CoreModule | tollgate::policy::UploadError::TooLarge { .. }))),
                    "a core module must be refused as one: {outcome:?}"
                );
                return;
            }
            Err(_) => return,
        },
        2 => match wasm_smith::Module::new(smith_config(), &mut u) {
            Ok(module) => component_around(&module.to_bytes()),
            Err(_) => return,
        },
        _ => match wasm_smith::Component::new(smith_config(), &mut u) {
            Ok(component) => component.to_bytes(),
            Err(_) => return,
        },
    };
    check_upload(wasm);
}

fn smith_config() -> wasm_smith::Config {
    wasm_smith::Config {
        max_funcs: 16,
        max_instructions: 200,
        max_memories: 2,
        max_tables: 2,
        max_data_segments: 8,
        max_element_segments: 8,
        max_imports: 8,
        max_exports: 8,
        max_types: 16,
        max_components: 2,
        max_instances: 4,
        max_modules: 2,
        max_nesting_depth: 4,
        ..wasm_smith::Config::default()
    }
}

/// A component whose only content is `module` as a core module section.
fn component_around(module: &[u8]) -> Vec<u8> {
    let mut component = wasm_encoder::Component::new();
    component.section(&wasm_encoder::RawSection { id: wasm_encoder::ComponentSectionId::CoreModule as u8, data: module });
    component.finish()
}

fn upload(wasm: Vec<u8>) -> Result<tollgate::PolicyHash, tollgate::PolicyError> {
    let fixture = upload_fixture();
    fixture.runtime.block_on(fixture.policies.upload(wasm))
}

fn check_upload(wasm: Vec<u8>) {
    use tollgate::policy::UploadError;
    let size = wasm.len();
    let header = wasm.get(..8).map(<[u8]>::to_vec);
    let expected_hash = tollgate::PolicyHash::of(&wasm);
    match upload(wasm) {
        Ok(hash) => {
            assert_eq!(hash, expected_hash);
            let fixture = upload_fixture();
            assert!(fixture.runtime.block_on(fixture.policies.exists(&hash)).expect("store"));
        }
        Err(tollgate::PolicyError::Upload(e)) => match e {
            UploadError::TooLarge { size: s, limit } => assert!(s == size && s > limit),
            UploadError::NotWasm => assert!(header.is_none_or(|h| &h[..4] != b"\0asm")),
            UploadError::CoreModule => assert_eq!(header.map(|h| h[4..8].to_vec()), Some(vec![1, 0, 0, 0])),
            UploadError::Compile(m) | UploadError::ForbiddenImport(m) | UploadError::WrongWorld(m) => assert!(!m.is_empty()),
            UploadError::TooComplex { found, limit, .. } => assert!(found > limit),
        },
        Err(other) => panic!("an upload failed other than by refusal: {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// config_parse: the operator's TOML config.

/// `Config::parse` refuses or accepts; never panics.
pub fn config_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(config) = tollgate::Config::parse(&text) {
        let _ = config.policy.validate();
    }
}
