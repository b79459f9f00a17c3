//! A device surface with the CPU behind it. When the device fails — a queue hang, a device
//! error, out of device memory — the sessions it held continue on the CPU: their KV cache
//! is read from the device's shared buffers (the same memory, nothing recomputed), the
//! failed step is run again on the CPU, and the caller sees no error. From then on the
//! device is left alone (a hung queue cannot be trusted) and [`Backend::health`] says so.

use std::sync::Arc;

use super::cpu::{CpuBackend, CpuSession};
use super::igpu::{IgpuSeq, IgpuSession, IgpuSurface};
use super::{check_step, Backend, BackendError, Health, Need, Output, Surface};
use crate::model::Model;

/// A session on the device, or moved to the CPU.
pub enum FallbackSession {
    /// Boxed: a device session carries its buffer handles, a CPU one a pointer or two.
    Device(Box<IgpuSession>),
    Cpu(CpuSession),
}

pub struct Fallback {
    device: IgpuSurface,
    cpu: CpuBackend<Arc<Model>>,
    /// Why the device was given up, once it was.
    failed: Option<String>,
    fallbacks: u64,
}

impl Fallback {
    pub fn new(device: IgpuSurface, cpu: CpuBackend<Arc<Model>>) -> Self {
        Self {
            device,
            cpu,
            failed: None,
            fallbacks: 0,
        }
    }

    pub fn device(&self) -> &IgpuSurface {
        &self.device
    }

    /// The CPU behind the device (its model reads the weights in the device's mapping).
    pub fn cpu(&self) -> &CpuBackend<Arc<Model>> {
        &self.cpu
    }

    fn give_up(&mut self, why: &str) {
        if self.failed.is_none() {
            tracing::error!(
                "the {} surface failed: {why}; every session continues on the CPU from its KV cache \
                 in shared memory. Check `dmesg` for amdgpu/KFD errors and `onebit probe`, then \
                 restart onebitd to use the device again",
                self.device.surface()
            );
            self.failed = Some(why.to_string());
        }
    }

    /// Moves a device session to the CPU, keeping every position it holds: the CPU session
    /// reads and extends the keys and values in the sequence's shared buffer, where the
    /// device left them.
    fn move_to_cpu(&mut self, s: &mut FallbackSession) -> Result<(), BackendError> {
        let tokens = self.device_tokens(s);
        if self.put_on_cpu(s)? {
            tracing::warn!(
                tokens,
                "a session moved from the {} to the CPU, on its KV cache in shared memory",
                self.device.surface()
            );
            self.fallbacks += 1;
        }
        Ok(())
    }

    fn device_tokens(&self, s: &FallbackSession) -> usize {
        match s {
            FallbackSession::Device(d) => d.seq.tokens().len(),
            FallbackSession::Cpu(_) => 0,
        }
    }

    /// Makes a device session a CPU session on the same shared buffer (no copy); whether
    /// it was on the device.
    fn put_on_cpu(&mut self, s: &mut FallbackSession) -> Result<bool, BackendError> {
        if !matches!(s, FallbackSession::Device(_)) {
            return Ok(false);
        }
        // A one-token stand-in while the device session is taken apart.
        let stand_in = FallbackSession::Cpu(self.cpu.new_session(1)?);
        let FallbackSession::Device(d) = std::mem::replace(s, stand_in) else {
            return Ok(false);
        };
        let kv = d.seq.into_cpu_session(self.cpu.model());
        *s = FallbackSession::Cpu(CpuSession::on(kv));
        Ok(true)
    }
}

impl Backend for Fallback {
    type Session = FallbackSession;

    fn surface(&self) -> Surface {
        if self.failed.is_some() {
            Surface::Cpu
        } else {
            self.device.surface()
        }
    }

    fn health(&self) -> Health {
        match &self.failed {
            None => Health::Ok,
            Some(reason) => Health::Degraded {
                failed: self.device.surface(),
                serving: Surface::Cpu,
                reason: reason.clone(),
            },
        }
    }

    fn fallbacks(&self) -> u64 {
        self.fallbacks
    }

    fn new_session(&mut self, ctx: usize) -> Result<FallbackSession, BackendError> {
        if self.failed.is_none() {
            match self.device.new_session(ctx) {
                Ok(s) => return Ok(FallbackSession::Device(Box::new(s))),
                Err(BackendError::Device { message, .. }) => {
                    // Out of device memory for one more session is no reason to give up
                    // the device: this session lives on the CPU.
                    tracing::warn!(
                        "no room on the {} for a session ({message}); it runs on the CPU",
                        self.device.surface()
                    );
                    self.fallbacks += 1;
                }
                Err(e) => return Err(e),
            }
        }
        let ctx = if ctx == 0 { self.cpu.ctx() } else { ctx };
        Ok(FallbackSession::Cpu(self.cpu.new_session(ctx)?))
    }

    fn tokens<'a>(&self, s: &'a FallbackSession) -> &'a [u32] {
        match s {
            FallbackSession::Device(d) => self.device.tokens(d),
            FallbackSession::Cpu(c) => self.cpu.tokens(c),
        }
    }

    fn truncate(&mut self, s: &mut FallbackSession, n: usize) {
        match s {
            FallbackSession::Device(d) => self.device.truncate(d, n),
            FallbackSession::Cpu(c) => self.cpu.truncate(c, n),
        }
    }

    fn capacity(&self, s: &FallbackSession) -> usize {
        match s {
            FallbackSession::Device(d) => self.device.capacity(d),
            FallbackSession::Cpu(c) => self.cpu.capacity(c),
        }
    }

    fn step(
        &mut self,
        sessions: &mut [&mut FallbackSession],
        ids: &[&[u32]],
        needs: &[Need],
    ) -> Result<(), BackendError> {
        check_step(sessions.len(), ids, needs)?;
        if self.failed.is_some() {
            for s in sessions.iter_mut() {
                self.move_to_cpu(s)?;
            }
        }
        let on_device: Vec<usize> = (0..sessions.len())
            .filter(|&i| matches!(*sessions[i], FallbackSession::Device(_)))
            .collect();
        if !on_device.is_empty() {
            let mut ds: Vec<&mut IgpuSession> = Vec::new();
            for s in sessions.iter_mut() {
                if let FallbackSession::Device(d) = &mut **s {
                    ds.push(d);
                }
            }
            let dids: Vec<&[u32]> = on_device.iter().map(|&i| ids[i]).collect();
            let dneeds: Vec<Need> = on_device.iter().map(|&i| needs[i]).collect();
            match self.device.step(&mut ds, &dids, &dneeds) {
                Ok(()) => {}
                Err(BackendError::Device { message, .. }) => {
                    self.give_up(&message);
                    // The failed step left each session's cache as it was before it (the
                    // device forgets a failed round); the CPU takes the caches over and
                    // runs the step again below.
                    for &i in &on_device {
                        self.move_to_cpu(sessions[i])?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let mut cs: Vec<&mut CpuSession> = Vec::new();
        let mut cids = Vec::new();
        let mut cneeds = Vec::new();
        for (i, s) in sessions.iter_mut().enumerate() {
            let redo = self.failed.is_some() || !on_device.contains(&i);
            if let (FallbackSession::Cpu(c), true) = (&mut **s, redo) {
                cs.push(c);
                cids.push(ids[i]);
                cneeds.push(needs[i]);
            }
        }
        if !cs.is_empty() {
            self.cpu.step(&mut cs, &cids, &cneeds)?;
        }
        Ok(())
    }

    fn output<'a>(&'a self, s: &'a FallbackSession) -> Output<'a> {
        match s {
            FallbackSession::Device(d) => self.device.output(d),
            FallbackSession::Cpu(c) => self.cpu.output(c),
        }
    }
}

impl super::npu::DecodeSurface for Fallback {
    fn cpu_session<'a>(&self, s: &'a mut FallbackSession) -> Option<&'a mut CpuSession> {
        match s {
            FallbackSession::Cpu(c) => Some(c),
            FallbackSession::Device(_) => None,
        }
    }

    fn lend_to_cpu(&mut self, s: &mut FallbackSession) -> Result<bool, BackendError> {
        self.put_on_cpu(s)
    }

    fn return_from_cpu(&mut self, s: &mut FallbackSession) -> Result<(), BackendError> {
        if !matches!(s, FallbackSession::Cpu(_)) {
            return Ok(());
        }
        if self.failed.is_some() {
            // The device is given up: the lent session stays where it is, on its buffer.
            self.fallbacks += 1;
            return Ok(());
        }
        let stand_in = FallbackSession::Cpu(self.cpu.new_session(1)?);
        let FallbackSession::Cpu(c) = std::mem::replace(s, stand_in) else {
            unreachable!("the stand-in replaced a CPU session above")
        };
        *s = match IgpuSeq::from_cpu_session(c.kv) {
            Ok(seq) => FallbackSession::Device(Box::new(self.device.session_on(seq))),
            // A session the CPU made itself stays on the CPU.
            Err(kv) => FallbackSession::Cpu(CpuSession::on(kv)),
        };
        Ok(())
    }
}
