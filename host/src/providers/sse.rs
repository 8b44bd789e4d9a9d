//! An incremental server-sent-events parser with a bound on event size, so a hostile or
//! broken upstream cannot make the gateway buffer without limit.

/// One SSE event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Largest event the parser accepts.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// The stream broke the SSE format or the size bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event stream: {0}")]
pub struct SseError(pub String);

/// Feed bytes in, get whole events out.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    current: SseEvent,
    has_field: bool,
}

impl SseParser {
    /// A new parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.buffer[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset;
            let mut line = &self.buffer[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = std::str::from_utf8(line).map_err(|_| SseError("event stream is not UTF-8".into()))?.to_owned();
            start = end + 1;
            if let Some(event) = self.line(&line)? {
                events.push(event);
            }
        }
        self.buffer.drain(..start);
        if self.buffer.len() + self.current.data.len() > MAX_EVENT_BYTES {
            return Err(SseError(format!("event larger than {MAX_EVENT_BYTES} bytes")));
        }
        Ok(events)
    }

    /// Ends the stream: a final event without its blank line is still delivered.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        if !self.buffer.is_empty() {
            let rest = std::mem::take(&mut self.buffer);
            let line = String::from_utf8(rest).map_err(|_| SseError("event stream is not UTF-8".into()))?;
            self.line(line.trim_end_matches('\r'))?;
        }
        Ok(self.take())
    }

    fn take(&mut self) -> Option<SseEvent> {
        if !self.has_field {
            return None;
        }
        self.has_field = false;
        Some(std::mem::take(&mut self.current))
    }

    fn line(&mut self, line: &str) -> Result<Option<SseEvent>, SseError> {
        if line.is_empty() {
            return Ok(self.take());
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_field && !self.current.data.is_empty() {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_field = true;
            }
            "event" => {
                self.current.event = Some(value.to_owned());
                self.has_field = true;
            }
            _ => {}
        }
        if self.current.data.len() > MAX_EVENT_BYTES {
            return Err(SseError(format!("event larger than {MAX_EVENT_BYTES} bytes")));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_reads() -> Result<(), SseError> {
        let mut p = SseParser::new();
        assert!(p.feed(b"event: ping\ndata: {\"a\"")?.is_empty());
        let events = p.feed(b":1}\r\n\r\ndata: x\ndata: y\n\n: comment\n\n")?;
        assert_eq!(events, vec![
            SseEvent { event: Some("ping".into()), data: "{\"a\":1}".into() },
            SseEvent { event: None, data: "x\ny".into() },
        ]);
        assert_eq!(p.feed(b"data: last")?, vec![]);
        assert_eq!(p.finish()?, Some(SseEvent { event: None, data: "last".into() }));
        Ok(())
    }

    #[test]
    fn oversized_event_is_refused() {
        let mut p = SseParser::new();
        let big = vec![b'a'; MAX_EVENT_BYTES + 10];
        assert!(p.feed(b"data: ").is_ok());
        assert!(p.feed(&big).is_err());
    }
}
