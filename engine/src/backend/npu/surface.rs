//! [`NpuSurface`]: NPU prefill in front of a decode surface.
//!
//! A step's sessions with at least [`PrefillPlan::min_rows`] new tokens are prefilled on
//! the CPU side with their projections on the NPU ([`NpuPrefill`]); the others step on the
//! decode surface. A session the decode surface keeps on the CPU is prefilled in place. A
//! session it keeps on a device (the iGPU) is prefilled in a CPU mirror that first takes
//! over the session's cache, and its keys and values are then written into the device
//! session's shared buffer, where decoding continues.

use std::borrow::Cow;
use std::sync::Arc;

use super::plan::PrefillPlan;
use super::prefill::NpuPrefill;
use crate::backend::cpu::{CpuBackend, CpuSession};
use crate::backend::{check_step, Backend, BackendError, Health, Need, Output, Surface};
use crate::model::Model;

/// What NPU prefill needs of a decode surface: to reach a session's CPU cache, or to read
/// and write its keys and values.
pub trait DecodeSurface: Backend {
    /// The session's CPU cache, when it lives on the CPU (prefill then runs in it).
    fn cpu_session<'a>(&self, s: &'a mut Self::Session) -> Option<&'a mut CpuSession>;
    /// Layer `l`'s keys and values for the positions held, `[pos, kv_dim]` each.
    fn layer_kv<'a>(&'a self, s: &'a Self::Session, l: usize) -> (Cow<'a, [f32]>, Cow<'a, [f32]>);
    /// Takes over `tokens` whose keys and values `kv(l)` gives, layer by layer.
    fn adopt<'k>(
        &mut self,
        s: &mut Self::Session,
        tokens: &[u32],
        kv: &dyn Fn(usize) -> (Cow<'k, [f32]>, Cow<'k, [f32]>),
    );
}

impl<M: std::ops::Deref<Target = Model> + Send> DecodeSurface for CpuBackend<M> {
    fn cpu_session<'a>(&self, s: &'a mut CpuSession) -> Option<&'a mut CpuSession> {
        Some(s)
    }
    fn layer_kv<'a>(&'a self, s: &'a CpuSession, l: usize) -> (Cow<'a, [f32]>, Cow<'a, [f32]>) {
        s.kv.layer_kv(l)
    }
    fn adopt<'k>(
        &mut self,
        s: &mut CpuSession,
        tokens: &[u32],
        kv: &dyn Fn(usize) -> (Cow<'k, [f32]>, Cow<'k, [f32]>),
    ) {
        s.kv.adopt(tokens, kv);
    }
}

/// A session of the decode surface, with the CPU mirror its prefills run in.
pub struct NpuSession<S> {
    pub inner: S,
    mirror: Option<CpuSession>,
    /// Whether the last step ran in the mirror (its output is there).
    from_mirror: bool,
}

/// NPU prefill, decode on `D`.
pub struct NpuSurface<D: DecodeSurface> {
    decode: D,
    /// Runs the prefill steps (the model on the CPU, projections offered to the NPU).
    cpu: CpuBackend<Arc<Model>>,
    npu: Arc<NpuPrefill>,
    plan: PrefillPlan,
    surface: Surface,
}

impl<D: DecodeSurface> NpuSurface<D> {
    /// `surface` names the pair (`npu+cpu`, `npu+igpu`).
    pub fn new(
        decode: D,
        model: Arc<Model>,
        npu: Arc<NpuPrefill>,
        plan: PrefillPlan,
        surface: Surface,
    ) -> Self {
        let ctx = model.config.max_context;
        // Greedy prefill rows take the full head: the same token as the screened one,
        // without a second int8 copy of the head beside the decode surface's.
        // Its sessions only mirror device sessions (a CPU decode surface prefills in
        // place), whose caches are f32: keep theirs f32 too, so nothing is rounded on the
        // way back.
        let cpu = CpuBackend::new(model, ctx)
            .with_screened_head(false)
            .with_kv_format(crate::forward::KvFormat::F32);
        tracing::info!(
            surface = %surface,
            chunk = npu.chunk(),
            min_rows = plan.min_rows,
            "NPU prefill: steps of at least min_rows tokens per session go to the NPU in launches of chunk rows (from the roofline model)"
        );
        Self {
            decode,
            cpu,
            npu,
            plan,
            surface,
        }
    }

    pub fn decode(&self) -> &D {
        &self.decode
    }

    pub fn npu(&self) -> &NpuPrefill {
        &self.npu
    }

    pub fn plan(&self) -> PrefillPlan {
        self.plan
    }

    /// Replaces the plan (tests with tiny models, owners with measured rates).
    pub fn with_plan(mut self, plan: PrefillPlan) -> Self {
        self.plan = plan;
        self
    }

    fn prefills(&self, ids: &[u32]) -> bool {
        ids.len() >= self.plan.min_rows.max(2) && self.npu.failure().is_none()
    }

    /// Prefills `sessions` (each with `ids`) on the CPU side with the NPU projector.
    fn prefill(
        &mut self,
        sessions: &mut [&mut NpuSession<D::Session>],
        ids: &[&[u32]],
        needs: &[Need],
    ) -> Result<(), BackendError> {
        // Mirrors take over the caches of sessions held on a device.
        for s in sessions.iter_mut() {
            let s = &mut **s;
            if self.decode.cpu_session(&mut s.inner).is_some() {
                continue;
            }
            let cap = self.decode.capacity(&s.inner);
            let m = match &mut s.mirror {
                Some(m) => m,
                empty => empty.insert(self.cpu.new_session(cap)?),
            };
            let held = self.decode.tokens(&s.inner);
            if m.kv.tokens() != held {
                let (decode, inner) = (&self.decode, &s.inner);
                m.kv.adopt(held, |l| decode.layer_kv(inner, l));
            }
        }
        let mut cs: Vec<&mut CpuSession> = Vec::with_capacity(sessions.len());
        let mut mirrored = Vec::with_capacity(sessions.len());
        for s in sessions.iter_mut() {
            let NpuSession { inner, mirror, .. } = &mut **s;
            match self.decode.cpu_session(inner) {
                Some(c) => {
                    mirrored.push(false);
                    cs.push(c);
                }
                None => {
                    mirrored.push(true);
                    cs.push(mirror.as_mut().expect("made above"));
                }
            }
        }
        let npu = self.npu.clone();
        self.cpu.step_with(&mut cs, ids, needs, Some(&*npu))?;
        drop(cs);
        for (s, m) in sessions.iter_mut().zip(mirrored) {
            s.from_mirror = m;
            if m {
                let mirror = s.mirror.as_ref().expect("made above");
                self.decode
                    .adopt(&mut s.inner, mirror.kv.tokens(), &|l| mirror.kv.layer_kv(l));
            }
        }
        Ok(())
    }
}

impl<D: DecodeSurface> Backend for NpuSurface<D> {
    type Session = NpuSession<D::Session>;

    fn surface(&self) -> Surface {
        if self.npu.failure().is_none() && self.decode.health() == Health::Ok {
            self.surface
        } else {
            self.decode.surface()
        }
    }

    fn health(&self) -> Health {
        match self.npu.failure() {
            Some(reason) => Health::Degraded {
                failed: self.surface,
                serving: self.decode.surface(),
                reason: format!("NPU prefill: {reason}"),
            },
            None => self.decode.health(),
        }
    }

    fn fallbacks(&self) -> u64 {
        self.decode.fallbacks()
    }

    fn new_session(&mut self, ctx: usize) -> Result<Self::Session, BackendError> {
        Ok(NpuSession {
            inner: self.decode.new_session(ctx)?,
            mirror: None,
            from_mirror: false,
        })
    }

    fn tokens<'a>(&self, s: &'a Self::Session) -> &'a [u32] {
        self.decode.tokens(&s.inner)
    }

    fn truncate(&mut self, s: &mut Self::Session, n: usize) {
        self.decode.truncate(&mut s.inner, n);
        if let Some(m) = &mut s.mirror {
            self.cpu.truncate(m, n);
        }
        s.from_mirror = false;
    }

    fn capacity(&self, s: &Self::Session) -> usize {
        self.decode.capacity(&s.inner)
    }

    fn step(
        &mut self,
        sessions: &mut [&mut Self::Session],
        ids: &[&[u32]],
        needs: &[Need],
    ) -> Result<(), BackendError> {
        check_step(sessions.len(), ids, needs)?;
        let mut pre = (Vec::new(), Vec::new(), Vec::new());
        let mut dec = (Vec::new(), Vec::new(), Vec::new());
        for ((s, &ids), &need) in sessions.iter_mut().zip(ids).zip(needs) {
            let to = if self.prefills(ids) {
                &mut pre
            } else {
                &mut dec
            };
            to.0.push(&mut **s);
            to.1.push(ids);
            to.2.push(need);
        }
        if !dec.0.is_empty() {
            let mut inner: Vec<&mut D::Session> = dec
                .0
                .iter_mut()
                .map(|s| {
                    s.from_mirror = false;
                    &mut s.inner
                })
                .collect();
            self.decode.step(&mut inner, &dec.1, &dec.2)?;
        }
        if !pre.0.is_empty() {
            self.prefill(&mut pre.0, &pre.1, &pre.2)?;
        }
        Ok(())
    }

    fn output<'a>(&'a self, s: &'a Self::Session) -> Output<'a> {
        match (&s.mirror, s.from_mirror) {
            (Some(m), true) => self.cpu.output(m),
            _ => self.decode.output(&s.inner),
        }
    }
}
