//! Fuzz target `safetensors`: `onebit_engine::fuzz::safetensors` on every input (see ../README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| onebit_engine::fuzz::safetensors(data));
