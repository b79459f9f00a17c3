//! `onebit convert`: rewrite a model in another format (HF packed ↔ GGUF I2_S / TQ2_0 /
//! TQ1_0). The ternary codes and scales carry over exactly; the embedding keeps its type
//! unless `--embd` asks for another (f16 is lossless for bf16 values in f16's range;
//! q8_0 / q6_k are lossy, like bitnet.cpp's `--quant-embd`). Medusa heads carry over, and
//! `--medusa` adds them to a model that has none.
//!
//! `--format sherry` is the one lossy ternary target: dense ternary weights are projected
//! onto 3:4 sparsity (`onebit_engine::format::sherry` says how), optionally guided by the
//! input energies of a calibration text (`--calib`); it prints the share of blocks changed
//! and, with `--eval`, the perplexity before and after.

use crate::common::{CliResult, ModelArgs};
use onebit_engine::format::gguf_write::{self, GgufWriteOptions, TernaryType};
use onebit_engine::format::hf::{self, HfWriteOptions};
use onebit_engine::format::sherry::{project_model, Calibration};
use onebit_engine::model::{Bytes, Embedding};
use onebit_kernels::embd::{quantize_q6k, quantize_q8_0, EmbdType};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output format: i2s, tq2_0, tq1_0, sherry (GGUF files) or hf (a directory).
    #[arg(long)]
    pub format: String,
    /// sherry: a text whose activations decide which weight of a block to zero (without
    /// it, ties go to the lowest column).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// sherry: a text to score before and after the projection (perplexity delta).
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Output path (a file for GGUF, a directory for hf).
    #[arg(long)]
    pub out: PathBuf,
    /// Embedding type of the output: keep (default), f32, f16, bf16, q8_0 or q6_k.
    #[arg(long, default_value = "keep")]
    pub embd: String,
    /// `general.name` of a GGUF output.
    #[arg(long)]
    pub name: Option<String>,
    /// Add (or replace) Medusa heads for speculative decoding from a `medusa.safetensors`
    /// (`medusa.{k}.weight` / `.bias`, as `tools/train/train_medusa.py` writes them);
    /// `none` drops the model's heads.
    #[arg(long)]
    pub medusa: Option<PathBuf>,
}

fn parse_embd(s: &str) -> Result<Option<EmbdType>, String> {
    Ok(Some(match s.to_ascii_lowercase().as_str() {
        "keep" => return Ok(None),
        "f32" => EmbdType::F32,
        "f16" => EmbdType::F16,
        "bf16" => EmbdType::Bf16,
        "q8_0" => EmbdType::Q8_0,
        "q6_k" => EmbdType::Q6K,
        other => {
            return Err(format!(
                "--embd {other:?}: use keep, f32, f16, bf16, q8_0 or q6_k"
            ))
        }
    }))
}

/// The embedding re-encoded as `kind`, row by row.
fn convert_embedding(e: &Embedding, kind: EmbdType) -> Result<Embedding, String> {
    if e.kind == kind {
        return Ok(Embedding {
            kind,
            rows: e.rows,
            cols: e.cols,
            data: e.data.clone(),
        });
    }
    if kind.row_bytes(e.cols).is_none() {
        return Err(format!(
            "--embd {}: the hidden size {} is not a multiple of its block of {}",
            kind.name(),
            e.cols,
            kind.block().0
        ));
    }
    let view = e.view();
    let mut row = vec![0f32; e.cols];
    let mut out = Vec::new();
    for r in 0..e.rows {
        view.row_to_f32(r, &mut row);
        match kind {
            EmbdType::F32 => out.extend(row.iter().flat_map(|v| v.to_le_bytes())),
            EmbdType::F16 => out.extend(
                row.iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes()),
            ),
            EmbdType::Bf16 => out.extend(
                row.iter()
                    .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes()),
            ),
            EmbdType::Q8_0 => out.extend(quantize_q8_0(&row)),
            EmbdType::Q6K => out.extend(quantize_q6k(&row)),
        }
    }
    Ok(Embedding {
        kind,
        rows: e.rows,
        cols: e.cols,
        data: Bytes::owned(out),
    })
}

pub fn main(a: Args) -> CliResult {
    let embd = parse_embd(&a.embd)?;
    let fmt = a.format.to_ascii_lowercase();
    let ternary =
        match fmt.as_str() {
            "hf" => None,
            other => Some(TernaryType::parse(other).ok_or_else(|| {
                format!("--format {other:?}: use i2s, tq2_0, tq1_0, sherry or hf")
            })?),
        };
    if ternary != Some(TernaryType::Sherry) && (a.calib.is_some() || a.eval.is_some()) {
        return Err("--calib and --eval apply to --format sherry only".into());
    }
    let (mut model, tok) = a.model.load()?;
    match a.medusa.as_deref() {
        Some(p) if p.as_os_str() == "none" => model.medusa = None,
        Some(p) => {
            let heads =
                onebit_engine::format::medusa::from_safetensors(p, model.config.hidden_size)?;
            eprintln!("adding {} Medusa heads from {}", heads.count(), p.display());
            model.medusa = Some(heads);
        }
        None => {}
    }
    if let Some(kind) = embd {
        if ternary.is_none() && !matches!(kind, EmbdType::F32 | EmbdType::F16 | EmbdType::Bf16) {
            return Err(
                "--format hf stores a float embedding: use --embd keep, f32, f16 or bf16".into(),
            );
        }
        model.embed_tokens = convert_embedding(&model.embed_tokens, kind)?;
    }
    if ternary == Some(TernaryType::Sherry) {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let eval_ids = a
            .eval
            .as_ref()
            .map(read)
            .transpose()?
            .map(|t| tok.encode(&t, true))
            .transpose()?;
        let score = |m: &onebit_engine::model::Model, ids: &[u32]| {
            onebit_engine::eval::perplexity(m, ids, m.config.max_context)
        };
        let before = eval_ids
            .as_deref()
            .map(|ids| score(&model, ids))
            .transpose()?;
        let calibration = match &a.calib {
            Some(p) => Some(Calibration::measure(&model, &tok.encode(&read(p)?, true)?)?),
            None => None,
        };
        let stats = project_model(&mut model, calibration.as_ref());
        eprintln!(
            "3:4 projection: {:.2} % of {} blocks changed ({} had no zero, {} more than one){}",
            100.0 * stats.changed_share(),
            stats.blocks,
            stats.zeroed,
            stats.filled,
            if calibration.is_some() {
                ", by calibration energies"
            } else {
                ", ties to the lowest column"
            }
        );
        if let (Some(ids), Some(before)) = (eval_ids.as_deref(), before) {
            let after = score(&model, ids)?;
            eprintln!(
                "perplexity on {} ({} tokens): {:.4} -> {:.4} ({:+.2} %)",
                a.eval
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                after.n_scored,
                before.perplexity,
                after.perplexity,
                100.0 * (after.perplexity / before.perplexity - 1.0)
            );
        }
    }
    match ternary {
        Some(tt) => gguf_write::write_file(
            &a.out,
            &model,
            &tok,
            &GgufWriteOptions {
                ternary: tt,
                name: a.name.clone(),
            },
        )?,
        None => hf::write_dir(&a.out, &model, &tok, &HfWriteOptions::default())?,
    }
    eprintln!("wrote {} ({})", a.out.display(), fmt);
    Ok(())
}
