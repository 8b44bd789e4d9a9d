//! The model catalog: what the operator offers, with prices in integer micro-dollars per
//! million tokens and context windows. A built-in, dated catalog of the public models is
//! the default; the operator's `[[models]]` entries replace or extend it.

use serde::{Deserialize, Serialize};

use crate::policy::ModelInfo;
use crate::providers::Usage;

/// When the built-in prices were taken from the providers' public price pages.
pub const BUILTIN_PRICES_DATE: &str = "2025-08-01";

/// `(provider, model, USD per Mtok in, out, cached input (cache read), cache write,
/// context window)`. OpenAI and Gemini bill cache reads at a discount and have no write
/// charge (write = input); Anthropic bills reads at 0.1x and 5-minute writes at 1.25x input.
#[rustfmt::skip]
const BUILTIN: &[(&str, &str, f64, f64, f64, f64, u32)] = &[
    ("openai", "gpt-4o", 2.50, 10.00, 1.25, 2.50, 128_000),
    ("openai", "gpt-4o-mini", 0.15, 0.60, 0.075, 0.15, 128_000),
    ("openai", "gpt-4-turbo", 10.00, 30.00, 10.00, 10.00, 128_000),
    ("openai", "gpt-4.1", 2.00, 8.00, 0.50, 2.00, 1_047_576),
    ("openai", "gpt-4.1-mini", 0.40, 1.60, 0.10, 0.40, 1_047_576),
    ("openai", "gpt-4.1-nano", 0.10, 0.40, 0.025, 0.10, 1_047_576),
    ("openai", "o3", 2.00, 8.00, 0.50, 2.00, 200_000),
    ("openai", "o4-mini", 1.10, 4.40, 0.275, 1.10, 200_000),
    ("anthropic", "claude-opus-4", 15.00, 75.00, 1.50, 18.75, 200_000),
    ("anthropic", "claude-opus-4-1", 15.00, 75.00, 1.50, 18.75, 200_000),
    ("anthropic", "claude-sonnet-4", 3.00, 15.00, 0.30, 3.75, 200_000),
    ("anthropic", "claude-3-7-sonnet", 3.00, 15.00, 0.30, 3.75, 200_000),
    ("anthropic", "claude-3-5-haiku", 0.80, 4.00, 0.08, 1.00, 200_000),
    ("anthropic", "claude-haiku", 0.80, 4.00, 0.08, 1.00, 200_000),
    ("gemini", "gemini-2.5-pro", 1.25, 10.00, 0.31, 1.25, 1_048_576),
    ("gemini", "gemini-2.5-flash", 0.30, 2.50, 0.075, 0.30, 1_048_576),
    ("gemini", "gemini-2.5-flash-lite", 0.10, 0.40, 0.025, 0.10, 1_048_576),
    ("gemini", "gemini-2.0-flash", 0.10, 0.40, 0.025, 0.10, 1_048_576),
    // Embedding models (`POST /v1/embeddings`): billed per input token, no output.
    ("openai", "text-embedding-3-small", 0.02, 0.00, 0.02, 0.02, 8_191),
    ("openai", "text-embedding-3-large", 0.13, 0.00, 0.13, 0.13, 8_191),
    ("openai", "text-embedding-ada-002", 0.10, 0.00, 0.10, 0.10, 8_191),
    ("gemini", "gemini-embedding-001", 0.15, 0.00, 0.15, 0.15, 2_048),
    // Listed free of charge by Google.
    ("gemini", "text-embedding-004", 0.00, 0.00, 0.00, 0.00, 2_048),
    ("demo", "demo-small", 1.00, 2.00, 1.00, 1.00, 32_000),
    ("demo", "demo-large", 10.00, 20.00, 10.00, 10.00, 200_000),
    ("demo", "demo-embed", 0.02, 0.00, 0.02, 0.02, 8_191),
];

/// One operator catalog entry, as written in the config file (or a tenant's override).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// USD per million prompt tokens read from the provider's cache; the input price when
    /// absent.
    #[serde(default)]
    pub cached_input_usd_per_mtok: Option<f64>,
    /// USD per million prompt tokens written to the provider's cache (Anthropic); the
    /// input price when absent.
    #[serde(default)]
    pub cache_write_usd_per_mtok: Option<f64>,
}

/// What a model costs, in micro-dollars per million tokens of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    /// Prompt tokens not served from or written to a cache.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// Prompt tokens read from the provider's cache.
    pub cached_input: u64,
    /// Prompt tokens written to the provider's cache.
    pub cache_write: u64,
}

impl Price {
    /// The dearest rate a prompt token can be billed at (the reservation's worst case).
    pub fn worst_input(&self) -> u64 {
        self.input.max(self.cached_input).max(self.cache_write)
    }
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

    fn cache_prices(&self) -> CachePrices {
        let input = micros(self.input_usd_per_mtok);
        CachePrices {
            cached_input: self.cached_input_usd_per_mtok.map_or(input, micros),
            cache_write: self.cache_write_usd_per_mtok.map_or(input, micros),
        }
    }
}

/// Cache read and write prices of one model (not part of the policy's `model-info`).
#[derive(Debug, Clone, Copy)]
struct CachePrices {
    cached_input: u64,
    cache_write: u64,
}

/// The models on offer.
#[derive(Debug, Clone)]
pub struct Catalog {
    models: Vec<ModelInfo>,
    /// Parallel to `models`.
    cache_prices: Vec<CachePrices>,
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
        let models = BUILTIN
            .iter()
            .map(|&(provider, model, input, output, cached_input, cache_write, context_window)| {
                let info = ModelInfo {
                    provider: provider.into(),
                    model: model.into(),
                    input_microdollars_per_mtok: micros(input),
                    output_microdollars_per_mtok: micros(output),
                    context_window,
                };
                (info, CachePrices { cached_input: micros(cached_input), cache_write: micros(cache_write) })
            })
            .unzip();
        let (models, cache_prices) = models;
        Catalog { models, cache_prices }.with_overrides(operator)
    }

    /// This catalog with `overrides` applied (a tenant's own prices).
    pub fn with_overrides(&self, overrides: &[ModelEntry]) -> Catalog {
        let mut catalog = self.clone();
        for entry in overrides {
            let info = entry.info();
            match catalog.models.iter().position(|m| m.provider == info.provider && m.model == info.model) {
                Some(at) => {
                    catalog.models[at] = info;
                    catalog.cache_prices[at] = entry.cache_prices();
                }
                None => {
                    catalog.models.push(info);
                    catalog.cache_prices.push(entry.cache_prices());
                }
            }
        }
        catalog
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
    pub fn price(&self, provider: &str, model: &str) -> Option<Price> {
        let find = |name: &str| self.models.iter().position(|m| m.provider == provider && m.model == name);
        let at = find(model).or_else(|| find(family(model)))?;
        let (info, cache) = (&self.models[at], self.cache_prices[at]);
        Some(Price {
            input: info.input_microdollars_per_mtok,
            output: info.output_microdollars_per_mtok,
            cached_input: cache.cached_input,
            cache_write: cache.cache_write,
        })
    }
}

/// Cost in micro-dollars of `usage` at `price`, rounded up so metering never
/// undercharges. `prompt_tokens` includes the cached and cache-written ones (as every
/// adapter reports it); those are billed at their own rates.
pub fn cost_microdollars(price: &Price, usage: &Usage) -> u64 {
    let cached = usage.cached_tokens.min(usage.prompt_tokens);
    let written = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
    let plain = usage.prompt_tokens - cached - written;
    let total = plain as u128 * price.input as u128
        + cached as u128 * price.cached_input as u128
        + written as u128 * price.cache_write as u128
        + usage.completion_tokens as u128 * price.output as u128;
    total.div_ceil(1_000_000).min(u64::MAX as u128) as u64
}

/// The most `prompt_tokens` and `completion_tokens` can cost at `price`, whatever part
/// of the prompt the provider reads from or writes to its cache.
pub fn worst_case_microdollars(price: &Price, prompt_tokens: u64, completion_tokens: u64) -> u64 {
    let total = prompt_tokens as u128 * price.worst_input() as u128 + completion_tokens as u128 * price.output as u128;
    total.div_ceil(1_000_000).min(u64::MAX as u128) as u64
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
            ModelEntry { provider: "openai".into(), model: "gpt-4o".into(), input_usd_per_mtok: 1.0, output_usd_per_mtok: 1.0, context_window: 1, cached_input_usd_per_mtok: None, cache_write_usd_per_mtok: None },
            ModelEntry { provider: "local".into(), model: "llama".into(), input_usd_per_mtok: 0.0, output_usd_per_mtok: 0.0, context_window: 8192, cached_input_usd_per_mtok: Some(0.0), cache_write_usd_per_mtok: None },
        ]);
        assert_eq!(catalog.lookup("gpt-4o").map(|m| m.input_microdollars_per_mtok), Some(1_000_000));
        assert!(catalog.lookup("local/llama").is_some());
    }

    fn usage(prompt: u64, completion: u64, cached: u64, written: u64) -> Usage {
        Usage { prompt_tokens: prompt, completion_tokens: completion, cached_tokens: cached, cache_write_tokens: written }
    }

    #[test]
    fn cost_rounds_up() {
        let price = Price { input: 2_500_000, output: 10_000_000, cached_input: 2_500_000, cache_write: 2_500_000 };
        assert_eq!(cost_microdollars(&price, &usage(1000, 500, 0, 0)), 2500 + 5000);
        assert_eq!(cost_microdollars(&price, &usage(1, 0, 0, 0)), 3);
    }

    #[test]
    fn cached_prompt_tokens_are_billed_at_the_cache_rates() -> Result<(), String> {
        let catalog = Catalog::new(&[]);
        // gpt-4o: $2.50 in, $1.25 cached, $10 out per Mtok.
        let gpt = catalog.price("openai", "gpt-4o").ok_or("gpt-4o has a price")?;
        assert_eq!(cost_microdollars(&gpt, &usage(1_000_000, 0, 800_000, 0)), 200_000 * 5 / 2 + 800_000 * 5 / 4);
        // claude-sonnet-4: $3 in, $0.30 cache read, $3.75 cache write.
        let claude = catalog.price("anthropic", "claude-sonnet-4-20250514").ok_or("sonnet has a price")?;
        assert_eq!(cost_microdollars(&claude, &usage(1_000_000, 0, 500_000, 400_000)), 300_000 + 150_000 + 1_500_000);
        // The worst case assumes every prompt token at the dearest prompt rate.
        assert_eq!(worst_case_microdollars(&claude, 1_000_000, 0), 3_750_000);
        // Counts an upstream made up (cached more than the prompt) never underflow.
        assert_eq!(cost_microdollars(&claude, &usage(10, 0, 50, 50)), 3);
        Ok(())
    }
}
