use super::*;
use crate::act_quant::quantize_row_ref;
use proptest::prelude::*;

fn random_codes(rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..rows * cols)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 3) as u8
        })
        .collect()
}

/// Activations with the extremes the kernels must survive: −128 and 127 both occur when
/// `extreme` is set (max |x| maps to 127; −128 only appears via clamping, so set it by hand).
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

#[test]
fn pack_roundtrips_codes() {
    let (rows, cols) = (3, 300);
    let codes = random_codes(rows, cols, 9);
    let data = pack(rows, cols, |r, c| codes[r * cols + c]);
    let v = TernaryView::new(rows, cols, &data).unwrap();
    for r in 0..rows {
        for c in 0..cols {
            assert_eq!(v.code(r, c), codes[r * cols + c]);
        }
    }
}

#[test]
fn block_layout_matches_i2s_bit_order() {
    // Element 0 → bits 7:6 of byte 0, element 32 → bits 5:4, 64 → 3:2, 96 → 1:0.
    let data = pack(1, 128, |_, c| match c {
        0 => 2,
        32 => 0,
        64 => 2,
        96 => 0,
        _ => 1,
    });
    assert_eq!(data[0], 0b10_00_10_00);
    assert_eq!(data[1], 0b01_01_01_01);
}

#[test]
fn all_twos_times_minus_128_does_not_overflow() {
    // The worst case for an i16 stage: every code 2, every activation −128, a long row.
    let cols = 6912;
    let data = pack(5, cols, |_, _| 2);
    let w = TernaryView::new(5, cols, &data).unwrap();
    let q = vec![-128i8; cols];
    let act = ActScale {
        scale: 1.0,
        sum: -128 * cols as i32,
    };
    let mut want = vec![0f32; 5];
    gemv_ref(w, &q, act, 1.0, &mut want);
    assert_eq!(want[0], (-128 * cols as i32) as f32);
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        let mut got = vec![0f32; 5];
        gemv_with(isa, w, &q, act, 1.0, &mut got);
        assert_eq!(got, want, "{isa:?}");
    }
}

#[test]
fn reports_which_isas_run() {
    for isa in Isa::ALL {
        if !isa.available() {
            eprintln!(
                "note: {} is not available on this CPU; its kernels are not tested here",
                isa.name()
            );
        }
    }
    assert!(Isa::best().available());
}

proptest! {
    #[test]
    fn gemv_matches_reference(rows in 1usize..40, cols in 1usize..700, seed in any::<u64>(), extreme in any::<bool>()) {
        let codes = random_codes(rows, cols, seed);
        let data = pack(rows, cols, |r, c| codes[r * cols + c]);
        let w = TernaryView::new(rows, cols, &data).unwrap();
        let (q, acts) = random_acts(1, cols, seed, extreme);
        let act = acts[0];
        let mut want = vec![0f32; rows];
        gemv_ref(w, &q, act, 0.7, &mut want);
        for r in 0..rows {
            let exact: i32 = (0..cols).map(|c| (i32::from(codes[r * cols + c]) - 1) * i32::from(q[c])).sum();
            prop_assert_eq!(want[r], exact as f32 / act.scale * 0.7);
        }
        for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
            let mut got = vec![0f32; rows];
            gemv_with(isa, w, &q, act, 0.7, &mut got);
            prop_assert_eq!(&got, &want, "{:?}", isa);
        }
        prop_assert_eq!(dot_codes(w.row(0), &q), dot_codes_ref(w.row(0), &q));
    }

    #[test]
    fn gemm_matches_reference(rows in 1usize..150, cols in 1usize..400, n in 1usize..40, seed in any::<u64>(), extreme in any::<bool>()) {
        let codes = random_codes(rows, cols, seed);
        let data = pack(rows, cols, |r, c| codes[r * cols + c]);
        let w = TernaryView::new(rows, cols, &data).unwrap();
        let k = padded_cols(cols);
        let (q, acts) = random_acts(n, cols, seed, extreme);
        let mut want = vec![0f32; n * rows];
        for t in 0..n {
            gemv_ref(w, &q[t * k..(t + 1) * k], acts[t], 1.5, &mut want[t * rows..(t + 1) * rows]);
        }
        for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
            let mut got = vec![0f32; n * rows];
            gemm_with(isa, w, &q, &acts, 1.5, &mut got);
            prop_assert_eq!(&got, &want, "{:?}", isa);
        }
    }

    /// Both AVX-512 unpackings (shifts, and GFNI where the CPU has it) against the scalar
    /// tile, whichever one `Isa::best` picked for the tests above.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_tiles_match_reference_with_either_unpacking(blocks in 1usize..9, rt in prop::sample::select(vec![1usize, 4]), tt in 2usize..5, seed in any::<u64>(), extreme in any::<bool>()) {
        if !Isa::Avx512Vnni.available() {
            return Ok(());
        }
        let cols = blocks * BLOCK_ELEMS;
        let codes = random_codes(rt, cols, seed);
        let data = pack(rt, cols, |r, c| codes[r * cols + c]);
        let (q, _) = random_acts(tt, cols, seed, extreme);
        let rb = row_bytes(cols);
        let mut want = [[0i32; 4]; 4];
        // SAFETY: `data` holds rt rows of rb bytes and `q` tt rows of `cols`.
        unsafe { tile_ref(rt, tt, data.as_ptr(), rb, q.as_ptr(), cols, blocks, &mut want) };
        let unpackings = [false, true];
        for gfni in unpackings.into_iter().filter(|g| !g || std::is_x86_feature_detected!("gfni")) {
            let mut got = [[0i32; 4]; 4];
            // SAFETY: as above; GFNI only where the CPU has it.
            unsafe { avx512::tile_unpacked_by(gfni, rt, tt, data.as_ptr(), rb, q.as_ptr(), cols, blocks, &mut got) };
            prop_assert_eq!(got, want, "gfni {}", gfni);
        }
    }

    #[test]
    fn gemv_many_matches_separate_gemvs(r1 in 1usize..90, r2 in 1usize..50, r3 in 1usize..70, cols in 1usize..300, seed in any::<u64>()) {
        let shapes = [r1, r2, r3];
        let datas: Vec<Vec<u8>> = shapes.iter().enumerate().map(|(i, &r)| {
            let codes = random_codes(r, cols, seed ^ i as u64);
            pack(r, cols, |a, c| codes[a * cols + c])
        }).collect();
        let (q, acts) = random_acts(1, cols, seed, false);
        let mut outs: Vec<Vec<f32>> = shapes.iter().map(|&r| vec![0f32; r]).collect();
        {
            let mut jobs: Vec<GemvJob> = outs.iter_mut().zip(&datas).zip(&shapes).enumerate().map(|(i, ((o, d), &r))| GemvJob {
                w: TernaryView::new(r, cols, d).unwrap(), scale: 0.5 + i as f32, out: o,
            }).collect();
            gemv_many(&q, acts[0], &mut jobs);
        }
        for (i, (&r, d)) in shapes.iter().zip(&datas).enumerate() {
            let mut want = vec![0f32; r];
            gemv_ref(TernaryView::new(r, cols, d).unwrap(), &q, acts[0], 0.5 + i as f32, &mut want);
            prop_assert_eq!(&outs[i], &want);
        }
    }
}

#[cfg(target_arch = "x86_64")]
proptest! {
    /// The transposing tree against 16 plain sums, with values near i32's ends (the sums
    /// wrap exactly as the tiles' i32 additions do).
    #[test]
    fn lane_sums16_matches_plain_sums(values in prop::collection::vec(any::<i32>(), 256)) {
        if !Isa::Avx512Vnni.available() {
            return Ok(());
        }
        use std::arch::x86_64::*;
        let want: Vec<i32> = values.chunks(16).map(|c| c.iter().fold(0i32, |a, &b| a.wrapping_add(b))).collect();
        // SAFETY: the CPU has AVX-512 F (checked above) and each chunk is 16 i32.
        let got = unsafe {
            let v: [__m512i; 16] = std::array::from_fn(|i| _mm512_loadu_si512(values[16 * i..].as_ptr().cast()));
            avx512::lane_sums16(v)
        };
        prop_assert_eq!(got.to_vec(), want);
    }
}
