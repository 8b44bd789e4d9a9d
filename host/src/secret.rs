//! A secret string: redacted in `Debug` and `Display`, zeroized on drop. The only way to
//! read it is [`Secret::expose`], called where the upstream auth header is written.

use zeroize::Zeroizing;

/// A provider key or other secret.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The plaintext. Call only to write it to the upstream request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}
