//! Kernel microbenchmarks on the 2B-4T shapes: `cargo run --release -p onebit-kernels --example kbench [threads]`.
//! Prints GB/s of weight bytes for the decode GEMV and GMAC/s for the prefill GEMM, per ISA.

use onebit_kernels::act_quant::quantize_row;
use onebit_kernels::parallel;
use onebit_kernels::ternary::{
    self, gemm_with, gemv_with, padded_cols, row_bytes, Isa, TernaryView,
};
use std::time::Instant;

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    parallel::init_threads(threads);
    // All 30 layers' worth of gate-sized matrices so the weights come from DRAM, not L3.
    let (rows, cols) = (6912, 2560);
    let copies: usize = std::env::var("COPIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rb = row_bytes(cols);
    let mut data = vec![0u8; rows * rb * copies];
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    for b in data.iter_mut() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        // codes 0..2 in each field
        let f = |x: u64| (x % 3) as u8;
        *b = f(s) << 6 | f(s >> 8) << 4 | f(s >> 16) << 2 | f(s >> 24);
    }
    for rep in 0..3 {
        let t0 = Instant::now();
        let chunk = data.len() / threads / 64 * 64;
        let v = std::sync::atomic::AtomicU64::new(0);
        parallel::broadcast(|i| {
            v.fetch_xor(
                read_bw(&data[i * chunk..(i + 1) * chunk]),
                std::sync::atomic::Ordering::Relaxed,
            );
        });
        let dt = t0.elapsed().as_secs_f64();
        println!(
            "read bw rep {rep}: {:.1} GB/s ({})",
            (chunk * threads) as f64 / dt / 1e9,
            v.into_inner() & 1
        );
    }
    if std::env::var("IDLE").is_ok() {
        idle_test(&data, rows, cols, threads);
        return;
    }
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let k = padded_cols(cols);
    let mut q = vec![0i8; k];
    let act = quantize_row(&x, &mut q);
    let mut out = vec![0f32; rows];
    for isa in Isa::ALL
        .into_iter()
        .filter(|i| i.available() && *i != Isa::Scalar)
    {
        for rep in 0..3 {
            let t0 = Instant::now();
            for c in 0..copies {
                let w = TernaryView::new(rows, cols, &data[c * rows * rb..(c + 1) * rows * rb])
                    .unwrap();
                gemv_with(isa, w, &q, act, 1.0, &mut out);
            }
            let dt = t0.elapsed().as_secs_f64();
            println!(
                "gemv {:>12} rep {rep}: {:.1} GB/s ({:.2} ms per {}x{})",
                isa.name(),
                (data.len() as f64) / dt / 1e9,
                dt * 1e3 / copies as f64,
                rows,
                cols
            );
        }
    }
    // Decode batches and speculative passes: 1–16 activation rows against weights from DRAM.
    for n in [1usize, 2, 4, 8, 16] {
        let mut qs = vec![0i8; n * k];
        let acts: Vec<_> = (0..n)
            .map(|t| {
                let x: Vec<f32> = (0..cols).map(|i| ((i + t) as f32 * 0.37).sin()).collect();
                quantize_row(&x, &mut qs[t * k..(t + 1) * k])
            })
            .collect();
        let mut out = vec![0f32; n * rows];
        for rep in 0..2 {
            let t0 = Instant::now();
            for c in 0..copies {
                let w = TernaryView::new(rows, cols, &data[c * rows * rb..(c + 1) * rows * rb])
                    .unwrap();
                gemm_with(Isa::best(), w, &qs, &acts, 1.0, &mut out);
            }
            let dt = t0.elapsed().as_secs_f64();
            println!(
                "batch n={n:>2} rep {rep}: {:.1} GB/s, {:.1} GMAC/s ({:.2} ms per {}x{}, {:.2}x one row's bytes time)",
                (data.len() as f64) / dt / 1e9,
                (n * rows * cols * copies) as f64 / dt / 1e9,
                dt * 1e3 / copies as f64,
                rows,
                cols,
                dt / copies as f64 / (rows * rb) as f64 * 20e9,
            );
        }
    }
    // Prefill: 128 tokens against one matrix (weights re-read from cache per tile).
    let n = 128;
    let mut qs = vec![0i8; n * k];
    let mut acts = Vec::new();
    for t in 0..n {
        let x: Vec<f32> = (0..cols).map(|i| ((i + t) as f32 * 0.37).sin()).collect();
        acts.push(quantize_row(&x, &mut qs[t * k..(t + 1) * k]));
    }
    let mut out = vec![0f32; n * rows];
    for isa in Isa::ALL
        .into_iter()
        .filter(|i| i.available() && *i != Isa::Scalar)
    {
        for rep in 0..2 {
            let t0 = Instant::now();
            let reps = 4;
            for c in 0..reps {
                let w = TernaryView::new(rows, cols, &data[c * rows * rb..(c + 1) * rows * rb])
                    .unwrap();
                gemm_with(isa, w, &qs, &acts, 1.0, &mut out);
            }
            let dt = t0.elapsed().as_secs_f64() / reps as f64;
            println!(
                "gemm {:>12} rep {rep}: {:.1} GMAC/s ({:.2} ms per 128x{}x{})",
                isa.name(),
                (n * rows * cols) as f64 / dt / 1e9,
                dt * 1e3,
                rows,
                cols
            );
        }
    }
    let _ = ternary::BLOCK_BYTES;
    // The F16 tied head of 2B-4T: 128256 x 2560.
    let (vr, vc) = (128_256, 2560);
    let head: Vec<u8> = (0..vr * vc)
        .flat_map(|i| {
            half::f16::from_f32(((i % 977) as f32 - 488.0) * 1e-4)
                .to_bits()
                .to_le_bytes()
        })
        .collect();
    let view =
        onebit_kernels::embd::EmbdView::new(onebit_kernels::embd::EmbdType::F16, vr, vc, &head)
            .unwrap();
    let hv: Vec<f32> = (0..vc).map(|i| (i as f32 * 0.1).sin()).collect();
    let mut logits = vec![0f32; vr];
    for rep in 0..3 {
        let t0 = Instant::now();
        view.matvec(&hv, &mut logits);
        let dt = t0.elapsed().as_secs_f64();
        println!(
            "f16 head rep {rep}: {:.1} GB/s ({:.2} ms)",
            head.len() as f64 / dt / 1e9,
            dt * 1e3
        );
    }
}

#[allow(dead_code)]
pub fn read_bw(buf: &[u8]) -> u64 {
    let mut acc = [0u64; 8];
    for c in buf.chunks_exact(64) {
        for (a, w) in acc.iter_mut().zip(c.chunks_exact(8)) {
            *a ^= u64::from_le_bytes(w.try_into().unwrap());
        }
    }
    acc.iter().fold(0, |a, b| a ^ b)
}

/// CPU time the process burns while the pool idles between "tokens": 50 GEMVs, each
/// followed by 10 ms of sleep on the calling thread.
fn idle_test(data: &[u8], rows: usize, cols: usize, threads: usize) {
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut q = vec![0i8; padded_cols(cols)];
    let act = quantize_row(&x, &mut q);
    let mut out = vec![0f32; rows];
    let w = TernaryView::new(rows, cols, &data[..rows * row_bytes(cols)]).unwrap();
    let cpu = || {
        let s = std::fs::read_to_string("/proc/self/stat").unwrap();
        let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    };
    let (c0, t0) = (cpu(), Instant::now());
    let mut busy = 0.0;
    for _ in 0..50 {
        let t = Instant::now();
        gemv_with(Isa::best(), w, &q, act, 1.0, &mut out);
        busy += t.elapsed().as_secs_f64();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (cpu_s, wall) = (cpu() - c0, t0.elapsed().as_secs_f64());
    println!(
        "idle test, {threads} threads: wall {wall:.2} s, compute {busy:.3} s, CPU {cpu_s:.2} s → {:.1}% of a core burnt beyond the compute while idle",
        100.0 * (cpu_s - busy * threads as f64).max(0.0) / wall
    );
}
