//! Fuzz target `sse_parser`: see `tollgate_fuzz::sse_parser` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::sse_parser(data));
