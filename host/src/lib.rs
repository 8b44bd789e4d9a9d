//! # Tollgate: a multi-tenant LLM gateway
//!
//! One process serves many tenants. Each tenant's routing, model-selection and budget
//! logic runs as a WebAssembly component ([`policy`]) with capability-scoped access to that
//! tenant's credentials ([`sealing`]), memory ([`memory`]) and spend ([`metering`]).

pub mod catalog;
pub mod clock;
pub mod memory;
pub mod metering;
pub mod policy;
pub mod policy_log;
pub mod providers;
pub mod sealing;
pub mod secret;
pub mod store;
pub mod tenant_scope;
pub mod tenants;

pub use policy::{PolicyError, PolicyHash, PolicyRuntime};
pub use secret::Secret;
pub use store::Store;
