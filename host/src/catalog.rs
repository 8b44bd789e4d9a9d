//! The model catalog: what the operator offers, with prices in integer micro-dollars per
//! million tokens and context windows. A built-in, dated catalog of the public models is
//! the default; the operator's `[[models]]` entries replace or extend it.

use serde::{Deserialize, Serialize};

use crate::policy::ModelInfo;

/// When the built-in prices were taken from the providers' public price pages.
pub const BUILTIN_PRICES_DATE: &str = "2025-08-01";

/// `(provider, model, USD per Mtok in, USD per Mtok out, context window)`.
const BUILTIN: &[(&str, &str, f64, f64, u32)] = &[
    ("openai", "gpt-4o", 2.50, 10.00, 128_000),
    ("openai", "gpt-4o-mini", 0.15, 0.60, 128_000),
    ("openai", "gpt-4-turbo", 10.00, 30.00, 128_000),
    ("openai", "gpt-4.1", 2.00, 8.00, 1_047_576),
    ("openai", "gpt-4.1-mini", 0.40, 1.60, 1_047_576),
    ("openai", "gpt-4.1-nano", 0.10, 0.40, 1_047_576),
    ("openai", "o3", 2.00, 8.00, 200_000),
    ("openai", "o4-mini", 1.10, 4.40, 200_000),
    ("anthropic", "claude-opus-4", 15.00, 75.00, 200_000),
    ("anthropic", "claude-opus-4-1", 15.00, 75.00, 200_000),
    ("anthropic", "claude-sonnet-4", 3.00, 15.00, 200_000),
    ("anthropic", "claude-3-7-sonnet", 3.00, 15.00, 200_000),
    ("anthropic", "claude-3-5-haiku", 0.80, 4.00, 200_000),
    ("anthropic", "claude-haiku", 0.80, 4.00, 200_000),
    ("gemini", "gemini-2.5-pro", 1.25, 10.00, 1_048_576),
    ("gemini", "gemini-2.5-flash", 0.30, 2.50, 1_048_576),
    ("gemini", "gemini-2.5-flash-lite", 0.10, 0.40, 1_048_576),
    ("gemini", "gemini-2.0-flash", 0.10, 0.40, 1_048_576),
    ("demo", "demo-small", 1.00, 2.00, 32_000),
    ("demo", "demo-large", 10.00, 20.00, 200_000),
];

/// One operator catalog entry, as written in the config file (or a tenant's override).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Provider name from `[providers.*]`.
    pub provider: String,
    /// Model name.
    pub model: String,
    /// USD per million prompt tokens.
    pub input_usd_per_mtok: f64,
    /// USD per million completion tokens.
    pub output_usd_per_mtok: f64,
    /// Context window in tokens.
    pub context_window: u32,
}

fn micros(usd: f64) -> u64 {
    (usd * 1_000_000.0).round().max(0.0) as u64
}

impl ModelEntry {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            provider: self.provider.clone(),
            model: self.model.clone(),
            input_microdollars_per_mtok: micros(self.input_usd_per_mtok),
            output_microdollars_per_mtok: micros(self.output_usd_per_mtok),
            context_window: self.context_window,
        }
    }
}

/// The models on offer.
#[derive(Debug, Clone)]
pub struct Catalog {
    models: Vec<ModelInfo>,
}

/// Strips a date or `-latest` suffix: `claude-sonnet-4-20250514` -> `claude-sonnet-4`,
/// `gpt-4o-2024-08-06` -> `gpt-4o`.
pub fn family(model: &str) -> &str {
    let bytes = model.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if let Some(stem) = model.strip_suffix("-latest") {
        return stem;
    }
    if bytes.len() > 9 && bytes[bytes.len() - 9] == b'-' && digits(&bytes[bytes.len() - 8..]) {
        return &model[..model.len() - 9];
    }
    if bytes.len() > 11 {
        let tail = &bytes[bytes.len() - 11..];
        if tail[0] == b'-' && digits(&tail[1..5]) && tail[5] == b'-' && digits(&tail[6..8]) && tail[8] == b'-' && digits(&tail[9..]) {
            return &model[..model.len() - 11];
        }
    }
    model
}

impl Catalog {
    /// The built-in catalog with the operator's entries applied on top (same provider and
    /// model replaces, new ones are added).
    pub fn new(operator: &[ModelEntry]) -> Self {
        let models: Vec<ModelInfo> = BUILTIN
            .iter()
            .map(|&(provider, model, input, output, context_window)| ModelInfo {
                provider: provider.into(),
                model: model.into(),
                input_microdollars_per_mtok: micros(input),
                output_microdollars_per_mtok: micros(output),
                context_window,
            })
            .collect();
        Catalog { models }.with_overrides(operator)
    }

    /// This catalog with `overrides` applied (a tenant's own prices).
    pub fn with_overrides(&self, overrides: &[ModelEntry]) -> Catalog {
        let mut models = self.models.clone();
        for entry in overrides {
            let info = entry.info();
            match models.iter_mut().find(|m| m.provider == info.provider && m.model == info.model) {
                Some(existing) => *existing = info,
                None => models.push(info),
            }
        }
        Catalog { models }
    }

    /// Every model.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// Finds `model` (bare, or `provider/model`), resolving dated variants to their family.
    pub fn lookup(&self, model: &str) -> Option<&ModelInfo> {
        let (provider, name) = match model.split_once('/') {
            Some((p, m)) => (Some(p), m),
            None => (None, model),
        };
        let find = |name: &str| self.models.iter().find(|m| m.model == name && provider.is_none_or(|p| p == m.provider));
        find(name).or_else(|| find(family(name)))
    }

    /// The price of a provider's model, resolving dated variants.
    pub fn price(&self, provider: &str, model: &str) -> Option<&ModelInfo> {
        let find = |name: &str| self.models.iter().find(|m| m.provider == provider && m.model == name);
        find(model).or_else(|| find(family(model)))
    }
}

/// Cost in micro-dollars of a number of prompt and completion tokens at `price`, rounded up
/// so metering never undercharges.
pub fn cost_microdollars(price: &ModelInfo, prompt_tokens: u64, completion_tokens: u64) -> u64 {
    let input = (prompt_tokens as u128) * (price.input_microdollars_per_mtok as u128);
    let output = (completion_tokens as u128) * (price.output_microdollars_per_mtok as u128);
    (input + output).div_ceil(1_000_000).min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_variants_resolve_to_their_family() {
        let catalog = Catalog::new(&[]);
        assert_eq!(catalog.lookup("claude-sonnet-4-20250514").map(|m| m.model.as_str()), Some("claude-sonnet-4"));
        assert_eq!(catalog.lookup("gpt-4o-2024-08-06").map(|m| m.model.as_str()), Some("gpt-4o"));
        assert_eq!(catalog.lookup("anthropic/claude-opus-4").map(|m| m.input_microdollars_per_mtok), Some(15_000_000));
        assert!(catalog.lookup("openai/claude-opus-4").is_none());
        assert!(catalog.lookup("gpt-9").is_none());
    }

    #[test]
    fn operator_entries_override_and_extend() {
        let catalog = Catalog::new(&[
            ModelEntry { provider: "openai".into(), model: "gpt-4o".into(), input_usd_per_mtok: 1.0, output_usd_per_mtok: 1.0, context_window: 1 },
            ModelEntry { provider: "local".into(), model: "llama".into(), input_usd_per_mtok: 0.0, output_usd_per_mtok: 0.0, context_window: 8192 },
        ]);
        assert_eq!(catalog.lookup("gpt-4o").map(|m| m.input_microdollars_per_mtok), Some(1_000_000));
        assert!(catalog.lookup("local/llama").is_some());
    }

    #[test]
    fn cost_rounds_up() {
        let price = ModelInfo { provider: "p".into(), model: "m".into(), input_microdollars_per_mtok: 2_500_000, output_microdollars_per_mtok: 10_000_000, context_window: 1 };
        assert_eq!(cost_microdollars(&price, 1000, 500), 2500 + 5000);
        assert_eq!(cost_microdollars(&price, 1, 0), 3);
    }
}
