//! Prompt → tokens: prefill once, then decode step by step through the sampler.

use crate::forward::{forward, forward_greedy, LogitsMode, Session};
use crate::model::Model;
use crate::sampler::{Sampler, SamplingParams};
use crate::{Error, Result};
use onebit_kernels::screen::Int8Head;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// A stop token was generated (it is not part of the output).
    Stop,
    /// `max_new` tokens were generated, or the context is full.
    Length,
    /// The caller's callback asked to stop.
    Cancelled,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length | Self::Cancelled => "length",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub max_new: usize,
    pub sampling: SamplingParams,
    pub stop_ids: Vec<u32>,
    /// For greedy decoding without penalties: find each token with the int8-screened LM
    /// head (the same token, about half the head's bytes read; costs an int8 copy of it).
    pub screened_head: bool,
}

impl Options {
    /// Whether the sampler would pick the plain argmax every step.
    fn is_plain_greedy(&self) -> bool {
        let p = &self.sampling;
        p.temperature <= 0.0
            && p.repeat_penalty == 1.0
            && p.presence_penalty == 0.0
            && p.frequency_penalty == 0.0
    }
}

#[derive(Clone, Debug)]
pub struct Generated {
    pub tokens: Vec<u32>,
    pub finish: Finish,
    /// Seconds spent in prefill and in decode.
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

/// Generates after `prompt`; `on_token(id)` sees each new token and returns false to stop.
pub fn generate(
    model: &Model,
    session: &mut Session,
    prompt: &[u32],
    opts: &Options,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generated> {
    if prompt.is_empty() {
        return Err(Error::Input(
            "the prompt is empty: give some text to continue".into(),
        ));
    }
    if session.len() + prompt.len() > session.max_ctx() {
        return Err(Error::Input(format!(
            "the prompt has {} tokens but the context holds {}; shorten it or raise the context (-c)",
            prompt.len(),
            session.max_ctx() - session.len()
        )));
    }
    opts.sampling.validate().map_err(Error::Input)?;
    // Plain greedy decoding can find each token with the int8-screened head; everything
    // else samples from the full logits.
    let screen = if opts.screened_head && opts.is_plain_greedy() {
        Int8Head::new_releasing(&model.embed_tokens.view(), &|r| {
            model.embed_tokens.data.release_range(r)
        })
    } else {
        None
    };
    let mut sampler = Sampler::new(opts.sampling.clone());
    let mut next_after = |session: &mut Session, ids: &[u32]| -> Result<u32> {
        match &screen {
            Some(screen) => forward_greedy(model, session, ids, screen),
            None => {
                let logits = forward(model, session, ids, LogitsMode::Last)?;
                Ok(sampler.sample(&logits, session.tokens()))
            }
        }
    };
    let t0 = std::time::Instant::now();
    let mut next = next_after(session, prompt)?;
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let mut tokens = Vec::new();
    let mut finish = Finish::Length;
    while tokens.len() < opts.max_new {
        if opts.stop_ids.contains(&next) {
            finish = Finish::Stop;
            break;
        }
        tokens.push(next);
        if !on_token(next) {
            finish = Finish::Cancelled;
            break;
        }
        if tokens.len() == opts.max_new || session.len() >= session.max_ctx() {
            break;
        }
        next = next_after(session, &[next])?;
    }
    Ok(Generated {
        tokens,
        finish,
        prefill_seconds,
        decode_seconds: t1.elapsed().as_secs_f64(),
    })
}
