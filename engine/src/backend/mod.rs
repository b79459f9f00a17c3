//! Compute surfaces: where the forward pass runs. One trait, [`Backend`], is what every
//! caller drives — `onebit run` through [`crate::generate`], perplexity, logits, bench, the
//! selftest and the daemon's slot scheduler — so a surface added here is at once usable
//! by all of them.
//!
//! * [`cpu::CpuBackend`]: the CPU forward pass ([`crate::forward`]), AVX-512/AVX2/scalar.
//! * [`igpu::IgpuSurface`]: Strix Halo's Radeon through raw KFD queues, every session's KV
//!   cache and logits in shared (zero-copy) buffers.
//! * [`fallback::Fallback`]: a device surface with the CPU behind it; a device fault moves
//!   the affected sessions to the CPU, with their KV cache read from the shared buffers.
//! * [`npu::NpuSurface`]: prompt prefill with the ternary projections on the XDNA2 NPU, in
//!   front of the CPU or the iGPU (with its fallback) for decoding.
//!
//! A step appends each session's new tokens and leaves, per session, what the caller
//! asked for ([`Need`]); [`Backend::output`] then reads it where it lies (for the iGPU: in
//! the shared buffer the GPU wrote, without a copy).
//!
//! Adding a surface: implement [`Backend`] in a module here, give it a [`Surface`] variant,
//! and teach [`select`] when to pick it. Nothing else changes: the generation loop, the
//! scheduler and the CLI commands only see the trait.

pub mod cpu;
pub mod fallback;
pub mod igpu;
pub mod jitter;
pub mod npu;
pub mod select;
pub mod shared_buffers;
mod surface;

pub use select::{open, Opened, SelectOptions};
pub use surface::{Surface, SurfaceChoice};

/// What a session needs from a step, after its last new token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing (a prompt chunk that is not the prompt's last).
    Nothing,
    /// The logits of the last new token.
    Logits,
    /// Only the most likely next token (plain greedy decoding: a surface may find it
    /// without producing all logits, e.g. with the int8-screened head or on the GPU).
    Greedy,
    /// The logits of every new token, `[n_new, vocab]` (perplexity, prompt logprobs).
    AllLogits,
    /// The most likely next token after every new token (verifying a greedy draft); a
    /// surface without a cheaper way answers with every logit, as [`Need::AllLogits`].
    AllGreedy,
    /// What a sampler that truncates to its `k` best tokens can pick from: the last new
    /// token's logits of a set of tokens holding the `k` largest and the last `recent`
    /// tokens of the session's history (which penalties move; `usize::MAX`: all of it),
    /// each exactly as [`Need::Logits`] gives it. A surface without a cheaper way answers
    /// with the full logits.
    TopK { k: usize, recent: usize },
}

/// What a step left for one session.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Output<'a> {
    Nothing,
    /// `[n, vocab]` row-major: one row for [`Need::Logits`], one per new token for
    /// [`Need::AllLogits`].
    Logits(&'a [f32]),
    /// The argmax token ([`Need::Greedy`]).
    Token(u32),
    /// `(id, logit)` sorted by id, for [`Need::TopK`].
    Candidates(&'a [(u32, f32)]),
    /// The argmax after every new token ([`Need::AllGreedy`]).
    Tokens(&'a [u32]),
}

/// How a surface is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// The surface that was asked for failed; `serving` took over. `reason` says what
    /// happened and what to do.
    Degraded {
        failed: Surface,
        serving: Surface,
        reason: String,
    },
}

/// A step that failed, typed by whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The request's fault (ids outside the vocabulary, context full, ...): retrying
    /// elsewhere gives the same answer.
    #[error("{0}")]
    Input(String),
    /// The surface failed (a queue hang, a device error, out of memory): the same step may
    /// succeed on another surface.
    #[error("{surface}: {message}")]
    Device { surface: Surface, message: String },
}

impl BackendError {
    pub fn device(surface: Surface, message: impl std::fmt::Display) -> Self {
        Self::Device {
            surface,
            message: message.to_string(),
        }
    }
}

impl From<crate::Error> for BackendError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Input(m) => Self::Input(m),
            other => Self::device(Surface::Cpu, other),
        }
    }
}

impl From<BackendError> for crate::Error {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Input(m) => crate::Error::Input(m),
            d @ BackendError::Device { .. } => crate::Error::Device(d.to_string()),
        }
    }
}

/// What a surface offers speculative decoding ([`Backend::step_drafts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DraftSupport {
    /// Draft trees verified in one pass with a tree attention mask; without it, chains
    /// (each node the child of the one before), which any surface verifies as plain new
    /// tokens.
    pub tree: bool,
    /// The final normed hidden states of a draft step's rows are kept for drafting heads
    /// ([`Backend::head_drafts`]).
    pub hidden: bool,
}

/// Whether `parents` describes a chain: node i's parent is i − 1.
pub fn is_chain(parents: &[usize]) -> bool {
    parents.iter().enumerate().skip(1).all(|(i, &p)| p + 1 == i)
}

/// A compute surface with sessions (sequences with their KV caches).
pub trait Backend: Send {
    type Session: Send;
    /// The surface that serves now.
    fn surface(&self) -> Surface;
    /// Whether it is the surface that was asked for.
    fn health(&self) -> Health {
        Health::Ok
    }
    /// Sessions moved to another surface after a device fault, so far.
    fn fallbacks(&self) -> u64 {
        0
    }
    /// A fresh, empty session holding up to `ctx` tokens (0: the backend's default).
    fn new_session(&mut self, ctx: usize) -> Result<Self::Session, BackendError>;
    /// The tokens whose keys and values the session holds.
    fn tokens<'a>(&self, s: &'a Self::Session) -> &'a [u32];
    /// Forgets every position from `n` on (keeps a shared prefix).
    fn truncate(&mut self, s: &mut Self::Session, n: usize);
    /// How many tokens the session can hold.
    fn capacity(&self, s: &Self::Session) -> usize;
    /// Appends `ids[i]` to `sessions[i]` for every i, in one pass over the weights where
    /// the surface can, and leaves what `needs[i]` asks for in each session. A failed step
    /// leaves the sessions it touched in an unspecified state: truncate them before reuse.
    fn step(
        &mut self,
        sessions: &mut [&mut Self::Session],
        ids: &[&[u32]],
        needs: &[Need],
    ) -> Result<(), BackendError>;
    /// What the last step left for `s`.
    fn output<'a>(&'a self, s: &'a Self::Session) -> Output<'a>;
    /// What this surface offers speculative decoding.
    fn draft_support(&self) -> DraftSupport {
        DraftSupport::default()
    }
    /// [`step`](Self::step) where `trees[i] = Some(parents)` makes `ids[i]` a draft tree
    /// to verify: node 0 follows the session's tokens, node j's parent is `parents[j] < j`;
    /// each node sees only its ancestors and sits, for its rotation, at its depth. The
    /// nodes take positions in order (then [`keep_path`](Self::keep_path) keeps the
    /// accepted ones). A surface without [`DraftSupport::tree`] takes chains only.
    fn step_drafts(
        &mut self,
        sessions: &mut [&mut Self::Session],
        ids: &[&[u32]],
        needs: &[Need],
        trees: &[Option<&[usize]>],
    ) -> Result<(), BackendError> {
        if let Some(tree) = trees.iter().flatten().find(|t| !is_chain(t)) {
            return Err(BackendError::Input(format!(
                "the {} surface verifies draft chains, not trees ({} nodes given)",
                self.surface().as_str(),
                tree.len()
            )));
        }
        self.step(sessions, ids, needs)
    }
    /// Keeps the accepted path of the draft tree held from position `first` on (`path`
    /// ascending from node 0, each node a child of the one before): node `path[j]` moves to
    /// `first + j`, the rest is forgotten.
    fn keep_path(
        &mut self,
        s: &mut Self::Session,
        first: usize,
        path: &[usize],
    ) -> Result<(), BackendError> {
        if !path.iter().enumerate().all(|(j, &p)| p == j) {
            return Err(BackendError::Input(format!(
                "the {} surface keeps draft chains only, not the path {path:?}",
                self.surface().as_str()
            )));
        }
        self.truncate(s, first + path.len());
        Ok(())
    }
    /// Medusa heads the surface can run (the model's, where the surface keeps hidden
    /// states: [`DraftSupport::hidden`]).
    fn medusa_heads(&self) -> usize {
        0
    }
    /// The Medusa heads' guesses from node `row` of the last draft step of `s`: per head,
    /// its `top` tokens with their probabilities, best first.
    fn head_drafts(
        &self,
        _s: &Self::Session,
        _row: usize,
        _top: usize,
    ) -> Option<Vec<Vec<(u32, f32)>>> {
        None
    }
}

/// Checks a step's arguments line up; every backend calls it first.
pub(crate) fn check_step(
    n_sessions: usize,
    ids: &[&[u32]],
    needs: &[Need],
) -> Result<(), BackendError> {
    if ids.len() != n_sessions || needs.len() != n_sessions {
        return Err(BackendError::Input(format!(
            "a step got {n_sessions} sessions, {} id lists and {} needs",
            ids.len(),
            needs.len()
        )));
    }
    Ok(())
}

impl<B: Backend> Backend for Box<B> {
    type Session = B::Session;
    fn surface(&self) -> Surface {
        (**self).surface()
    }
    fn health(&self) -> Health {
        (**self).health()
    }
    fn fallbacks(&self) -> u64 {
        (**self).fallbacks()
    }
    fn new_session(&mut self, ctx: usize) -> Result<Self::Session, BackendError> {
        (**self).new_session(ctx)
    }
    fn tokens<'a>(&self, s: &'a Self::Session) -> &'a [u32] {
        (**self).tokens(s)
    }
    fn truncate(&mut self, s: &mut Self::Session, n: usize) {
        (**self).truncate(s, n)
    }
    fn capacity(&self, s: &Self::Session) -> usize {
        (**self).capacity(s)
    }
    fn step(
        &mut self,
        sessions: &mut [&mut Self::Session],
        ids: &[&[u32]],
        needs: &[Need],
    ) -> Result<(), BackendError> {
        (**self).step(sessions, ids, needs)
    }
    fn output<'a>(&'a self, s: &'a Self::Session) -> Output<'a> {
        (**self).output(s)
    }
    fn draft_support(&self) -> DraftSupport {
        (**self).draft_support()
    }
    fn step_drafts(
        &mut self,
        sessions: &mut [&mut Self::Session],
        ids: &[&[u32]],
        needs: &[Need],
        trees: &[Option<&[usize]>],
    ) -> Result<(), BackendError> {
        (**self).step_drafts(sessions, ids, needs, trees)
    }
    fn keep_path(
        &mut self,
        s: &mut Self::Session,
        first: usize,
        path: &[usize],
    ) -> Result<(), BackendError> {
        (**self).keep_path(s, first, path)
    }
    fn medusa_heads(&self) -> usize {
        (**self).medusa_heads()
    }
    fn head_drafts(
        &self,
        s: &Self::Session,
        row: usize,
        top: usize,
    ) -> Option<Vec<Vec<(u32, f32)>>> {
        (**self).head_drafts(s, row, top)
    }
}
