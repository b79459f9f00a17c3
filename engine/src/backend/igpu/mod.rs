//! The iGPU backend: the forward pass as a chain of AQL dispatches of the gfx1151 kernels
//! (`onebit_kernels::gpu`) on a raw KFD queue.
//!
//! * The large weights (packed ternary rows, the token embedding) are read in place from
//!   the sealed memfd the model file was loaded into, exported to the GPU as udmabuf
//!   chunks: the CPU and the GPU read the same pages of the one copy. What the file cannot
//!   give in place (f32 norms, the RoPE table, tensors of a model not loaded into a memfd)
//!   is copied once into a small side buffer. Every
//!   sequence ([`IgpuSeq`]) owns a shared buffer with its KV cache, its token ids and its
//!   logits, so the host reads logits and writes ids in place, without transfers.
//! * One step advances every sequence given to [`IgpuBackend::run`] in one batch of
//!   dispatches ordered by barrier bits with a single completion signal at the end: no host
//!   round trip between ops or sequences. Argmax runs on the GPU; the host reads one u32.
//! * [`IgpuSurface`] puts this behind [`crate::backend::Backend`].
//! * With `profile`, each op gets its own completion signal (still submitted all at once)
//!   and [`IgpuBackend::profile`] reports the CP timestamps of each.

mod chain;
pub mod emulator;
mod layout;
pub mod open;
pub mod selftest;
mod surface;

pub use surface::{FaultKind, FaultPlan, IgpuSession, IgpuSurface};

use std::os::fd::RawFd;
use std::time::Duration;

use onebit_drv::buffer::{SharedBuffer, Udmabuf};
use onebit_drv::codeobj::load::{KernargArena, LoadError, Program};
use onebit_drv::codeobj::{mach_for, CodeObject, CodeObjectError};
use onebit_drv::kfd::{AqlQueue, Device, KfdError, QueueOptions, SharedGpuBuffer};
use onebit_kernels::attention::{KvRows, KvRowsMut};
use onebit_kernels::embd::EmbdType;
use onebit_kernels::gpu::{self, ATTN_HEAD_DIM_MAX, ATTN_SPLIT_MAX};

use crate::backend::shared_buffers::{IGPU_SEQUENCE, IGPU_WEIGHTS, IGPU_WORK, MODEL_FILE};
use crate::model::{Activation, Block, Bytes, Config, Model, SealedFile, SharedBytes};
use chain::SeqAddrs;
use layout::{At, SeqLayout, WeightLayout, WorkLayout};
use std::sync::Arc;

/// Errors of the iGPU backend.
#[derive(Debug, thiserror::Error)]
pub enum IgpuError {
    #[error(transparent)]
    Kfd(#[from] KfdError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the embedded gfx1151 code object: {0}")]
    CodeObject(#[from] CodeObjectError),
    #[error("{0}")]
    Model(String),
    #[error("{0}")]
    Input(String),
}

pub type Result<T, E = IgpuError> = std::result::Result<T, E>;

/// Backend settings.
#[derive(Clone, Debug)]
pub struct IgpuOptions {
    /// KV-cache capacity in tokens (capped by the model's context).
    pub max_ctx: usize,
    /// Prompt tokens per prefill step.
    pub max_batch: usize,
    /// KV positions per flash-decoding split (≤ 256).
    pub split_len: usize,
    /// Sequences one submission advances at most (sizes the kernel-argument arena; more
    /// are split over several submissions).
    pub max_sessions: usize,
    /// One completion signal per op, for per-op timings.
    pub profile: bool,
    /// How long one step may take before the queue is declared hung.
    pub timeout: Duration,
    /// The caller points the model at the GPU's weights ([`IgpuBackend::share_weights_with`])
    /// or drops it: the source bytes of whatever is copied to the side buffer are freed as
    /// they are copied (a sealed memfd's pages punched out), so the upload never holds two
    /// copies of the weights. Tensors read in place from the file are never freed.
    pub discard_sources: bool,
}

impl Default for IgpuOptions {
    fn default() -> Self {
        Self {
            max_ctx: 4096,
            max_batch: 32,
            split_len: 256,
            max_sessions: 8,
            profile: false,
            timeout: Duration::from_secs(30),
            discard_sources: false,
        }
    }
}

/// The CP timestamps of one op of the last step (profile mode).
#[derive(Clone, Debug)]
pub struct OpTime {
    pub name: &'static str,
    /// GPU clock ticks from start to end.
    pub ticks: u64,
}

/// A weight buffer of the GPU: the model file's memfd read in place, or the side buffer
/// once filled. From then on the GPU and the CPU only read it.
pub struct WeightBuffer(SharedGpuBuffer);

// SAFETY: the buffer's pages are written once, before the Arc exists; afterwards both the
// GPU and every CPU thread only read them, and the owning handles inside are only dropped
// (once, with the last Arc), so sharing references across threads cannot race.
unsafe impl Sync for WeightBuffer {}

impl SharedBytes for WeightBuffer {
    fn bytes(&self) -> &[u8] {
        self.0.as_slice()
    }
    fn memfd(&self) -> Option<(RawFd, u64)> {
        self.0.memfd()
    }
}

impl WeightBuffer {
    pub fn gpu_va(&self) -> u64 {
        self.0.gpu_va()
    }

    pub fn same_va(&self) -> bool {
        self.0.same_va()
    }

    /// The CPU address range of the buffer (to show a CPU tensor lies inside it).
    pub fn cpu_range(&self) -> std::ops::Range<usize> {
        self.0.cpu_range()
    }

    /// The memfds behind the buffer (one per udmabuf chunk; none on the GTT fallback).
    pub fn dmabuf_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.0.dmabuf_fds()
    }
}

/// A sequence's shared buffer serving as a CPU session's keys and values, after the
/// sequence left the device (see [`IgpuSeq::into_cpu_kv`]).
struct DeviceKv {
    seq: IgpuSeq,
}

// SAFETY: `layer` only reads the buffer through `&self` (`as_slice`) and `layer_mut` needs
// `&mut self`, so shared references never see a write; the GPU no longer runs this
// sequence (its surface gave it up before handing the buffer over).
unsafe impl Sync for DeviceKv {}

impl DeviceKv {
    fn range(&self, off: u64) -> std::ops::Range<usize> {
        off as usize..off as usize + self.seq.layout.cache_bytes as usize
    }
}

impl crate::forward::KvMemory for DeviceKv {
    fn layer(&self, l: usize) -> (KvRows<'_>, KvRows<'_>) {
        let (k, v) = self.seq.layout.layer(l);
        let bytes = self.seq.buf.as_slice();
        let f = |r: std::ops::Range<usize>| {
            let b = &bytes[r];
            // SAFETY: each layer's cache starts at a multiple of `cache_bytes` (whole f32s)
            // from the page-aligned buffer, so it is f32-aligned; the slice above checked
            // the bounds; any bits are a valid f32; the borrow of `self` keeps it alive.
            unsafe { std::slice::from_raw_parts(b.as_ptr().cast::<f32>(), b.len() / 4) }
        };
        (KvRows::F32(f(self.range(k))), KvRows::F32(f(self.range(v))))
    }

    fn layer_mut(&mut self, l: usize) -> (KvRowsMut<'_>, KvRowsMut<'_>) {
        let (k, v) = self.seq.layout.layer(l);
        let (rk, rv) = (self.range(k), self.range(v));
        debug_assert!(rk.end <= rv.start, "keys precede values");
        let bytes = self.seq.buf.as_mut_slice();
        let (head, tail) = bytes.split_at_mut(rv.start);
        let f = |b: &mut [u8]| {
            // SAFETY: as in `layer`; the two ranges are disjoint halves of one `&mut`
            // borrow (split above), so the slices never alias.
            unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr().cast::<f32>(), b.len() / 4) }
        };
        (
            KvRowsMut::F32(f(&mut head[rk])),
            KvRowsMut::F32(f(&mut tail[..rv.end - rv.start])),
        )
    }
}

/// One sequence on the iGPU: its shared buffer (KV cache, ids, logits, token) and the
/// tokens it holds.
pub struct IgpuSeq {
    buf: SharedGpuBuffer,
    layout: SeqLayout,
    tokens: Vec<u32>,
}

impl IgpuSeq {
    /// Tokens in the KV cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn max_ctx(&self) -> usize {
        self.layout.max_ctx
    }

    /// Forgets every position from `n` on (the cache is overwritten as they refill).
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
    }

    /// The CPU address range of the sequence's shared buffer.
    pub fn cpu_range(&self) -> std::ops::Range<usize> {
        self.buf.cpu_range()
    }

    /// The logits the last step with a head left, read in place from the shared buffer.
    pub fn logits(&self) -> &[f32] {
        let bytes = &self.buf.as_slice()[self.layout.logits as usize..];
        let n = (self.layout.token - self.layout.logits) as usize / 4;
        // SAFETY: the logits area starts 256-byte aligned inside a page-aligned buffer, so
        // the pointer is aligned for f32; it holds `n` f32s (the layout reserved them before
        // `token`), every bit pattern is a valid f32, and the slice borrows `self`, so the
        // buffer outlives it and no step (which needs `&mut self`) can write it meanwhile.
        let all = unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), n) };
        &all[..n.min(self.vocab())]
    }

    /// The greedy token the last step with a head left.
    pub fn token(&self) -> u32 {
        let at = self.layout.token as usize;
        u32::from_le_bytes(self.buf.as_slice()[at..at + 4].try_into().expect("4 bytes"))
    }

    /// The CPU session that continues this sequence on its own buffer: the keys and
    /// values the device wrote are read where they are, not copied (the layout is the CPU
    /// session's).
    pub fn into_cpu_session(self, model: &Model) -> crate::forward::Session {
        let (max_ctx, tokens) = (self.max_ctx(), self.tokens.clone());
        let kv = DeviceKv { seq: self };
        crate::forward::Session::on_memory(model, max_ctx, &tokens, Box::new(kv))
    }

    /// The sequence a CPU session made by [`into_cpu_session`](Self::into_cpu_session)
    /// continues on, holding the session's tokens (those the CPU added included); the
    /// session itself when its cache is not a sequence's buffer.
    pub fn from_cpu_session(
        s: crate::forward::Session,
    ) -> std::result::Result<IgpuSeq, crate::forward::Session> {
        let (tokens, kv) = s.into_memory::<DeviceKv>()?;
        let mut seq = kv.seq;
        seq.tokens = tokens;
        Ok(seq)
    }

    fn vocab(&self) -> usize {
        (self.layout.token - self.layout.logits) as usize / 4
    }

    fn write_ids(&mut self, ids: &[u32]) {
        let at = self.layout.ids as usize;
        for (i, id) in ids.iter().enumerate() {
            self.buf.as_mut_slice()[at + 4 * i..at + 4 * i + 4].copy_from_slice(&id.to_le_bytes());
        }
    }
}

/// A model resident on the iGPU; sequences ([`IgpuSeq`]) come from
/// [`new_sequence`](Self::new_sequence). It also keeps one sequence of its own for the
/// single-sequence calls ([`forward`](Self::forward), [`logits`](Self::logits)).
pub struct IgpuBackend {
    dev: Device,
    queue: AqlQueue,
    program: Program,
    kernargs: KernargArena,
    weights: Arc<WeightBuffer>,
    /// The model file's memfd, when the large weights are read in place from it.
    file: Option<Arc<WeightBuffer>>,
    work: SharedGpuBuffer,
    wl: WeightLayout,
    wk: WorkLayout,
    cfg: Config,
    max_ctx: usize,
    max_sessions: usize,
    split_len: usize,
    profile: bool,
    timeout: Duration,
    own: Option<IgpuSeq>,
    last_profile: Vec<OpTime>,
    /// (embedding lookup, LM head) kernels for the embedding's 16-bit type.
    /// The embedding gather, the LM head for one row and for up to 8 rows.
    embed_kernels: (&'static str, &'static str, &'static str),
}

impl std::fmt::Debug for IgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IgpuBackend({:?}, ctx {})", self.dev, self.max_ctx)
    }
}

/// Whether the iGPU kernels can run `model`'s graph: they chain BitNet 2B-4T's block
/// (relu², sub-norms, a tied head, unscaled RoPE); other families run on the CPU. The
/// error names the family and what differs.
pub fn model_supported(model: &Model) -> std::result::Result<(), String> {
    let c = &model.config;
    let mut differs = Vec::new();
    if c.block != Block::BitNet(Activation::Relu2) {
        differs.push(format!("{:?} block", c.block));
    }
    if model.lm_head.is_some() {
        differs.push("untied head".to_string());
    }
    if c.rope_scaling.is_some() {
        differs.push("scaled RoPE".to_string());
    }
    if differs.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the iGPU kernels run BitNet b1.58's block (relu², sub-norms, tied head, unscaled RoPE); this model is {} ({}): use the CPU",
        c.family.name(),
        differs.join(", ")
    ))
}

impl IgpuBackend {
    /// Loads the kernels and uploads `model` to `dev`.
    pub fn new(dev: &Device, model: &Model, opts: &IgpuOptions) -> Result<IgpuBackend> {
        let c = &model.config;
        model_supported(model).map_err(IgpuError::Model)?;
        let embed_kernels = match model.embed_tokens.kind {
            EmbdType::F16 => ("embed_f16", "lm_head_f16", "lm_head_f16_x8"),
            EmbdType::Bf16 => ("embed_bf16", "lm_head_bf16", "lm_head_bf16_x8"),
            other => {
                return Err(IgpuError::Model(format!(
                    "the iGPU kernels read F16 or BF16 token embeddings; this model's is {} — \
                     convert it (onebit convert) or use the CPU",
                    other.name()
                )))
            }
        };
        if c.head_dim > ATTN_HEAD_DIM_MAX as usize || !c.head_dim.is_multiple_of(2) {
            return Err(IgpuError::Model(format!(
                "head_dim {} is not even or exceeds {ATTN_HEAD_DIM_MAX}",
                c.head_dim
            )));
        }
        if !(1..=ATTN_SPLIT_MAX as usize).contains(&opts.split_len)
            || opts.max_batch == 0
            || opts.max_sessions == 0
        {
            return Err(IgpuError::Input(format!(
                "split_len {} must be 1..={ATTN_SPLIT_MAX}, max_batch and max_sessions ≥ 1",
                opts.split_len
            )));
        }
        let gfx = dev.node().gfx_name();
        let mach = mach_for(&gfx).ok_or_else(|| {
            IgpuError::Model(format!(
                "GPU {gfx} is not an RDNA 3/3.5 part the kernels can be built for"
            ))
        })?;
        let co = CodeObject::parse(gpu::CODE_OBJECT, mach)?;
        let program = Program::load(dev, &co)?;
        let max_ctx = opts.max_ctx.clamp(1, c.max_context);
        let rope = gpu::rope_table(c.head_dim, c.rope_theta, max_ctx);
        let file = import_model_file(dev, model);
        let wl = WeightLayout::new(model, rope.len(), file.as_ref().map(|(f, _)| f));
        let file = file.map(|(_, buf)| Arc::new(WeightBuffer(buf)));
        let mut weights = SharedGpuBuffer::new(
            dev,
            IGPU_WEIGHTS.name,
            wl.size as usize,
            IGPU_WEIGHTS.descriptor,
        )?;
        wl.write(model, &rope, weights.as_mut_slice(), opts.discard_sources);
        let weights = Arc::new(WeightBuffer(weights));
        let n_splits = gpu::attn_splits(max_ctx, opts.split_len);
        let wk = WorkLayout::new(model, opts.max_batch, n_splits);
        let work =
            SharedGpuBuffer::new(dev, IGPU_WORK.name, wk.size as usize, IGPU_WORK.descriptor)?;
        let ops = chain::ops_per_step(c.n_layers);
        let packets = (2 * ops * opts.max_sessions)
            .next_power_of_two()
            .clamp(64, 131072) as u32;
        let queue = AqlQueue::new(
            dev,
            QueueOptions {
                packets,
                ..QueueOptions::default()
            },
        )?;
        // kernarg segments are ≤ 320 bytes at 64-byte alignment
        let arena = ops as u64 * 384 * opts.max_sessions as u64;
        let kernargs = KernargArena::new(dev, arena.next_multiple_of(4096))?;
        tracing::info!(
            in_place = wl.in_place_bytes(model),
            copied = wl.size,
            work = wk.size,
            ops_per_step = ops,
            max_sessions = opts.max_sessions,
            same_va = weights.same_va() && work.same_va(),
            "iGPU backend ready"
        );
        let mut be = IgpuBackend {
            dev: dev.clone(),
            queue,
            program,
            kernargs,
            weights,
            file,
            work,
            wl,
            wk,
            cfg: c.clone(),
            max_ctx,
            max_sessions: opts.max_sessions,
            split_len: opts.split_len,
            profile: opts.profile,
            timeout: opts.timeout,
            own: None,
            last_profile: Vec::new(),
            embed_kernels,
        };
        be.own = Some(be.new_sequence(max_ctx)?);
        Ok(be)
    }

    /// A new, empty sequence of up to `max_ctx` tokens (capped by the backend's), with its
    /// own shared buffer.
    pub fn new_sequence(&self, max_ctx: usize) -> Result<IgpuSeq> {
        let layout = SeqLayout::new(&self.cfg, max_ctx.clamp(1, self.max_ctx), self.wk.n);
        let buf = SharedGpuBuffer::new(
            &self.dev,
            IGPU_SEQUENCE.name,
            layout.size as usize,
            IGPU_SEQUENCE.descriptor,
        )?;
        tracing::debug!(bytes = layout.size, ctx = layout.max_ctx, "iGPU sequence");
        Ok(IgpuSeq {
            buf,
            layout,
            tokens: Vec::new(),
        })
    }

    /// Tokens in the own sequence's KV cache.
    pub fn len(&self) -> usize {
        self.own.as_ref().map_or(0, |s| s.tokens.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// KV capacity in tokens.
    pub fn max_ctx(&self) -> usize {
        self.max_ctx
    }

    /// Starts the own sequence anew (the cache is overwritten as positions refill).
    pub fn reset(&mut self) {
        if let Some(s) = &mut self.own {
            s.tokens.clear();
        }
    }

    /// The side buffer (what was copied).
    pub fn weights(&self) -> &Arc<WeightBuffer> {
        &self.weights
    }

    /// The model file's memfd as the GPU reads it, when the large weights are read in
    /// place.
    pub fn file_weights(&self) -> Option<&Arc<WeightBuffer>> {
        self.file.as_ref()
    }

    /// The GPU address of a large weight.
    fn weight_va(&self, at: At) -> u64 {
        match at {
            At::Side(off) => self.weights.gpu_va() + off,
            // `file` is Some whenever the layout placed anything in the file.
            At::File(off) => self.file.as_ref().map_or(0, |f| f.gpu_va()) + off,
        }
    }

    /// Points `model`'s ternary projections and token embedding at the GPU's weights, so
    /// that the CPU reads the very mapping the GPU reads and the pages of copied tensors
    /// can go: one copy of the weights in memory. `model` must be the model this backend
    /// was made from. Returns the bytes now shared.
    pub fn share_weights_with(&self, model: &mut Model) -> usize {
        let side: Arc<dyn SharedBytes> = self.weights.clone();
        let file: Option<Arc<dyn SharedBytes>> =
            self.file.clone().map(|f| f as Arc<dyn SharedBytes>);
        let mut shared = 0;
        let mut point = |data: &mut Bytes, at: At| {
            // The layout placed each tensor with its own length; comparing the bytes would
            // page the file back in, so only the length is checked.
            let (buf, off, copied) = match (at, &file) {
                (At::Side(off), _) => (&side, off, true),
                (At::File(off), Some(f)) => (f, off, false),
                (At::File(_), None) => return,
            };
            if let Some(b) = Bytes::shared(buf, off as usize, data.len()) {
                // A copied tensor's source pages go; one read in place is those very pages.
                if copied {
                    data.discard_pages();
                }
                shared += b.len();
                *data = b;
            }
        };
        point(&mut model.embed_tokens.data, self.wl.emb);
        for (l, o) in model.layers.iter_mut().zip(&self.wl.layers) {
            for (t, at) in [
                (&mut l.q_proj, o.q),
                (&mut l.k_proj, o.k),
                (&mut l.v_proj, o.v),
                (&mut l.o_proj, o.o),
                (&mut l.gate_proj, o.gate),
                (&mut l.up_proj, o.up),
                (&mut l.down_proj, o.down),
            ] {
                // An input-major copy (sparse down_proj) keeps its own row-major source,
                // except Sherry's, whose rows are never parked and may move like the rest.
                if t.columns.is_none() || t.is_sherry() {
                    point(&mut t.data, at.at);
                }
            }
        }
        tracing::info!(
            bytes = shared,
            "the CPU reads the weights in the mapping the iGPU reads (one copy in memory)"
        );
        shared
    }

    /// Whether the weight and work buffers sit at the same address for CPU and GPU.
    pub fn same_va(&self) -> bool {
        self.weights.same_va()
            && self.file.as_ref().is_none_or(|f| f.same_va())
            && self.work.same_va()
            && self.own.as_ref().is_none_or(|s| s.buf.same_va())
    }

    /// Appends `ids` to the own sequence; returns the greedy next token (argmax of the
    /// last position's logits, computed on the GPU). Prompts run in chunks of `max_batch`.
    pub fn forward(&mut self, ids: &[u32]) -> Result<u32> {
        let mut own = self
            .own
            .take()
            .ok_or_else(|| IgpuError::Input("the backend has no sequence of its own".into()))?;
        let done = self.run(&mut [&mut own], &[ids], &[true]);
        let token = own.token();
        self.own = Some(own);
        done.map(|()| token)
    }

    /// The logits of the last position of the last [`forward`](Self::forward).
    pub fn logits(&self) -> Vec<f32> {
        self.own
            .as_ref()
            .map_or_else(Vec::new, |s| s.logits().to_vec())
    }

    /// Appends `ids[i]` to `seqs[i]` for every i; with `heads[i]` the logits of its last
    /// new token and their argmax are left in its buffer. All sequences advance in one
    /// submission (more than `max_sessions`, or prompts longer than `max_batch`, take
    /// several), every op ordered after the previous by the barrier bit.
    pub fn run(&mut self, seqs: &mut [&mut IgpuSeq], ids: &[&[u32]], heads: &[bool]) -> Result<()> {
        if ids.len() != seqs.len() || heads.len() != seqs.len() {
            return Err(IgpuError::Input(format!(
                "{} sequences, {} id lists, {} head flags",
                seqs.len(),
                ids.len(),
                heads.len()
            )));
        }
        for (seq, ids) in seqs.iter().zip(ids) {
            if seq.tokens.len() + ids.len() > seq.max_ctx() {
                return Err(IgpuError::Input(format!(
                    "{} tokens do not fit the iGPU KV cache of {} (already {} in use); raise the context (-c)",
                    ids.len(),
                    seq.max_ctx(),
                    seq.tokens.len()
                )));
            }
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
                return Err(IgpuError::Input(format!(
                    "token id {bad} is outside the vocabulary of {}",
                    self.cfg.vocab_size
                )));
            }
        }
        self.last_profile.clear();
        let mut fed = vec![0usize; seqs.len()];
        loop {
            // One round: the next chunk of every sequence with tokens left, at most
            // `max_sessions` sequences per submission.
            let mut round = Vec::new();
            for (i, ids) in ids.iter().enumerate() {
                if fed[i] < ids.len() && round.len() < self.max_sessions {
                    let end = (fed[i] + self.wk.n).min(ids.len());
                    round.push((i, fed[i], end));
                }
            }
            if round.is_empty() {
                return Ok(());
            }
            self.kernargs.reset();
            let mut ops = Vec::new();
            // Parts share one chain while their rows fit the work buffer: decoding
            // sequences (one row each) then read the weights once per step, not once each.
            // A sequence's tokens grow only once its round went through: a failed build or
            // submission leaves half-written cache positions past them, which are forgotten.
            let mut parts: Vec<chain::Part> = Vec::new();
            let mut rows = 0;
            for &(i, from, to) in &round {
                let seq = &mut *seqs[i];
                if rows + (to - from) > self.wk.n {
                    ops.extend(chain::build(self, &parts)?);
                    parts.clear();
                    rows = 0;
                }
                seq.write_ids(&ids[i][from..to]);
                parts.push(chain::Part {
                    seq: SeqAddrs {
                        base: seq.buf.gpu_va(),
                        layout: seq.layout,
                    },
                    pos0: seq.tokens.len(),
                    n: to - from,
                    head: heads[i] && to == ids[i].len(),
                });
                rows += to - from;
            }
            ops.extend(chain::build(self, &parts)?);
            chain::submit(self, &ops)?;
            for &(i, from, to) in &round {
                seqs[i].tokens.extend_from_slice(&ids[i][from..to]);
            }
            for &(i, _, to) in &round {
                fed[i] = to;
            }
        }
    }

    /// Per-op timings of the last forward (profile mode; empty otherwise).
    pub fn profile(&self) -> &[OpTime] {
        &self.last_profile
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.dev
    }
}

/// The sealed memfd `model` was loaded into, exported to the GPU as it is (udmabuf chunks
/// imported at adjacent GPU addresses); `None`, after saying why, when the model was not
/// loaded into a memfd or the kernel cannot import it: the weights are then copied.
fn import_model_file(dev: &Device, model: &Model) -> Option<(Arc<SealedFile>, SharedGpuBuffer)> {
    let Bytes::Sealed { file, .. } = &model.embed_tokens.data else {
        tracing::info!(
            "the model was not loaded into a memfd (--load mmap, or the embedded model): \
             the iGPU copies its weights"
        );
        return None;
    };
    let io = dev.io();
    let imported = Udmabuf::open(io)
        .map_err(|e| e.to_string())
        .and_then(|udmabuf| {
            SharedBuffer::from_memfd(
                io,
                &udmabuf,
                MODEL_FILE.name,
                file.raw_fd(),
                0,
                file.mapped_len(),
                MODEL_FILE.descriptor,
            )
            .map_err(|e| e.to_string())
        })
        .and_then(|buf| SharedGpuBuffer::import(dev, buf).map_err(|e| e.to_string()));
    match imported {
        Ok(buf) => Some((file.clone(), buf)),
        Err(e) => {
            tracing::info!(
                error = %e,
                "the GPU cannot read the model file's memfd in place; copying the weights \
                 (load udmabuf, and raise /sys/module/udmabuf/parameters/size_limit_mb for \
                 fewer chunks)"
            );
            None
        }
    }
}
