//! Cost of one streamed chunk on its way through the gateway, side by side:
//! `cargo bench -p tollgate-tests --bench stream_chunk`.
//!
//! The chunk is what an OpenAI-compatible upstream sends a stream that asked for usage
//! (OpenAI's field order, `"usage": null`), for a client that did not ask: the gateway
//! must cut the `usage` field, and check the chunk for the tenant's key.
//! - `value`: the pump before the ninth pass of `tests/bench/HOTPATH.md`: the translator
//!   parses the chunk into a `Value`, the redactor walks it, `usage` is removed, and the
//!   chunk is written out again with `format!`.
//! - `relayed`: the pump now: the translator reads the chunk as raw slices, the redactor
//!   searches its text, and the bytes go out less the `usage` field.

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::providers::{ProviderKind, SseEvent, Translated};
use tollgate::redact::Redactor;
use tollgate::Secret;

const CHUNK: &str = r#"{"id":"chatcmpl-9f8e7d6c5b4a","object":"chat.completion.chunk","created":1733600000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}],"usage":null}"#;

fn bench(c: &mut Criterion) {
    let adapter = ProviderKind::Openai.adapter();
    let redactor = Redactor::new(Some(&Secret::new("sk-proj-bench-0123456789abcdef".into())));
    let event = SseEvent { event: None, data: CHUNK.into() };
    let mut group = c.benchmark_group("stream_chunk");
    group.bench_function("value", |b| {
        let mut translator = adapter.stream("m", "r");
        b.iter(|| {
            let mut out = Vec::new();
            for mut chunk in translator.event(&event).unwrap_or_default() {
                redactor.json(&mut chunk);
                if let Some(map) = chunk.as_object_mut() {
                    map.remove("usage");
                }
                out.push(bytes::Bytes::from(format!("data: {chunk}\n\n")));
            }
            out
        })
    });
    group.bench_function("relayed", |b| {
        let mut translator = adapter.stream("m", "r");
        b.iter(|| {
            let Ok(Translated::Relayed(chunk)) = translator.translate(&event) else { panic!("not relayed") };
            assert!(!redactor.may_change_json(chunk.json()));
            let json = chunk.json_without_usage();
            let mut out = Vec::with_capacity(json.len() + 8);
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(json.as_bytes());
            out.extend_from_slice(b"\n\n");
            bytes::Bytes::from(out)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
