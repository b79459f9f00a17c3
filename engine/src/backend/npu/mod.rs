//! NPU prefill: a prompt chunk's ternary projections (BitLinears) run on the XDNA2 NPU
//! through `onebit_drv::xdna`, the rest of the forward pass on the CPU, and decoding then
//! continues on the decode surface (the iGPU or the CPU) from the KV cache prefill wrote.
//!
//! * [`prefill::NpuPrefill`]: the [`crate::forward::Projector`] that runs int8 × ternary
//!   GEMMs on the NPU, with the same numbers as `onebit_kernels::ternary::gemm`.
//! * [`artifacts`]: the kernels, built with IRON/Peano (`kernels/npu/`) or, on the
//!   emulator, made in process with the emulated kernel registered as a CPU function.
//! * [`surface::NpuSurface`]: the [`crate::backend::Backend`] for `npu+cpu` and
//!   `npu+igpu`: steps with enough rows per session go to the NPU, the rest to the decode
//!   surface.
//! * [`plan`]: the chunk size and the NPU/decode split, from the roofline model.
//! * [`selftest`]: the artifacts' kernels against the CPU reference, on the device.

pub mod artifacts;
pub mod plan;
pub mod prefill;
pub mod selftest;
pub mod surface;

pub use artifacts::GemmShape;
pub use plan::{Machine, PrefillPlan};
pub use prefill::{ArtifactSource, NpuPrefill};
pub use surface::{DecodeSurface, NpuSession, NpuSurface};
