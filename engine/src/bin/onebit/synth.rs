//! `onebit synth`: a deterministic random BitNet b1.58 model of a real shape, written in
//! the format bitnet.cpp (I2_S) or llama.cpp (TQ2_0 / TQ1_0) or transformers (HF) loads, or
//! onebit's Sherry 3:4 (the same random weights projected onto 3:4).

use crate::common::CliResult;
use onebit_engine::format::gguf_write::{self, GgufWriteOptions, TernaryType};
use onebit_engine::format::hf::{self, HfWriteOptions};
use onebit_engine::format::sherry::project_model;
use onebit_engine::synth::{self, Preset};
use onebit_kernels::embd::EmbdType;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model shape: 2b4t (microsoft/bitnet-b1.58-2B-4T) or small.
    #[arg(long)]
    pub preset: String,
    /// Output format: i2s, tq2_0, tq1_0, sherry (GGUF files) or hf (a directory).
    #[arg(long)]
    pub format: String,
    /// Output path (a file for GGUF, a directory for hf).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the random weights; the same seed gives the same weights in every format.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Embedding (and tied head) type: f16, q8_0 or q6_k (the last two like bitnet.cpp's --quant-embd).
    #[arg(long, default_value = "f16")]
    pub embd: String,
}

fn parse_embd(s: &str) -> Option<EmbdType> {
    match s.to_ascii_lowercase().as_str() {
        "f16" => Some(EmbdType::F16),
        "q8_0" => Some(EmbdType::Q8_0),
        "q6_k" => Some(EmbdType::Q6K),
        _ => None,
    }
}

pub fn main(a: Args) -> CliResult {
    let preset = Preset::parse(&a.preset)
        .ok_or_else(|| format!("--preset {:?}: use 2b4t or small", a.preset))?;
    let embd =
        parse_embd(&a.embd).ok_or_else(|| format!("--embd {:?}: use f16, q8_0 or q6_k", a.embd))?;
    let fmt = a.format.to_ascii_lowercase();
    let ternary =
        match fmt.as_str() {
            "hf" => None,
            other => Some(TernaryType::parse(other).ok_or_else(|| {
                format!("--format {other:?}: use i2s, tq2_0, tq1_0, sherry or hf")
            })?),
        };
    if ternary.is_none() && embd != EmbdType::F16 {
        return Err(
            "--format hf stores the embedding in bf16: a quantized --embd needs a GGUF format"
                .into(),
        );
    }
    let t0 = Instant::now();
    let (tok, vocab_source) = synth::tokenizer(preset, a.seed)?;
    let mut model = synth::model(preset, a.seed, embd)?;
    if ternary == Some(TernaryType::Sherry) {
        let stats = project_model(&mut model, None);
        tracing::info!(
            "projected onto 3:4: {:.1} % of blocks changed",
            100.0 * stats.changed_share()
        );
    }
    tracing::info!(
        "synthesized {} (seed {}, {} params, vocabulary: {vocab_source}) in {:.1} s",
        preset.name(),
        a.seed,
        model.n_params(),
        t0.elapsed().as_secs_f64()
    );
    let t1 = Instant::now();
    match ternary {
        Some(tt) => {
            let name = Some(format!("onebit-synth-{}-seed{}", preset.name(), a.seed));
            gguf_write::write_file(
                &a.out,
                &model,
                &tok,
                &GgufWriteOptions { ternary: tt, name },
            )?;
        }
        None => hf::write_dir(&a.out, &model, &tok, &HfWriteOptions::default())?,
    }
    tracing::info!(
        "wrote {} in {:.1} s",
        a.out.display(),
        t1.elapsed().as_secs_f64()
    );
    Ok(())
}
