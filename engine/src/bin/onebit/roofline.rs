//! `onebit roofline`: decode and prefill ceilings from the bytes one token reads and a
//! memory bandwidth (measured here, or given, e.g. Strix Halo's 212 GB/s).
//!
//! Decode reads every ternary weight, the whole tied LM head (the F16 embedding: 657 MB
//! for 2B-4T, more than all ternary weights) and the KV cache of every earlier position.
//! Prefill of n tokens reads the weights once for all n (only the last token needs logits).

use crate::bandwidth;
use crate::common::CliResult;
use onebit_engine::forward::{KvFormat, Session};
use onebit_engine::model::{Config, Model};
use onebit_engine::synth::Preset;
use onebit_kernels::parallel;
use onebit_kernels::ternary::row_bytes;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file, HF directory or pulled `OWNER/NAME[:FILE]` whose bytes to count.
    #[arg(short = 'm', long = "model", conflicts_with = "preset", value_parser = onebit_engine::hub::model_arg)]
    pub model: Option<PathBuf>,
    /// How a GGUF file gets into memory: uring (io_uring O_DIRECT reads into a sealed
    /// memfd, falling back to read where refused), read (pread into the memfd) or mmap (the
    /// file's page cache, as mapped windows).
    #[arg(long = "load", default_value = "uring")]
    pub load: onebit_engine::format::LoadMethod,
    /// A model shape instead of a file (2b4t, small).
    #[arg(long, default_value = "2b4t")]
    pub preset: String,
    /// Memory bandwidth in GB/s; measured on this machine when absent.
    #[arg(long)]
    pub bandwidth: Option<f64>,
    /// Threads for the bandwidth measurement.
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Context lengths (KV positions already cached) to show.
    #[arg(long, value_delimiter = ',', default_value = "0,1024,4096")]
    pub ctx: Vec<usize>,
    /// Prompt length for the prefill ceiling.
    #[arg(short = 'p', long = "prompt", default_value_t = 128)]
    pub prompt: usize,
    /// Strix Halo projection: the iGPU's read bandwidth in GB/s (measured on gfx1151 by
    /// others: 212–221).
    #[arg(long, default_value_t = 212.0)]
    pub igpu_bandwidth: f64,
    /// Strix Halo projection: the NPU's int8 throughput in TOPS (XDNA2: 50).
    #[arg(long, default_value_t = 50.0)]
    pub npu_tops: f64,
}

/// Bytes one forward step reads, by part.
#[derive(Clone, Debug)]
pub struct Budget {
    pub label: String,
    /// Every ternary projection, down_proj included.
    pub ternary: f64,
    /// down_proj's part of `ternary`, in the layout the forward pass reads it from.
    pub down: f64,
    pub head: f64,
    /// Norm weights and everything else read once per step.
    pub other: f64,
    pub kv_per_pos: f64,
}

impl Budget {
    /// Bytes read to decode one token after `ctx` cached positions.
    pub fn decode_bytes(&self, ctx: usize) -> f64 {
        self.ternary + self.head + self.other + self.kv_per_pos * ctx as f64
    }

    /// Bytes read to prefill `n` tokens from an empty cache (weights once, the head once for
    /// the last token, the KV written and re-read within the batch).
    pub fn prefill_bytes(&self, n: usize) -> f64 {
        self.ternary + self.head + self.other + self.kv_per_pos * n as f64
    }

    /// The bytes a step reads when only `density` (0..=1) of down_proj's weight columns
    /// are read: the rest had input 0 (see `Model::use_sparse_down`).
    pub fn with_down_density(mut self, density: f64) -> Self {
        let skipped = self.down * (1.0 - density.clamp(0.0, 1.0));
        self.ternary -= skipped;
        self.down -= skipped;
        self
    }

    /// The bytes a step reads with a head of `bytes` instead (the int8-screened one).
    pub fn with_head(mut self, bytes: f64) -> Self {
        self.head = bytes;
        self
    }

    /// What a loaded model reads in onebit: its kernel layout (down_proj column-major while
    /// the sparse down_proj is on), its head type, its KV cache format.
    pub fn of_model(model: &Model, kv: KvFormat) -> Self {
        let down_rows: usize = model
            .layers
            .iter()
            .map(|l| l.down_proj.kernel_byte_len())
            .sum();
        let down: usize = model
            .layers
            .iter()
            .map(|l| {
                l.down_proj
                    .columns
                    .as_ref()
                    .map_or(l.down_proj.kernel_byte_len(), |c| c.bytes())
            })
            .sum();
        let ternary = model.ternary_bytes() - down_rows + down;
        let norms: usize = model
            .layers
            .iter()
            .map(|l| {
                l.input_layernorm.len()
                    + l.attn_sub_norm.as_ref().map_or(0, Vec::len)
                    + l.post_attention_layernorm.len()
                    + l.ffn_sub_norm.as_ref().map_or(0, Vec::len)
            })
            .sum::<usize>()
            + model.norm.len();
        let kv_per_pos = Session::kv_bytes_per_token(model, kv) as f64;
        Self {
            label: format!(
                "this model: {} + {} head, {kv} KV",
                model.provenance.ternary_type,
                model.head().kind.name()
            ),
            ternary: ternary as f64,
            down: down as f64,
            head: model.head().data.len() as f64,
            other: (norms * 4) as f64,
            kv_per_pos,
        }
    }

    /// A shape with `bpw` bits per ternary weight, a head of `head_bpe` bytes per element and
    /// a KV cache of `kv_bpe` bytes per element.
    pub fn of_config(c: &Config, label: &str, bpw: f64, head_bpe: f64, kv_bpe: f64) -> Self {
        let weights = ternary_weights(c) as f64;
        let down = (c.n_layers * c.hidden_size * c.intermediate_size) as f64;
        Self {
            label: label.into(),
            ternary: weights * bpw / 8.0,
            down: down * bpw / 8.0,
            head: (c.vocab_size * c.hidden_size) as f64 * head_bpe,
            other: ((c.hidden_size * 3 + c.intermediate_size) * c.n_layers * 4 + c.hidden_size * 4)
                as f64,
            kv_per_pos: (c.n_layers * 2 * c.kv_dim()) as f64 * kv_bpe,
        }
    }
}

/// Ternary weights of all projections.
pub fn ternary_weights(c: &Config) -> usize {
    let (h, f, q, kv) = (c.hidden_size, c.intermediate_size, c.q_dim(), c.kv_dim());
    c.n_layers * (q * h + 2 * kv * h + h * q + 3 * f * h)
}

/// I2_S bytes in onebit's kernel layout (rows padded to 128 elements).
pub fn i2s_bytes(c: &Config) -> usize {
    let (h, f, q, kv) = (c.hidden_size, c.intermediate_size, c.q_dim(), c.kv_dim());
    c.n_layers
        * ((q + 2 * kv) * row_bytes(h) + h * row_bytes(q) + 2 * f * row_bytes(h) + h * row_bytes(f))
}

/// Tokens per second the bandwidth allows for `bytes` per token.
pub fn ceiling(bandwidth_gbs: f64, bytes: f64) -> f64 {
    bandwidth_gbs * 1e9 / bytes
}

pub fn main(a: Args) -> CliResult {
    let (config, own) = match &a.model {
        Some(path) => {
            let o = crate::common::load_options(a.load);
            let (model, _) = onebit_engine::format::load_with(path, &o)?;
            let b = Budget::of_model(&model, KvFormat::default());
            (model.config.clone(), Some(b))
        }
        None => {
            let p = Preset::parse(&a.preset)
                .ok_or_else(|| format!("unknown preset {:?}: use 2b4t or small", a.preset))?;
            (p.config(), None)
        }
    };
    let (bw, how) = match a.bandwidth {
        Some(b) if b > 0.0 && b.is_finite() => (b, "given".to_string()),
        Some(b) => return Err(format!("--bandwidth {b} must be a positive number of GB/s").into()),
        None => {
            if let Some(t) = a.threads {
                parallel::init_threads(t.max(1));
            }
            let t = parallel::threads();
            eprintln!(
                "measuring read bandwidth with {t} threads over {} MiB ...",
                bandwidth::buffer_bytes() >> 20
            );
            let p = bandwidth::measure(5);
            (
                p.best_gbs,
                format!("measured here, {t} threads, best of {} GB/s", p.describe()),
            )
        }
    };
    let c = &config;
    let mut rows = Vec::new();
    if let Some(b) = own {
        rows.push(b);
    }
    let i2s = i2s_bytes(c) as f64 * 8.0 / ternary_weights(c) as f64;
    rows.push(Budget::of_config(
        c,
        "I2_S (2 bpw) + F16 head, f32 KV (onebit --kv f32)",
        i2s,
        2.0,
        4.0,
    ));
    rows.push(Budget::of_config(
        c,
        "I2_S + F16 head, f16 KV (bitnet.cpp, onebit default)",
        i2s,
        2.0,
        2.0,
    ));
    rows.push(Budget::of_config(
        c,
        "TQ2_0 (2.0625 bpw) + F16 head, f16 KV (llama.cpp)",
        2.0625,
        2.0,
        2.0,
    ));
    rows.push(Budget::of_config(
        c,
        "I2_S + int8-screened F16 head (greedy, exact)",
        i2s,
        1.0,
        4.0,
    ));
    rows.push(Budget::of_config(
        c,
        "I2_S + Q8_0 head",
        i2s,
        34.0 / 32.0,
        4.0,
    ));
    rows.push(Budget::of_config(
        c,
        "I2_S + Q6_K head",
        i2s,
        210.0 / 256.0,
        4.0,
    ));
    rows.push(Budget::of_config(
        c,
        "TQ1_0 (1.6875 bpw) + F16 head",
        1.6875,
        2.0,
        4.0,
    ));
    rows.push(Budget::of_config(
        c,
        "Sherry 1.25 bpw + Q6_K head",
        1.25,
        210.0 / 256.0,
        4.0,
    ));

    println!(
        "# Roofline: {} layers, hidden {}, ffn {}, vocab {}",
        c.n_layers, c.hidden_size, c.intermediate_size, c.vocab_size
    );
    println!("\nbandwidth: **{bw:.1} GB/s** ({how})\n");
    print!("| layout | ternary MB | head MB | KV KB/pos |");
    for ctx in &a.ctx {
        print!(" decode t/s @{ctx} |");
    }
    println!(" pp{} t/s (bytes) |", a.prompt);
    print!("|---|---:|---:|---:|");
    for _ in &a.ctx {
        print!("---:|");
    }
    println!("---:|");
    for b in &rows {
        print!(
            "| {} | {:.1} | {:.1} | {:.1} |",
            b.label,
            b.ternary / 1e6,
            b.head / 1e6,
            b.kv_per_pos / 1e3
        );
        for ctx in &a.ctx {
            print!(" {:.1} |", ceiling(bw, b.decode_bytes(*ctx)));
        }
        println!(
            " {:.0} |",
            ceiling(bw, b.prefill_bytes(a.prompt)) * a.prompt as f64
        );
    }
    let base = Budget::of_config(c, "", i2s, 2.0, 2.0);
    println!("\nThe seed's table, corrected (2B-4T arithmetic, §2.11 of seed-project.md):");
    println!(
        "- the projection counted 0.63 GB/token and left out the tied head; the ternary weights are {:.2} GB and the \
         F16 head read every token adds {:.2} GB, {:.2} GB in all: at 256 GB/s {:.0} → {:.0} tok/s; at {bw:.1} GB/s \
         {:.1} → {:.1} tok/s.",
        base.ternary / 1e9,
        base.head / 1e9,
        (base.ternary + base.head) / 1e9,
        ceiling(256.0, 0.63e9),
        ceiling(256.0, base.ternary + base.head),
        ceiling(bw, 0.63e9),
        ceiling(bw, base.ternary + base.head)
    );
    println!(
        "- KV cache is {:.1} KB per position in f16 ({:.1} MB at 1024), not GBs; an f32 cache doubles it ({:.1} KB).",
        base.kv_per_pos / 1e3,
        base.kv_per_pos * 1024.0 / 1e6,
        base.kv_per_pos * 2.0 / 1e3
    );
    println!(
        "- prefill is not bandwidth-bound: {} tokens share one read of the weights, so its ceiling above is {}× decode's; \
         the kernels' integer throughput limits it (see `onebit bench`).",
        a.prompt, a.prompt
    );
    // The iGPU's layout today: I2_S rows, the F16 head, an f32 KV cache.
    let igpu = Budget::of_config(c, "", i2s, 2.0, 4.0);
    surface_projection(c, &igpu, a.igpu_bandwidth, a.npu_tops, &a.ctx);
    Ok(())
}

/// The split `--surface npu+igpu` implies on a Strix Halo: prefill on the NPU, bound by its
/// integer throughput once a chunk is long enough to hide the read of the weights; decode on
/// the iGPU, bound by the bytes each token reads. A projection from published figures, not a
/// measurement.
fn surface_projection(c: &Config, b: &Budget, igpu_gbs: f64, npu_tops: f64, ctxs: &[usize]) {
    let ops_per_token = 2.0 * ternary_weights(c) as f64;
    let compute_s = ops_per_token / (npu_tops * 1e12);
    let read_s = b.ternary / (igpu_gbs * 1e9);
    // A chunk of n tokens costs max(read, n·compute): below n* the NPU waits on memory.
    let chunk = (read_s / compute_s).ceil().max(1.0) as usize;
    let chunk_pow2 = chunk.next_power_of_two();
    println!("\n## Strix Halo, per surface (a projection: nothing here ran on a Strix Halo)\n");
    println!("| surface | work | bytes per token | ceiling |\n|---|---|---:|---:|");
    for ctx in ctxs {
        let bytes = b.decode_bytes(*ctx);
        println!(
            "| iGPU (gfx1151, {igpu_gbs:.0} GB/s) | decode @{ctx} | {:.1} MB | {:.0} tok/s |",
            bytes / 1e6,
            ceiling(igpu_gbs, bytes)
        );
    }
    println!(
        "| NPU (XDNA2, {npu_tops:.0} TOPS int8) | prefill, chunks of ≥ {chunk_pow2} | {:.1} MB / chunk | {:.0} tok/s |",
        b.ternary / 1e6,
        1.0 / compute_s
    );
    println!(
        "\n- the NPU's prefill chunk: reading the {:.0} MB of ternary weights takes {:.2} ms at {igpu_gbs:.0} GB/s and one \
         token's {:.2} G int8 ops take {:.3} ms at {npu_tops:.0} TOPS, so chunks of ≥ {chunk} tokens ({chunk_pow2} \
         rounded up) keep the NPU compute-bound;",
        b.ternary / 1e6,
        read_s * 1e3,
        ops_per_token / 1e9,
        compute_s * 1e3,
    );
    println!(
        "- prefill on the NPU and decode on the iGPU run side by side: the iGPU keeps decoding the running streams while \
         the NPU reads new prompts (reported: the iGPU is unaffected, the NPU loses about 20 % when both run)."
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use onebit_engine::synth::{self, Preset};
    use onebit_kernels::embd::EmbdType;

    fn budget() -> Budget {
        Budget {
            label: String::new(),
            ternary: 1000.0,
            down: 300.0,
            head: 500.0,
            other: 10.0,
            kv_per_pos: 2.0,
        }
    }

    #[test]
    fn decode_bytes_add_the_kv_of_every_cached_position() {
        let b = budget();
        assert_eq!(b.decode_bytes(0), 1510.0);
        assert_eq!(b.decode_bytes(4096), 1510.0 + 2.0 * 4096.0);
    }

    #[test]
    fn skipped_down_columns_and_a_screened_head_leave_the_bytes_read() {
        // A quarter of down_proj's columns read: 225 of its 300 bytes skipped.
        let b = budget().with_down_density(0.25);
        assert_eq!((b.ternary, b.down), (775.0, 75.0));
        assert_eq!(b.decode_bytes(10), 775.0 + 500.0 + 10.0 + 20.0);
        // Every column read changes nothing; a density out of range is clamped.
        assert_eq!(budget().with_down_density(1.0).decode_bytes(0), 1510.0);
        assert_eq!(budget().with_down_density(-1.0).ternary, 700.0);
        assert_eq!(budget().with_head(120.0).decode_bytes(0), 1130.0);
    }

    #[test]
    fn a_model_counts_its_own_layout_and_kv_format() {
        let mut model = synth::model(Preset::Small, 1, EmbdType::F16).unwrap();
        let c = model.config.clone();
        let dense = Budget::of_model(&model, KvFormat::F32);
        let rows: usize = model.layers.iter().map(|l| l.down_proj.byte_len()).sum();
        assert_eq!(dense.down, rows as f64);
        assert_eq!(dense.ternary, model.ternary_bytes() as f64);
        assert_eq!(dense.head, (c.vocab_size * c.hidden_size * 2) as f64);
        assert_eq!(
            dense.kv_per_pos,
            Session::kv_bytes_per_token(&model, KvFormat::F32) as f64
        );
        model.use_sparse_down();
        let sparse = Budget::of_model(&model, KvFormat::F32);
        let cols: usize = model
            .layers
            .iter()
            .map(|l| l.down_proj.columns.as_ref().unwrap().bytes())
            .sum();
        assert_eq!(sparse.down, cols as f64);
        assert_eq!(sparse.ternary - sparse.down, dense.ternary - dense.down);
    }
}
