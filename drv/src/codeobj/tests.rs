//! The loader against the committed kernels' code object, hand-made corruptions, and a
//! fuzz pass over truncated and bit-flipped copies.

use super::elf::{Rela, R_AMDGPU_ABS64, R_AMDGPU_RELATIVE64};
use super::kernarg::{build, Launch};
use super::*;

static CO: &[u8] = include_bytes!("../../../kernels/gpu/bin/onebit-gfx1151.co");

fn parsed() -> CodeObject {
    CodeObject::parse(CO, EF_AMDGPU_MACH_GFX1151).expect("committed code object parses")
}

#[test]
fn reads_the_committed_code_object() {
    let co = parsed();
    assert_eq!(co.abi_version(), 3, "code object v5");
    assert_eq!(co.e_flags() & 0xff, 0x4a);
    assert_eq!(co.target, "amdgcn-amd-amdhsa--gfx1151");
    assert!(co.kernels.len() >= 14, "{} kernels", co.kernels.len());
    let g = co.kernel("gemv_i2s").unwrap();
    assert_eq!(g.symbol, "gemv_i2s.kd");
    assert_eq!(g.wavefront_size, 32);
    assert!(g.descriptor.wave32());
    assert_eq!(g.descriptor_offset % 64, 0);
    let offsets: Vec<(u32, u32)> = g.explicit_args().map(|a| (a.offset, a.size)).collect();
    assert_eq!(
        offsets,
        [(0, 8), (8, 8), (16, 8), (24, 4), (32, 8), (40, 4), (44, 4)]
    );
    assert!(
        g.group_segment_fixed_size >= 1024,
        "gemv reduces through 256 i32 of LDS"
    );
    for k in &co.kernels {
        assert!(!k.descriptor.needs_scratch(), "{} needs scratch", k.name);
        assert_eq!(k.descriptor.kernarg_size, k.kernarg_size);
    }
}

#[test]
fn image_places_segments_at_their_addresses() {
    let co = parsed();
    let img = co.image(0x7000_0000).unwrap();
    assert_eq!(img.len() as u64, co.image_size);
    let g = co.kernel("gemv_i2s").unwrap();
    let kd = &img[g.descriptor_offset as usize..][..64];
    assert_eq!(
        KernelDescriptor::from_bytes(kd.try_into().unwrap()),
        g.descriptor
    );
}

#[test]
fn hidden_arguments_are_laid_out_as_v5_requires() {
    let co = parsed();
    let k = co.kernel("relu2_mul").unwrap();
    let explicit: Vec<_> = k.explicit_args().map(|a| (a.offset, a.size)).collect();
    assert_eq!(explicit, [(0, 8), (8, 8), (16, 4)]);
    // the hidden block starts 8-aligned after the last explicit argument
    let hidden = k
        .args
        .iter()
        .find(|a| a.value_kind == "hidden_block_count_x")
        .unwrap()
        .offset as usize;
    assert_eq!(hidden, 24);
    let launch = Launch {
        grid: [1000, 1, 1],
        workgroup: [256, 1, 1],
        dynamic_lds: 0,
    };
    let kargs = build(
        k,
        &[0x1111_2222_3333_4444, 0x5555_6666_7777_8888, 1000],
        &launch,
    )
    .unwrap();
    assert_eq!(kargs.len(), k.kernarg_size as usize);
    let rd32 = |o: usize| u32::from_le_bytes(kargs[o..o + 4].try_into().unwrap());
    let rd16 = |o: usize| u16::from_le_bytes(kargs[o..o + 2].try_into().unwrap());
    assert_eq!(&kargs[0..8], &0x1111_2222_3333_4444u64.to_le_bytes());
    assert_eq!(&kargs[8..16], &0x5555_6666_7777_8888u64.to_le_bytes());
    assert_eq!(rd32(16), 1000);
    assert_eq!(
        [rd32(hidden), rd32(hidden + 4), rd32(hidden + 8)],
        [4, 1, 1],
        "block counts"
    );
    assert_eq!(
        [rd16(hidden + 12), rd16(hidden + 14), rd16(hidden + 16)],
        [256, 1, 1],
        "group sizes"
    );
    assert_eq!(
        [rd16(hidden + 18), rd16(hidden + 20), rd16(hidden + 22)],
        [1000 % 256, 0, 0],
        "remainders"
    );
    assert!(
        kargs[hidden + 24..hidden + 64].iter().all(|&b| b == 0),
        "reserved + global offsets"
    );
    assert_eq!(rd16(hidden + 64), 1, "grid dims");
}

#[test]
fn kernarg_errors_are_clear() {
    let co = parsed();
    let k = co.kernel("add").unwrap();
    let l = Launch::groups([1, 1, 1], [256, 1, 1]);
    let e = build(k, &[1, 2], &l).unwrap_err().to_string();
    assert!(
        e.contains("2 explicit arguments given, the kernel takes 3"),
        "{e}"
    );
    let e = build(k, &[1, 2, 1 << 40], &l).unwrap_err().to_string();
    assert!(e.contains("does not fit the 4-byte argument"), "{e}");
    let mut printf = k.clone();
    printf.args.push(ArgInfo {
        offset: 0,
        size: 8,
        value_kind: "hidden_printf_buffer".into(),
        kind: ArgKind::Unsupported,
    });
    let e = build(&printf, &[1, 2, 3], &l).unwrap_err().to_string();
    assert!(e.contains("hidden_printf_buffer"), "{e}");
}

#[test]
fn refuses_other_targets_abis_and_machines() {
    let e = CodeObject::parse(CO, 0x041).unwrap_err();
    assert_eq!(
        e,
        CodeObjectError::WrongTarget {
            file: 0x4a,
            gpu: 0x41
        }
    );
    let mut v4 = CO.to_vec();
    v4[8] = 2;
    assert!(matches!(
        CodeObject::parse(&v4, 0x4a),
        Err(CodeObjectError::WrongAbi { abi_version: 2, .. })
    ));
    let mut x86 = CO.to_vec();
    x86[18..20].copy_from_slice(&62u16.to_le_bytes());
    assert_eq!(
        CodeObject::parse(&x86, 0x4a).unwrap_err(),
        CodeObjectError::WrongMachine(62)
    );
    assert_eq!(
        CodeObject::parse(b"#!/bin/sh\n0123456789", 0x4a).unwrap_err(),
        CodeObjectError::NotElf
    );
    let mut rel = CO.to_vec();
    rel[16] = 1; // ET_REL
    assert!(CodeObject::parse(&rel, 0x4a)
        .unwrap_err()
        .to_string()
        .contains("ET_DYN"));
}

#[test]
fn relocations_are_applied_or_refused() {
    let mut co = parsed();
    co.elf.relocs = vec![Rela {
        offset: 0x100,
        r_type: R_AMDGPU_RELATIVE64,
        sym: 0,
        addend: 0x40,
    }];
    let img = co.image(0x5000_0000).unwrap();
    assert_eq!(&img[0x100..0x108], &0x5000_0040u64.to_le_bytes());
    let kd = co
        .elf
        .dynsym
        .iter()
        .position(|s| s.name == "add.kd")
        .unwrap();
    let add_kd = co.elf.dynsym[kd].value;
    co.elf.relocs = vec![Rela {
        offset: 0x108,
        r_type: R_AMDGPU_ABS64,
        sym: kd as u32,
        addend: 8,
    }];
    let img = co.image(0x5000_0000).unwrap();
    assert_eq!(
        &img[0x108..0x110],
        &(0x5000_0000 + add_kd + 8).to_le_bytes()
    );
    co.elf.relocs = vec![Rela {
        offset: 0x100,
        r_type: 4,
        sym: 0,
        addend: 0,
    }];
    assert!(co
        .image(0)
        .unwrap_err()
        .to_string()
        .contains("not supported"));
    co.elf.relocs = vec![Rela {
        offset: co.image_size,
        r_type: R_AMDGPU_RELATIVE64,
        sym: 0,
        addend: 0,
    }];
    assert!(co.image(0).unwrap_err().to_string().contains("outside"));
    co.elf.relocs = vec![Rela {
        offset: 0,
        r_type: R_AMDGPU_ABS64,
        sym: 0,
        addend: 0,
    }];
    assert!(co
        .image(0)
        .unwrap_err()
        .to_string()
        .contains("undefined symbol"));
}

/// Found by the `code_object` fuzz target: a PT_LOAD ending in the top page of the
/// address space overflowed when the image size was rounded up to a page.
#[test]
fn a_segment_ending_in_the_last_page_is_refused() {
    let mut co = CO.to_vec();
    let rd = |b: &[u8], at: usize, n: usize| {
        b[at..at + n]
            .iter()
            .rev()
            .fold(0u64, |v, &x| v << 8 | u64::from(x))
    };
    let (phoff, phnum) = (rd(&co, 32, 8) as usize, rd(&co, 56, 2) as usize);
    let load = (0..phnum)
        .map(|i| phoff + i * 56)
        .find(|&ph| rd(&co, ph, 4) == u64::from(elf::PT_LOAD))
        .expect("a PT_LOAD");
    let memsz = rd(&co, load + 40, 8);
    co[load + 16..load + 24].copy_from_slice(&(u64::MAX - 100 - memsz).to_le_bytes());
    let e = CodeObject::parse(&co, EF_AMDGPU_MACH_GFX1151)
        .unwrap_err()
        .to_string();
    assert!(e.contains("implausibly large"), "{e}");
}

#[test]
fn truncated_objects_fail_cleanly() {
    let mut len = 0;
    while len < CO.len() {
        let r = CodeObject::parse(&CO[..len], EF_AMDGPU_MACH_GFX1151);
        assert!(r.is_err(), "a {len}-byte prefix parsed");
        len += if len < 1024 { 1 } else { 97 };
    }
}

#[test]
fn bit_flipped_objects_never_panic() {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut parsed_ok = 0;
    for _ in 0..3000 {
        let mut b = CO.to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() % b.len() as u64) as usize;
            b[at] ^= 1 << (next() % 8);
        }
        // Ok or a typed error, never a panic; an accepted object must still lay out.
        if let Ok(co) = CodeObject::parse(&b, EF_AMDGPU_MACH_GFX1151) {
            parsed_ok += 1;
            co.image(0x1000_0000).unwrap();
        }
    }
    // most flips land in code bytes the loader does not interpret
    assert!(parsed_ok > 0);
}

#[test]
fn metadata_corruption_names_the_problem() {
    let co = parsed();
    let (off, note) = co.elf.metadata[0].clone();
    // cut the map short by claiming a huge array where `amdhsa.kernels` starts
    let key = b"amdhsa.kernels";
    let at = note.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    let mut b = CO.to_vec();
    b[off + at] = 0xdd;
    b[off + at + 1..off + at + 5].copy_from_slice(&[0xff; 4]);
    let e = CodeObject::parse(&b, EF_AMDGPU_MACH_GFX1151)
        .unwrap_err()
        .to_string();
    assert!(e.contains("metadata note"), "{e}");
}

/// Built by clang-19 from two C files (kernel `first`; kernel `second` reading a global
/// pointer table): lld keeps one metadata note per object, and the table needs a real
/// `R_AMDGPU_RELATIVE64`.
static TWO_NOTES: &[u8] = include_bytes!("testdata/two_notes.co");

#[test]
fn merges_metadata_notes_and_applies_a_real_relocation() {
    let co = CodeObject::parse(TWO_NOTES, EF_AMDGPU_MACH_GFX1151).unwrap();
    assert_eq!(co.elf.metadata.len(), 2);
    let names: Vec<_> = co.kernels.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(co.elf.relocs.len(), 1);
    let r = co.elf.relocs[0];
    assert_eq!(r.r_type, R_AMDGPU_RELATIVE64);
    let base = 0x7f00_0000_0000u64;
    let img = co.image(base).unwrap();
    let at = r.offset as usize;
    let ptr = u64::from_le_bytes(img[at..at + 8].try_into().unwrap());
    assert_eq!(
        ptr,
        base + r.addend as u64,
        "the table entry points at `table` in the loaded image"
    );
    let table: Vec<f32> = img[r.addend as usize..r.addend as usize + 16]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(table, [1.0, 2.0, 3.0, 4.0]);
}
