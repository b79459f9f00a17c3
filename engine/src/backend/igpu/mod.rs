//! The iGPU backend: the forward pass as a chain of AQL dispatches of the gfx1151 kernels
//! (`onebit_kernels::gpu`) on a raw KFD queue.
//!
//! * Weights are copied once into a shared (zero-copy) buffer and stay there; the KV cache
//!   and the work areas are shared buffers too, so the host reads logits and writes token
//!   ids in place, without transfers.
//! * One step (a decode token, or a chunk of prompt tokens) is one batch of dispatches
//!   ordered by barrier bits with a single completion signal at the end: no host round trip
//!   between ops. Argmax runs on the GPU; the host reads back one u32.
//! * With `profile`, each op gets its own completion signal (still submitted all at once)
//!   and [`IgpuBackend::profile`] reports the CP timestamps of each.

mod chain;
pub mod emulator;
mod layout;
pub mod selftest;

use std::time::Duration;

use onebit_drv::codeobj::load::{KernargArena, LoadError, Program};
use onebit_drv::codeobj::{mach_for, CodeObject, CodeObjectError};
use onebit_drv::kfd::{AqlQueue, Device, KfdError, QueueOptions, SharedGpuBuffer};
use onebit_kernels::embd::EmbdType;
use onebit_kernels::gpu::{self, ATTN_HEAD_DIM_MAX, ATTN_SPLIT_MAX};

use crate::model::{Config, Model};
use layout::{WeightLayout, WorkLayout};

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
    /// One completion signal per op, for per-op timings.
    pub profile: bool,
    /// How long one step may take before the queue is declared hung.
    pub timeout: Duration,
}

impl Default for IgpuOptions {
    fn default() -> Self {
        Self {
            max_ctx: 4096,
            max_batch: 32,
            split_len: 256,
            profile: false,
            timeout: Duration::from_secs(30),
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

/// A model resident on the iGPU with one sequence's KV cache.
pub struct IgpuBackend {
    dev: Device,
    queue: AqlQueue,
    program: Program,
    kernargs: KernargArena,
    weights: SharedGpuBuffer,
    kv: SharedGpuBuffer,
    work: SharedGpuBuffer,
    wl: WeightLayout,
    wk: WorkLayout,
    cfg: Config,
    max_ctx: usize,
    split_len: usize,
    profile: bool,
    timeout: Duration,
    pos: usize,
    last_profile: Vec<OpTime>,
    /// (embedding lookup, LM head) kernels for the embedding's 16-bit type.
    embed_kernels: (&'static str, &'static str),
}

impl std::fmt::Debug for IgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IgpuBackend({:?}, pos {}/{})",
            self.dev, self.pos, self.max_ctx
        )
    }
}

impl IgpuBackend {
    /// Loads the kernels and uploads `model` to `dev`.
    pub fn new(dev: &Device, model: &Model, opts: &IgpuOptions) -> Result<IgpuBackend> {
        let c = &model.config;
        let embed_kernels = match model.embed_tokens.kind {
            EmbdType::F16 => ("embed_f16", "lm_head_f16"),
            EmbdType::Bf16 => ("embed_bf16", "lm_head_bf16"),
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
        if !(1..=ATTN_SPLIT_MAX as usize).contains(&opts.split_len) || opts.max_batch == 0 {
            return Err(IgpuError::Input(format!(
                "split_len {} must be 1..={ATTN_SPLIT_MAX} and max_batch ≥ 1",
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
        let wl = WeightLayout::new(model, rope.len());
        let mut weights = SharedGpuBuffer::new(dev, "onebit-weights", wl.size as usize)?;
        wl.write(model, &rope, weights.as_mut_slice());
        let kv_bytes = c.n_layers * 2 * max_ctx * c.kv_dim() * 4;
        let kv = SharedGpuBuffer::new(dev, "onebit-kv", kv_bytes)?;
        let n_splits = gpu::attn_splits(max_ctx, opts.split_len);
        let wk = WorkLayout::new(model, opts.max_batch, n_splits);
        let work = SharedGpuBuffer::new(dev, "onebit-work", wk.size as usize)?;
        let ops = chain::ops_per_step(c.n_layers);
        let packets = (2 * ops).next_power_of_two().clamp(64, 131072) as u32;
        let queue = AqlQueue::new(
            dev,
            QueueOptions {
                packets,
                ..QueueOptions::default()
            },
        )?;
        // kernarg segments are ≤ 320 bytes at 64-byte alignment
        let kernargs = KernargArena::new(dev, (ops as u64 * 384).next_multiple_of(4096))?;
        tracing::info!(
            weights = wl.size,
            kv = kv_bytes,
            work = wk.size,
            ops_per_step = ops,
            same_va = weights.same_va() && kv.same_va() && work.same_va(),
            "iGPU backend ready"
        );
        Ok(IgpuBackend {
            dev: dev.clone(),
            queue,
            program,
            kernargs,
            weights,
            kv,
            work,
            wl,
            wk,
            cfg: c.clone(),
            max_ctx,
            split_len: opts.split_len,
            profile: opts.profile,
            timeout: opts.timeout,
            pos: 0,
            last_profile: Vec::new(),
            embed_kernels,
        })
    }

    /// Tokens in the KV cache.
    pub fn len(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// KV capacity in tokens.
    pub fn max_ctx(&self) -> usize {
        self.max_ctx
    }

    /// Starts a new sequence (the cache is overwritten as positions refill).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Whether all buffers sit at the same address for CPU and GPU.
    pub fn same_va(&self) -> bool {
        self.weights.same_va() && self.kv.same_va() && self.work.same_va()
    }

    /// Appends `ids` to the sequence; returns the greedy next token (argmax of the last
    /// position's logits, computed on the GPU). Prompts run in chunks of `max_batch`.
    pub fn forward(&mut self, ids: &[u32]) -> Result<u32> {
        if ids.is_empty() {
            return Err(IgpuError::Input("forward: no tokens".into()));
        }
        if self.pos + ids.len() > self.max_ctx {
            return Err(IgpuError::Input(format!(
                "{} tokens do not fit the iGPU KV cache of {} (already {} in use); raise the context (-c)",
                ids.len(),
                self.max_ctx,
                self.pos
            )));
        }
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(IgpuError::Input(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.cfg.vocab_size
            )));
        }
        self.last_profile.clear();
        let chunks: Vec<&[u32]> = ids.chunks(self.wk.n).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            self.step(chunk, i + 1 == chunks.len())?;
        }
        Ok(self.read_u32(self.wk.token))
    }

    /// The logits of the last position of the last [`forward`](Self::forward).
    pub fn logits(&self) -> Vec<f32> {
        let at = self.wk.logits as usize;
        self.work.as_slice()[at..at + 4 * self.cfg.vocab_size]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()
    }

    /// Per-op timings of the last forward (profile mode; empty otherwise).
    pub fn profile(&self) -> &[OpTime] {
        &self.last_profile
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    fn read_u32(&self, off: u64) -> u32 {
        let s = &self.work.as_slice()[off as usize..off as usize + 4];
        u32::from_le_bytes(s.try_into().expect("4 bytes"))
    }

    fn step(&mut self, ids: &[u32], with_head: bool) -> Result<()> {
        let at = self.wk.ids as usize;
        for (i, id) in ids.iter().enumerate() {
            self.work.as_mut_slice()[at + 4 * i..at + 4 * i + 4].copy_from_slice(&id.to_le_bytes());
        }
        self.kernargs.reset();
        let ops = chain::build(self, ids.len(), with_head)?;
        chain::submit(self, ops)?;
        self.pos += ids.len();
        Ok(())
    }
}
