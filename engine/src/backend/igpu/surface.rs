//! The iGPU behind [`Backend`]: each session is an [`IgpuSeq`] with its own shared buffer,
//! and a step advances all of them in one submission.

use super::open::Gpu;
use super::{IgpuBackend, IgpuError, IgpuSeq};
use crate::backend::{check_step, Backend, BackendError, Need, Output, Surface};

/// One sequence on the iGPU and what the last step asked of it.
pub struct IgpuSession {
    pub seq: IgpuSeq,
    need: Need,
    /// [`Need::AllLogits`]: every new token's logits, gathered from the shared buffer.
    all_logits: Vec<f32>,
}

/// A fault to inject through the emulator, for tests of what happens then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The queue stops processing packets: the step's wait times out.
    Hang,
    /// A kernel faults (a GPU memory access fault): the queue stops and reports it.
    DeviceError,
    /// Device memory runs out: creating a session fails with ENOMEM.
    Enomem,
}

/// `KIND@N`: inject `KIND` at the N-th step (`hang`, `device-error`) or the N-th session
/// created (`enomem`), counting from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    pub kind: FaultKind,
    pub at: u64,
}

impl std::str::FromStr for FaultPlan {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("fault {s:?}: use hang@N, device-error@N or enomem@N (N ≥ 1)");
        let (kind, at) = s.split_once('@').ok_or_else(bad)?;
        let kind = match kind {
            "hang" => FaultKind::Hang,
            "device-error" => FaultKind::DeviceError,
            "enomem" => FaultKind::Enomem,
            _ => return Err(bad()),
        };
        let at = at.parse().ok().filter(|&n| n >= 1).ok_or_else(bad)?;
        Ok(Self { kind, at })
    }
}

/// [`IgpuBackend`] as a compute surface, with the GPU it runs on (the emulator handles,
/// when emulated, live as long as it).
pub struct IgpuSurface {
    be: IgpuBackend,
    gpu: Gpu,
    fault: Option<FaultPlan>,
    steps: u64,
    sessions: u64,
}

impl IgpuSurface {
    pub fn new(be: IgpuBackend, gpu: Gpu) -> Self {
        Self {
            be,
            gpu,
            fault: None,
            steps: 0,
            sessions: 0,
        }
    }

    /// The backend and the GPU back (a selftest that goes on to profile the device).
    /// A session on `seq`, a sequence of this surface's backend given back (see
    /// [`IgpuSeq::from_cpu_session`]).
    pub fn session_on(&self, seq: IgpuSeq) -> IgpuSession {
        IgpuSession {
            seq,
            need: Need::Nothing,
            all_logits: Vec::new(),
        }
    }

    pub fn into_parts(self) -> (IgpuBackend, Gpu) {
        (self.be, self.gpu)
    }

    /// Injects `plan` through the emulator; an error on real hardware.
    pub fn with_fault(mut self, plan: FaultPlan) -> Result<Self, BackendError> {
        if self.gpu.emu.is_none() {
            return Err(BackendError::Input(
                "faults can only be injected on the emulator (add --emulator)".into(),
            ));
        }
        self.fault = Some(plan);
        Ok(self)
    }

    pub fn backend(&self) -> &IgpuBackend {
        &self.be
    }

    fn inject(&self, kind: FaultKind) {
        let (Some(emu), Some(kfd)) = (&self.gpu.emu, &self.gpu.kfd) else {
            return;
        };
        tracing::warn!(?kind, "injecting a fault through the emulator");
        match kind {
            FaultKind::Hang => kfd.set_hang(true),
            FaultKind::DeviceError => kfd.register_kernel("rms_norm", |_| {
                Err("injected: memory access fault by the rms_norm kernel".into())
            }),
            FaultKind::Enomem => {
                emu.fail_ioctl("AMDKFD_IOC_ALLOC_MEMORY_OF_GPU", libc::ENOMEM, 1);
                emu.fail_ioctl("UDMABUF_CREATE", libc::ENOMEM, 1);
            }
        }
    }

    fn due(&self, kind: FaultKind, count: u64) -> bool {
        self.fault.is_some_and(|f| f.kind == kind && f.at == count)
    }
}

impl From<IgpuError> for BackendError {
    fn from(e: IgpuError) -> Self {
        match e {
            IgpuError::Input(m) => BackendError::Input(m),
            other => BackendError::device(Surface::Igpu, other),
        }
    }
}

impl Backend for IgpuSurface {
    type Session = IgpuSession;

    fn surface(&self) -> Surface {
        Surface::Igpu
    }

    fn new_session(&mut self, ctx: usize) -> Result<IgpuSession, BackendError> {
        self.sessions += 1;
        if self.due(FaultKind::Enomem, self.sessions) {
            self.inject(FaultKind::Enomem);
        }
        let ctx = if ctx == 0 { self.be.max_ctx() } else { ctx };
        Ok(IgpuSession {
            seq: self.be.new_sequence(ctx)?,
            need: Need::Nothing,
            all_logits: Vec::new(),
        })
    }

    fn tokens<'a>(&self, s: &'a IgpuSession) -> &'a [u32] {
        s.seq.tokens()
    }

    fn truncate(&mut self, s: &mut IgpuSession, n: usize) {
        s.seq.truncate(n);
        s.need = Need::Nothing;
    }

    fn capacity(&self, s: &IgpuSession) -> usize {
        s.seq.max_ctx()
    }

    fn step(
        &mut self,
        sessions: &mut [&mut IgpuSession],
        ids: &[&[u32]],
        needs: &[Need],
    ) -> Result<(), BackendError> {
        check_step(sessions.len(), ids, needs)?;
        self.steps += 1;
        for kind in [FaultKind::Hang, FaultKind::DeviceError] {
            if self.due(kind, self.steps) {
                self.inject(kind);
            }
        }
        // A failed step leaves every session as it was before it, so that another surface
        // can take the caches over and run the step again.
        let before: Vec<usize> = sessions.iter().map(|s| s.seq.tokens().len()).collect();
        let done = self.step_all(sessions, ids, needs);
        if done.is_err() {
            for (s, n) in sessions.iter_mut().zip(before) {
                s.seq.truncate(n);
            }
        }
        done
    }

    fn output<'a>(&'a self, s: &'a IgpuSession) -> Output<'a> {
        match s.need {
            Need::Nothing => Output::Nothing,
            Need::Logits | Need::TopK { .. } => Output::Logits(s.seq.logits()),
            Need::Greedy => Output::Token(s.seq.token()),
            Need::AllLogits | Need::AllGreedy => Output::Logits(&s.all_logits),
        }
    }
}

impl IgpuSurface {
    fn step_all(
        &mut self,
        sessions: &mut [&mut IgpuSession],
        ids: &[&[u32]],
        needs: &[Need],
    ) -> Result<(), BackendError> {
        let mut batch_seqs = Vec::new();
        let mut batch_ids = Vec::new();
        let mut heads = Vec::new();
        for ((s, ids), &need) in sessions.iter_mut().zip(ids).zip(needs) {
            s.need = need;
            if matches!(need, Need::AllLogits | Need::AllGreedy) {
                // The GPU chain scores the last row only: one token at a time, each row's
                // logits gathered as it comes.
                s.all_logits.clear();
                for id in ids.iter() {
                    self.be
                        .run(&mut [&mut s.seq], &[std::slice::from_ref(id)], &[true])?;
                    s.all_logits.extend_from_slice(s.seq.logits());
                }
                continue;
            }
            batch_seqs.push(&mut s.seq);
            batch_ids.push(*ids);
            heads.push(need != Need::Nothing);
        }
        if !batch_seqs.is_empty() {
            self.be.run(&mut batch_seqs, &batch_ids, &heads)?;
        }
        Ok(())
    }
}
