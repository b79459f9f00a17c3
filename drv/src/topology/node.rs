//! One topology node and its memory banks.

use std::collections::BTreeMap;
use std::path::Path;

use super::{parse_properties, TopologyError};
use crate::io::KernelIo;

/// `HSA_HEAPTYPE_*` of a memory bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapType {
    /// System memory (GTT-backed on APUs).
    System,
    /// CPU-visible VRAM (on an APU: the BIOS carve-out).
    FbPublic,
    /// CPU-invisible VRAM.
    FbPrivate,
    /// GDS, LDS, scratch and unknown kinds.
    Other(u64),
}

impl HeapType {
    fn from_raw(v: u64) -> HeapType {
        match v {
            0 => HeapType::System,
            1 => HeapType::FbPublic,
            2 => HeapType::FbPrivate,
            v => HeapType::Other(v),
        }
    }

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            HeapType::System => "system",
            HeapType::FbPublic => "vram(public)",
            HeapType::FbPrivate => "vram(private)",
            HeapType::Other(_) => "other",
        }
    }
}

/// A `mem_banks/M` entry.
#[derive(Debug, Clone)]
pub struct MemBank {
    /// Heap kind.
    pub heap_type: HeapType,
    /// Bytes.
    pub size_in_bytes: u64,
    /// Bus width in bits.
    pub width: u64,
    /// Max clock in MHz.
    pub mem_clk_max: u64,
}

/// One node (`nodes/N`).
#[derive(Debug, Clone)]
pub struct Node {
    /// N.
    pub index: u32,
    /// KFD's hash id (0 = CPU node). Changes across boots: never persist it.
    pub gpu_id: u32,
    /// `name` ("gfx1151" on recent kernels; may be empty).
    pub name: String,
    /// Every numeric `properties` key (unknown keys kept, not interpreted).
    pub props: BTreeMap<String, u64>,
    /// Memory banks.
    pub mem_banks: Vec<MemBank>,
}

fn read(io: &dyn KernelIo, path: &Path) -> Result<String, TopologyError> {
    io.read_to_string(path)
        .map_err(|source| TopologyError::Read {
            path: path.to_owned(),
            source,
        })
}

impl Node {
    pub(super) fn read(io: &dyn KernelIo, dir: &Path, index: u32) -> Result<Node, TopologyError> {
        let gpu_id = read(io, &dir.join("gpu_id"))?.trim().parse().unwrap_or(0);
        let name = io
            .read_to_string(&dir.join("name"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let props = parse_properties(&read(io, &dir.join("properties"))?);
        let mut mem_banks = Vec::new();
        let banks = dir.join("mem_banks");
        let mut names: Vec<u32> = io
            .read_dir(&banks)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        names.sort_unstable();
        for m in names {
            let p = parse_properties(&read(io, &banks.join(m.to_string()).join("properties"))?);
            let get = |k: &str| p.get(k).copied().unwrap_or(0);
            mem_banks.push(MemBank {
                heap_type: HeapType::from_raw(get("heap_type")),
                size_in_bytes: get("size_in_bytes"),
                width: get("width"),
                mem_clk_max: get("mem_clk_max"),
            });
        }
        Ok(Node {
            index,
            gpu_id,
            name,
            props,
            mem_banks,
        })
    }

    /// A property, 0 when absent.
    pub fn prop(&self, key: &str) -> u64 {
        self.props.get(key).copied().unwrap_or(0)
    }

    /// Whether this node is a GPU.
    pub fn is_gpu(&self) -> bool {
        self.gpu_id != 0
    }

    /// `gfx_target_version` (major·10000 + minor·100 + stepping; gfx1151 = 110501).
    pub fn gfx_target_version(&self) -> u32 {
        self.prop("gfx_target_version") as u32
    }

    /// LLVM target name from `gfx_target_version` ("gfx1151").
    pub fn gfx_name(&self) -> String {
        gfx_name(self.gfx_target_version())
    }

    /// Compute units (all XCCs).
    pub fn cu_count(&self) -> u32 {
        let per = self.prop("simd_per_cu").max(1);
        (self.prop("simd_count") / per) as u32
    }

    /// `num_xcc` (1 unless MI300-class).
    pub fn num_xcc(&self) -> u32 {
        self.prop("num_xcc").max(1) as u32
    }

    /// Wave size (32 on RDNA).
    pub fn wave_size(&self) -> u32 {
        self.prop("wave_front_size") as u32
    }

    /// LDS per work-group in bytes.
    pub fn lds_bytes(&self) -> u32 {
        (self.prop("lds_size_in_kb") * 1024) as u32
    }

    /// Waves per CU.
    pub fn waves_per_cu(&self) -> u32 {
        (self.prop("max_waves_per_simd") * self.prop("simd_per_cu")) as u32
    }

    /// `/dev/dri/renderD<drm_render_minor>`, if the node has one.
    pub fn render_node(&self) -> Option<String> {
        self.props
            .get("drm_render_minor")
            .filter(|m| **m != 0)
            .map(|m| format!("/dev/dri/renderD{m}"))
    }

    /// Bytes of VRAM banks (on an APU: the BIOS carve-out).
    pub fn vram_bytes(&self) -> u64 {
        self.mem_banks
            .iter()
            .filter(|b| matches!(b.heap_type, HeapType::FbPublic | HeapType::FbPrivate))
            .map(|b| b.size_in_bytes)
            .sum()
    }

    /// `HSA_CAP_DOORBELL_TYPE` (2 = 64-bit doorbells, gfx9+).
    pub fn doorbell_type(&self) -> u32 {
        ((self.prop("capability") >> 12) & 0x3) as u32
    }

    /// Whether this is an integrated GPU. No sysfs key says so; these gfx targets exist
    /// only as APUs (gfx1150/1151/1152 Strix, gfx90c Renoir/Cezanne, gfx1035/1036/1037
    /// Rembrandt/Raphael/Mendocino, gfx1103 Phoenix).
    pub fn looks_like_apu(&self) -> bool {
        matches!(self.gfx_target_version(), 110500..=110599 | 90012 | 100305..=100307 | 110003)
    }
}

/// `gfx{major}{minor:x}{step:x}` from a `gfx_target_version`.
pub fn gfx_name(v: u32) -> String {
    format!("gfx{}{:x}{:x}", v / 10000, (v / 100) % 100, v % 100)
}

#[cfg(test)]
mod tests {
    #[test]
    fn gfx_names() {
        assert_eq!(super::gfx_name(110501), "gfx1151");
        assert_eq!(super::gfx_name(110000), "gfx1100");
        assert_eq!(super::gfx_name(90010), "gfx90a");
    }
}
