//! Ternary storage codecs: the on-disk layouts of I2_S, TQ2_0, TQ1_0 and the HF uint8
//! packing, each decoded to plain codes (`w + 1` ∈ {0, 1, 2}) and encoded from them.
//! The kernels' own layout is built from codes by `onebit_kernels::ternary::pack`.
//!
//! Errors are plain strings; the loaders wrap them with the file and tensor name.

use half::f16;

/// Elements per TQ1_0 / TQ2_0 block.
pub const QK_K: usize = 256;
pub const TQ2_0_BLOCK: usize = 66;
pub const TQ1_0_BLOCK: usize = 54;
/// I2_S: codes of 128 elements in 32 bytes; the f32 scale follows the codes in a 32-byte tail.
pub const I2S_BLOCK_ELEMS: usize = 128;
pub const I2S_TAIL: usize = 32;

const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];

/// Code of flat element `i` in I2_S's block layout (byte j of a 128-block holds elements
/// j, j+32, j+64, j+96 in bits 7:6, 5:4, 3:2, 1:0).
#[inline]
pub fn i2s_code(codes: &[u8], i: usize) -> u8 {
    let (block, within) = (i / I2S_BLOCK_ELEMS, i % I2S_BLOCK_ELEMS);
    let (group, j) = (within / 32, within % 32);
    (codes[block * 32 + j] >> (6 - 2 * group)) & 3
}

/// Encodes `n` codes (`n % 128 == 0`) as an I2_S tensor: codes, then the f32 scale and zero padding.
pub fn encode_i2s(n: usize, scale: f32, mut code: impl FnMut(usize) -> u8) -> Vec<u8> {
    let mut out = vec![0u8; n / 4 + I2S_TAIL];
    for i in 0..n {
        let (block, within) = (i / I2S_BLOCK_ELEMS, i % I2S_BLOCK_ELEMS);
        let (group, j) = (within / 32, within % 32);
        out[block * 32 + j] |= (code(i) & 3) << (6 - 2 * group);
    }
    out[n / 4..n / 4 + 4].copy_from_slice(&scale.to_le_bytes());
    out
}

/// Checks that every code is in {0, 1, 2}; returns the first bad flat index.
pub fn check_codes(n: usize, code: impl Fn(usize) -> u8) -> Result<(), String> {
    match (0..n).find(|&i| code(i) > 2) {
        Some(i) => Err(format!(
            "element {i} has the invalid 2-bit code 3 (only 0, 1, 2 encode -1, 0, +1)"
        )),
        None => Ok(()),
    }
}

/// Codes and per-tensor scale from per-block scaled ternary data (TQ1_0/TQ2_0).
///
/// Those types store `d` = absmax of each 256-block. A BitNet tensor has one scale, so every
/// block with a nonzero weight carries the same `d` up to f16 rounding; this takes the
/// largest |d| as the tensor scale and rejects tensors whose blocks disagree by more than
/// f16 rounding (such a tensor is not a per-tensor-scaled BitNet weight). Blocks whose `d`
/// is negative have their codes mirrored so the sign ends up in the codes.
fn finish_blocks(codes: &mut [u8], ds: &[f32]) -> Result<f32, String> {
    let mut scale = 0f32;
    for (b, &d) in ds.iter().enumerate() {
        if !d.is_finite() {
            return Err(format!("block {b} has a non-finite scale {d}"));
        }
        let blk = &mut codes[b * QK_K..(b + 1) * QK_K];
        if blk.iter().any(|&c| c > 2) {
            return Err(format!(
                "block {b} holds a ternary digit outside {{0, 1, 2}}"
            ));
        }
        if blk.iter().all(|&c| c == 1) {
            continue;
        }
        if d < 0.0 {
            blk.iter_mut().for_each(|c| *c = 2 - *c);
        }
        scale = scale.max(d.abs());
    }
    for (b, &d) in ds.iter().enumerate() {
        let nonzero = codes[b * QK_K..(b + 1) * QK_K].iter().any(|&c| c != 1);
        if nonzero && (d.abs() - scale).abs() > scale * 2e-3 {
            return Err(format!(
                "block {b} scale {d} differs from the tensor's scale {scale}: per-block scales are not a BitNet per-tensor scale"
            ));
        }
        if nonzero && d == 0.0 {
            return Err(format!("block {b} has nonzero weights but a zero scale"));
        }
    }
    Ok(scale)
}

/// Decodes TQ2_0 data of `n` elements into codes and the tensor scale.
pub fn decode_tq2_0(data: &[u8], n: usize) -> Result<(Vec<u8>, f32), String> {
    if !n.is_multiple_of(QK_K) || data.len() != n / QK_K * TQ2_0_BLOCK {
        return Err(format!(
            "TQ2_0 data of {} bytes does not hold {n} elements",
            data.len()
        ));
    }
    let mut codes = vec![0u8; n];
    let mut ds = Vec::with_capacity(n / QK_K);
    for (b, blk) in data.chunks_exact(TQ2_0_BLOCK).enumerate() {
        let out = &mut codes[b * QK_K..(b + 1) * QK_K];
        for (chunk, qs) in blk[..64].chunks_exact(32).enumerate() {
            for (m, &q) in qs.iter().enumerate() {
                for k in 0..4 {
                    out[chunk * 128 + k * 32 + m] = (q >> (2 * k)) & 3;
                }
            }
        }
        ds.push(f16::from_le_bytes([blk[64], blk[65]]).to_f32());
    }
    let scale = finish_blocks(&mut codes, &ds)?;
    Ok((codes, scale))
}

/// Encodes `n` codes as TQ2_0 with `d` in every block.
pub fn encode_tq2_0(n: usize, d: f16, mut code: impl FnMut(usize) -> u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(n / QK_K * TQ2_0_BLOCK);
    for b in 0..n / QK_K {
        let base = b * QK_K;
        for chunk in 0..2 {
            for m in 0..32 {
                let mut q = 0u8;
                for k in 0..4 {
                    q |= (code(base + chunk * 128 + k * 32 + m) & 3) << (2 * k);
                }
                out.push(q);
            }
        }
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

/// Trit `k` (0 = most significant) of a base-3 byte stored pre-scaled by 256/243.
#[inline]
fn trit(q: u8, k: usize) -> u8 {
    let v = q.wrapping_mul(POW3[k]);
    ((u16::from(v) * 3) >> 8) as u8
}

/// Decodes TQ1_0 data of `n` elements into codes and the tensor scale.
pub fn decode_tq1_0(data: &[u8], n: usize) -> Result<(Vec<u8>, f32), String> {
    if !n.is_multiple_of(QK_K) || data.len() != n / QK_K * TQ1_0_BLOCK {
        return Err(format!(
            "TQ1_0 data of {} bytes does not hold {n} elements",
            data.len()
        ));
    }
    let mut codes = vec![0u8; n];
    let mut ds = Vec::with_capacity(n / QK_K);
    for (b, blk) in data.chunks_exact(TQ1_0_BLOCK).enumerate() {
        let out = &mut codes[b * QK_K..(b + 1) * QK_K];
        // 32 bytes × 5 trits over elements 0..160 (stride 32).
        for (m, &q) in blk[..32].iter().enumerate() {
            for k in 0..5 {
                out[k * 32 + m] = trit(q, k);
            }
        }
        // 16 bytes × 5 trits over elements 160..240 (stride 16).
        for (m, &q) in blk[32..48].iter().enumerate() {
            for k in 0..5 {
                out[160 + k * 16 + m] = trit(q, k);
            }
        }
        // 4 bytes × 4 trits over elements 240..256 (stride 4).
        for (m, &q) in blk[48..52].iter().enumerate() {
            for k in 0..4 {
                out[240 + k * 4 + m] = trit(q, k);
            }
        }
        ds.push(f16::from_le_bytes([blk[52], blk[53]]).to_f32());
    }
    let scale = finish_blocks(&mut codes, &ds)?;
    Ok((codes, scale))
}

/// Packs trits (most significant first) into one byte pre-scaled by 256/243, rounding up,
/// as ggml's `quantize_row_tq1_0_ref` does.
fn pack_trits(trits: impl Iterator<Item = u8>) -> u8 {
    let q = trits.fold(0u16, |q, t| q * 3 + u16::from(t));
    ((q * 256).div_ceil(243)) as u8
}

/// Encodes `n` codes as TQ1_0 with `d` in every block.
pub fn encode_tq1_0(n: usize, d: f16, mut code: impl FnMut(usize) -> u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(n / QK_K * TQ1_0_BLOCK);
    for b in 0..n / QK_K {
        let base = b * QK_K;
        let mut c = |i: usize| code(base + i);
        for m in 0..32 {
            let t: Vec<u8> = (0..5).map(|k| c(k * 32 + m)).collect();
            out.push(pack_trits(t.into_iter()));
        }
        for m in 0..16 {
            let t: Vec<u8> = (0..5).map(|k| c(160 + k * 16 + m)).collect();
            out.push(pack_trits(t.into_iter()));
        }
        for m in 0..4 {
            // Four trits, shifted up one place so the first is the most significant of five.
            let t: Vec<u8> = (0..4)
                .map(|k| c(240 + k * 4 + m))
                .chain(std::iter::once(0))
                .collect();
            out.push(pack_trits(t.into_iter()));
        }
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

/// Code at `(r, c)` of an HF packed `[out/4, in]` uint8 matrix: bits 2i..2i+1 of packed
/// row `p` hold output row `p + i·out/4`.
#[inline]
pub fn hf_code(packed: &[u8], rows: usize, cols: usize, r: usize, c: usize) -> u8 {
    let quarter = rows / 4;
    (packed[(r % quarter) * cols + c] >> (2 * (r / quarter))) & 3
}

/// Packs `[rows, cols]` codes into the HF `[rows/4, cols]` uint8 layout (`rows % 4 == 0`).
pub fn encode_hf(rows: usize, cols: usize, mut code: impl FnMut(usize, usize) -> u8) -> Vec<u8> {
    let quarter = rows / 4;
    let mut out = vec![0u8; quarter * cols];
    for r in 0..rows {
        let (p, i) = (r % quarter, r / quarter);
        for c in 0..cols {
            out[p * cols + c] |= (code(r, c) & 3) << (2 * i);
        }
    }
    out
}

/// BitNet's absmean ternarization of float weights: γ = mean|W| (at least 1e-5),
/// code = clamp(round_half_even(W/γ), −1, 1) + 1, in f32 like the reference.
pub fn ternarize_absmean(w: &[f32]) -> (Vec<u8>, f32) {
    let sum: f64 = w.iter().map(|v| f64::from(v.abs())).sum();
    let gamma = ((sum / w.len().max(1) as f64) as f32).max(1e-5);
    let codes = w
        .iter()
        .map(|&v| ((v / gamma).round_ties_even().clamp(-1.0, 1.0) as i8 + 1) as u8)
        .collect();
    (codes, gamma)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn tq2_0_roundtrip() {
        let c = codes(1024, 3);
        let d = f16::from_f32(0.25);
        let data = encode_tq2_0(c.len(), d, |i| c[i]);
        let (back, s) = decode_tq2_0(&data, c.len()).unwrap();
        assert_eq!(back, c);
        assert_eq!(s, 0.25);
    }

    #[test]
    fn tq1_0_roundtrip_every_trit_pattern() {
        // Cover all 243 five-trit values in the first section.
        let mut c = codes(512, 5);
        for (v, chunk) in (0..243u32).zip(0..32) {
            let mut x = v;
            for k in (0..5).rev() {
                c[k * 32 + chunk] = (x % 3) as u8;
                x /= 3;
            }
        }
        let d = f16::from_f32(1.5);
        let data = encode_tq1_0(c.len(), d, |i| c[i]);
        assert_eq!(data.len(), 2 * TQ1_0_BLOCK);
        let (back, s) = decode_tq1_0(&data, c.len()).unwrap();
        assert_eq!(back, c);
        assert_eq!(s, 1.5);
    }

    #[test]
    fn tq1_0_all_five_trit_values_decode() {
        for v in 0..243u16 {
            let t: Vec<u8> = {
                let mut x = v;
                let mut t = [0u8; 5];
                for k in (0..5).rev() {
                    t[k] = (x % 3) as u8;
                    x /= 3;
                }
                t.to_vec()
            };
            let q = pack_trits(t.iter().copied());
            let back: Vec<u8> = (0..5).map(|k| trit(q, k)).collect();
            assert_eq!(back, t, "value {v}");
        }
    }

    #[test]
    fn block_scales_must_agree() {
        let c = codes(512, 7);
        let mut data = encode_tq2_0(c.len(), f16::from_f32(0.5), |i| c[i]);
        data[66 + 64..66 + 66].copy_from_slice(&f16::from_f32(0.7).to_le_bytes());
        assert!(decode_tq2_0(&data, 512).unwrap_err().contains("differs"));
    }

    #[test]
    fn negative_block_scale_mirrors_codes() {
        let c = codes(256, 9);
        let data = encode_tq2_0(256, f16::from_f32(-0.5), |i| c[i]);
        let (back, s) = decode_tq2_0(&data, 256).unwrap();
        assert_eq!(s, 0.5);
        assert!(back.iter().zip(&c).all(|(b, c)| *b == 2 - c));
    }

    #[test]
    fn i2s_and_hf_roundtrip() {
        let c = codes(8 * 256, 11);
        let data = encode_i2s(c.len(), 0.3, |i| c[i]);
        assert!((0..c.len()).all(|i| i2s_code(&data, i) == c[i]));
        assert_eq!(f32::from_le_bytes(data[512..516].try_into().unwrap()), 0.3);
        let hf = encode_hf(8, 256, |r, col| c[r * 256 + col]);
        assert_eq!(hf.len(), 2 * 256);
        for r in 0..8 {
            for col in 0..256 {
                assert_eq!(hf_code(&hf, 8, 256, r, col), c[r * 256 + col]);
            }
        }
    }

    #[test]
    fn absmean_matches_bitnet_rule() {
        let w = [0.5f32, -0.5, 0.1, -2.0, 0.25, 0.0];
        let (c, g) = ternarize_absmean(&w);
        assert!((g - 0.558_333_3).abs() < 1e-6);
        assert_eq!(c, vec![2, 0, 1, 0, 1, 1]);
    }
}
