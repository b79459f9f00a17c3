//! `onebit perplexity`: BOS + the file's tokens, truncated to the context, every token
//! after BOS scored.

use crate::common::{CliResult, ModelArgs, SurfaceArgs};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub surface: SurfaceArgs,
    /// The text file to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Context (tokens, BOS included; default: the model's).
    #[arg(short = 'c', long = "ctx")]
    pub ctx: Option<usize>,
    /// Print {perplexity, nll_mean, n_scored} as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn main(a: Args) -> CliResult {
    let text = std::fs::read_to_string(&a.file)
        .map_err(|e| format!("cannot read {}: {e}", a.file.display()))?;
    let l = a.surface.open(&a.model, a.ctx.unwrap_or(0), true)?;
    let ids = l.tok.encode(&text, true)?;
    let ctx = a.ctx.unwrap_or(usize::MAX);
    let t0 = std::time::Instant::now();
    let p = crate::with_backend!(l.backend, |b| onebit_engine::eval::perplexity_on(
        &mut b, l.vocab, &ids, ctx
    ))?;
    tracing::info!(
        "scored {} tokens in {:.2} s",
        p.n_scored,
        t0.elapsed().as_secs_f64()
    );
    if a.json {
        println!("{}", serde_json::to_string(&p)?);
    } else {
        println!(
            "perplexity {:.4} (mean NLL {:.6} over {} tokens)",
            p.perplexity, p.nll_mean, p.n_scored
        );
    }
    Ok(())
}
