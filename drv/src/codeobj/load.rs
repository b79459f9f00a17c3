//! A code object placed in executable GPU memory, and kernarg memory to launch it with.

use super::kernarg::{self, Launch};
use super::{CodeObject, CodeObjectError, KernelInfo};
use crate::kfd::{AllocOptions, Device, DispatchArgs, FenceScope, GpuBuffer, KfdError};

/// Loading or launching failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    CodeObject(#[from] CodeObjectError),
    #[error(transparent)]
    Kfd(#[from] KfdError),
    #[error("no kernel `{0}` in the loaded code object")]
    NoKernel(String),
    #[error("kernel `{kernel}` needs scratch ({bytes} bytes per work-item), which onebit queues do not set up")]
    NeedsScratch { kernel: String, bytes: u32 },
    #[error("kernarg arena full: {need} more bytes needed, {left} left of {size}; make it larger")]
    ArenaFull { need: u64, left: u64, size: u64 },
}

/// A loaded code object: its image in executable GTT memory at `base`.
pub struct Program {
    code: GpuBuffer,
    kernels: Vec<(KernelInfo, u64)>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Program({} kernels at {:#x})",
            self.kernels.len(),
            self.code.va()
        )
    }
}

impl Program {
    /// Allocates executable memory, writes the relocated image and resolves every kernel's
    /// descriptor address.
    pub fn load(dev: &Device, co: &CodeObject) -> Result<Program, LoadError> {
        for k in &co.kernels {
            if k.descriptor.needs_scratch() {
                return Err(LoadError::NeedsScratch {
                    kernel: k.name.clone(),
                    bytes: k.private_segment_fixed_size,
                });
            }
        }
        let mut code = GpuBuffer::alloc(dev, co.image_size, AllocOptions::code())?;
        let base = code.va();
        let image = co.image(base)?;
        code.as_mut_slice()?[..image.len()].copy_from_slice(&image);
        let kernels = co
            .kernels
            .iter()
            .map(|k| (k.clone(), base + k.descriptor_offset))
            .collect();
        tracing::debug!(
            base,
            size = co.image_size,
            kernels = co.kernels.len(),
            "code object loaded"
        );
        Ok(Program { code, kernels })
    }

    /// Load address of the image.
    pub fn base(&self) -> u64 {
        self.code.va()
    }

    /// Every kernel with its kernel-object (descriptor) address.
    pub fn kernels(&self) -> impl Iterator<Item = (&KernelInfo, u64)> {
        self.kernels.iter().map(|(k, a)| (k, *a))
    }

    /// Kernel `name` and its kernel-object address.
    pub fn kernel(&self, name: &str) -> Result<(&KernelInfo, u64), LoadError> {
        self.kernels
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(k, a)| (k, *a))
            .ok_or_else(|| LoadError::NoKernel(name.into()))
    }
}

/// The dispatch of `kernel` at `kernel_object` with kernargs at `kernarg_va`.
pub fn dispatch_args(
    kernel: &KernelInfo,
    kernel_object: u64,
    kernarg_va: u64,
    launch: &Launch,
) -> DispatchArgs {
    DispatchArgs {
        kernel_object,
        kernarg_address: kernarg_va,
        grid: launch.grid,
        workgroup: launch.workgroup,
        group_segment_size: kernel.group_segment_fixed_size + launch.dynamic_lds,
        private_segment_size: kernel.private_segment_fixed_size,
        acquire: FenceScope::Agent,
        release: FenceScope::Agent,
        barrier: true,
    }
}

/// A bump allocator of kernarg segments in one CPU-visible, GPU-uncached GTT buffer; reset it once the
/// work that reads them has completed.
pub struct KernargArena {
    buf: GpuBuffer,
    used: u64,
}

impl KernargArena {
    pub fn new(dev: &Device, size: u64) -> Result<KernargArena, LoadError> {
        // Uncached: segments are rewritten at the same addresses every step, and only the
        // first packet of a step acquires at system scope, so no GPU cache may keep the
        // previous step's arguments.
        Ok(KernargArena {
            buf: GpuBuffer::alloc(dev, size, AllocOptions::uncached())?,
            used: 0,
        })
    }

    /// Writes the kernarg segment of one launch; returns its GPU address (64-byte aligned,
    /// as ROCr aligns them).
    pub fn push(
        &mut self,
        kernel: &KernelInfo,
        explicit: &[u64],
        launch: &Launch,
    ) -> Result<u64, LoadError> {
        let bytes = kernarg::build(kernel, explicit, launch)?;
        let at = self
            .used
            .next_multiple_of(u64::from(kernel.kernarg_align.max(64)));
        let size = self.buf.size();
        let need = bytes.len().max(1) as u64;
        if at + need > size {
            return Err(LoadError::ArenaFull {
                need,
                left: size.saturating_sub(at),
                size,
            });
        }
        self.buf.as_mut_slice()?[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        self.used = at + need;
        Ok(self.buf.va() + at)
    }

    /// Forgets every segment (the GPU must be done with them).
    pub fn reset(&mut self) {
        self.used = 0;
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.used
    }
}
