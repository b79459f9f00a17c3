//! The one generation loop. A [`Stream`] is one sequence being generated: its prompt,
//! how much of it the surface has read, its sampler, and when it ends. [`step`] advances
//! any number of streams by one batched step of any [`Backend`]; [`generate`] runs one
//! stream to its end (`onebit run`, bench, the selftest), and the daemon's scheduler runs
//! its slots through the same [`step`].
//!
//! A stream may speculate ([`Stream::with_speculation`], [`crate::speculate`]): its decode
//! step then feeds a tree of draft tokens under its last token, the step verifies them all,
//! and the stream takes every token the model agrees with (several per step).

use crate::backend::{Backend, BackendError, Need, Output};
use crate::sampler::{logprob, top_logprobs, Sampler, SamplingParams};
use crate::speculate::accept::{accept, Verdicts};
use crate::speculate::tree::DraftTree;
use crate::speculate::{Mode, SpecOptions, SpecStats, Speculator};
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
    /// Speculation, when on.
    spec: Option<Speculator>,
    /// The draft tree fed in the current step.
    draft: Option<DraftTree>,
}

/// What one step did for one stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Advance {
    /// Prompt tokens read in this step.
    pub prompt_read: usize,
    /// Whether a token was decoded (fed) in this step.
    pub decoded: bool,
    /// The new tokens (several when a draft was verified), without a token that ended the
    /// stream; empty when the step only read prompt.
    pub tokens: Vec<u32>,
    /// One per new token, when logprobs were asked for.
    pub logprobs: Vec<TokenLogprob>,
    pub finish: Option<Finish>,
    /// Draft tokens verified in this step, and how many of them the model kept.
    pub drafted: usize,
    pub accepted: usize,
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
            spec: None,
            draft: None,
        }
    }

    /// Speculates as `spec` says from the next decode step on ([`Mode::Off`]: never).
    pub fn with_speculation(mut self, spec: SpecOptions) -> Self {
        self.spec = (spec.mode != Mode::Off).then(|| Speculator::new(spec));
        self
    }

    /// What speculation did so far (None: the stream does not speculate).
    pub fn spec_stats(&self) -> Option<&SpecStats> {
        self.spec.as_ref().map(Speculator::stats)
    }

    /// Before a decode step: asks the speculator for a draft under the pending token.
    fn plan_draft<B: Backend>(&mut self, backend: &B, session: &B::Session) {
        self.draft = None;
        if !self.prompt_done() || self.opts.max_new == 0 {
            return;
        }
        let (Some(spec), Some(root)) = (self.spec.as_mut(), self.pending) else {
            return;
        };
        let history = backend.tokens(session);
        let room = backend.capacity(session).saturating_sub(history.len());
        self.draft = spec.plan(
            history,
            root,
            backend.draft_support(),
            backend.medusa_heads(),
            room,
        );
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
        if let Some(tree) = &self.draft {
            let need = if self.greedy {
                Need::AllGreedy
            } else {
                Need::AllLogits
            };
            return Some((&tree.tokens, need));
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
            // Only a draft step asks for every row's argmax; its last row is this step's.
            Output::Tokens(t) => match t.last() {
                Some(&id) => (id, None),
                None => {
                    adv.finish = Some(Finish::Length);
                    return adv;
                }
            },
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
        adv.tokens.push(id);
        if let (Some(n), Some(l)) = (self.opts.logprobs, logits) {
            adv.logprobs.push(TokenLogprob {
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

impl Stream {
    /// Takes a verified draft step's output: keeps the tokens the model agrees with (and
    /// their keys and values), then one the model chose itself.
    fn advance_draft<B: Backend>(
        &mut self,
        backend: &mut B,
        session: &mut B::Session,
        seconds: f64,
    ) -> std::result::Result<Advance, BackendError> {
        let Some(tree) = self.draft.take() else {
            return Ok(Advance::default());
        };
        let held = backend.tokens(session).len();
        let base = held - tree.len();
        let history = backend.tokens(session)[..base].to_vec();
        let verdicts = match backend.output(session) {
            Output::Logits(logits) => Verdicts::Logits {
                logits,
                vocab: logits.len() / tree.len(),
            },
            Output::Tokens(t) if t.len() == tree.len() => Verdicts::Tokens(t),
            _ => {
                return Err(BackendError::device(
                    backend.surface(),
                    "a draft step left no verdict for every node of its tree",
                ))
            }
        };
        let kept = accept(&tree, verdicts, &history, &mut self.sampler);
        let mut adv = Advance {
            decoded: true,
            drafted: tree.drafted(),
            accepted: kept.path.len() - 1,
            ..Advance::default()
        };
        let mut keep = kept.path.len();
        for (j, &id) in kept.tokens.iter().enumerate() {
            self.generated += 1;
            if self.opts.stop_ids.contains(&id) {
                adv.finish = Some(Finish::Stop);
                keep = j + 1;
                break;
            }
            adv.tokens.push(id);
            if let (Some(n), Verdicts::Logits { logits, vocab }) = (self.opts.logprobs, verdicts) {
                let row = &logits[kept.path[j] * vocab..][..vocab];
                adv.logprobs.push(TokenLogprob {
                    logprob: logprob(row, id),
                    top: top_logprobs(row, n),
                });
            }
            if self.generated >= self.opts.max_new {
                adv.finish = Some(Finish::Length);
                keep = j + 1;
                break;
            }
        }
        let spec = self
            .spec
            .as_mut()
            .expect("a draft comes from the speculator");
        if adv.finish.is_none() && spec.wants_heads(backend.draft_support(), backend.medusa_heads())
        {
            let last = kept.path[kept.path.len() - 1];
            let top = spec.options().head_top_k;
            spec.set_heads(backend.head_drafts(session, last, top));
        }
        spec.record(Some(&tree), Some(&kept), adv.tokens.len());
        if tree.drafted() > 0 {
            spec.timing(true, seconds, adv.tokens.len());
        }
        backend.keep_path(session, base, &kept.path[..keep])?;
        self.pending = None;
        if adv.finish.is_none() {
            if base + keep >= backend.capacity(session) {
                adv.finish = Some(Finish::Length);
            } else {
                self.pending = kept.tokens.last().copied();
            }
        }
        Ok(adv)
    }
}

/// How many prompt tokens one step feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feed {
    /// Prompt tokens one stream feeds per step at most.
    pub chunk: usize,
    /// While any stream decodes, the tokens the whole step feeds (0: no limit). Decoding
    /// rows (their drafts included) come first; prompt chunks share the rest in row order,
    /// at least [`Feed::MIN_PROMPT`] so that prompts always advance. This bounds how long
    /// new prompts stall the streams that decode, at the price of their time to first
    /// token.
    pub step_tokens: usize,
}

impl Feed {
    /// Prompt tokens a step feeds while streams decode, however many rows decode.
    pub const MIN_PROMPT: usize = 4;

    /// The prompt tokens a step may feed beside `decoding` rows that decode.
    pub fn prompt_budget(&self, decoding: usize) -> usize {
        if decoding == 0 || self.step_tokens == 0 {
            return usize::MAX;
        }
        (self.step_tokens.saturating_sub(decoding)).max(Self::MIN_PROMPT)
    }
}

impl From<usize> for Feed {
    /// At most `chunk` prompt tokens per stream, no limit per step.
    fn from(chunk: usize) -> Self {
        Self {
            chunk,
            step_tokens: 0,
        }
    }
}

/// One batched step of `backend` over the streams that have something to feed: a prompt
/// chunk (see [`Feed`]), the last token chosen, or a draft to verify. Returns one
/// [`Advance`] per row, in order (a row with nothing to feed gets an empty one).
pub fn step<B: Backend>(
    backend: &mut B,
    rows: &mut [(&mut B::Session, &mut Stream)],
    feed: impl Into<Feed>,
) -> std::result::Result<Vec<Advance>, BackendError> {
    let feed = feed.into();
    for (session, stream) in rows.iter_mut() {
        stream.plan_draft(backend, session);
    }
    let decoding: usize = rows
        .iter()
        .filter(|(_, s)| s.prompt_done())
        .filter_map(|(_, s)| s.next_feed(0))
        .map(|(tokens, _)| tokens.len())
        .sum();
    let mut prompt_budget = feed.prompt_budget(decoding);
    let mut fed = Vec::with_capacity(rows.len());
    let mut sessions = Vec::with_capacity(rows.len());
    let mut ids: Vec<&[u32]> = Vec::with_capacity(rows.len());
    let mut needs = Vec::with_capacity(rows.len());
    let mut trees = Vec::with_capacity(rows.len());
    for (i, (session, stream)) in rows.iter_mut().enumerate() {
        let tree = stream.draft.as_ref().map(|t| t.parents.as_slice());
        let prefilling = !stream.prompt_done();
        if prefilling && prompt_budget == 0 {
            continue;
        }
        if let Some((tokens, need)) = stream.next_feed(feed.chunk.min(prompt_budget)) {
            if prefilling {
                prompt_budget -= tokens.len();
            }
            fed.push(i);
            sessions.push(&mut **session);
            ids.push(tokens);
            needs.push(need);
            trees.push(tree);
        }
    }
    let started = std::time::Instant::now();
    if !sessions.is_empty() {
        backend.step_drafts(&mut sessions, &ids, &needs, &trees)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let counts: Vec<usize> = ids.iter().map(|f| f.len()).collect();
    drop(sessions);
    let mut out = vec![Advance::default(); rows.len()];
    for (&i, n) in fed.iter().zip(counts) {
        let (session, stream) = &mut rows[i];
        if stream.draft.is_some() {
            out[i] = stream.advance_draft(backend, session, seconds)?;
            continue;
        }
        let decoding = stream.prompt_done();
        let history = backend.tokens(session);
        let full = history.len() >= backend.capacity(session);
        out[i] = stream.advance(n, backend.output(session), history, full);
        if let Some(spec) = stream.spec.as_mut().filter(|_| decoding) {
            spec.set_heads(None);
            spec.record(None, None, out[i].tokens.len());
            spec.timing(false, seconds, out[i].tokens.len());
        }
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
    /// What speculation did (None: off).
    pub spec: Option<SpecStats>,
}

/// Generates after `prompt` (appended to what `session` holds); `on_token(id)` sees each
/// new token and returns false to stop.
pub fn generate<B: Backend>(
    backend: &mut B,
    session: &mut B::Session,
    prompt: &[u32],
    opts: &Options,
    on_token: impl FnMut(u32) -> bool,
) -> Result<Generated> {
    generate_speculating(
        backend,
        session,
        prompt,
        opts,
        SpecOptions::new(Mode::Off),
        on_token,
    )
}

/// [`generate`] speculating as `spec` says.
pub fn generate_speculating<B: Backend>(
    backend: &mut B,
    session: &mut B::Session,
    prompt: &[u32],
    opts: &Options,
    spec: SpecOptions,
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
    let mut stream = Stream::new(prompt.to_vec(), 0, opts.clone()).with_speculation(spec);
    let mut tokens = Vec::new();
    let t0 = std::time::Instant::now();
    let mut prefill_seconds = None;
    let finish = loop {
        let adv = step(backend, &mut [(&mut *session, &mut stream)], usize::MAX)?.remove(0);
        if stream.prompt_done() && prefill_seconds.is_none() {
            prefill_seconds = Some(t0.elapsed().as_secs_f64());
        }
        if adv.tokens.iter().any(|&id| {
            tokens.push(id);
            !on_token(id)
        }) {
            break Finish::Cancelled;
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
        spec: stream.spec_stats().cloned(),
    })
}
