//! `onebit logits`: the logits of every position as one f32 tensor `logits` `[n, vocab]`.

use crate::common::{CliResult, ModelArgs};
use onebit_engine::forward::{forward, LogitsMode, Session};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated token ids (BOS is not added).
    #[arg(long, value_delimiter = ',', required = true)]
    pub ids: Vec<u32>,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn main(a: Args) -> CliResult {
    let (model, _tok) = a.model.load_for_inference()?;
    let mut session = Session::new(&model, a.ids.len());
    if a.ids.len() > model.config.max_context {
        return Err(format!(
            "{} ids exceed the model's context of {}",
            a.ids.len(),
            model.config.max_context
        )
        .into());
    }
    let logits = forward(&model, &mut session, &a.ids, LogitsMode::All)?;
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![a.ids.len(), model.config.vocab_size],
        &bytes,
    )?;
    safetensors::serialize_to_file([("logits", view)], None, &a.out)?;
    eprintln!(
        "wrote logits [{}, {}] to {}",
        a.ids.len(),
        model.config.vocab_size,
        a.out.display()
    );
    Ok(())
}
