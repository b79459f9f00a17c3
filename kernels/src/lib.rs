//! Math only: the kernels of a BitNet b1.58 forward pass.
//!
//! Every optimized kernel has a scalar reference beside it (`*_ref`), and a property
//! test compares them on random inputs, including sizes that are not multiples of a block.

pub mod act_quant;
pub mod attention;
pub mod embd;
pub mod embd_quant;
pub mod float;
pub mod gpu;
pub mod parallel;
pub mod screen;
pub mod sherry;
pub mod ternary;
pub mod walk;

pub use act_quant::{quantize_row, quantize_row_ref, ActScale};
pub use ternary::{TernaryView, BLOCK_BYTES, BLOCK_ELEMS};
