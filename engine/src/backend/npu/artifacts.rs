//! Where the NPU's GEMM kernels come from: a directory of artifacts built with IRON/Peano
//! (`kernels/npu/build.sh`, format in `kernels/npu/README.md`), picked by their `op` shape,
//! or, on the emulator, artifacts made in process whose instruction stream names the shape
//! and whose kernel runs as [`emulated_gemm`] — the computation the AIE kernel must do.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use onebit_drv::emu::xdna::{NpuJob, XdnaEmu};
use onebit_drv::xclbin_build::npu_xclbin;
use onebit_drv::xdna::artifact::{Manifest, NpuKernelArtifact};
use onebit_kernels::ternary::{dot_codes_ref, epilogue, TernaryView};
use onebit_kernels::ActScale;

/// The `op.name` of the int8 × ternary prefill GEMM.
pub const OP_NAME: &str = "gemm_i8_ternary";

/// Columns of the AIE array the design uses (4 of Strix Halo's 8: another context can
/// share the NPU).
pub const COLUMNS: u16 = 4;

/// `[m, k] int8 × [n, k] ternary → [m, n] f32`; `k` is padded to the 128-element block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GemmShape {
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

impl GemmShape {
    pub fn act_bytes(&self) -> usize {
        self.m * self.k
    }
    pub fn weight_bytes(&self) -> usize {
        self.n * self.k / 4
    }
    /// The weight scale (f32), 4 bytes of padding, then per row its scale (f32) and the sum
    /// of its int8 values (i32): the CPU's [`ActScale`] as the kernel reads it.
    pub fn scales_bytes(&self) -> usize {
        8 + 8 * self.m
    }
    pub fn out_bytes(&self) -> usize {
        4 * self.m * self.n
    }

    pub fn name(&self) -> String {
        format!("{OP_NAME}_{}x{}x{}", self.m, self.k, self.n)
    }

    /// The manifest of this shape's kernel: the MLIR-AIE leading words, then the runtime
    /// sequence's buffers in the design's order (act, weights, scales, out).
    pub fn manifest(&self) -> Manifest {
        let v = serde_json::json!({
            "format": "onebit-npu-kernel",
            "version": 1,
            "name": self.name(),
            "xclbin": "final.xclbin",
            "instructions": "insts.bin",
            "args": [
                {"kind": "u64", "value": 3},
                {"kind": "u64", "value": 0},
                {"kind": "u32", "value": 0},
                {"kind": "buffer", "name": "act", "access": "read", "bytes": self.act_bytes()},
                {"kind": "buffer", "name": "weights", "access": "read", "bytes": self.weight_bytes()},
                {"kind": "buffer", "name": "scales", "access": "read", "bytes": self.scales_bytes()},
                {"kind": "buffer", "name": "out", "access": "write", "bytes": self.out_bytes()}
            ],
            "op": {"name": OP_NAME, "m": self.m, "k": self.k, "n": self.n}
        });
        serde_json::from_value(v).expect("the manifest literal matches the schema")
    }

    /// The shape an artifact's `op` declares, if it is this GEMM.
    pub fn of(a: &NpuKernelArtifact) -> Option<GemmShape> {
        let op = &a.manifest.op;
        if op.get("name")?.as_str()? != OP_NAME {
            return None;
        }
        let get = |f: &str| op.get(f)?.as_u64().map(|v| v as usize);
        Some(GemmShape {
            m: get("m")?,
            k: get("k")?,
            n: get("n")?,
        })
    }
}

/// Word offsets of the buffer addresses in a START_NPU argument block (after the opcode,
/// instruction address and instruction count words).
const ARG_ACT: usize = 5;
const ARG_WEIGHTS: usize = 7;
const ARG_SCALES: usize = 9;
const ARG_OUT: usize = 11;

/// The instruction stream of an emulated kernel: recognisable words naming the shape, so
/// each shape hashes to its own registered function.
fn emulated_instructions(s: &GemmShape) -> Vec<u8> {
    let mut v = format!("onebit emulated {} v1", s.name()).into_bytes();
    v.resize(v.len().next_multiple_of(4), 0);
    v
}

/// An in-process artifact for `s`, its kernel registered with `npu` as [`emulated_gemm`].
pub fn emulated(npu: &XdnaEmu, s: GemmShape) -> Result<NpuKernelArtifact, String> {
    let mut pdi = format!("onebit emulated PDI {}", s.name()).into_bytes();
    pdi.resize(4096, 0);
    let xclbin = npu_xclbin([0x1b; 16], &pdi, COLUMNS, 2048);
    let a = NpuKernelArtifact::from_parts(s.manifest(), &xclbin, emulated_instructions(&s))
        .map_err(|e| format!("emulated artifact {}: {e}", s.name()))?;
    npu.register_kernel(
        a.instruction_hash,
        &s.name(),
        Arc::new(move |job: &mut NpuJob<'_>| emulated_gemm(job, s)),
    );
    Ok(a)
}

/// What the AIE kernel computes for one launch, written as the core does it: per output
/// element the unsigned 2-bit codes times the int8 activations summed in i32, the row's
/// activation sum subtracted (codes are `w + 1`), then the CPU's float epilogue.
pub fn emulated_gemm(job: &mut NpuJob<'_>, s: GemmShape) -> Result<(), String> {
    let act = job.read(job.arg_u64(ARG_ACT)?, s.act_bytes())?;
    let w = job.read(job.arg_u64(ARG_WEIGHTS)?, s.weight_bytes())?;
    let sc = job.read(job.arg_u64(ARG_SCALES)?, s.scales_bytes())?;
    let word = |i: usize| <[u8; 4]>::try_from(&sc[i..i + 4]).expect("4 bytes");
    let w_scale = f32::from_le_bytes(word(0));
    let view = TernaryView::new(s.n, s.k, &w).ok_or("weight buffer size")?;
    let mut out = vec![0u8; s.out_bytes()];
    for t in 0..s.m {
        let a = ActScale {
            scale: f32::from_le_bytes(word(8 + 8 * t)),
            sum: i32::from_le_bytes(word(12 + 8 * t)),
        };
        let q: Vec<i8> = act[t * s.k..(t + 1) * s.k]
            .iter()
            .map(|&b| b as i8)
            .collect();
        for r in 0..s.n {
            let y = epilogue(dot_codes_ref(view.row(r), &q), a, w_scale);
            let at = 4 * (t * s.n + r);
            out[at..at + 4].copy_from_slice(&y.to_le_bytes());
        }
    }
    job.write(job.arg_u64(ARG_OUT)?, &out)
}

/// Every GEMM artifact under `dir` (each subdirectory with a `manifest.json`, or `dir`
/// itself), with its shape. Artifacts of other ops are skipped; broken ones are errors.
pub fn load_dir(dir: &Path) -> Result<Vec<(GemmShape, NpuKernelArtifact)>, String> {
    let mut paths: Vec<PathBuf> = Vec::new();
    if dir.join("manifest.json").is_file() {
        paths.push(dir.to_owned());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "NPU artifact directory {}: {e}; build the kernels with kernels/npu/build.sh and pass \
             their output directory (--npu-artifacts or ONEBIT_NPU_ARTIFACTS)",
            dir.display()
        )
    })?;
    for e in entries.flatten() {
        if e.path().join("manifest.json").is_file() {
            paths.push(e.path());
        }
    }
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let a = NpuKernelArtifact::load(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if let Some(s) = GemmShape::of(&a) {
            check_buffers(&a, &s).map_err(|e| format!("{}: {e}", p.display()))?;
            out.push((s, a));
        }
    }
    Ok(out)
}

/// The buffers the engine binds, each at least as large as the shape needs.
fn check_buffers(a: &NpuKernelArtifact, s: &GemmShape) -> Result<(), String> {
    for (name, bytes) in [
        ("act", s.act_bytes()),
        ("weights", s.weight_bytes()),
        ("scales", s.scales_bytes()),
        ("out", s.out_bytes()),
    ] {
        match a.buffers().find(|(n, _, _)| *n == name) {
            Some((_, _, b)) if b as usize <= bytes => {}
            Some((_, _, b)) => {
                return Err(format!(
                    "buffer {name:?} declares {b} bytes, more than the {bytes} its op shape needs"
                ))
            }
            None => {
                return Err(format!(
                    "no buffer argument {name:?}; an {OP_NAME} kernel takes act, weights, scales and out"
                ))
            }
        }
    }
    if a.buffers().count() != 4 {
        return Err(format!(
            "{} buffer arguments; an {OP_NAME} kernel takes exactly act, weights, scales and out",
            a.buffers().count()
        ));
    }
    Ok(())
}
