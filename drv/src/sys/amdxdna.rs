//! `include/uapi/drm/amdxdna_accel.h` (Linux 6.14+, the XDNA/XDNA2 NPU on `/dev/accel/accel*`)
//! plus the generic DRM structs the NPU path needs (`drm.h`: VERSION, GEM_CLOSE, PRIME,
//! timeline syncobjs) and the ERT command-buffer layout the driver reads (`amdxdna_ctx.h`).
//!
//! Kernel spelling is kept so that a grep against the headers finds every field. Layouts
//! are x86-64; each struct carries a compile-time size assertion and the offsets the
//! reference documents are checked in the tests below.

#![allow(non_camel_case_types)]

use std::mem::size_of;

use super::{iow, iowr};

// ---------------------------------------------------------------------------------------
// Request numbers
// ---------------------------------------------------------------------------------------

/// DRM's ioctl type letter.
pub const DRM_IOCTL_BASE: u8 = b'd';
/// Driver-private DRM ioctls start here.
pub const DRM_COMMAND_BASE: u8 = 0x40;

const fn drm_iowr<T>(nr: u8) -> u64 {
    iowr::<T>(DRM_IOCTL_BASE, nr)
}
const fn drm_iow<T>(nr: u8) -> u64 {
    iow::<T>(DRM_IOCTL_BASE, nr)
}

pub const DRM_AMDXDNA_CREATE_HWCTX: u8 = 0;
pub const DRM_AMDXDNA_DESTROY_HWCTX: u8 = 1;
pub const DRM_AMDXDNA_CONFIG_HWCTX: u8 = 2;
pub const DRM_AMDXDNA_CREATE_BO: u8 = 3;
pub const DRM_AMDXDNA_GET_BO_INFO: u8 = 4;
pub const DRM_AMDXDNA_SYNC_BO: u8 = 5;
pub const DRM_AMDXDNA_EXEC_CMD: u8 = 6;
pub const DRM_AMDXDNA_GET_INFO: u8 = 7;
pub const DRM_AMDXDNA_SET_STATE: u8 = 8;
/// Driver version 0.1 and later.
pub const DRM_AMDXDNA_GET_ARRAY: u8 = 10;

pub const DRM_IOCTL_AMDXDNA_CREATE_HWCTX: u64 =
    drm_iowr::<amdxdna_drm_create_hwctx>(DRM_COMMAND_BASE + DRM_AMDXDNA_CREATE_HWCTX);
pub const DRM_IOCTL_AMDXDNA_DESTROY_HWCTX: u64 =
    drm_iowr::<amdxdna_drm_destroy_hwctx>(DRM_COMMAND_BASE + DRM_AMDXDNA_DESTROY_HWCTX);
pub const DRM_IOCTL_AMDXDNA_CONFIG_HWCTX: u64 =
    drm_iowr::<amdxdna_drm_config_hwctx>(DRM_COMMAND_BASE + DRM_AMDXDNA_CONFIG_HWCTX);
pub const DRM_IOCTL_AMDXDNA_CREATE_BO: u64 =
    drm_iowr::<amdxdna_drm_create_bo>(DRM_COMMAND_BASE + DRM_AMDXDNA_CREATE_BO);
pub const DRM_IOCTL_AMDXDNA_GET_BO_INFO: u64 =
    drm_iowr::<amdxdna_drm_get_bo_info>(DRM_COMMAND_BASE + DRM_AMDXDNA_GET_BO_INFO);
pub const DRM_IOCTL_AMDXDNA_SYNC_BO: u64 =
    drm_iowr::<amdxdna_drm_sync_bo>(DRM_COMMAND_BASE + DRM_AMDXDNA_SYNC_BO);
pub const DRM_IOCTL_AMDXDNA_EXEC_CMD: u64 =
    drm_iowr::<amdxdna_drm_exec_cmd>(DRM_COMMAND_BASE + DRM_AMDXDNA_EXEC_CMD);
pub const DRM_IOCTL_AMDXDNA_GET_INFO: u64 =
    drm_iowr::<amdxdna_drm_get_info>(DRM_COMMAND_BASE + DRM_AMDXDNA_GET_INFO);
pub const DRM_IOCTL_AMDXDNA_SET_STATE: u64 =
    drm_iowr::<amdxdna_drm_set_state>(DRM_COMMAND_BASE + DRM_AMDXDNA_SET_STATE);
pub const DRM_IOCTL_AMDXDNA_GET_ARRAY: u64 =
    drm_iowr::<amdxdna_drm_get_array>(DRM_COMMAND_BASE + DRM_AMDXDNA_GET_ARRAY);

pub const DRM_IOCTL_VERSION: u64 = drm_iowr::<drm_version>(0x00);
pub const DRM_IOCTL_GEM_CLOSE: u64 = drm_iow::<drm_gem_close>(0x09);
pub const DRM_IOCTL_PRIME_HANDLE_TO_FD: u64 = drm_iowr::<drm_prime_handle>(0x2d);
pub const DRM_IOCTL_PRIME_FD_TO_HANDLE: u64 = drm_iowr::<drm_prime_handle>(0x2e);
pub const DRM_IOCTL_SYNCOBJ_CREATE: u64 = drm_iowr::<drm_syncobj_create>(0xbf);
pub const DRM_IOCTL_SYNCOBJ_DESTROY: u64 = drm_iowr::<drm_syncobj_destroy>(0xc0);
pub const DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT: u64 = drm_iowr::<drm_syncobj_timeline_wait>(0xca);
pub const DRM_IOCTL_SYNCOBJ_QUERY: u64 = drm_iowr::<drm_syncobj_timeline_array>(0xcb);
pub const DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL: u64 = drm_iowr::<drm_syncobj_timeline_array>(0xcd);

// ---------------------------------------------------------------------------------------
// amdxdna structs
// ---------------------------------------------------------------------------------------

/// QoS hints; all zero means "driver defaults".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_qos_info {
    pub gops: u32,
    pub fps: u32,
    pub dma_bandwidth: u32,
    pub latency: u32,
    pub frame_exec_time: u32,
    pub priority: u32,
}

/// xdna-driver priority values for [`amdxdna_qos_info::priority`].
pub const AMDXDNA_QOS_REALTIME_PRIORITY: u32 = 0x100;
pub const AMDXDNA_QOS_HIGH_PRIORITY: u32 = 0x180;
pub const AMDXDNA_QOS_NORMAL_PRIORITY: u32 = 0x200;
pub const AMDXDNA_QOS_LOW_PRIORITY: u32 = 0x280;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_create_hwctx {
    pub ext: u64,
    pub ext_flags: u64,
    /// Pointer to an [`amdxdna_qos_info`]; the kernel copies it during the call.
    pub qos_p: u64,
    pub umq_bo: u32,
    pub log_buf_bo: u32,
    pub max_opc: u32,
    pub num_tiles: u32,
    pub mem_size: u32,
    pub umq_doorbell: u32,
    pub handle: u32,
    pub syncobj_handle: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_destroy_hwctx {
    pub handle: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_cu_config {
    /// A DEV BO holding the PDI.
    pub cu_bo: u32,
    pub cu_func: u8,
    pub pad: [u8; 3],
}

/// Header of the CONFIG_CU payload; `num_cus` [`amdxdna_cu_config`] follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_hwctx_param_config_cu {
    pub num_cus: u16,
    pub pad: [u16; 3],
}

pub const DRM_AMDXDNA_HWCTX_CONFIG_CU: u32 = 0;
pub const DRM_AMDXDNA_HWCTX_ASSIGN_DBG_BUF: u32 = 1;
pub const DRM_AMDXDNA_HWCTX_REMOVE_DBG_BUF: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_config_hwctx {
    pub handle: u32,
    pub param_type: u32,
    /// Pointer to the payload (or the value itself for scalar params).
    pub param_val: u64,
    pub param_val_size: u32,
    pub pad: u32,
}

pub const AMDXDNA_BO_INVALID: u32 = 0;
/// `AMDXDNA_INVALID_ADDR` (~0UL): an address GET_BO_INFO does not know (yet).
pub const AMDXDNA_INVALID_ADDR: u64 = !0;
/// Also called SHMEM.
pub const AMDXDNA_BO_SHARE: u32 = 1;
pub const AMDXDNA_BO_DEV_HEAP: u32 = 2;
pub const AMDXDNA_BO_DEV: u32 = 3;
pub const AMDXDNA_BO_CMD: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_va_entry {
    pub vaddr: u64,
    pub len: u64,
}

/// Header of a va table; `num_entries` [`amdxdna_drm_va_entry`] follow. With
/// `num_entries == 0` the kernel imports `dmabuf_fd` instead (driver 6.18+).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_va_tbl {
    pub dmabuf_fd: i32,
    pub num_entries: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_create_bo {
    pub flags: u64,
    /// 0, or (SHARE on 6.18+) a pointer to an [`amdxdna_drm_va_tbl`].
    pub vaddr: u64,
    pub size: u64,
    pub r#type: u32,
    pub handle: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_get_bo_info {
    pub ext: u64,
    pub ext_flags: u64,
    pub handle: u32,
    pub pad: u32,
    pub map_offset: u64,
    pub vaddr: u64,
    pub xdna_addr: u64,
}

pub const SYNC_DIRECT_TO_DEVICE: u32 = 0;
pub const SYNC_DIRECT_FROM_DEVICE: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_sync_bo {
    pub handle: u32,
    pub direction: u32,
    pub offset: u64,
    pub size: u64,
}

pub const AMDXDNA_CMD_SUBMIT_EXEC_BUF: u32 = 0;
pub const AMDXDNA_CMD_SUBMIT_DEPENDENCY: u32 = 1;
pub const AMDXDNA_CMD_SUBMIT_SIGNAL: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_exec_cmd {
    pub ext: u64,
    pub ext_flags: u64,
    pub hwctx: u32,
    pub r#type: u32,
    /// The command BO handle itself when `cmd_count == 1` (all upstream accepts).
    pub cmd_handles: u64,
    /// Pointer to `arg_count` u32 BO handles the command touches.
    pub args: u64,
    pub cmd_count: u32,
    pub arg_count: u32,
    /// Out: the timeline point signalled on the context's syncobj when the command ends.
    pub seq: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_aie_version {
    pub major: u32,
    pub minor: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_aie_tile_metadata {
    pub row_count: u16,
    pub row_start: u16,
    pub dma_channel_count: u16,
    pub lock_count: u16,
    pub event_reg_count: u16,
    pub pad: [u16; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_aie_metadata {
    pub col_size: u32,
    pub cols: u16,
    pub rows: u16,
    pub version: amdxdna_drm_query_aie_version,
    pub core: amdxdna_drm_query_aie_tile_metadata,
    pub mem: amdxdna_drm_query_aie_tile_metadata,
    pub shim: amdxdna_drm_query_aie_tile_metadata,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_clock {
    pub name: [u8; 16],
    pub freq_mhz: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_clock_metadata {
    pub mp_npu_clock: amdxdna_drm_query_clock,
    pub h_clock: amdxdna_drm_query_clock,
}

/// One GET_INFO(HW_CONTEXTS) entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_hwctx {
    pub context_id: u32,
    pub start_col: u32,
    pub num_col: u32,
    pub pad: u32,
    pub pid: i64,
    pub command_submissions: u64,
    pub command_completions: u64,
    pub migrations: u64,
    pub preemptions: u64,
    pub errors: u64,
}

pub const POWER_MODE_DEFAULT: u8 = 0;
pub const POWER_MODE_LOW: u8 = 1;
pub const POWER_MODE_MEDIUM: u8 = 2;
pub const POWER_MODE_HIGH: u8 = 3;
pub const POWER_MODE_TURBO: u8 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_get_power_mode {
    pub power_mode: u8,
    pub pad: [u8; 7],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_query_firmware_version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    pub build: u32,
}

pub const DRM_AMDXDNA_QUERY_AIE_STATUS: u32 = 0;
pub const DRM_AMDXDNA_QUERY_AIE_METADATA: u32 = 1;
pub const DRM_AMDXDNA_QUERY_AIE_VERSION: u32 = 2;
pub const DRM_AMDXDNA_QUERY_CLOCK_METADATA: u32 = 3;
pub const DRM_AMDXDNA_QUERY_SENSORS: u32 = 4;
pub const DRM_AMDXDNA_QUERY_HW_CONTEXTS: u32 = 5;
pub const DRM_AMDXDNA_QUERY_FIRMWARE_VERSION: u32 = 8;
pub const DRM_AMDXDNA_GET_POWER_MODE: u32 = 9;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_get_info {
    pub param: u32,
    /// In: capacity of `buffer`; out: bytes the kernel wrote.
    pub buffer_size: u32,
    pub buffer: u64,
}

pub const AMDXDNA_HWCTX_STATE_IDLE: u32 = 0;
pub const AMDXDNA_HWCTX_STATE_ACTIVE: u32 = 1;

/// One GET_ARRAY(HW_CONTEXT_ALL) element. The kernel writes `min(element_size, its size)`
/// bytes, so older kernels leave the tail zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_hwctx_entry {
    pub context_id: u32,
    pub start_col: u32,
    pub num_col: u32,
    pub hwctx_id: u32,
    pub pid: i64,
    pub command_submissions: u64,
    pub command_completions: u64,
    pub migrations: u64,
    pub preemptions: u64,
    pub errors: u64,
    pub priority: u64,
    pub heap_usage: u64,
    pub suspensions: u64,
    pub state: u32,
    pub pasid: u32,
    pub gops: u32,
    pub fps: u32,
    pub dma_bandwidth: u32,
    pub latency: u32,
    pub frame_exec_time: u32,
    pub txn_op_idx: u32,
    pub ctx_pc: u32,
    pub fatal_error_type: u32,
    pub fatal_error_exception_type: u32,
    pub fatal_error_exception_pc: u32,
    pub fatal_error_app_module: u32,
    pub pad: u32,
}

pub const DRM_AMDXDNA_HW_CONTEXT_ALL: u32 = 0;
pub const DRM_AMDXDNA_HW_CONTEXT_BY_ID: u32 = 1;
pub const DRM_AMDXDNA_HW_LAST_ASYNC_ERR: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_get_array {
    pub param: u32,
    pub element_size: u32,
    pub num_element: u32,
    pub pad: u32,
    pub buffer: u64,
}

pub const DRM_AMDXDNA_SET_POWER_MODE: u32 = 0;
pub const DRM_AMDXDNA_WRITE_AIE_MEM: u32 = 1;
pub const DRM_AMDXDNA_WRITE_AIE_REG: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_set_state {
    pub param: u32,
    pub buffer_size: u32,
    pub buffer: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_drm_set_power_mode {
    pub power_mode: u8,
    pub pad: [u8; 7],
}

// ---------------------------------------------------------------------------------------
// Driver facts that are not in the uapi header (amdxdna_ctx.h, aie2_*.c, npu4_regs.c)
// ---------------------------------------------------------------------------------------

/// Where the NPU sees the per-process device heap.
pub const AIE2_DEVM_BASE: u64 = 0x400_0000;
/// `dev_mem_size` of the AIE2 parts (`AIE2_DEVM_SIZE`, aie2_pci.h; npu4_regs.c): the one
/// device heap a process may create is at most this big. The 6.14 driver answers a larger
/// heap with EINVAL and a second heap with EBUSY (`amdxdna_drm_create_dev_heap`).
pub const AIE2_DEVM_SIZE: u64 = 64 << 20;
/// DEV BOs are carved from the heap at this alignment (PDIs go to the firmware as addr >> 15).
pub const AIE2_DEV_BO_ALIGN: u64 = 32 << 10;
/// Newer kernels reject larger command BOs.
pub const XDNA_MAX_CMD_BO_SIZE: u64 = 32 << 10;
/// `MAX_NPU_ARGS_SIZE` of aie2_message.c: argument (plus property) words a START_NPU
/// command may carry once the driver wraps it into a firmware command list.
pub const MAX_NPU_ARGS_WORDS: usize = 26;
/// Up to 32 CUs per CONFIG_CU.
pub const MAX_CUS: usize = 32;
/// npu4 (Strix Point / Strix Halo) concurrent hardware contexts.
pub const NPU4_MAX_HWCTX: usize = 16;
/// `MAX_ARG_COUNT` of amdxdna_ctx.c.
pub const MAX_ARG_COUNT: u32 = 4095;

// ---------------------------------------------------------------------------------------
// ERT command packets (the first word of every CMD BO)
// ---------------------------------------------------------------------------------------

pub const ERT_CMD_STATE_NEW: u32 = 1;
pub const ERT_CMD_STATE_QUEUED: u32 = 2;
pub const ERT_CMD_STATE_RUNNING: u32 = 3;
pub const ERT_CMD_STATE_COMPLETED: u32 = 4;
pub const ERT_CMD_STATE_ERROR: u32 = 5;
pub const ERT_CMD_STATE_ABORT: u32 = 6;
pub const ERT_CMD_STATE_SUBMITTED: u32 = 7;
pub const ERT_CMD_STATE_TIMEOUT: u32 = 8;
pub const ERT_CMD_STATE_NORESPONSE: u32 = 9;

pub const ERT_START_CU: u32 = 0;
pub const ERT_START_DPU: u32 = 18;
pub const ERT_CMD_CHAIN: u32 = 19;
pub const ERT_START_NPU: u32 = 20;
pub const ERT_START_NPU_PREEMPT: u32 = 21;

/// `ert_cmd_type::ERT_CU`, what XRT writes in the header's type field (the driver ignores it).
pub const ERT_CU: u32 = 3;

/// Header bit fields (`AMDXDNA_CMD_*` masks).
pub const AMDXDNA_CMD_STATE_SHIFT: u32 = 0;
pub const AMDXDNA_CMD_STATE_MASK: u32 = 0xf;
pub const AMDXDNA_CMD_EXTRA_CU_MASK_SHIFT: u32 = 10;
pub const AMDXDNA_CMD_EXTRA_CU_MASK_MASK: u32 = 0x3;
pub const AMDXDNA_CMD_COUNT_SHIFT: u32 = 12;
pub const AMDXDNA_CMD_COUNT_MASK: u32 = 0x7ff;
pub const AMDXDNA_CMD_OPCODE_SHIFT: u32 = 23;
pub const AMDXDNA_CMD_OPCODE_MASK: u32 = 0x1f;
pub const AMDXDNA_CMD_TYPE_SHIFT: u32 = 28;
pub const AMDXDNA_CMD_TYPE_MASK: u32 = 0xf;

/// START_NPU payload after the CU mask word(s); `prop_count` property words and then the
/// kernel arguments follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_cmd_start_npu {
    pub buffer: u64,
    pub buffer_size: u32,
    pub prop_count: u32,
}

/// CMD_CHAIN payload (no CU mask); `command_count` u64 CMD BO handles follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct amdxdna_cmd_chain {
    pub command_count: u32,
    pub submit_index: u32,
    pub error_index: u32,
    pub reserved: [u32; 3],
}

// ---------------------------------------------------------------------------------------
// Generic DRM (`include/uapi/drm/drm.h`)
// ---------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_version {
    pub version_major: i32,
    pub version_minor: i32,
    pub version_patchlevel: i32,
    pub name_len: usize,
    pub name: u64,
    pub date_len: usize,
    pub date: u64,
    pub desc_len: usize,
    pub desc: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_gem_close {
    pub handle: u32,
    pub pad: u32,
}

pub const DRM_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
pub const DRM_RDWR: u32 = libc::O_RDWR as u32;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_prime_handle {
    pub handle: u32,
    pub flags: u32,
    pub fd: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_syncobj_create {
    pub handle: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_syncobj_destroy {
    pub handle: u32,
    pub pad: u32,
}

pub const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL: u32 = 1 << 0;
pub const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT: u32 = 1 << 1;
pub const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE: u32 = 1 << 2;
pub const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_DEADLINE: u32 = 1 << 3;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_syncobj_timeline_wait {
    pub handles: u64,
    pub points: u64,
    /// Absolute CLOCK_MONOTONIC nanoseconds.
    pub timeout_nsec: i64,
    pub count_handles: u32,
    pub flags: u32,
    pub first_signaled: u32,
    pub pad: u32,
    pub deadline_nsec: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct drm_syncobj_timeline_array {
    pub handles: u64,
    pub points: u64,
    pub count_handles: u32,
    pub flags: u32,
}

// ---------------------------------------------------------------------------------------
// Layout assertions
// ---------------------------------------------------------------------------------------

const _: () = assert!(size_of::<amdxdna_qos_info>() == 24);
const _: () = assert!(size_of::<amdxdna_drm_create_hwctx>() == 56);
const _: () = assert!(size_of::<amdxdna_drm_destroy_hwctx>() == 8);
const _: () = assert!(size_of::<amdxdna_cu_config>() == 8);
const _: () = assert!(size_of::<amdxdna_hwctx_param_config_cu>() == 8);
const _: () = assert!(size_of::<amdxdna_drm_config_hwctx>() == 24);
const _: () = assert!(size_of::<amdxdna_drm_va_entry>() == 16);
const _: () = assert!(size_of::<amdxdna_drm_va_tbl>() == 8);
const _: () = assert!(size_of::<amdxdna_drm_create_bo>() == 32);
const _: () = assert!(size_of::<amdxdna_drm_get_bo_info>() == 48);
const _: () = assert!(size_of::<amdxdna_drm_sync_bo>() == 24);
const _: () = assert!(size_of::<amdxdna_drm_exec_cmd>() == 56);
const _: () = assert!(size_of::<amdxdna_drm_query_aie_version>() == 8);
const _: () = assert!(size_of::<amdxdna_drm_query_aie_tile_metadata>() == 16);
const _: () = assert!(size_of::<amdxdna_drm_query_aie_metadata>() == 64);
const _: () = assert!(size_of::<amdxdna_drm_query_clock>() == 24);
const _: () = assert!(size_of::<amdxdna_drm_query_clock_metadata>() == 48);
const _: () = assert!(size_of::<amdxdna_drm_query_hwctx>() == 64);
const _: () = assert!(size_of::<amdxdna_drm_get_power_mode>() == 8);
const _: () = assert!(size_of::<amdxdna_drm_query_firmware_version>() == 16);
const _: () = assert!(size_of::<amdxdna_drm_get_info>() == 16);
const _: () = assert!(size_of::<amdxdna_drm_hwctx_entry>() == 144);
const _: () = assert!(size_of::<amdxdna_drm_get_array>() == 24);
const _: () = assert!(size_of::<amdxdna_drm_set_state>() == 16);
const _: () = assert!(size_of::<amdxdna_drm_set_power_mode>() == 8);
const _: () = assert!(size_of::<amdxdna_cmd_start_npu>() == 16);
const _: () = assert!(size_of::<amdxdna_cmd_chain>() == 24);
const _: () = assert!(size_of::<drm_version>() == 64);
const _: () = assert!(size_of::<drm_gem_close>() == 8);
const _: () = assert!(size_of::<drm_prime_handle>() == 12);
const _: () = assert!(size_of::<drm_syncobj_create>() == 8);
const _: () = assert!(size_of::<drm_syncobj_destroy>() == 8);
const _: () = assert!(size_of::<drm_syncobj_timeline_wait>() == 48);
const _: () = assert!(size_of::<drm_syncobj_timeline_array>() == 24);

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// The request numbers of amd-uapi.md §5.2.
    #[test]
    fn request_numbers_match_the_reference() {
        assert_eq!(DRM_IOCTL_AMDXDNA_CREATE_HWCTX, 0xc038_6440);
        assert_eq!(DRM_IOCTL_AMDXDNA_DESTROY_HWCTX, 0xc008_6441);
        assert_eq!(DRM_IOCTL_AMDXDNA_CONFIG_HWCTX, 0xc018_6442);
        assert_eq!(DRM_IOCTL_AMDXDNA_CREATE_BO, 0xc020_6443);
        assert_eq!(DRM_IOCTL_AMDXDNA_GET_BO_INFO, 0xc030_6444);
        assert_eq!(DRM_IOCTL_AMDXDNA_SYNC_BO, 0xc018_6445);
        assert_eq!(DRM_IOCTL_AMDXDNA_EXEC_CMD, 0xc038_6446);
        assert_eq!(DRM_IOCTL_AMDXDNA_GET_INFO, 0xc010_6447);
        assert_eq!(DRM_IOCTL_AMDXDNA_SET_STATE, 0xc010_6448);
        assert_eq!(DRM_IOCTL_AMDXDNA_GET_ARRAY, 0xc018_644a);
        assert_eq!(DRM_IOCTL_GEM_CLOSE, 0x4008_6409);
        assert_eq!(DRM_IOCTL_PRIME_HANDLE_TO_FD, 0xc00c_642d);
        assert_eq!(DRM_IOCTL_PRIME_FD_TO_HANDLE, 0xc00c_642e);
        assert_eq!(DRM_IOCTL_SYNCOBJ_CREATE, 0xc008_64bf);
        assert_eq!(DRM_IOCTL_SYNCOBJ_DESTROY, 0xc008_64c0);
        assert_eq!(DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT, 0xc030_64ca);
        assert_eq!(DRM_IOCTL_SYNCOBJ_QUERY, 0xc018_64cb);
        assert_eq!(DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL, 0xc018_64cd);
        assert_eq!(DRM_IOCTL_VERSION, 0xc040_6400);
    }

    /// The offsets of amd-uapi.md §5.3 (checked there with gcc on the real header).
    #[test]
    fn offsets_match_the_reference() {
        type H = amdxdna_drm_create_hwctx;
        assert_eq!(offset_of!(H, ext), 0);
        assert_eq!(offset_of!(H, ext_flags), 8);
        assert_eq!(offset_of!(H, qos_p), 16);
        assert_eq!(offset_of!(H, umq_bo), 24);
        assert_eq!(offset_of!(H, log_buf_bo), 28);
        assert_eq!(offset_of!(H, max_opc), 32);
        assert_eq!(offset_of!(H, num_tiles), 36);
        assert_eq!(offset_of!(H, mem_size), 40);
        assert_eq!(offset_of!(H, umq_doorbell), 44);
        assert_eq!(offset_of!(H, handle), 48);
        assert_eq!(offset_of!(H, syncobj_handle), 52);

        type C = amdxdna_drm_config_hwctx;
        assert_eq!(offset_of!(C, handle), 0);
        assert_eq!(offset_of!(C, param_type), 4);
        assert_eq!(offset_of!(C, param_val), 8);
        assert_eq!(offset_of!(C, param_val_size), 16);
        assert_eq!(offset_of!(C, pad), 20);

        type B = amdxdna_drm_create_bo;
        assert_eq!(offset_of!(B, flags), 0);
        assert_eq!(offset_of!(B, vaddr), 8);
        assert_eq!(offset_of!(B, size), 16);
        assert_eq!(offset_of!(B, r#type), 24);
        assert_eq!(offset_of!(B, handle), 28);

        type I = amdxdna_drm_get_bo_info;
        assert_eq!(offset_of!(I, handle), 16);
        assert_eq!(offset_of!(I, pad), 20);
        assert_eq!(offset_of!(I, map_offset), 24);
        assert_eq!(offset_of!(I, vaddr), 32);
        assert_eq!(offset_of!(I, xdna_addr), 40);

        type S = amdxdna_drm_sync_bo;
        assert_eq!(offset_of!(S, handle), 0);
        assert_eq!(offset_of!(S, direction), 4);
        assert_eq!(offset_of!(S, offset), 8);
        assert_eq!(offset_of!(S, size), 16);

        type E = amdxdna_drm_exec_cmd;
        assert_eq!(offset_of!(E, hwctx), 16);
        assert_eq!(offset_of!(E, r#type), 20);
        assert_eq!(offset_of!(E, cmd_handles), 24);
        assert_eq!(offset_of!(E, args), 32);
        assert_eq!(offset_of!(E, cmd_count), 40);
        assert_eq!(offset_of!(E, arg_count), 44);
        assert_eq!(offset_of!(E, seq), 48);

        assert_eq!(offset_of!(amdxdna_drm_get_info, buffer_size), 4);
        assert_eq!(offset_of!(amdxdna_drm_get_info, buffer), 8);

        type A = amdxdna_drm_get_array;
        assert_eq!(offset_of!(A, element_size), 4);
        assert_eq!(offset_of!(A, num_element), 8);
        assert_eq!(offset_of!(A, pad), 12);
        assert_eq!(offset_of!(A, buffer), 16);

        assert_eq!(offset_of!(amdxdna_drm_set_state, buffer_size), 4);
        assert_eq!(offset_of!(amdxdna_drm_set_state, buffer), 8);

        type M = amdxdna_drm_query_aie_metadata;
        assert_eq!(offset_of!(M, cols), 4);
        assert_eq!(offset_of!(M, rows), 6);
        assert_eq!(offset_of!(M, version), 8);
        assert_eq!(offset_of!(M, core), 16);
        assert_eq!(offset_of!(M, mem), 32);
        assert_eq!(offset_of!(M, shim), 48);

        assert_eq!(offset_of!(amdxdna_drm_query_clock, freq_mhz), 16);
        assert_eq!(offset_of!(amdxdna_drm_query_clock_metadata, h_clock), 24);

        assert_eq!(offset_of!(amdxdna_cu_config, cu_func), 4);
        assert_eq!(offset_of!(amdxdna_drm_va_tbl, num_entries), 4);
        assert_eq!(offset_of!(amdxdna_cmd_start_npu, buffer_size), 8);
        assert_eq!(offset_of!(amdxdna_cmd_start_npu, prop_count), 12);
        assert_eq!(offset_of!(amdxdna_cmd_chain, error_index), 8);

        type W = drm_syncobj_timeline_wait;
        assert_eq!(offset_of!(W, points), 8);
        assert_eq!(offset_of!(W, timeout_nsec), 16);
        assert_eq!(offset_of!(W, count_handles), 24);
        assert_eq!(offset_of!(W, flags), 28);
        assert_eq!(offset_of!(W, first_signaled), 32);
        assert_eq!(offset_of!(W, deadline_nsec), 40);

        assert_eq!(offset_of!(drm_prime_handle, fd), 8);
        assert_eq!(offset_of!(drm_version, name_len), 16);
        assert_eq!(offset_of!(drm_version, desc), 56);

        type X = amdxdna_drm_hwctx_entry;
        assert_eq!(offset_of!(X, pid), 16);
        assert_eq!(offset_of!(X, state), 88);
        assert_eq!(offset_of!(X, pad), 140);
    }
}
