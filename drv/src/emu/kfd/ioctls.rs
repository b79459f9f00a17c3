//! The KFD ioctls, as `kfd_chardev.c` validates them.

use std::ffi::c_void;
use std::io;
use std::time::{Duration, Instant};

use super::state::{Bo, Ev, Mem, Q};
use super::{cp, KfdEmu};
use crate::emu::host::{dup_fd, Backing, DmaBuf, DmaChunk};
use crate::emu::{errno, Emulator};
use crate::kfd::cwsr::{CwsrSizes, EOP_BUFFER_SIZE};
use crate::sys::kfd::*;
use crate::sys::{ioc_nr, ioc_size};

type R = io::Result<i32>;

fn einval<T>() -> io::Result<T> {
    Err(errno(libc::EINVAL))
}

/// Copies in `_IOC_SIZE(request)` bytes (zero-filling a larger kernel struct), runs `f`,
/// copies back the user's size: the kernel's size-tolerant handling.
///
/// # Safety
/// `arg` must be valid for `_IOC_SIZE(request)` bytes.
unsafe fn with_arg<T: Copy + Default>(
    request: u64,
    arg: *mut c_void,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let n = ioc_size(request).min(std::mem::size_of::<T>());
    let mut v = T::default();
    // SAFETY: caller guarantees `n` readable bytes; `v` has at least `n`.
    unsafe { std::ptr::copy_nonoverlapping(arg as *const u8, (&mut v as *mut T).cast::<u8>(), n) };
    let r = f(&mut v);
    // SAFETY: as above, for writing back.
    unsafe { std::ptr::copy_nonoverlapping((&v as *const T).cast::<u8>(), arg as *mut u8, n) };
    r
}

pub(super) unsafe fn dispatch(k: &KfdEmu, emu: &Emulator, request: u64, arg: *mut c_void) -> R {
    // SAFETY: (all arms) the caller passes the struct `request` encodes.
    unsafe {
        match ioc_nr(request) {
            0x01 => with_arg(request, arg, |a: &mut kfd_ioctl_get_version_args| {
                (a.major_version, a.minor_version) = k.sh.cfg.version;
                Ok(0)
            }),
            0x02 => with_arg(request, arg, |a| create_queue(k, a)),
            0x03 => with_arg(request, arg, |a: &mut kfd_ioctl_destroy_queue_args| {
                destroy_queue(k, a.queue_id)
            }),
            0x05 => with_arg(request, arg, |a| clock_counters(k, a)),
            0x08 => with_arg(request, arg, |a| create_event(k, a)),
            0x09 => with_arg(request, arg, |a: &mut kfd_ioctl_destroy_event_args| {
                k.sh.lock()
                    .events
                    .remove(&a.event_id)
                    .map(|_| 0)
                    .ok_or_else(|| errno(libc::EINVAL))
            }),
            0x0A => with_arg(request, arg, |a: &mut kfd_ioctl_set_event_args| {
                cp::fire_event(&k.sh, &mut k.sh.lock(), a.event_id)
                    .then_some(0)
                    .ok_or_else(|| errno(libc::EINVAL))
            }),
            0x0B => with_arg(request, arg, |a: &mut kfd_ioctl_reset_event_args| {
                let mut st = k.sh.lock();
                let e = st
                    .events
                    .get_mut(&a.event_id)
                    .ok_or_else(|| errno(libc::EINVAL))?;
                e.signaled = false;
                Ok(0)
            }),
            0x0C => with_arg(request, arg, |a| wait_events(k, a)),
            0x14 => with_arg(request, arg, |a| apertures(k, a)),
            0x15 => with_arg(request, arg, |a: &mut kfd_ioctl_acquire_vm_args| {
                let mut st = k.sh.lock();
                if a.gpu_id != k.sh.node.gpu_id || !st.render_fds.contains(&(a.drm_fd as i32)) {
                    return einval();
                }
                // kfd_ioctl_acquire_vm: the process device keeps the first render file for
                // the life of the process; another file is EBUSY, the same one is a no-op.
                match st.acquired {
                    Some(fd) if fd != a.drm_fd as i32 => Err(errno(libc::EBUSY)),
                    _ => {
                        st.acquired = Some(a.drm_fd as i32);
                        Ok(0)
                    }
                }
            }),
            0x16 => with_arg(request, arg, |a| alloc(k, a)),
            0x17 => with_arg(request, arg, |a: &mut kfd_ioctl_free_memory_of_gpu_args| {
                free(k, a.handle)
            }),
            0x18 => with_arg(request, arg, |a| map(k, a, true)),
            0x19 => with_arg(request, arg, |a| map(k, a, false)),
            0x1D => with_arg(request, arg, |a| import(k, emu, a)),
            0x23 => with_arg(
                request,
                arg,
                |a: &mut kfd_ioctl_get_available_memory_args| {
                    let st = k.sh.lock();
                    if a.gpu_id != k.sh.node.gpu_id {
                        return einval();
                    }
                    a.available = k.sh.cfg.gtt_capacity.saturating_sub(st.allocated);
                    Ok(0)
                },
            ),
            0x24 => with_arg(request, arg, |a| export(k, emu, a)),
            0x25 => with_arg(request, arg, |a: &mut kfd_ioctl_runtime_enable_args| {
                if k.sh.cfg.version < (1, 13) {
                    return einval();
                }
                // kfd_ioctl_runtime_enable (kfd_chardev.c): without the enable bit the call
                // is runtime_disable; runtime_enable refuses a second enable (EBUSY) and a
                // process that already has queues (EEXIST).
                let mut st = k.sh.lock();
                if a.mode_mask & KFD_RUNTIME_ENABLE_MODE_ENABLE_MASK == 0 {
                    st.runtime_enabled = false;
                    return Ok(0);
                }
                if st.runtime_enabled {
                    return Err(errno(libc::EBUSY));
                }
                if !st.queues.is_empty() {
                    return Err(errno(libc::EEXIST));
                }
                st.runtime_enabled = true;
                Ok(0)
            }),
            _ => Err(errno(libc::ENOTTY)),
        }
    }
}

fn page() -> u64 {
    crate::page_size()
}

fn clock_counters(k: &KfdEmu, a: &mut kfd_ioctl_get_clock_counters_args) -> R {
    if a.gpu_id != k.sh.node.gpu_id {
        return einval();
    }
    let ns = cp::now_ns();
    a.cpu_clock_counter = ns;
    a.system_clock_counter = ns;
    a.system_clock_freq = 1_000_000_000;
    a.gpu_clock_counter = ns / 10;
    Ok(0)
}

fn apertures(k: &KfdEmu, a: &mut kfd_ioctl_get_process_apertures_new_args) -> R {
    if k.sh.lock().acquired.is_none() && a.num_of_nodes > 0 {
        // Apertures exist once the process has a VM; the kernel builds them at open, the
        // emulator asks for ACQUIRE_VM first to catch out-of-order bring-up.
        return einval();
    }
    if a.num_of_nodes == 0 {
        a.num_of_nodes = 1;
        return Ok(0);
    }
    let ap = kfd_process_device_apertures {
        lds_base: 1 << 48,
        lds_limit: (1 << 48) + 0xffff_ffff,
        scratch_base: 2 << 48,
        scratch_limit: (2 << 48) + 0xffff_ffff,
        gpuvm_base: GPUVM_BASE,
        gpuvm_limit: GPUVM_LIMIT,
        gpu_id: k.sh.node.gpu_id,
        pad: 0,
    };
    // SAFETY: the caller's array holds `num_of_nodes` (≥ 1) entries.
    unsafe {
        std::ptr::write_unaligned(
            a.kfd_process_device_apertures_ptr as *mut kfd_process_device_apertures,
            ap,
        )
    };
    a.num_of_nodes = 1;
    Ok(0)
}

const GPUVM_BASE: u64 = 0x20_0000;
const GPUVM_LIMIT: u64 = 0x7fff_ffff_ffff;

fn alloc(k: &KfdEmu, a: &mut kfd_ioctl_alloc_memory_of_gpu_args) -> R {
    let mut st = k.sh.lock();
    if st.acquired.is_none() || a.gpu_id != k.sh.node.gpu_id {
        return einval();
    }
    let domain = a.flags
        & (KFD_IOC_ALLOC_MEM_FLAGS_VRAM
            | KFD_IOC_ALLOC_MEM_FLAGS_GTT
            | KFD_IOC_ALLOC_MEM_FLAGS_USERPTR
            | KFD_IOC_ALLOC_MEM_FLAGS_DOORBELL
            | KFD_IOC_ALLOC_MEM_FLAGS_MMIO_REMAP);
    if domain.count_ones() != 1
        || a.size == 0
        || !a.size.is_multiple_of(page())
        || !a.va_addr.is_multiple_of(page())
    {
        return einval();
    }
    if a.va_addr < GPUVM_BASE
        || a.va_addr + a.size - 1 > GPUVM_LIMIT
        || st.overlaps(a.va_addr, a.size)
    {
        return einval();
    }
    let mem = match domain {
        KFD_IOC_ALLOC_MEM_FLAGS_USERPTR => {
            if !a.mmap_offset.is_multiple_of(page()) {
                return einval();
            }
            Mem::User(a.mmap_offset as usize)
        }
        KFD_IOC_ALLOC_MEM_FLAGS_DOORBELL | KFD_IOC_ALLOC_MEM_FLAGS_MMIO_REMAP => {
            // Not used by this driver; the emulator does not model those pages.
            return einval();
        }
        _ => {
            if st.allocated + a.size > k.sh.cfg.gtt_capacity {
                return Err(errno(libc::ENOMEM));
            }
            Mem::Own(Backing::new("emu-kfd-bo", a.size as usize)?)
        }
    };
    let idr = st.next_idr;
    st.next_idr += 1;
    let handle = ((k.sh.node.gpu_id as u64) << 32) | idr as u64;
    let mmap_offset = if matches!(mem, Mem::Own(_)) {
        st.allocated += a.size;
        (idr as u64) << 36
    } else {
        a.mmap_offset
    };
    st.bos.insert(
        handle,
        Bo {
            va: a.va_addr,
            size: a.size,
            flags: a.flags,
            mem,
            mapped: false,
            mmap_offset,
            queue_refs: 0,
            event_page: false,
        },
    );
    a.handle = handle;
    a.mmap_offset = mmap_offset;
    Ok(0)
}

fn free(k: &KfdEmu, handle: u64) -> R {
    let mut st = k.sh.lock();
    let Some(b) = st.bos.get(&handle) else {
        // Double free and use after free land here.
        return einval();
    };
    if b.event_page {
        return Err(errno(libc::EPERM));
    }
    if b.mapped || b.queue_refs > 0 {
        return Err(errno(libc::EBUSY));
    }
    let b = st.bos.remove(&handle).expect("present");
    if matches!(b.mem, Mem::Own(_)) {
        st.allocated -= b.size;
    }
    Ok(0)
}

fn map(k: &KfdEmu, a: &mut kfd_ioctl_map_memory_to_gpu_args, on: bool) -> R {
    let mut st = k.sh.lock();
    if a.n_devices == 0 || a.n_success > a.n_devices || a.device_ids_array_ptr == 0 {
        return einval();
    }
    for i in a.n_success..a.n_devices {
        // SAFETY: the caller's array holds `n_devices` u32s.
        let id = unsafe {
            std::ptr::read_unaligned((a.device_ids_array_ptr as *const u32).add(i as usize))
        };
        if id != k.sh.node.gpu_id {
            return einval();
        }
    }
    let b = st.bos.get(&a.handle).ok_or_else(|| errno(libc::EINVAL))?;
    // amdgpu_vm_bo_map (reached through amdgpu_amdkfd_gpuvm_map_memory_to_gpu ->
    // map_bo_to_gpuvm): a VA outside the VM or overlapping another mapping is EINVAL at
    // MAP time; IMPORT_DMABUF only records the address.
    if on
        && !b.mapped
        && (b.va < GPUVM_BASE
            || b.va + b.size - 1 > GPUVM_LIMIT
            || st.bos.iter().any(|(h, o)| {
                *h != a.handle && o.mapped && b.va < o.va + o.size && o.va < b.va + b.size
            }))
    {
        return einval();
    }
    let b = st.bos.get_mut(&a.handle).expect("looked up above");
    if on {
        b.mapped = true;
    } else {
        if !b.mapped {
            return einval();
        }
        if b.queue_refs > 0 {
            return Err(errno(libc::EBUSY));
        }
        b.mapped = false;
    }
    a.n_success = a.n_devices;
    Ok(0)
}

fn import(k: &KfdEmu, emu: &Emulator, a: &mut kfd_ioctl_import_dmabuf_args) -> R {
    let buf = emu.dmabuf(a.dmabuf_fd as i32)?;
    let mut st = k.sh.lock();
    if st.acquired.is_none() || a.gpu_id != k.sh.node.gpu_id || !a.va_addr.is_multiple_of(page()) {
        return einval();
    }
    let size = buf.len();
    // kfd_ioctl_import_dmabuf does not check the VA: a bad one fails at MAP_MEMORY_TO_GPU.
    let map = buf.map()?;
    let idr = st.next_idr;
    st.next_idr += 1;
    let handle = ((k.sh.node.gpu_id as u64) << 32) | idr as u64;
    st.bos.insert(
        handle,
        Bo {
            va: a.va_addr,
            size,
            flags: KFD_IOC_ALLOC_MEM_FLAGS_GTT | KFD_IOC_ALLOC_MEM_FLAGS_WRITABLE,
            mem: Mem::Import { map, _buf: buf },
            mapped: false,
            mmap_offset: 0,
            queue_refs: 0,
            event_page: false,
        },
    );
    a.handle = handle;
    Ok(0)
}

fn export(k: &KfdEmu, emu: &Emulator, a: &mut kfd_ioctl_export_dmabuf_args) -> R {
    let chunk = {
        let st = k.sh.lock();
        let b = st.bos.get(&a.handle).ok_or_else(|| errno(libc::EINVAL))?;
        match &b.mem {
            Mem::Own(m) => DmaChunk {
                memfd: dup_fd(m.fd())?,
                offset: 0,
                size: b.size,
            },
            // amdgpu refuses to export userptr BOs; re-exporting imports is not modelled.
            _ => return Err(errno(libc::EPERM)),
        }
    };
    let fd = emu.new_dmabuf(DmaBuf {
        exporter: "KFD export",
        chunks: vec![chunk],
    })?;
    a.dmabuf_fd = fd as u32;
    Ok(0)
}

fn create_event(k: &KfdEmu, a: &mut kfd_ioctl_create_event_args) -> R {
    let mut st = k.sh.lock();
    let (id, slot) = if a.event_type == KFD_IOC_EVENT_SIGNAL {
        // kfd_kmap_event_page (kfd_events.c): a second event page for the process is
        // EINVAL ("Event page is already set").
        if a.event_page_offset != 0 && (st.event_page.is_some() || st.kernel_event_page.is_some()) {
            return einval();
        }
        if st.event_page.is_none() && st.kernel_event_page.is_none() {
            if a.event_page_offset != 0 {
                let h = a.event_page_offset;
                let b = st.bos.get_mut(&h).ok_or_else(|| errno(libc::EINVAL))?;
                if b.size < KFD_SIGNAL_EVENT_LIMIT as u64 * 8 || !matches!(b.mem, Mem::Own(_)) {
                    return einval();
                }
                b.event_page = true;
                // SAFETY: the BO is ≥ 32 KiB of emulator-mapped memory.
                unsafe {
                    std::ptr::write_bytes(b.host(), 0xff, KFD_SIGNAL_EVENT_LIMIT as usize * 8)
                };
                st.event_page = Some(h);
            } else {
                let p = Backing::new("emu-kfd-events", KFD_SIGNAL_EVENT_LIMIT as usize * 8)?;
                // SAFETY: the backing is 32 KiB.
                unsafe { std::ptr::write_bytes(p.ptr(), 0xff, p.len()) };
                st.kernel_event_page = Some(p);
                a.event_page_offset = KFD_MMAP_TYPE_EVENTS | kfd_mmap_gpu_id(k.sh.node.gpu_id);
            }
        }
        let slot = st.next_signal_slot;
        if slot >= KFD_SIGNAL_EVENT_LIMIT {
            return Err(errno(libc::ENOMEM));
        }
        st.next_signal_slot += 1;
        (slot, slot)
    } else if matches!(
        a.event_type,
        KFD_IOC_EVENT_MEMORY | KFD_IOC_EVENT_HW_EXCEPTION | KFD_IOC_EVENT_NODECHANGE
    ) {
        st.next_other_event += 1;
        (KFD_SIGNAL_EVENT_LIMIT + st.next_other_event, 0)
    } else {
        return einval();
    };
    st.events.insert(
        id,
        Ev {
            kind: a.event_type,
            auto_reset: a.auto_reset != 0,
            signaled: false,
            age: 1,
        },
    );
    a.event_id = id;
    a.event_slot_index = slot;
    a.event_trigger_data = id;
    Ok(0)
}

fn wait_events(k: &KfdEmu, a: &mut kfd_ioctl_wait_events_args) -> R {
    let n = a.num_events as usize;
    if n == 0 || a.events_ptr == 0 {
        return einval();
    }
    let ptr = a.events_ptr as *mut kfd_event_data;
    // SAFETY: the caller's array holds `num_events` entries.
    let ids: Vec<u32> = (0..n)
        .map(|i| unsafe { std::ptr::read_unaligned(ptr.add(i)).event_id })
        .collect();
    let deadline =
        (a.timeout != u32::MAX).then(|| Instant::now() + Duration::from_millis(a.timeout as u64));
    let mut st = k.sh.lock();
    loop {
        if ids.iter().any(|id| !st.events.contains_key(id)) {
            return einval();
        }
        let fired: Vec<bool> = ids.iter().map(|id| st.events[id].signaled).collect();
        let done = if a.wait_for_all != 0 {
            fired.iter().all(|f| *f)
        } else {
            fired.iter().any(|f| *f)
        };
        if done {
            for (i, id) in ids.iter().enumerate() {
                let e = st.events.get_mut(id).expect("checked");
                if fired[i] && e.auto_reset {
                    e.signaled = false;
                }
                if e.kind == KFD_IOC_EVENT_SIGNAL {
                    let mut d = kfd_event_data {
                        event_id: *id,
                        ..Default::default()
                    };
                    d.data[0] = e.age;
                    // SAFETY: as above.
                    unsafe { std::ptr::write_unaligned(ptr.add(i), d) };
                }
            }
            a.wait_result = KFD_IOC_WAIT_RESULT_COMPLETE;
            return Ok(0);
        }
        let left = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(l) if !l.is_zero() => l,
                _ => {
                    a.wait_result = KFD_IOC_WAIT_RESULT_TIMEOUT;
                    return Ok(0);
                }
            },
            None => Duration::from_secs(3600),
        };
        st =
            k.sh.events_cv
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        if st.kfd_fds.is_empty() {
            a.wait_result = KFD_IOC_WAIT_RESULT_FAIL;
            return Ok(0);
        }
    }
}

fn create_queue(k: &KfdEmu, a: &mut kfd_ioctl_create_queue_args) -> R {
    let mut st = k.sh.lock();
    if st.acquired.is_none() || a.gpu_id != k.sh.node.gpu_id {
        return einval();
    }
    if a.queue_type != KFD_IOC_QUEUE_TYPE_COMPUTE_AQL {
        // PM4 and SDMA rings exist in the kernel; the emulated CP only speaks AQL.
        return einval();
    }
    if (a.queue_percentage & 0xff) > KFD_MAX_QUEUE_PERCENTAGE
        || a.queue_priority > KFD_MAX_QUEUE_PRIORITY
    {
        return einval();
    }
    if !a.ring_size.is_power_of_two() || a.ring_size < KFD_MIN_QUEUE_RING_SIZE {
        return einval();
    }
    // kfd_queue_acquire_buffers: every buffer must be GPU-mapped, with these shapes.
    let ring = match st.mapped_bo_at(a.ring_base_address) {
        Some((h, b)) if b.size == a.ring_size as u64 => h,
        _ => return einval(),
    };
    let in_first_page = |va: u64| {
        st.mapped_bo_containing(va)
            .filter(|(_, b)| va.is_multiple_of(8) && va - b.va + 8 <= page())
            .map(|(h, _)| h)
    };
    let (Some(wptr), Some(rptr)) = (
        in_first_page(a.write_pointer_address),
        in_first_page(a.read_pointer_address),
    ) else {
        return einval();
    };
    let eop = match st.mapped_bo_at(a.eop_buffer_address) {
        Some((h, b)) if a.eop_buffer_size == EOP_BUFFER_SIZE && b.size >= EOP_BUFFER_SIZE => h,
        _ => return einval(),
    };
    let want = CwsrSizes::compute(&k.sh.node, k.sh.cfg.kernel_vgpr_per_cu);
    let size_ok = if k.sh.cfg.strict_cwsr {
        a.ctx_save_restore_size == want.ctx_save_restore_size
    } else {
        a.ctx_save_restore_size >= want.ctx_save_restore_size
    };
    if !size_ok || a.ctl_stack_size != want.ctl_stack_size {
        return einval();
    }
    let cwsr_bo_size = (a.ctx_save_restore_size as u64 + want.debug_memory_size as u64)
        * k.sh.node.num_xcc() as u64;
    let cwsr = match st.mapped_bo_at(a.ctx_save_restore_address) {
        Some((h, b)) if b.size == cwsr_bo_size.next_multiple_of(page()) => h,
        _ => return einval(),
    };
    let mut bos = vec![ring, wptr, rptr, eop, cwsr];
    bos.sort_unstable();
    bos.dedup();
    for h in &bos {
        st.bos.get_mut(h).expect("found above").queue_refs += 1;
    }
    if st.doorbells.is_none() {
        st.doorbells = Some(Backing::new(
            "emu-kfd-doorbells",
            KFD_DOORBELL_SLICE_SIZE as usize,
        )?);
    }
    let id = st.next_queue;
    st.next_queue += 1;
    let doorbell_index = (id as usize) % (KFD_DOORBELL_SLICE_SIZE as usize / 8);
    st.queues.insert(
        id,
        Q {
            ring_va: a.ring_base_address,
            ring_packets: a.ring_size as u64 / 64,
            rptr_va: a.read_pointer_address,
            wptr_va: a.write_pointer_address,
            doorbell_index,
            bos,
            fault: None,
        },
    );
    a.queue_id = id;
    a.doorbell_offset =
        KFD_MMAP_TYPE_DOORBELL | kfd_mmap_gpu_id(k.sh.node.gpu_id) | (doorbell_index as u64 * 8);
    drop(st);
    cp::ensure_running(&k.sh);
    Ok(0)
}

fn destroy_queue(k: &KfdEmu, id: u32) -> R {
    let mut st = k.sh.lock();
    let q = st.queues.remove(&id).ok_or_else(|| errno(libc::EINVAL))?;
    for h in q.bos {
        if let Some(b) = st.bos.get_mut(&h) {
            b.queue_refs -= 1;
        }
    }
    Ok(0)
}
