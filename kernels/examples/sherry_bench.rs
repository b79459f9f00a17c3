//! Sherry against I2_S, kernel only: `cargo run --release -p onebit-kernels --example
//! sherry_bench [threads]`. The same 3:4 weights in both layouts, 30 gate-sized matrices
//! (6912 × 2560, so decode reads them from DRAM) and one (cache-resident); decode GEMV
//! tokens/s-equivalents and prefill GEMM (128 tokens) GMAC/s per ISA, the two layouts
//! interleaved per repetition, with the Sherry/I2_S ratio.

use onebit_kernels::act_quant::quantize_row;
use onebit_kernels::parallel;
use onebit_kernels::sherry::{self, SherryView};
use onebit_kernels::ternary::{self, padded_cols, Isa, TernaryView};
use std::time::Instant;

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    parallel::init_threads(threads);
    let (rows, cols, copies) = (6912, 2560, 30);
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut sh = Vec::new();
    let mut i2 = Vec::new();
    for _ in 0..copies {
        let w: Vec<i8> = (0..rows * cols / 4)
            .flat_map(|_| {
                let v = next();
                let z = (v % 4) as usize;
                (0..4).map(move |p| {
                    if p == z {
                        0
                    } else if v >> (8 + p) & 1 == 1 {
                        1
                    } else {
                        -1
                    }
                })
            })
            .collect();
        let packed = sherry::pack(rows, cols, |r, c| w[r * cols + c]).expect("3:4");
        i2.push(SherryView::new(rows, cols, &packed).unwrap().to_i2s());
        sh.push(packed);
    }
    let ln: Vec<Vec<u8>> = sh
        .iter()
        .map(|d| sherry::lanes::to_lanes(&SherryView::new(rows, cols, d).unwrap()))
        .collect();
    let x: Vec<f32> = (0..128 * cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let k = padded_cols(cols);
    let mut q = vec![0i8; 128 * k];
    let acts: Vec<_> = (0..128)
        .map(|t| quantize_row(&x[t * cols..(t + 1) * cols], &mut q[t * k..(t + 1) * k]))
        .collect();
    let mut out = vec![0f32; 128 * rows];
    for isa in Isa::ALL
        .into_iter()
        .filter(|i| i.available() && *i != Isa::Scalar)
    {
        // Sherry as the engine runs it (the lane layout where this ISA reads it), and in
        // the file layout beside it where that differs.
        let lanes = SherryView::lanes_pay_off(isa);
        let view = |i: usize, with_lanes: bool| {
            let v = SherryView::new(rows, cols, &sh[i]).unwrap();
            if with_lanes {
                v.with_lanes(&ln[i]).unwrap()
            } else {
                v
            }
        };
        for (what, n_mats) in [("decode GEMV, DRAM", copies), ("decode GEMV, cached", 1)] {
            let (mut ti, mut ts, mut tf) = (0.0, 0.0, 0.0);
            for _ in 0..5 {
                let t0 = Instant::now();
                for d in i2.iter().take(n_mats).cycle().take(copies) {
                    let w = TernaryView::new(rows, cols, d).unwrap();
                    ternary::gemv_with(isa, w, &q[..k], acts[0], 1.0, &mut out[..rows]);
                }
                ti += t0.elapsed().as_secs_f64();
                let runs = if lanes { 2 } else { 1 };
                for (with_lanes, t) in [(lanes, &mut ts), (false, &mut tf)].into_iter().take(runs) {
                    let t0 = Instant::now();
                    for i in (0..n_mats).cycle().take(copies) {
                        let w = view(i, with_lanes);
                        sherry::gemv_with(isa, w, &q[..k], acts[0], 1.0, &mut out[..rows]);
                    }
                    *t += t0.elapsed().as_secs_f64();
                }
            }
            let file = if lanes {
                format!(" (file layout {:.2} ms, {:.3}×)", tf / 5.0 * 1e3, ti / tf)
            } else {
                String::new()
            };
            println!(
                "{} {what}: I2_S {:.2} ms, Sherry {:.2} ms per 30 matrices: Sherry/I2_S speed {:.3}×{file}",
                isa.name(),
                ti / 5.0 * 1e3,
                ts / 5.0 * 1e3,
                ti / ts
            );
        }
        let (mut ti, mut ts) = (0.0, 0.0);
        for _ in 0..3 {
            let t0 = Instant::now();
            let w = TernaryView::new(rows, cols, &i2[0]).unwrap();
            ternary::gemm_with(isa, w, &q, &acts, 1.0, &mut out);
            ti += t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            sherry::gemm_with(isa, view(0, lanes), &q, &acts, 1.0, &mut out);
            ts += t0.elapsed().as_secs_f64();
        }
        let macs = (rows * cols * 128) as f64 * 3.0 / 1e9;
        println!(
            "{} prefill GEMM (128 tokens): I2_S {:.1} GMAC/s, Sherry {:.1} GMAC/s: {:.3}×",
            isa.name(),
            macs / ti,
            macs / ts,
            ti / ts
        );
    }
}
