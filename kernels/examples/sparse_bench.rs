//! Dense vs zero-skipping down_proj GEMV/GEMM:
//! `cargo run --release -p onebit-kernels --example sparse_bench [threads]`.
//!
//! `COPIES` matrices of 2560×6912 (default 30, one per layer of 2B-4T) so that a pass over
//! all of them streams the weights from memory (where the L3 is larger than 30 × 2 × 4.4 MB,
//! `COPIES=100` makes sure); activations with a given share of exact zeros at random
//! positions (no runs, the worst case for skipping). Prints µs per matrix, the sparse/dense
//! ratio per zero share, and where the sparse kernel starts to win. `REPS` passes (default
//! 25, best taken), `ISA=avx512|avx2|scalar` for one instruction set, `GEMM=0` to skip the
//! GEMM part (n = 2, 4, 8, 16 and 128 rows).

use onebit_kernels::act_quant::ActScale;
use onebit_kernels::parallel;
use onebit_kernels::ternary::colsparse::{gemm_sparse_with, gemv_sparse_with, ColumnTernary};
use onebit_kernels::ternary::{
    gemm_with, gemv_with, pack_row, padded_cols, row_bytes, Isa, TernaryView,
};
use std::time::Instant;

const ROWS: usize = 2560;
const COLS: usize = 6912;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One activation row with `zero_pct` % zeros; its `ActScale` (sum over the row).
fn activations(zero_pct: u64, rng: &mut Rng) -> (Vec<i8>, ActScale) {
    let mut q = vec![0i8; padded_cols(COLS)];
    for v in q.iter_mut().take(COLS) {
        let r = rng.next();
        if r % 1000 >= zero_pct * 10 {
            *v = ((r >> 16) as i8).max(1);
        }
    }
    let sum = q.iter().map(|&v| i32::from(v)).sum();
    (q, ActScale { scale: 3.0, sum })
}

/// Best of `reps` timings of `a` and of `b`, in seconds, taken in turns so that load from
/// other processes hits both alike.
fn best2(reps: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    (0..reps).fold((f64::INFINITY, f64::INFINITY), |(ta, tb), _| {
        (ta.min(time(&mut a)), tb.min(time(&mut b)))
    })
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    parallel::init_threads(threads);
    let copies: usize = std::env::var("COPIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    // Best of `REPS` passes, dense and sparse in turns: on a shared machine the quiet
    // moments give the numbers.
    let passes: usize = std::env::var("REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let rb = row_bytes(COLS);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut data = vec![0u8; copies * ROWS * rb];
    for row in data.chunks_exact_mut(rb) {
        pack_row(row, COLS, |_| (rng.next() % 3) as u8);
    }
    let views: Vec<TernaryView> = data
        .chunks_exact(ROWS * rb)
        .map(|d| TernaryView::new(ROWS, COLS, d).expect("matrix size"))
        .collect();
    let t = Instant::now();
    let cols: Vec<ColumnTernary> = views.iter().map(|v| ColumnTernary::from_rows(*v)).collect();
    let dt = t.elapsed().as_secs_f64();
    println!(
        "{copies} matrices {ROWS}x{COLS}, {threads} threads: from_rows {:.2} ms per matrix ({:.1} MB each)",
        dt * 1e3 / copies as f64,
        cols[0].bytes() as f64 / 1e6
    );

    let zeros = [0u64, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95];
    // `ISA=avx2` (or avx512, scalar) measures one instruction set (scalar only when asked
    // for: it is slow); `GEMM=0` skips the GEMM.
    let only = std::env::var("ISA").ok().and_then(|s| Isa::parse(&s));
    let isas: Vec<Isa> = match only {
        Some(isa) => vec![isa],
        None => vec![Isa::Avx512Vnni, Isa::Avx2],
    }
    .into_iter()
    .filter(|i| i.available())
    .collect();
    for &isa in &isas {
        println!(
            "\ngemv {} (µs per matrix, best of {passes} passes over {copies})",
            isa.name()
        );
        println!(
            "{:>6} {:>9} {:>9} {:>7}",
            "zeros", "dense", "sparse", "ratio"
        );
        let mut ratios = Vec::new();
        for &z in &zeros {
            let (q, act) = activations(z, &mut rng);
            let mut out_d = vec![0f32; ROWS];
            let mut out_s = vec![0f32; ROWS];
            let (dense, sparse) = best2(
                passes,
                || {
                    for v in &views {
                        gemv_with(isa, *v, &q, act, 1.0, &mut out_d);
                    }
                },
                || {
                    for w in &cols {
                        gemv_sparse_with(isa, w, &q, act, 1.0, &mut out_s);
                    }
                },
            );
            assert_eq!(out_d, out_s, "sparse and dense disagree");
            let (d, s) = (dense * 1e6 / copies as f64, sparse * 1e6 / copies as f64);
            println!("{:>5}% {d:>9.1} {s:>9.1} {:>7.2}", z, s / d);
            ratios.push((z, s / d));
        }
        match crossover(&ratios) {
            Some(z) => println!(
                "sparse wins above ~{z:.0}% zeros (nonzero share below ~{:.2})",
                1.0 - z / 100.0
            ),
            None => println!("sparse never wins in this sweep"),
        }
    }

    if std::env::var("GEMM").as_deref() == Ok("0") {
        return;
    }
    let k = padded_cols(COLS);
    // Decode batches and speculative passes (n ≤ 16, weights from memory: every copy) and
    // prefill (n = 128, weights in cache).
    for (n, isa) in [2usize, 4, 8, 16, 128]
        .into_iter()
        .flat_map(|n| isas.iter().map(move |&i| (n, i)))
    {
        let reps = if n <= 16 { copies } else { copies.min(4) };
        println!(
            "\ngemm n={n} {} (ms per matrix, best of 3 over {reps})",
            isa.name()
        );
        println!(
            "{:>6} {:>9} {:>9} {:>7}",
            "zeros", "dense", "sparse", "ratio"
        );
        let mut ratios = Vec::new();
        for &z in &[0u64, 50, 60, 70, 80, 90] {
            let mut q = vec![0i8; n * k];
            let mut acts = Vec::new();
            for t in 0..n {
                let (qt, a) = activations(z, &mut rng);
                q[t * k..(t + 1) * k].copy_from_slice(&qt);
                acts.push(a);
            }
            let mut out_d = vec![0f32; n * ROWS];
            let mut out_s = vec![0f32; n * ROWS];
            let (dense, sparse) = best2(
                3,
                || {
                    for v in &views[..reps] {
                        gemm_with(isa, *v, &q, &acts, 1.0, &mut out_d);
                    }
                },
                || {
                    for w in &cols[..reps] {
                        gemm_sparse_with(isa, w, &q, &acts, 1.0, &mut out_s);
                    }
                },
            );
            assert_eq!(out_d, out_s, "sparse and dense disagree");
            let (d, s) = (dense * 1e3 / reps as f64, sparse * 1e3 / reps as f64);
            println!("{:>5}% {d:>9.2} {s:>9.2} {:>7.2}", z, s / d);
            ratios.push((z, s / d));
        }
        match crossover(&ratios) {
            Some(z) => println!("sparse gemm wins above ~{z:.0}% zeros"),
            None => println!("sparse gemm never wins in this sweep"),
        }
    }
}

/// The zero share (%) where the sparse/dense ratio first drops below 1, interpolated.
fn crossover(ratios: &[(u64, f64)]) -> Option<f64> {
    if ratios.first()?.1 < 1.0 {
        return Some(ratios[0].0 as f64);
    }
    ratios.windows(2).find(|w| w[1].1 < 1.0).map(|w| {
        let ((z0, r0), (z1, r1)) = (w[0], w[1]);
        z0 as f64 + (z1 - z0) as f64 * (r0 - 1.0) / (r0 - r1)
    })
}
