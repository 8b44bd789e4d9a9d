//! Keeping a tenant's provider key out of what an upstream sends back.
//!
//! An upstream may echo the key it was sent: in an error message, in an error event in the
//! middle of a stream, or (compromised) anywhere in an answer. Everything an upstream sends
//! passes through a [`Redactor`] for the key of that call before it reaches a client or a
//! log, and is redacted *before* it is cut to size: cutting first could leave the start of
//! a key that straddled the cut.

use std::borrow::Cow;

use serde_json::Value;

use crate::secret::Secret;

/// What a key is replaced by.
pub const REDACTED: &str = "[redacted]";

/// Shortest run of a key's leading bytes treated as the key. An upstream that shortens
/// the key it echoes must not hand a client its start; shorter runs (`sk-proj`) identify
/// only the key's kind and occur in ordinary text.
pub const MIN_KEY_PREFIX_BYTES: usize = 8;

/// Longest upstream error message passed to a client, cut after redaction: upstream
/// bodies are not the client's business.
pub const MAX_UPSTREAM_MESSAGE_BYTES: usize = 512;

/// Redacts one key (or nothing, for a call made without one).
#[derive(Clone, Default)]
pub struct Redactor {
    key: Option<Secret>,
}

impl Redactor {
    /// A redactor for `key`; an empty key redacts nothing.
    pub fn new(key: Option<&Secret>) -> Self {
        Self { key: key.filter(|k| !k.expose().is_empty()).cloned() }
    }

    /// `text` with every occurrence of the key, and of any run of at least
    /// [`MIN_KEY_PREFIX_BYTES`] of its leading bytes, replaced by [`REDACTED`].
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(key) = &self.key else { return Cow::Borrowed(text) };
        let key = key.expose();
        let needle = needle(key);
        let min = needle.len();
        let (bytes, key_bytes) = (text.as_bytes(), key.as_bytes());
        let mut out = String::new();
        let (mut copied, mut from) = (0, 0);
        while let Some(found) = text[from..].find(needle) {
            let start = from + found;
            let mut end = start + min;
            while end < bytes.len() && end - start < key_bytes.len() && bytes[end] == key_bytes[end - start] {
                end += 1;
            }
            // A key that is not ASCII may share the first bytes of a character with the text.
            while !text.is_char_boundary(end) {
                end += 1;
            }
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED);
            copied = end;
            from = end;
        }
        if copied == 0 {
            return Cow::Borrowed(text);
        }
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }

    /// Whether [`Self::json`] could change the value the JSON text `json` holds. It could
    /// not when the text holds neither the key's first [`MIN_KEY_PREFIX_BYTES`] nor a `\u`
    /// escape (which could spell them), and the key has no character that JSON escapes
    /// another way: then every run of the decoded strings is a run of the text. Lets a
    /// caller forward an upstream's JSON as it came, without parsing it.
    pub fn may_change_json(&self, json: &str) -> bool {
        let Some(key) = &self.key else { return false };
        let key = key.expose();
        json.contains(needle(key)) || json.contains("\\u") || key.contains(|c: char| matches!(c, '"' | '\\' | '/') || c.is_control())
    }

    /// An upstream's error message as a client may see it: redacted, then cut to
    /// [`MAX_UPSTREAM_MESSAGE_BYTES`] on a character boundary.
    pub fn message(&self, text: &str) -> String {
        let mut message = self.text(text).into_owned();
        if message.len() > MAX_UPSTREAM_MESSAGE_BYTES {
            let mut end = MAX_UPSTREAM_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        message
    }

    /// Redacts every string, and every object key, in `value`.
    pub fn json(&self, value: &mut Value) {
        if self.key.is_none() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(redacted) = self.text(s) {
                    *s = redacted;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.json(item)),
            Value::Object(map) => {
                let renamed: Vec<String> = map.keys().filter(|k| matches!(self.text(k), Cow::Owned(_))).cloned().collect();
                for old in renamed {
                    if let Some(v) = map.remove(&old) {
                        map.insert(self.text(&old).into_owned(), v);
                    }
                }
                map.values_mut().for_each(|v| self.json(v));
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// The key's first [`MIN_KEY_PREFIX_BYTES`] (to a character's end): the run that is
/// redacted wherever it appears.
fn needle(key: &str) -> &str {
    let mut min = key.len().min(MIN_KEY_PREFIX_BYTES);
    while !key.is_char_boundary(min) {
        min += 1;
    }
    &key[..min]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-test-0123456789abcdef";

    fn redactor() -> Redactor {
        Redactor::new(Some(&Secret::new(KEY.into())))
    }

    #[test]
    fn the_whole_key_and_any_long_enough_start_of_it_are_redacted() {
        let r = redactor();
        assert_eq!(r.text(&format!("bad key {KEY}.")), "bad key [redacted].");
        assert_eq!(r.text(&format!("{KEY}{KEY}")), "[redacted][redacted]");
        // An upstream that shortens the key it echoes.
        assert_eq!(r.text("bad key sk-test-0123..."), "bad key [redacted]...");
        // Shorter than the minimum: only the key's kind.
        assert_eq!(r.text("an sk-test key"), "an sk-test key");
        assert!(matches!(r.text("nothing here"), Cow::Borrowed(_)));
        assert_eq!(Redactor::new(None).text(KEY), KEY);
        assert_eq!(Redactor::new(Some(&Secret::new(String::new()))).text("x"), "x");
    }

    #[test]
    fn a_key_straddling_the_message_cut_leaves_no_part_of_it() {
        let r = redactor();
        for at in MAX_UPSTREAM_MESSAGE_BYTES - KEY.len()..=MAX_UPSTREAM_MESSAGE_BYTES {
            let message = r.message(&format!("{}{KEY} rest", "x".repeat(at)));
            assert!(message.len() <= MAX_UPSTREAM_MESSAGE_BYTES);
            for run in (0..=KEY.len() - MIN_KEY_PREFIX_BYTES).map(|i| &KEY[i..i + MIN_KEY_PREFIX_BYTES]) {
                assert!(!message.contains(run), "key at {at}: {message}");
            }
        }
    }

    #[test]
    fn json_strings_and_keys_are_redacted_everywhere() {
        let mut value = serde_json::json!({"error": {"message": format!("key {KEY}")}, KEY: [1, format!("{KEY}!")]});
        redactor().json(&mut value);
        assert_eq!(value, serde_json::json!({"error": {"message": "key [redacted]"}, "[redacted]": [1, "[redacted]!"]}));
    }

    #[test]
    fn json_text_that_could_hold_the_key_is_told_apart_from_text_that_cannot() {
        let r = redactor();
        assert!(!r.may_change_json(r#"{"choices":[{"delta":{"content":"a \"quoted\" line\n"}}]}"#));
        assert!(!r.may_change_json(r#"{"m":"an sk-test key"}"#), "shorter than the minimum run");
        assert!(r.may_change_json(&format!(r#"{{"m":"bad key {}..."}}"#, &KEY[..MIN_KEY_PREFIX_BYTES])));
        assert!(r.may_change_json(&format!(r#"{{"{KEY}":1}}"#)), "an object key");
        // The key spelled with an escape decodes to the key.
        let escaped = format!(r#"{{"m":"\u0073{}"}}"#, &KEY[1..]);
        assert!(r.may_change_json(&escaped));
        let mut value: Value = serde_json::from_str(&escaped).unwrap_or_default();
        r.json(&mut value);
        assert_eq!(value["m"], REDACTED);
        // A key JSON escapes another way could hide behind that escape.
        assert!(Redactor::new(Some(&Secret::new("sk/slash-0123456789".into()))).may_change_json("{}"));
        assert!(!Redactor::new(None).may_change_json(&format!(r#"{{"m":"{KEY}"}}"#)));
    }
}
