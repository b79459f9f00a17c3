//! The names of the compute surfaces, as `--surface` spells them.

use std::fmt;
use std::str::FromStr;

/// Where the forward pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Surface {
    /// The CPU cores (AVX-512 VNNI, AVX2 or scalar kernels).
    Cpu,
    /// Strix Halo's Radeon 8060S (gfx1151) through `/dev/kfd`.
    Igpu,
    /// Prompt prefill on the XDNA2 NPU, decode on the iGPU.
    NpuIgpu,
    /// Prompt prefill on the XDNA2 NPU, decode on the CPU.
    NpuCpu,
}

impl Surface {
    pub const ALL: [Surface; 4] = [
        Surface::Cpu,
        Surface::Igpu,
        Surface::NpuIgpu,
        Surface::NpuCpu,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Cpu => "cpu",
            Surface::Igpu => "igpu",
            Surface::NpuIgpu => "npu+igpu",
            Surface::NpuCpu => "npu+cpu",
        }
    }

    /// Whether decode steps run on the iGPU.
    pub fn decodes_on_igpu(self) -> bool {
        matches!(self, Surface::Igpu | Surface::NpuIgpu)
    }

    /// Whether prompt prefill runs on the NPU.
    pub fn prefills_on_npu(self) -> bool {
        matches!(self, Surface::NpuIgpu | Surface::NpuCpu)
    }
}

impl fmt::Display for Surface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `--surface` asked for: one surface, or `auto` (what `onebit probe` finds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SurfaceChoice {
    Auto,
    Fixed(Surface),
}

impl FromStr for SurfaceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(SurfaceChoice::Auto);
        }
        Surface::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .map(SurfaceChoice::Fixed)
            .ok_or_else(|| {
                format!("unknown surface {s:?}: use auto, cpu, igpu, npu+igpu or npu+cpu")
            })
    }
}

impl fmt::Display for SurfaceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SurfaceChoice::Auto => f.write_str("auto"),
            SurfaceChoice::Fixed(s) => s.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_surface_parses_from_its_name() {
        for s in Surface::ALL {
            assert_eq!(s.as_str().parse(), Ok(SurfaceChoice::Fixed(s)));
        }
        assert_eq!("auto".parse(), Ok(SurfaceChoice::Auto));
        let err = "gpu".parse::<SurfaceChoice>().unwrap_err();
        assert!(err.contains("npu+igpu"), "{err}");
    }
}
