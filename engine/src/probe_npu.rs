//! The NPU section of `onebit probe`: every amdxdna device with its driver version and
//! features, firmware, AIE array, clocks, power mode and live contexts, plus advice for
//! what is missing (driver, firmware, IOMMU, permissions). Never fails: problems become
//! report entries.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use onebit_drv::io::KernelIo;
use onebit_drv::xdna::{find_npus, Clock, Features, XdnaDevice, XdnaError};
use serde::Serialize;

/// What `onebit probe` says about NPUs.
#[derive(Debug, Clone, Serialize)]
pub struct NpuReport {
    /// One entry per accel node bound to amdxdna.
    pub devices: Vec<NpuDeviceReport>,
    /// What to do about what is missing (empty when all is well).
    pub advice: Vec<String>,
}

/// One NPU.
#[derive(Debug, Clone, Serialize)]
pub struct NpuDeviceReport {
    /// `/dev/accel/accel0`.
    pub node: String,
    /// `1022:17f0 rev 0x10`.
    pub pci_id: String,
    /// `0000:c6:00.1`.
    pub pci_slot: String,
    /// `npu4 (XDNA2, ...)`.
    pub generation: String,
    /// `amdxdna_accel_driver 0.7.0` once opened.
    pub driver: Option<String>,
    /// What the driver version provides.
    pub features: Option<Features>,
    /// `major.minor.patch.build`.
    pub firmware: Option<String>,
    /// AIE array shape.
    pub aie: Option<AieReport>,
    /// MP-NPU and H clocks.
    pub clocks: Vec<Clock>,
    /// Current power mode.
    pub power_mode: Option<String>,
    /// Hardware contexts open on the device (all processes).
    pub hw_contexts: Option<usize>,
    /// Whether the driver imports dma-bufs (PRIME, zero-copy); `false` means shared
    /// buffers reach the NPU through SHARE buffers with a copy (Linux 6.14).
    pub prime_import: Option<bool>,
    /// Queries that failed, as sentences.
    pub errors: Vec<String>,
}

/// The AIE array.
#[derive(Debug, Clone, Serialize)]
pub struct AieReport {
    pub columns: u16,
    pub rows: u16,
    pub core_rows: u16,
    pub mem_rows: u16,
    pub version: String,
}

/// Probes every NPU through `io` (the real kernel or the emulator).
pub fn npu_report(io: &Arc<dyn KernelIo>) -> NpuReport {
    let mut advice = Vec::new();
    let nodes = find_npus(io.as_ref());
    if nodes.is_empty() {
        advice.push(no_npu_advice(io.as_ref()));
    }
    if iommu_off(io.as_ref()) {
        advice.push(
            "the kernel command line has amd_iommu=off: amdxdna needs the IOMMU (SVA/PASID); use iommu=pt instead".into(),
        );
    }
    let devices = nodes
        .iter()
        .map(|n| {
            let mut r = NpuDeviceReport {
                node: n.dev_path.display().to_string(),
                pci_id: format!("{:04x}:{:04x} rev {:#04x}", n.vendor, n.device, n.revision),
                pci_slot: n.pci_slot.clone(),
                generation: n.generation.to_string(),
                driver: None,
                features: None,
                firmware: None,
                aie: None,
                clocks: Vec::new(),
                power_mode: None,
                hw_contexts: None,
                prime_import: None,
                errors: Vec::new(),
            };
            match XdnaDevice::open(io, &n.dev_path) {
                Ok(dev) => fill(&dev, &mut r),
                Err(e) => {
                    if let Some(a) = sys_advice(&e) {
                        advice.push(a);
                    }
                    r.errors.push(e.to_string());
                }
            }
            r
        })
        .collect();
    match std::env::var_os("ONEBIT_NPU_ARTIFACTS") {
        Some(dir) if Path::new(&dir).is_dir() => advice.push(format!(
            "NPU prefill kernels: ONEBIT_NPU_ARTIFACTS={}; `onebit selftest --surface npu` checks them against the CPU",
            Path::new(&dir).display()
        )),
        _ => advice.push(
            "NPU prefill kernels are not shipped: build them on this machine with kernels/npu/build.sh \
             (AMD's IRON/Peano toolchain; onebit's own CI cannot compile them), pass --npu-artifacts DIR or set \
             ONEBIT_NPU_ARTIFACTS, and run `onebit selftest --surface npu`"
                .into(),
        ),
    }
    NpuReport { devices, advice }
}

fn fill(dev: &XdnaDevice, r: &mut NpuDeviceReport) {
    r.driver = Some(dev.version().to_string());
    r.features = Some(dev.features());
    let mut note = |e: XdnaError| r.errors.push(e.to_string());
    match dev.firmware_version() {
        Ok(v) => r.firmware = Some(v.to_string()),
        Err(e) => note(e),
    }
    match dev.aie_metadata() {
        Ok(m) => {
            r.aie = Some(AieReport {
                columns: m.cols,
                rows: m.rows,
                core_rows: m.core.row_count,
                mem_rows: m.mem.row_count,
                version: format!("{}.{}", m.version.0, m.version.1),
            })
        }
        Err(e) => note(e),
    }
    match dev.clocks() {
        Ok(c) => r.clocks = c,
        Err(e) => note(e),
    }
    match dev.power_mode() {
        Ok(p) => r.power_mode = Some(format!("{p:?}")),
        Err(e) => note(e),
    }
    match dev.hw_contexts() {
        Ok(c) => r.hw_contexts = Some(c.len()),
        Err(e) => note(e),
    }
    match dev.prime_import_works() {
        Ok(p) => r.prime_import = p,
        Err(e) => note(e),
    }
}

fn sys_advice(e: &XdnaError) -> Option<String> {
    match e {
        XdnaError::Sys(s) if !s.advice.is_empty() => Some(s.advice.clone()),
        _ => None,
    }
}

fn iommu_off(io: &dyn KernelIo) -> bool {
    io.read_to_string(Path::new("/proc/cmdline"))
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "amd_iommu=off"))
}

fn no_npu_advice(io: &dyn KernelIo) -> String {
    let fw = [
        "npu.sbin",
        "npu.sbin.zst",
        "npu.sbin.xz",
        "npu_7.sbin",
        "npu_7.sbin.zst",
    ]
    .iter()
    .any(|f| io.exists(&Path::new("/lib/firmware/amdnpu/17f0_10").join(f)));
    if io.exists(Path::new("/sys/module/amdxdna")) {
        "the amdxdna module is loaded but bound no device: check dmesg for firmware or IOMMU errors"
            .into()
    } else if !fw {
        "no amdxdna NPU: needs Linux 6.14+ with CONFIG_DRM_ACCEL_AMDXDNA, `modprobe amdxdna`, and the NPU firmware (linux-firmware amdnpu/17f0_10)".into()
    } else {
        "no amdxdna NPU: needs Linux 6.14+ with CONFIG_DRM_ACCEL_AMDXDNA and `modprobe amdxdna` (firmware is installed)".into()
    }
}

impl fmt::Display for NpuReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.devices.is_empty() {
            writeln!(f, "NPU: none")?;
        }
        for d in &self.devices {
            writeln!(
                f,
                "NPU {} ({}, {} at {})",
                d.node, d.generation, d.pci_id, d.pci_slot
            )?;
            if let Some(v) = &d.driver {
                writeln!(f, "  driver      {v}")?;
            }
            if let Some(x) = &d.features {
                writeln!(
                    f,
                    "  features    get_array {}, last_async_error {}, user_memory_bo {}",
                    x.get_array, x.last_async_error, x.user_memory_bo
                )?;
            }
            if let Some(v) = &d.firmware {
                writeln!(f, "  firmware    {v}")?;
            }
            if let Some(a) = &d.aie {
                writeln!(
                    f,
                    "  AIE         {} columns × {} rows ({} compute, {} memory), version {}",
                    a.columns, a.rows, a.core_rows, a.mem_rows, a.version
                )?;
            }
            for c in &d.clocks {
                writeln!(f, "  clock       {} {} MHz", c.name, c.mhz)?;
            }
            if let Some(p) = &d.power_mode {
                writeln!(f, "  power mode  {p}")?;
            }
            if let Some(n) = d.hw_contexts {
                writeln!(f, "  contexts    {n} open")?;
            }
            match d.prime_import {
                Some(true) => writeln!(f, "  dma-buf     PRIME import works: shared buffers are zero-copy")?,
                Some(false) => writeln!(
                    f,
                    "  dma-buf     no PRIME import (Linux 6.14 driver): copy fallback in use, shared buffers reach the NPU through SHARE buffers copied before and after each run"
                )?,
                None if d.driver.is_some() => {
                    writeln!(f, "  dma-buf     PRIME import untested (no /dev/udmabuf)")?
                }
                None => {}
            }
            for e in &d.errors {
                writeln!(f, "  error       {e}")?;
            }
        }
        for a in &self.advice {
            writeln!(f, "  advice      {a}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onebit_drv::emu::xdna::{XdnaEmu, XdnaEmuConfig};
    use onebit_drv::emu::Emulator;

    #[test]
    fn reports_an_emulated_npu() {
        let npu = XdnaEmu::new(XdnaEmuConfig::default());
        let emu = npu.install(Emulator::builder()).build();
        let r = npu_report(&emu.io());
        assert_eq!(r.devices.len(), 1, "{r}");
        let d = &r.devices[0];
        assert_eq!(d.pci_id, "1022:17f0 rev 0x10");
        assert_eq!(d.driver.as_deref(), Some("amdxdna_accel_driver 0.7.0"));
        assert_eq!(
            d.aie.as_ref().map(|a| (a.columns, a.core_rows)),
            Some((8, 4))
        );
        assert_eq!(d.hw_contexts, Some(0));
        assert_eq!(d.prime_import, None, "no /dev/udmabuf to try with");
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let text = r.to_string();
        assert!(
            text.contains("8 columns × 6 rows") && text.contains("firmware    1.1.0.0"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["devices"][0]["firmware"], "1.1.0.0");
        emu.assert_no_leaks();
    }

    #[test]
    fn says_whether_prime_import_works_or_the_copy_fallback_is_used() {
        use onebit_drv::emu::xdna::XdnaKernel;
        for (kernel, works, says) in [
            (XdnaKernel::Linux6_14, false, "copy fallback in use"),
            (XdnaKernel::Newer, true, "zero-copy"),
        ] {
            let npu = XdnaEmu::new(XdnaEmuConfig {
                kernel,
                ..Default::default()
            });
            let emu = npu.install(Emulator::builder().with_udmabuf(64)).build();
            let r = npu_report(&emu.io());
            let d = &r.devices[0];
            assert_eq!(d.prime_import, Some(works), "{kernel:?}: {:?}", d.errors);
            assert!(r.to_string().contains(says), "{r}");
            emu.assert_no_leaks();
        }
    }

    #[test]
    fn explains_a_missing_or_locked_npu() {
        let none = Emulator::builder()
            .with_file("/proc/cmdline", "quiet amd_iommu=off\n")
            .build();
        let r = npu_report(&none.io());
        assert!(r.devices.is_empty());
        assert!(
            r.advice.iter().any(|a| a.contains("6.14")),
            "{:?}",
            r.advice
        );
        assert!(
            r.advice.iter().any(|a| a.contains("iommu=pt")),
            "{:?}",
            r.advice
        );
        assert!(r.to_string().starts_with("NPU: none"));

        let npu = XdnaEmu::new(XdnaEmuConfig::default());
        let emu = npu.install(Emulator::builder()).build();
        const EACCES: i32 = 13;
        emu.fail_open(onebit_drv::emu::xdna::NODE, EACCES);
        let r = npu_report(&emu.io());
        assert_eq!(r.devices[0].errors.len(), 1);
        assert!(
            r.advice.iter().any(|a| a.contains("udev")),
            "{:?}",
            r.advice
        );
    }
}
