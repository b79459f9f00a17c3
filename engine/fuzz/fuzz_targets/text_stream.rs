//! Fuzz target `text_stream`: `onebit_engine::fuzz::text_stream` on every input (see ../README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| onebit_engine::fuzz::text_stream(data));
