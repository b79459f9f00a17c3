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
}
