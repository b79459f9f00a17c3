//! AQL compute queues: the buffers KFD validates, CREATE/DESTROY_QUEUE, and publishing
//! packets (body, then header with a release store, then the 64-bit doorbell).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::aql::{AqlHeader, Packet};
use super::cwsr::{CwsrSizes, EOP_BUFFER_SIZE};
use super::device::{DevCore, Device};
use super::events::Interrupts;
use super::memory::{AllocOptions, GpuBuffer};
use super::signal::SignalPool;
use super::{KfdError, Result};
use crate::error::Ctx;
use crate::flags::AmdQueueProperties;
use crate::io::Mapping;
use crate::sys::hsa::*;
use crate::sys::kfd as sys;

/// Queue parameters.
#[derive(Debug, Clone, Copy)]
pub struct QueueOptions {
    /// Ring size in 64-byte packets (power of two, 64..=131072: the kernel wants the ring
    /// BO exactly `ring_size` bytes, and BOs are whole pages).
    pub packets: u32,
    /// 0..=15; 7 is normal.
    pub priority: u32,
    /// 1..=100.
    pub percentage: u32,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            packets: 1024,
            priority: 7,
            percentage: 100,
        }
    }
}

pub(crate) struct QState {
    /// Next packet index to reserve.
    pub(crate) next: u64,
    /// Destroyed (after a hang).
    pub(crate) dead: bool,
}

pub(crate) struct QueueInner {
    pub(crate) core: Arc<DevCore>,
    pub(crate) interrupts: Arc<Interrupts>,
    pub(crate) queue_id: u32,
    pub(crate) size: u32,
    pub(crate) state: Mutex<QState>,
    pub(crate) signals: Arc<SignalPool>,
    doorbell: Arc<Mapping>,
    doorbell_off: usize,
    ring: GpuBuffer,
    ctl: GpuBuffer,
    _eop: GpuBuffer,
    _cwsr: GpuBuffer,
    cwsr_sizes: CwsrSizes,
}

/// An AQL compute queue on one GPU.
pub struct AqlQueue {
    pub(crate) inner: Arc<QueueInner>,
}

impl std::fmt::Debug for AqlQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AqlQueue(id {}, {} packets)",
            self.inner.queue_id, self.inner.size
        )
    }
}

fn init_ctl(ctl: &mut GpuBuffer, dev: &Device, ring: &GpuBuffer, packets: u32) -> Result<()> {
    let node = dev.node();
    let ap = dev.apertures();
    let q = amd_queue_t {
        hsa_queue: hsa_queue_t {
            type_: HSA_QUEUE_TYPE_SINGLE,
            features: HSA_QUEUE_FEATURE_KERNEL_DISPATCH,
            base_address: ring.va(),
            size: packets,
            ..Default::default()
        },
        group_segment_aperture_base_hi: (ap.lds_base >> 32) as u32,
        private_segment_aperture_base_hi: (ap.scratch_base >> 32) as u32,
        max_cu_id: node.cu_count().saturating_sub(1),
        max_wave_id: node.waves_per_cu().saturating_sub(1),
        read_dispatch_id_field_base_byte_offset: AMD_QUEUE_RPTR_OFFSET as u32,
        queue_properties: (AmdQueueProperties::IS_PTR64 | AmdQueueProperties::ENABLE_PROFILING)
            .bits(),
        ..Default::default()
    };
    let p = ctl.cpu_ptr()?;
    // SAFETY: the control page is ≥ 4 KiB, CPU-visible, 4 KiB-aligned (so 64-aligned) and
    // not yet known to the GPU.
    unsafe { std::ptr::write(p.cast::<amd_queue_t>(), q) };
    Ok(())
}

fn fill_invalid(ring: &mut GpuBuffer) -> Result<()> {
    let invalid = AqlHeader::new(HSA_PACKET_TYPE_INVALID).bits().to_le_bytes();
    for pkt in ring.as_mut_slice()?.chunks_exact_mut(AQL_PACKET_SIZE) {
        pkt.fill(0);
        pkt[..2].copy_from_slice(&invalid);
    }
    Ok(())
}

impl AqlQueue {
    /// Allocates ring, control page, EOP and CWSR buffers and creates the queue.
    pub fn new(dev: &Device, opts: QueueOptions) -> Result<AqlQueue> {
        if !opts.packets.is_power_of_two() || !(64..=131072).contains(&opts.packets) {
            return Err(KfdError::Invalid(format!(
                "ring of {} packets: need a power of two in 64..=131072",
                opts.packets
            )));
        }
        if opts.priority > sys::KFD_MAX_QUEUE_PRIORITY
            || opts.percentage == 0
            || opts.percentage > 100
        {
            return Err(KfdError::Invalid(format!(
                "priority {} / percentage {} out of range",
                opts.priority, opts.percentage
            )));
        }
        let core = dev.core().clone();
        let interrupts = dev.interrupts()?;
        let signals = SignalPool::new(
            &core,
            interrupts.mailbox(interrupts.signal),
            interrupts.signal.id,
        )?;
        let ring_bytes = opts.packets as u64 * AQL_PACKET_SIZE as u64;
        let mut ring =
            GpuBuffer::alloc_core(&core, ring_bytes, AllocOptions::uncached(), "AQL ring")?;
        fill_invalid(&mut ring)?;
        let mut ctl = GpuBuffer::alloc_core(&core, 4096, AllocOptions::uncached(), "amd_queue_t")?;
        init_ctl(&mut ctl, dev, &ring, opts.packets)?;
        let eop = GpuBuffer::alloc_core(
            &core,
            EOP_BUFFER_SIZE,
            AllocOptions::gpu_only(),
            "EOP buffer",
        )?;

        let mut args = sys::kfd_ioctl_create_queue_args {
            ring_base_address: ring.va(),
            write_pointer_address: ctl.va() + AMD_QUEUE_WPTR_OFFSET,
            read_pointer_address: ctl.va() + AMD_QUEUE_RPTR_OFFSET,
            ring_size: ring_bytes as u32,
            gpu_id: core.gpu_id,
            // A value of the KFD_IOC_QUEUE_TYPE_* enum, not a bit word: stays raw.
            queue_type: sys::KFD_IOC_QUEUE_TYPE_COMPUTE_AQL,
            queue_percentage: opts.percentage,
            queue_priority: opts.priority,
            eop_buffer_address: eop.va(),
            eop_buffer_size: EOP_BUFFER_SIZE,
            ..Default::default()
        };
        let preferred = CwsrSizes::for_node(dev.node());
        let mut attempts = vec![preferred];
        let legacy = CwsrSizes::legacy(dev.node());
        if legacy != preferred {
            attempts.push(legacy);
        }
        let mut last_err = None;
        for sizes in attempts {
            let cwsr =
                GpuBuffer::alloc_core(&core, sizes.bo_size, AllocOptions::gpu_only(), "CWSR area")?;
            args.ctx_save_restore_address = cwsr.va();
            args.ctx_save_restore_size = sizes.ctx_save_restore_size;
            args.ctl_stack_size = sizes.ctl_stack_size;
            match core.ioctl("AMDKFD_IOC_CREATE_QUEUE", sys::create_queue, &mut args) {
                Ok(_) => {
                    if sizes != preferred {
                        tracing::warn!(
                            "kernel rejected the gfx1151-sized CWSR area; using its smaller value. Preemption \
                             may hang MES on this kernel (ROCm#5590): update to 6.18.y/6.19 or boot with \
                             amdgpu.cwsr_enable=0"
                        );
                    }
                    let doorbell = doorbell_page(dev, args.doorbell_offset)?;
                    let doorbell_off =
                        (args.doorbell_offset % sys::KFD_DOORBELL_SLICE_SIZE) as usize;
                    tracing::debug!(
                        queue_id = args.queue_id,
                        packets = opts.packets,
                        "AQL queue created"
                    );
                    return Ok(AqlQueue {
                        inner: Arc::new(QueueInner {
                            core,
                            interrupts,
                            queue_id: args.queue_id,
                            size: opts.packets,
                            state: Mutex::new(QState {
                                next: 0,
                                dead: false,
                            }),
                            signals,
                            doorbell,
                            doorbell_off,
                            ring,
                            ctl,
                            _eop: eop,
                            _cwsr: cwsr,
                            cwsr_sizes: sizes,
                        }),
                    });
                }
                Err(e) if e.errno() == Some(libc::EINVAL) => last_err = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        let e = last_err.expect("at least one attempt was made");
        Err(e
            .with_advice(
                "the kernel rejected the queue buffers (ring, rptr/wptr, EOP or CWSR sizes); \
                 check dmesg for amdkfd messages",
            )
            .into())
    }

    /// KFD queue id.
    pub fn id(&self) -> u32 {
        self.inner.queue_id
    }

    /// Ring size in packets.
    pub fn size(&self) -> u32 {
        self.inner.size
    }

    /// The CWSR sizes the kernel accepted.
    pub fn cwsr_sizes(&self) -> CwsrSizes {
        self.inner.cwsr_sizes
    }

    /// (read index, write index) as the CP and we see them.
    pub fn pointers(&self) -> (u64, u64) {
        (self.inner.rptr(), self.inner.wptr())
    }

    /// Whether the queue was destroyed after a hang.
    pub fn is_dead(&self) -> bool {
        self.inner.lock().dead
    }
}

fn doorbell_page(dev: &Device, doorbell_offset: u64) -> Result<Arc<Mapping>> {
    let mut slot = dev
        .shared
        .doorbells
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(m) = slot.as_ref() {
        return Ok(m.clone());
    }
    let core = dev.core();
    let off = doorbell_offset & !(sys::KFD_DOORBELL_SLICE_SIZE - 1);
    // SAFETY: not MAP_FIXED; a fresh range.
    let m = unsafe {
        Mapping::new(
            &core.io,
            std::ptr::null_mut(),
            sys::KFD_DOORBELL_SLICE_SIZE as usize,
            libc::MAP_SHARED,
            core.kfd.raw(),
            off,
        )
    }
    .ctx("mmap", || format!("/dev/kfd doorbells offset {off:#x}"))?;
    let m = Arc::new(m);
    *slot = Some(m.clone());
    Ok(m)
}

impl QueueInner {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, QState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ctl_u64(&self, off: u64) -> &AtomicU64 {
        // SAFETY: `off` is 56 or 128, inside the CPU-visible 4 KiB control page that lives
        // as long as `self`; both fields are 8-byte aligned.
        unsafe { &*((self.ctl.va() + off) as *const AtomicU64) }
    }

    pub(crate) fn rptr(&self) -> u64 {
        self.ctl_u64(AMD_QUEUE_RPTR_OFFSET).load(Ordering::Acquire)
    }

    pub(crate) fn wptr(&self) -> u64 {
        self.ctl_u64(AMD_QUEUE_WPTR_OFFSET).load(Ordering::Acquire)
    }

    /// Publishes `packets` in order and rings the doorbell once; returns the index of the
    /// last one.
    pub(crate) fn submit(&self, packets: &[Packet]) -> Result<u64> {
        let mut st = self.lock();
        if st.dead {
            return Err(KfdError::QueueDead {
                queue_id: self.queue_id,
            });
        }
        let mut last = 0;
        for p in packets {
            let idx = st.next;
            let deadline = Instant::now() + Duration::from_secs(2);
            while idx - self.rptr() >= self.size as u64 {
                if Instant::now() > deadline {
                    return Err(KfdError::QueueFull {
                        queue_id: self.queue_id,
                        size: self.size,
                    });
                }
                std::thread::yield_now();
            }
            let bytes = p.to_bytes();
            let slot = self.ring.va() + (idx % self.size as u64) * AQL_PACKET_SIZE as u64;
            // SAFETY: `slot` is a 64-byte packet inside the live, CPU-visible ring and the
            // CP does not read it: its header is still INVALID (initial fill or consumed).
            unsafe {
                std::ptr::copy_nonoverlapping(bytes[4..].as_ptr(), (slot + 4) as *mut u8, 60)
            };
            let head = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
            // SAFETY: 4-byte aligned word at the start of the packet; the release store makes
            // the body visible before the CP can see a valid header.
            unsafe { (*(slot as *const AtomicU32)).store(head, Ordering::Release) };
            st.next = idx + 1;
            last = idx;
        }
        self.ctl_u64(AMD_QUEUE_WPTR_OFFSET)
            .store(st.next, Ordering::Release);
        // SAFETY: the doorbell slot is 8-byte aligned inside the 8 KiB doorbell page we map.
        let bell = unsafe { &*(self.doorbell.ptr().add(self.doorbell_off) as *const AtomicU64) };
        bell.store(last, Ordering::Release);
        Ok(last)
    }

    /// DESTROY_QUEUE (idempotent).
    pub(crate) fn destroy(&self) -> Result<()> {
        let mut st = self.lock();
        if st.dead {
            return Ok(());
        }
        st.dead = true;
        let mut a = sys::kfd_ioctl_destroy_queue_args {
            queue_id: self.queue_id,
            pad: 0,
        };
        self.core
            .ioctl("AMDKFD_IOC_DESTROY_QUEUE", sys::destroy_queue, &mut a)?;
        Ok(())
    }
}

impl Drop for QueueInner {
    fn drop(&mut self) {
        if let Err(e) = self.destroy() {
            tracing::warn!(error = %e, queue_id = self.queue_id, "destroy queue failed");
        }
    }
}
