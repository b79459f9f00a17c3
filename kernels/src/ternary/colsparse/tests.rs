use super::*;
use crate::ternary::{gemm_with, gemv_ref, gemv_with, pack};
use proptest::prelude::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn random_matrix(rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let codes: Vec<u8> = (0..rows * cols).map(|_| (rng.next() % 3) as u8).collect();
    pack(rows, cols, |r, c| codes[r * cols + c])
}

/// `n` activation rows with about `zero_pct` % exact zeros; extremes −128 and 127 included.
/// With `dirty_pad` the block padding is nonzero too (the dense kernels read it, so the
/// sparse ones must agree even then).
fn random_q(
    n: usize,
    cols: usize,
    zero_pct: u64,
    seed: u64,
    dirty_pad: bool,
) -> (Vec<i8>, Vec<ActScale>) {
    let k = padded_cols(cols);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut q = vec![0i8; n * k];
    let mut acts = Vec::new();
    for t in 0..n {
        let row = &mut q[t * k..(t + 1) * k];
        for (c, v) in row.iter_mut().enumerate() {
            let r = rng.next();
            if (c >= cols && !dirty_pad) || r % 100 < zero_pct {
                continue;
            }
            *v = match (r >> 8) % 16 {
                0 => -128,
                1 => 127,
                _ => (r >> 16) as i8,
            };
        }
        let sum = row.iter().map(|&v| i32::from(v)).sum();
        acts.push(ActScale {
            scale: 1.0 + (rng.next() % 1000) as f32 / 7.0,
            sum,
        });
    }
    (q, acts)
}

fn isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.available()).collect()
}

#[test]
fn reports_skipped_isas() {
    for isa in Isa::ALL.into_iter().filter(|i| !i.available()) {
        eprintln!(
            "note: {} is not available on this CPU; its sparse kernel is not tested here",
            isa.name()
        );
    }
    assert!(isas().contains(&Isa::Scalar));
}

#[test]
fn from_rows_keeps_every_code() {
    for (rows, cols) in [(1, 1), (255, 129), (256, 128), (257, 300), (600, 1000)] {
        let data = random_matrix(rows, cols, rows as u64 * 31 + cols as u64);
        let v = TernaryView::new(rows, cols, &data).unwrap();
        let w = ColumnTernary::from_rows(v);
        assert_eq!((w.rows, w.cols), (rows, cols));
        for r in 0..rows {
            for c in 0..padded_cols(cols) {
                assert_eq!(w.code(r, c), v.code(r, c), "({r}, {c}) of {rows}x{cols}");
            }
        }
    }
}

#[test]
fn to_rows_gives_back_the_row_major_bytes() {
    for (rows, cols) in [
        (1, 1),
        (255, 129),
        (256, 128),
        (257, 300),
        (600, 1000),
        (3, 0),
    ] {
        let data = random_matrix(rows, cols, rows as u64 * 17 + cols as u64);
        let w = ColumnTernary::from_rows(TernaryView::new(rows, cols, &data).unwrap());
        assert_eq!(w.to_rows(), data, "{rows}x{cols}");
    }
}

#[test]
fn location_is_a_permutation_of_the_line() {
    let mut seen = [false; TILE_ROWS];
    for r in 0..TILE_ROWS {
        let (b, shift) = location(r);
        assert!(b < LINE && shift % 2 == 0 && shift < 8);
        let slot = 4 * b + shift as usize / 2;
        assert!(!seen[slot], "row {r} shares a slot");
        seen[slot] = true;
    }
}

#[test]
fn worst_case_sums_do_not_overflow() {
    // Every code 2, every activation −128, a long row: the AVX2 i16 stage at its limit.
    let (rows, cols) = (300, 6912);
    let data = pack(rows, cols, |_, _| 2);
    let v = TernaryView::new(rows, cols, &data).unwrap();
    let w = ColumnTernary::from_rows(v);
    for qv in [-128i8, 127] {
        let q = vec![qv; cols];
        let act = ActScale {
            scale: 1.0,
            sum: i32::from(qv) * cols as i32,
        };
        let mut want = vec![0f32; rows];
        gemv_ref(v, &q, act, 1.0, &mut want);
        assert_eq!(want[0], (i32::from(qv) * cols as i32) as f32);
        for isa in isas() {
            let mut got = vec![0f32; rows];
            gemv_sparse_with(isa, &w, &q, act, 1.0, &mut got);
            assert_eq!(got, want, "{isa:?}, q = {qv}");
        }
    }
}

#[test]
fn zero_columns_are_never_read() {
    // Overwrite every line of the columns where q == 0 with code 3 (not a valid code): if a
    // kernel read any of them, its sums would change.
    let (rows, cols) = (700, 1000);
    let data = random_matrix(rows, cols, 77);
    let v = TernaryView::new(rows, cols, &data).unwrap();
    let mut w = ColumnTernary::from_rows(v);
    let (q, acts) = random_q(1, cols, 70, 5, false);
    let mut want = vec![0f32; rows];
    gemv_ref(v, &q, acts[0], 1.0, &mut want);
    let (start, pcols) = (w.start, w.pcols);
    for t in 0..w.tiles {
        let off = start + w.tile_offset(t);
        for c in (0..pcols).filter(|&c| q[c] == 0) {
            w.data[off + c * LINE..][..LINE].fill(0xff);
        }
    }
    for isa in isas() {
        let mut got = vec![0f32; rows];
        gemv_sparse_with(isa, &w, &q, acts[0], 1.0, &mut got);
        assert_eq!(got, want, "{isa:?}");
        let mut got = vec![0f32; rows];
        gemm_sparse_with(isa, &w, &q, &acts, 1.0, &mut got);
        assert_eq!(got, want, "{isa:?} gemm");
    }
}

#[test]
fn empty_shapes_match_dense() {
    for (rows, cols, n) in [(0, 5, 2), (3, 0, 2), (3, 5, 0)] {
        let data = random_matrix(rows, cols, 1);
        let v = TernaryView::new(rows, cols, &data).unwrap();
        let w = ColumnTernary::from_rows(v);
        let (q, acts) = random_q(n, cols, 50, 2, false);
        for isa in isas() {
            let mut want = vec![0f32; n * rows];
            gemm_with(isa, v, &q, &acts, 1.0, &mut want);
            let mut got = vec![f32::NAN; n * rows];
            gemm_sparse_with(isa, &w, &q, &acts, 1.0, &mut got);
            assert_eq!(got, want, "{isa:?} {rows}x{cols}, n = {n}");
        }
    }
}

#[test]
fn nonzero_fraction_counts() {
    assert_eq!(nonzero_fraction(&[0, 1, 0, -3]), 0.5);
    assert_eq!(nonzero_fraction(&[]), 0.0);
}

proptest! {
    #[test]
    fn gemv_sparse_matches_dense(
        rows in 1usize..700,
        cols in 1usize..400,
        zero in prop::sample::select(vec![0u64, 50, 90, 100]),
        dirty_pad in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let data = random_matrix(rows, cols, seed);
        let v = TernaryView::new(rows, cols, &data).unwrap();
        let w = ColumnTernary::from_rows(v);
        let (q, acts) = random_q(1, cols, zero, seed, dirty_pad);
        let mut want = vec![0f32; rows];
        gemv_ref(v, &q, acts[0], 0.7, &mut want);
        let mut got = vec![0f32; rows];
        gemv_sparse_ref(&w, &q, acts[0], 0.7, &mut got);
        prop_assert_eq!(&got, &want, "reference");
        for isa in isas() {
            let mut got = vec![f32::NAN; rows];
            gemv_sparse_with(isa, &w, &q, acts[0], 0.7, &mut got);
            prop_assert_eq!(&got, &want, "{:?}", isa);
            let mut dense = vec![0f32; rows];
            gemv_with(isa, v, &q, acts[0], 0.7, &mut dense);
            prop_assert_eq!(&got, &dense, "{:?} against the dense kernel", isa);
        }
    }

    #[test]
    fn gemm_sparse_matches_dense(
        rows in 1usize..600,
        cols in 1usize..300,
        n in 1usize..7,
        zero in prop::sample::select(vec![0u64, 50, 90, 100]),
        seed in any::<u64>(),
    ) {
        let data = random_matrix(rows, cols, seed);
        let v = TernaryView::new(rows, cols, &data).unwrap();
        let w = ColumnTernary::from_rows(v);
        let (q, acts) = random_q(n, cols, zero, seed, false);
        for isa in isas() {
            let mut want = vec![0f32; n * rows];
            gemm_with(isa, v, &q, &acts, 1.5, &mut want);
            let mut got = vec![f32::NAN; n * rows];
            gemm_sparse_with(isa, &w, &q, &acts, 1.5, &mut got);
            prop_assert_eq!(&got, &want, "{:?}", isa);
        }
    }
}
