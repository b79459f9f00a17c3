//! LM-head microbenchmark on the 2B-4T head (128256 × 2560):
//! `cargo run --release -p onebit-kernels --example head_bench [threads] [reps] [batch]`.
//! Prints ms per matvec and GB/s of head bytes for F16, Q8_0 and Q6_K, and for the
//! quantized types also the former float path (dequantize each row, f32 dot) they replace.
//! Then, for a decode step of n = 1, 2, 4, 8, 16 rows, ms per step of n matvecs against one
//! `matmul` (and for F16 the int8-screened argmax, n one-row calls against one batch, and
//! the screen's top-40 against its top-1 at n = 1 and 8: what a sampler adds).
//! With `batch` as third argument only the batch part runs.

use half::f16;
use onebit_kernels::embd::{EmbdType, EmbdView};
use onebit_kernels::screen::{Int8Head, TopK};
use onebit_kernels::{embd_quant, float, parallel};
use std::time::Instant;

const ROWS: usize = 128_256;
const COLS: usize = 2560;

/// xorshift64: fast random bytes (timing does not depend on the values).
fn fill(data: &mut [u8], mut s: u64) {
    for c in data.chunks_mut(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        c.copy_from_slice(&s.to_le_bytes()[..c.len()]);
    }
}

/// A head of `kind` with random values and sane scales (f16 values in ±0.06, scales
/// around what 2B-4T's embeddings quantize to).
fn head(kind: EmbdType) -> Vec<u8> {
    let rb = kind
        .row_bytes(COLS)
        .expect("2560 is a multiple of every block");
    let mut data = vec![0u8; ROWS * rb];
    fill(&mut data, 0x9E37_79B9_7F4A_7C15 ^ rb as u64);
    let scale = |v: f32| f16::from_f32(v).to_bits().to_le_bytes();
    match kind {
        EmbdType::F16 => data.chunks_exact_mut(2).for_each(|c| {
            let x = f32::from(c[0] as i8) / 2000.0;
            c.copy_from_slice(&scale(x));
        }),
        EmbdType::Q8_0 => data
            .chunks_exact_mut(34)
            .for_each(|b| b[..2].copy_from_slice(&scale(4e-4))),
        EmbdType::Q6K => data.chunks_exact_mut(210).for_each(|b| {
            b[192..208].iter_mut().for_each(|s| *s &= 0x7F);
            b[208..].copy_from_slice(&scale(2e-5));
        }),
        _ => unreachable!("benchmarked types only"),
    }
    data
}

/// The float path Q8_0/Q6_K heads took before the integer kernels: dequantize, 16-lane dot.
fn float_path(v: &EmbdView<'_>, h: &[f32], out: &mut [f32]) {
    parallel::for_rows(out, 256, |first, chunk| {
        let mut tmp = vec![0f32; v.cols];
        for (i, o) in chunk.iter_mut().enumerate() {
            v.row_to_f32(first + i, &mut tmp);
            *o = float::dot_f32_lanes(&tmp, h);
        }
    });
}

/// Best and median ms of `reps` calls after one warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[0], t[reps / 2])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let reps: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .max(1);
    let batch_only = args.next().as_deref() == Some("batch");
    parallel::init_threads(threads);
    println!(
        "LM head {ROWS} x {COLS}, {threads} threads, integer kernels: {}, CPU: {}",
        embd_quant::isa().name(),
        cpu_name()
    );
    if !batch_only {
        single_row(reps);
    }
    batched(reps);
}

/// The CPU's model name from /proc/cpuinfo.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|n| n.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Hidden rows for a batch of `n` (different per row, as in a real decode step).
fn hidden_rows(n: usize) -> Vec<f32> {
    (0..n * COLS)
        .map(|i| (i as f32 * 0.37 + (i / COLS) as f32).sin() * 2.0)
        .collect()
}

/// A decode step of n rows: n one-row calls against one batched call, per head type.
fn batched(reps: usize) {
    let reps = reps.clamp(1, 5);
    println!("decode step of n rows: n x matvec vs one matmul (best of {reps}, ms per step)");
    for kind in [EmbdType::F16, EmbdType::Q8_0, EmbdType::Q6K] {
        let data = head(kind);
        let v = EmbdView::new(kind, ROWS, COLS, &data).expect("head shape");
        for n in [1, 2, 4, 8, 16] {
            let hs = hidden_rows(n);
            let mut out = vec![0f32; n * ROWS];
            let (rows, _) = time(reps, || {
                for (h, o) in hs.chunks_exact(COLS).zip(out.chunks_exact_mut(ROWS)) {
                    v.matvec(h, o);
                }
            });
            let (gemm, _) = time(reps, || v.matmul(&hs, &mut out));
            println!(
                "{:5} n={n:2}  {n:2} x matvec {rows:8.2} ms  matmul {gemm:8.2} ms  ({:.2}x)",
                kind.name(),
                rows / gemm
            );
            std::hint::black_box(&out);
        }
        if kind == EmbdType::F16 && !screen_has_kernel() {
            println!("F16 screened argmax: skipped, the int8 screen's kernels need AVX2 or AVX-512F (its scalar reference is not worth timing)");
        } else if kind == EmbdType::F16 {
            let screen = Int8Head::new(&v).expect("an F16 head");
            for n in [1, 2, 4, 8, 16] {
                let hs = hidden_rows(n);
                let (rows, _) = time(reps, || {
                    for h in hs.chunks_exact(COLS) {
                        std::hint::black_box(screen.argmax(&v, h));
                    }
                });
                let (batch, _) = time(reps, || {
                    std::hint::black_box(screen.argmax_batch(&v, &hs));
                });
                println!(
                    "F16 screened argmax n={n:2}  {n:2} x argmax {rows:8.2} ms  argmax_batch {batch:8.2} ms  ({:.2}x)",
                    rows / batch
                );
            }
            // A sampler's top-k (llama.cpp's default 40) against greedy's k = 1, per batch
            // size: what sampling adds to the screen.
            for n in [1, 8] {
                let hs = hidden_rows(n);
                let mut line = format!("F16 screened top-k n={n:2}");
                for k in [1, 40] {
                    let wishes = vec![TopK { k, include: &[] }; n];
                    let mut kept = 0;
                    let (ms, _) = time(reps, || {
                        let sets = screen.top_k_batch(&v, &hs, &wishes);
                        kept = sets.iter().map(Vec::len).sum::<usize>();
                        std::hint::black_box(sets);
                    });
                    line += &format!("  k={k:2} {ms:8.2} ms ({kept} rows kept)");
                }
                println!("{line}");
            }
        }
    }
}

fn screen_has_kernel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") || std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One row at a time: the head types and the paths they replaced.
fn single_row(reps: usize) {
    let h: Vec<f32> = (0..COLS).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
    let mut out = vec![0f32; ROWS];
    for kind in [EmbdType::F16, EmbdType::Q8_0, EmbdType::Q6K] {
        let data = head(kind);
        let v = EmbdView::new(kind, ROWS, COLS, &data).expect("head shape");
        let gb = data.len() as f64 / 1e9;
        let report = |what: &str, (best, med): (f64, f64)| {
            println!(
                "{:5} {what:28} {best:7.2} ms best {med:7.2} ms median  {:6.1} GB/s  ({:.0} MB)",
                kind.name(),
                gb / (best / 1e3),
                gb * 1e3
            );
        };
        report("matvec", time(reps, || v.matvec(&h, &mut out)));
        if kind != EmbdType::F16 {
            report(
                "former float path",
                time(reps.min(3), || float_path(&v, &h, &mut out)),
            );
        }
        // Cache-resident rows: the kernels' compute rate without DRAM (one thread).
        let hot = 256;
        let rb = data.len() / ROWS;
        let small = EmbdView::new(kind, hot, COLS, &data[..hot * rb]).expect("hot rows");
        let mut o = vec![0f32; hot];
        let t0 = Instant::now();
        let n = 400;
        for _ in 0..n {
            small.matvec(&h, &mut o);
        }
        let per_row = t0.elapsed().as_secs_f64() / (n * hot) as f64;
        println!(
            "{:5} {:28} {:7.1} ns/row ({:.1} ms for the whole head, {:.1} GB/s)",
            kind.name(),
            "cache-resident rows",
            per_row * 1e9,
            per_row * ROWS as f64 * 1e3,
            rb as f64 / per_row / 1e9
        );
        std::hint::black_box(&out);
    }
}
