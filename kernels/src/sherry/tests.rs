use super::*;
use crate::act_quant::quantize_row_ref;
use crate::ternary::{self, TernaryView};
use proptest::prelude::*;

/// Random 3:4 ternary weights: one zero at a random position per block, random signs.
fn random_weights(rows: usize, cols: usize, seed: u64) -> Vec<i8> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut w = vec![0i8; rows * cols];
    for r in 0..rows {
        for b in 0..cols.div_ceil(4) {
            let z = (next() % 4) as usize;
            for p in 0..4 {
                let c = 4 * b + p;
                if c < cols {
                    w[r * cols + c] = if p == z {
                        0
                    } else if next() % 2 == 0 {
                        1
                    } else {
                        -1
                    };
                }
            }
        }
    }
    w
}

/// Activations including the extremes −128 and 127.
fn random_acts(n: usize, cols: usize, seed: u64, extreme: bool) -> (Vec<i8>, Vec<ActScale>) {
    let k = padded_cols(cols);
    let mut q = vec![0i8; n * k];
    let mut acts = Vec::new();
    for t in 0..n {
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * (t + 3)) as f32 * 0.37 + seed as f32).sin() * 3.0)
            .collect();
        let mut a = quantize_row_ref(&x, &mut q[t * k..(t + 1) * k]);
        if extreme {
            for c in (0..cols).step_by(3) {
                a.sum -= i32::from(q[t * k + c]);
                q[t * k + c] = if c % 2 == 0 { -128 } else { 127 };
                a.sum += i32::from(q[t * k + c]);
            }
        }
        acts.push(a);
    }
    (q, acts)
}

fn packed(rows: usize, cols: usize, w: &[i8]) -> Vec<u8> {
    pack(rows, cols, |r, c| w[r * cols + c]).expect("3:4 weights pack")
}

#[test]
fn every_block_state_roundtrips() {
    let mut seen = std::collections::HashSet::new();
    for index in 0..16u8 {
        for sign in [false, true] {
            let w = decode_block(index, sign);
            assert_eq!(w.iter().filter(|&&v| v == 0).count(), 1, "{w:?}");
            assert_eq!(encode_block(w), Ok((index, sign)));
            seen.insert(w);
        }
    }
    assert_eq!(seen.len(), 32, "32 distinct blocks");
}

#[test]
fn layout_matches_the_documented_bits() {
    // Block 0 = [0, 1, -1, 1]: zero at 0, second nonzero opposite → index 0b0100, sign 0.
    // Block 17 = [-1, -1, 0, -1]: zero at 2, all alike → index 2, sign 1.
    let mut w = vec![0i8; 128];
    for b in 0..32 {
        w[4 * b..4 * b + 4].copy_from_slice(&[0, 1, 1, 1]);
    }
    w[0..4].copy_from_slice(&[0, 1, -1, 1]);
    w[68..72].copy_from_slice(&[-1, -1, 0, -1]);
    let data = packed(1, 128, &w);
    assert_eq!(data.len(), GROUP_BYTES);
    assert_eq!(data[0], 0b0100);
    assert_eq!(data[1], 2 << 4);
    assert_eq!(
        u32::from_le_bytes(data[16..20].try_into().unwrap()),
        1 << 17
    );
}

#[test]
fn the_lane_layout_matches_the_documented_bits() {
    // 768 weights = 12 vectors: two units. Block 16·(6u + f) + i lands in bits 5f..5f+5 of
    // lane i of unit u: block 1 (u 0, f 0, i 1) and block 16·(6 + 5) + 3 (u 1, f 5, i 3).
    let cols = 768;
    let mut w: Vec<i8> = (0..cols).map(|c| i8::from(c % 4 != 0)).collect();
    w[4..8].copy_from_slice(&[0, 1, -1, 1]); // index 0b0100, sign 0
    let b = 16 * 11 + 3;
    w[4 * b..4 * b + 4].copy_from_slice(&[-1, -1, 0, -1]); // index 2, sign 1
    let data = packed(1, cols, &w);
    let l = lanes::to_lanes(&SherryView::new(1, cols, &data).unwrap());
    assert_eq!((lanes::shape(cols), l.len()), ((2, 0), 128));
    let lane =
        |u: usize, i: usize| u32::from_le_bytes(l[64 * u + 4 * i..][..4].try_into().unwrap());
    assert_eq!(lane(0, 1) & 31, 0b0100);
    assert_eq!(lane(1, 3) >> 25, 0b1_0010);
    assert_eq!(lane(0, 0), 0, "every other block is index 0, sign 0");
    // A 640-wide row (10 vectors): one unit, then groups 3 and 4 as the file has them.
    let w = random_weights(2, 640, 7);
    let data = packed(2, 640, &w);
    let v = SherryView::new(2, 640, &data).unwrap();
    let l = lanes::to_lanes(&v);
    assert_eq!(
        (lanes::shape(640), lanes::lane_row_bytes(640)),
        ((1, 2), 104)
    );
    assert_eq!(&l[64..104], &v.row(0)[60..100]);
    assert_eq!(&l[104 + 64..], &v.row(1)[60..100]);
}

#[test]
fn pack_refuses_blocks_that_are_not_3_of_4() {
    let err = pack(2, 8, |r, c| {
        if r == 1 && c == 5 {
            0
        } else {
            i8::from(c % 4 != 0)
        }
    })
    .unwrap_err();
    assert_eq!((err.row, err.col, err.error), (1, 4, BlockError::Zeros(2)));
    assert!(err.to_string().contains("convert --format sherry"), "{err}");
    let err = pack(1, 4, |_, c| if c == 0 { 0 } else { 2 }).unwrap_err();
    assert_eq!(err.error, BlockError::NotTernary(2));
}

#[test]
fn all_twos_times_minus_128_does_not_overflow() {
    // The largest |Σ code·q| per group: three codes 2 per block (sign chosen so) against −128.
    let cols = 6912;
    let w: Vec<i8> = (0..5 * cols)
        .map(|i| if i % 4 == 0 { 0 } else { 1 })
        .collect();
    let data = packed(5, cols, &w);
    let v = SherryView::new(5, cols, &data).unwrap();
    let q = vec![-128i8; cols];
    let act = ActScale {
        scale: 1.0,
        sum: -128 * cols as i32,
    };
    let mut want = vec![0f32; 5];
    gemv_ref(v, &q, act, 1.0, &mut want);
    assert_eq!(want[0], (-128 * (cols / 4 * 3) as i32) as f32);
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        let mut got = vec![0f32; 5];
        gemv_with(isa, v, &q, act, 1.0, &mut got);
        assert_eq!(got, want, "{isa:?}");
    }
}

proptest! {
    #[test]
    fn unpack_and_i2s_repack_match_the_weights(rows in 1usize..6, cols in 1usize..400, seed in any::<u64>()) {
        let w = random_weights(rows, cols, seed);
        let data = packed(rows, cols, &w);
        let v = SherryView::new(rows, cols, &data).unwrap();
        let i2s = v.to_i2s();
        let t = TernaryView::new(rows, cols, &i2s).unwrap();
        for r in 0..rows {
            for c in 0..cols {
                prop_assert_eq!(v.weight(r, c), w[r * cols + c]);
                prop_assert_eq!(t.code(r, c) as i8 - 1, w[r * cols + c]);
            }
        }
    }

    #[test]
    fn the_lane_layout_holds_the_same_blocks(rows in 1usize..5, cols in 1usize..1700, seed in any::<u64>()) {
        let w = random_weights(rows, cols, seed);
        let data = packed(rows, cols, &w);
        let v = SherryView::new(rows, cols, &data).unwrap();
        let l = lanes::to_lanes(&v);
        prop_assert!(v.with_lanes(&l).is_some());
        let (lb, k) = (lanes::lane_row_bytes(cols), padded_cols(cols));
        let (units, tail) = lanes::shape(cols);
        prop_assert_eq!(lb, units * 64 + tail * GROUP_BYTES);
        prop_assert_eq!(units * 6 + tail * 2, k / 64);
        let (q, _) = random_acts(1, cols, seed, true);
        for r in 0..rows {
            let row = &l[r * lb..(r + 1) * lb];
            for b in 0..k / 4 {
                prop_assert_eq!(lanes::lane_block_bits(row, units, b), block_bits(v.row(r), b));
            }
            // The two bits above the six codes of every lane stay 0.
            for word in row[..units * 64].chunks_exact(4) {
                prop_assert_eq!(u32::from_le_bytes(word.try_into().unwrap()) >> 30, 0);
            }
            prop_assert_eq!(lanes::dot_codes_lanes_ref(row, &q), dot_codes_ref(v.row(r), &q));
        }
        prop_assert_eq!(lanes::from_lanes(rows, cols, &l), data);
    }

    #[test]
    fn gemv_matches_reference_and_i2s(rows in 1usize..40, cols in 1usize..700, seed in any::<u64>(), extreme in any::<bool>()) {
        let w = random_weights(rows, cols, seed);
        let data = packed(rows, cols, &w);
        let v = SherryView::new(rows, cols, &data).unwrap();
        let (q, acts) = random_acts(1, cols, seed, extreme);
        let act = acts[0];
        let mut want = vec![0f32; rows];
        gemv_ref(v, &q, act, 0.7, &mut want);
        for r in 0..rows {
            let exact: i32 = (0..cols).map(|c| i32::from(w[r * cols + c]) * i32::from(q[c])).sum();
            prop_assert_eq!(want[r], exact as f32 / act.scale * 0.7);
        }
        let i2s = v.to_i2s();
        let mut dense = vec![0f32; rows];
        ternary::gemv_ref(TernaryView::new(rows, cols, &i2s).unwrap(), &q, act, 0.7, &mut dense);
        prop_assert_eq!(&dense, &want);
        let lanes = lanes::to_lanes(&v);
        let lv = v.with_lanes(&lanes).unwrap();
        let only = SherryView::lanes_only(rows, cols, &lanes).unwrap();
        for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
            for view in [v, lv, only] {
                let mut got = vec![0f32; rows];
                gemv_with(isa, view, &q, act, 0.7, &mut got);
                prop_assert_eq!(&got, &want, "{:?}, lanes {}, file rows {}", isa, view.lanes.is_some(), !view.data.is_empty());
            }
        }
    }

    #[test]
    fn gemm_matches_reference(rows in 1usize..150, cols in 1usize..400, n in 1usize..40, seed in any::<u64>(), extreme in any::<bool>()) {
        let w = random_weights(rows, cols, seed);
        let data = packed(rows, cols, &w);
        let v = SherryView::new(rows, cols, &data).unwrap();
        let k = padded_cols(cols);
        let (q, acts) = random_acts(n, cols, seed, extreme);
        let mut want = vec![0f32; n * rows];
        for t in 0..n {
            gemv_ref(v, &q[t * k..(t + 1) * k], acts[t], 1.5, &mut want[t * rows..(t + 1) * rows]);
        }
        let lanes = lanes::to_lanes(&v);
        let lv = v.with_lanes(&lanes).unwrap();
        let only = SherryView::lanes_only(rows, cols, &lanes).unwrap();
        for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
            for view in [v, lv, only] {
                let mut got = vec![0f32; n * rows];
                gemm_with(isa, view, &q, &acts, 1.5, &mut got);
                prop_assert_eq!(&got, &want, "{:?}, lanes {}, file rows {}", isa, view.lanes.is_some(), !view.data.is_empty());
            }
        }
    }

    #[test]
    fn gemv_many_matches_separate_gemvs(r1 in 1usize..90, r2 in 1usize..50, r3 in 1usize..70, cols in 1usize..300, seed in any::<u64>()) {
        let shapes = [r1, r2, r3];
        let datas: Vec<Vec<u8>> = shapes.iter().enumerate()
            .map(|(i, &r)| packed(r, cols, &random_weights(r, cols, seed ^ i as u64)))
            .collect();
        let (q, acts) = random_acts(1, cols, seed, false);
        // The middle job has its lane copy too, as the engine's projections do on AVX-512;
        // the last has only lanes (file rows dropped), so every ISA reads those.
        let lanes = lanes::to_lanes(&SherryView::new(r2, cols, &datas[1]).unwrap());
        let only = lanes::to_lanes(&SherryView::new(r3, cols, &datas[2]).unwrap());
        let mut outs: Vec<Vec<f32>> = shapes.iter().map(|&r| vec![0f32; r]).collect();
        {
            let mut jobs: Vec<GemvJob> = outs.iter_mut().zip(&datas).zip(&shapes).enumerate().map(|(i, ((o, d), &r))| {
                let v = SherryView::new(r, cols, d).unwrap();
                let w = match i {
                    1 => v.with_lanes(&lanes).unwrap(),
                    2 => SherryView::lanes_only(r, cols, &only).unwrap(),
                    _ => v,
                };
                GemvJob { w, scale: 0.5 + i as f32, out: o }
            }).collect();
            gemv_many(&q, acts[0], &mut jobs);
        }
        for (i, (&r, d)) in shapes.iter().zip(&datas).enumerate() {
            let mut want = vec![0f32; r];
            gemv_ref(SherryView::new(r, cols, d).unwrap(), &q, acts[0], 0.5 + i as f32, &mut want);
            prop_assert_eq!(&outs[i], &want);
        }
    }
}
