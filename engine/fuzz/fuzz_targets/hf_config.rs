//! Fuzz target: `onebit_engine::format::fuzz::hf_config` must never panic on any input.
//! Run: `cd engine/fuzz && cargo +nightly fuzz run hf_config`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = onebit_engine::format::fuzz::hf_config(data);
});
