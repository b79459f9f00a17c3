//! `include/uapi/linux/kfd_ioctl.h` (KFD uapi 1.x) and `kfd_priv.h` mmap encoding.
//! Offsets are the kernel's; `tests/kfd_layout.rs` checks them against the installed
//! header where one exists.

#![allow(non_camel_case_types)]

use std::mem::{offset_of, size_of};

use super::{ior, iow, iowr};

/// `AMDKFD_IOCTL_BASE`.
pub const AMDKFD_IOCTL_BASE: u8 = b'K';

/// `struct kfd_ioctl_get_version_args`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_get_version_args {
    pub major_version: u32,
    pub minor_version: u32,
}
const _: () = assert!(size_of::<kfd_ioctl_get_version_args>() == 8);

/// `KFD_IOC_QUEUE_TYPE_*`.
pub const KFD_IOC_QUEUE_TYPE_COMPUTE: u32 = 0;
pub const KFD_IOC_QUEUE_TYPE_SDMA: u32 = 1;
pub const KFD_IOC_QUEUE_TYPE_COMPUTE_AQL: u32 = 2;
pub const KFD_IOC_QUEUE_TYPE_SDMA_XGMI: u32 = 3;
pub const KFD_IOC_QUEUE_TYPE_SDMA_BY_ENG_ID: u32 = 4;
/// `KFD_MAX_QUEUE_PERCENTAGE`.
pub const KFD_MAX_QUEUE_PERCENTAGE: u32 = 100;
/// `KFD_MAX_QUEUE_PRIORITY`.
pub const KFD_MAX_QUEUE_PRIORITY: u32 = 15;
/// `KFD_MIN_QUEUE_RING_SIZE` (bytes).
pub const KFD_MIN_QUEUE_RING_SIZE: u32 = 1024;

/// `struct kfd_ioctl_create_queue_args` (v1.17 layout, 96 B; the kernel accepts the
/// 88-byte pre-1.17 size too).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_create_queue_args {
    pub ring_base_address: u64,
    pub write_pointer_address: u64,
    pub read_pointer_address: u64,
    pub doorbell_offset: u64,
    pub ring_size: u32,
    pub gpu_id: u32,
    pub queue_type: u32,
    pub queue_percentage: u32,
    pub queue_priority: u32,
    pub queue_id: u32,
    pub eop_buffer_address: u64,
    pub eop_buffer_size: u64,
    pub ctx_save_restore_address: u64,
    pub ctx_save_restore_size: u32,
    pub ctl_stack_size: u32,
    pub sdma_engine_id: u32,
    pub pad: u32,
}
const _: () = assert!(size_of::<kfd_ioctl_create_queue_args>() == 96);
const _: () = assert!(offset_of!(kfd_ioctl_create_queue_args, queue_id) == 52);
const _: () = assert!(offset_of!(kfd_ioctl_create_queue_args, ctl_stack_size) == 84);

/// `struct kfd_ioctl_destroy_queue_args`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_destroy_queue_args {
    pub queue_id: u32,
    pub pad: u32,
}
const _: () = assert!(size_of::<kfd_ioctl_destroy_queue_args>() == 8);

/// `struct kfd_ioctl_get_clock_counters_args`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_get_clock_counters_args {
    pub gpu_clock_counter: u64,
    pub cpu_clock_counter: u64,
    pub system_clock_counter: u64,
    pub system_clock_freq: u64,
    pub gpu_id: u32,
    pub pad: u32,
}
const _: () = assert!(size_of::<kfd_ioctl_get_clock_counters_args>() == 40);

/// `struct kfd_process_device_apertures`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_process_device_apertures {
    pub lds_base: u64,
    pub lds_limit: u64,
    pub scratch_base: u64,
    pub scratch_limit: u64,
    pub gpuvm_base: u64,
    pub gpuvm_limit: u64,
    pub gpu_id: u32,
    pub pad: u32,
}
const _: () = assert!(size_of::<kfd_process_device_apertures>() == 56);

/// `struct kfd_ioctl_get_process_apertures_new_args`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_get_process_apertures_new_args {
    /// Pointer to `kfd_process_device_apertures[num_of_nodes]`.
    pub kfd_process_device_apertures_ptr: u64,
    pub num_of_nodes: u32,
    pub pad: u32,
}
const _: () = assert!(size_of::<kfd_ioctl_get_process_apertures_new_args>() == 16);

/// `struct kfd_ioctl_acquire_vm_args`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_acquire_vm_args {
    pub drm_fd: u32,
    pub gpu_id: u32,
}
const _: () = assert!(size_of::<kfd_ioctl_acquire_vm_args>() == 8);

/// `KFD_IOC_ALLOC_MEM_FLAGS_*`.
pub const KFD_IOC_ALLOC_MEM_FLAGS_VRAM: u32 = 1 << 0;
pub const KFD_IOC_ALLOC_MEM_FLAGS_GTT: u32 = 1 << 1;
pub const KFD_IOC_ALLOC_MEM_FLAGS_USERPTR: u32 = 1 << 2;
pub const KFD_IOC_ALLOC_MEM_FLAGS_DOORBELL: u32 = 1 << 3;
pub const KFD_IOC_ALLOC_MEM_FLAGS_MMIO_REMAP: u32 = 1 << 4;
pub const KFD_IOC_ALLOC_MEM_FLAGS_WRITABLE: u32 = 1 << 31;
pub const KFD_IOC_ALLOC_MEM_FLAGS_EXECUTABLE: u32 = 1 << 30;
pub const KFD_IOC_ALLOC_MEM_FLAGS_PUBLIC: u32 = 1 << 29;
pub const KFD_IOC_ALLOC_MEM_FLAGS_NO_SUBSTITUTE: u32 = 1 << 28;
pub const KFD_IOC_ALLOC_MEM_FLAGS_AQL_QUEUE_MEM: u32 = 1 << 27;
pub const KFD_IOC_ALLOC_MEM_FLAGS_COHERENT: u32 = 1 << 26;
pub const KFD_IOC_ALLOC_MEM_FLAGS_UNCACHED: u32 = 1 << 25;
pub const KFD_IOC_ALLOC_MEM_FLAGS_EXT_COHERENT: u32 = 1 << 24;
pub const KFD_IOC_ALLOC_MEM_FLAGS_CONTIGUOUS: u32 = 1 << 23;

/// `struct kfd_ioctl_alloc_memory_of_gpu_args`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_alloc_memory_of_gpu_args {
    pub va_addr: u64,
    pub size: u64,
    pub handle: u64,
    pub mmap_offset: u64,
    pub gpu_id: u32,
    pub flags: u32,
}
const _: () = assert!(size_of::<kfd_ioctl_alloc_memory_of_gpu_args>() == 40);

/// `struct kfd_ioctl_free_memory_of_gpu_args`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_free_memory_of_gpu_args {
    pub handle: u64,
}
const _: () = assert!(size_of::<kfd_ioctl_free_memory_of_gpu_args>() == 8);

/// `struct kfd_ioctl_map_memory_to_gpu_args` (UNMAP uses the same layout).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_map_memory_to_gpu_args {
    pub handle: u64,
    /// Pointer to `u32 gpu_id[n_devices]`.
    pub device_ids_array_ptr: u64,
    pub n_devices: u32,
    pub n_success: u32,
}
const _: () = assert!(size_of::<kfd_ioctl_map_memory_to_gpu_args>() == 24);
/// `struct kfd_ioctl_unmap_memory_from_gpu_args`.
pub type kfd_ioctl_unmap_memory_from_gpu_args = kfd_ioctl_map_memory_to_gpu_args;

/// `KFD_IOC_EVENT_*`.
pub const KFD_IOC_EVENT_SIGNAL: u32 = 0;
pub const KFD_IOC_EVENT_NODECHANGE: u32 = 1;
pub const KFD_IOC_EVENT_DEVICESTATECHANGE: u32 = 2;
pub const KFD_IOC_EVENT_HW_EXCEPTION: u32 = 3;
pub const KFD_IOC_EVENT_SYSTEM_EVENT: u32 = 4;
pub const KFD_IOC_EVENT_DEBUG_EVENT: u32 = 5;
pub const KFD_IOC_EVENT_PROFILE_EVENT: u32 = 6;
pub const KFD_IOC_EVENT_QUEUE_EVENT: u32 = 7;
pub const KFD_IOC_EVENT_MEMORY: u32 = 8;
/// `KFD_IOC_WAIT_RESULT_*`.
pub const KFD_IOC_WAIT_RESULT_COMPLETE: u32 = 0;
pub const KFD_IOC_WAIT_RESULT_TIMEOUT: u32 = 1;
pub const KFD_IOC_WAIT_RESULT_FAIL: u32 = 2;
/// `KFD_SIGNAL_EVENT_LIMIT`: slots in the event page (u64 each).
pub const KFD_SIGNAL_EVENT_LIMIT: u32 = 4096;
/// Value of an event slot that has not fired.
pub const UNSIGNALED_EVENT_SLOT: u64 = u64::MAX;

/// `struct kfd_ioctl_create_event_args`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_create_event_args {
    pub event_page_offset: u64,
    pub event_trigger_data: u32,
    pub event_type: u32,
    pub auto_reset: u32,
    pub node_id: u32,
    pub event_id: u32,
    pub event_slot_index: u32,
}
const _: () = assert!(size_of::<kfd_ioctl_create_event_args>() == 32);

/// `struct kfd_ioctl_destroy_event_args` (SET/RESET use the same shape).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_destroy_event_args {
    pub event_id: u32,
    pub pad: u32,
}
const _: () = assert!(size_of::<kfd_ioctl_destroy_event_args>() == 8);
/// `struct kfd_ioctl_set_event_args`.
pub type kfd_ioctl_set_event_args = kfd_ioctl_destroy_event_args;
/// `struct kfd_ioctl_reset_event_args`.
pub type kfd_ioctl_reset_event_args = kfd_ioctl_destroy_event_args;

/// `struct kfd_event_data`; the 32-byte union is kept raw. For signal events word 0 is
/// `signal_event_data.last_event_age`; for memory exceptions bytes 16..24 are the VA.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_event_data {
    pub data: [u64; 4],
    pub kfd_event_data_ext: u64,
    pub event_id: u32,
    pub pad: u32,
}
const _: () = assert!(size_of::<kfd_event_data>() == 48);

/// `struct kfd_ioctl_wait_events_args`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_wait_events_args {
    /// Pointer to `kfd_event_data[num_events]`.
    pub events_ptr: u64,
    pub num_events: u32,
    pub wait_for_all: u32,
    /// Milliseconds; `u32::MAX` waits forever.
    pub timeout: u32,
    pub wait_result: u32,
}
const _: () = assert!(size_of::<kfd_ioctl_wait_events_args>() == 24);

/// `struct kfd_ioctl_import_dmabuf_args`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_import_dmabuf_args {
    pub va_addr: u64,
    pub handle: u64,
    pub gpu_id: u32,
    pub dmabuf_fd: u32,
}
const _: () = assert!(size_of::<kfd_ioctl_import_dmabuf_args>() == 24);

/// `struct kfd_ioctl_export_dmabuf_args`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_export_dmabuf_args {
    pub handle: u64,
    pub flags: u32,
    pub dmabuf_fd: u32,
}
const _: () = assert!(size_of::<kfd_ioctl_export_dmabuf_args>() == 16);

/// `struct kfd_ioctl_runtime_enable_args`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_runtime_enable_args {
    pub r_debug: u64,
    pub mode_mask: u32,
    pub capabilities_mask: u32,
}
const _: () = assert!(size_of::<kfd_ioctl_runtime_enable_args>() == 16);
/// `mode_mask` bit: enable the runtime (without it RUNTIME_ENABLE disables).
pub const KFD_RUNTIME_ENABLE_MODE_ENABLE_MASK: u32 = 1;
/// `mode_mask` bit: let the trap handler save TTMP registers.
pub const KFD_RUNTIME_ENABLE_MODE_TTMP_SAVE_MASK: u32 = 2;

/// `struct kfd_ioctl_get_available_memory_args`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct kfd_ioctl_get_available_memory_args {
    pub available: u64,
    pub gpu_id: u32,
    pub pad: u32,
}
const _: () = assert!(size_of::<kfd_ioctl_get_available_memory_args>() == 16);

const K: u8 = AMDKFD_IOCTL_BASE;
pub const AMDKFD_IOC_GET_VERSION: u64 = ior::<kfd_ioctl_get_version_args>(K, 0x01);
pub const AMDKFD_IOC_CREATE_QUEUE: u64 = iowr::<kfd_ioctl_create_queue_args>(K, 0x02);
pub const AMDKFD_IOC_DESTROY_QUEUE: u64 = iowr::<kfd_ioctl_destroy_queue_args>(K, 0x03);
pub const AMDKFD_IOC_GET_CLOCK_COUNTERS: u64 = iowr::<kfd_ioctl_get_clock_counters_args>(K, 0x05);
pub const AMDKFD_IOC_CREATE_EVENT: u64 = iowr::<kfd_ioctl_create_event_args>(K, 0x08);
pub const AMDKFD_IOC_DESTROY_EVENT: u64 = iow::<kfd_ioctl_destroy_event_args>(K, 0x09);
pub const AMDKFD_IOC_SET_EVENT: u64 = iow::<kfd_ioctl_set_event_args>(K, 0x0A);
pub const AMDKFD_IOC_RESET_EVENT: u64 = iow::<kfd_ioctl_reset_event_args>(K, 0x0B);
pub const AMDKFD_IOC_WAIT_EVENTS: u64 = iowr::<kfd_ioctl_wait_events_args>(K, 0x0C);
pub const AMDKFD_IOC_GET_PROCESS_APERTURES_NEW: u64 =
    iowr::<kfd_ioctl_get_process_apertures_new_args>(K, 0x14);
pub const AMDKFD_IOC_ACQUIRE_VM: u64 = iow::<kfd_ioctl_acquire_vm_args>(K, 0x15);
pub const AMDKFD_IOC_ALLOC_MEMORY_OF_GPU: u64 = iowr::<kfd_ioctl_alloc_memory_of_gpu_args>(K, 0x16);
pub const AMDKFD_IOC_FREE_MEMORY_OF_GPU: u64 = iow::<kfd_ioctl_free_memory_of_gpu_args>(K, 0x17);
pub const AMDKFD_IOC_MAP_MEMORY_TO_GPU: u64 = iowr::<kfd_ioctl_map_memory_to_gpu_args>(K, 0x18);
pub const AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU: u64 =
    iowr::<kfd_ioctl_unmap_memory_from_gpu_args>(K, 0x19);
pub const AMDKFD_IOC_IMPORT_DMABUF: u64 = iowr::<kfd_ioctl_import_dmabuf_args>(K, 0x1D);
pub const AMDKFD_IOC_AVAILABLE_MEMORY: u64 = iowr::<kfd_ioctl_get_available_memory_args>(K, 0x23);
pub const AMDKFD_IOC_EXPORT_DMABUF: u64 = iowr::<kfd_ioctl_export_dmabuf_args>(K, 0x24);
pub const AMDKFD_IOC_RUNTIME_ENABLE: u64 = iowr::<kfd_ioctl_runtime_enable_args>(K, 0x25);

// The numbers the reference table lists (computed from the C macros).
const _: () = assert!(AMDKFD_IOC_GET_VERSION == 0x8008_4b01);
const _: () = assert!(AMDKFD_IOC_CREATE_QUEUE == 0xc060_4b02);
const _: () = assert!(AMDKFD_IOC_DESTROY_QUEUE == 0xc008_4b03);
const _: () = assert!(AMDKFD_IOC_GET_CLOCK_COUNTERS == 0xc028_4b05);
const _: () = assert!(AMDKFD_IOC_CREATE_EVENT == 0xc020_4b08);
const _: () = assert!(AMDKFD_IOC_DESTROY_EVENT == 0x4008_4b09);
const _: () = assert!(AMDKFD_IOC_SET_EVENT == 0x4008_4b0a);
const _: () = assert!(AMDKFD_IOC_WAIT_EVENTS == 0xc018_4b0c);
const _: () = assert!(AMDKFD_IOC_GET_PROCESS_APERTURES_NEW == 0xc010_4b14);
const _: () = assert!(AMDKFD_IOC_ACQUIRE_VM == 0x4008_4b15);
const _: () = assert!(AMDKFD_IOC_ALLOC_MEMORY_OF_GPU == 0xc028_4b16);
const _: () = assert!(AMDKFD_IOC_FREE_MEMORY_OF_GPU == 0x4008_4b17);
const _: () = assert!(AMDKFD_IOC_MAP_MEMORY_TO_GPU == 0xc018_4b18);
const _: () = assert!(AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU == 0xc018_4b19);
const _: () = assert!(AMDKFD_IOC_IMPORT_DMABUF == 0xc018_4b1d);
const _: () = assert!(AMDKFD_IOC_AVAILABLE_MEMORY == 0xc010_4b23);
const _: () = assert!(AMDKFD_IOC_EXPORT_DMABUF == 0xc010_4b24);
const _: () = assert!(AMDKFD_IOC_RUNTIME_ENABLE == 0xc010_4b25);

/// Kernel spelling of a KFD request, by `_IOC_NR` (the kernel dispatches on nr only).
pub fn ioctl_name(request: u64) -> Option<&'static str> {
    if super::ioc_type(request) != K {
        return None;
    }
    Some(match super::ioc_nr(request) {
        0x01 => "AMDKFD_IOC_GET_VERSION",
        0x02 => "AMDKFD_IOC_CREATE_QUEUE",
        0x03 => "AMDKFD_IOC_DESTROY_QUEUE",
        0x05 => "AMDKFD_IOC_GET_CLOCK_COUNTERS",
        0x08 => "AMDKFD_IOC_CREATE_EVENT",
        0x09 => "AMDKFD_IOC_DESTROY_EVENT",
        0x0A => "AMDKFD_IOC_SET_EVENT",
        0x0B => "AMDKFD_IOC_RESET_EVENT",
        0x0C => "AMDKFD_IOC_WAIT_EVENTS",
        0x14 => "AMDKFD_IOC_GET_PROCESS_APERTURES_NEW",
        0x15 => "AMDKFD_IOC_ACQUIRE_VM",
        0x16 => "AMDKFD_IOC_ALLOC_MEMORY_OF_GPU",
        0x17 => "AMDKFD_IOC_FREE_MEMORY_OF_GPU",
        0x18 => "AMDKFD_IOC_MAP_MEMORY_TO_GPU",
        0x19 => "AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU",
        0x1D => "AMDKFD_IOC_IMPORT_DMABUF",
        0x23 => "AMDKFD_IOC_AVAILABLE_MEMORY",
        0x24 => "AMDKFD_IOC_EXPORT_DMABUF",
        0x25 => "AMDKFD_IOC_RUNTIME_ENABLE",
        _ => return None,
    })
}

// mmap offsets on /dev/kfd (kfd_priv.h).
pub const KFD_MMAP_TYPE_SHIFT: u64 = 62;
pub const KFD_MMAP_TYPE_MASK: u64 = 0x3 << KFD_MMAP_TYPE_SHIFT;
pub const KFD_MMAP_TYPE_DOORBELL: u64 = 0x3 << KFD_MMAP_TYPE_SHIFT;
pub const KFD_MMAP_TYPE_EVENTS: u64 = 0x2 << KFD_MMAP_TYPE_SHIFT;
pub const KFD_MMAP_TYPE_RESERVED_MEM: u64 = 0x1 << KFD_MMAP_TYPE_SHIFT;
pub const KFD_MMAP_TYPE_MMIO: u64 = 0x0 << KFD_MMAP_TYPE_SHIFT;
pub const KFD_MMAP_GPU_ID_SHIFT: u64 = 46;
pub const KFD_GPU_ID_HASH_WIDTH: u64 = 16;
pub const KFD_MMAP_GPU_ID_MASK: u64 = ((1 << KFD_GPU_ID_HASH_WIDTH) - 1) << KFD_MMAP_GPU_ID_SHIFT;
pub const KFD_MMAP_OFFSET_VALUE_MASK: u64 = (1 << KFD_MMAP_GPU_ID_SHIFT) - 1;
/// Bytes of the per-process doorbell slice on gfx9+ (1024 × 64-bit doorbells).
pub const KFD_DOORBELL_SLICE_SIZE: u64 = 8192;

/// `KFD_MMAP_GPU_ID(gpu_id)`.
pub const fn kfd_mmap_gpu_id(gpu_id: u32) -> u64 {
    ((gpu_id as u64) << KFD_MMAP_GPU_ID_SHIFT) & KFD_MMAP_GPU_ID_MASK
}

/// Splits an encoded offset into (type, gpu_id, value).
pub const fn kfd_mmap_decode(offset: u64) -> (u64, u32, u64) {
    (
        offset & KFD_MMAP_TYPE_MASK,
        ((offset & KFD_MMAP_GPU_ID_MASK) >> KFD_MMAP_GPU_ID_SHIFT) as u32,
        offset & KFD_MMAP_OFFSET_VALUE_MASK,
    )
}

super::ioctl_fn!(
    /// GET_VERSION on `/dev/kfd` (any version).
    get_version,
    AMDKFD_IOC_GET_VERSION,
    kfd_ioctl_get_version_args
);
super::ioctl_fn!(
    /// CREATE_QUEUE on `/dev/kfd`. The kernel keeps the ring, rptr/wptr, EOP and CWSR
    /// buffers referenced (and, on ≥ 6.12, refuses to unmap them) until DESTROY_QUEUE.
    create_queue,
    AMDKFD_IOC_CREATE_QUEUE,
    kfd_ioctl_create_queue_args
);
super::ioctl_fn!(
    /// DESTROY_QUEUE on `/dev/kfd`.
    destroy_queue,
    AMDKFD_IOC_DESTROY_QUEUE,
    kfd_ioctl_destroy_queue_args
);
super::ioctl_fn!(
    /// GET_CLOCK_COUNTERS on `/dev/kfd`.
    get_clock_counters,
    AMDKFD_IOC_GET_CLOCK_COUNTERS,
    kfd_ioctl_get_clock_counters_args
);
super::ioctl_fn!(
    /// CREATE_EVENT on `/dev/kfd`. With a user event page, `event_page_offset` carries the
    /// page BO's handle and the kernel writes event slots into that BO.
    create_event,
    AMDKFD_IOC_CREATE_EVENT,
    kfd_ioctl_create_event_args
);
super::ioctl_fn!(
    /// DESTROY_EVENT on `/dev/kfd`.
    destroy_event,
    AMDKFD_IOC_DESTROY_EVENT,
    kfd_ioctl_destroy_event_args
);
super::ioctl_fn!(
    /// SET_EVENT on `/dev/kfd`.
    set_event,
    AMDKFD_IOC_SET_EVENT,
    kfd_ioctl_set_event_args
);
super::ioctl_fn!(
    /// RESET_EVENT on `/dev/kfd`.
    reset_event,
    AMDKFD_IOC_RESET_EVENT,
    kfd_ioctl_reset_event_args
);
super::ioctl_fn!(
    /// WAIT_EVENTS on `/dev/kfd`; reads and writes back `num_events` `kfd_event_data`.
    wait_events,
    AMDKFD_IOC_WAIT_EVENTS,
    kfd_ioctl_wait_events_args
);
super::ioctl_fn!(
    /// GET_PROCESS_APERTURES_NEW on `/dev/kfd`; writes `num_of_nodes` apertures.
    get_process_apertures_new,
    AMDKFD_IOC_GET_PROCESS_APERTURES_NEW,
    kfd_ioctl_get_process_apertures_new_args
);
super::ioctl_fn!(
    /// ACQUIRE_VM on `/dev/kfd` (v1.0+): turns the render fd's VM into this process's
    /// compute VM; the kernel keeps a reference to the DRM file.
    acquire_vm,
    AMDKFD_IOC_ACQUIRE_VM,
    kfd_ioctl_acquire_vm_args
);
super::ioctl_fn!(
    /// ALLOC_MEMORY_OF_GPU on `/dev/kfd`.
    alloc_memory_of_gpu,
    AMDKFD_IOC_ALLOC_MEMORY_OF_GPU,
    kfd_ioctl_alloc_memory_of_gpu_args
);
super::ioctl_fn!(
    /// FREE_MEMORY_OF_GPU on `/dev/kfd` (EBUSY while mapped).
    free_memory_of_gpu,
    AMDKFD_IOC_FREE_MEMORY_OF_GPU,
    kfd_ioctl_free_memory_of_gpu_args
);
super::ioctl_fn!(
    /// MAP_MEMORY_TO_GPU on `/dev/kfd`; reads `n_devices` gpu ids.
    map_memory_to_gpu,
    AMDKFD_IOC_MAP_MEMORY_TO_GPU,
    kfd_ioctl_map_memory_to_gpu_args
);
super::ioctl_fn!(
    /// UNMAP_MEMORY_FROM_GPU on `/dev/kfd`; reads `n_devices` gpu ids.
    unmap_memory_from_gpu,
    AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU,
    kfd_ioctl_unmap_memory_from_gpu_args
);
super::ioctl_fn!(
    /// IMPORT_DMABUF on `/dev/kfd` (v1.0+; foreign dma-bufs ≈ 6.7+): the BO keeps a
    /// reference to the dma-buf.
    import_dmabuf,
    AMDKFD_IOC_IMPORT_DMABUF,
    kfd_ioctl_import_dmabuf_args
);
super::ioctl_fn!(
    /// AVAILABLE_MEMORY on `/dev/kfd` (v1.9+).
    available_memory,
    AMDKFD_IOC_AVAILABLE_MEMORY,
    kfd_ioctl_get_available_memory_args
);
super::ioctl_fn!(
    /// EXPORT_DMABUF on `/dev/kfd` (v1.12+).
    export_dmabuf,
    AMDKFD_IOC_EXPORT_DMABUF,
    kfd_ioctl_export_dmabuf_args
);
super::ioctl_fn!(
    /// RUNTIME_ENABLE on `/dev/kfd` (v1.13+).
    runtime_enable,
    AMDKFD_IOC_RUNTIME_ENABLE,
    kfd_ioctl_runtime_enable_args
);
