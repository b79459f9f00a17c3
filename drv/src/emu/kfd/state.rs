//! The emulated KFD process: buffer objects, the GPU VA space, events, queues.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::RawFd;

use crate::emu::host::{Backing, DmaBufRef, HostMap};

/// Backing memory of a BO.
pub(crate) enum Mem {
    /// Pages the emulated "kernel" allocated (GTT/VRAM): a memfd the render node mmaps.
    Own(Backing),
    /// An imported dma-buf, mapped contiguously for the emulator.
    Import { map: HostMap, _buf: DmaBufRef },
    /// USERPTR: the process's own pages.
    User(usize),
}

pub(crate) struct Bo {
    pub(crate) va: u64,
    pub(crate) size: u64,
    pub(crate) flags: u32,
    pub(crate) mem: Mem,
    pub(crate) mapped: bool,
    pub(crate) mmap_offset: u64,
    /// Live queues referencing it (the kernel refuses to unmap/free those).
    pub(crate) queue_refs: u32,
    pub(crate) event_page: bool,
}

impl Bo {
    pub(crate) fn host(&self) -> *mut u8 {
        match &self.mem {
            Mem::Own(b) => b.ptr(),
            Mem::Import { map, .. } => map.ptr(),
            Mem::User(p) => *p as *mut u8,
        }
    }
}

pub(crate) struct Ev {
    pub(crate) kind: u32,
    pub(crate) auto_reset: bool,
    pub(crate) signaled: bool,
    pub(crate) age: u64,
}

pub(crate) struct Q {
    pub(crate) ring_va: u64,
    pub(crate) ring_packets: u64,
    pub(crate) rptr_va: u64,
    pub(crate) wptr_va: u64,
    pub(crate) doorbell_index: usize,
    pub(crate) bos: Vec<u64>,
    /// Set when a dispatched kernel failed: the CP stops this queue, like a GPU fault.
    pub(crate) fault: Option<String>,
}

/// Everything the emulated KFD knows about the (single) process.
#[derive(Default)]
pub(crate) struct KState {
    pub(crate) kfd_fds: HashSet<RawFd>,
    pub(crate) render_fds: HashSet<RawFd>,
    pub(crate) acquired: Option<RawFd>,
    pub(crate) runtime_enabled: bool,
    pub(crate) next_idr: u32,
    pub(crate) bos: HashMap<u64, Bo>,
    pub(crate) events: BTreeMap<u32, Ev>,
    pub(crate) next_signal_slot: u32,
    pub(crate) next_other_event: u32,
    pub(crate) event_page: Option<u64>,
    pub(crate) kernel_event_page: Option<Backing>,
    pub(crate) queues: BTreeMap<u32, Q>,
    pub(crate) next_queue: u32,
    pub(crate) doorbells: Option<Backing>,
    pub(crate) symbols: HashMap<u64, String>,
    pub(crate) hang: bool,
    pub(crate) hung_queues: HashSet<u32>,
    pub(crate) allocated: u64,
    pub(crate) closed_with: Vec<String>,
    /// Cache state of each queue the CP has run packets of (emulated CP's coherence rules).
    pub(crate) coherence: HashMap<u32, super::coherence::Coherence>,
    /// Every queue fault the CP raised, as (queue id, reason), kept after the queue is gone.
    pub(crate) fault_log: Vec<(u32, String)>,
}

impl KState {
    /// Emulator pointer for GPU VA `va..va+len` if a GPU-mapped BO covers it.
    pub(crate) fn translate(&self, va: u64, len: u64) -> Option<*mut u8> {
        self.bos.values().find_map(|b| {
            (b.mapped && va >= b.va && va.checked_add(len)? <= b.va + b.size)
                // SAFETY (of the later use): offset within the BO's host view.
                .then(|| b.host().wrapping_add((va - b.va) as usize))
        })
    }

    /// The BO whose GPU range starts exactly at `va` and is mapped.
    pub(crate) fn mapped_bo_at(&self, va: u64) -> Option<(u64, &Bo)> {
        self.bos
            .iter()
            .find(|(_, b)| b.mapped && b.va == va)
            .map(|(h, b)| (*h, b))
    }

    /// The mapped BO containing `va`.
    pub(crate) fn mapped_bo_containing(&self, va: u64) -> Option<(u64, &Bo)> {
        self.bos
            .iter()
            .find(|(_, b)| b.mapped && va >= b.va && va < b.va + b.size)
            .map(|(h, b)| (*h, b))
    }

    /// Whether `va..va+size` overlaps any BO's GPU range.
    pub(crate) fn overlaps(&self, va: u64, size: u64) -> bool {
        self.bos
            .values()
            .any(|b| va < b.va + b.size && b.va < va + size)
    }

    /// What the process still holds, as sentences.
    pub(crate) fn live(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut bos: Vec<_> = self.bos.iter().filter(|(_, b)| !b.event_page).collect();
        bos.sort_by_key(|(h, _)| **h);
        for (h, b) in bos {
            out.push(format!(
                "KFD BO handle {h:#x} at {:#x}+{:#x}{} never freed",
                b.va,
                b.size,
                if b.mapped { " (still GPU-mapped)" } else { "" }
            ));
        }
        for id in self.queues.keys() {
            out.push(format!("KFD queue {id} never destroyed"));
        }
        for id in self.events.keys() {
            out.push(format!("KFD event {id} never destroyed"));
        }
        out
    }
}
