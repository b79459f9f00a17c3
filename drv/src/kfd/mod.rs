//! The iGPU through raw `/dev/kfd` and the render node (no ROCm): device bring-up,
//! GPU memory, events, AQL queues, dispatch with completion signals and a hang watchdog.
//!
//! Bring-up follows reference §1.13: topology → open `/dev/kfd` → GET_VERSION →
//! open the render node → ACQUIRE_VM → apertures → event page + events → queues.

pub mod aql;
pub mod cwsr;
mod device;
mod dispatch;
mod events;
mod memory;
mod queue;
mod shared;
mod signal;

use std::time::Duration;

use crate::buffer::BufferError;
use crate::error::SysError;
use crate::topology::TopologyError;

pub use aql::{AqlHeader, DispatchArgs, FenceScope, Packet};
pub use device::{Apertures, ClockCounters, Device, DeviceOptions, KfdVersion};
pub use dispatch::{Batch, Completion};
pub use events::{EventKind, WaitOutcome};
pub use memory::{AllocOptions, GpuBuffer};
pub use queue::{AqlQueue, QueueOptions};
pub use shared::{SharedGpuBuffer, KFD_IMPORTER};
pub use signal::SLOTS as COMPLETION_SIGNALS;

/// Oldest KFD uapi we accept: 1.14 (RUNTIME_ENABLE, `last_event_age`, EXPORT_DMABUF are
/// all older than that, reference §1.3).
pub const MIN_VERSION: (u32, u32) = (1, 14);

/// Errors of the KFD layer.
#[derive(Debug, thiserror::Error)]
pub enum KfdError {
    /// A kernel call failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// Topology problem (no KFD, no GPU).
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// A shared-buffer problem.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// The kernel's KFD is older than we need.
    #[error(
        "KFD uapi {major}.{minor} is older than the required {}.{} (needed for RUNTIME_ENABLE, \
         event ages and dma-buf export); update the kernel (6.8+)",
        MIN_VERSION.0, MIN_VERSION.1
    )]
    Version {
        /// Reported major.
        major: u32,
        /// Reported minor.
        minor: u32,
    },
    /// A dispatch did not complete within its budget, or the GPU reported a fault while
    /// waiting; the queue was destroyed.
    #[error(
        "GPU hang: queue {queue_id} did not complete packet {index} after {budget:?} \
         (read index {rptr}, write index {wptr}); the queue was destroyed — create a new one \
         to continue{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") }
    )]
    Hang {
        /// KFD queue id.
        queue_id: u32,
        /// Packet index waited for.
        index: u64,
        /// `read_dispatch_id` at timeout.
        rptr: u64,
        /// `write_dispatch_id` at timeout.
        wptr: u64,
        /// How long it was waited for (the budget, or less when a fault cut it short).
        budget: Duration,
        /// A memory-exception or HW-exception event seen meanwhile, if any.
        detail: String,
    },
    /// The queue was destroyed (after a hang) and cannot take work.
    #[error("queue {queue_id} was destroyed after a hang; create a new queue")]
    QueueDead {
        /// KFD queue id.
        queue_id: u32,
    },
    /// The ring stayed full.
    #[error(
        "queue {queue_id} ring is full ({size} packets in flight) and the GPU is not consuming it"
    )]
    QueueFull {
        /// KFD queue id.
        queue_id: u32,
        /// Ring size in packets.
        size: u32,
    },
    /// Arguments the kernel or the hardware would reject.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// Result alias of this layer.
pub type Result<T, E = KfdError> = std::result::Result<T, E>;
