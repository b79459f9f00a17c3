//! How a KV cache stores its keys and values: f32 (exact), f16, q8_0 (blocks of 32 int8
//! with one f16 scale) or q4_0 (blocks of 32 4-bit codes with one f16 scale), both GGML's
//! layouts, and the conversions to and from f32.
//!
//! An f32 layer cache is `[max_ctx, kv_dim]` values, position-major (the iGPU's layout);
//! f16, q8_0 and q4_0 caches are head-major, `[n_kv_heads, max_ctx, head_dim]`, so
//! attention streams one head's positions (see [`KvRows`]). q8_0 and q4_0 blocks never
//! straddle heads: each head of a position is `ceil(head_dim / 32)` blocks, the last one
//! zero-padded, so attention dequantizes one head's row on its own.

use half::f16;
use std::borrow::Cow;

use crate::ternary::Isa;

/// The storage format of a KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KvFormat {
    /// 4 bytes a value: exactly the f32 the projections produced.
    F32,
    /// 2 bytes a value (llama.cpp's default cache type).
    #[default]
    F16,
    /// 34 bytes per 32 values: int8 with an f16 scale per block.
    Q8_0,
    /// 18 bytes per 32 values: 4-bit codes with an f16 scale per block.
    Q4_0,
}

impl KvFormat {
    pub const ALL: [KvFormat; 4] = [KvFormat::F32, KvFormat::F16, KvFormat::Q8_0, KvFormat::Q4_0];

    pub fn name(self) -> &'static str {
        match self {
            KvFormat::F32 => "f32",
            KvFormat::F16 => "f16",
            KvFormat::Q8_0 => "q8_0",
            KvFormat::Q4_0 => "q4_0",
        }
    }

    /// Bytes one position of one layer's keys (or values) takes.
    pub fn row_bytes(self, shape: KvShape) -> usize {
        match self {
            KvFormat::F32 => shape.kv_dim() * 4,
            KvFormat::F16 => shape.kv_dim() * 2,
            KvFormat::Q8_0 => shape.q8_row_blocks() * std::mem::size_of::<BlockQ8_0>(),
            KvFormat::Q4_0 => shape.q8_row_blocks() * std::mem::size_of::<BlockQ4_0>(),
        }
    }
}

impl std::str::FromStr for KvFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(KvFormat::F32),
            "f16" => Ok(KvFormat::F16),
            "q8_0" | "q8" => Ok(KvFormat::Q8_0),
            "q4_0" | "q4" => Ok(KvFormat::Q4_0),
            other => Err(format!(
                "unknown KV cache format `{other}`: use f32, f16, q8_0 or q4_0"
            )),
        }
    }
}

impl std::fmt::Display for KvFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// GGML's q8_0 block: value `i` is `qs[i] · d`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}

impl BlockQ8_0 {
    pub const ZERO: BlockQ8_0 = BlockQ8_0 {
        d: f16::ZERO,
        qs: [0; 32],
    };

    /// Absmax quantization of up to 32 values (the rest are zero).
    pub fn quantize(x: &[f32]) -> BlockQ8_0 {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; 32];
        for (q, v) in qs.iter_mut().zip(x) {
            *q = (v * id).round().clamp(-127.0, 127.0) as i8;
        }
        BlockQ8_0 {
            d: f16::from_f32(d),
            qs,
        }
    }
}

/// GGML's q4_0 block: value `i < 16` is `(qs[i] & 15) - 8` times `d`, value `i + 16` is
/// `(qs[i] >> 4) - 8` times `d`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; 16],
}

impl BlockQ4_0 {
    pub const ZERO: BlockQ4_0 = BlockQ4_0 {
        d: f16::ZERO,
        qs: [0; 16],
    };

    /// Quantization of up to 32 values (the rest are zero), GGML's `quantize_row_q4_0_ref`:
    /// `m` is the value of largest magnitude with its sign, `d = m / -8`, and the code is
    /// `min(15, trunc(x / d + 8.5))`, so `m` itself is exact (code 0) and `-m` takes the
    /// top code 15 (`-7/8 · m`).
    pub fn quantize(x: &[f32]) -> BlockQ4_0 {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        // `x · id` lies in [-8, 8], so the sum lies in [0.5, 16.5]: `as u8` truncates it.
        let code = |i: usize| x.get(i).map_or(8, |v| ((v * id + 8.5) as u8).min(15));
        let mut qs = [0u8; 16];
        for (i, q) in qs.iter_mut().enumerate() {
            *q = code(i) | (code(i + 16) << 4);
        }
        BlockQ4_0 {
            d: f16::from_f32(d),
            qs,
        }
    }
}

/// Heads of one position in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvShape {
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl KvShape {
    pub fn kv_dim(self) -> usize {
        self.n_kv_heads * self.head_dim
    }
    /// q8_0 (or q4_0) blocks per head of one position: both hold 32 values a block.
    pub fn q8_head_blocks(self) -> usize {
        self.head_dim.div_ceil(32)
    }
    pub fn q8_row_blocks(self) -> usize {
        self.n_kv_heads * self.q8_head_blocks()
    }
}

/// Where head `head` of position `pos` starts in a head-major cache of `len` units
/// (`per_head` units per head and position): `[head, position, per_head]`.
#[inline]
fn head_major(len: usize, shape: KvShape, per_head: usize, pos: usize, head: usize) -> usize {
    let positions = len / (shape.n_kv_heads * per_head).max(1);
    (head * positions + pos) * per_head
}

/// Head `head` of position `pos` in a head-major cache `x`: its `per_head` units (values or
/// blocks); `None` past the end.
#[inline]
fn head_units<T>(
    x: &[T],
    shape: KvShape,
    per_head: usize,
    pos: usize,
    head: usize,
) -> Option<&[T]> {
    x.get(head_major(x.len(), shape, per_head, pos, head)..)?
        .get(..per_head)
}

/// Quantizes each head of `src` (one position, `kv_dim` values) into its blocks of a
/// head-major block cache.
fn store_blocks<B>(
    x: &mut [B],
    shape: KvShape,
    pos: usize,
    src: &[f32],
    quantize: fn(&[f32]) -> B,
) {
    let hb = shape.q8_head_blocks();
    for (h, head) in src[..shape.kv_dim()]
        .chunks_exact(shape.head_dim.max(1))
        .enumerate()
    {
        let at = head_major(x.len(), shape, hb, pos, h);
        for (b, chunk) in x[at..][..hb].iter_mut().zip(head.chunks(32)) {
            *b = quantize(chunk);
        }
    }
}

/// One layer's keys or values, read-only, in their format.
///
/// f32 is position-major, `[position, kv_dim]`: the layout the iGPU's kernels write and
/// the CPU continues on in place. The CPU's own f16, q8_0 and q4_0 caches are head-major,
/// `[head, position, head_dim]`: attention walks one head's positions in a row, and a
/// contiguous stream is what the hardware prefetchers keep ahead of (decode attention at
/// depth 4096 took about 1.5 times as long over the position-major f16 cache on a Zen 4
/// EPYC, `examples/attn_bench`).
#[derive(Clone, Copy, Debug)]
pub enum KvRows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Q8_0(&'a [BlockQ8_0]),
    Q4_0(&'a [BlockQ4_0]),
}

/// One layer's keys or values, writable.
#[derive(Debug)]
pub enum KvRowsMut<'a> {
    F32(&'a mut [f32]),
    F16(&'a mut [f16]),
    Q8_0(&'a mut [BlockQ8_0]),
    Q4_0(&'a mut [BlockQ4_0]),
}

impl<'a> KvRows<'a> {
    pub fn format(&self) -> KvFormat {
        match self {
            KvRows::F32(_) => KvFormat::F32,
            KvRows::F16(_) => KvFormat::F16,
            KvRows::Q8_0(_) => KvFormat::Q8_0,
            KvRows::Q4_0(_) => KvFormat::Q4_0,
        }
    }

    /// Positions the slice holds.
    pub fn positions(&self, shape: KvShape) -> usize {
        match self {
            KvRows::F32(x) => x.len() / shape.kv_dim().max(1),
            KvRows::F16(x) => x.len() / shape.kv_dim().max(1),
            KvRows::Q8_0(x) => x.len() / shape.q8_row_blocks().max(1),
            KvRows::Q4_0(x) => x.len() / shape.q8_row_blocks().max(1),
        }
    }

    /// The first `n` positions as f32, `[n, kv_dim]`: borrowed when the cache is f32.
    pub fn to_f32(&self, shape: KvShape, n: usize) -> Cow<'a, [f32]> {
        let len = n * shape.kv_dim();
        match *self {
            KvRows::F32(x) => Cow::Borrowed(&x[..len]),
            _ => {
                let mut out = vec![0f32; len];
                for (p, row) in out.chunks_exact_mut(shape.kv_dim().max(1)).enumerate() {
                    for (h, dst) in row.chunks_exact_mut(shape.head_dim).enumerate() {
                        self.head_to_f32(Isa::best(), shape, p, h, dst);
                    }
                }
                Cow::Owned(out)
            }
        }
    }

    /// Asks the CPU to start loading head `head` of position `pos` (a hint: a walk over
    /// the cache keeps several rows in flight instead of waiting for each in turn).
    #[inline]
    pub fn prefetch(&self, shape: KvShape, pos: usize, head: usize) {
        fn span<T>(r: Option<&[T]>) -> Option<(*const u8, usize)> {
            r.map(|r| (r.as_ptr().cast(), std::mem::size_of_val(r)))
        }
        let (hd, hb) = (shape.head_dim, shape.q8_head_blocks());
        let span = match *self {
            KvRows::F32(x) => span(
                x.get(pos * shape.kv_dim() + head * hd..)
                    .and_then(|r| r.get(..hd)),
            ),
            KvRows::F16(x) => span(head_units(x, shape, hd, pos, head)),
            KvRows::Q8_0(x) => span(head_units(x, shape, hb, pos, head)),
            KvRows::Q4_0(x) => span(head_units(x, shape, hb, pos, head)),
        };
        let Some((ptr, bytes)) = span else {
            return;
        };
        #[cfg(target_arch = "x86_64")]
        for line in (0..bytes).step_by(64) {
            // SAFETY: a prefetch is a hint that never faults; the address is computed with
            // wrapping arithmetic from a pointer into the cache and is never dereferenced.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    ptr.wrapping_add(line).cast(),
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (ptr, bytes);
    }

    /// Head `head` of positions `pos..pos + n` of an f16 cache, as they lie (head-major:
    /// one contiguous `[n, head_dim]` run); `None` for other formats or past the end.
    #[inline]
    pub fn f16_head_run(
        &self,
        shape: KvShape,
        head: usize,
        pos: usize,
        n: usize,
    ) -> Option<&'a [f16]> {
        match *self {
            KvRows::F16(x) if pos + n <= self.positions(shape) && head < shape.n_kv_heads => {
                let hd = shape.head_dim;
                x.get(head_major(x.len(), shape, hd, pos, head)..)?
                    .get(..n * hd)
            }
            _ => None,
        }
    }

    /// Head `head` of position `pos` into `dst` (`head_dim` values).
    #[inline]
    pub fn head_to_f32(&self, isa: Isa, shape: KvShape, pos: usize, head: usize, dst: &mut [f32]) {
        let (hd, hb) = (shape.head_dim, shape.q8_head_blocks());
        let dst = &mut dst[..hd];
        let out_of_range = "a position past the cache's end";
        match *self {
            KvRows::F32(x) => dst.copy_from_slice(&x[pos * shape.kv_dim() + head * hd..][..hd]),
            KvRows::F16(x) => f16_to_f32(
                isa,
                head_units(x, shape, hd, pos, head).expect(out_of_range),
                dst,
            ),
            KvRows::Q8_0(x) => q8_0_to_f32(
                head_units(x, shape, hb, pos, head).expect(out_of_range),
                dst,
            ),
            KvRows::Q4_0(x) => q4_0_to_f32(
                head_units(x, shape, hb, pos, head).expect(out_of_range),
                dst,
            ),
        }
    }
}

impl KvRowsMut<'_> {
    /// Stores position `pos` (`kv_dim` values) in the cache's format.
    pub fn store(&mut self, shape: KvShape, pos: usize, src: &[f32]) {
        use half::slice::HalfFloatSliceExt;
        let kv_dim = shape.kv_dim();
        match self {
            KvRowsMut::F32(x) => x[pos * kv_dim..][..kv_dim].copy_from_slice(&src[..kv_dim]),
            KvRowsMut::F16(x) => {
                let hd = shape.head_dim;
                for (h, head) in src[..kv_dim].chunks_exact(hd.max(1)).enumerate() {
                    let at = head_major(x.len(), shape, hd, pos, h);
                    x[at..][..hd].convert_from_f32_slice(head);
                }
            }
            KvRowsMut::Q8_0(x) => store_blocks(x, shape, pos, src, BlockQ8_0::quantize),
            KvRowsMut::Q4_0(x) => store_blocks(x, shape, pos, src, BlockQ4_0::quantize),
        }
    }

    /// Copies position `from` to position `to` as stored (no requantization: the copy reads
    /// back bit for bit what was stored at `from`).
    pub fn copy_position(&mut self, shape: KvShape, from: usize, to: usize) {
        fn heads<T: Copy>(x: &mut [T], shape: KvShape, per_head: usize, from: usize, to: usize) {
            for h in 0..shape.n_kv_heads {
                let a = head_major(x.len(), shape, per_head, from, h);
                let b = head_major(x.len(), shape, per_head, to, h);
                x.copy_within(a..a + per_head, b);
            }
        }
        if from == to {
            return;
        }
        let kv_dim = shape.kv_dim();
        match self {
            KvRowsMut::F32(x) => x.copy_within(from * kv_dim..(from + 1) * kv_dim, to * kv_dim),
            KvRowsMut::F16(x) => heads(x, shape, shape.head_dim, from, to),
            KvRowsMut::Q8_0(x) => heads(x, shape, shape.q8_head_blocks(), from, to),
            KvRowsMut::Q4_0(x) => heads(x, shape, shape.q8_head_blocks(), from, to),
        }
    }
}

/// Storage for `positions` positions of one layer's keys or values, zeroed.
pub enum KvBuf {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Q8_0(Vec<BlockQ8_0>),
    Q4_0(Vec<BlockQ4_0>),
}

impl KvBuf {
    pub fn new(format: KvFormat, shape: KvShape, positions: usize) -> KvBuf {
        match format {
            KvFormat::F32 => KvBuf::F32(vec![0.0; positions * shape.kv_dim()]),
            KvFormat::F16 => KvBuf::F16(vec![f16::ZERO; positions * shape.kv_dim()]),
            KvFormat::Q8_0 => KvBuf::Q8_0(vec![BlockQ8_0::ZERO; positions * shape.q8_row_blocks()]),
            KvFormat::Q4_0 => KvBuf::Q4_0(vec![BlockQ4_0::ZERO; positions * shape.q8_row_blocks()]),
        }
    }
    pub fn rows(&self) -> KvRows<'_> {
        match self {
            KvBuf::F32(x) => KvRows::F32(x),
            KvBuf::F16(x) => KvRows::F16(x),
            KvBuf::Q8_0(x) => KvRows::Q8_0(x),
            KvBuf::Q4_0(x) => KvRows::Q4_0(x),
        }
    }
    pub fn rows_mut(&mut self) -> KvRowsMut<'_> {
        match self {
            KvBuf::F32(x) => KvRowsMut::F32(x),
            KvBuf::F16(x) => KvRowsMut::F16(x),
            KvBuf::Q8_0(x) => KvRowsMut::Q8_0(x),
            KvBuf::Q4_0(x) => KvRowsMut::Q4_0(x),
        }
    }
}

/// `dst = src` widened, with F16C/AVX-512 conversions where the ISA has them.
#[inline]
pub fn f16_to_f32(isa: Isa, src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512Vnni {
            // SAFETY: `Isa::Avx512Vnni` is only chosen where AVX-512F is present.
            return unsafe { f16_to_f32_avx512(&src[..n], &mut dst[..n]) };
        }
        if isa == Isa::Avx2 && std::is_x86_feature_detected!("f16c") {
            // SAFETY: F16C was checked just above (AVX2 from the ISA).
            return unsafe { f16_to_f32_f16c(&src[..n], &mut dst[..n]) };
        }
    }
    let _ = isa;
    f16_to_f32_ref(&src[..n], &mut dst[..n]);
}

pub fn f16_to_f32_ref(src: &[f16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn f16_to_f32_avx512(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let full = src.len() / 16 * 16;
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 ≤ full ≤ len of both slices; unaligned load/store.
        unsafe {
            let h = _mm256_loadu_si256(src.as_ptr().add(i).cast());
            _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
        }
    }
    f16_to_f32_ref(&src[full..], &mut dst[full..]);
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16_to_f32_f16c(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let full = src.len() / 8 * 8;
    for i in (0..full).step_by(8) {
        // SAFETY: i + 8 ≤ full ≤ len of both slices; unaligned load/store.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
    }
    f16_to_f32_ref(&src[full..], &mut dst[full..]);
}

/// Dequantizes `dst.len()` values from consecutive blocks (a loop the compiler vectorizes).
#[inline]
pub fn q8_0_to_f32(blocks: &[BlockQ8_0], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.chunks_mut(32)) {
        let d = b.d.to_f32();
        for (o, q) in out.iter_mut().zip(&b.qs) {
            *o = f32::from(*q) * d;
        }
    }
}

/// Dequantizes `dst.len()` values from consecutive q4_0 blocks (a whole block is a loop the
/// compiler vectorizes; a head's last, partial block goes value by value).
#[inline]
pub fn q4_0_to_f32(blocks: &[BlockQ4_0], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.chunks_mut(32)) {
        let d = b.d.to_f32();
        if let Ok(out) = <&mut [f32; 32]>::try_from(&mut *out) {
            let (lo, hi) = out.split_at_mut(16);
            for ((l, h), q) in lo.iter_mut().zip(hi).zip(&b.qs) {
                *l = f32::from(i16::from(q & 15) - 8) * d;
                *h = f32::from(i16::from(q >> 4) - 8) * d;
            }
        } else {
            for (i, o) in out.iter_mut().enumerate() {
                let q = if i < 16 {
                    b.qs[i] & 15
                } else {
                    b.qs[i - 16] >> 4
                };
                *o = f32::from(i16::from(q) - 8) * d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn copy_position_reads_back_what_was_stored(
            n_kv in 1usize..4,
            hd in 1usize..80,
            positions in 2usize..12,
            from_to in (0usize..100, 0usize..100),
            seed in 0u32..1000,
        ) {
            let shape = KvShape { n_kv_heads: n_kv, head_dim: hd };
            let (from, to) = (from_to.0 % positions, from_to.1 % positions);
            for format in KvFormat::ALL {
                let mut buf = KvBuf::new(format, shape, positions);
                for p in 0..positions {
                    let row: Vec<f32> = (0..shape.kv_dim())
                        .map(|i| ((i * 31 + p * 7) as f32 + seed as f32).sin() * 3.0)
                        .collect();
                    buf.rows_mut().store(shape, p, &row);
                }
                let before: Vec<Vec<f32>> = (0..positions).map(|p| buf.rows().to_f32(shape, positions)[p * shape.kv_dim()..][..shape.kv_dim()].to_vec()).collect();
                buf.rows_mut().copy_position(shape, from, to);
                let after = buf.rows().to_f32(shape, positions).into_owned();
                for (p, want) in before.iter().enumerate() {
                    let src = if p == to { &before[from] } else { want };
                    proptest::prop_assert_eq!(&after[p * shape.kv_dim()..][..shape.kv_dim()], &src[..], "{} position {}", format, p);
                }
            }
        }
    }

    /// How far q4_0 may move value `i` of a row of heads of `hd` values. Its block's scale is
    /// `d = amax / 8`; a value rounds to the nearest of its 16 codes (error ≤ d/2), except
    /// that codes stop at 7·d on the side opposite the block's signed max `m`, so values
    /// beyond 7.5·d there clamp (error ≤ d, at `-m`). Storing `d` as f16 moves a code of at
    /// most 8 steps by 8 · 2⁻¹¹ · d more; the rest is slack for f32 rounding.
    fn q4_0_bound(row: &[f32], hd: usize, i: usize) -> f32 {
        let (h, j) = (i / hd, i % hd);
        let start = h * hd + j / 32 * 32;
        let block = &row[start..(start + 32).min((h + 1) * hd)];
        let m = block
            .iter()
            .fold(0f32, |m, v| if v.abs() > m.abs() { *v } else { m });
        let d = m.abs() / 8.0;
        let clamps = row[i] * m < 0.0 && row[i].abs() > 7.5 * d;
        d * (if clamps { 1.0 } else { 0.5 } + 1.0 / 256.0) + 1e-6
    }

    #[test]
    fn q4_0_block_is_ggml_layout() {
        // m = -8 gives d = 1: value i of the first half is code i, value 16 + j is 15 - j,
        // and the block round-trips exactly.
        let x: Vec<f32> = (0..16)
            .map(|i| i as f32 - 8.0)
            .chain((0..16).map(|j| 7.0 - j as f32))
            .collect();
        let b = BlockQ4_0::quantize(&x);
        assert_eq!(b.d, f16::ONE);
        for j in 0..16 {
            assert_eq!(b.qs[j], j as u8 | ((15 - j as u8) << 4), "qs[{j}]");
        }
        assert_eq!(std::mem::size_of::<BlockQ4_0>(), 18);
        let mut back = [0f32; 32];
        q4_0_to_f32(&[b], &mut back);
        assert_eq!(&back[..], &x[..]);
        // The signed max is exact; its negation takes the top code, 7/8 of it; zero is code 8
        // (values 16.. are padding, code 8, in the high nibbles).
        let b = BlockQ4_0::quantize(&[2.0, -2.0, 0.0, 0.3]);
        assert_eq!(b.d.to_f32(), -0.25);
        assert_eq!(b.qs[..4], [0x80, 0x8f, 0x88, 0x87]);
        q4_0_to_f32(&[b], &mut back[..4]);
        assert_eq!(back[..4], [2.0, -1.75, 0.0, 0.25]);
        // Padding (a head's partial last block) and an all-zero block read back as zero.
        assert!(b.qs[4..].iter().all(|&q| q == 0x88));
        assert_eq!(BlockQ4_0::quantize(&[0.0; 32]).qs, [0x88; 16]);
    }

    #[test]
    fn formats_parse_and_print() {
        for f in KvFormat::ALL {
            assert_eq!(f.name().parse::<KvFormat>(), Ok(f));
            assert_eq!(f.to_string(), f.name());
        }
        assert_eq!("q4".parse::<KvFormat>(), Ok(KvFormat::Q4_0));
        assert_eq!("Q4_0".parse::<KvFormat>(), Ok(KvFormat::Q4_0));
        let e = "q5_1".parse::<KvFormat>().unwrap_err();
        assert!(
            e.contains("q5_1") && e.contains("f32, f16, q8_0 or q4_0"),
            "{e}"
        );
        // 2B-4T: 5 KV heads of 128 are 20 blocks a row.
        let shape = KvShape {
            n_kv_heads: 5,
            head_dim: 128,
        };
        assert_eq!(KvFormat::Q4_0.row_bytes(shape), 360);
        assert_eq!(KvFormat::Q8_0.row_bytes(shape), 680);
    }

    proptest::proptest! {
        #[test]
        fn f16_widening_matches_reference(n in 0usize..100, seed in 0u32..1000) {
            let src: Vec<f16> = (0..n).map(|i| f16::from_f32(((i as u32 * 7 + seed) as f32 * 0.31).sin() * 100.0)).collect();
            let mut want = vec![0f32; n];
            f16_to_f32_ref(&src, &mut want);
            for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
                let mut got = vec![0f32; n];
                f16_to_f32(isa, &src, &mut got);
                proptest::prop_assert_eq!(&got, &want);
            }
        }

        #[test]
        fn stored_rows_read_back_close(hd in 1usize..80, heads in 1usize..4, seed in 0u32..1000) {
            let shape = KvShape { n_kv_heads: heads, head_dim: hd };
            let row = |p: u32| -> Vec<f32> {
                (0..shape.kv_dim()).map(|i| ((i as u32 * 13 + seed + 101 * p) as f32 * 0.17).cos() * 3.0).collect()
            };
            for format in KvFormat::ALL {
                let mut buf = KvBuf::new(format, shape, 4);
                // Position 0 stays unwritten; the others get rows of their own, out of order.
                for p in [2, 1, 3] {
                    buf.rows_mut().store(shape, p, &row(p as u32));
                }
                let back = buf.rows().to_f32(shape, 4);
                proptest::prop_assert!(back[..shape.kv_dim()].iter().all(|v| *v == 0.0));
                for p in 1..4 {
                    let want = row(p as u32);
                    let got = &back[p * shape.kv_dim()..][..shape.kv_dim()];
                    for (i, (b, r)) in got.iter().zip(&want).enumerate() {
                        let tol = match format {
                            KvFormat::F32 => 0.0,
                            KvFormat::F16 => 3.0 / 1024.0,
                            KvFormat::Q8_0 => 3.0 / 127.0,
                            KvFormat::Q4_0 => q4_0_bound(&want, hd, i),
                        };
                        proptest::prop_assert!((b - r).abs() <= tol, "{format} at {p}: [{i}] {b} vs {r} (tol {tol})");
                    }
                }
            }
        }
    }
}
