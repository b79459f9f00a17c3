//! The XDNA2 NPU (`/dev/accel/accel*`, the in-tree amdxdna driver, Linux 6.14+) without XRT:
//! raw ioctls ([`ioctl`]), safe owning types above them, and the kernel artifact format.
//!
//! The flow of one job (amd-uapi.md §5.4): open the node ([`XdnaDevice`]), create and map
//! the device heap, put the PDI and instruction stream in DEV BOs, create a context over
//! the partition's columns and CONFIG_CU it with the PDI ([`HwContext`]), import the
//! [`SharedBuffer`](crate::buffer::SharedBuffer)s the kernel reads and writes
//! ([`XdnaDevice::import_shared`]), write an ERT START_NPU packet into a command BO
//! ([`ert`]), EXEC_CMD it and wait on the context's timeline syncobj. [`NpuKernel`] does
//! all of it for an [`artifact::NpuKernelArtifact`].

pub mod artifact;
pub mod bo;
pub mod device;
pub mod discover;
pub mod error;
pub mod ert;
pub mod hwctx;
pub mod ioctl;
pub mod kernel;
pub mod memlock;

pub use artifact::{instruction_hash, NpuKernelArtifact};
pub use bo::{Bo, BoKind, DevHeap, NpuRange, NpuShared, SyncDir, XdnaBoType, NPU_IMPORTER};
pub use device::{
    AieMetadata, Clock, DriverVersion, Features, FirmwareVersion, HwctxInfo, PowerMode, XdnaDevice,
};
pub use discover::{find_npus, NpuNode};
pub use error::XdnaError;
pub use hwctx::{HwContext, Priority, Qos};
pub use kernel::{Binding, NpuKernel};
