//! Fuzz target `provider_translate`: see `tollgate_fuzz::provider_translate` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::provider_translate(data));
