//! The emulated command processor: a thread that watches doorbells, consumes AQL packets,
//! runs registered kernels, decrements completion signals and raises their events.

use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::coherence::{check_group_segment, Coherence};
use super::state::KState;
use super::Shared;
use crate::sys::hsa::*;

/// How often the CP looks at doorbells.
const POLL: Duration = Duration::from_micros(100);

pub(super) fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Starts the CP thread if it is not running (it stops itself when no queue is left).
pub(super) fn ensure_running(sh: &Arc<Shared>) {
    if sh.cp_running.swap(true, Ordering::AcqRel) {
        return;
    }
    let weak = Arc::downgrade(sh);
    std::thread::Builder::new()
        .name("emu-kfd-cp".into())
        .spawn(move || run(weak))
        .expect("spawn the emulated CP thread");
}

fn run(weak: Weak<Shared>) {
    loop {
        let Some(sh) = weak.upgrade() else { return };
        {
            let mut st = sh.lock();
            if st.queues.is_empty() {
                sh.cp_running.store(false, Ordering::Release);
                return;
            }
            if !st.hang {
                let ids: Vec<u32> = st.queues.keys().copied().collect();
                for id in ids {
                    step(&sh, &mut st, id);
                }
            }
        }
        drop(sh);
        std::thread::sleep(POLL);
    }
}

/// Marks event `id` fired and wakes waiters; false if there is no such event.
pub(super) fn fire_event(sh: &Shared, st: &mut KState, id: u32) -> bool {
    match st.events.get_mut(&id) {
        Some(e) => {
            e.signaled = true;
            e.age += 1;
            sh.events_cv.notify_all();
            true
        }
        None => false,
    }
}

fn fire_kind(sh: &Shared, st: &mut KState, kind: u32) {
    let ids: Vec<u32> = st
        .events
        .iter()
        .filter(|(_, e)| e.kind == kind)
        .map(|(id, _)| *id)
        .collect();
    for id in ids {
        fire_event(sh, st, id);
    }
}

fn u64_at(st: &KState, va: u64) -> Option<&AtomicU64> {
    // SAFETY: translate() checked 8 bytes are inside a live mapped BO; GPU-visible
    // 64-bit fields are 8-aligned by the rules the kernel enforces (rptr/wptr) or by
    // their structs (signals, ring slots).
    st.translate(va, 8)
        .filter(|p| (*p as usize).is_multiple_of(8))
        .map(|p| unsafe { &*(p as *const AtomicU64) })
}

fn step(sh: &Shared, st: &mut KState, id: u32) {
    let q = &st.queues[&id];
    if q.fault.is_some() || st.hung_queues.contains(&id) {
        return;
    }
    let (ring_va, packets, rptr_va, wptr_va, bell) = (
        q.ring_va,
        q.ring_packets,
        q.rptr_va,
        q.wptr_va,
        q.doorbell_index,
    );
    let Some(door) = st.doorbells.as_ref() else {
        return;
    };
    // SAFETY: the doorbell page is 8 KiB of emulator memory; `bell` < 1024.
    let doorbell = unsafe { (*(door.ptr() as *const AtomicU64).add(bell)).load(Ordering::Acquire) };
    let (Some(rp), Some(wp)) = (u64_at(st, rptr_va), u64_at(st, wptr_va)) else {
        return;
    };
    let (mut rptr, wptr) = (rp.load(Ordering::Acquire), wp.load(Ordering::Acquire));
    while rptr < wptr && rptr <= doorbell {
        let slot_va = ring_va + (rptr % packets) * 64;
        let Some(slot) = st.translate(slot_va, 64) else {
            return;
        };
        // SAFETY: 64-byte packet slot inside the mapped ring; header is its first u16.
        let hdr = unsafe { &*(slot as *const AtomicU16) };
        let header = hdr.load(Ordering::Acquire);
        let mut coh = st
            .coherence
            .get(&id)
            .copied()
            .unwrap_or_else(Coherence::new);
        let result = match header & 0xff {
            HSA_PACKET_TYPE_INVALID => return, // not published yet
            HSA_PACKET_TYPE_KERNEL_DISPATCH => {
                // SAFETY: the slot holds 64 bytes; read as the dispatch layout.
                let p: hsa_kernel_dispatch_packet_t =
                    unsafe { std::ptr::read_volatile(slot.cast()) };
                coh.acquire(rptr, header, true)
                    .and_then(|()| check_lds(st, rptr, &p))
                    .and_then(|()| run_kernel(sh, st, &p))
                    .and_then(|()| {
                        coh.kernel_ran();
                        coh.release(rptr, header, p.completion_signal != 0)
                    })
                    .map(|()| p.completion_signal)
            }
            HSA_PACKET_TYPE_BARRIER_AND => {
                // SAFETY: as above, barrier layout.
                let p: hsa_barrier_and_packet_t = unsafe { std::ptr::read_volatile(slot.cast()) };
                let waiting = p.dep_signal.iter().filter(|s| **s != 0).any(|s| {
                    u64_at(st, s + AMD_SIGNAL_VALUE_OFFSET)
                        .is_none_or(|v| v.load(Ordering::Acquire) as i64 > 0)
                });
                if waiting {
                    return; // the CP stalls on an unsatisfied barrier
                }
                coh.acquire(rptr, header, false)
                    .and_then(|()| coh.release(rptr, header, p.completion_signal != 0))
                    .map(|()| p.completion_signal)
            }
            t => Err(format!(
                "packet type {t} at index {rptr} is not supported by the emulated CP"
            )),
        };
        st.coherence.insert(id, coh);
        match result {
            Ok(signal) => {
                if signal != 0 && !complete_signal(sh, st, signal) {
                    fault(
                        sh,
                        st,
                        id,
                        format!("completion signal {signal:#x} is not in GPU-mapped memory"),
                    );
                    return;
                }
                hdr.store(
                    HSA_PACKET_TYPE_INVALID << HSA_PACKET_HEADER_TYPE,
                    Ordering::Release,
                );
                rptr += 1;
                if let Some(rp) = u64_at(st, rptr_va) {
                    rp.store(rptr, Ordering::Release);
                }
            }
            Err(msg) => {
                fault(sh, st, id, msg);
                return;
            }
        }
    }
}

fn fault(sh: &Shared, st: &mut KState, id: u32, msg: String) {
    tracing::warn!(queue = id, "emulated GPU fault: {msg}");
    st.fault_log.push((id, msg.clone()));
    if let Some(q) = st.queues.get_mut(&id) {
        q.fault = Some(msg);
    }
    fire_kind(sh, st, crate::sys::kfd::KFD_IOC_EVENT_MEMORY);
}

fn complete_signal(sh: &Shared, st: &mut KState, handle: u64) -> bool {
    let Some(p) = st.translate(handle, 64) else {
        return false;
    };
    let now = now_ns() / 10;
    // SAFETY: 64 bytes of signal inside a mapped BO; value at +8 is 8-aligned because
    // signal handles are 64-aligned (checked below).
    unsafe {
        if !(p as usize).is_multiple_of(64) {
            return false;
        }
        let s = p.cast::<amd_signal_t>();
        (*s).start_ts = now;
        (*s).end_ts = now;
        (*(p.add(8) as *const AtomicI64)).fetch_sub(1, Ordering::AcqRel);
        let (mailbox, event_id) = ((*s).event_mailbox_ptr, (*s).event_id);
        if mailbox != 0 {
            if let Some(m) = u64_at(st, mailbox) {
                m.store(event_id as u64, Ordering::Release);
            }
            fire_event(sh, st, event_id);
        }
    }
    true
}

/// The packet must allocate the LDS its kernel descriptor declares (the descriptor's first
/// u32 is `group_segment_fixed_size`).
fn check_lds(st: &KState, index: u64, p: &hsa_kernel_dispatch_packet_t) -> Result<(), String> {
    let kd = st.translate(p.kernel_object, 64).ok_or_else(|| {
        format!(
            "page fault: kernel object {:#x} is not GPU-mapped",
            p.kernel_object
        )
    })?;
    // SAFETY: translate() checked 64 bytes of descriptor are mapped; read unaligned.
    let fixed = unsafe { std::ptr::read_unaligned(kd as *const u32) };
    check_group_segment(index, fixed, p.group_segment_size)
}

fn run_kernel(sh: &Shared, st: &KState, p: &hsa_kernel_dispatch_packet_t) -> Result<(), String> {
    match st.mapped_bo_containing(p.kernel_object) {
        None => return Err(format!("page fault: kernel object {:#x} is not GPU-mapped", p.kernel_object)),
        Some((_, b)) if b.flags & crate::sys::kfd::KFD_IOC_ALLOC_MEM_FLAGS_EXECUTABLE == 0 => {
            return Err(format!(
                "page fault: kernel object {:#x} is in memory allocated without the EXECUTABLE flag",
                p.kernel_object
            ))
        }
        Some(_) => {}
    }
    let name = st.symbols.get(&p.kernel_object).ok_or_else(|| {
        format!(
            "no kernel symbol is bound to kernel object {:#x} (KfdEmu::bind_symbol)",
            p.kernel_object
        )
    })?;
    let kernels = sh.kernels.read().unwrap_or_else(|e| e.into_inner());
    let f = kernels
        .get(name)
        .ok_or_else(|| format!("kernel '{name}' has no registered CPU implementation"))?;
    let call = KernelCall {
        name,
        packet: *p,
        st,
    };
    f(&call).map_err(|e| format!("kernel '{name}' failed: {e}"))
}

/// What a registered kernel sees: the dispatch packet and the GPU address space.
pub struct KernelCall<'a> {
    /// Kernel symbol.
    pub name: &'a str,
    /// The dispatch packet as the CP read it.
    pub packet: hsa_kernel_dispatch_packet_t,
    st: &'a KState,
}

impl KernelCall<'_> {
    /// Grid size in work-items.
    pub fn grid(&self) -> [u32; 3] {
        [
            self.packet.grid_size_x,
            self.packet.grid_size_y,
            self.packet.grid_size_z,
        ]
    }

    /// Work-group size.
    pub fn workgroup(&self) -> [u16; 3] {
        [
            self.packet.workgroup_size_x,
            self.packet.workgroup_size_y,
            self.packet.workgroup_size_z,
        ]
    }

    fn ptr(&self, va: u64, len: usize) -> Result<*mut u8, String> {
        self.st
            .translate(va, len as u64)
            .ok_or_else(|| format!("page fault: {va:#x}+{len:#x} is not GPU-mapped"))
    }

    /// `len` bytes at GPU VA `va`.
    pub fn read(&self, va: u64, len: usize) -> Result<Vec<u8>, String> {
        let p = self.ptr(va, len)?;
        // SAFETY: `ptr` checked `len` bytes are inside a mapped BO.
        Ok(unsafe { std::slice::from_raw_parts(p, len) }.to_vec())
    }

    /// Writes `bytes` at GPU VA `va`.
    pub fn write(&self, va: u64, bytes: &[u8]) -> Result<(), String> {
        let p = self.ptr(va, bytes.len())?;
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
        Ok(())
    }

    /// Kernarg bytes `offset..offset+len`.
    pub fn kernarg(&self, offset: u64, len: usize) -> Result<Vec<u8>, String> {
        self.read(self.packet.kernarg_address + offset, len)
    }

    /// A u64 kernel argument (pointers).
    pub fn arg_u64(&self, offset: u64) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.kernarg(offset, 8)?.try_into().expect("8 bytes"),
        ))
    }

    /// A u32 kernel argument.
    pub fn arg_u32(&self, offset: u64) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.kernarg(offset, 4)?.try_into().expect("4 bytes"),
        ))
    }

    /// `n` f32 values at `va`.
    pub fn read_f32(&self, va: u64, n: usize) -> Result<Vec<f32>, String> {
        Ok(self
            .read(va, n * 4)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
            .collect())
    }

    /// Writes f32 values at `va`.
    pub fn write_f32(&self, va: u64, v: &[f32]) -> Result<(), String> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.write(va, &bytes)
    }
}
