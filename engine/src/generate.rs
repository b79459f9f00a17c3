//! The one generation loop. A [`Stream`] is one sequence being generated: its prompt,
//! how much of it the surface has read, its sampler, and when it ends. [`step`] advances
//! any number of streams by one batched step of any [`Backend`]; [`generate`] runs one
//! stream to its end (`onebit run`, bench, the selftest), and the daemon's scheduler runs
//! its slots through the same [`step`].

use crate::backend::{Backend, BackendError, Need, Output};
use crate::sampler::{logprob, top_logprobs, Sampler, SamplingParams};
use crate::{Error, Result};

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// A stop token was generated (it is not part of the output).
    Stop,
    /// `max_new` tokens were generated, or the context is full.
    Length,
    /// The caller asked to stop.
    Cancelled,
    /// Cut short because the daemon is shutting down.
    Shutdown,
}

impl Finish {
    /// OpenAI's `finish_reason` (a cut stream reports `length`: a limit ended it).
    pub fn as_openai(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length | Self::Cancelled | Self::Shutdown => "length",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub max_new: usize,
    pub sampling: SamplingParams,
    pub stop_ids: Vec<u32>,
    /// `Some(n)`: report each chosen token's logprob and the top `n` alternatives.
    pub logprobs: Option<usize>,
}

impl Options {
    /// Whether the sampler would pick the plain argmax every step, so that a surface may
    /// find the token without handing over all logits.
    fn is_plain_greedy(&self) -> bool {
        let p = &self.sampling;
        p.temperature <= 0.0
            && p.repeat_penalty == 1.0
            && p.presence_penalty == 0.0
            && p.frequency_penalty == 0.0
            && self.logprobs.is_none()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// One sequence being generated.
pub struct Stream {
    prompt: Vec<u32>,
    /// Prompt tokens the surface has read.
    fed: usize,
    /// The last token chosen, fed at the next step.
    pending: Option<u32>,
    sampler: Sampler,
    generated: usize,
    opts: Options,
    greedy: bool,
}

/// What one step did for one stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Advance {
    /// Prompt tokens read in this step.
    pub prompt_read: usize,
    /// Whether a token was decoded (fed) in this step.
    pub decoded: bool,
    /// The new token, unless the step only read prompt or the token ended the stream.
    pub token: Option<u32>,
    pub logprob: Option<TokenLogprob>,
    pub finish: Option<Finish>,
}

impl Stream {
    /// A stream that continues after `prompt[..cached]`, which the session already holds.
    pub fn new(prompt: Vec<u32>, cached: usize, opts: Options) -> Self {
        let greedy = opts.is_plain_greedy();
        Self {
            fed: cached.min(prompt.len()),
            prompt,
            pending: None,
            sampler: Sampler::new(opts.sampling.clone()),
            generated: 0,
            opts,
            greedy,
        }
    }

    /// Whether the whole prompt has been read.
    pub fn prompt_done(&self) -> bool {
        self.fed >= self.prompt.len()
    }

    pub fn generated(&self) -> usize {
        self.generated
    }

    /// The tokens to feed next (at most `chunk` of the prompt) and what to ask for.
    fn next_feed(&self, chunk: usize) -> Option<(&[u32], Need)> {
        if !self.prompt_done() {
            let end = (self.fed + chunk.max(1)).min(self.prompt.len());
            let need = if end < self.prompt.len() {
                Need::Nothing
            } else {
                self.need()
            };
            return Some((&self.prompt[self.fed..end], need));
        }
        self.pending
            .as_ref()
            .map(|t| (std::slice::from_ref(t), self.need()))
    }

    fn need(&self) -> Need {
        if self.opts.max_new == 0 {
            Need::Nothing
        } else if self.greedy {
            Need::Greedy
        } else if let Some((k, recent)) = self
            .sampler
            .screened_top_k()
            .filter(|_| self.opts.logprobs.is_none())
        {
            // Logprobs normalise over every token, so they need every logit.
            Need::TopK { k, recent }
        } else {
            Need::Logits
        }
    }

    /// Takes the step's output: picks the next token and decides whether the stream ends.
    fn advance(&mut self, fed: usize, out: Output<'_>, history: &[u32], full: bool) -> Advance {
        let mut adv = Advance::default();
        if self.prompt_done() {
            adv.decoded = true;
            self.pending = None;
        } else {
            self.fed += fed;
            adv.prompt_read = fed;
            if !self.prompt_done() {
                return adv;
            }
        }
        let (id, logits) = match out {
            Output::Token(id) => (id, None),
            Output::Logits(l) => (self.sampler.sample(l, history), Some(l)),
            Output::Candidates(c) => (self.sampler.sample_candidates(c, history), None),
            Output::Nothing => {
                adv.finish = Some(Finish::Length);
                return adv;
            }
        };
        self.generated += 1;
        if self.opts.stop_ids.contains(&id) {
            adv.finish = Some(Finish::Stop);
            return adv;
        }
        adv.token = Some(id);
        if let (Some(n), Some(l)) = (self.opts.logprobs, logits) {
            adv.logprob = Some(TokenLogprob {
                logprob: logprob(l, id),
                top: top_logprobs(l, n),
            });
        }
        if self.generated >= self.opts.max_new || full {
            adv.finish = Some(Finish::Length);
        } else {
            self.pending = Some(id);
        }
        adv
    }
}

/// One batched step of `backend` over the streams that have something to feed: a prompt
/// chunk of at most `chunk` tokens, or the last token chosen. Returns one [`Advance`] per
/// row, in order (a row with nothing to feed gets an empty one).
pub fn step<B: Backend>(
    backend: &mut B,
    rows: &mut [(&mut B::Session, &mut Stream)],
    chunk: usize,
) -> std::result::Result<Vec<Advance>, BackendError> {
    let mut fed = Vec::with_capacity(rows.len());
    let mut sessions = Vec::with_capacity(rows.len());
    let mut ids: Vec<&[u32]> = Vec::with_capacity(rows.len());
    let mut needs = Vec::with_capacity(rows.len());
    for (i, (session, stream)) in rows.iter_mut().enumerate() {
        if let Some((feed, need)) = stream.next_feed(chunk) {
            fed.push(i);
            sessions.push(&mut **session);
            ids.push(feed);
            needs.push(need);
        }
    }
    if !sessions.is_empty() {
        backend.step(&mut sessions, &ids, &needs)?;
    }
    let counts: Vec<usize> = ids.iter().map(|f| f.len()).collect();
    drop(sessions);
    let mut out = vec![Advance::default(); rows.len()];
    for (&i, n) in fed.iter().zip(counts) {
        let (session, stream) = &mut rows[i];
        let history = backend.tokens(session);
        let full = history.len() >= backend.capacity(session);
        out[i] = stream.advance(n, backend.output(session), history, full);
    }
    Ok(out)
}

#[derive(Clone, Debug)]
pub struct Generated {
    pub tokens: Vec<u32>,
    pub finish: Finish,
    /// Seconds spent in prefill and in decode.
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

/// Generates after `prompt` (appended to what `session` holds); `on_token(id)` sees each
/// new token and returns false to stop.
pub fn generate<B: Backend>(
    backend: &mut B,
    session: &mut B::Session,
    prompt: &[u32],
    opts: &Options,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generated> {
    if prompt.is_empty() {
        return Err(Error::Input(
            "the prompt is empty: give some text to continue".into(),
        ));
    }
    let held = backend.tokens(session).len();
    let room = backend.capacity(session).saturating_sub(held);
    if prompt.len() > room {
        return Err(Error::Input(format!(
            "the prompt has {} tokens but the context holds {room}; shorten it or raise the context (-c)",
            prompt.len(),
        )));
    }
    opts.sampling.validate().map_err(Error::Input)?;
    let mut stream = Stream::new(prompt.to_vec(), 0, opts.clone());
    let mut tokens = Vec::new();
    let t0 = std::time::Instant::now();
    let mut prefill_seconds = None;
    let finish = loop {
        let adv = step(backend, &mut [(&mut *session, &mut stream)], usize::MAX)?.remove(0);
        if stream.prompt_done() && prefill_seconds.is_none() {
            prefill_seconds = Some(t0.elapsed().as_secs_f64());
        }
        if let Some(id) = adv.token {
            tokens.push(id);
            if !on_token(id) {
                break Finish::Cancelled;
            }
        }
        if let Some(f) = adv.finish {
            break f;
        }
    };
    let prefill = prefill_seconds.unwrap_or_else(|| t0.elapsed().as_secs_f64());
    Ok(Generated {
        tokens,
        finish,
        prefill_seconds: prefill,
        decode_seconds: t0.elapsed().as_secs_f64() - prefill,
    })
}
