//! KFD events: the user-allocated event page (the "dGPU path" libhsakmt and tinygrad take
//! on current GPUs, APUs included) and the device's signal/memory/HW-exception events.

use std::time::Duration;

use std::sync::Arc;

use super::device::{DevCore, Device};
use super::memory::{AllocOptions, GpuBuffer};
use super::Result;
use crate::sys::kfd as sys;

/// Event kinds this driver creates. `KFD_IOC_EVENT_*` is an enum in `kfd_ioctl.h`
/// (`event_type` holds one value, not a bit word), so this stays an enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Completion interrupts (signals with a mailbox).
    Signal,
    /// GPU page faults.
    Memory,
    /// GPU resets.
    HwException,
}

impl EventKind {
    fn raw(self) -> u32 {
        match self {
            EventKind::Signal => sys::KFD_IOC_EVENT_SIGNAL,
            EventKind::Memory => sys::KFD_IOC_EVENT_MEMORY,
            EventKind::HwException => sys::KFD_IOC_EVENT_HW_EXCEPTION,
        }
    }
}

/// Result of a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// An event fired.
    Fired,
    /// The timeout passed.
    TimedOut,
}

/// One KFD event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Event {
    pub(crate) id: u32,
    pub(crate) slot: u32,
    pub(crate) kind: EventKind,
}

/// The event page plus the three events every device gets.
pub(crate) struct Interrupts {
    // Not a `Device`: the device holds this struct, and must not be kept alive by it.
    core: Arc<DevCore>,
    page: GpuBuffer,
    pub(crate) signal: Event,
    pub(crate) memory: Event,
    pub(crate) hw: Event,
}

/// Bytes of the event page: one u64 slot per event.
const EVENT_PAGE_SIZE: u64 = sys::KFD_SIGNAL_EVENT_LIMIT as u64 * 8;

impl Interrupts {
    pub(crate) fn new(dev: &Device) -> Result<Interrupts> {
        let mut page = GpuBuffer::alloc_core(
            dev.core(),
            EVENT_PAGE_SIZE,
            AllocOptions::uncached(),
            "event page",
        )?;
        // The first CREATE_EVENT registers the page; after that the kernel refuses to free
        // it, so the process teardown releases it.
        let (core, node) = (dev.core(), dev.node().index);
        let signal = create(core, node, EventKind::Signal, true, page.handle())?;
        page.keep_until_process_exit();
        let memory = create(core, node, EventKind::Memory, false, 0)
            .inspect_err(|_| destroy(core, signal))?;
        let hw = create(core, node, EventKind::HwException, false, 0).inspect_err(|_| {
            destroy(core, signal);
            destroy(core, memory);
        })?;
        Ok(Interrupts {
            core: core.clone(),
            page,
            signal,
            memory,
            hw,
        })
    }

    /// GPU/CPU address of `event`'s slot (the mailbox a signal points at).
    pub(crate) fn mailbox(&self, e: Event) -> u64 {
        self.page.va() + e.slot as u64 * 8
    }

    /// WAIT_EVENTS on any of `events` for up to `timeout`.
    pub(crate) fn wait_any(&self, events: &[Event], timeout: Duration) -> Result<WaitOutcome> {
        let mut data: Vec<sys::kfd_event_data> = events
            .iter()
            .map(|e| sys::kfd_event_data {
                event_id: e.id,
                ..Default::default()
            })
            .collect();
        let ms = timeout.as_millis().clamp(0, u32::MAX as u128 - 1) as u32;
        let mut a = sys::kfd_ioctl_wait_events_args {
            events_ptr: data.as_mut_ptr() as u64,
            num_events: data.len() as u32,
            wait_for_all: 0,
            timeout: ms,
            wait_result: 0,
        };
        self.core
            .ioctl("AMDKFD_IOC_WAIT_EVENTS", sys::wait_events, &mut a)?;
        Ok(match a.wait_result {
            sys::KFD_IOC_WAIT_RESULT_COMPLETE => WaitOutcome::Fired,
            _ => WaitOutcome::TimedOut,
        })
    }

    /// SET_EVENT (wakes waiters; used to cancel waits).
    pub(crate) fn set(&self, e: Event) -> Result<()> {
        let mut a = sys::kfd_ioctl_set_event_args {
            event_id: e.id,
            pad: 0,
        };
        self.core
            .ioctl("AMDKFD_IOC_SET_EVENT", sys::set_event, &mut a)?;
        Ok(())
    }

    /// Non-blocking: has a fault event fired? Returns a description for hang reports.
    pub(crate) fn fault_detail(&self) -> String {
        let mut out = Vec::new();
        for e in [self.memory, self.hw] {
            if let Ok(WaitOutcome::Fired) = self.wait_any(&[e], Duration::ZERO) {
                out.push(match e.kind {
                    EventKind::Memory => "a GPU memory fault was reported",
                    _ => "a GPU reset/HW exception was reported",
                });
                let mut r = sys::kfd_ioctl_reset_event_args {
                    event_id: e.id,
                    pad: 0,
                };
                let _ = self
                    .core
                    .ioctl("AMDKFD_IOC_RESET_EVENT", sys::reset_event, &mut r);
            }
        }
        out.join("; ")
    }
}

fn create(
    core: &DevCore,
    node: u32,
    kind: EventKind,
    auto_reset: bool,
    page_handle: u64,
) -> Result<Event> {
    let mut a = sys::kfd_ioctl_create_event_args {
        event_page_offset: page_handle,
        event_type: kind.raw(),
        auto_reset: auto_reset as u32,
        node_id: node,
        ..Default::default()
    };
    core.ioctl("AMDKFD_IOC_CREATE_EVENT", sys::create_event, &mut a)?;
    Ok(Event {
        id: a.event_id,
        slot: a.event_slot_index,
        kind,
    })
}

fn destroy(core: &DevCore, e: Event) {
    let mut a = sys::kfd_ioctl_destroy_event_args {
        event_id: e.id,
        pad: 0,
    };
    if let Err(err) = core.ioctl("AMDKFD_IOC_DESTROY_EVENT", sys::destroy_event, &mut a) {
        tracing::warn!(error = %err, "destroy event {}", e.id);
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        for e in [self.signal, self.memory, self.hw] {
            destroy(&self.core, e);
        }
    }
}
