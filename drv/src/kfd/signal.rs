//! `amd_signal_t` completion signals, 64 per uncached page (reference §3.6).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use super::device::DevCore;
use super::memory::{AllocOptions, GpuBuffer};
use super::{KfdError, Result};
use crate::sys::hsa::{amd_signal_t, AMD_SIGNAL_KIND_USER, AMD_SIGNAL_VALUE_OFFSET};

/// Completion signals one queue can have in flight at once.
pub const SLOTS: u32 = 64;
const SIGNAL_SIZE: u64 = std::mem::size_of::<amd_signal_t>() as u64;

/// A page of signals.
pub(crate) struct SignalPool {
    buf: GpuBuffer,
    free: Mutex<Vec<u32>>,
    mailbox: u64,
    event_id: u32,
}

/// One signal taken from a pool; its handle is its GPU VA.
pub(crate) struct Signal {
    pool: Arc<SignalPool>,
    slot: u32,
}

impl SignalPool {
    /// Signals that, on completion, write `event_id` to `mailbox` and raise the interrupt.
    pub(crate) fn new(core: &Arc<DevCore>, mailbox: u64, event_id: u32) -> Result<Arc<SignalPool>> {
        let buf = GpuBuffer::alloc_core(
            core,
            SLOTS as u64 * SIGNAL_SIZE,
            AllocOptions::uncached(),
            "signals",
        )?;
        Ok(Arc::new(SignalPool {
            buf,
            free: Mutex::new((0..SLOTS).rev().collect()),
            mailbox,
            event_id,
        }))
    }

    /// A signal with value `initial` (the CP decrements it once per completed packet).
    pub(crate) fn take(self: &Arc<Self>, initial: i64) -> Result<Signal> {
        let slot = self
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .ok_or_else(|| {
                KfdError::Invalid(format!(
                    "all {SLOTS} completion signals of this queue are in flight; wait for some"
                ))
            })?;
        let s = Signal {
            pool: self.clone(),
            slot,
        };
        let v = amd_signal_t {
            kind: AMD_SIGNAL_KIND_USER,
            value: initial,
            event_mailbox_ptr: self.mailbox,
            event_id: self.event_id,
            ..Default::default()
        };
        // SAFETY: the slot is inside our CPU-visible, uncached buffer and no packet refers
        // to it yet (it was free).
        unsafe { std::ptr::write_volatile(s.ptr(), v) };
        Ok(s)
    }
}

impl Signal {
    fn ptr(&self) -> *mut amd_signal_t {
        (self.pool.buf.va() + self.slot as u64 * SIGNAL_SIZE) as *mut amd_signal_t
    }

    /// The handle packets carry.
    pub(crate) fn handle(&self) -> u64 {
        self.pool.buf.va() + self.slot as u64 * SIGNAL_SIZE
    }

    /// Current value (acquire: later reads see what the GPU wrote before decrementing).
    pub(crate) fn value(&self) -> i64 {
        let p = (self.handle() + AMD_SIGNAL_VALUE_OFFSET) as *const AtomicI64;
        // SAFETY: 8-byte aligned i64 inside our live mapping; the GPU updates it atomically.
        unsafe { (*p).load(Ordering::Acquire) }
    }

    /// Marks a signal no packet refers to as complete, so dropping it frees the slot.
    pub(crate) fn cancel(&self) {
        let p = (self.handle() + AMD_SIGNAL_VALUE_OFFSET) as *const AtomicI64;
        // SAFETY: as in `value`.
        unsafe { (*p).store(0, Ordering::Release) };
    }

    /// End timestamp the CP wrote (profiling on), in GPU clock ticks.
    pub(crate) fn timestamps(&self) -> (u64, u64) {
        // SAFETY: as in `value`; plain reads of fields the CP wrote before completing.
        unsafe { ((*self.ptr()).start_ts, (*self.ptr()).end_ts) }
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        // A signal the GPU may still decrement cannot be reused; it stays taken until the
        // pool (the queue) goes away.
        if self.value() <= 0 {
            self.pool
                .free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(self.slot);
        }
    }
}
