//! Fuzz target `hf_config`: `onebit_engine::fuzz::hf_config` on every input (see ../README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| onebit_engine::fuzz::hf_config(data));
