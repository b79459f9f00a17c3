//! `onebit run`: generate from a prompt, streaming text to stdout.

use crate::common::{CliResult, ModelArgs, SurfaceArgs};
use onebit_engine::backend::Backend;
use onebit_engine::chat::{chat_ids, ChatMessage};
use onebit_engine::generate::{generate_speculating, Options};
use onebit_engine::sampler::SamplingParams;
use onebit_engine::speculate::{Mode, SpecOptions};
use onebit_engine::tokenizer::{StreamDecoder, Tokenizer};
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt (with --chat: the user's message).
    #[arg(short = 'p', long = "prompt")]
    pub prompt: String,
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: usize,
    /// Context size in tokens (default: the model's).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx: Option<usize>,
    /// Temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Seed; a fixed seed reproduces the output.
    #[arg(short = 's', long = "seed")]
    pub seed: Option<u64>,
    /// Wrap the prompt in BitNet's chat format and stop at the end of the turn.
    #[arg(long)]
    pub chat: bool,
    /// Print one JSON object {prompt_tokens, tokens, text} instead of streaming.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub surface: SurfaceArgs,
    /// Greedy decoding: score the whole vocabulary with the F16 head instead of screening
    /// it with an int8 copy first (same tokens either way; the screen reads half the bytes
    /// but holds an int8 copy of the head in memory).
    #[arg(long)]
    pub no_screened_head: bool,
    /// Speculative decoding: lookup (draft from n-grams of the text so far), medusa (draft
    /// with the model's Medusa heads, on the CPU), auto (either, only while it beats plain
    /// decoding) or off. The tokens are the same as plain decoding's (greedy) or drawn from
    /// the same distribution (sampling).
    #[arg(long, default_value = "auto")]
    pub speculate: Mode,
    /// Most draft tokens per step (a lookup chain's length, a Medusa tree's depth).
    #[arg(long = "draft-max", default_value_t = 6)]
    pub draft_max: usize,
}

pub fn main(a: Args) -> CliResult {
    let ctx_arg = a.ctx.unwrap_or(0);
    if a.ctx == Some(0) {
        return Err("-c/--ctx-size must be at least 1".into());
    }
    let l = a.surface.open(&a.model, ctx_arg, !a.no_screened_head)?;
    crate::with_backend!(l.backend, |b| run_on(&a, &mut b, &l.tok, &l.eos))
}

fn run_on<B: Backend>(a: &Args, backend: &mut B, tok: &Tokenizer, eos: &[u32]) -> CliResult {
    let prompt_ids = if a.chat {
        chat_ids(tok, &[ChatMessage::new("user", &a.prompt)])?
    } else {
        tok.encode(&a.prompt, true)?
    };
    if prompt_ids.iter().all(|id| Some(*id) == tok.bos_id()) {
        return Err("the prompt is empty: give some text with -p".into());
    }
    let mut session = backend.new_session(a.ctx.unwrap_or(0))?;
    let ctx = backend.capacity(&session);
    if prompt_ids.len() >= ctx {
        return Err(format!(
            "the prompt has {} tokens but the context holds {ctx}; shorten it or raise -c",
            prompt_ids.len(),
        )
        .into());
    }
    let stop_ids = eos.to_vec();
    let opts = Options {
        max_new: a.n_predict,
        sampling: SamplingParams {
            temperature: a.temp,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            repeat_penalty: a.repeat_penalty,
            repeat_last_n: a.repeat_last_n,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: a.seed,
        },
        stop_ids,
        logprobs: None,
    };
    let mut out = std::io::stdout().lock();
    let mut decoder = StreamDecoder::new();
    let mut text = String::new();
    let stream = !a.json;
    if stream && !a.chat {
        write!(out, "{}", a.prompt)?;
        out.flush()?;
    }
    let mut write_err = None;
    let spec = SpecOptions {
        max_draft: a.draft_max.max(1),
        ..SpecOptions::new(a.speculate)
    };
    let generated = generate_speculating(backend, &mut session, &prompt_ids, &opts, spec, |id| {
        let piece = decoder.push(&tok.token_bytes(id).unwrap_or_default());
        text.push_str(&piece);
        if stream {
            if let Err(e) = write!(out, "{piece}").and_then(|_| out.flush()) {
                write_err = Some(e);
                return false;
            }
        }
        true
    })?;
    if let Some(e) = write_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
        return Ok(());
    }
    let rest = decoder.finish();
    text.push_str(&rest);
    if a.json {
        let v = serde_json::json!({
            "prompt_tokens": prompt_ids,
            "tokens": generated.tokens,
            "text": text,
            "finish_reason": generated.finish.as_openai(),
            "surface": backend.surface().as_str(),
            "prefill_seconds": generated.prefill_seconds,
            "decode_seconds": generated.decode_seconds,
            "speculate": generated.spec.as_ref().map(|s| serde_json::json!({
                "mode": a.speculate.as_str(),
                "passes": s.steps,
                "drafted": s.drafted,
                "accepted": s.accepted,
                "acceptance_rate": s.acceptance(),
                "tokens_per_pass": s.tokens_per_pass(),
                "offered_at": s.offered_at,
                "accepted_at": s.accepted_at,
            })),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "{rest}")?;
    }
    let n = generated.tokens.len();
    tracing::info!(
        "{}: prompt {} tokens in {:.3} s ({:.1} tok/s), generated {} tokens in {:.3} s ({:.1} tok/s)",
        backend.surface(),
        prompt_ids.len(),
        generated.prefill_seconds,
        prompt_ids.len() as f64 / generated.prefill_seconds.max(1e-9),
        n,
        generated.decode_seconds,
        n as f64 / generated.decode_seconds.max(1e-9)
    );
    if let Some(s) = &generated.spec {
        tracing::info!(
            "speculate {}: {} drafted, {} accepted ({:.0} %), {:.2} tokens per pass",
            a.speculate,
            s.drafted,
            s.accepted,
            100.0 * s.acceptance(),
            s.tokens_per_pass()
        );
    }
    Ok(())
}
