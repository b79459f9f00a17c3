//! `onebit logits`: the logits of every position as one f32 tensor `logits` `[n, vocab]`.

use crate::common::{CliResult, ModelArgs, SurfaceArgs};
use onebit_engine::backend::{Backend, Need, Output};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub surface: SurfaceArgs,
    /// Comma-separated token ids (BOS is not added).
    #[arg(long, value_delimiter = ',', required = true)]
    pub ids: Vec<u32>,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn main(a: Args) -> CliResult {
    let l = a.surface.open(&a.model, a.ids.len(), true)?;
    let vocab = l.vocab;
    let logits = crate::with_backend!(l.backend, |b| all_logits(&mut b, &a.ids))?;
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![a.ids.len(), vocab],
        &bytes,
    )?;
    safetensors::serialize_to_file([("logits", view)], None, &a.out)?;
    eprintln!(
        "wrote logits [{}, {}] to {}",
        a.ids.len(),
        vocab,
        a.out.display()
    );
    Ok(())
}

/// The logits of every position of `ids`, on any surface.
fn all_logits<B: Backend>(b: &mut B, ids: &[u32]) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let mut s = b.new_session(ids.len())?;
    if ids.len() > b.capacity(&s) {
        return Err(format!(
            "{} ids exceed the model's context of {}",
            ids.len(),
            b.capacity(&s)
        )
        .into());
    }
    b.step(&mut [&mut s], &[ids], &[Need::AllLogits])?;
    match b.output(&s) {
        Output::Logits(l) => Ok(l.to_vec()),
        _ => Err(format!("the {} surface returned no logits", b.surface()).into()),
    }
}
