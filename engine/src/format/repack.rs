//! Fast conversions between on-disk ternary layouts and the kernels' block layout, for
//! loading and writing 2B-parameter models in about a second rather than a minute. Each
//! has a scalar reference in [`super::codec`] (decode to codes, then
//! `onebit_kernels::ternary::pack`) and a test comparing the two.
//!
//! Kernel layout (= I2_S): per row, blocks of 128 codes in 32 bytes; byte `j` holds codes
//! `j, j+32, j+64, j+96` in bits 7:6, 5:4, 3:2, 1:0.

use super::codec::{self, QK_K, TQ1_0_BLOCK, TQ2_0_BLOCK};
use half::f16;
use onebit_kernels::ternary;

const BLK: usize = ternary::BLOCK_ELEMS;

/// Byte with its four 2-bit fields in reverse order: TQ2_0 keeps element `m + 32k` in
/// bits `2k`, the kernel layout in bits `6 − 2k`, so one table maps either way.
const REVERSE_FIELDS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let x = b as u8;
        t[b] = (x & 3) << 6 | ((x >> 2) & 3) << 4 | ((x >> 4) & 3) << 2 | (x >> 6) & 3;
        b += 1;
    }
    t
};

/// Byte with each 2-bit code `f` replaced by `2 − f` (negates the weights; valid codes only).
const MIRROR: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let mut out = 0u8;
        let mut k = 0;
        while k < 4 {
            let f = ((b >> (2 * k)) & 3) as u8;
            out |= (2u8.wrapping_sub(f) & 3) << (2 * k);
            k += 1;
        }
        t[b] = out;
        b += 1;
    }
    t
};

/// Packs 128 codes into one 32-byte kernel block.
#[inline]
fn pack_block(codes: &[u8], out: &mut [u8]) {
    let (c0, rest) = codes.split_at(32);
    let (c1, rest) = rest.split_at(32);
    let (c2, c3) = rest.split_at(32);
    for j in 0..32 {
        out[j] = (c0[j] & 3) << 6 | (c1[j] & 3) << 4 | (c2[j] & 3) << 2 | (c3[j] & 3);
    }
}

/// Kernel layout from row-major codes (`codes.len() == rows * cols`).
pub fn pack_codes(codes: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    if !cols.is_multiple_of(BLK) {
        return ternary::pack(rows, cols, |r, c| codes[r * cols + c]);
    }
    let mut out = vec![0u8; rows * cols / 4];
    for (src, dst) in codes.chunks_exact(BLK).zip(out.chunks_exact_mut(32)) {
        pack_block(src, dst);
    }
    out
}

/// Row-major codes from the kernel layout.
pub fn unpack_codes(data: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let mut out = vec![0u8; rows * cols];
    if !cols.is_multiple_of(BLK) {
        let v = ternary::TernaryView { rows, cols, data };
        for r in 0..rows {
            for c in 0..cols {
                out[r * cols + c] = v.code(r, c);
            }
        }
        return out;
    }
    for (src, dst) in data.chunks_exact(32).zip(out.chunks_exact_mut(BLK)) {
        for j in 0..32 {
            let b = src[j];
            dst[j] = b >> 6;
            dst[j + 32] = (b >> 4) & 3;
            dst[j + 64] = (b >> 2) & 3;
            dst[j + 96] = b & 3;
        }
    }
    out
}

/// Kernel layout from HF's `[rows/4, cols]` uint8 packing (`rows % 4 == 0`).
pub fn hf_to_kernel(packed: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    if !cols.is_multiple_of(BLK) {
        return ternary::pack(rows, cols, |r, c| codec::hf_code(packed, rows, cols, r, c));
    }
    let quarter = rows / 4;
    let rb = cols / 4;
    let mut out = vec![0u8; rows * rb];
    let mut tmp = vec![0u8; cols];
    for (r, dst) in out.chunks_exact_mut(rb).enumerate() {
        let src = &packed[(r % quarter) * cols..][..cols];
        let shift = 2 * (r / quarter);
        for (t, s) in tmp.iter_mut().zip(src) {
            *t = (s >> shift) & 3;
        }
        for (c, d) in tmp.chunks_exact(BLK).zip(dst.chunks_exact_mut(32)) {
            pack_block(c, d);
        }
    }
    out
}

/// HF's `[rows/4, cols]` uint8 packing from the kernel layout (`rows % 4 == 0`).
pub fn kernel_to_hf(data: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let codes = unpack_codes(data, rows, cols);
    let quarter = rows / 4;
    let mut out = vec![0u8; quarter * cols];
    for (r, row) in codes.chunks_exact(cols).enumerate() {
        let dst = &mut out[(r % quarter) * cols..][..cols];
        let shift = 2 * (r / quarter);
        for (d, &c) in dst.iter_mut().zip(row) {
            *d |= c << shift;
        }
    }
    out
}

/// Per-block scales to the tensor's single scale (see `codec::finish_blocks` for the rule).
/// `blocks` holds (d, has a nonzero weight).
fn tensor_scale(blocks: &[(f32, bool)]) -> Result<f32, String> {
    let mut scale = 0f32;
    for (b, &(d, nonzero)) in blocks.iter().enumerate() {
        if !d.is_finite() {
            return Err(format!("block {b} has a non-finite scale {d}"));
        }
        if nonzero {
            if d == 0.0 {
                return Err(format!("block {b} has nonzero weights but a zero scale"));
            }
            scale = scale.max(d.abs());
        }
    }
    for (b, &(d, nonzero)) in blocks.iter().enumerate() {
        if nonzero && (d.abs() - scale).abs() > scale * 2e-3 {
            return Err(format!(
                "block {b} scale {d} differs from the tensor's scale {scale}: per-block scales are not a BitNet per-tensor scale"
            ));
        }
    }
    Ok(scale)
}

/// Kernel layout and tensor scale from TQ2_0 data (`cols % 256 == 0`, as ggml requires).
pub fn tq2_0_to_kernel(data: &[u8], rows: usize, cols: usize) -> Result<(Vec<u8>, f32), String> {
    let n = rows * cols;
    if !cols.is_multiple_of(QK_K) || data.len() != n / QK_K * TQ2_0_BLOCK {
        return Err(format!(
            "TQ2_0 data of {} bytes does not hold [{rows}, {cols}]",
            data.len()
        ));
    }
    if let Some(b) = data
        .chunks_exact(TQ2_0_BLOCK)
        .position(|blk| super::gguf_model::has_code3(&blk[..64]))
    {
        return Err(format!(
            "block {b} holds a ternary digit outside {{0, 1, 2}}"
        ));
    }
    let mut out = vec![0u8; n / 4];
    let mut blocks = Vec::with_capacity(n / QK_K);
    for (blk, dst) in data.chunks_exact(TQ2_0_BLOCK).zip(out.chunks_exact_mut(64)) {
        let d = f16::from_le_bytes([blk[64], blk[65]]).to_f32();
        let qs = &blk[..64];
        let nonzero = qs.iter().any(|&q| q != 0x55);
        let mirror = d < 0.0;
        for (o, &q) in dst.iter_mut().zip(qs) {
            let k = REVERSE_FIELDS[q as usize];
            *o = if mirror { MIRROR[k as usize] } else { k };
        }
        blocks.push((d, nonzero));
    }
    Ok((out, tensor_scale(&blocks)?))
}

/// TQ2_0 data from the kernel layout, `d` in every block (`cols % 256 == 0`).
pub fn kernel_to_tq2_0(data: &[u8], d: f16) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 64 * TQ2_0_BLOCK);
    for blk in data.chunks_exact(64) {
        out.extend(blk.iter().map(|&b| REVERSE_FIELDS[b as usize]));
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

/// Trit `k` (0 = most significant) of a base-3 byte stored pre-scaled by 256/243.
#[inline]
fn trit(q: u8, k: u32) -> u8 {
    let v = q.wrapping_mul(3u8.pow(k));
    ((u16::from(v) * 3) >> 8) as u8
}

/// Decodes one TQ1_0 block's 256 codes.
fn tq1_0_block_codes(blk: &[u8], out: &mut [u8; QK_K]) {
    for (m, &q) in blk[..32].iter().enumerate() {
        for k in 0..5 {
            out[k * 32 + m] = trit(q, k as u32);
        }
    }
    for (m, &q) in blk[32..48].iter().enumerate() {
        for k in 0..5 {
            out[160 + k * 16 + m] = trit(q, k as u32);
        }
    }
    for (m, &q) in blk[48..52].iter().enumerate() {
        for k in 0..4 {
            out[240 + k * 4 + m] = trit(q, k as u32);
        }
    }
}

/// Kernel layout and tensor scale from TQ1_0 data (`cols % 256 == 0`).
pub fn tq1_0_to_kernel(data: &[u8], rows: usize, cols: usize) -> Result<(Vec<u8>, f32), String> {
    let n = rows * cols;
    if !cols.is_multiple_of(QK_K) || data.len() != n / QK_K * TQ1_0_BLOCK {
        return Err(format!(
            "TQ1_0 data of {} bytes does not hold [{rows}, {cols}]",
            data.len()
        ));
    }
    let mut out = vec![0u8; n / 4];
    let mut blocks = Vec::with_capacity(n / QK_K);
    let mut codes = [0u8; QK_K];
    for (blk, dst) in data.chunks_exact(TQ1_0_BLOCK).zip(out.chunks_exact_mut(64)) {
        let d = f16::from_le_bytes([blk[52], blk[53]]).to_f32();
        tq1_0_block_codes(blk, &mut codes);
        let nonzero = codes.iter().any(|&c| c != 1);
        if d < 0.0 {
            codes.iter_mut().for_each(|c| *c = 2 - *c);
        }
        pack_block(&codes[..BLK], &mut dst[..32]);
        pack_block(&codes[BLK..], &mut dst[32..]);
        blocks.push((d, nonzero));
    }
    Ok((out, tensor_scale(&blocks)?))
}

/// Packs trits (most significant first) into one byte pre-scaled by 256/243, rounding up.
#[inline]
fn pack_trits(t: &[u8]) -> u8 {
    let q = t.iter().fold(0u16, |q, &x| q * 3 + u16::from(x));
    (q * 256).div_ceil(243) as u8
}

/// TQ1_0 data from the kernel layout, `d` in every block (`cols % 256 == 0`).
pub fn kernel_to_tq1_0(data: &[u8], d: f16) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 64 * TQ1_0_BLOCK);
    let mut c = [0u8; QK_K];
    for blk in data.chunks_exact(64) {
        for (half, src) in blk.chunks_exact(32).enumerate() {
            for (j, &b) in src.iter().enumerate() {
                let base = half * BLK + j;
                c[base] = b >> 6;
                c[base + 32] = (b >> 4) & 3;
                c[base + 64] = (b >> 2) & 3;
                c[base + 96] = b & 3;
            }
        }
        for m in 0..32 {
            out.push(pack_trits(&[
                c[m],
                c[32 + m],
                c[64 + m],
                c[96 + m],
                c[128 + m],
            ]));
        }
        for m in 0..16 {
            let b = 160 + m;
            out.push(pack_trits(&[
                c[b],
                c[b + 16],
                c[b + 32],
                c[b + 48],
                c[b + 64],
            ]));
        }
        for m in 0..4 {
            let b = 240 + m;
            out.push(pack_trits(&[c[b], c[b + 4], c[b + 8], c[b + 12], 0]));
        }
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 3) as u8
            })
            .collect()
    }

    fn reference(rows: usize, cols: usize, c: &[u8]) -> Vec<u8> {
        ternary::pack(rows, cols, |r, col| c[r * cols + col])
    }

    proptest! {
        #[test]
        fn pack_and_unpack_match_reference(rows in 1usize..9, cols in 1usize..700, seed in any::<u64>()) {
            let c = codes(rows * cols, seed);
            let k = pack_codes(&c, rows, cols);
            prop_assert_eq!(&k, &reference(rows, cols, &c));
            prop_assert_eq!(unpack_codes(&k, rows, cols), c);
        }

        #[test]
        fn hf_matches_reference(q in 1usize..5, cols in 1usize..600, seed in any::<u64>()) {
            let rows = 4 * q;
            let c = codes(rows * cols, seed);
            let hf = codec::encode_hf(rows, cols, |r, col| c[r * cols + col]);
            let k = hf_to_kernel(&hf, rows, cols);
            prop_assert_eq!(&k, &reference(rows, cols, &c));
            prop_assert_eq!(kernel_to_hf(&k, rows, cols), hf);
        }

        #[test]
        fn tq_match_reference(rows in 1usize..4, blocks in 1usize..4, seed in any::<u64>(), neg in any::<bool>()) {
            let cols = blocks * QK_K;
            let c = codes(rows * cols, seed);
            let d = f16::from_f32(if neg { -0.375 } else { 0.375 });
            let want: Vec<u8> = if neg { c.iter().map(|x| 2 - x).collect() } else { c.clone() };
            for tq2 in [true, false] {
                let data = if tq2 { codec::encode_tq2_0(c.len(), d, |i| c[i]) } else { codec::encode_tq1_0(c.len(), d, |i| c[i]) };
                let (k, s) = if tq2 { tq2_0_to_kernel(&data, rows, cols).unwrap() } else { tq1_0_to_kernel(&data, rows, cols).unwrap() };
                prop_assert_eq!(s, 0.375);
                prop_assert_eq!(&k, &reference(rows, cols, &want));
                let (rc, rs) = if tq2 { codec::decode_tq2_0(&data, c.len()).unwrap() } else { codec::decode_tq1_0(&data, c.len()).unwrap() };
                prop_assert_eq!(rs, s);
                prop_assert_eq!(&rc, &want);
                if !neg {
                    let back = if tq2 { kernel_to_tq2_0(&k, d) } else { kernel_to_tq1_0(&k, d) };
                    prop_assert_eq!(back, data);
                }
            }
        }
    }

    #[test]
    fn tq2_0_code3_and_scale_mismatch_are_errors() {
        let c = codes(512, 3);
        let mut data = codec::encode_tq2_0(512, f16::from_f32(0.5), |i| c[i]);
        data[66 + 64..66 + 66].copy_from_slice(&f16::from_f32(0.75).to_le_bytes());
        assert!(tq2_0_to_kernel(&data, 1, 512)
            .unwrap_err()
            .contains("differs"));
        data[0] = 0xFF;
        assert!(tq2_0_to_kernel(&data, 1, 512)
            .unwrap_err()
            .contains("outside"));
    }
}
