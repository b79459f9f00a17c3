//! Finds `<name>.kd` kernel-descriptor symbols in an AMDGPU code object so the emulator can
//! bind a loaded image's kernel objects to registered CPU functions by name.

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;

/// (kernel name without `.kd`, symbol value) for every `*.kd` symbol of an ELF64
/// little-endian image.
pub(crate) fn kernel_descriptors(elf: &[u8]) -> Result<Vec<(String, u64)>, String> {
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF image".into());
    }
    let bad = || "truncated or malformed ELF section table".to_owned();
    let shoff = u64_at(elf, 0x28).ok_or_else(bad)? as usize;
    let shentsize = u16_at(elf, 0x3A).ok_or_else(bad)? as usize;
    let shnum = u16_at(elf, 0x3C).ok_or_else(bad)? as usize;
    if shentsize < 64 {
        return Err(bad());
    }
    let sect = |i: usize| -> Option<(u32, usize, usize, usize, usize)> {
        let o = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((
            u32_at(elf, o + 4)?,
            u64_at(elf, o + 24)? as usize,
            u64_at(elf, o + 32)? as usize,
            u32_at(elf, o + 40)? as usize,
            u64_at(elf, o + 56)? as usize,
        ))
    };
    let mut out = Vec::new();
    for i in 0..shnum {
        let (ty, off, size, link, entsize) = sect(i).ok_or_else(bad)?;
        if ty != SHT_SYMTAB && ty != SHT_DYNSYM {
            continue;
        }
        let (_, str_off, str_size, _, _) = sect(link).ok_or_else(bad)?;
        let strtab = elf
            .get(str_off..str_off.checked_add(str_size).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        let entsize = entsize.max(24);
        for s in 0..size / entsize {
            let o = off + s * entsize;
            let name_off = u32_at(elf, o).ok_or_else(bad)? as usize;
            let value = u64_at(elf, o + 8).ok_or_else(bad)?;
            let name = strtab.get(name_off..).unwrap_or(&[]);
            let name = &name[..name.iter().position(|c| *c == 0).unwrap_or(name.len())];
            if let Some(k) = std::str::from_utf8(name)
                .ok()
                .and_then(|n| n.strip_suffix(".kd"))
            {
                if !out.iter().any(|(n, _)| n == k) {
                    out.push((k.to_owned(), value));
                }
            }
        }
    }
    Ok(out)
}
