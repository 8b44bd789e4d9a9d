//! Test support for Tollgate: guest builds, the mock upstream, and helpers the
//! end-to-end suite in `all/` shares.

pub mod guests;
pub mod language_guests;
pub mod mock;
pub mod policy_requests;
pub mod postgres;
