//! Finding NPUs: accel nodes whose PCI device is bound to the `amdxdna` driver, read from
//! sysfs (`/sys/class/accel/accelN/device/{uevent,revision}`) through `KernelIo`.

use std::path::PathBuf;

use serde::Serialize;

use crate::io::KernelIo;

/// Where accel class devices are listed.
pub const SYSFS_ACCEL: &str = "/sys/class/accel";
/// Where their nodes live.
pub const DEV_ACCEL: &str = "/dev/accel";
/// The kernel driver name in `uevent`.
pub const DRIVER: &str = "amdxdna";

/// An NPU as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NpuNode {
    /// `accel0`.
    pub name: String,
    /// `/dev/accel/accel0`.
    pub dev_path: PathBuf,
    pub vendor: u16,
    pub device: u16,
    pub revision: u8,
    /// `0000:c6:00.1`.
    pub pci_slot: String,
    /// `npu4` etc. from (device, revision), as amdxdna_pci_drv.c keys them.
    pub generation: &'static str,
}

/// The amdxdna device table: (device id, revision) → name and what it is.
pub fn generation(device: u16, revision: u8) -> &'static str {
    match (device, revision) {
        (0x1502, 0x00) => "npu1 (XDNA, Phoenix/Hawk Point)",
        (0x17f0, 0x00) => "npu2",
        (0x17f0, 0x10) => "npu4 (XDNA2, Strix Point/Strix Halo/Krackan)",
        (0x17f0, 0x11) => "npu5",
        (0x17f0, 0x20) => "npu6",
        _ => "unknown",
    }
}

fn parse_hex<T: TryFrom<u32>>(s: &str) -> Option<T> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    u32::from_str_radix(s, 16)
        .ok()
        .and_then(|v| T::try_from(v).ok())
}

/// Parses a `uevent` file; `None` unless it is bound to amdxdna.
fn parse_uevent(text: &str) -> Option<(u16, u16, String)> {
    let mut driver = None;
    let (mut ids, mut slot) = (None, String::new());
    for line in text.lines() {
        match line.split_once('=') {
            Some(("DRIVER", v)) => driver = Some(v.trim()),
            Some(("PCI_ID", v)) => {
                let (ven, dev) = v.trim().split_once(':')?;
                ids = Some((parse_hex(ven)?, parse_hex(dev)?));
            }
            Some(("PCI_SLOT_NAME", v)) => slot = v.trim().to_string(),
            _ => {}
        }
    }
    let (vendor, device) = ids?;
    (driver == Some(DRIVER)).then_some((vendor, device, slot))
}

/// All accel nodes bound to amdxdna, sorted by name. An absent `/sys/class/accel` (kernel
/// without the accel subsystem) is an empty list, not an error.
pub fn find_npus(io: &dyn KernelIo) -> Vec<NpuNode> {
    let Ok(names) = io.read_dir(std::path::Path::new(SYSFS_ACCEL)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names.into_iter().filter(|n| n.starts_with("accel")) {
        let dev_dir = PathBuf::from(SYSFS_ACCEL).join(&name).join("device");
        let Ok(uevent) = io.read_to_string(&dev_dir.join("uevent")) else {
            continue;
        };
        let Some((vendor, device, pci_slot)) = parse_uevent(&uevent) else {
            continue;
        };
        let revision = io
            .read_to_string(&dev_dir.join("revision"))
            .ok()
            .and_then(|s| parse_hex::<u8>(&s))
            .unwrap_or(0);
        out.push(NpuNode {
            dev_path: PathBuf::from(DEV_ACCEL).join(&name),
            generation: generation(device, revision),
            name,
            vendor,
            device,
            revision,
            pci_slot,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uevent() {
        let t = "DRIVER=amdxdna\nPCI_CLASS=118000\nPCI_ID=1022:17F0\nPCI_SUBSYS_ID=1022:17F0\nPCI_SLOT_NAME=0000:c6:00.1\n";
        assert_eq!(
            parse_uevent(t),
            Some((0x1022, 0x17f0, "0000:c6:00.1".into()))
        );
        assert_eq!(parse_uevent("DRIVER=habanalabs\nPCI_ID=1da3:1020\n"), None);
        assert_eq!(parse_uevent("DRIVER=amdxdna\n"), None);
        assert_eq!(
            generation(0x17f0, 0x10),
            "npu4 (XDNA2, Strix Point/Strix Halo/Krackan)"
        );
    }
}
