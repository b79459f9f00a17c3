//! The onebit engine: BitNet b1.58 models on the CPU (and, through `onebit-drv`, the
//! Strix Halo iGPU and NPU).

pub mod backend;
pub mod chat;
pub mod embedded;
pub mod error;
pub mod eval;
pub mod format;
pub mod forward;
#[doc(hidden)]
pub mod fuzz;
pub mod generate;
pub mod hub;
pub mod model;
pub mod probe;
pub mod probe_npu;
pub mod sampler;
pub mod server;
pub mod speculate;
pub mod synth;
pub mod tokenizer;

pub use error::{Error, Result};

/// With the `mimalloc` feature, every binary that links the engine allocates through mimalloc:
/// static musl builds would otherwise serialise the serving threads on musl's one malloc lock.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
