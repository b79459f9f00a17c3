//! Fuzz target: `onebit_engine::format::fuzz::safetensors` must never panic on any input.
//! Run: `cd engine/fuzz && cargo +nightly fuzz run safetensors`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = onebit_engine::format::fuzz::safetensors(data);
});
