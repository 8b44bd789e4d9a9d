//! Fuzz target `policy_upload`: see `tollgate_fuzz::policy_upload` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::policy_upload(data));
