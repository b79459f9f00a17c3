//! An NPU kernel ready to run: an artifact's PDI loaded into a configured context, its
//! instruction stream in a DEV BO, and command BOs to launch it with bound buffers.

use std::time::Duration;

use super::artifact::{Access, NpuKernelArtifact};
use super::bo::{Bo, NpuRange, SyncDir};
use super::device::XdnaDevice;
use super::error::XdnaError;
use super::ert::StartNpu;
use super::hwctx::{write_packet, HwContext, Qos};

/// A kernel argument binding: the artifact's buffer name and the range it points at.
pub type Binding<'a> = (&'a str, NpuRange<'a>);

/// A loaded kernel. Field order is drop order: the context goes before its PDI.
pub struct NpuKernel {
    ctx: HwContext,
    cmds: Vec<Bo>,
    chain: Option<Bo>,
    instr: Bo,
    _pdi: Bo,
    dev: XdnaDevice,
    artifact: NpuKernelArtifact,
}

impl std::fmt::Debug for NpuKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NpuKernel({:?} on context {})",
            self.artifact.manifest.name,
            self.ctx.handle()
        )
    }
}

/// Size of each command BO (one page holds any START_NPU packet).
const CMD_BO_BYTES: u64 = 4096;

impl NpuKernel {
    /// Copies the PDI and the instruction stream into the device heap, creates a context
    /// over the partition's columns and loads the PDI into it.
    pub fn load(
        dev: &XdnaDevice,
        artifact: NpuKernelArtifact,
        qos: Qos,
    ) -> Result<NpuKernel, XdnaError> {
        let mut pdi = dev.alloc_dev(artifact.pdi.len() as u64)?;
        pdi.write_and_flush(0, &artifact.pdi)?;
        let mut instr = dev.alloc_dev(artifact.instructions.len() as u64)?;
        instr.write_and_flush(0, &artifact.instructions)?;
        let mut ctx = HwContext::create(
            dev,
            artifact.columns(),
            artifact.partition.operations_per_cycle,
            qos,
        )?;
        ctx.configure(&[(&pdi, artifact.cu_func)])?;
        let cmd = dev.alloc_cmd(CMD_BO_BYTES)?;
        tracing::info!(kernel = %artifact.manifest.name, ctx = ctx.handle(), columns = artifact.columns(), "NPU kernel loaded");
        Ok(NpuKernel {
            ctx,
            cmds: vec![cmd],
            chain: None,
            instr,
            _pdi: pdi,
            dev: dev.clone(),
            artifact,
        })
    }

    pub fn artifact(&self) -> &NpuKernelArtifact {
        &self.artifact
    }

    pub fn context(&self) -> &HwContext {
        &self.ctx
    }

    /// The START_NPU packet for one launch with `bindings`.
    pub fn packet(&self, bindings: &[Binding<'_>]) -> Result<Vec<u32>, XdnaError> {
        let bound: Vec<(&str, u64, u64)> = bindings
            .iter()
            .map(|(n, r)| (*n, r.xdna_addr(), r.len))
            .collect();
        let args = self.artifact.arg_words(&bound)?;
        let size = u32::try_from(self.artifact.instructions.len())
            .map_err(|_| XdnaError::Invalid("instruction stream larger than 4 GiB".into()))?;
        Ok(StartNpu::new(0, self.instr.xdna_addr(), size)
            .args(args)
            .build()?)
    }

    fn access(&self, name: &str) -> Access {
        self.artifact
            .buffers()
            .find(|(n, _, _)| *n == name)
            .map_or(Access::ReadWrite, |(_, a, _)| a)
    }

    fn sync_inputs(&self, bindings: &[Binding<'_>]) -> Result<(), XdnaError> {
        for (name, r) in bindings {
            if self.access(name) != Access::Write {
                r.bo.sync(SyncDir::ToDevice, r.offset, r.len)?;
            }
        }
        Ok(())
    }

    fn sync_outputs(&self, bindings: &[Binding<'_>]) -> Result<(), XdnaError> {
        for (name, r) in bindings {
            if self.access(name) != Access::Read {
                r.bo.sync(SyncDir::FromDevice, r.offset, r.len)?;
            }
        }
        Ok(())
    }

    fn arg_bos<'a>(instr: &'a Bo, sets: &[&[Binding<'a>]]) -> Vec<&'a Bo> {
        let mut bos: Vec<&Bo> = vec![instr];
        for (_, r) in sets.iter().flat_map(|s| s.iter()) {
            if !bos.iter().any(|b| b.handle() == r.bo.handle()) {
                bos.push(r.bo);
            }
        }
        bos
    }

    /// One launch: flush inputs, submit, wait (at most `timeout`), invalidate outputs.
    pub fn run(&mut self, bindings: &[Binding<'_>], timeout: Duration) -> Result<(), XdnaError> {
        let packet = self.packet(bindings)?;
        self.sync_inputs(bindings)?;
        let args = Self::arg_bos(&self.instr, &[bindings]);
        let r = self.ctx.execute(&mut self.cmds[0], &packet, &args, timeout);
        r?;
        self.sync_outputs(bindings)
    }

    /// Several launches in one CMD_CHAIN submission (one wait for all).
    pub fn run_chain(
        &mut self,
        launches: &[Vec<Binding<'_>>],
        timeout: Duration,
    ) -> Result<(), XdnaError> {
        if launches.is_empty() {
            return Ok(());
        }
        while self.cmds.len() < launches.len() {
            self.cmds.push(self.dev.alloc_cmd(CMD_BO_BYTES)?);
        }
        if self.chain.is_none() {
            self.chain = Some(self.dev.alloc_cmd(CMD_BO_BYTES)?);
        }
        for (i, b) in launches.iter().enumerate() {
            let packet = self.packet(b)?;
            write_packet(&mut self.cmds[i], &packet)?;
            self.sync_inputs(b)?;
        }
        let sets: Vec<&[Binding<'_>]> = launches.iter().map(Vec::as_slice).collect();
        let mut chain = self.chain.take().expect("allocated above");
        let r = {
            let args = Self::arg_bos(&self.instr, &sets);
            let cmds: Vec<&Bo> = self.cmds[..launches.len()].iter().collect();
            self.ctx.execute_chain(&mut chain, &cmds, &args, timeout)
        };
        self.chain = Some(chain);
        r?;
        for b in launches {
            self.sync_outputs(b)?;
        }
        Ok(())
    }
}
