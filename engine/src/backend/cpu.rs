//! The CPU surface: [`crate::forward`] over sessions in ordinary memory.

use std::ops::Deref;

use onebit_kernels::screen::Int8Head;

use super::{check_step, Backend, BackendError, DraftSupport, Need, Output, Surface};
use crate::forward::{forward_trees, KvFormat, Projector, RowResult, Session};
use crate::model::Model;

/// One sequence on the CPU: its KV cache and what the last step left.
pub struct CpuSession {
    pub kv: Session,
    result: RowResult,
    /// The final normed hidden states of the last draft step's rows.
    hidden: Option<Vec<f32>>,
}

impl CpuSession {
    /// A session continuing on `kv` (a cache another surface wrote).
    pub fn on(kv: Session) -> Self {
        Self {
            kv,
            result: RowResult::Nothing,
            hidden: None,
        }
    }
}

/// The CPU forward pass behind [`Backend`]. `M` is how the model is held: `Arc<Model>` for
/// the daemon, `&Model` for a one-off run.
pub struct CpuBackend<M> {
    model: M,
    /// Default session capacity in tokens.
    ctx: usize,
    /// Plain greedy rows find their token with the int8-screened head (built on first use).
    screened_head: bool,
    screen: Option<Int8Head>,
    /// How new sessions store their KV cache.
    kv_format: KvFormat,
}

impl<M: Deref<Target = Model>> CpuBackend<M> {
    /// `ctx` 0 means the model's own context.
    pub fn new(model: M, ctx: usize) -> Self {
        // Once here rather than in the forward pass: the lane copy of Sherry weights.
        model.build_lanes();
        let max = model.config.max_context;
        let ctx = if ctx == 0 { max } else { ctx.min(max) };
        Self {
            model,
            ctx,
            screened_head: true,
            screen: None,
            kv_format: KvFormat::default(),
        }
    }

    /// Stores the KV cache of sessions made from now on as `format`.
    pub fn with_kv_format(mut self, format: KvFormat) -> Self {
        self.kv_format = format;
        self
    }

    pub fn kv_format(&self) -> KvFormat {
        self.kv_format
    }

    /// Whether [`Need::Greedy`] and [`Need::TopK`] use the int8-screened head (the same
    /// tokens as the full head; it reads about half the bytes but keeps an int8 copy of the
    /// head).
    pub fn with_screened_head(mut self, on: bool) -> Self {
        self.screened_head = on;
        self
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Another handle on the model (for a surface that shares it).
    pub fn shared_model(&self) -> M
    where
        M: Clone,
    {
        self.model.clone()
    }

    /// Default session capacity in tokens.
    pub fn ctx(&self) -> usize {
        self.ctx
    }

    /// [`Backend::step`] with the ternary projections offered to `projector` first (an
    /// NPU prefill surface; see [`crate::forward::Projector`]).
    pub fn step_with(
        &mut self,
        sessions: &mut [&mut CpuSession],
        ids: &[&[u32]],
        needs: &[Need],
        projector: Option<&dyn Projector>,
    ) -> Result<(), BackendError> {
        let trees = vec![None; sessions.len()];
        self.step_trees_with(sessions, ids, needs, &trees, projector)
    }

    /// [`Backend::step_drafts`] with the ternary projections offered to `projector` first.
    pub fn step_trees_with(
        &mut self,
        sessions: &mut [&mut CpuSession],
        ids: &[&[u32]],
        needs: &[Need],
        trees: &[Option<&[usize]>],
        projector: Option<&dyn Projector>,
    ) -> Result<(), BackendError> {
        check_step(sessions.len(), ids, needs)?;
        if needs
            .iter()
            .any(|n| matches!(n, Need::Greedy | Need::AllGreedy | Need::TopK { .. }))
        {
            self.screen();
        }
        let mut kvs: Vec<&mut Session> = sessions.iter_mut().map(|s| &mut s.kv).collect();
        let (out, hidden) = forward_trees(
            &self.model,
            &mut kvs,
            ids,
            needs,
            trees,
            self.screen.as_ref(),
            projector,
        )?;
        for ((s, r), h) in sessions.iter_mut().zip(out).zip(hidden) {
            s.result = r;
            s.hidden = h;
        }
        Ok(())
    }

    fn screen(&mut self) -> Option<&Int8Head> {
        if self.screened_head && self.screen.is_none() {
            let m = &*self.model;
            self.screen =
                Int8Head::new_releasing(&m.head().view(), &|r| m.head().data.release_range(r));
            // A head the screen cannot read (not F16) is scored in full from now on.
            self.screened_head = self.screen.is_some();
        }
        self.screen.as_ref()
    }
}

impl<M: Deref<Target = Model> + Send> Backend for CpuBackend<M> {
    type Session = CpuSession;

    fn surface(&self) -> Surface {
        Surface::Cpu
    }

    fn new_session(&mut self, ctx: usize) -> Result<CpuSession, BackendError> {
        let ctx = if ctx == 0 { self.ctx } else { ctx };
        Ok(CpuSession {
            kv: Session::with_format(&self.model, ctx, self.kv_format),
            result: RowResult::Nothing,
            hidden: None,
        })
    }

    fn tokens<'a>(&self, s: &'a CpuSession) -> &'a [u32] {
        s.kv.tokens()
    }

    fn truncate(&mut self, s: &mut CpuSession, n: usize) {
        s.kv.truncate(n);
        s.result = RowResult::Nothing;
        s.hidden = None;
    }

    fn capacity(&self, s: &CpuSession) -> usize {
        s.kv.max_ctx()
    }

    fn step(
        &mut self,
        sessions: &mut [&mut CpuSession],
        ids: &[&[u32]],
        needs: &[Need],
    ) -> Result<(), BackendError> {
        self.step_with(sessions, ids, needs, None)
    }

    fn draft_support(&self) -> DraftSupport {
        DraftSupport {
            tree: true,
            hidden: true,
        }
    }

    fn step_drafts(
        &mut self,
        sessions: &mut [&mut CpuSession],
        ids: &[&[u32]],
        needs: &[Need],
        trees: &[Option<&[usize]>],
    ) -> Result<(), BackendError> {
        self.step_trees_with(sessions, ids, needs, trees, None)
    }

    fn keep_path(
        &mut self,
        s: &mut CpuSession,
        first: usize,
        path: &[usize],
    ) -> Result<(), BackendError> {
        s.kv.keep_path(first, path)?;
        Ok(())
    }

    fn medusa_heads(&self) -> usize {
        self.model.medusa.as_ref().map_or(0, |m| m.count())
    }

    fn head_drafts(&self, s: &CpuSession, row: usize, top: usize) -> Option<Vec<Vec<(u32, f32)>>> {
        let heads = self.model.medusa.as_ref()?;
        let n = self.model.config.hidden_size;
        let h = s.hidden.as_ref()?.get(row * n..(row + 1) * n)?;
        let head = self.model.embed_tokens.view();
        Some(match &self.screen {
            Some(screen) => heads.candidates_screened(screen, &head, h, top),
            None => heads.candidates(&head, h, top),
        })
    }

    fn output<'a>(&'a self, s: &'a CpuSession) -> Output<'a> {
        match &s.result {
            RowResult::Nothing => Output::Nothing,
            RowResult::Logits(l) => Output::Logits(l),
            RowResult::Token(t) => Output::Token(*t),
            RowResult::Candidates(c) => Output::Candidates(c),
            RowResult::Tokens(t) => Output::Tokens(t),
        }
    }
}
