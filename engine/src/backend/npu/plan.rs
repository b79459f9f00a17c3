//! How big a prompt chunk the NPU takes per launch, and which chunks it takes at all,
//! from the roofline model `onebit roofline` prints: a step costs the larger of its bytes
//! over the memory bandwidth and its int8 operations over the surface's peak rate.
//!
//! * **Chunk** (`m` of the NPU kernel): one launch over a projection reads its ternary
//!   weights once (`n·k/4` bytes) and does `2·m·n·k` operations, plus `m·(k + 4n)` bytes of
//!   activations and f32 outputs. Below the NPU's ridge point the launch is bandwidth-bound
//!   and more rows come for free; above it they cost compute time and only add buffer
//!   memory and latency. The chunk is the smallest multiple of the kernel's row tile at or
//!   above the ridge point, over all of the model's projections.
//! * **Split**: the NPU takes a chunk of `n` rows when its time for them (in chunks, each
//!   launch padded to `m` rows, plus reading and writing the chunk's KV cache once more to
//!   hand it to the decode surface) is no more than the decode surface's own time for the
//!   same rows. Fewer rows stay on the decode surface, and one row (decode) always does.
//!
//! The rates are the published peaks of Strix Halo (Ryzen AI Max+ 395) scaled to what
//! onebit's kernels can use of them; an owner who measured better numbers passes a
//! [`Machine`] of their own. Every figure is a projection, not a measurement.

use crate::model::Config;
use onebit_kernels::ternary::padded_cols;

/// Rows per AIE core tile of the kernel design (`kernels/npu/gemm_i8_ternary.py`): chunks
/// are whole tiles.
pub const TILE_M: usize = 32;
/// The largest chunk (its activation and output buffers must fit one udmabuf chunk).
pub const MAX_CHUNK: usize = 512;

/// The numbers the model needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Machine {
    /// Memory bandwidth every surface shares, GB/s (`onebit roofline`'s Strix Halo figure).
    pub bandwidth_gbs: f64,
    /// NPU int8 operations per second, in tera (XDNA2: 50 TOPS).
    pub npu_tops: f64,
    /// The decode surface's int8 rate on ternary weights, in tera.
    pub decode_tops: f64,
    /// Whether the KV cache must be copied to the decode surface after prefill (the iGPU
    /// session's shared buffer); the CPU decodes from the cache prefill wrote.
    pub kv_handoff: bool,
}

impl Machine {
    /// Strix Halo with the iGPU decoding: 212 GB/s; the Radeon 8060S's dot4 peak (40 CUs ×
    /// 64 lanes × 4 int8 MACs × 2 × 2.9 GHz ≈ 59 TOPS) divided by 4, because the shipped
    /// `ternary.c` spends about three ALU operations unpacking codes per dot4.
    pub const STRIX_HALO_IGPU: Machine = Machine {
        bandwidth_gbs: 212.0,
        npu_tops: 50.0,
        decode_tops: 59.0 / 4.0,
        kv_handoff: true,
    };
    /// Strix Halo with the CPU decoding: 16 Zen 5 cores × 2 AVX-512 VNNI ports × 64 int8
    /// MACs × 2 × ~4 GHz ≈ 16 TOPS, halved for the code unpacking of the ternary kernels.
    pub const STRIX_HALO_CPU: Machine = Machine {
        bandwidth_gbs: 212.0,
        npu_tops: 50.0,
        decode_tops: 8.0,
        kv_handoff: false,
    };
}

/// The outcome: see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefillPlan {
    /// Rows per NPU launch (the kernel artifacts' `m`).
    pub chunk: usize,
    /// The fewest rows of a step the NPU takes (at least 2: one row is decode).
    pub min_rows: usize,
}

/// `(k, n)` of every ternary projection of one layer: q, k, v, o, gate, up, down.
fn projections(c: &Config) -> [(usize, usize); 7] {
    let (h, f, q, kv) = (
        padded_cols(c.hidden_size),
        c.intermediate_size,
        c.q_dim(),
        c.kv_dim(),
    );
    let (hp, fp, qp) = (h, padded_cols(f), padded_cols(q));
    [
        (hp, q),
        (hp, kv),
        (hp, kv),
        (qp, c.hidden_size),
        (hp, f),
        (hp, f),
        (fp, c.hidden_size),
    ]
}

/// Seconds for `bytes` and `ops` at `tops` and the bandwidth.
fn roof(m: &Machine, bytes: f64, ops: f64, tops: f64) -> f64 {
    (bytes / (m.bandwidth_gbs * 1e9)).max(ops / (tops * 1e12))
}

/// One NPU launch per projection per layer over `rows` (padded) rows: seconds.
fn npu_pass(c: &Config, m: &Machine, rows: usize) -> f64 {
    let r = rows as f64;
    let per_layer: f64 = projections(c)
        .iter()
        .map(|&(k, n)| {
            let (k, n) = (k as f64, n as f64);
            roof(
                m,
                n * k / 4.0 + r * (k + 4.0 * n + 8.0),
                2.0 * r * n * k,
                m.npu_tops,
            )
        })
        .sum();
    per_layer * c.n_layers as f64
}

/// The decode surface's time for `rows` rows in one pass over the weights: seconds.
fn decode_pass(c: &Config, m: &Machine, rows: usize) -> f64 {
    let r = rows as f64;
    let (bytes, ops) = projections(c).iter().fold((0.0, 0.0), |(b, o), &(k, n)| {
        let (k, n) = (k as f64, n as f64);
        (b + n * k / 4.0, o + 2.0 * r * n * k)
    });
    let l = c.n_layers as f64;
    roof(m, bytes * l, ops * l, m.decode_tops)
}

/// Seconds the NPU needs for `rows` rows in launches of `chunk`, with the KV handoff.
pub fn npu_seconds(c: &Config, m: &Machine, chunk: usize, rows: usize) -> f64 {
    let full = rows / chunk;
    let rest = rows % chunk;
    let mut t = full as f64 * npu_pass(c, m, chunk);
    if rest > 0 {
        t += npu_pass(c, m, chunk); // the last launch is padded to the kernel's m
    }
    if m.kv_handoff {
        let kv = (c.n_layers * 2 * c.kv_dim() * 4 * rows) as f64;
        t += 2.0 * kv / (m.bandwidth_gbs * 1e9);
    }
    t
}

/// The chunk size and the NPU/decode split for `c` on `m` (see the module docs).
pub fn plan(c: &Config, m: &Machine) -> PrefillPlan {
    // Ridge: the smallest whole-tile m at which every projection's launch is compute-bound.
    let compute_bound = |rows: usize| {
        projections(c).iter().all(|&(k, n)| {
            let (k, n, r) = (k as f64, n as f64, rows as f64);
            let bytes = n * k / 4.0 + r * (k + 4.0 * n + 8.0);
            bytes / (m.bandwidth_gbs * 1e9) <= 2.0 * r * n * k / (m.npu_tops * 1e12)
        })
    };
    let chunk = (1..=MAX_CHUNK / TILE_M)
        .map(|t| t * TILE_M)
        .find(|&rows| compute_bound(rows))
        .unwrap_or(MAX_CHUNK);
    let min_rows = (2..=16 * MAX_CHUNK)
        .find(|&rows| npu_seconds(c, m, chunk, rows) <= decode_pass(c, m, rows))
        .unwrap_or(usize::MAX);
    PrefillPlan { chunk, min_rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitnet_2b() -> Config {
        crate::synth::Preset::parse("2b4t").unwrap().config()
    }

    #[test]
    fn the_2b_chunk_sits_at_the_npu_ridge_point() {
        let c = bitnet_2b();
        let p = plan(&c, &Machine::STRIX_HALO_IGPU);
        assert_eq!(p.chunk % TILE_M, 0);
        let m = Machine::STRIX_HALO_IGPU;
        // One tile fewer would leave some projection bandwidth-bound: the chunk is minimal.
        if p.chunk > TILE_M {
            let smaller = p.chunk - TILE_M;
            let bw_bound = projections(&c).iter().any(|&(k, n)| {
                let (k, n, r) = (k as f64, n as f64, smaller as f64);
                (n * k / 4.0 + r * (k + 4.0 * n + 8.0)) / (m.bandwidth_gbs * 1e9)
                    > 2.0 * r * n * k / (m.npu_tops * 1e12)
            });
            assert!(bw_bound, "{p:?}");
        }
    }

    #[test]
    fn the_split_is_where_the_npu_stops_losing() {
        let c = bitnet_2b();
        for m in [Machine::STRIX_HALO_IGPU, Machine::STRIX_HALO_CPU] {
            let p = plan(&c, &m);
            eprintln!("2B-4T on {m:?}: {p:?}");
            assert!(p.min_rows >= 2, "{p:?}");
            assert!(p.min_rows < usize::MAX, "{m:?}: the NPU never pays: {p:?}");
            let at = npu_seconds(&c, &m, p.chunk, p.min_rows);
            assert!(at <= decode_pass(&c, &m, p.min_rows));
            if p.min_rows > 2 {
                let before = p.min_rows - 1;
                assert!(npu_seconds(&c, &m, p.chunk, before) > decode_pass(&c, &m, before));
            }
        }
        // A faster decode surface keeps more rows to itself.
        let igpu = plan(&c, &Machine::STRIX_HALO_IGPU);
        let cpu = plan(&c, &Machine::STRIX_HALO_CPU);
        assert!(igpu.min_rows >= cpu.min_rows, "{igpu:?} vs {cpu:?}");
    }
}
