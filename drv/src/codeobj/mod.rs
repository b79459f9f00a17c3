//! The AMDGPU code-object loader (HSA code object v5/v6, reference §4): checks the ELF
//! (machine, target, ABI version), reads the msgpack metadata note, validates each kernel's
//! 64-byte descriptor against it, lays the `PT_LOAD` segments out at a base address with
//! relocations applied, and builds kernarg segments with the v5 hidden arguments.
//!
//! Parsing and image building are pure (no device) so they are tested and fuzzed
//! anywhere; [`load::Program`] puts the image into executable GPU memory.

pub mod descriptor;
mod elf;
pub mod kernarg;
pub mod load;
mod metadata;
pub mod msgpack;
#[cfg(test)]
mod tests;

pub use descriptor::KernelDescriptor;
pub use elf::{EF_AMDGPU_MACH_GFX1151, EM_AMDGPU};
pub use kernarg::{ArgKind, Launch};
pub use load::Program;

/// Why a code object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeObjectError {
    #[error("not an ELF file (no \\x7fELF magic); expected an AMDGPU code object such as kernels/gpu/bin/*.co")]
    NotElf,
    #[error(
        "ELF OS/ABI {osabi}, ABI version {abi_version}: need AMDGPU HSA (64) code object v5 (ABI version 3) or v6 (4); \
         rebuild with kernels/gpu/build.sh (clang-19 defaults to v5)"
    )]
    WrongAbi { osabi: u8, abi_version: u8 },
    #[error("e_machine {0}: not an AMDGPU code object (EM_AMDGPU = 224)")]
    WrongMachine(u16),
    #[error(
        "code object is built for EF_AMDGPU_MACH {file:#x} but this GPU is {gpu:#x} (gfx1151 = 0x4a); \
         rebuild with -mcpu for this GPU"
    )]
    WrongTarget { file: u32, gpu: u32 },
    #[error("{what} at file offset {offset:#x}+{len:#x} runs past the end of the {file_len}-byte file (truncated download?)")]
    Truncated {
        what: String,
        offset: u64,
        len: u64,
        file_len: u64,
    },
    #[error("malformed code object: {0}")]
    Malformed(String),
    #[error("no AMDGPU metadata note (NT_AMDGPU_METADATA = 32, name \"AMDGPU\"); is this a code object v5 built by clang?")]
    MissingMetadata,
    #[error("metadata note, byte {offset}: {what}")]
    Metadata { offset: usize, what: String },
    #[error("kernel `{kernel}`: {what}")]
    Kernel { kernel: String, what: String },
    #[error("relocation at {offset:#x} (type {r_type}): {what}")]
    Relocation {
        offset: u64,
        r_type: u32,
        what: String,
    },
    #[error("kernarg for `{kernel}`: {what}")]
    Kernarg { kernel: String, what: String },
}

/// One argument slot of a kernel's kernarg segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgInfo {
    pub offset: u32,
    pub size: u32,
    /// `.value_kind` as the metadata spells it.
    pub value_kind: String,
    pub kind: ArgKind,
}

/// One kernel of a code object.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelInfo {
    pub name: String,
    /// The descriptor symbol (`<name>.kd`).
    pub symbol: String,
    /// Offset of the descriptor from the load base.
    pub descriptor_offset: u64,
    pub descriptor: KernelDescriptor,
    pub kernarg_size: u32,
    pub kernarg_align: u32,
    /// Static LDS bytes.
    pub group_segment_fixed_size: u32,
    /// Scratch bytes per work-item.
    pub private_segment_fixed_size: u32,
    pub wavefront_size: u32,
    pub max_flat_workgroup_size: u32,
    pub uses_dynamic_stack: bool,
    pub args: Vec<ArgInfo>,
}

impl KernelInfo {
    /// The explicit arguments, in order.
    pub fn explicit_args(&self) -> impl Iterator<Item = &ArgInfo> {
        self.args.iter().filter(|a| a.kind == ArgKind::Explicit)
    }
}

/// A parsed, checked code object.
#[derive(Debug, Clone)]
pub struct CodeObject {
    bytes: Vec<u8>,
    elf: elf::Elf,
    /// `amdhsa.target`.
    pub target: String,
    pub kernels: Vec<KernelInfo>,
    /// Bytes the loaded image spans from its base (page-rounded).
    pub image_size: u64,
}

impl CodeObject {
    /// Parses `bytes` for a GPU whose `EF_AMDGPU_MACH` is `mach` ([`EF_AMDGPU_MACH_GFX1151`]).
    pub fn parse(bytes: &[u8], mach: u32) -> Result<CodeObject, CodeObjectError> {
        let elf = elf::parse(bytes, mach)?;
        if elf.metadata.is_empty() {
            return Err(CodeObjectError::MissingMetadata);
        }
        // One note per linked object: the kernels are their union, the target must agree.
        let mut target: Option<String> = None;
        let mut raw = Vec::new();
        for (note_off, note) in &elf.metadata {
            let meta = msgpack::decode(note).map_err(|e| match e {
                CodeObjectError::Metadata { offset, what } => CodeObjectError::Metadata {
                    offset: note_off + offset,
                    what,
                },
                other => other,
            })?;
            let (t, kernels) = metadata::read(&meta)?;
            match &target {
                Some(prev) if *prev != t => {
                    return Err(CodeObjectError::Metadata {
                        offset: *note_off,
                        what: format!("metadata notes disagree on the target: `{prev}` vs `{t}`"),
                    })
                }
                _ => target = Some(t),
            }
            raw.extend(kernels);
        }
        let target = target.unwrap_or_default();
        // Each segment's end was checked not to overflow; rounding the last one up to a
        // page can (an end in the top page of the address space), so it is checked too.
        let end = elf
            .segments
            .iter()
            .filter(|s| s.p_type == elf::PT_LOAD)
            .map(|s| s.vaddr + s.memsz)
            .max()
            .ok_or_else(|| CodeObjectError::Malformed("no PT_LOAD segment".into()))?;
        let image_size = end
            .checked_next_multiple_of(4096)
            .filter(|&n| n <= 1 << 30)
            .ok_or_else(|| {
                CodeObjectError::Malformed(format!(
                    "image ending at {end:#x} is implausibly large (at most 1 GiB)"
                ))
            })?;
        let mut co = CodeObject {
            bytes: bytes.to_vec(),
            elf,
            target,
            kernels: Vec::new(),
            image_size,
        };
        for k in raw {
            if co
                .kernels
                .iter()
                .any(|seen: &KernelInfo| seen.name == k.name)
            {
                return Err(CodeObjectError::Kernel {
                    kernel: k.name,
                    what: "defined twice in the metadata".into(),
                });
            }
            let info = co.check_kernel(k)?;
            co.kernels.push(info);
        }
        // relocations must be valid before anyone loads: try them against a dummy base
        co.image(0x1_0000_0000)?;
        Ok(co)
    }

    /// `EI_ABIVERSION` (3 = v5, 4 = v6).
    pub fn abi_version(&self) -> u8 {
        self.elf.abi_version
    }

    /// `e_flags` of the ELF header.
    pub fn e_flags(&self) -> u32 {
        self.elf.e_flags
    }

    /// The kernel called `name`.
    pub fn kernel(&self, name: &str) -> Option<&KernelInfo> {
        self.kernels.iter().find(|k| k.name == name)
    }

    /// Bytes of the loaded image at address `base`: segments placed at their `p_vaddr`,
    /// the rest zero, dynamic relocations applied.
    pub fn image(&self, base: u64) -> Result<Vec<u8>, CodeObjectError> {
        let mut img = vec![0u8; self.image_size as usize];
        for s in self
            .elf
            .segments
            .iter()
            .filter(|s| s.p_type == elf::PT_LOAD)
        {
            let src = &self.bytes[s.offset as usize..(s.offset + s.filesz) as usize];
            img[s.vaddr as usize..(s.vaddr + s.filesz) as usize].copy_from_slice(src);
        }
        for r in &self.elf.relocs {
            let bad = |what: String| CodeObjectError::Relocation {
                offset: r.offset,
                r_type: r.r_type,
                what,
            };
            let value = match r.r_type {
                elf::R_AMDGPU_NONE => continue,
                elf::R_AMDGPU_RELATIVE64 => base.wrapping_add_signed(r.addend),
                elf::R_AMDGPU_ABS64 => {
                    let sym =
                        self.elf.dynsym.get(r.sym as usize).ok_or_else(|| {
                            bad(format!("symbol index {} outside .dynsym", r.sym))
                        })?;
                    if sym.shndx == 0 {
                        return Err(bad(format!(
                            "refers to undefined symbol `{}`; kernels must not call external functions \
                             (no device libraries are linked)",
                            sym.name
                        )));
                    }
                    base.wrapping_add(sym.value).wrapping_add_signed(r.addend)
                }
                t => {
                    return Err(bad(format!(
                        "relocation type {t} is not supported (only NONE, ABS64, RELATIVE64)"
                    )))
                }
            };
            let at = r.offset as usize;
            if r.offset.checked_add(8).is_none_or(|e| e > self.image_size) {
                return Err(bad(format!(
                    "target outside the {:#x}-byte image",
                    self.image_size
                )));
            }
            img[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        Ok(img)
    }

    fn check_kernel(&self, k: metadata::RawKernel) -> Result<KernelInfo, CodeObjectError> {
        let err = |what: String| CodeObjectError::Kernel {
            kernel: k.name.clone(),
            what,
        };
        let sym = self
            .elf
            .dynsym
            .iter()
            .find(|s| s.name == k.symbol)
            .ok_or_else(|| err(format!("descriptor symbol `{}` not in .dynsym", k.symbol)))?;
        if sym.shndx == 0 || sym.size != 64 {
            return Err(err(format!(
                "descriptor `{}` is undefined or not 64 bytes (size {})",
                k.symbol, sym.size
            )));
        }
        if sym.value % 64 != 0 {
            return Err(err(format!(
                "descriptor at {:#x} is not 64-byte aligned",
                sym.value
            )));
        }
        let seg = self.load_segment(sym.value, 64).ok_or_else(|| {
            err(format!(
                "descriptor at {:#x} is not inside a loaded segment's file bytes",
                sym.value
            ))
        })?;
        let at = (seg.offset + (sym.value - seg.vaddr)) as usize;
        let kd = KernelDescriptor::from_bytes(self.bytes[at..at + 64].try_into().expect("64"));
        let entry = sym
            .value
            .checked_add_signed(kd.kernel_code_entry_byte_offset);
        let code_ok = entry
            .and_then(|e| self.load_segment(e, 4))
            .is_some_and(|s| s.flags & elf::PF_X != 0);
        if !code_ok {
            return Err(err(format!(
                "entry at descriptor {:+#x} is not inside an executable segment",
                kd.kernel_code_entry_byte_offset
            )));
        }
        if entry.is_some_and(|e| e % 256 != 0) {
            return Err(err("kernel entry is not 256-byte aligned".into()));
        }
        if kd.kernarg_size != k.kernarg_size {
            return Err(err(format!(
                "descriptor kernarg_size {} disagrees with metadata .kernarg_segment_size {}",
                kd.kernarg_size, k.kernarg_size
            )));
        }
        if kd.group_segment_fixed_size != k.group_segment_fixed_size
            || kd.private_segment_fixed_size != k.private_segment_fixed_size
        {
            return Err(err(
                "descriptor segment sizes disagree with the metadata".into()
            ));
        }
        if kd.wave32() != (k.wavefront_size == 32) {
            return Err(err(format!(
                "descriptor wave32 bit {} disagrees with .wavefront_size {}",
                kd.wave32(),
                k.wavefront_size
            )));
        }
        Ok(KernelInfo {
            descriptor_offset: sym.value,
            descriptor: kd,
            name: k.name,
            symbol: k.symbol,
            kernarg_size: k.kernarg_size,
            kernarg_align: k.kernarg_align,
            group_segment_fixed_size: k.group_segment_fixed_size,
            private_segment_fixed_size: k.private_segment_fixed_size,
            wavefront_size: k.wavefront_size,
            max_flat_workgroup_size: k.max_flat_workgroup_size,
            uses_dynamic_stack: k.uses_dynamic_stack,
            args: k.args,
        })
    }

    /// The PT_LOAD whose file-backed bytes hold `vaddr..vaddr+len`.
    fn load_segment(&self, vaddr: u64, len: u64) -> Option<&elf::ProgramHeader> {
        self.elf.segments.iter().find(|s| {
            s.p_type == elf::PT_LOAD
                && vaddr >= s.vaddr
                && vaddr
                    .checked_add(len)
                    .is_some_and(|e| e <= s.vaddr + s.filesz)
        })
    }
}

/// `EF_AMDGPU_MACH` of a gfx target name (the RDNA 3/3.5 family onebit runs on).
pub fn mach_for(gfx: &str) -> Option<u32> {
    Some(match gfx {
        "gfx1100" => 0x041,
        "gfx1101" => 0x046,
        "gfx1102" => 0x047,
        "gfx1103" => 0x044,
        "gfx1150" => 0x043,
        "gfx1151" => 0x04a,
        "gfx1152" => 0x055,
        _ => return None,
    })
}
