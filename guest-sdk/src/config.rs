//! Reading the tenant's JSON policy configuration into a typed struct.

use serde::de::DeserializeOwned;

use crate::types::Context;

/// The tenant's policy configuration did not match what the policy expects.
#[derive(Debug)]
pub struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid policy config: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Context {
    /// Parses the tenant's policy configuration. An empty string reads as `{}`.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let text = if self.config.trim().is_empty() { "{}" } else { &self.config };
        serde_json::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }
}

impl ConfigError {
    /// The rejection a policy should answer with when its configuration is unusable:
    /// a 400-class refusal that names the problem without leaking anything else.
    pub fn into_decision(self) -> crate::Decision {
        crate::Decision::reject(400, "invalid_policy_config", self.to_string())
    }
}
