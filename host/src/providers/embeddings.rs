//! The provider side of `POST /v1/embeddings`: one call for one target, the vectors an
//! upstream answered with, and the one encoding OpenAI's `encoding_format: base64` uses
//! (little-endian `f32`s), so every provider's vectors reach the client the same way.

use base64::Engine;
use serde_json::{Map, Value};

use super::{ProviderError, Usage};

/// One embeddings call for one target.
#[derive(Debug)]
pub struct EmbeddingsCall<'a> {
    /// The client's OpenAI-shaped body, already validated; fields the gateway does not
    /// interpret are kept for pass-through upstreams.
    pub body: &'a Map<String, Value>,
    /// The model to ask for (the policy's target, not the client's `model`).
    pub model: &'a str,
    /// The texts to embed, in order.
    pub inputs: &'a [String],
    /// The vector length the client asked for (`dimensions`), if any.
    pub dimensions: Option<u64>,
}

/// What an upstream answered: one vector per input, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// The vectors.
    pub vectors: Vec<Vec<f32>>,
    /// Usage the upstream reported; `None` when it reports none (Gemini), and the
    /// gateway estimates from the input bytes.
    pub usage: Option<Usage>,
}

/// The refusal of a provider kind that has no embeddings endpoint (Anthropic).
pub fn unsupported() -> ProviderError {
    ProviderError::Unsupported("this provider has no embeddings endpoint; route embeddings to an openai, gemini or demo target".into())
}

/// Prompt tokens estimated from input bytes, 4 bytes a token (at least 1), as chat
/// estimates an upstream that reports no usage.
pub fn estimate_tokens(inputs: &[String]) -> u64 {
    let bytes: u64 = inputs.iter().map(|s| s.len() as u64).sum();
    bytes.div_ceil(4).max(1)
}

/// A vector as OpenAI's `base64` encoding: the little-endian `f32`s, base64 (standard).
pub fn encode_base64(vector: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(vector.len() * 4);
    for value in vector {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads a vector an upstream sent either as a JSON array of numbers or as base64
/// little-endian `f32`s.
pub fn decode_vector(value: &Value) -> Result<Vec<f32>, ProviderError> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_f64().map(|f| f as f32).ok_or_else(|| ProviderError::BadResponse("an embedding holds a non-number".into())))
            .collect(),
        Value::String(text) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| ProviderError::BadResponse("an embedding is not valid base64".into()))?;
            if bytes.len() % 4 != 0 {
                return Err(ProviderError::BadResponse("a base64 embedding is not a whole number of f32s".into()));
            }
            Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        _ => Err(ProviderError::BadResponse("an embedding is neither an array nor base64".into())),
    }
}

/// Checks that an upstream answered one vector per input.
pub fn check_count(vectors: &[Vec<f32>], inputs: usize) -> Result<(), ProviderError> {
    if vectors.len() != inputs {
        return Err(ProviderError::BadResponse(format!("upstream answered {} embeddings for {inputs} inputs", vectors.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_little_endian_f32() -> Result<(), ProviderError> {
        let vector = vec![1.0f32, -0.5, 0.25];
        let encoded = encode_base64(&vector);
        // 1.0f32 is 00 00 80 3f little-endian.
        assert!(encoded.starts_with("AACAPw"));
        assert_eq!(decode_vector(&Value::String(encoded))?, vector);
        assert_eq!(decode_vector(&serde_json::json!([1.0, -0.5, 0.25]))?, vector);
        assert!(decode_vector(&Value::String("AAA".into())).is_err());
        Ok(())
    }

    #[test]
    fn anthropic_has_no_embeddings() {
        let body = Map::new();
        let inputs = vec!["a".to_string()];
        let call = EmbeddingsCall { body: &body, model: "claude-haiku", inputs: &inputs, dimensions: None };
        let refused = crate::providers::ProviderKind::Anthropic.adapter().build_embeddings("http://x", &call, None);
        assert!(matches!(refused, Err(ProviderError::Unsupported(m)) if m.contains("no embeddings endpoint")));
    }

    #[test]
    fn estimate_counts_four_bytes_a_token() {
        assert_eq!(estimate_tokens(&["abcdefgh".into(), "x".into()]), 3);
        assert_eq!(estimate_tokens(&[String::new()]), 1);
    }
}
