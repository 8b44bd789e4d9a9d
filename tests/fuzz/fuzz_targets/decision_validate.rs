//! Fuzz target `decision_validate`: see `tollgate_fuzz::decision_validate` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::decision_validate(data));
