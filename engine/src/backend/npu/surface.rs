//! [`NpuSurface`]: NPU prefill in front of a decode surface.
//!
//! A step's sessions with at least [`PrefillPlan::min_rows`] new tokens are prefilled on
//! the CPU side with their projections on the NPU ([`NpuPrefill`]); the others step on the
//! decode surface. A session the decode surface keeps on the CPU is prefilled in place. A
//! session it keeps on a device (the iGPU) is lent to the CPU for the prefill, over the
//! very shared buffer its keys and values lie in, and goes back to the device before its
//! next decode step: nothing is copied either way.

use std::sync::Arc;

use super::plan::PrefillPlan;
use super::prefill::NpuPrefill;
use crate::backend::cpu::{CpuBackend, CpuSession};
use crate::backend::{check_step, Backend, BackendError, Health, Need, Output, Surface};
use crate::model::Model;

/// What NPU prefill needs of a decode surface: a session as a CPU session over its own
/// cache memory.
pub trait DecodeSurface: Backend {
    /// The session's CPU cache, when it is on the CPU (prefill then runs in it).
    fn cpu_session<'a>(&self, s: &'a mut Self::Session) -> Option<&'a mut CpuSession>;
    /// Puts a session held on a device onto the CPU over the same cache memory (no copy);
    /// whether it was on a device.
    fn lend_to_cpu(&mut self, s: &mut Self::Session) -> Result<bool, BackendError>;
    /// Gives a lent session back to its device (it stays on the CPU if the device failed).
    fn return_from_cpu(&mut self, s: &mut Self::Session) -> Result<(), BackendError>;
}

impl<M: std::ops::Deref<Target = Model> + Send> DecodeSurface for CpuBackend<M> {
    fn cpu_session<'a>(&self, s: &'a mut CpuSession) -> Option<&'a mut CpuSession> {
        Some(s)
    }
    fn lend_to_cpu(&mut self, _: &mut CpuSession) -> Result<bool, BackendError> {
        Ok(false)
    }
    fn return_from_cpu(&mut self, _: &mut CpuSession) -> Result<(), BackendError> {
        Ok(())
    }
}

/// A session of the decode surface.
pub struct NpuSession<S> {
    pub inner: S,
    /// Whether the decode surface lent it to the CPU for a prefill (it goes back before the
    /// next decode step).
    lent: bool,
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
        let cpu = CpuBackend::new(model, ctx).with_screened_head(false);
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
        for s in sessions.iter_mut() {
            if self.decode.cpu_session(&mut s.inner).is_none() {
                s.lent |= self.decode.lend_to_cpu(&mut s.inner)?;
            }
        }
        let mut cs: Vec<&mut CpuSession> = Vec::with_capacity(sessions.len());
        for s in sessions.iter_mut() {
            let c = self.decode.cpu_session(&mut s.inner).ok_or_else(|| {
                BackendError::device(
                    self.surface,
                    "the decode surface kept a session from the CPU",
                )
            })?;
            cs.push(c);
        }
        let npu = self.npu.clone();
        self.cpu.step_with(&mut cs, ids, needs, Some(&*npu))
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
            lent: false,
        })
    }

    fn tokens<'a>(&self, s: &'a Self::Session) -> &'a [u32] {
        self.decode.tokens(&s.inner)
    }

    fn truncate(&mut self, s: &mut Self::Session, n: usize) {
        self.decode.truncate(&mut s.inner, n);
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
            for s in dec.0.iter_mut().filter(|s| s.lent) {
                self.decode.return_from_cpu(&mut s.inner)?;
                s.lent = false;
            }
            let mut inner: Vec<&mut D::Session> = dec.0.iter_mut().map(|s| &mut s.inner).collect();
            self.decode.step(&mut inner, &dec.1, &dec.2)?;
        }
        if !pre.0.is_empty() {
            self.prefill(&mut pre.0, &pre.1, &pre.2)?;
        }
        Ok(())
    }

    fn output<'a>(&'a self, s: &'a Self::Session) -> Output<'a> {
        self.decode.output(&s.inner)
    }
}
