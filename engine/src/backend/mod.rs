//! Compute backends beside the CPU forward pass (`crate::forward`): the Strix Halo iGPU
//! through raw KFD/AQL.

pub mod igpu;
pub mod jitter;
