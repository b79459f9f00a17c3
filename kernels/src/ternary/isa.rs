//! Which instruction set the ternary kernels use, detected once.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable scalar code (the reference).
    Scalar,
    /// `vpmaddubsw`/`vpmaddwd` on 256-bit vectors (every x86-64 CPU since Haswell / Zen 1).
    Avx2,
    /// `vpdpbusd` on 512-bit vectors (Ice Lake+, Sapphire Rapids, Zen 4, Zen 5).
    Avx512Vnni,
}

impl Isa {
    /// Whether this CPU can run the kernels of `self`.
    pub fn available(self) -> bool {
        match self {
            Self::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Vnni => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every instruction set, best first.
    pub const ALL: [Isa; 3] = [Isa::Avx512Vnni, Isa::Avx2, Isa::Scalar];

    /// The best available one. `ONEBIT_ISA=avx2|scalar` caps it (for measuring one path
    /// against another on the same machine).
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let cap = std::env::var("ONEBIT_ISA")
                .ok()
                .and_then(|s| Isa::parse(&s));
            let start = cap.map_or(0, |c| Isa::ALL.iter().position(|i| *i == c).unwrap_or(0));
            Isa::ALL[start..]
                .iter()
                .copied()
                .find(|i| i.available())
                .unwrap_or(Isa::Scalar)
        })
    }

    pub fn parse(s: &str) -> Option<Isa> {
        match s.to_ascii_lowercase().as_str() {
            "scalar" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512" | "avx512vnni" | "avx512-vnni" => Some(Isa::Avx512Vnni),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "AVX2",
            Isa::Avx512Vnni => "AVX-512 VNNI",
        }
    }
}
