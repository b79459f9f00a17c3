//! The onebit engine: BitNet b1.58 models on the CPU (and, through `onebit-drv`, the
//! Strix Halo iGPU and NPU).

pub mod error;
pub mod format;
pub mod model;
pub mod tokenizer;

pub use error::{Error, Result};
