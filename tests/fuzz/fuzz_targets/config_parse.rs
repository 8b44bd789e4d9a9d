//! Fuzz target `config_parse`: see `tollgate_fuzz::config_parse` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::config_parse(data));
