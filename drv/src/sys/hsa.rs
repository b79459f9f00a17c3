//! HSA/AMD structures the CP firmware reads: AQL packets, `amd_queue_t`, `amd_signal_t`
//! (ROCR-Runtime `hsa.h`, `amd_hsa_queue.h`, `amd_hsa_signal.h`). Offsets are ABI.

#![allow(non_camel_case_types)]

use std::mem::{offset_of, size_of};

/// `hsa_packet_type_t`.
pub const HSA_PACKET_TYPE_VENDOR_SPECIFIC: u16 = 0;
pub const HSA_PACKET_TYPE_INVALID: u16 = 1;
pub const HSA_PACKET_TYPE_KERNEL_DISPATCH: u16 = 2;
pub const HSA_PACKET_TYPE_BARRIER_AND: u16 = 3;
pub const HSA_PACKET_TYPE_AGENT_DISPATCH: u16 = 4;
pub const HSA_PACKET_TYPE_BARRIER_OR: u16 = 5;
/// Header bit positions.
pub const HSA_PACKET_HEADER_TYPE: u16 = 0;
pub const HSA_PACKET_HEADER_BARRIER: u16 = 8;
pub const HSA_PACKET_HEADER_SCACQUIRE_FENCE_SCOPE: u16 = 9;
pub const HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE: u16 = 11;
/// `hsa_fence_scope_t`.
pub const HSA_FENCE_SCOPE_NONE: u16 = 0;
pub const HSA_FENCE_SCOPE_AGENT: u16 = 1;
pub const HSA_FENCE_SCOPE_SYSTEM: u16 = 2;
/// `HSA_KERNEL_DISPATCH_PACKET_SETUP_DIMENSIONS` shift.
pub const HSA_KERNEL_DISPATCH_PACKET_SETUP_DIMENSIONS: u16 = 0;

/// Bytes of every AQL packet.
pub const AQL_PACKET_SIZE: usize = 64;

/// `hsa_kernel_dispatch_packet_t`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct hsa_kernel_dispatch_packet_t {
    pub header: u16,
    pub setup: u16,
    pub workgroup_size_x: u16,
    pub workgroup_size_y: u16,
    pub workgroup_size_z: u16,
    pub reserved0: u16,
    pub grid_size_x: u32,
    pub grid_size_y: u32,
    pub grid_size_z: u32,
    pub private_segment_size: u32,
    pub group_segment_size: u32,
    pub kernel_object: u64,
    pub kernarg_address: u64,
    pub reserved2: u64,
    pub completion_signal: u64,
}
const _: () = assert!(size_of::<hsa_kernel_dispatch_packet_t>() == 64);
const _: () = assert!(offset_of!(hsa_kernel_dispatch_packet_t, grid_size_x) == 12);
const _: () = assert!(offset_of!(hsa_kernel_dispatch_packet_t, private_segment_size) == 24);
const _: () = assert!(offset_of!(hsa_kernel_dispatch_packet_t, kernel_object) == 32);
const _: () = assert!(offset_of!(hsa_kernel_dispatch_packet_t, kernarg_address) == 40);
const _: () = assert!(offset_of!(hsa_kernel_dispatch_packet_t, completion_signal) == 56);

/// `hsa_barrier_and_packet_t` (the OR packet has the same layout).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct hsa_barrier_and_packet_t {
    pub header: u16,
    pub reserved0: u16,
    pub reserved1: u32,
    pub dep_signal: [u64; 5],
    pub reserved2: u64,
    pub completion_signal: u64,
}
const _: () = assert!(size_of::<hsa_barrier_and_packet_t>() == 64);
const _: () = assert!(offset_of!(hsa_barrier_and_packet_t, dep_signal) == 8);
const _: () = assert!(offset_of!(hsa_barrier_and_packet_t, completion_signal) == 56);

/// `hsa_queue_t`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct hsa_queue_t {
    pub type_: u32,
    pub features: u32,
    pub base_address: u64,
    pub doorbell_signal: u64,
    pub size: u32,
    pub reserved1: u32,
    pub id: u64,
}
const _: () = assert!(size_of::<hsa_queue_t>() == 40);

/// `HSA_QUEUE_TYPE_SINGLE`.
pub const HSA_QUEUE_TYPE_SINGLE: u32 = 1;
/// `HSA_QUEUE_FEATURE_KERNEL_DISPATCH`.
pub const HSA_QUEUE_FEATURE_KERNEL_DISPATCH: u32 = 1;
/// `amd_queue_properties_t` bits.
pub const AMD_QUEUE_PROPERTIES_ENABLE_TRAP_HANDLER: u32 = 1 << 0;
pub const AMD_QUEUE_PROPERTIES_IS_PTR64: u32 = 1 << 1;
pub const AMD_QUEUE_PROPERTIES_ENABLE_PROFILING: u32 = 1 << 3;

/// `amd_queue_t` (256 B, 64-byte aligned).
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
pub struct amd_queue_t {
    pub hsa_queue: hsa_queue_t,
    pub caps: u32,
    pub reserved1: [u32; 3],
    pub write_dispatch_id: u64,
    pub group_segment_aperture_base_hi: u32,
    pub private_segment_aperture_base_hi: u32,
    pub max_cu_id: u32,
    pub max_wave_id: u32,
    pub max_legacy_doorbell_dispatch_id_plus_1: u64,
    pub legacy_doorbell_lock: u32,
    pub reserved2: [u32; 9],
    pub read_dispatch_id: u64,
    pub read_dispatch_id_field_base_byte_offset: u32,
    pub compute_tmpring_size: u32,
    pub scratch_resource_descriptor: [u32; 4],
    pub scratch_backing_memory_location: u64,
    pub scratch_backing_memory_byte_size: u64,
    pub scratch_wave64_lane_byte_size: u32,
    pub queue_properties: u32,
    pub scratch_last_used_index: u64,
    pub queue_inactive_signal: u64,
    pub reserved4: [u32; 14],
}
const _: () = assert!(size_of::<amd_queue_t>() == 256);
const _: () = assert!(offset_of!(amd_queue_t, caps) == 40);
const _: () = assert!(offset_of!(amd_queue_t, write_dispatch_id) == 56);
const _: () = assert!(offset_of!(amd_queue_t, group_segment_aperture_base_hi) == 64);
const _: () = assert!(offset_of!(amd_queue_t, max_cu_id) == 72);
const _: () = assert!(offset_of!(amd_queue_t, legacy_doorbell_lock) == 88);
const _: () = assert!(offset_of!(amd_queue_t, read_dispatch_id) == 128);
const _: () = assert!(offset_of!(amd_queue_t, compute_tmpring_size) == 140);
const _: () = assert!(offset_of!(amd_queue_t, scratch_backing_memory_location) == 160);
const _: () = assert!(offset_of!(amd_queue_t, queue_properties) == 180);
const _: () = assert!(offset_of!(amd_queue_t, queue_inactive_signal) == 192);

impl Default for amd_queue_t {
    fn default() -> Self {
        // SAFETY: all-zero is a valid value for this plain-integer struct.
        unsafe { std::mem::zeroed() }
    }
}

/// Byte offset of `write_dispatch_id` (KFD `write_pointer_address`).
pub const AMD_QUEUE_WPTR_OFFSET: u64 = offset_of!(amd_queue_t, write_dispatch_id) as u64;
/// Byte offset of `read_dispatch_id` (KFD `read_pointer_address`).
pub const AMD_QUEUE_RPTR_OFFSET: u64 = offset_of!(amd_queue_t, read_dispatch_id) as u64;

/// `amd_signal_kind_t`.
pub const AMD_SIGNAL_KIND_INVALID: i64 = 0;
pub const AMD_SIGNAL_KIND_USER: i64 = 1;
pub const AMD_SIGNAL_KIND_DOORBELL: i64 = -1;

/// `amd_signal_t` (64 B, 64-byte aligned; its GPU VA is the signal handle).
#[repr(C, align(64))]
#[derive(Debug, Default, Clone, Copy)]
pub struct amd_signal_t {
    pub kind: i64,
    pub value: i64,
    pub event_mailbox_ptr: u64,
    pub event_id: u32,
    pub reserved1: u32,
    pub start_ts: u64,
    pub end_ts: u64,
    pub queue_ptr: u64,
    pub reserved3: [u32; 2],
}
const _: () = assert!(size_of::<amd_signal_t>() == 64);
const _: () = assert!(offset_of!(amd_signal_t, value) == 8);
const _: () = assert!(offset_of!(amd_signal_t, event_mailbox_ptr) == 16);
const _: () = assert!(offset_of!(amd_signal_t, event_id) == 24);
const _: () = assert!(offset_of!(amd_signal_t, start_ts) == 32);
const _: () = assert!(offset_of!(amd_signal_t, queue_ptr) == 48);

/// Byte offset of `value` inside `amd_signal_t`.
pub const AMD_SIGNAL_VALUE_OFFSET: u64 = offset_of!(amd_signal_t, value) as u64;
