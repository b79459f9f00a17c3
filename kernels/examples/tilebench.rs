//! The ternary GEMM on one matrix shape, by number of activation rows:
//! `cargo run --release -p onebit-kernels --example tilebench [threads] [rows] [cols]`.
//! `NS=1,8,224` picks the row counts, `COPIES=100` cycles through that many copies of the
//! matrix so that the weights come from DRAM. Prints GMAC/s, the best of three passes.

use onebit_kernels::act_quant::quantize_row;
use onebit_kernels::parallel;
use onebit_kernels::ternary::{gemm_with, padded_cols, row_bytes, Isa, TernaryView};
use std::time::Instant;
fn main() {
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (threads, rows, cols) = (arg(1, 1), arg(2, 256), arg(3, 2560));
    parallel::init_threads(threads);
    let copies: usize = std::env::var("COPIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let rb = row_bytes(cols);
    let data: Vec<u8> = (0..rows * rb * copies)
        .map(|i| ((i * 2654435761usize) >> 7) as u8 & 0b10_01_00_10)
        .collect();
    let k = padded_cols(cols);
    let ns: Vec<usize> = std::env::var("NS")
        .unwrap_or("1,2,4,8,16".into())
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    for n in ns {
        let mut qs = vec![0i8; n * k];
        let acts: Vec<_> = (0..n)
            .map(|t| {
                let x: Vec<f32> = (0..cols).map(|i| ((i + t) as f32 * 0.37).sin()).collect();
                quantize_row(&x, &mut qs[t * k..(t + 1) * k])
            })
            .collect();
        let mut out = vec![0f32; n * rows];
        let reps = (600_000_000 / (n * rows * cols)).max(copies);
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t0 = Instant::now();
            for i in 0..reps {
                let c = i % copies;
                let w = TernaryView::new(rows, cols, &data[c * rows * rb..(c + 1) * rows * rb])
                    .unwrap();
                gemm_with(Isa::best(), w, &qs, &acts, 1.0, &mut out);
            }
            best = best.min(t0.elapsed().as_secs_f64());
        }
        println!(
            "n={n:>2} {rows}x{cols}: {:.1} GMAC/s",
            (n * rows * cols * reps) as f64 / best / 1e9
        );
    }
}
