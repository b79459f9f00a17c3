//! An open NPU: the accel descriptor, the driver version and what it supports, and the
//! GET_INFO / GET_ARRAY / SET_STATE queries.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::bo::DevHeap;
use super::error::{sys, XdnaError};
use super::ioctl;
use crate::io::{Fd, KernelIo};
use crate::sys::amdxdna::*;

/// What `DRM_IOCTL_VERSION` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DriverVersion {
    pub name: String,
    pub major: i32,
    pub minor: i32,
    pub patch: i32,
}

impl DriverVersion {
    pub fn at_least(&self, major: i32, minor: i32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for DriverVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}.{}.{}",
            self.name, self.major, self.minor, self.patch
        )
    }
}

/// The DRM driver name amdxdna registers.
pub const DRIVER_NAME: &str = "amdxdna_accel_driver";

/// Driver minor that first has GET_ARRAY (amdxdna_pci_drv.c version history).
pub const MINOR_GET_ARRAY: i32 = 1;
/// Driver minor that first reports the last async error through GET_ARRAY.
pub const MINOR_LAST_ASYNC_ERR: i32 = 2;
/// Driver minor from which BOs over user memory (`CREATE_BO` SHARE with a va table, upstream
/// commit bd72d4acda10 "Support user space allocated buffer") are assumed present. That
/// commit did not bump the minor itself; 0.7 ("power and utilization data") is the first
/// minor known to come after it. ⚠ Conservative: a 6.18 kernel at 0.6 may have the ioctl
/// but is treated as not having it.
pub const MINOR_USER_MEMORY_BO: i32 = 7;

/// Features, decided by driver version only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Features {
    pub get_array: bool,
    pub last_async_error: bool,
    pub user_memory_bo: bool,
}

impl Features {
    pub fn of(v: &DriverVersion) -> Features {
        Features {
            get_array: v.at_least(0, MINOR_GET_ARRAY),
            last_async_error: v.at_least(0, MINOR_LAST_ASYNC_ERR),
            user_memory_bo: v.at_least(0, MINOR_USER_MEMORY_BO),
        }
    }
}

pub(crate) struct DevInner {
    pub(crate) fd: Fd,
    pub(crate) path: PathBuf,
    pub(crate) version: DriverVersion,
    pub(crate) features: Features,
}

impl DevInner {
    pub(crate) fn io(&self) -> &dyn KernelIo {
        self.fd.io().as_ref()
    }
    pub(crate) fn target(&self) -> String {
        self.path.display().to_string()
    }
}

/// An open `/dev/accel/accelN` bound to amdxdna. Clones share the descriptor and the
/// device heap; BOs and contexts keep the descriptor open until they are dropped.
#[derive(Clone)]
pub struct XdnaDevice {
    pub(crate) inner: Arc<DevInner>,
    // Not inside DevInner: the heap's own BO points back at DevInner.
    pub(crate) heap: Arc<Mutex<Option<Arc<DevHeap>>>>,
}

impl fmt::Debug for XdnaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "XdnaDevice({}, {})",
            self.inner.path.display(),
            self.inner.version
        )
    }
}

/// AIE tile-row metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TileMeta {
    pub row_count: u16,
    pub row_start: u16,
    pub dma_channels: u16,
    pub locks: u16,
    pub event_regs: u16,
}

/// GET_INFO(AIE_METADATA).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AieMetadata {
    pub col_size: u32,
    pub cols: u16,
    pub rows: u16,
    pub version: (u32, u32),
    pub core: TileMeta,
    pub mem: TileMeta,
    pub shim: TileMeta,
}

/// GET_INFO(FIRMWARE_VERSION).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FirmwareVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    pub build: u32,
}

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.major, self.minor, self.patch, self.build
        )
    }
}

/// One clock of GET_INFO(CLOCK_METADATA).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Clock {
    pub name: String,
    pub mhz: u32,
}

/// A hardware context, as GET_ARRAY(HW_CONTEXT_ALL) or GET_INFO(HW_CONTEXTS) report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HwctxInfo {
    pub context_id: u32,
    pub start_col: u32,
    pub num_col: u32,
    pub pid: i64,
    pub submissions: u64,
    pub completions: u64,
    pub errors: u64,
}

/// The NPU power mode (GET_INFO(GET_POWER_MODE) / SET_STATE(SET_POWER_MODE)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PowerMode {
    /// Driver-managed DPM.
    Default,
    Low,
    Medium,
    High,
    Turbo,
}

impl PowerMode {
    pub fn raw(self) -> u8 {
        match self {
            PowerMode::Default => POWER_MODE_DEFAULT,
            PowerMode::Low => POWER_MODE_LOW,
            PowerMode::Medium => POWER_MODE_MEDIUM,
            PowerMode::High => POWER_MODE_HIGH,
            PowerMode::Turbo => POWER_MODE_TURBO,
        }
    }
    pub fn from_raw(v: u8) -> Option<PowerMode> {
        Some(match v {
            POWER_MODE_DEFAULT => PowerMode::Default,
            POWER_MODE_LOW => PowerMode::Low,
            POWER_MODE_MEDIUM => PowerMode::Medium,
            POWER_MODE_HIGH => PowerMode::High,
            POWER_MODE_TURBO => PowerMode::Turbo,
            _ => return None,
        })
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn tile(t: &amdxdna_drm_query_aie_tile_metadata) -> TileMeta {
    TileMeta {
        row_count: t.row_count,
        row_start: t.row_start,
        dma_channels: t.dma_channel_count,
        locks: t.lock_count,
        event_regs: t.event_reg_count,
    }
}

impl XdnaDevice {
    /// Opens `path` and checks that it is amdxdna (by `DRM_IOCTL_VERSION`).
    pub fn open(io: &Arc<dyn KernelIo>, path: &Path) -> Result<XdnaDevice, XdnaError> {
        let target = path.display().to_string();
        let fd = Fd::open(io, path).map_err(|e| sys("open", &target, e))?;
        let version = query_version(io.as_ref(), &fd, &target)?;
        if version.name != DRIVER_NAME {
            return Err(XdnaError::NotFound(format!(
                "{target} is driven by {:?}, not {DRIVER_NAME}",
                version.name
            )));
        }
        let features = Features::of(&version);
        tracing::info!(node = %target, driver = %version, ?features, "NPU opened");
        Ok(XdnaDevice {
            inner: Arc::new(DevInner {
                fd,
                path: path.to_owned(),
                version,
                features,
            }),
            heap: Arc::new(Mutex::new(None)),
        })
    }

    /// Opens the first NPU sysfs lists.
    pub fn open_first(io: &Arc<dyn KernelIo>) -> Result<XdnaDevice, XdnaError> {
        let nodes = super::discover::find_npus(io.as_ref());
        let node = nodes.first().ok_or_else(|| {
            XdnaError::NotFound(
                "no accel node is bound to amdxdna (needs Linux 6.14+, CONFIG_DRM_ACCEL_AMDXDNA, the amdxdna module and NPU firmware)".into(),
            )
        })?;
        Self::open(io, &node.dev_path)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }
    pub fn version(&self) -> &DriverVersion {
        &self.inner.version
    }
    pub fn features(&self) -> Features {
        self.inner.features
    }

    fn get_info<T: Copy + Default>(&self, param: u32, what: &'static str) -> Result<T, XdnaError> {
        let mut out = T::default();
        let mut a = amdxdna_drm_get_info {
            param,
            buffer_size: std::mem::size_of::<T>() as u32,
            buffer: &mut out as *mut T as u64,
        };
        // SAFETY: `buffer` points at `out`, `buffer_size` bytes, alive across the call.
        unsafe { ioctl::amdxdna_get_info(self.inner.io(), self.inner.fd.raw(), &mut a) }.map_err(
            |e| {
                sys(
                    "DRM_IOCTL_AMDXDNA_GET_INFO",
                    &format!("{} ({what})", self.inner.target()),
                    e,
                )
            },
        )?;
        Ok(out)
    }

    /// Columns, rows and tile metadata of the AIE array.
    pub fn aie_metadata(&self) -> Result<AieMetadata, XdnaError> {
        let m: amdxdna_drm_query_aie_metadata =
            self.get_info(DRM_AMDXDNA_QUERY_AIE_METADATA, "AIE_METADATA")?;
        Ok(AieMetadata {
            col_size: m.col_size,
            cols: m.cols,
            rows: m.rows,
            version: (m.version.major, m.version.minor),
            core: tile(&m.core),
            mem: tile(&m.mem),
            shim: tile(&m.shim),
        })
    }

    /// AIE hardware version (2.0 for XDNA, 2.x for XDNA2 per the driver).
    pub fn aie_version(&self) -> Result<(u32, u32), XdnaError> {
        let v: amdxdna_drm_query_aie_version =
            self.get_info(DRM_AMDXDNA_QUERY_AIE_VERSION, "AIE_VERSION")?;
        Ok((v.major, v.minor))
    }

    pub fn firmware_version(&self) -> Result<FirmwareVersion, XdnaError> {
        let v: amdxdna_drm_query_firmware_version =
            self.get_info(DRM_AMDXDNA_QUERY_FIRMWARE_VERSION, "FIRMWARE_VERSION")?;
        Ok(FirmwareVersion {
            major: v.major,
            minor: v.minor,
            patch: v.patch,
            build: v.build,
        })
    }

    /// The MP-NPU clock and the H clock.
    pub fn clocks(&self) -> Result<Vec<Clock>, XdnaError> {
        let c: amdxdna_drm_query_clock_metadata =
            self.get_info(DRM_AMDXDNA_QUERY_CLOCK_METADATA, "CLOCK_METADATA")?;
        Ok([c.mp_npu_clock, c.h_clock]
            .iter()
            .map(|k| Clock {
                name: cstr(&k.name),
                mhz: k.freq_mhz,
            })
            .collect())
    }

    pub fn power_mode(&self) -> Result<PowerMode, XdnaError> {
        let p: amdxdna_drm_get_power_mode =
            self.get_info(DRM_AMDXDNA_GET_POWER_MODE, "GET_POWER_MODE")?;
        PowerMode::from_raw(p.power_mode).ok_or_else(|| {
            XdnaError::Invalid(format!(
                "driver reports unknown power mode {}",
                p.power_mode
            ))
        })
    }

    /// Sets the power mode (root only).
    pub fn set_power_mode(&self, mode: PowerMode) -> Result<(), XdnaError> {
        let mut m = amdxdna_drm_set_power_mode {
            power_mode: mode.raw(),
            pad: [0; 7],
        };
        let mut a = amdxdna_drm_set_state {
            param: DRM_AMDXDNA_SET_POWER_MODE,
            buffer_size: std::mem::size_of_val(&m) as u32,
            buffer: &mut m as *mut _ as u64,
        };
        // SAFETY: `buffer` points at `m` for the call.
        unsafe { ioctl::amdxdna_set_state(self.inner.io(), self.inner.fd.raw(), &mut a) }
            .map_err(|e| sys("DRM_IOCTL_AMDXDNA_SET_STATE", &self.inner.target(), e))?;
        tracing::info!(?mode, "NPU power mode set");
        Ok(())
    }

    /// Every hardware context on the device (all processes): GET_ARRAY on driver 0.1+,
    /// else GET_INFO(HW_CONTEXTS).
    pub fn hw_contexts(&self) -> Result<Vec<HwctxInfo>, XdnaError> {
        const CAP: usize = 256;
        if self.inner.features.get_array {
            let mut buf = vec![amdxdna_drm_hwctx_entry::default(); CAP];
            let mut a = amdxdna_drm_get_array {
                param: DRM_AMDXDNA_HW_CONTEXT_ALL,
                element_size: std::mem::size_of::<amdxdna_drm_hwctx_entry>() as u32,
                num_element: CAP as u32,
                pad: 0,
                buffer: buf.as_mut_ptr() as u64,
            };
            // SAFETY: `buffer` holds CAP elements of `element_size` bytes for the call.
            unsafe { ioctl::amdxdna_get_array(self.inner.io(), self.inner.fd.raw(), &mut a) }
                .map_err(|e| sys("DRM_IOCTL_AMDXDNA_GET_ARRAY", &self.inner.target(), e))?;
            let n = (a.num_element as usize).min(CAP);
            // Elements are `element_size` apart (older kernels write shorter ones).
            let stride = a.element_size as usize;
            if stride == 0 || stride > std::mem::size_of::<amdxdna_drm_hwctx_entry>() {
                return Err(XdnaError::Invalid(format!(
                    "GET_ARRAY returned element_size {stride}"
                )));
            }
            let bytes = buf.as_ptr() as *const u8;
            return Ok((0..n)
                .map(|i| {
                    let mut e = amdxdna_drm_hwctx_entry::default();
                    // SAFETY: element i lies at i*stride < CAP*size_of(entry) inside `buf`;
                    // copying `stride` bytes into a zeroed entry of at least that size.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            bytes.add(i * stride),
                            &mut e as *mut _ as *mut u8,
                            stride,
                        )
                    };
                    HwctxInfo {
                        context_id: e.context_id,
                        start_col: e.start_col,
                        num_col: e.num_col,
                        pid: e.pid,
                        submissions: e.command_submissions,
                        completions: e.command_completions,
                        errors: e.errors,
                    }
                })
                .collect());
        }
        let mut buf = vec![amdxdna_drm_query_hwctx::default(); CAP];
        let mut a = amdxdna_drm_get_info {
            param: DRM_AMDXDNA_QUERY_HW_CONTEXTS,
            buffer_size: std::mem::size_of_val(buf.as_slice()) as u32,
            buffer: buf.as_mut_ptr() as u64,
        };
        // SAFETY: `buffer` holds `buffer_size` bytes for the call.
        unsafe { ioctl::amdxdna_get_info(self.inner.io(), self.inner.fd.raw(), &mut a) }.map_err(
            |e| {
                sys(
                    "DRM_IOCTL_AMDXDNA_GET_INFO",
                    &format!("{} (HW_CONTEXTS)", self.inner.target()),
                    e,
                )
            },
        )?;
        let n = (a.buffer_size as usize / std::mem::size_of::<amdxdna_drm_query_hwctx>()).min(CAP);
        Ok(buf[..n]
            .iter()
            .map(|e| HwctxInfo {
                context_id: e.context_id,
                start_col: e.start_col,
                num_col: e.num_col,
                pid: e.pid,
                submissions: e.command_submissions,
                completions: e.command_completions,
                errors: e.errors,
            })
            .collect())
    }
}

fn query_version(io: &dyn KernelIo, fd: &Fd, target: &str) -> Result<DriverVersion, XdnaError> {
    let mut name = [0u8; 64];
    let mut v = drm_version {
        name_len: name.len(),
        name: name.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `name` has `name_len` writable bytes; date/desc are null with length 0.
    unsafe { ioctl::drm_version(io, fd.raw(), &mut v) }
        .map_err(|e| sys("DRM_IOCTL_VERSION", target, e))?;
    let len = v.name_len.min(name.len());
    Ok(DriverVersion {
        name: cstr(&name[..len]),
        major: v.version_major,
        minor: v.version_minor,
        patch: v.version_patchlevel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(minor: i32) -> DriverVersion {
        DriverVersion {
            name: DRIVER_NAME.into(),
            major: 0,
            minor,
            patch: 0,
        }
    }

    #[test]
    fn features_follow_the_driver_version() {
        assert_eq!(
            Features::of(&v(0)),
            Features {
                get_array: false,
                last_async_error: false,
                user_memory_bo: false
            }
        );
        assert_eq!(
            Features::of(&v(1)),
            Features {
                get_array: true,
                last_async_error: false,
                user_memory_bo: false
            }
        );
        assert_eq!(
            Features::of(&v(6)),
            Features {
                get_array: true,
                last_async_error: true,
                user_memory_bo: false
            }
        );
        assert_eq!(
            Features::of(&v(7)),
            Features {
                get_array: true,
                last_async_error: true,
                user_memory_bo: true
            }
        );
        let newer_major = DriverVersion {
            major: 1,
            minor: 0,
            ..v(0)
        };
        assert!(Features::of(&newer_major).user_memory_bo);
        assert_eq!(v(7).to_string(), "amdxdna_accel_driver 0.7.0");
    }
}
