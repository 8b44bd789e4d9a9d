//! Parsing an upstream's JSON with a bound on the memory the parsed value takes.
//!
//! A `serde_json::Value` costs far more than its text: each value is 32 bytes, arrays grow
//! by doubling, and each object holds at least one 632-byte B-tree node. So 32 MiB of
//! `[0,0,...]` parses into about 1 GiB, and of `[{"":0},...]` into about 3 GiB. A
//! compromised upstream could send that on every call; the body cap alone does not stop it.
//! [`parse`] builds the same `Value` as `serde_json::from_slice` (nesting is still capped
//! at serde_json's 128 levels), charging an estimate of each node's size against a budget,
//! and stops as soon as the budget is spent.

use std::mem::size_of;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::ProviderError;
use crate::upstream::MAX_UPSTREAM_BODY_BYTES;

/// Budget for a whole (non-streamed) answer: four times the body cap. Ordinary answers
/// take 2-16 times their bytes once parsed (logprobs, all small objects, near the top), so
/// this admits any ordinary answer up to 8 MiB, while one request can hold no more than
/// the body and this.
pub const MAX_ANSWER_PARSE_BYTES: usize = 4 * MAX_UPSTREAM_BODY_BYTES;

/// Budget for one streamed event (at most [`super::sse::MAX_EVENT_BYTES`] of text): sixteen
/// times the event cap, for the same reason.
pub const MAX_EVENT_PARSE_BYTES: usize = 16 * super::sse::MAX_EVENT_BYTES;

/// Estimated bytes of one value in its parent (array slot or map entry), with room for a
/// growing `Vec` holding twice what it uses.
const VALUE_BYTES: usize = 2 * size_of::<Value>();
/// Estimated bytes of one object before its entries: one B-tree leaf of 11 key/value slots.
const OBJECT_BYTES: usize = 11 * (size_of::<String>() + size_of::<Value>()) + 16;
/// Estimated bytes of one object entry beyond its value: its key, and a share of the nodes.
const ENTRY_BYTES: usize = size_of::<String>() + OBJECT_BYTES / 11;

/// Parses `bytes` as JSON, refusing text whose parsed form would take more than `budget`
/// bytes (estimated) with [`ProviderError::BadResponse`].
pub fn parse(bytes: &[u8], budget: usize) -> Result<Value, ProviderError> {
    let mut remaining = budget;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = Budgeted(&mut remaining).deserialize(&mut deserializer).and_then(|value| deserializer.end().map(|()| value));
    parsed.map_err(|e| {
        if remaining == 0 {
            ProviderError::BadResponse(format!("the answer would take more than {budget} bytes to parse"))
        } else {
            ProviderError::BadResponse(e.to_string())
        }
    })
}

/// Builds a `Value`, charging each node to the remaining budget.
struct Budgeted<'a>(&'a mut usize);

impl Budgeted<'_> {
    fn charge<E: serde::de::Error>(&mut self, bytes: usize) -> Result<(), E> {
        match self.0.checked_sub(bytes) {
            Some(left) => {
                *self.0 = left;
                Ok(())
            }
            None => {
                *self.0 = 0;
                Err(E::custom("parse budget exceeded"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Budgeted<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(mut self, deserializer: D) -> Result<Value, D::Error> {
        self.charge::<D::Error>(VALUE_BYTES)?;
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budgeted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: serde::de::Error>(mut self, v: &str) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(mut self, v: String) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Budgeted(&mut *self.0))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut access: A) -> Result<Value, A::Error> {
        self.charge::<A::Error>(OBJECT_BYTES)?;
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            self.charge::<A::Error>(ENTRY_BYTES + key.len())?;
            let value = access.next_value_seed(Budgeted(&mut *self.0))?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_json_parses_as_serde_json_does() -> Result<(), ProviderError> {
        let text = r#"{"a":[1,-2,3.5,true,null,"x\u00e9"],"b":{"c":{}},"a":"dup"}"#;
        let expected: Value = serde_json::from_str(text).map_err(|e| ProviderError::BadResponse(e.to_string()))?;
        assert_eq!(parse(text.as_bytes(), 1 << 20)?, expected);
        assert!(matches!(parse(b"{\"a\":1} x", 1 << 20), Err(ProviderError::BadResponse(m)) if m.contains("trailing")));
        assert!(matches!(parse(b"[1,", 1 << 20), Err(ProviderError::BadResponse(_))));
        Ok(())
    }

    #[test]
    fn answers_that_amplify_are_refused_within_the_budget() {
        let budget_error = |r: Result<Value, ProviderError>| matches!(r, Err(ProviderError::BadResponse(m)) if m.contains("bytes to parse"));
        // Just under the body cap of tiny array elements: about 16 million values.
        let mut zeros = String::with_capacity(MAX_UPSTREAM_BODY_BYTES);
        zeros.push('[');
        while zeros.len() < MAX_UPSTREAM_BODY_BYTES - 8 {
            zeros.push_str("0,");
        }
        zeros.push_str("0]");
        assert!(budget_error(parse(zeros.as_bytes(), MAX_ANSWER_PARSE_BYTES)));
        // Small objects cost a B-tree node each.
        let objects = format!("[{}{{}}]", "{\"\":0},".repeat(1 << 20));
        assert!(budget_error(parse(objects.as_bytes(), 64 << 20)));
        // Nesting is still capped by serde_json.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(parse(deep.as_bytes(), MAX_ANSWER_PARSE_BYTES), Err(ProviderError::BadResponse(m)) if m.contains("recursion limit")));
    }

    #[test]
    fn a_large_ordinary_answer_fits_the_budget() -> Result<(), ProviderError> {
        // 2 MiB of logprobs-like small objects.
        let entry = r#"{"token":"Hello","logprob":-0.3125,"bytes":[72,101,108,108,111]},"#;
        let text = format!("{{\"choices\":[{{\"logprobs\":[{}{{}}]}}]}}", entry.repeat((2 << 20) / entry.len()));
        assert!(parse(text.as_bytes(), MAX_ANSWER_PARSE_BYTES)?.pointer("/choices/0/logprobs/1000/token").is_some());
        Ok(())
    }
}
