//! The ELF64 container of an AMDGPU code object: header checks, program headers,
//! dynamic symbols, `.rela.dyn` and the notes. Every read is bounds-checked.

use super::CodeObjectError;

pub const EM_AMDGPU: u16 = 224;
pub const ELFOSABI_AMDGPU_HSA: u8 = 64;
/// `EI_ABIVERSION` of code object v5 / v6.
pub const ABI_V5: u8 = 3;
pub const ABI_V6: u8 = 4;
pub const EF_AMDGPU_MACH: u32 = 0xff;
pub const EF_AMDGPU_MACH_GFX1151: u32 = 0x04a;
pub const EF_AMDGPU_MACH_GFX11_GENERIC: u32 = 0x054;
const ET_DYN: u16 = 3;
pub const PT_LOAD: u32 = 1;
pub const PT_NOTE: u32 = 4;
pub const PF_X: u32 = 1;
const SHT_DYNSYM: u32 = 11;
const SHT_RELA: u32 = 4;
pub const NT_AMDGPU_METADATA: u32 = 32;

/// `R_AMDGPU_*` relocation types a loader of linked objects can meet.
pub const R_AMDGPU_NONE: u32 = 0;
pub const R_AMDGPU_ABS64: u32 = 3;
pub const R_AMDGPU_RELATIVE64: u32 = 13;

#[derive(Debug, Clone, Copy)]
pub struct ProgramHeader {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

#[derive(Debug, Clone)]
pub struct Symbol {
    pub name: String,
    pub value: u64,
    pub size: u64,
    /// Section index (0 = undefined).
    pub shndx: u16,
}

#[derive(Debug, Clone, Copy)]
pub struct Rela {
    pub offset: u64,
    pub r_type: u32,
    pub sym: u32,
    pub addend: i64,
}

/// What the loader needs out of the file.
#[derive(Debug, Clone)]
pub struct Elf {
    pub abi_version: u8,
    pub e_flags: u32,
    pub segments: Vec<ProgramHeader>,
    pub dynsym: Vec<Symbol>,
    pub relocs: Vec<Rela>,
    /// (file offset, descriptor) of every `NT_AMDGPU_METADATA` note named "AMDGPU" (lld
    /// keeps one per linked object).
    pub metadata: Vec<(usize, Vec<u8>)>,
}

pub(crate) struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    fn get(&self, off: u64, len: u64, what: &str) -> Result<&[u8], CodeObjectError> {
        let end = off.checked_add(len).filter(|&e| e <= self.0.len() as u64);
        match end {
            Some(end) => Ok(&self.0[off as usize..end as usize]),
            None => Err(CodeObjectError::Truncated {
                what: what.to_string(),
                offset: off,
                len,
                file_len: self.0.len() as u64,
            }),
        }
    }
    fn u16(&self, off: u64, what: &str) -> Result<u16, CodeObjectError> {
        Ok(u16::from_le_bytes(
            self.get(off, 2, what)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&self, off: u64, what: &str) -> Result<u32, CodeObjectError> {
        Ok(u32::from_le_bytes(
            self.get(off, 4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&self, off: u64, what: &str) -> Result<u64, CodeObjectError> {
        Ok(u64::from_le_bytes(
            self.get(off, 8, what)?.try_into().expect("8 bytes"),
        ))
    }
}

fn bad(what: impl Into<String>) -> CodeObjectError {
    CodeObjectError::Malformed(what.into())
}

/// Parses and checks the container. `mach` is the `EF_AMDGPU_MACH` the GPU runs.
pub fn parse(file: &[u8], mach: u32) -> Result<Elf, CodeObjectError> {
    let b = Bytes(file);
    let ident = b.get(0, 16, "ELF identification")?;
    if &ident[..4] != b"\x7fELF" {
        return Err(CodeObjectError::NotElf);
    }
    if ident[4] != 2 || ident[5] != 1 {
        return Err(bad(format!(
            "ELF class {} / data {}: an AMDGPU code object is 64-bit little-endian (2/1)",
            ident[4], ident[5]
        )));
    }
    if ident[7] != ELFOSABI_AMDGPU_HSA {
        return Err(CodeObjectError::WrongAbi {
            osabi: ident[7],
            abi_version: ident[8],
        });
    }
    let abi_version = ident[8];
    if abi_version != ABI_V5 && abi_version != ABI_V6 {
        return Err(CodeObjectError::WrongAbi {
            osabi: ident[7],
            abi_version,
        });
    }
    let machine = b.u16(18, "e_machine")?;
    if machine != EM_AMDGPU {
        return Err(CodeObjectError::WrongMachine(machine));
    }
    let e_type = b.u16(16, "e_type")?;
    if e_type != ET_DYN {
        return Err(bad(format!(
            "e_type {e_type}: need a linked shared object (ET_DYN = 3); link with ld.lld (clang without -c)"
        )));
    }
    let e_flags = b.u32(48, "e_flags")?;
    let file_mach = e_flags & EF_AMDGPU_MACH;
    let generic_ok = abi_version == ABI_V6
        && file_mach == EF_AMDGPU_MACH_GFX11_GENERIC
        && (0x041..=0x058).contains(&mach);
    if file_mach != mach && !generic_ok {
        return Err(CodeObjectError::WrongTarget {
            file: file_mach,
            gpu: mach,
        });
    }

    let (phoff, phentsize, phnum) = (
        b.u64(32, "e_phoff")?,
        b.u16(54, "e_phentsize")?,
        b.u16(56, "e_phnum")?,
    );
    if phnum > 0 && phentsize != 56 {
        return Err(bad(format!("e_phentsize {phentsize}, expected 56")));
    }
    let mut segments = Vec::with_capacity(phnum as usize);
    for i in 0..u64::from(phnum) {
        let at = phoff
            .checked_add(i * 56)
            .ok_or_else(|| bad("e_phoff overflows"))?;
        let ph = b.get(at, 56, "program header")?;
        let rd32 = |o: usize| u32::from_le_bytes(ph[o..o + 4].try_into().expect("4"));
        let rd64 = |o: usize| u64::from_le_bytes(ph[o..o + 8].try_into().expect("8"));
        let seg = ProgramHeader {
            p_type: rd32(0),
            flags: rd32(4),
            offset: rd64(8),
            vaddr: rd64(16),
            filesz: rd64(32),
            memsz: rd64(40),
        };
        if seg.p_type == PT_LOAD || seg.p_type == PT_NOTE {
            b.get(seg.offset, seg.filesz, "segment contents")?;
            if seg.filesz > seg.memsz {
                return Err(bad(format!(
                    "segment {i}: file size {:#x} > memory size {:#x}",
                    seg.filesz, seg.memsz
                )));
            }
            seg.vaddr
                .checked_add(seg.memsz)
                .ok_or_else(|| bad(format!("segment {i}: address overflows")))?;
        }
        segments.push(seg);
    }

    let mut metadata = Vec::new();
    for seg in segments.iter().filter(|s| s.p_type == PT_NOTE) {
        metadata.extend(metadata_notes(&b, seg.offset, seg.filesz)?);
    }

    let (shoff, shentsize, shnum) = (
        b.u64(40, "e_shoff")?,
        b.u16(58, "e_shentsize")?,
        b.u16(60, "e_shnum")?,
    );
    if shnum > 0 && shentsize != 64 {
        return Err(bad(format!("e_shentsize {shentsize}, expected 64")));
    }
    let section = |i: u64| -> Result<(u32, u64, u64, u32, u64), CodeObjectError> {
        let at = shoff
            .checked_add(i * 64)
            .ok_or_else(|| bad("e_shoff overflows"))?;
        let sh = b.get(at, 64, "section header")?;
        let rd32 = |o: usize| u32::from_le_bytes(sh[o..o + 4].try_into().expect("4"));
        let rd64 = |o: usize| u64::from_le_bytes(sh[o..o + 8].try_into().expect("8"));
        // (type, offset, size, link, entsize)
        Ok((rd32(4), rd64(24), rd64(32), rd32(40), rd64(56)))
    };
    let mut dynsym = Vec::new();
    let mut relocs = Vec::new();
    for i in 0..u64::from(shnum) {
        let (ty, off, size, link, entsize) = section(i)?;
        match ty {
            SHT_DYNSYM => {
                if entsize != 24 {
                    return Err(bad(format!(".dynsym entry size {entsize}, expected 24")));
                }
                if u64::from(link) >= u64::from(shnum) {
                    return Err(bad(format!(".dynsym links to section {link} of {shnum}")));
                }
                let (_, str_off, str_size, _, _) = section(u64::from(link))?;
                let strtab = b.get(str_off, str_size, ".dynstr")?;
                let syms = b.get(off, size, ".dynsym")?;
                for s in syms.chunks_exact(24) {
                    let name_off = u32::from_le_bytes(s[0..4].try_into().expect("4")) as usize;
                    let name = strtab
                        .get(name_off..)
                        .and_then(|t| t.iter().position(|&c| c == 0).map(|e| &t[..e]))
                        .ok_or_else(|| {
                            bad(format!("symbol name offset {name_off} outside .dynstr"))
                        })?;
                    dynsym.push(Symbol {
                        name: String::from_utf8_lossy(name).into_owned(),
                        shndx: u16::from_le_bytes(s[6..8].try_into().expect("2")),
                        value: u64::from_le_bytes(s[8..16].try_into().expect("8")),
                        size: u64::from_le_bytes(s[16..24].try_into().expect("8")),
                    });
                }
            }
            SHT_RELA => {
                if entsize != 24 {
                    return Err(bad(format!("relocation entry size {entsize}, expected 24")));
                }
                for r in b.get(off, size, ".rela")?.chunks_exact(24) {
                    let info = u64::from_le_bytes(r[8..16].try_into().expect("8"));
                    relocs.push(Rela {
                        offset: u64::from_le_bytes(r[0..8].try_into().expect("8")),
                        r_type: info as u32,
                        sym: (info >> 32) as u32,
                        addend: i64::from_le_bytes(r[16..24].try_into().expect("8")),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(Elf {
        abi_version,
        e_flags,
        segments,
        dynsym,
        relocs,
        metadata,
    })
}

/// Walks the notes of one PT_NOTE segment; returns (file offset, descriptor) of each
/// AMDGPU metadata note.
fn metadata_notes(
    b: &Bytes<'_>,
    off: u64,
    size: u64,
) -> Result<Vec<(usize, Vec<u8>)>, CodeObjectError> {
    let notes = b.get(off, size, "note segment")?;
    let mut found = Vec::new();
    let mut p = 0usize;
    let align4 = |n: usize| n.checked_add(3).map(|v| v & !3);
    while p + 12 <= notes.len() {
        let rd = |o: usize| u32::from_le_bytes(notes[o..o + 4].try_into().expect("4")) as usize;
        let (namesz, descsz, ty) = (rd(p), rd(p + 4), rd(p + 8) as u32);
        let name_at = p + 12;
        let desc_at = align4(namesz)
            .and_then(|n| name_at.checked_add(n))
            .ok_or_else(|| bad("note name size overflows"))?;
        let end = align4(descsz)
            .and_then(|d| desc_at.checked_add(d))
            .ok_or_else(|| bad("note size overflows"))?;
        if desc_at.checked_add(descsz).is_none_or(|e| e > notes.len())
            || name_at + namesz > notes.len()
        {
            return Err(CodeObjectError::Truncated {
                what: "note".into(),
                offset: off + p as u64,
                len: (12 + namesz + descsz) as u64,
                file_len: b.0.len() as u64,
            });
        }
        let name = &notes[name_at..name_at + namesz];
        if ty == NT_AMDGPU_METADATA && name.strip_suffix(&[0]).unwrap_or(name) == b"AMDGPU" {
            found.push((
                off as usize + desc_at,
                notes[desc_at..desc_at + descsz].to_vec(),
            ));
        }
        p = end;
    }
    Ok(found)
}
