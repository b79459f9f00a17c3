//! Fuzz target: `onebit_engine::format::fuzz::gguf` must never panic on any input.
//! Run: `cd engine/fuzz && cargo +nightly fuzz run gguf`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = onebit_engine::format::fuzz::gguf(data);
});
