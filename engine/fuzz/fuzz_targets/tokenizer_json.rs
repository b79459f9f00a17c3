//! Fuzz target `tokenizer_json`: `onebit_engine::fuzz::tokenizer_json` on every input (see ../README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| onebit_engine::fuzz::tokenizer_json(data));
