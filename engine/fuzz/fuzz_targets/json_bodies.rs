//! Fuzz target `json_bodies`: `onebit_engine::fuzz::json_bodies` on every input (see ../README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| onebit_engine::fuzz::json_bodies(data));
