//! Emulated GET_INFO, GET_ARRAY, SET_STATE and DRM_IOCTL_VERSION.

use super::*;

impl XdnaEmu {
    pub(super) unsafe fn version(&self, a: *mut drm_version) -> io::Result<i32> {
        // SAFETY: caller contract.
        let v = unsafe { &mut *a };
        let name = crate::xdna::device::DRIVER_NAME.as_bytes();
        if v.name_len > 0 {
            // SAFETY: `name` points at `name_len` writable bytes (caller contract).
            unsafe { write_user(v.name, name, v.name_len)? };
        }
        v.name_len = name.len();
        v.date_len = 0;
        v.desc_len = 0;
        v.version_major = 0;
        v.version_minor = self.cfg.driver_minor;
        v.version_patchlevel = 0;
        Ok(0)
    }

    pub(super) unsafe fn get_info(&self, a: *mut amdxdna_drm_get_info) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        let c = &self.cfg;
        let tile = |rows: u16, start: u16| amdxdna_drm_query_aie_tile_metadata {
            row_count: rows,
            row_start: start,
            dma_channel_count: 2,
            lock_count: 16,
            event_reg_count: 128,
            pad: [0; 3],
        };
        let clock = |name: &str, mhz: u32| {
            let mut n = [0u8; 16];
            n[..name.len()].copy_from_slice(name.as_bytes());
            amdxdna_drm_query_clock {
                name: n,
                freq_mhz: mhz,
                pad: 0,
            }
        };
        let bytes: Vec<u8> = match a.param {
            DRM_AMDXDNA_QUERY_AIE_METADATA => as_bytes(&amdxdna_drm_query_aie_metadata {
                col_size: 0x200_0000,
                cols: c.cols,
                rows: c.rows,
                version: amdxdna_drm_query_aie_version {
                    major: c.aie_version.0,
                    minor: c.aie_version.1,
                },
                core: tile(c.rows - 2, 2),
                mem: tile(1, 1),
                shim: tile(1, 0),
            })
            .to_vec(),
            DRM_AMDXDNA_QUERY_AIE_VERSION => as_bytes(&amdxdna_drm_query_aie_version {
                major: c.aie_version.0,
                minor: c.aie_version.1,
            })
            .to_vec(),
            DRM_AMDXDNA_QUERY_FIRMWARE_VERSION => as_bytes(&amdxdna_drm_query_firmware_version {
                major: c.firmware[0],
                minor: c.firmware[1],
                patch: c.firmware[2],
                build: c.firmware[3],
            })
            .to_vec(),
            DRM_AMDXDNA_QUERY_CLOCK_METADATA => as_bytes(&amdxdna_drm_query_clock_metadata {
                mp_npu_clock: clock("MP-NPU Clock", 1267),
                h_clock: clock("H Clock", 1800),
            })
            .to_vec(),
            DRM_AMDXDNA_GET_POWER_MODE => as_bytes(&amdxdna_drm_get_power_mode {
                power_mode: self.st().power_mode,
                pad: [0; 7],
            })
            .to_vec(),
            DRM_AMDXDNA_QUERY_HW_CONTEXTS => {
                let st = self.st();
                let mut out = Vec::new();
                for c in st.clients.values() {
                    for x in c.ctxs.values() {
                        out.extend_from_slice(as_bytes(&amdxdna_drm_query_hwctx {
                            context_id: x.id,
                            start_col: 0,
                            num_col: x.cols,
                            pad: 0,
                            pid: i64::from(std::process::id()),
                            command_submissions: x.submissions,
                            command_completions: x.completions,
                            migrations: 0,
                            preemptions: 0,
                            errors: x.errors,
                        }));
                    }
                }
                out
            }
            _ => return Err(einval()),
        };
        if (a.buffer_size as usize) < bytes.len() {
            return Err(einval());
        }
        // SAFETY: `buffer` has `buffer_size` writable bytes (caller contract).
        unsafe { write_user(a.buffer, &bytes, a.buffer_size as usize)? };
        a.buffer_size = bytes.len() as u32;
        Ok(0)
    }

    pub(super) unsafe fn get_array(&self, a: *mut amdxdna_drm_get_array) -> io::Result<i32> {
        if self.cfg.driver_minor < 1 {
            return Err(einval());
        }
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        if a.pad != 0
            || a.num_element == 0
            || a.element_size == 0
            || a.param != DRM_AMDXDNA_HW_CONTEXT_ALL
        {
            return Err(einval());
        }
        let st = self.st();
        let entries: Vec<amdxdna_drm_hwctx_entry> = st
            .clients
            .values()
            .flat_map(|c| c.ctxs.values())
            .map(|x| amdxdna_drm_hwctx_entry {
                context_id: x.id,
                num_col: x.cols,
                hwctx_id: x.id,
                pid: i64::from(std::process::id()),
                command_submissions: x.submissions,
                command_completions: x.completions,
                errors: x.errors,
                priority: u64::from(x.qos.priority),
                state: AMDXDNA_HWCTX_STATE_ACTIVE,
                gops: x.qos.gops,
                ..Default::default()
            })
            .collect();
        let esz = (a.element_size as usize).min(std::mem::size_of::<amdxdna_drm_hwctx_entry>());
        let n = entries.len().min(a.num_element as usize);
        for (i, e) in entries.iter().take(n).enumerate() {
            // SAFETY: the caller's buffer holds `num_element × element_size` bytes.
            unsafe {
                write_user(
                    a.buffer + (i * a.element_size as usize) as u64,
                    as_bytes(e),
                    esz,
                )?
            };
        }
        a.element_size = esz as u32;
        a.num_element = n as u32;
        Ok(0)
    }

    pub(super) unsafe fn set_state(&self, a: *mut amdxdna_drm_set_state) -> io::Result<i32> {
        if !self.cfg.root {
            return Err(errno(libc::EACCES));
        }
        // SAFETY: caller contract.
        let a = unsafe { &*a };
        if a.param != DRM_AMDXDNA_SET_POWER_MODE
            || (a.buffer_size as usize) < std::mem::size_of::<amdxdna_drm_set_power_mode>()
        {
            return Err(einval());
        }
        // SAFETY: `buffer` points at a set_power_mode (caller contract).
        let m: amdxdna_drm_set_power_mode = unsafe { read_user(a.buffer)? };
        if m.power_mode > POWER_MODE_TURBO || m.pad != [0; 7] {
            return Err(einval());
        }
        self.st().power_mode = m.power_mode;
        Ok(0)
    }
}
