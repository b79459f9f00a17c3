//! Prefill attention on the 2B-4T shape (20 query heads, 5 KV heads of 128): `rows` new
//! rows after `depth` cached ones, one layer:
//! `cargo run --release -p onebit-kernels --example attn_prefill [threads] [rows] [depth] [f16|q8_0|f32]`.
//! Prints milliseconds per call and GFLOP/s (QKᵀ and PV, causal).

use onebit_kernels::attention::{attention, AttnShape, KvBuf, KvFormat, Segment};
use onebit_kernels::parallel;
use onebit_kernels::ternary::Isa;
use std::time::Instant;

fn main() {
    let arg = |i: usize| std::env::args().nth(i);
    let threads: usize = arg(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let rows: usize = arg(2).and_then(|s| s.parse().ok()).unwrap_or(512);
    let depth: usize = arg(3).and_then(|s| s.parse().ok()).unwrap_or(3584);
    let format: KvFormat = arg(4)
        .map(|s| s.parse().expect("f16, q8_0 or f32"))
        .unwrap_or(KvFormat::F16);
    parallel::init_threads(threads);
    let shape = AttnShape {
        n_heads: 20,
        n_kv_heads: 5,
        head_dim: 128,
    };
    let kv_dim = shape.kv().kv_dim();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let total = depth + rows;
    let mut kv = [
        KvBuf::new(format, shape.kv(), total),
        KvBuf::new(format, shape.kv(), total),
    ];
    let mut row = vec![0f32; kv_dim];
    for buf in &mut kv {
        for p in 0..total {
            row.iter_mut().for_each(|x| *x = rnd());
            buf.rows_mut().store(shape.kv(), p, &row);
        }
    }
    let q: Vec<f32> = (0..rows * shape.n_heads * shape.head_dim)
        .map(|_| rnd())
        .collect();
    let mut out = vec![0f32; q.len()];
    // Keys seen, summed over the rows: depth + 1 … depth + rows.
    let pairs = (rows * depth + rows * (rows + 1) / 2) as f64;
    let flops = pairs * shape.n_heads as f64 * shape.head_dim as f64 * 4.0;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t0 = Instant::now();
        let seg = Segment {
            q: &q,
            first_pos: depth,
            keys: kv[0].rows(),
            values: kv[1].rows(),
            tree: None,
        };
        attention(Isa::best(), shape, &[seg], &mut out);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "{format} rows {rows} after {depth}, {threads} threads: {:.1} ms, {:.1} GFLOP/s",
        best * 1e3,
        flops / best / 1e9
    );
}
