//! # tollgate-sdk: write Tollgate routing policies in Rust
//!
//! A Tollgate policy decides, for every chat request of one tenant, which provider, model
//! and credential serve it, or refuses it. It runs inside the gateway as a WebAssembly
//! component in a fresh sandbox per call, and sees only its own tenant's credentials
//! (names, never secrets), memory, spend and the operator's model catalog.
//!
//! Implement [`Policy`] and export it with [`export_policy!`]:
//!
//! ```
//! use serde::Deserialize;
//! use tollgate_sdk::{export_policy, Context, Decision, Plan, Policy, Request, Target};
//!
//! #[derive(Deserialize)]
//! struct Config { provider: String, credential: String }
//!
//! struct MyPolicy;
//!
//! impl Policy for MyPolicy {
//!     fn route(request: &Request, context: &Context) -> Decision {
//!         let config: Config = match context.config() {
//!             Ok(config) => config,
//!             Err(e) => return e.into_decision(),
//!         };
//!         if request.model.starts_with("gpt-3") {
//!             return Decision::reject(400, "model_not_allowed", "gpt-3 models are retired");
//!         }
//!         Plan::to(Target::new(config.provider, &request.model, config.credential))
//!             .trace("pass-through")
//!             .into()
//!     }
//! }
//!
//! export_policy!(MyPolicy);
//!
//! // Unit-test it natively, no wasm needed:
//! let mut harness = tollgate_sdk::testing::Harness::new()
//!     .config(r#"{"provider": "openai", "credential": "main"}"#);
//! let decision = harness.route::<MyPolicy>(&Request::new("gpt-4o").user("hello"));
//! assert!(matches!(decision, Decision::Route(plan) if plan.targets[0].credential == "main"));
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (crate type `cdylib`) and
//! upload `target/wasm32-wasip2/release/<name>.wasm` with `tollgate policy upload`.
#![deny(missing_docs)]
// The generated bindings need `unsafe` for the canonical ABI; the SDK's own code has none.
#![cfg_attr(target_arch = "wasm32", allow(unsafe_code))]

mod config;
pub mod host;
mod types;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod glue;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "policy",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_policy_world",
        default_bindings_module: "::tollgate_sdk::bindings",
    });
}

pub use config::ConfigError;
pub use host::{catalog, credentials, log, memory, metering};
pub use types::*;

/// A tenant's routing policy. Implement `route`; `on_complete` defaults to doing nothing.
pub trait Policy {
    /// Decides how to serve one request: a [`Plan`] of targets, or a rejection.
    fn route(request: &Request, context: &Context) -> Decision;

    /// Called after a routed request finished, when its plan asked for it
    /// ([`Plan::notify_complete`]): after the answer was sent, so a request that follows
    /// at once may not see what it writes to memory yet.
    fn on_complete(_completion: &Completion, _context: &Context) {}
}

/// Exports a [`Policy`] implementation as the component's `route` and `on-complete`.
///
/// Use it once, in the policy crate's `lib.rs`. On native targets it expands to nothing,
/// so the same crate unit-tests with [`testing::Harness`].
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        pub struct __TollgateExport;

        #[cfg(target_arch = "wasm32")]
        impl $crate::bindings::Guest for __TollgateExport {
            fn route(
                request: $crate::bindings::tollgate::policy::types::Request,
                context: $crate::bindings::tollgate::policy::types::Context,
            ) -> $crate::bindings::tollgate::policy::types::Decision {
                $crate::glue::route::<$policy>(request, context)
            }

            fn on_complete(
                completion: $crate::bindings::tollgate::policy::types::Completion,
                context: $crate::bindings::tollgate::policy::types::Context,
            ) {
                $crate::glue::on_complete::<$policy>(completion, context)
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_policy_world!(__TollgateExport with_types_in $crate::bindings);
    };
}
