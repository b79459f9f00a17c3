//! Perplexity, defined as the fixtures and llama.cpp's tools do for one sequence: BOS +
//! the text's tokens, truncated to the context, every token after BOS scored.

use crate::backend::cpu::CpuBackend;
use crate::backend::{Backend, Need, Output};
use crate::model::Model;
use crate::sampler::log_sum_exp;
use crate::{Error, Result};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Perplexity {
    pub perplexity: f64,
    pub nll_mean: f64,
    pub n_scored: usize,
}

/// Scores `ids` (BOS already first) truncated to `ctx` tokens, on the CPU.
pub fn perplexity(model: &Model, ids: &[u32], ctx: usize) -> Result<Perplexity> {
    let vocab = model.config.vocab_size;
    perplexity_on(&mut CpuBackend::new(model, 0), vocab, ids, ctx)
}

/// [`perplexity`] on any surface.
pub fn perplexity_on<B: Backend>(
    backend: &mut B,
    vocab: usize,
    ids: &[u32],
    ctx: usize,
) -> Result<Perplexity> {
    let ids = &ids[..ids.len().min(ctx)];
    if ids.len() < 2 {
        return Err(Error::Input(
            "perplexity needs at least one token after BOS; the text is empty".into(),
        ));
    }
    let mut session = backend.new_session(ids.len())?;
    // The session holds at most the model's context: a longer text is scored up to it.
    let ids = &ids[..ids.len().min(backend.capacity(&session))];
    let mut nll = 0f64;
    // Chunks bound the logits buffer for large vocabularies.
    let chunk = (1 << 22) / vocab.max(1);
    let chunk = chunk.clamp(1, 256);
    let mut start = 0;
    while start < ids.len() - 1 {
        let end = (start + chunk).min(ids.len() - 1);
        backend.step(&mut [&mut session], &[&ids[start..end]], &[Need::AllLogits])?;
        let Output::Logits(logits) = backend.output(&session) else {
            return Err(Error::Device(format!(
                "the {} surface returned no logits",
                backend.surface()
            )));
        };
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            let target = ids[start + i + 1] as usize;
            nll += f64::from(log_sum_exp(row) - row[target]);
        }
        start = end;
    }
    let n = ids.len() - 1;
    let nll_mean = nll / n as f64;
    Ok(Perplexity {
        perplexity: nll_mean.exp(),
        nll_mean,
        n_scored: n,
    })
}
