//! Fuzz target `http_request`: `onebit_engine::fuzz::http_request` on every input (see ../README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| onebit_engine::fuzz::http_request(data));
