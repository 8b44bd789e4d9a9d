//! Fuzz target `chat_request`: see `tollgate_fuzz::chat_request` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::chat_request(data));
