//! The forward pass of a ternary model, block by block as the paper and the HF model
//! define BitNet b1.58's:
//!
//! ```text
//! h = embed_tokens[ids]
//! per layer:  a = input_layernorm(h);  q,k,v = BitLinear(a);  RoPE(q,k);  o = attn(q,k,v)
//!             h += o_proj(attn_sub_norm(o))
//!             f = post_attention_layernorm(h)
//!             h += down_proj(ffn_sub_norm(act(gate_proj(f)) · up_proj(f)))
//! logits = norm(h) · headᵀ          (head = embed_tokens when tied)
//! ```
//! `act` is relu² (2B-4T) or SiLU (1bitLLM). The LLaMA-BitLinear block (Llama3-8B-1.58,
//! Falcon3, Falcon-E) has no sub-norms and SiLU; it lives in [`llama_block`], sharing the
//! attention and the FFN's input projections defined here.
//! Every BitLinear quantizes its input per token to int8 (absmax) and multiplies by the
//! ternary weights in integers; q/k/v share one quantized input, gate/up another.
//!
//! One call processes the new tokens of several sessions at once: prefill is one session
//! with many tokens, batched decode is many sessions with one token each. The projections
//! then run as one GEMM over all rows, so each weight is read once per call.

mod llama_block;

use crate::backend::Need;
use crate::model::{Activation, Block, ColumnCounter, Layer, Model, TernaryTensor, SPARSE_COLUMNS};

/// Head rows the screened head scored in full, of all the rows it screened (the bytes a
/// screened step reads of the float head; a benchmark's roofline and report read it).
pub static SCREENED_HEAD_ROWS: ColumnCounter = ColumnCounter::new();
use crate::{Error, Result};
pub use onebit_kernels::attention::KvFormat;
use onebit_kernels::attention::{
    attention as flash_attention, AttnShape, KvBuf, KvRows, KvRowsMut, KvShape, Segment, TREE_ROWS,
};
use onebit_kernels::float::{
    add_inplace, relu2_mul, rms_norm_inplace, rope_cos_sin, rope_rotate_half_cached, silu_mul,
};
use onebit_kernels::screen::{Int8Head, TopK};
use onebit_kernels::sherry;
use onebit_kernels::ternary::colsparse::{
    gemm_sparse, gemv_sparse, sparse_gemm_threshold, sparse_gemv_threshold,
};
use onebit_kernels::ternary::{gemm, gemv, gemv_many, padded_cols, GemvJob, Isa};
use onebit_kernels::{parallel, quantize_row, ActScale};
use std::borrow::Cow;

/// Which logits a forward call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsMode {
    /// None (prompt prefill whose logits are not needed).
    None,
    /// Only the last new token's (per session).
    Last,
    /// Every new token's, `[n_new, vocab]` row-major.
    All,
}

/// One sequence's state: its tokens and its KV cache (in the session's [`KvFormat`]).
pub struct Session {
    max_ctx: usize,
    shape: KvShape,
    format: KvFormat,
    n_layers: usize,
    tokens: Vec<u32>,
    kv: Box<dyn KvMemory>,
}

/// Where a session's keys and values live: per layer `[max_ctx, kv_dim]` keys and as many
/// values, in one [`KvFormat`]. The CPU's own sessions keep them on the heap; a session a
/// device surface hands to the CPU keeps them (f32) in the device's shared buffer, in the
/// same layout, so the CPU continues on the very memory the device wrote.
pub trait KvMemory: Send + Sync + std::any::Any {
    /// Layer `l`'s keys and values, `[max_ctx, kv_dim]` each.
    fn layer(&self, l: usize) -> (KvRows<'_>, KvRows<'_>);
    fn layer_mut(&mut self, l: usize) -> (KvRowsMut<'_>, KvRowsMut<'_>);
}

/// Keys and values on the heap; pages are touched only as positions fill.
struct HeapKv {
    keys: Vec<KvBuf>,
    values: Vec<KvBuf>,
}

impl KvMemory for HeapKv {
    fn layer(&self, l: usize) -> (KvRows<'_>, KvRows<'_>) {
        (self.keys[l].rows(), self.values[l].rows())
    }
    fn layer_mut(&mut self, l: usize) -> (KvRowsMut<'_>, KvRowsMut<'_>) {
        (self.keys[l].rows_mut(), self.values[l].rows_mut())
    }
}

fn kv_shape(model: &Model) -> KvShape {
    KvShape {
        n_kv_heads: model.config.n_kv_heads,
        head_dim: model.config.head_dim,
    }
}

impl Session {
    /// A session that can hold up to `max_ctx` tokens (capped by the model's context), its
    /// cache exact ([`KvFormat::F32`]: what reference comparisons need). Serving takes
    /// [`KvFormat::default`] through [`Session::with_format`].
    pub fn new(model: &Model, max_ctx: usize) -> Self {
        Self::with_format(model, max_ctx, KvFormat::F32)
    }

    /// [`Session::new`] with the cache stored as `format`.
    pub fn with_format(model: &Model, max_ctx: usize, format: KvFormat) -> Self {
        let c = &model.config;
        let max_ctx = max_ctx.clamp(1, c.max_context);
        let shape = kv_shape(model);
        let make = || {
            (0..c.n_layers)
                .map(|_| KvBuf::new(format, shape, max_ctx))
                .collect()
        };
        Self {
            max_ctx,
            shape,
            format,
            n_layers: c.n_layers,
            tokens: Vec::new(),
            kv: Box::new(HeapKv {
                keys: make(),
                values: make(),
            }),
        }
    }

    /// A session holding `tokens` whose keys and values are already in `kv`: no copy.
    /// `kv` holds `[max_ctx, kv_dim]` per layer of `model` (a device surface lays its
    /// sequences out so, from the same config).
    pub fn on_memory(model: &Model, max_ctx: usize, tokens: &[u32], kv: Box<dyn KvMemory>) -> Self {
        let c = &model.config;
        let shape = kv_shape(model);
        let format = kv.layer(0).0.format();
        debug_assert!((0..c.n_layers).all(|l| {
            let (k, v) = kv.layer(l);
            k.positions(shape) == max_ctx && v.positions(shape) == max_ctx
        }));
        Self {
            max_ctx,
            shape,
            format,
            n_layers: c.n_layers,
            tokens: tokens[..tokens.len().min(max_ctx)].to_vec(),
            kv,
        }
    }

    /// Tokens whose keys and values are in the cache.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn max_ctx(&self) -> usize {
        self.max_ctx
    }

    /// How the cache stores keys and values.
    pub fn kv_format(&self) -> KvFormat {
        self.format
    }

    /// Forgets every position from `n` on (keeps a shared prompt prefix).
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
    }

    /// The tokens held and the memory their keys and values lie in, when that memory is a
    /// `T` (a device's shared buffer lent to the CPU, given back); the session itself
    /// otherwise.
    pub fn into_memory<T: KvMemory>(self) -> std::result::Result<(Vec<u32>, Box<T>), Self> {
        if !(&*self.kv as &dyn std::any::Any).is::<T>() {
            return Err(self);
        }
        let any: Box<dyn std::any::Any> = self.kv;
        match any.downcast::<T>() {
            Ok(kv) => Ok((self.tokens, kv)),
            Err(_) => unreachable!("checked to be a T above"),
        }
    }

    /// Keeps one path of the draft tree held from position `first` on: node `path[j]`
    /// (ascending, `path[0] = 0`, each node a child of the one before) moves to position
    /// `first + j`, its keys and values copied as stored; every other node is forgotten.
    /// The tree's nodes were rotated for their depth, which is the position they land on.
    pub fn keep_path(&mut self, first: usize, path: &[usize]) -> Result<()> {
        let held = self.tokens.len().saturating_sub(first);
        if path.first().is_some_and(|&p| p != 0)
            || path.windows(2).any(|w| w[1] <= w[0])
            || path.last().is_some_and(|&p| p >= held)
        {
            return Err(Error::Input(format!(
                "keep_path: {path:?} is not an ascending path from the root of the {held} draft positions held"
            )));
        }
        for l in 0..self.n_layers {
            let (mut k, mut v) = self.kv.layer_mut(l);
            for (j, &node) in path.iter().enumerate() {
                k.copy_position(self.shape, first + node, first + j);
                v.copy_position(self.shape, first + node, first + j);
            }
        }
        for (j, &node) in path.iter().enumerate() {
            self.tokens[first + j] = self.tokens[first + node];
        }
        self.tokens.truncate(first + path.len());
        Ok(())
    }

    /// Layer `l`'s keys and values for the positions held, `[pos, kv_dim]` f32 each: the
    /// cache itself when it is f32, a widened copy otherwise.
    pub fn layer_kv(&self, l: usize) -> (Cow<'_, [f32]>, Cow<'_, [f32]>) {
        let n = self.tokens.len();
        let (k, v) = self.kv.layer(l);
        (k.to_f32(self.shape, n), v.to_f32(self.shape, n))
    }

    /// Bytes of KV cache per token of context, stored as `format`.
    pub fn kv_bytes_per_token(model: &Model, format: KvFormat) -> usize {
        model.config.n_layers * 2 * format.row_bytes(kv_shape(model))
    }
}

/// Runs `ids` through the model after the session's current tokens and returns the
/// logits `mode` asks for.
pub fn forward(
    model: &Model,
    session: &mut Session,
    ids: &[u32],
    mode: LogitsMode,
) -> Result<Vec<f32>> {
    let mut out = forward_sessions(model, &mut [session], &[ids], mode)?;
    Ok(out.pop().unwrap_or_default())
}

/// One decode step for several sessions together (one token each); returns each
/// session's logits.
pub fn decode_batch(
    model: &Model,
    sessions: &mut [&mut Session],
    ids: &[u32],
) -> Result<Vec<Vec<f32>>> {
    if sessions.len() != ids.len() {
        return Err(Error::Input(format!(
            "decode_batch: {} sessions but {} tokens",
            sessions.len(),
            ids.len()
        )));
    }
    let per: Vec<&[u32]> = ids.chunks(1).collect();
    forward_sessions(model, sessions, &per, LogitsMode::Last)
}

/// Where one row of the batch belongs.
#[derive(Clone, Copy)]
struct RowPos {
    session: usize,
    /// The cache position it is stored at.
    pos: usize,
    /// The position it is rotated for: `pos`, except in a draft tree, where siblings share
    /// a depth and so a rotation.
    rope: usize,
}

/// The general entry: `new_ids[s]` is appended to `sessions[s]`.
pub fn forward_sessions(
    model: &Model,
    sessions: &mut [&mut Session],
    new_ids: &[&[u32]],
    mode: LogitsMode,
) -> Result<Vec<Vec<f32>>> {
    let need = match mode {
        LogitsMode::None => Need::Nothing,
        LogitsMode::Last => Need::Logits,
        LogitsMode::All => Need::AllLogits,
    };
    let needs = vec![need; sessions.len()];
    let out = forward_needs(model, sessions, new_ids, &needs, None)?;
    Ok(out
        .into_iter()
        .map(|r| match r {
            RowResult::Logits(l) => l,
            RowResult::Nothing
            | RowResult::Token(_)
            | RowResult::Candidates(_)
            | RowResult::Tokens(_) => Vec::new(),
        })
        .collect())
}

/// Greedy decoding's forward: the id of the most likely next token after `ids`, found
/// with the int8-screened head ([`Int8Head`]) — the same token the F16 head's argmax gives,
/// reading about half of the head's bytes.
pub fn forward_greedy(
    model: &Model,
    session: &mut Session,
    ids: &[u32],
    screen: &Int8Head,
) -> Result<u32> {
    match forward_needs(model, &mut [session], &[ids], &[Need::Greedy], Some(screen))?.pop() {
        Some(RowResult::Token(t)) => Ok(t),
        _ => Err(Error::Input("forward_greedy: no tokens given".into())),
    }
}

/// Another engine for the ternary projections of a forward call: an NPU prefill surface
/// runs a prompt chunk's BitLinears on its own device while the CPU does the rest.
pub trait Projector: Sync {
    /// `out[n, w.rows] = BitLinear(w)` on the int8 rows `quant` (`[n, padded_cols(w.cols)]`)
    /// with their scales `acts`, the same numbers as the CPU kernels. Returns false to let
    /// the CPU do this one (a shape it has no kernel for, one row, ...).
    fn project(&self, w: &TernaryTensor, quant: &[i8], acts: &[ActScale], out: &mut [f32]) -> bool;
}

/// What one session gets from [`forward_needs`].
#[derive(Clone, Debug, PartialEq)]
pub enum RowResult {
    Nothing,
    /// `[rows, vocab]`: the last new token's logits, or every new token's.
    Logits(Vec<f32>),
    Token(u32),
    /// `(id, logit)` sorted by id ([`Need::TopK`] through the screened head).
    Candidates(Vec<(u32, f32)>),
    /// The argmax after every new token ([`Need::AllGreedy`]).
    Tokens(Vec<u32>),
}

/// One forward call over several sessions where each says what it needs afterwards:
/// [`Need::Greedy`] and [`Need::TopK`] rows take the int8-screened head when `screen` is
/// given (the same token as the full head's argmax; the same logits for every token a
/// top-k sampler could pick), the others the full head.
pub fn forward_needs(
    model: &Model,
    sessions: &mut [&mut Session],
    new_ids: &[&[u32]],
    needs: &[Need],
    screen: Option<&Int8Head>,
) -> Result<Vec<RowResult>> {
    forward_with(model, sessions, new_ids, needs, screen, None)
}

/// [`forward_needs`] with the projections offered to `projector` first.
pub fn forward_with(
    model: &Model,
    sessions: &mut [&mut Session],
    new_ids: &[&[u32]],
    needs: &[Need],
    screen: Option<&Int8Head>,
    projector: Option<&dyn Projector>,
) -> Result<Vec<RowResult>> {
    let trees = vec![None; sessions.len()];
    Ok(forward_trees(model, sessions, new_ids, needs, &trees, screen, projector)?.0)
}

/// [`forward_with`] where a session's new ids may be a draft tree (speculative
/// verification): `trees[s] = Some(parents)` gives each new row's parent among the new rows
/// (`parents[0]` is ignored: row 0, the root, follows the cached tokens; `parents[i] < i`).
/// Each row sees the cache and its ancestors, and is rotated for its depth. Returns, beside
/// the results, the final normed hidden states `[n_new, hidden]` of each tree session (what
/// drafting heads read).
#[allow(clippy::type_complexity)]
pub fn forward_trees(
    model: &Model,
    sessions: &mut [&mut Session],
    new_ids: &[&[u32]],
    needs: &[Need],
    trees: &[Option<&[usize]>],
    screen: Option<&Int8Head>,
    projector: Option<&dyn Projector>,
) -> Result<(Vec<RowResult>, Vec<Option<Vec<f32>>>)> {
    if new_ids.len() != sessions.len()
        || needs.len() != sessions.len()
        || trees.len() != sessions.len()
    {
        return Err(Error::Input(format!(
            "forward: {} sessions, {} id lists, {} needs, {} trees",
            sessions.len(),
            new_ids.len(),
            needs.len(),
            trees.len()
        )));
    }
    let masks = tree_masks(new_ids, trees)?;
    let Some((h, rows)) = hidden_states(model, sessions, new_ids, &masks, projector)? else {
        return Ok((
            vec![RowResult::Nothing; sessions.len()],
            vec![None; sessions.len()],
        ));
    };
    let hidden: Vec<Option<Vec<f32>>> = masks
        .iter()
        .enumerate()
        .map(|(s, m)| {
            m.as_ref().map(|_| {
                let mine: Vec<usize> = (0..rows.len()).filter(|&t| rows[t].session == s).collect();
                final_norm(model, &h, &mine)
            })
        })
        .collect();
    // The history tokens each top-k row must score exactly, whatever the screen says.
    let includes: Vec<Vec<u32>> = sessions
        .iter()
        .zip(needs)
        .map(|(s, need)| match need {
            Need::TopK { recent, .. } if *recent > 0 => {
                let t = s.tokens();
                let mut ids = t[t.len().saturating_sub(*recent)..].to_vec();
                ids.sort_unstable();
                ids.dedup();
                ids
            }
            _ => Vec::new(),
        })
        .collect();
    Ok((lm_head(model, &h, &rows, needs, &includes, screen), hidden))
}

/// A draft tree's attention masks and depths: per tree session, for each new row, the
/// bits of the new rows it sees (itself and its ancestors) and its depth.
pub(super) type TreeMask = (Vec<u64>, Vec<usize>);

fn tree_masks(new_ids: &[&[u32]], trees: &[Option<&[usize]>]) -> Result<Vec<Option<TreeMask>>> {
    new_ids
        .iter()
        .zip(trees)
        .map(|(ids, tree)| {
            let Some(parents) = tree else {
                return Ok(None);
            };
            if parents.len() != ids.len() || ids.len() > TREE_ROWS {
                return Err(Error::Input(format!(
                    "a draft tree of {} nodes for {} ids: give one parent per id, at most {TREE_ROWS}",
                    parents.len(),
                    ids.len()
                )));
            }
            let (mut masks, mut depths) = (Vec::<u64>::new(), Vec::new());
            for (i, &p) in parents.iter().enumerate() {
                if i == 0 {
                    masks.push(1);
                    depths.push(0);
                    continue;
                }
                if p >= i {
                    return Err(Error::Input(format!(
                        "draft tree node {i} has parent {p}: a parent comes before its child"
                    )));
                }
                masks.push(masks[p] | 1 << i);
                depths.push(depths[p] + 1);
            }
            Ok(Some((masks, depths)))
        })
        .collect()
}

/// Runs the decoder layers over the new tokens (appending them to their sessions) and
/// returns the final hidden states `[n_new, hidden]` with where each row belongs.
fn hidden_states(
    model: &Model,
    sessions: &mut [&mut Session],
    new_ids: &[&[u32]],
    masks: &[Option<TreeMask>],
    projector: Option<&dyn Projector>,
) -> Result<Option<(Vec<f32>, Vec<RowPos>)>> {
    let c = &model.config;
    let mut rows = Vec::new();
    for (s, (session, ids)) in sessions.iter().zip(new_ids).enumerate() {
        if session.len() + ids.len() > session.max_ctx {
            return Err(Error::Input(format!(
                "{} tokens do not fit the context of {} (already {} in use); shorten the prompt or raise the context (-c)",
                ids.len(),
                session.max_ctx,
                session.len()
            )));
        }
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(Error::Input(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                c.vocab_size
            )));
        }
        let depth = |t: usize| masks[s].as_ref().map_or(t, |m| m.1[t]);
        rows.extend((0..ids.len()).map(|t| RowPos {
            session: s,
            pos: session.len() + t,
            rope: session.len() + depth(t),
        }));
    }
    let n = rows.len();
    if n == 0 {
        return Ok(None);
    }
    let hidden = c.hidden_size;
    let embd = model.embed_tokens.view();
    let mut h = vec![0f32; n * hidden];
    for (row, id) in h
        .chunks_exact_mut(hidden)
        .zip(new_ids.iter().flat_map(|ids| ids.iter()))
    {
        embd.row_to_f32(*id as usize, row);
    }
    let inv_freq = c.rope_inv_freq();
    // cos/sin per row, shared by every head of every layer.
    let half = c.head_dim / 2;
    let (mut cos, mut sin) = (vec![0f32; n * half], vec![0f32; n * half]);
    for (t, rp) in rows.iter().enumerate() {
        rope_cos_sin(
            rp.rope,
            &inv_freq,
            &mut cos[t * half..(t + 1) * half],
            &mut sin[t * half..(t + 1) * half],
        );
    }
    let rope = Rope { cos, sin, half };
    let mut scratch = Scratch::new(model, n, projector);
    for (li, layer) in model.layers.iter().enumerate() {
        let at = LayerAt {
            model,
            index: li,
            layer,
        };
        match c.block {
            Block::BitNet(act) => bitnet_block(
                &at,
                act,
                sessions,
                (&rows, masks),
                &rope,
                &mut h,
                &mut scratch,
            ),
            Block::LlamaBitLinear => {
                llama_block::block(&at, sessions, (&rows, masks), &rope, &mut h, &mut scratch)
            }
        }
    }
    for (session, ids) in sessions.iter_mut().zip(new_ids) {
        session.tokens.extend_from_slice(ids);
    }
    Ok(Some((h, rows)))
}

/// The rotary cos/sin of each row's position.
struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl Rope {
    fn row(&self, t: usize) -> (&[f32], &[f32]) {
        let r = t * self.half..(t + 1) * self.half;
        (&self.cos[r.clone()], &self.sin[r])
    }
}

/// Working memory of one forward call, and where its projections run.
struct Scratch<'p> {
    n: usize,
    projector: Option<&'p dyn Projector>,
    normed: Vec<f32>,
    quant: Vec<i8>,
    acts: Vec<ActScale>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

impl<'p> Scratch<'p> {
    fn new(model: &Model, n: usize, projector: Option<&'p dyn Projector>) -> Self {
        let c = &model.config;
        let widest = padded_cols(c.hidden_size.max(c.intermediate_size).max(c.q_dim()));
        Self {
            n,
            projector,
            normed: vec![0.0; n * c.hidden_size.max(c.q_dim())],
            quant: vec![0; n * widest],
            acts: vec![ActScale { scale: 1.0, sum: 0 }; n],
            q: vec![0.0; n * c.q_dim()],
            k: vec![0.0; n * c.kv_dim()],
            v: vec![0.0; n * c.kv_dim()],
            attn: vec![0.0; n * c.q_dim()],
            proj: vec![0.0; n * c.hidden_size],
            gate: vec![0.0; n * c.intermediate_size],
            up: vec![0.0; n * c.intermediate_size],
        }
    }
}

/// Per-token int8 quantization of `n` rows of width `cols` into `quant`/`acts`.
fn quantize_rows(x: &[f32], cols: usize, quant: &mut [i8], acts: &mut [ActScale]) {
    let k = padded_cols(cols);
    let n = x.len() / cols;
    parallel::for_rows2(
        &mut quant[..n * k],
        k,
        &mut acts[..n],
        1,
        8,
        |first, q, a| {
            for (i, (qr, act)) in q.chunks_exact_mut(k).zip(a.iter_mut()).enumerate() {
                *act = quantize_row(&x[(first + i) * cols..(first + i + 1) * cols], qr);
            }
        },
    );
}

/// Several BitLinears over one quantized input (q/k/v, gate/up). A single token runs them
/// as one parallel region, so the threads meet once instead of once per projection.
fn bitlinear_shared(
    proj: Option<&dyn Projector>,
    ws: &[&TernaryTensor],
    quant: &[i8],
    acts: &[ActScale],
    outs: &mut [&mut [f32]],
) {
    if acts.len() == 1 && proj.is_none() && ws.iter().all(|w| w.is_sherry()) {
        let k = padded_cols(ws[0].cols);
        let mut jobs: Vec<sherry::GemvJob> = ws
            .iter()
            .zip(outs.iter_mut())
            .filter_map(|(w, out)| {
                Some(sherry::GemvJob {
                    w: w.sherry_kernel_view()?,
                    scale: w.scale,
                    out: &mut out[..w.rows],
                })
            })
            .collect();
        sherry::gemv_many(&quant[..k], acts[0], &mut jobs);
    } else if acts.len() == 1 && proj.is_none() && ws.iter().all(|w| !w.is_sherry()) {
        let k = padded_cols(ws[0].cols);
        let mut jobs: Vec<GemvJob> = ws
            .iter()
            .zip(outs.iter_mut())
            .map(|(w, out)| GemvJob {
                w: w.view(),
                scale: w.scale,
                out: &mut out[..w.rows],
            })
            .collect();
        gemv_many(&quant[..k], acts[0], &mut jobs);
    } else {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            bitlinear(proj, w, quant, acts, out);
        }
    }
}

/// `out = BitLinear(w, quantized input)` for all rows.
fn bitlinear(
    proj: Option<&dyn Projector>,
    w: &TernaryTensor,
    quant: &[i8],
    acts: &[ActScale],
    out: &mut [f32],
) {
    let k = padded_cols(w.cols);
    let n = acts.len();
    if proj.is_some_and(|p| p.project(w, &quant[..n * k], acts, &mut out[..n * w.rows])) {
        return;
    }
    if let Some(columns) = &w.columns {
        // Skipping zero columns pays only when there are enough of them (the dense walk
        // streams faster than the sparse one gathers); both give the same numbers.
        let q = &quant[..n * k];
        let share = ColumnCounter::nonzero_share(q, w.cols, k);
        let isa = Isa::best();
        let seen = n * w.cols;
        if n == 1 && share < sparse_gemv_threshold(isa) {
            SPARSE_COLUMNS.add(seen, (share * seen as f32).round() as usize);
            return gemv_sparse(columns, q, acts[0], w.scale, &mut out[..w.rows]);
        }
        if n > 1 && (share < sparse_gemm_threshold(isa, n) || !w.rows_resident()) {
            SPARSE_COLUMNS.add(seen, (share * seen as f32).round() as usize);
            return gemm_sparse(columns, q, acts, w.scale, &mut out[..n * w.rows]);
        }
        SPARSE_COLUMNS.add(seen, seen);
    }
    if let Some(sw) = w.sherry_kernel_view() {
        if n == 1 {
            sherry::gemv(sw, &quant[..k], acts[0], w.scale, &mut out[..w.rows]);
        } else {
            sherry::gemm(sw, &quant[..n * k], acts, w.scale, &mut out[..n * w.rows]);
        }
        return;
    }
    if n == 1 {
        gemv(w.view(), &quant[..k], acts[0], w.scale, &mut out[..w.rows]);
    } else {
        gemm(
            w.view(),
            &quant[..n * k],
            acts,
            w.scale,
            &mut out[..n * w.rows],
        );
    }
}

fn norm_rows(x: &mut [f32], weight: &[f32], eps: f32) {
    parallel::for_rows_strided(x, weight.len(), 8, |_, rows| {
        for row in rows.chunks_exact_mut(weight.len()) {
            rms_norm_inplace(row, weight, eps);
        }
    });
}

/// One decoder layer of the model, where the block functions read it.
struct LayerAt<'m> {
    model: &'m Model,
    index: usize,
    layer: &'m Layer,
}

/// BitNet b1.58's block: an RMSNorm before `o_proj` and before `down_proj`.
fn bitnet_block(
    at: &LayerAt,
    act: Activation,
    sessions: &mut [&mut Session],
    (rows, masks): (&[RowPos], &[Option<TreeMask>]),
    rope: &Rope,
    h: &mut [f32],
    s: &mut Scratch,
) {
    let (c, layer) = (&at.model.config, at.layer);
    let (hidden, q_dim, ffn, n) = (c.hidden_size, c.q_dim(), c.intermediate_size, s.n);

    attend(at, sessions, (rows, masks), rope, h, s);
    let o = &mut s.attn[..n * q_dim];
    // A layer loaded for this block has its sub-norms (layout::build_layers).
    if let Some(w) = &layer.attn_sub_norm {
        norm_rows(o, w, c.rms_norm_eps);
    }
    quantize_rows(o, q_dim, &mut s.quant, &mut s.acts);
    bitlinear(s.projector, &layer.o_proj, &s.quant, &s.acts, &mut s.proj);
    add_inplace(h, &s.proj[..n * hidden]);

    gate_up(at, h, s);
    let g = &mut s.gate[..n * ffn];
    activate(act, g, &s.up[..n * ffn]);
    if let Some(w) = &layer.ffn_sub_norm {
        norm_rows(g, w, c.rms_norm_eps);
    }
    quantize_rows(g, ffn, &mut s.quant, &mut s.acts);
    bitlinear(
        s.projector,
        &layer.down_proj,
        &s.quant,
        &s.acts,
        &mut s.proj,
    );
    add_inplace(h, &s.proj[..n * hidden]);
}

/// `gate = act(gate) · up`.
fn activate(act: Activation, gate: &mut [f32], up: &[f32]) {
    match act {
        Activation::Relu2 => relu2_mul(gate, up),
        Activation::Silu => silu_mul(gate, up),
    }
}

/// The attention half every block shares, up to the attention output in `s.attn`:
/// `input_layernorm`, q/k/v from one int8 input, RoPE, the new keys and values into each
/// session's cache, causal attention.
fn attend(
    at: &LayerAt,
    sessions: &mut [&mut Session],
    (rows, masks): (&[RowPos], &[Option<TreeMask>]),
    rope: &Rope,
    h: &[f32],
    s: &mut Scratch,
) {
    let (model, layer) = (at.model, at.layer);
    let c = &model.config;
    let (hidden, q_dim, kv_dim, hd) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.head_dim);
    let n = s.n;

    let normed = &mut s.normed[..n * hidden];
    normed.copy_from_slice(h);
    norm_rows(normed, &layer.input_layernorm, c.rms_norm_eps);
    quantize_rows(normed, hidden, &mut s.quant, &mut s.acts);
    bitlinear_shared(
        s.projector,
        &[&layer.q_proj, &layer.k_proj, &layer.v_proj],
        &s.quant,
        &s.acts,
        &mut [&mut s.q, &mut s.k, &mut s.v],
    );

    for (t, rp) in rows.iter().enumerate() {
        let (cos, sin) = rope.row(t);
        rope_rotate_half_cached(&mut s.q[t * q_dim..(t + 1) * q_dim], hd, cos, sin);
        rope_rotate_half_cached(&mut s.k[t * kv_dim..(t + 1) * kv_dim], hd, cos, sin);
        let sess = &mut sessions[rp.session];
        let shape = sess.shape;
        let (mut keys, mut values) = sess.kv.layer_mut(at.index);
        keys.store(shape, rp.pos, &s.k[t * kv_dim..(t + 1) * kv_dim]);
        values.store(shape, rp.pos, &s.v[t * kv_dim..(t + 1) * kv_dim]);
    }

    attention(
        model,
        at.index,
        sessions,
        (rows, masks),
        (&s.q, &s.k, &s.v),
        &mut s.attn,
    );
}

/// Causal scaled-dot-product attention with GQA (kv head j serves query heads
/// j·group .. (j+1)·group) as flash attention over each session's cache in its own format:
/// a session's rows (a prompt chunk, or one decode token) are one segment.
///
/// A draft tree's rows are verified each exactly as a decode step at its depth would see
/// the cache: its ancestors' keys and values are laid out contiguously after the prefix (as
/// decoding them one at a time would have stored them) and the row attends like a single
/// decode row (one call per root-to-leaf path). The float sums then run in the order plain
/// decoding runs them, so greedy speculation keeps plain decoding's tokens bit for bit (one
/// call with [`Segment::tree`]'s mask would read the same keys but sum them in another
/// order).
/// Afterwards every node sits at its own position again, for `keep_path`.
fn attention(
    model: &Model,
    layer_index: usize,
    sessions: &mut [&mut Session],
    (rows, masks): (&[RowPos], &[Option<TreeMask>]),
    (q, k, v): (&[f32], &[f32], &[f32]),
    out: &mut [f32],
) {
    let c = &model.config;
    let shape = AttnShape {
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
    };
    let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());
    // Each session's rows, as (session, first row, end row).
    let mut runs = Vec::with_capacity(sessions.len());
    let mut t0 = 0;
    while t0 < rows.len() {
        let session = rows[t0].session;
        let t1 = t0
            + rows[t0..]
                .iter()
                .take_while(|r| r.session == session)
                .count();
        runs.push((session, t0, t1));
        t0 = t1;
    }
    let plain: Vec<(usize, usize, usize)> = runs
        .iter()
        .copied()
        .filter(|&(s, _, _)| masks[s].is_none())
        .collect();
    if !plain.is_empty() {
        let segs: Vec<Segment> = plain
            .iter()
            .map(|&(session, t0, t1)| {
                let (keys, values) = sessions[session].kv.layer(layer_index);
                Segment {
                    q: &q[t0 * q_dim..t1 * q_dim],
                    first_pos: rows[t0].pos,
                    keys,
                    values,
                    tree: None,
                }
            })
            .collect();
        if plain.len() == runs.len() {
            flash_attention(Isa::best(), shape, &segs, &mut out[..rows.len() * q_dim]);
        } else {
            let n: usize = plain.iter().map(|r| r.2 - r.1).sum();
            let mut tmp = vec![0f32; n * q_dim];
            flash_attention(Isa::best(), shape, &segs, &mut tmp);
            let mut at = 0;
            for &(_, t0, t1) in &plain {
                let len = (t1 - t0) * q_dim;
                out[t0 * q_dim..t1 * q_dim].copy_from_slice(&tmp[at..at + len]);
                at += len;
            }
        }
    }
    for &(session, t0, t1) in runs.iter().filter(|r| masks[r.0].is_some()) {
        let Some((tree, depths)) = &masks[session] else {
            continue;
        };
        let sess = &mut *sessions[session];
        let kv_shape = sess.shape;
        let base = rows[t0].pos;
        let chain = tree
            .iter()
            .enumerate()
            .all(|(i, m)| *m == (1u64 << (i + 1)) - 1);
        let n = t1 - t0;
        // One call per root-to-leaf path (a chain is one path): the path's keys and values
        // are laid out after the prefix, then every node on it not yet done attends as a
        // decode row at its depth. The flash kernel splits each row's keys as it would
        // alone, so batching the nodes changes no bit.
        let is_parent = |j: usize| (0..n).any(|i| i != j && tree[i] >> j & 1 == 1);
        let mut done = vec![false; n];
        let mut tmp = vec![0f32; n * q_dim];
        for leaf in (0..n).filter(|&j| !is_parent(j)) {
            let path: Vec<usize> = (0..=leaf).filter(|j| tree[leaf] >> j & 1 == 1).collect();
            if !chain {
                let (mut keys, mut values) = sess.kv.layer_mut(layer_index);
                for (depth, &j) in path.iter().enumerate() {
                    let t = t0 + j;
                    keys.store(kv_shape, base + depth, &k[t * kv_dim..(t + 1) * kv_dim]);
                    values.store(kv_shape, base + depth, &v[t * kv_dim..(t + 1) * kv_dim]);
                }
            }
            let todo: Vec<usize> = path.into_iter().filter(|&j| !done[j]).collect();
            let (keys, values) = sess.kv.layer(layer_index);
            let segs: Vec<Segment> = todo
                .iter()
                .map(|&i| Segment {
                    q: &q[(t0 + i) * q_dim..(t0 + i + 1) * q_dim],
                    first_pos: base + depths[i],
                    keys,
                    values,
                    tree: None,
                })
                .collect();
            flash_attention(Isa::best(), shape, &segs, &mut tmp[..todo.len() * q_dim]);
            for (slot, &i) in todo.iter().enumerate() {
                out[(t0 + i) * q_dim..(t0 + i + 1) * q_dim]
                    .copy_from_slice(&tmp[slot * q_dim..(slot + 1) * q_dim]);
                done[i] = true;
            }
        }
        if !chain {
            let (mut keys, mut values) = sess.kv.layer_mut(layer_index);
            for t in t0..t1 {
                keys.store(kv_shape, rows[t].pos, &k[t * kv_dim..(t + 1) * kv_dim]);
                values.store(kv_shape, rows[t].pos, &v[t * kv_dim..(t + 1) * kv_dim]);
            }
        }
    }
}

/// The FFN's input half every block shares: `post_attention_layernorm`, then gate and up
/// from one int8 input into `s.gate` and `s.up`.
fn gate_up(at: &LayerAt, h: &[f32], s: &mut Scratch) {
    let (c, layer) = (&at.model.config, at.layer);
    let (hidden, n) = (c.hidden_size, s.n);
    let normed = &mut s.normed[..n * hidden];
    normed.copy_from_slice(h);
    norm_rows(normed, &layer.post_attention_layernorm, c.rms_norm_eps);
    quantize_rows(normed, hidden, &mut s.quant, &mut s.acts);
    bitlinear_shared(
        s.projector,
        &[&layer.gate_proj, &layer.up_proj],
        &s.quant,
        &s.acts,
        &mut [&mut s.gate, &mut s.up],
    );
}

/// Final norm and the LM head, for the rows each session's need asks for. The head
/// runs once per call, not once per row: one GEMM over every row that needs logits, and one
/// screened pass over every greedy or top-k row (each the same numbers as the one-row head).
fn lm_head(
    model: &Model,
    h: &[f32],
    rows: &[RowPos],
    needs: &[Need],
    includes: &[Vec<u32>],
    screen: Option<&Int8Head>,
) -> Vec<RowResult> {
    let c = &model.config;
    let head = model.head().view();
    let (full, screened) = head_rows(rows, needs, screen.is_some());
    let mut out = vec![RowResult::Nothing; needs.len()];

    // Greedy and top-k rows with the int8-screened head: the exact logits of the tokens
    // that could matter, without the others. Greedy is top-1.
    if let Some(screen) = screen.filter(|_| !screened.is_empty()) {
        let wishes: Vec<TopK> = screened
            .iter()
            .map(|&t| {
                let s = rows[t].session;
                match needs[s] {
                    Need::TopK { k, .. } => TopK {
                        k,
                        include: &includes[s],
                    },
                    _ => TopK { k: 1, include: &[] },
                }
            })
            .collect();
        let normed = final_norm(model, h, &screened);
        for (&t, cand) in screened
            .iter()
            .zip(screen.top_k_batch(&head, &normed, &wishes))
        {
            let s = rows[t].session;
            SCREENED_HEAD_ROWS.add(c.vocab_size, cand.len());
            let best = crate::sampler::argmax_candidates(&cand);
            match (&mut out[s], needs[s]) {
                (RowResult::Tokens(ts), _) => ts.push(best),
                (slot, Need::AllGreedy) => *slot = RowResult::Tokens(vec![best]),
                (slot, Need::Greedy) => *slot = RowResult::Token(best),
                (slot, _) => *slot = RowResult::Candidates(cand),
            }
        }
    }

    // logits = norm(h) · headᵀ for every other row, `[full.len(), vocab]`.
    let mut logits = vec![0f32; full.len() * c.vocab_size];
    head.matmul(&final_norm(model, h, &full), &mut logits);
    // Each session's rows are consecutive: hand them out from the last session back, so
    // the first (for perplexity, the only) session takes the buffer without a copy.
    let mut end = full.len();
    while end > 0 {
        let session = rows[full[end - 1]].session;
        let start = full[..end]
            .iter()
            .rposition(|&t| rows[t].session != session)
            .map_or(0, |i| i + 1);
        let mine = if start == 0 {
            std::mem::take(&mut logits)
        } else {
            logits.split_off(start * c.vocab_size)
        };
        out[session] = match needs[session] {
            Need::Greedy => RowResult::Token(crate::sampler::argmax(&mine)),
            Need::AllGreedy => RowResult::Tokens(
                mine.chunks_exact(c.vocab_size)
                    .map(crate::sampler::argmax)
                    .collect(),
            ),
            _ => RowResult::Logits(mine),
        };
        end = start;
    }
    out
}

/// The rows (indices into `rows`) that go through the full head and those that go
/// through the int8 screen (greedy and top-k rows, when there is a screen), in order.
fn head_rows(rows: &[RowPos], needs: &[Need], screen: bool) -> (Vec<usize>, Vec<usize>) {
    let (mut full, mut screened) = (Vec::new(), Vec::new());
    for (t, rp) in rows.iter().enumerate() {
        let is_last = rows
            .get(t + 1)
            .is_none_or(|next| next.session != rp.session);
        match needs[rp.session] {
            Need::AllLogits => full.push(t),
            Need::AllGreedy if screen => screened.push(t),
            Need::AllGreedy => full.push(t),
            Need::Logits if is_last => full.push(t),
            Need::Greedy | Need::TopK { .. } if is_last && screen => screened.push(t),
            Need::Greedy | Need::TopK { .. } if is_last => full.push(t),
            _ => {}
        }
    }
    (full, screened)
}

/// The final `norm` of the rows `ts` of `h`, `[ts.len(), hidden]`.
fn final_norm(model: &Model, h: &[f32], ts: &[usize]) -> Vec<f32> {
    let c = &model.config;
    let hidden = c.hidden_size;
    let mut normed: Vec<f32> = ts
        .iter()
        .flat_map(|&t| &h[t * hidden..(t + 1) * hidden])
        .copied()
        .collect();
    norm_rows(&mut normed, &model.norm, c.rms_norm_eps);
    normed
}
