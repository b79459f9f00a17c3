//! The XDNA2 NPU (`/dev/accel/accel*`, the in-tree amdxdna driver) without XRT.
pub mod ert;
