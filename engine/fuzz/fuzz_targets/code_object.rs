//! Fuzz target `code_object`: `onebit_engine::fuzz::code_object` on every input (see ../README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| onebit_engine::fuzz::code_object(data));
