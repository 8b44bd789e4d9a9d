//! # Tollgate: a multi-tenant LLM gateway
//!
//! One process serves many tenants. Each tenant's routing, model-selection and budget
//! logic runs as a WebAssembly component ([`policy`]) with capability-scoped access to that
//! tenant's credentials ([`sealing`]), memory ([`memory`]) and spend ([`metering`]).
//! [`server`] is the OpenAI-compatible front; [`providers`] speak each upstream's format.

pub mod app;
pub mod audit;
pub mod backup;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decision_inputs;
pub mod error;
pub mod memory;
pub mod metering;
pub mod metrics;
pub mod policy;
pub mod policy_deletion;
pub mod policy_log;
pub mod postgres;
pub mod providers;
pub mod ratelimit;
pub mod redact;
pub mod sealing;
pub mod secret;
pub mod server;
pub mod sessions;
pub mod stored_responses;
pub mod store;
pub mod tenant_lifecycle;
pub mod tenant_scope;
pub mod tenant_tombstones;
pub mod telemetry;
pub mod tenants;
pub mod tokens;
pub mod upstream;

pub use app::App;
pub use config::Config;
pub use error::GatewayError;
pub use policy::{PolicyError, PolicyHash, PolicyRuntime};
pub use secret::Secret;
pub use store::Store;
