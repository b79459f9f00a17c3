//! Int8 rows times a float vector: the screen's inner loop.

#[cfg(target_arch = "x86_64")]
use crate::walk::{self, RowGroup, Walk};

/// `out[i] = Σ q_i · h` (f32) for consecutive int8 rows; scalar reference.
pub fn rows_ref(q: &[i8], h: &[f32], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(q.chunks_exact(h.len())) {
        *o = row.iter().zip(h).map(|(a, b)| f32::from(*a) * b).sum();
    }
}

/// `out[i] = Σ q_i · h` for consecutive int8 rows, with the widest vectors available.
pub fn rows(q: &[i8], h: &[f32], out: &mut [f32]) {
    assert_eq!(q.len(), out.len() * h.len(), "int8 rows: sizes");
    #[cfg(target_arch = "x86_64")]
    {
        if h.len().is_multiple_of(16) && std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F present; sizes checked above, cols % 16 == 0.
            unsafe { rows_avx512(q, h, out) };
            return;
        }
        if h.len().is_multiple_of(8) && std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 present; sizes checked above, cols % 8 == 0.
            unsafe { rows_avx2(q, h, out) };
            return;
        }
    }
    rows_ref(q, h, out);
}

/// The AVX2 form of [`rows_avx512`]: 8 lanes, multiply then add (the bound holds for any
/// summation order, so the lanes need not match the reference's).
///
/// # Safety
/// AVX2; `q.len() == out.len() · h.len()`, `h.len() % 8 == 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn rows_avx2(q: &[i8], h: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let cols = h.len();
    let n = out.len();
    let one = |r: usize, stride: usize, rt: usize, out: &mut [f32]| {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut c = 0;
        while c < cols {
            // SAFETY: c + 8 ≤ cols; rows r + j·stride (j < rt) are < n.
            unsafe {
                let hv = _mm256_loadu_ps(h.as_ptr().add(c));
                for (j, a) in acc.iter_mut().enumerate().take(rt) {
                    let p = q.as_ptr().add((r + j * stride) * cols + c);
                    let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast())));
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(v, hv));
                }
            }
            c += 8;
        }
        for (j, a) in acc.iter().enumerate().take(rt) {
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *a) };
            out[r + j * stride] = lanes.iter().sum();
        }
    };
    for g in walk::groups(0..n, Walk::Quarters) {
        one(g.first, g.stride, g.count, out);
    }
}

/// 4 rows at a time in 4 pages (the access pattern the GEMV measured best with).
///
/// # Safety
/// AVX-512F; `q.len() == out.len() · h.len()`, `h.len() % 16 == 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn rows_avx512(q: &[i8], h: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let cols = h.len();
    let n = out.len();
    let one = |r: usize, stride: usize, rt: usize, out: &mut [f32]| {
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut c = 0;
        while c < cols {
            // SAFETY: c + 16 ≤ cols; rows r + j·stride (j < rt) are < n.
            unsafe {
                let hv = _mm512_loadu_ps(h.as_ptr().add(c));
                for (j, a) in acc.iter_mut().enumerate().take(rt) {
                    let p = q.as_ptr().add((r + j * stride) * cols + c);
                    let v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast())));
                    *a = _mm512_fmadd_ps(v, hv, *a);
                }
            }
            c += 16;
        }
        for (j, a) in acc.iter().enumerate().take(rt) {
            out[r + j * stride] = _mm512_reduce_add_ps(*a);
        }
    };
    for g in walk::groups(0..n, Walk::Quarters) {
        one(g.first, g.stride, g.count, out);
    }
}

/// `(Σ q_r·a_i, Σ q_r·b_i)` (exact) for consecutive int8 rows `q_r` and each pair of
/// unsigned byte rows `(a_i, b_i)` (the hidden rows of a batch), into `out[i · rows + r]`;
/// with `vpdpbusd` where available (AVX-512 VNNI, widths a multiple of 64).
pub fn dots_u8_pairs(q: &[i8], pairs: &[(&[u8], &[u8])], out: &mut [(i32, i32)]) {
    let cols = pairs.first().map_or(0, |p| p.0.len());
    assert!(
        cols > 0 && pairs.iter().all(|p| p.0.len() == cols && p.1.len() == cols),
        "int8 byte dots: the byte rows"
    );
    assert!(q.len().is_multiple_of(cols), "int8 byte dots: int8 rows");
    assert_eq!(
        out.len(),
        pairs.len() * (q.len() / cols),
        "int8 byte dots: output"
    );
    #[cfg(target_arch = "x86_64")]
    if cols.is_multiple_of(64) && crate::ternary::Isa::Avx512Vnni.available() {
        // SAFETY: AVX-512 VNNI present; `q` is whole rows of `cols`, every byte row is `cols`
        // long and `out` has one entry per (pair, row), as asserted above; cols % 64 == 0.
        unsafe { dots_u8_pairs_vnni(q, pairs, out) };
        return;
    }
    dots_u8_pairs_ref(q, pairs, out);
}

/// Scalar reference of [`dots_u8_pairs`].
pub fn dots_u8_pairs_ref(q: &[i8], pairs: &[(&[u8], &[u8])], out: &mut [(i32, i32)]) {
    let dot = |row: &[i8], u: &[u8]| -> i32 {
        row.iter()
            .zip(u)
            .map(|(x, y)| i32::from(*x) * i32::from(*y))
            .sum()
    };
    let cols = pairs.first().map_or(1, |p| p.0.len());
    let rows = q.len() / cols;
    for (i, (a, b)) in pairs.iter().enumerate() {
        for (r, row) in q.chunks_exact(cols).enumerate() {
            out[i * rows + r] = (dot(row, a), dot(row, b));
        }
    }
}

/// `out[j] = Σ q_r·u` (exact) for each int8 row `r = rows[j]` of `q` (rows of `u.len()`)
/// against one unsigned byte row `u`; with `vpdpbusd` where available (AVX-512 VNNI, widths
/// a multiple of 64). The coarse screen's survivors of one hidden row, scattered over a
/// tile, each need one.
pub fn dots_u8_gathered(q: &[i8], rows: &[usize], u: &[u8], out: &mut [i32]) {
    assert_eq!(out.len(), rows.len(), "gathered byte dots: output");
    let cols = u.len();
    if rows.is_empty() {
        return;
    }
    assert!(
        cols > 0 && rows.iter().all(|r| (r + 1) * cols <= q.len()),
        "gathered byte dots: the rows"
    );
    #[cfg(target_arch = "x86_64")]
    if cols.is_multiple_of(64) && crate::ternary::Isa::Avx512Vnni.available() {
        // SAFETY: AVX-512 VNNI present; every int8 row lies inside `q` and `u` is `cols`
        // long, `out` has one entry per row, as asserted above; cols % 64 == 0.
        unsafe { dots_u8_gathered_vnni(q, rows, u, out) };
        return;
    }
    dots_u8_gathered_ref(q, rows, u, out);
}

/// Scalar reference of [`dots_u8_gathered`].
pub fn dots_u8_gathered_ref(q: &[i8], rows: &[usize], u: &[u8], out: &mut [i32]) {
    for (r, o) in rows.iter().zip(out.iter_mut()) {
        let row = &q[r * u.len()..(r + 1) * u.len()];
        *o = row
            .iter()
            .zip(u)
            .map(|(x, y)| i32::from(*x) * i32::from(*y))
            .sum();
    }
}

/// [`dots_u8_gathered_ref`] with `vpdpbusd`: 64 bytes of `u` are loaded once for all the
/// rows of a group (one load per instruction, where a load of `u` per row made two). Groups
/// of 16 rows take their sums from one transposing tree; the rest go 4 at a time (the
/// coarse screen keeps a few rows of a 32-row tile, so most calls are short).
///
/// # Safety
/// AVX-512 F/BW/VNNI; the sizes [`dots_u8_gathered`] asserts, and the width a multiple of 64.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn dots_u8_gathered_vnni(q: &[i8], rows: &[usize], u: &[u8], out: &mut [i32]) {
    use std::arch::x86_64::*;
    let whole = rows.len() / 16 * 16;
    for (group, out) in rows[..whole].chunks_exact(16).zip(out.chunks_exact_mut(16)) {
        // SAFETY: forwarded from the caller's contract.
        let acc = unsafe { gathered_sums::<16>(q, group, u) };
        out.copy_from_slice(&crate::ternary::lane_sums16(acc));
    }
    for (group, out) in rows[whole..].chunks(4).zip(out[whole..].chunks_mut(4)) {
        // SAFETY: as above.
        let acc = unsafe { gathered_sums::<4>(q, group, u) };
        for (o, a) in out.iter_mut().zip(&acc) {
            *o = _mm512_reduce_add_epi32(*a);
        }
    }
}

/// The `vpdpbusd` accumulators of up to `G` rows of `q` against `u` (zero past the group).
///
/// # Safety
/// As [`dots_u8_gathered_vnni`]; `group.len() <= G`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn gathered_sums<const G: usize>(
    q: &[i8],
    group: &[usize],
    u: &[u8],
) -> [std::arch::x86_64::__m512i; G] {
    use std::arch::x86_64::*;
    let cols = u.len();
    let mut acc = [_mm512_setzero_si512(); G];
    let mut c = 0;
    while c < cols {
        // SAFETY: c + 64 ≤ cols; every row r has (r + 1)·cols ≤ q.len().
        unsafe {
            let uv = _mm512_loadu_si512(u.as_ptr().add(c).cast());
            for (r, a) in group.iter().zip(acc.iter_mut()) {
                let qv = _mm512_loadu_si512(q.as_ptr().add(r * cols + c).cast());
                *a = _mm512_dpbusd_epi32(*a, uv, qv);
            }
        }
        c += 64;
    }
    acc
}

/// [`dots_u8_pairs_ref`] with `vpdpbusd`: 64 products an instruction, accumulated exactly in
/// i32 lanes (|Σ| ≤ 255 · 128 · cols, inside i32 for any head width below 65,000). A block of
/// 4 int8 rows meets 2 hidden rows at a time, so each 64-byte load feeds 4 or 8
/// instructions and the block stays in L1 while the batch's hidden rows pass. One hidden
/// row at a time re-read the int8 rows from L2 for every hidden row: on 2 Xeon threads
/// (family 6, model 207, `head_bench 2 3 batch`) the screened argmax of 4 / 8 / 16 rows took
/// 31.7 / 52.9 / 81.2 ms that way and 22.9 / 35.5 / 61.4 ms this way.
///
/// The 4 rows of a block are a quarter of the tile apart ([`screen_walk`]).
///
/// # Safety
/// AVX-512 F/BW/VNNI; the sizes [`dots_u8_pairs`] asserts, and the width a multiple of 64.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn dots_u8_pairs_vnni(
    q: &[i8],
    pairs: &[(&[u8], &[u8])],
    out: &mut [(i32, i32)],
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe { dots_u8_pairs_vnni_walk(q, pairs, out, screen_walk()) }
}

/// How blocks take their 4 int8 rows: a quarter of the tile apart rather than consecutive:
/// 4 streams in 4 pages, which the hardware prefetchers follow at once, where one stream of
/// consecutive rows left the screen waiting on memory. On a 2-vCPU AMD EPYC (family 25,
/// model 17), `head_bench 2 3 batch`, two interleaved runs of each walk: the screened argmax
/// of 1 / 2 / 4 / 8 / 16 rows took 13.0 / 13.8–14.0 / 17.4 / 23.2–23.6 / 35.3–35.8 ms with
/// consecutive rows and 7.7–8.3 / 8.7–9.1 / 10.8–11.4 / 18.3–18.5 / 30.9–31.3 ms spread; 8
/// rows spread did no better than 4. `ONEBIT_SCREEN_WALK=rows` walks consecutive rows, for
/// measuring.
#[cfg(target_arch = "x86_64")]
fn screen_walk() -> Walk {
    static S: std::sync::OnceLock<Walk> = std::sync::OnceLock::new();
    *S.get_or_init(|| match std::env::var("ONEBIT_SCREEN_WALK").as_deref() {
        Ok("rows") => Walk::Fours,
        _ => Walk::Quarters,
    })
}

/// [`dots_u8_pairs_vnni`] with the walk chosen by the caller, so that tests check both.
///
/// # Safety
/// As [`dots_u8_pairs_vnni`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn dots_u8_pairs_vnni_walk(
    q: &[i8],
    pairs: &[(&[u8], &[u8])],
    out: &mut [(i32, i32)],
    order: Walk,
) {
    let cols = pairs[0].0.len();
    let rows = q.len() / cols;
    let n = pairs.len();
    for RowGroup {
        first: r,
        stride,
        count: rt,
    } in walk::groups(0..rows, order)
    {
        let mut i = 0;
        while i < n {
            let pt = if n - i >= 2 { 2 } else { 1 };
            // SAFETY: rows r + j·stride (j < rt) and pairs i..i+pt exist; each row is `cols`
            // long; the caller guarantees the CPU features and cols % 64 == 0.
            let d = unsafe {
                match (rt, pt) {
                    (4, 2) => block::<4, 2>(q, r, stride, &pairs[i..], cols),
                    (4, 1) => block::<4, 1>(q, r, stride, &pairs[i..], cols),
                    (1, 2) => block::<1, 2>(q, r, stride, &pairs[i..], cols),
                    _ => block::<1, 1>(q, r, stride, &pairs[i..], cols),
                }
            };
            for (dr, row) in d.iter().enumerate().take(rt) {
                for (dp, v) in row.iter().enumerate().take(pt) {
                    out[(i + dp) * rows + r + dr * stride] = *v;
                }
            }
            i += pt;
        }
    }
}

/// `R` int8 rows `r + j·stride` against the first `P` pairs; `[[(a, b); 2]; 4]` with only
/// `[..R][..P]` set.
///
/// # Safety
/// AVX-512 F/BW/VNNI; rows `r + j·stride` (j < R) of `q` and `P` pairs exist, all `cols` long, and
/// cols % 64 == 0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn block<const R: usize, const P: usize>(
    q: &[i8],
    r: usize,
    stride: usize,
    pairs: &[(&[u8], &[u8])],
    cols: usize,
) -> [[(i32, i32); 2]; 4] {
    use std::arch::x86_64::*;
    let mut acc = [[(_mm512_setzero_si512(), _mm512_setzero_si512()); P]; R];
    let mut c = 0;
    while c < cols {
        // SAFETY: c + 64 ≤ cols; rows r + j·stride (j < R) are inside `q`; pairs 0..P are `cols` long.
        unsafe {
            let mut hv = [(_mm512_setzero_si512(), _mm512_setzero_si512()); P];
            for (h, (a, b)) in hv.iter_mut().zip(pairs) {
                *h = (
                    _mm512_loadu_si512(a.as_ptr().add(c).cast()),
                    _mm512_loadu_si512(b.as_ptr().add(c).cast()),
                );
            }
            for (j, row) in acc.iter_mut().enumerate() {
                let qv = _mm512_loadu_si512(q.as_ptr().add((r + j * stride) * cols + c).cast());
                for ((x, y), (av, bv)) in row.iter_mut().zip(&hv) {
                    *x = _mm512_dpbusd_epi32(*x, *av, qv);
                    *y = _mm512_dpbusd_epi32(*y, *bv, qv);
                }
            }
        }
        c += 64;
    }
    let mut out = [[(0i32, 0i32); 2]; 4];
    if R == 4 && P == 2 {
        // The full block's 16 sums by one transposing tree: 16 separate reductions cost
        // about as much again as a 2560-wide row's 160 `vpdpbusd`. (The tree over zero-filled
        // slots for the other shapes measured slower: the one-row screen 9.0 → 11.5 ms.)
        let mut all = [_mm512_setzero_si512(); 16];
        for (r, row) in acc.iter().enumerate() {
            for (p, (x, y)) in row.iter().enumerate() {
                all[4 * r + 2 * p] = *x;
                all[4 * r + 2 * p + 1] = *y;
            }
        }
        let sums = crate::ternary::lane_sums16(all);
        for (r, o) in out.iter_mut().enumerate() {
            for (p, v) in o.iter_mut().enumerate() {
                *v = (sums[4 * r + 2 * p], sums[4 * r + 2 * p + 1]);
            }
        }
        return out;
    }
    for (o, row) in out.iter_mut().zip(&acc) {
        for (v, (x, y)) in o.iter_mut().zip(row) {
            *v = (_mm512_reduce_add_epi32(*x), _mm512_reduce_add_epi32(*y));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn screen_kernels_stay_within_rounding_of_the_reference(rows in 1usize..40, c8 in 1usize..40, seed in any::<u64>()) {
            let cols = c8 * 8;
            let q: Vec<i8> = (0..rows * cols)
                .map(|i| ((i as u64 * 2654435761 + seed) % 255) as i32 as i8)
                .collect();
            let h: Vec<f32> = (0..cols).map(|i| ((i as u64 + seed % 97) as f32 * 0.3).sin()).collect();
            let mut want = vec![0f32; rows];
            rows_ref(&q, &h, &mut want);
            // The screen's bound allows any order: within n·2⁻²³ of Σ|q·h| of the exact dot.
            let slack = |row: &[i8]| -> f32 {
                let abs: f32 = row.iter().zip(&h).map(|(a, b)| (f32::from(*a) * b).abs()).sum();
                2.0 * cols as f32 * f32::EPSILON * abs + f32::MIN_POSITIVE
            };
            let mut got = vec![0f32; rows];
            super::rows(&q, &h, &mut got);
            #[cfg(target_arch = "x86_64")]
            let mut avx2 = vec![0f32; rows];
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 present; sizes match, cols % 8 == 0.
                unsafe { rows_avx2(&q, &h, &mut avx2) };
            } else {
                avx2.copy_from_slice(&want);
            }
            for (r, row) in q.chunks_exact(cols).enumerate() {
                prop_assert!((got[r] - want[r]).abs() <= slack(row), "row {}: {} vs {}", r, got[r], want[r]);
                #[cfg(target_arch = "x86_64")]
                prop_assert!((avx2[r] - want[r]).abs() <= slack(row), "avx2 row {}: {} vs {}", r, avx2[r], want[r]);
            }
        }
    }

    proptest! {
        #[test]
        fn vnni_byte_dots_equal_the_reference_exactly(rows in 1usize..40, c64 in 1usize..6, pairs in 1usize..6, seed in any::<u64>()) {
            let cols = c64 * 64;
            let mix = |i: usize| (i as u64).wrapping_mul(2654435761).wrapping_add(seed) >> 7;
            // Every int8 and byte value, the extremes included.
            let q: Vec<i8> = (0..rows * cols).map(|i| (mix(i) % 256) as u8 as i8).collect();
            // `pairs` hidden rows: odd counts take the kernel's one-pair path.
            let hidden: Vec<(Vec<u8>, Vec<u8>)> = (0..pairs)
                .map(|p| {
                    let a = (0..cols).map(|i| (mix(i + 99_991 * (p + 1)) % 256) as u8).collect();
                    let b = (0..cols).map(|i| (mix(i + 7_919 * (p + 1)) % 256) as u8).collect();
                    (a, b)
                })
                .collect();
            let pairs: Vec<(&[u8], &[u8])> = hidden.iter().map(|(a, b)| (&a[..], &b[..])).collect();
            let mut want = vec![(0i32, 0i32); rows * pairs.len()];
            dots_u8_pairs_ref(&q, &pairs, &mut want);
            let dot = |row: &[i8], u: &[u8]| -> i32 { row.iter().zip(u).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum() };
            for (i, (a, b)) in pairs.iter().enumerate() {
                let r = rows - 1;
                let row = &q[r * cols..];
                prop_assert_eq!(want[i * rows + r], (dot(row, a), dot(row, b)));
            }
            #[cfg(target_arch = "x86_64")]
            if crate::ternary::Isa::Avx512Vnni.available() {
                let mut got = vec![(0i32, 0i32); rows * pairs.len()];
                // SAFETY: AVX-512 VNNI present; `q` is `rows` rows of `cols`, every byte row
                // is `cols` long, `got` has rows × pairs entries, and cols % 64 == 0.
                unsafe { dots_u8_pairs_vnni(&q, &pairs, &mut got) };
                for order in [Walk::Fours, Walk::Quarters] {
                    let mut walked = vec![(0i32, 0i32); rows * pairs.len()];
                    // SAFETY: as above; either walk reads only rows inside `q`.
                    unsafe { dots_u8_pairs_vnni_walk(&q, &pairs, &mut walked, order) };
                    prop_assert_eq!(&walked, &want, "{:?}", order);
                }
                prop_assert_eq!(got, want);
            }
        }
    }

    proptest! {
        #[test]
        fn gathered_byte_dots_equal_the_reference_exactly(rows in 1usize..12, c64 in 1usize..5, picks in proptest::collection::vec(0usize..12, 0..40), seed in any::<u64>()) {
            let cols = c64 * 64;
            let mix = |i: usize| (i as u64).wrapping_mul(2654435761).wrapping_add(seed) >> 7;
            let q: Vec<i8> = (0..rows * cols).map(|i| (mix(i) % 256) as u8 as i8).collect();
            let u: Vec<u8> = (0..cols).map(|i| (mix(i + 7_919) % 256) as u8).collect();
            // Any number of rows (groups of 16 and a short last one), rows repeated.
            let picks: Vec<usize> = picks.iter().map(|r| r % rows).collect();
            let mut want = vec![0i32; picks.len()];
            dots_u8_gathered_ref(&q, &picks, &u, &mut want);
            for (r, w) in picks.iter().zip(&want) {
                let row = &q[r * cols..(r + 1) * cols];
                let dot: i32 = row.iter().zip(&u).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
                prop_assert_eq!(*w, dot);
            }
            let mut got = vec![0i32; picks.len()];
            dots_u8_gathered(&q, &picks, &u, &mut got);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn int8_rows_match_reference() {
        let (rows, cols) = (9, 48);
        let q: Vec<i8> = (0..rows * cols)
            .map(|i| ((i * 37) % 255) as i32 as i8)
            .collect();
        let h: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.3).sin()).collect();
        let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
        super::rows(&q, &h, &mut a);
        rows_ref(&q, &h, &mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{x} vs {y}");
        }
    }
}
