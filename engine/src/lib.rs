//! The onebit engine: BitNet b1.58 models on the CPU (and, through `onebit-drv`, the
//! Strix Halo iGPU and NPU).

pub mod backend;
pub mod chat;
pub mod embedded;
pub mod error;
pub mod eval;
pub mod format;
pub mod forward;
pub mod generate;
pub mod model;
pub mod probe;
pub mod probe_npu;
pub mod sampler;
pub mod server;
pub mod speculate;
pub mod synth;
pub mod tokenizer;

pub use error::{Error, Result};
