//! `onebit run`: generate from a prompt, streaming text to stdout.

use crate::common::{CliResult, ModelArgs};
use onebit_engine::chat::{chat_ids, ChatMessage};
use onebit_engine::forward::Session;
use onebit_engine::generate::{generate, Options};
use onebit_engine::sampler::SamplingParams;
use onebit_engine::tokenizer::StreamDecoder;
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
    /// Where the forward pass runs: cpu, or igpu (Strix Halo's Radeon through /dev/kfd).
    #[arg(long, default_value = "cpu")]
    pub surface: String,
    /// Greedy decoding: score the whole vocabulary with the F16 head instead of screening
    /// it with an int8 copy first (same tokens either way; the screen reads half the bytes
    /// but holds an int8 copy of the head in memory).
    #[arg(long)]
    pub no_screened_head: bool,
    /// With --surface igpu: run on the in-process KFD emulator instead of the hardware.
    #[arg(long)]
    pub emulator: bool,
}

pub fn main(a: Args) -> CliResult {
    // The iGPU reads the row-major weights; the column-major down_proj is for the CPU.
    let (model, tok) = if a.surface == "igpu" {
        a.model.load()?
    } else {
        a.model.load_for_inference()?
    };
    let prompt_ids = if a.chat {
        chat_ids(&tok, &[ChatMessage::new("user", &a.prompt)])?
    } else {
        tok.encode(&a.prompt, true)?
    };
    if prompt_ids.iter().all(|id| Some(*id) == tok.bos_id()) {
        return Err("the prompt is empty: give some text with -p".into());
    }
    let ctx = a.ctx.unwrap_or(model.config.max_context);
    if ctx == 0 {
        return Err("-c/--ctx-size must be at least 1".into());
    }
    if prompt_ids.len() >= ctx.min(model.config.max_context) {
        return Err(format!(
            "the prompt has {} tokens but the context holds {}; shorten it or raise -c (the model allows {})",
            prompt_ids.len(),
            ctx.min(model.config.max_context),
            model.config.max_context
        )
        .into());
    }
    let mut stop_ids = tok.eos_ids();
    stop_ids.extend(model.config.eos_token_ids.iter().copied());
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
        screened_head: !a.no_screened_head,
    };
    if a.surface == "igpu" {
        return run_igpu(&a, &model, &tok, &prompt_ids, ctx, &opts);
    }
    if a.surface != "cpu" {
        return Err(format!("--surface {:?}: use cpu or igpu", a.surface).into());
    }
    let mut session = Session::new(&model, ctx);
    let mut out = std::io::stdout().lock();
    let mut decoder = StreamDecoder::new();
    let mut text = String::new();
    let stream = !a.json;
    if stream && !a.chat {
        write!(out, "{}", a.prompt)?;
        out.flush()?;
    }
    let mut write_err = None;
    let generated = generate(&model, &mut session, &prompt_ids, &opts, |id| {
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
            "finish_reason": generated.finish.as_str(),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "{rest}")?;
    }
    let n = generated.tokens.len();
    tracing::info!(
        "prompt {} tokens in {:.3} s ({:.1} tok/s), generated {} tokens in {:.3} s ({:.1} tok/s)",
        prompt_ids.len(),
        generated.prefill_seconds,
        prompt_ids.len() as f64 / generated.prefill_seconds.max(1e-9),
        n,
        generated.decode_seconds,
        n as f64 / generated.decode_seconds.max(1e-9)
    );
    Ok(())
}

/// The same generation with every forward pass on the iGPU: one AQL chain per step, the
/// greedy token computed on the GPU, the logits read back only when sampling needs them.
fn run_igpu(
    a: &Args,
    model: &onebit_engine::model::Model,
    tok: &onebit_engine::tokenizer::Tokenizer,
    prompt_ids: &[u32],
    ctx: usize,
    opts: &Options,
) -> CliResult {
    use onebit_engine::backend::igpu::{emulator, IgpuBackend, IgpuOptions};
    use onebit_engine::sampler::Sampler;
    let Some(gpu) = crate::selftest::open_gpu(a.emulator)? else {
        return Err("--surface igpu needs an AMD GPU (see above); use --surface cpu".into());
    };
    opts.sampling.validate()?;
    let mut be = IgpuBackend::new(
        &gpu.dev,
        model,
        &IgpuOptions {
            max_ctx: ctx.min(model.config.max_context),
            ..IgpuOptions::default()
        },
    )?;
    if let Some(k) = &gpu.kfd {
        emulator::bind(k, &be);
    }
    let mut sampler = Sampler::new(opts.sampling.clone());
    let greedy = opts.sampling.temperature <= 0.0 && opts.sampling.repeat_penalty == 1.0;
    let mut history = prompt_ids.to_vec();
    let mut decoder = StreamDecoder::new();
    let mut text = String::new();
    let mut tokens = Vec::new();
    let mut out = std::io::stdout().lock();
    let t0 = std::time::Instant::now();
    let mut argmax = be.forward(prompt_ids)?;
    let mut finish = "length";
    while tokens.len() < opts.max_new && be.len() < be.max_ctx() {
        let next = if greedy {
            argmax
        } else {
            sampler.sample(&be.logits(), &history)
        };
        if opts.stop_ids.contains(&next) {
            finish = "stop";
            break;
        }
        tokens.push(next);
        history.push(next);
        let piece = decoder.push(&tok.token_bytes(next).unwrap_or_default());
        text.push_str(&piece);
        if !a.json {
            write!(out, "{piece}")?;
            out.flush()?;
        }
        if tokens.len() == opts.max_new {
            break;
        }
        argmax = be.forward(&[next])?;
    }
    let rest = decoder.finish();
    text.push_str(&rest);
    if a.json {
        let v = serde_json::json!({
            "prompt_tokens": prompt_ids,
            "tokens": tokens,
            "text": text,
            "finish_reason": finish,
            "surface": "igpu",
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "{rest}")?;
    }
    tracing::info!(
        "igpu: {} tokens in {:.3} s",
        tokens.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
