//! AVX-512 VNNI tiles: `vpdpbusd` multiplies the unsigned codes by the signed int8
//! activations and accumulates in i32 directly (no i16 stage, so no saturation at all).
//!
//! One 32-byte block is broadcast to both halves of a zmm; shifting 16-bit lanes by 6 in the
//! low half and 4 in the high half (then masking each byte with 3) yields elements 0..63 of
//! the block in order, and shifts of 2 / 0 yield elements 64..127 — so the activations are
//! read straight, 64 bytes at a time, with no shuffles.

use super::{BLOCK_BYTES, BLOCK_ELEMS};
use std::arch::x86_64::*;

/// # Safety
/// The CPU must have AVX-512 F/BW/VNNI; `w` must hold `rt` rows of `rb` bytes and `q` `tt`
/// rows `k` apart, each at least `blocks` blocks long; `rt ∈ {1, 4}`, `tt ∈ 1..=4`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn tile(
    rt: usize,
    tt: usize,
    w: *const u8,
    rb: usize,
    q: *const i8,
    k: usize,
    blocks: usize,
    acc: &mut [[i32; 4]; 4],
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        match (rt, tt) {
            (4, 1) => rows4_gemv(w, rb, q, blocks, acc),
            (1, 1) => row1_gemv(w, q, blocks, acc),
            _ if gfni() => tile_gfni(rt, tt, w, rb, q, k, blocks, acc),
            _ => tile_shifts(rt, tt, w, rb, q, k, blocks, acc),
        }
    }
}

/// Whether the prefill tiles unpack with GFNI: one `vgf2p8affineqb` per half block does
/// the shift and the mask of two, and runs on both vector ports where `vpsrlvw` has one.
/// On a 2-vCPU Xeon (family 6, model 207) a single thread's 4×4 tile went from 208 to
/// 240 GMAC/s, 4×2 from 157 to 187. `ONEBIT_GFNI=0` turns it off, for measuring.
pub fn gfni() -> bool {
    static G: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *G.get_or_init(|| {
        std::is_x86_feature_detected!("gfni")
            && std::env::var("ONEBIT_GFNI").map_or(true, |v| v != "0")
    })
}

/// The tiles of 2–4 activation rows with the unpacking chosen by the caller: GFNI where
/// `gfni` is set (the CPU must have it), shifts otherwise, so that tests check both.
///
/// # Safety
/// As [`tile`]; `gfni` only on a CPU with GFNI; `tt >= 2` (one activation row takes the
/// GEMV tiles).
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile_unpacked_by(
    gfni: bool,
    rt: usize,
    tt: usize,
    w: *const u8,
    rb: usize,
    q: *const i8,
    k: usize,
    blocks: usize,
    acc: &mut [[i32; 4]; 4],
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        if gfni {
            tile_gfni(rt, tt, w, rb, q, k, blocks, acc)
        } else {
            tile_shifts(rt, tt, w, rb, q, k, blocks, acc)
        }
    }
}

/// One `tile_*` function per unpacking, each with its own target features (GFNI must not
/// be enabled in code a CPU without it may run), over the same tile body.
macro_rules! tiles_unpacked_by {
    ($name:ident, $body:ident, $features:literal, $keys:ident, $unpack:ident) => {
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        unsafe fn $name(
            rt: usize,
            tt: usize,
            w: *const u8,
            rb: usize,
            q: *const i8,
            k: usize,
            blocks: usize,
            acc: &mut [[i32; 4]; 4],
        ) {
            // SAFETY: forwarded from the caller's contract (see `tile`).
            unsafe {
                match (rt, tt) {
                    (4, 2) => $body::<4, 2>(w, rb, q, k, blocks, acc),
                    (4, 3) => $body::<4, 3>(w, rb, q, k, blocks, acc),
                    (4, 4) => $body::<4, 4>(w, rb, q, k, blocks, acc),
                    (1, 2) => $body::<1, 2>(w, rb, q, k, blocks, acc),
                    (1, 3) => $body::<1, 3>(w, rb, q, k, blocks, acc),
                    (1, 4) => $body::<1, 4>(w, rb, q, k, blocks, acc),
                    _ => unreachable!("tile shape {rt}x{tt}"),
                }
            }
        }

        /// The prefill tile: `R` weight rows unpacked once per block, used for `T`
        /// activation rows.
        #[target_feature(enable = $features)]
        unsafe fn $body<const R: usize, const T: usize>(
            w: *const u8,
            rb: usize,
            q: *const i8,
            k: usize,
            blocks: usize,
            acc: &mut [[i32; 4]; 4],
        ) {
            let keys = $keys();
            let mut a = [[_mm512_setzero_si512(); T]; R];
            let pf = prefetch_distance();
            for b in 0..blocks {
                if pf > 0 && b % 2 == 0 {
                    for r in 0..R {
                        // A prefetch of any address is harmless, even past the end of `w`.
                        _mm_prefetch::<_MM_HINT_T0>(
                            w.wrapping_add(r * rb + b * BLOCK_BYTES + pf).cast(),
                        );
                    }
                }
                let mut c = [(_mm512_setzero_si512(), _mm512_setzero_si512()); R];
                for (r, c) in c.iter_mut().enumerate() {
                    // SAFETY: block b of row r is inside `w`.
                    *c = unsafe { $unpack(w.add(r * rb + b * BLOCK_BYTES), keys) };
                }
                #[allow(clippy::needless_range_loop)] // t indexes both `q` rows and `a` columns
                for t in 0..T {
                    // SAFETY: block b of activation row t is inside `q`.
                    let (q0, q1) = unsafe {
                        let p = q.add(t * k + b * BLOCK_ELEMS);
                        (
                            _mm512_loadu_si512(p.cast()),
                            _mm512_loadu_si512(p.add(64).cast()),
                        )
                    };
                    for r in 0..R {
                        a[r][t] = _mm512_dpbusd_epi32(a[r][t], c[r].0, q0);
                        a[r][t] = _mm512_dpbusd_epi32(a[r][t], c[r].1, q1);
                    }
                }
            }
            store_lane_sums(a, acc);
        }
    };
}

/// The lane sums of a tile's `R × T` accumulators into `acc[r][t]` (one [`lane_sums16`]).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn store_lane_sums<const R: usize, const T: usize>(
    a: [[__m512i; T]; R],
    acc: &mut [[i32; 4]; 4],
) {
    let mut all = [_mm512_setzero_si512(); 16];
    for r in 0..R {
        for t in 0..T {
            all[4 * r + t] = a[r][t];
        }
    }
    let sums = lane_sums16(all);
    for r in 0..R {
        for t in 0..T {
            acc[r][t] = sums[4 * r + t];
        }
    }
}

/// The lane sum of each of 16 vectors, in order, by a transposing tree (15 additions and 31
/// shuffles, where 16 separate reductions take 64 of each: at k = 2560 a tile's 20 blocks
/// are only ~20 times that).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn lane_sums16(v: [__m512i; 16]) -> [i32; 16] {
    // Each step halves the vectors: every output holds two inputs' partial sums side by
    // side, half as many lanes each. 512-bit halves, then 128-bit quarters, then dwords.
    let halves: [__m512i; 8] = std::array::from_fn(|i| {
        let (x, y) = (v[2 * i], v[2 * i + 1]);
        _mm512_add_epi32(
            _mm512_shuffle_i64x2::<0b01_00_01_00>(x, y),
            _mm512_shuffle_i64x2::<0b11_10_11_10>(x, y),
        )
    });
    // Quarter L of quarters[m] is the sum's part of input 4m + L.
    let quarters: [__m512i; 4] = std::array::from_fn(|i| {
        let (x, y) = (halves[2 * i], halves[2 * i + 1]);
        _mm512_add_epi32(
            _mm512_shuffle_i64x2::<0b10_00_10_00>(x, y),
            _mm512_shuffle_i64x2::<0b11_01_11_01>(x, y),
        )
    });
    let pairs: [__m512i; 2] = std::array::from_fn(|i| {
        let (x, y) = (quarters[2 * i], quarters[2 * i + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi32(x, y), _mm512_unpackhi_epi32(x, y))
    });
    let (x, y) = (pairs[0], pairs[1]);
    // Dword e of quarter L now holds the sum of input 4e + L.
    let mixed = _mm512_add_epi32(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y));
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    let mut out = [0i32; 16];
    // SAFETY: `out` has room for 16 i32.
    unsafe {
        _mm512_storeu_si512(
            out.as_mut_ptr().cast(),
            _mm512_permutexvar_epi32(order, mixed),
        )
    };
    out
}

tiles_unpacked_by!(
    tile_shifts,
    tile_n_shifts,
    "avx512f,avx512bw,avx512vnni",
    shift_keys,
    unpack_shifts
);
tiles_unpacked_by!(
    tile_gfni,
    tile_n_gfni,
    "avx512f,avx512bw,avx512vnni,gfni",
    affine_keys,
    unpack_affine
);

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn shift_keys() -> [__m512i; 3] {
    let (sh_lo, sh_hi, mask) = shifts();
    [sh_lo, sh_hi, mask]
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn unpack_shifts(p: *const u8, keys: [__m512i; 3]) -> (__m512i, __m512i) {
    // SAFETY: forwarded (32 readable bytes at `p`).
    unsafe { unpack(p, keys[0], keys[1], keys[2]) }
}

/// The 8×8 bit matrix (one per qword, `vgf2p8affineqb`'s layout: matrix byte `7 − i` picks
/// the input bits whose parity is output bit `i`) that maps a byte to `(byte >> s) & 3`.
const fn field_matrix(s: u32) -> i64 {
    (((1u64 << s) << 56) | ((1u64 << (s + 1)) << 48)) as i64
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn affine_keys() -> [__m512i; 2] {
    let half = |lo: u32, hi: u32| {
        _mm512_inserti64x4::<1>(
            _mm512_set1_epi64(field_matrix(lo)),
            _mm256_set1_epi64x(field_matrix(hi)),
        )
    };
    // Elements 0..63 of a block are fields 6 and 4 of its bytes, 64..127 fields 2 and 0.
    [half(6, 4), half(2, 0)]
}

/// Codes of elements 0..63 and 64..127 of the block at `p`, one affine map per half.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,gfni")]
unsafe fn unpack_affine(p: *const u8, keys: [__m512i; 2]) -> (__m512i, __m512i) {
    // SAFETY: the caller guarantees 32 readable bytes at `p`.
    let v = _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(p.cast()) });
    (
        _mm512_gf2p8affine_epi64_epi8::<0>(v, keys[0]),
        _mm512_gf2p8affine_epi64_epi8::<0>(v, keys[1]),
    )
}

/// Codes of elements 0..63 and 64..127 of the block at `p`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn unpack(
    p: *const u8,
    sh_lo: __m512i,
    sh_hi: __m512i,
    mask: __m512i,
) -> (__m512i, __m512i) {
    // SAFETY: the caller guarantees 32 readable bytes at `p`.
    let v = _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(p.cast()) });
    (
        _mm512_and_si512(_mm512_srlv_epi16(v, sh_lo), mask),
        _mm512_and_si512(_mm512_srlv_epi16(v, sh_hi), mask),
    )
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn shifts() -> (__m512i, __m512i, __m512i) {
    let sh_lo = _mm512_inserti64x4::<1>(_mm512_set1_epi16(6), _mm256_set1_epi16(4));
    let sh_hi = _mm512_inserti64x4::<1>(_mm512_set1_epi16(2), _mm256_set1_epi16(0));
    (sh_lo, sh_hi, _mm512_set1_epi8(3))
}

/// The decode GEMV tile: 4 weight rows, one activation row, separate accumulators for the
/// two halves of each block so that 8 independent `vpdpbusd` chains hide its latency.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn rows4_gemv(
    w: *const u8,
    rb: usize,
    q: *const i8,
    blocks: usize,
    acc: &mut [[i32; 4]; 4],
) {
    let (sh_lo, sh_hi, mask) = shifts();
    let mut a = [_mm512_setzero_si512(); 8];
    for b in 0..blocks {
        // SAFETY: block b of rows 0..4 and of the activation row are inside the buffers.
        unsafe {
            let q0 = _mm512_loadu_si512(q.add(b * BLOCK_ELEMS).cast());
            let q1 = _mm512_loadu_si512(q.add(b * BLOCK_ELEMS + 64).cast());
            for r in 0..4 {
                let (c0, c1) = unpack(w.add(r * rb + b * BLOCK_BYTES), sh_lo, sh_hi, mask);
                a[2 * r] = _mm512_dpbusd_epi32(a[2 * r], c0, q0);
                a[2 * r + 1] = _mm512_dpbusd_epi32(a[2 * r + 1], c1, q1);
            }
        }
    }
    for r in 0..4 {
        acc[r][0] = _mm512_reduce_add_epi32(_mm512_add_epi32(a[2 * r], a[2 * r + 1]));
    }
}

/// One weight row, one activation row: 4 accumulators over 2 blocks per step.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn row1_gemv(w: *const u8, q: *const i8, blocks: usize, acc: &mut [[i32; 4]; 4]) {
    let (sh_lo, sh_hi, mask) = shifts();
    let mut a = [_mm512_setzero_si512(); 4];
    let mut b = 0;
    while b < blocks {
        let lane = 2 * (b % 2);
        // SAFETY: block b of the row and of the activation row are inside the buffers.
        unsafe {
            let q0 = _mm512_loadu_si512(q.add(b * BLOCK_ELEMS).cast());
            let q1 = _mm512_loadu_si512(q.add(b * BLOCK_ELEMS + 64).cast());
            let (c0, c1) = unpack(w.add(b * BLOCK_BYTES), sh_lo, sh_hi, mask);
            a[lane] = _mm512_dpbusd_epi32(a[lane], c0, q0);
            a[lane + 1] = _mm512_dpbusd_epi32(a[lane + 1], c1, q1);
        }
        b += 1;
    }
    let s = _mm512_add_epi32(_mm512_add_epi32(a[0], a[1]), _mm512_add_epi32(a[2], a[3]));
    acc[0][0] = _mm512_reduce_add_epi32(s);
}

/// The decode GEMV over 8 weight rows `stride` bytes apart (8 prefetch streams in 8
/// different pages), one activation row.
///
/// # Safety
/// AVX-512 F/BW/VNNI; rows `w + j·stride` (j < 8) hold `blocks` blocks; `q` one full row.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn rows8_gemv(w: *const u8, stride: usize, q: *const i8, blocks: usize) -> [i32; 8] {
    let (sh_lo, sh_hi, mask) = shifts();
    let mut a = [_mm512_setzero_si512(); 8];
    for b in 0..blocks {
        // SAFETY: block b of the 8 rows and of the activation row are inside the buffers.
        unsafe {
            let q0 = _mm512_loadu_si512(q.add(b * BLOCK_ELEMS).cast());
            let q1 = _mm512_loadu_si512(q.add(b * BLOCK_ELEMS + 64).cast());
            for (r, acc) in a.iter_mut().enumerate() {
                let (c0, c1) = unpack(w.add(r * stride + b * BLOCK_BYTES), sh_lo, sh_hi, mask);
                *acc = _mm512_dpbusd_epi32(*acc, c0, q0);
                *acc = _mm512_dpbusd_epi32(*acc, c1, q1);
            }
        }
    }
    a.map(|v| _mm512_reduce_add_epi32(v))
}

/// How far ahead (bytes) the tiles prefetch each weight row: `ONEBIT_TILE_PREFETCH`, for
/// measuring; 0 turns it off. In decode batches and speculative passes (2–16 activation
/// rows) the tiles stall on their weight loads, which the decode GEMV's eight streams do
/// not; 512 bytes measured best on a 2-thread Xeon slice (family 6, model 207): pp2 / pp4 /
/// pp8 / pp16 of the 2B-4T shape +3 / +6 / +8 / +14 % over none, means of three
/// interleaved rounds (256, 1024 and 2048 did no better).
fn prefetch_distance() -> usize {
    static D: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *D.get_or_init(|| {
        std::env::var("ONEBIT_TILE_PREFETCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512)
    })
}
