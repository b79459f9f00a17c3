//! One `unsafe fn` per ioctl the NPU path issues, on an `/dev/accel/accel*` descriptor.
//! Each line notes the minimum driver version, the privilege it needs, and what the kernel
//! reads through pointers inside the struct (it keeps none after returning).

use crate::sys::amdxdna::*;
use crate::sys::ioctl_fn;

ioctl_fn!(
    /// `DRM_IOCTL_VERSION`: driver name and version (reads/writes the name/date/desc buffers).
    drm_version, DRM_IOCTL_VERSION, drm_version
);
ioctl_fn!(
    /// 0.0; any user. Reads `qos_p` (an `amdxdna_qos_info`). Needs the DEV_HEAP BO first.
    amdxdna_create_hwctx, DRM_IOCTL_AMDXDNA_CREATE_HWCTX, amdxdna_drm_create_hwctx
);
ioctl_fn!(
    /// 0.0; any user.
    amdxdna_destroy_hwctx, DRM_IOCTL_AMDXDNA_DESTROY_HWCTX, amdxdna_drm_destroy_hwctx
);
ioctl_fn!(
    /// 0.0; any user. Reads `param_val_size` bytes at `param_val` (CONFIG_CU payload).
    amdxdna_config_hwctx, DRM_IOCTL_AMDXDNA_CONFIG_HWCTX, amdxdna_drm_config_hwctx
);
ioctl_fn!(
    /// 0.0; any user. For SHARE BOs with `vaddr` (6.18+) reads the va table there.
    amdxdna_create_bo, DRM_IOCTL_AMDXDNA_CREATE_BO, amdxdna_drm_create_bo
);
ioctl_fn!(
    /// 0.0; any user.
    amdxdna_get_bo_info, DRM_IOCTL_AMDXDNA_GET_BO_INFO, amdxdna_drm_get_bo_info
);
ioctl_fn!(
    /// 0.0; any user.
    amdxdna_sync_bo, DRM_IOCTL_AMDXDNA_SYNC_BO, amdxdna_drm_sync_bo
);
ioctl_fn!(
    /// 0.0; any user. Reads `arg_count` u32 handles at `args`.
    amdxdna_exec_cmd, DRM_IOCTL_AMDXDNA_EXEC_CMD, amdxdna_drm_exec_cmd
);
ioctl_fn!(
    /// 0.0; any user. Writes up to `buffer_size` bytes at `buffer`.
    amdxdna_get_info, DRM_IOCTL_AMDXDNA_GET_INFO, amdxdna_drm_get_info
);
ioctl_fn!(
    /// 0.0; root only (DRM_ROOT_ONLY). Reads `buffer_size` bytes at `buffer`.
    amdxdna_set_state, DRM_IOCTL_AMDXDNA_SET_STATE, amdxdna_drm_set_state
);
ioctl_fn!(
    /// 0.1; any user. Writes `num_element × element_size` bytes at `buffer`.
    amdxdna_get_array, DRM_IOCTL_AMDXDNA_GET_ARRAY, amdxdna_drm_get_array
);
ioctl_fn!(
    /// Generic GEM; closes a BO handle.
    drm_gem_close, DRM_IOCTL_GEM_CLOSE, drm_gem_close
);
ioctl_fn!(
    /// Generic PRIME; imports the dma-buf `fd` as a BO handle.
    drm_prime_fd_to_handle, DRM_IOCTL_PRIME_FD_TO_HANDLE, drm_prime_handle
);
ioctl_fn!(
    /// Generic PRIME; exports a SHARE BO as a dma-buf fd.
    drm_prime_handle_to_fd, DRM_IOCTL_PRIME_HANDLE_TO_FD, drm_prime_handle
);
ioctl_fn!(
    /// Generic syncobj; drops a syncobj handle.
    drm_syncobj_destroy, DRM_IOCTL_SYNCOBJ_DESTROY, drm_syncobj_destroy
);
ioctl_fn!(
    /// Generic syncobj; blocks until the points are signalled or the absolute deadline.
    /// Reads `count_handles` handles and points.
    drm_syncobj_timeline_wait, DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT, drm_syncobj_timeline_wait
);
ioctl_fn!(
    /// Generic syncobj; writes the last signalled point of each handle.
    drm_syncobj_query, DRM_IOCTL_SYNCOBJ_QUERY, drm_syncobj_timeline_array
);
