//! Attention on the 2B-4T shape (20 query heads, 5 KV heads of 128):
//! `cargo run --release -p onebit-kernels --example attn_bench [threads] [depth] [f16|q8_0|f32] [rows]`.
//! - rows 1 (the default): decode at `depth`, all 30 layers' caches so they come from DRAM as
//!   in a real decode step; prints milliseconds per token (30 layers) and the cache's read rate.
//! - rows > 1: a prefill chunk of `rows` new rows after `depth` cached ones, one layer; prints
//!   milliseconds per call and GFLOP/s (QKᵀ and PV over each row's causal prefix).

use onebit_kernels::attention::{attention, AttnShape, KvBuf, KvFormat, Segment};
use onebit_kernels::parallel;
use onebit_kernels::ternary::Isa;
use std::time::Instant;

fn main() {
    let arg = |i: usize| std::env::args().nth(i);
    let threads: usize = arg(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let depth: usize = arg(2).and_then(|s| s.parse().ok()).unwrap_or(4096);
    let format: KvFormat = arg(3)
        .map(|s| s.parse().expect("f16, q8_0 or f32"))
        .unwrap_or(KvFormat::F16);
    let rows: usize = arg(4).and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    parallel::init_threads(threads);
    let shape = AttnShape {
        n_heads: 20,
        n_kv_heads: 5,
        head_dim: 128,
    };
    let (layers, kv_dim) = (if rows == 1 { 30 } else { 1 }, shape.kv().kv_dim());
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let total = depth + rows;
    let mut caches = Vec::new();
    let mut row = vec![0f32; kv_dim];
    for _ in 0..layers {
        let mut kv = [
            KvBuf::new(format, shape.kv(), total),
            KvBuf::new(format, shape.kv(), total),
        ];
        for buf in &mut kv {
            for p in 0..total {
                row.iter_mut().for_each(|x| *x = rnd());
                buf.rows_mut().store(shape.kv(), p, &row);
            }
        }
        caches.push(kv);
    }
    let q: Vec<f32> = (0..rows * shape.n_heads * shape.head_dim)
        .map(|_| rnd())
        .collect();
    let mut out = vec![0f32; q.len()];
    let bytes = layers * 2 * total * format.row_bytes(shape.kv());
    // Keys seen, summed over the rows: depth + 1 … depth + rows.
    let pairs = (rows * depth + rows * (rows + 1) / 2) as f64;
    let flops = pairs * shape.n_heads as f64 * shape.head_dim as f64 * 4.0;
    for isa in [Isa::best(), Isa::Avx2, Isa::Scalar] {
        if !isa.available() {
            continue;
        }
        let mut best = f64::INFINITY;
        for _ in 0..if rows == 1 { 5 } else { 3 } {
            let t0 = Instant::now();
            for [k, v] in &caches {
                let seg = Segment {
                    q: &q,
                    first_pos: depth,
                    keys: k.rows(),
                    values: v.rows(),
                    tree: None,
                };
                attention(isa, shape, &[seg], &mut out);
            }
            best = best.min(t0.elapsed().as_secs_f64());
        }
        if rows == 1 {
            println!(
                "{isa:?} {format} depth {depth}, {threads} threads: {:.2} ms per token (30 layers), {:.1} GB/s of cache",
                best * 1e3,
                bytes as f64 / best / 1e9
            );
        } else {
            println!(
                "{isa:?} {format} {rows} rows after {depth}, {threads} threads: {:.1} ms, {:.1} GFLOP/s",
                best * 1e3,
                flops / best / 1e9
            );
        }
        if isa == Isa::Scalar || std::env::var_os("ALL").is_none() {
            break;
        }
    }
}
