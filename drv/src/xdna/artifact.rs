//! The NPU kernel artifact onebit loads: a directory with `manifest.json`, the xclbin
//! (the PDI that configures the AIE partition) and the instruction stream (the
//! "transaction" binary the NPU's controller runs per command), plus the kernel's argument
//! layout. `kernels/npu/README.md` documents the format and how to build one with IRON.
//!
//! Loading validates everything that can be checked without hardware: the manifest schema,
//! the xclbin container and its AIE_PARTITION, the instruction stream's size (and, for
//! `"instructions_format": "txn"`, its transaction header), and that the arguments fit one
//! START_NPU packet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ert::ArgWords;
use crate::sys::amdxdna::MAX_NPU_ARGS_WORDS;
use crate::xclbin::{AiePartition, Xclbin, XclbinError, IP_PS_KERNEL};

/// `manifest.json`'s `format` value.
pub const MANIFEST_FORMAT: &str = "onebit-npu-kernel";
/// The manifest version this loader reads.
pub const MANIFEST_VERSION: u32 = 1;
/// Name of the manifest inside an artifact directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// A bigger instruction stream than this is certainly not a kernel's control code.
pub const MAX_INSTRUCTION_BYTES: usize = 64 << 20;

/// FNV-1a (64-bit) of an instruction stream: the key under which the emulator finds the CPU
/// function that stands in for the kernel, and a cheap identity for logs.
pub fn instruction_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("cannot read NPU artifact file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("NPU artifact manifest {path} is not valid: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("manifest format is {found:?}, expected {MANIFEST_FORMAT:?}")]
    Format { found: String },
    #[error("manifest version {found} is not supported (this onebit reads version {MANIFEST_VERSION}); rebuild the artifact")]
    Version { found: u32 },
    #[error("xclbin {path}: {source}")]
    Xclbin { path: PathBuf, source: XclbinError },
    #[error("instruction stream {path}: {problem}")]
    Instructions { path: PathBuf, problem: String },
    #[error("manifest arguments: {0}")]
    Args(String),
    #[error("cannot pick the CU function: {0}")]
    CuFunc(String),
}

/// How the instruction stream is framed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstructionFormat {
    /// Opaque 32-bit words (only size checks).
    #[default]
    Raw,
    /// An aie-rt transaction: a 16-byte `XAie_TxnHeader` whose `TxnSize` is the stream length.
    Txn,
}

/// How a kernel uses a buffer argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

/// One entry of the kernel's argument list, in register-map order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArgSpec {
    /// A 32-bit constant.
    U32 { value: u32 },
    /// A 64-bit constant (two words, low first).
    U64 { value: u64 },
    /// A buffer: its 64-bit NPU address (two words), bound at run time by name.
    Buffer {
        name: String,
        access: Access,
        bytes: u64,
    },
}

impl ArgSpec {
    fn words(&self) -> usize {
        match self {
            ArgSpec::U32 { .. } => 1,
            ArgSpec::U64 { .. } | ArgSpec::Buffer { .. } => 2,
        }
    }
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub name: String,
    /// Path of the xclbin, relative to the manifest.
    pub xclbin: String,
    /// Path of the instruction stream, relative to the manifest.
    pub instructions: String,
    #[serde(default)]
    pub instructions_format: InstructionFormat,
    /// The IP_LAYOUT kernel whose `functional` value is the CU function (default `MLIR_AIE`).
    #[serde(default)]
    pub kernel: Option<String>,
    /// Overrides the CU function taken from IP_LAYOUT.
    #[serde(default)]
    pub cu_func: Option<u8>,
    pub args: Vec<ArgSpec>,
    /// What the kernel computes (`{"name": "gemm_i8_ternary", "m": 256, ...}`): for the
    /// engine to match kernels to ops; drv does not interpret it.
    #[serde(default)]
    pub op: BTreeMap<String, serde_json::Value>,
}

/// A loaded, validated artifact.
#[derive(Clone, Debug)]
pub struct NpuKernelArtifact {
    pub manifest: Manifest,
    /// Where it was loaded from (empty for in-memory artifacts).
    pub dir: PathBuf,
    pub partition: AiePartition,
    /// The PRIMARY PDI image (what CONFIG_CU loads).
    pub pdi: Vec<u8>,
    pub cu_func: u8,
    pub instructions: Vec<u8>,
    pub instruction_hash: u64,
}

fn read(path: &Path) -> Result<Vec<u8>, ArtifactError> {
    std::fs::read(path).map_err(|source| ArtifactError::Io {
        path: path.to_owned(),
        source,
    })
}

impl NpuKernelArtifact {
    /// Loads `path`: an artifact directory or its `manifest.json`.
    pub fn load(path: &Path) -> Result<Self, ArtifactError> {
        let manifest_path = if path.is_dir() {
            path.join(MANIFEST_FILE)
        } else {
            path.to_owned()
        };
        let dir = manifest_path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_default();
        let text = read(&manifest_path)?;
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|source| ArtifactError::Json {
                path: manifest_path.clone(),
                source,
            })?;
        let xclbin = read(&dir.join(&manifest.xclbin))?;
        let instructions = read(&dir.join(&manifest.instructions))?;
        let mut a = Self::from_parts(manifest, &xclbin, instructions)?;
        a.dir = dir;
        tracing::debug!(name = %a.manifest.name, dir = %a.dir.display(), hash = format_args!("{:#018x}", a.instruction_hash), "NPU artifact loaded");
        Ok(a)
    }

    /// Validates an artifact given as values (tests, embedded kernels).
    pub fn from_parts(
        manifest: Manifest,
        xclbin: &[u8],
        instructions: Vec<u8>,
    ) -> Result<Self, ArtifactError> {
        if manifest.format != MANIFEST_FORMAT {
            return Err(ArtifactError::Format {
                found: manifest.format,
            });
        }
        if manifest.version != MANIFEST_VERSION {
            return Err(ArtifactError::Version {
                found: manifest.version,
            });
        }
        let xpath = PathBuf::from(&manifest.xclbin);
        let xerr = |source| ArtifactError::Xclbin {
            path: xpath.clone(),
            source,
        };
        let parsed = Xclbin::parse(xclbin).map_err(xerr)?;
        let partition = parsed.aie_partition().map_err(xerr)?;
        let pdi = partition.primary_pdi().map_err(xerr)?.image.clone();
        let cu_func = pick_cu_func(&manifest, &parsed)?;
        check_instructions(&manifest, &instructions)?;
        check_args(&manifest.args)?;
        let instruction_hash = instruction_hash(&instructions);
        Ok(NpuKernelArtifact {
            manifest,
            dir: PathBuf::new(),
            partition,
            pdi,
            cu_func,
            instructions,
            instruction_hash,
        })
    }

    /// Buffer arguments in order: (name, access, bytes).
    pub fn buffers(&self) -> impl Iterator<Item = (&str, Access, u64)> {
        self.manifest.args.iter().filter_map(|a| match a {
            ArgSpec::Buffer {
                name,
                access,
                bytes,
            } => Some((name.as_str(), *access, *bytes)),
            _ => None,
        })
    }

    /// The argument words with each buffer bound to an NPU address (`(name, address,
    /// bytes available)`); every buffer must be bound once and be large enough.
    pub fn arg_words(&self, bound: &[(&str, u64, u64)]) -> Result<ArgWords, ArtifactError> {
        for (name, _, _) in bound {
            if !self.buffers().any(|(n, _, _)| n == *name) {
                return Err(ArtifactError::Args(format!(
                    "{name:?} is not a buffer argument of kernel {:?}",
                    self.manifest.name
                )));
            }
        }
        let mut w = ArgWords::new();
        for a in &self.manifest.args {
            w = match a {
                ArgSpec::U32 { value } => w.u32(*value),
                ArgSpec::U64 { value } => w.u64(*value),
                ArgSpec::Buffer { name, bytes, .. } => {
                    let mut hits = bound.iter().filter(|(n, _, _)| n == name);
                    let (_, addr, have) = hits.next().ok_or_else(|| {
                        ArtifactError::Args(format!("buffer {name:?} is not bound"))
                    })?;
                    if hits.next().is_some() {
                        return Err(ArtifactError::Args(format!(
                            "buffer {name:?} is bound twice"
                        )));
                    }
                    if have < bytes {
                        return Err(ArtifactError::Args(format!(
                            "buffer {name:?} needs {bytes} bytes but the bound range has {have}"
                        )));
                    }
                    w.u64(*addr)
                }
            };
        }
        Ok(w)
    }

    /// Columns the partition spans (`num_tiles` = this × 4 compute rows on npu4).
    pub fn columns(&self) -> u16 {
        self.partition.column_width
    }
}

fn pick_cu_func(m: &Manifest, x: &Xclbin) -> Result<u8, ArtifactError> {
    if let Some(f) = m.cu_func {
        return Ok(f);
    }
    let want = m.kernel.as_deref().unwrap_or("MLIR_AIE");
    let ips = x.ip_layout().map_err(|e| {
        ArtifactError::CuFunc(format!(
            "{e}; set \"cu_func\" in the manifest (0 for DPU kernels)"
        ))
    })?;
    ips.iter()
        .find(|ip| ip.ip_type == IP_PS_KERNEL && ip.name.split(':').next() == Some(want))
        .map(|ip| ip.functional())
        .ok_or_else(|| {
            let names: Vec<_> = ips.iter().map(|i| i.name.as_str()).collect();
            ArtifactError::CuFunc(format!(
                "IP_LAYOUT has no PS kernel named {want:?} (it has {names:?}); set \"kernel\" or \"cu_func\" in the manifest"
            ))
        })
}

fn check_instructions(m: &Manifest, bytes: &[u8]) -> Result<(), ArtifactError> {
    let bad = |problem: String| ArtifactError::Instructions {
        path: PathBuf::from(&m.instructions),
        problem,
    };
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return Err(bad(format!(
            "{} bytes is not a non-empty whole number of 32-bit words",
            bytes.len()
        )));
    }
    if bytes.len() > MAX_INSTRUCTION_BYTES {
        return Err(bad(format!(
            "{} bytes is larger than {MAX_INSTRUCTION_BYTES}",
            bytes.len()
        )));
    }
    if m.instructions_format == InstructionFormat::Txn {
        if bytes.len() < 16 {
            return Err(bad("shorter than the 16-byte transaction header".into()));
        }
        let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let (num_ops, txn_size) = (word(8), word(12));
        if txn_size as usize != bytes.len() {
            return Err(bad(format!(
                "transaction header says {txn_size} bytes but the file has {} (truncated or not a txn binary; use \"instructions_format\": \"raw\")",
                bytes.len()
            )));
        }
        if num_ops == 0 {
            return Err(bad("transaction header declares 0 operations".into()));
        }
    }
    Ok(())
}

fn check_args(args: &[ArgSpec]) -> Result<(), ArtifactError> {
    let words: usize = args.iter().map(ArgSpec::words).sum();
    if words > MAX_NPU_ARGS_WORDS {
        return Err(ArtifactError::Args(format!(
            "{words} argument words; one START_NPU packet carries at most {MAX_NPU_ARGS_WORDS} (MAX_NPU_ARGS_SIZE)"
        )));
    }
    let mut names: Vec<&str> = Vec::new();
    for a in args {
        if let ArgSpec::Buffer { name, bytes, .. } = a {
            if name.is_empty() {
                return Err(ArtifactError::Args(
                    "a buffer argument has an empty name".into(),
                ));
            }
            if names.contains(&name.as_str()) {
                return Err(ArtifactError::Args(format!(
                    "buffer name {name:?} appears twice"
                )));
            }
            if *bytes == 0 {
                return Err(ArtifactError::Args(format!("buffer {name:?} has 0 bytes")));
            }
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err(ArtifactError::Args(
            "no buffer arguments: a kernel with no inputs or outputs does nothing".into(),
        ));
    }
    Ok(())
}
