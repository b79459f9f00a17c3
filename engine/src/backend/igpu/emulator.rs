//! The iGPU kernels on the KFD emulator: each kernel symbol is registered with the host
//! build of its own C source (`onebit_kernels::gpu::host`), fed from the dispatch packet
//! and the kernarg segment exactly as the GPU would be — explicit arguments at the code
//! object's metadata offsets, the grid checked against the v5 hidden block counts.

use std::sync::Arc;

use onebit_drv::codeobj::load::Program;
use onebit_drv::codeobj::{ArgKind, CodeObject, KernelInfo, EF_AMDGPU_MACH_GFX1151};
use onebit_drv::emu::kfd::{KernelCall, KfdEmu};
use onebit_kernels::gpu::{self, host, KernelSpec};

use super::{IgpuBackend, IgpuError, Result};

/// Registers every kernel of the embedded code object with `kfd`; after creating a
/// backend on it, call [`bind`].
pub fn register_kernels(kfd: &KfdEmu) -> Result<()> {
    let co = Arc::new(CodeObject::parse(gpu::CODE_OBJECT, EF_AMDGPU_MACH_GFX1151)?);
    for spec in gpu::KERNELS {
        let info = co
            .kernel(spec.name)
            .ok_or_else(|| {
                IgpuError::Model(format!(
                    "kernel `{}` missing from the code object",
                    spec.name
                ))
            })?
            .clone();
        if info.explicit_args().count() != spec.args.len() {
            return Err(IgpuError::Model(format!(
                "kernel `{}`: the code object has {} explicit arguments, the spec {}; rebuild kernels/gpu",
                spec.name,
                info.explicit_args().count(),
                spec.args.len()
            )));
        }
        kfd.register_kernel(spec.name, move |call| run(spec, &info, call));
    }
    Ok(())
}

/// Tells the emulated CP which kernel each descriptor address of `be`'s loaded program is
/// (what it cannot learn from a descriptor, having no GPU to run the code on).
pub fn bind(kfd: &KfdEmu, be: &IgpuBackend) {
    bind_program(kfd, &be.program);
}

/// [`bind`] for a program loaded by hand.
pub fn bind_program(kfd: &KfdEmu, program: &Program) {
    for (kernel, object) in program.kernels() {
        kfd.bind_symbol(object, &kernel.name);
    }
}

fn run(
    spec: &KernelSpec,
    info: &KernelInfo,
    call: &KernelCall<'_>,
) -> std::result::Result<(), String> {
    let (grid, wg) = (call.grid(), call.workgroup());
    if wg != [spec.workgroup as u16, 1, 1] {
        return Err(format!(
            "dispatched with work-group {wg:?}; the source is written for [{}, 1, 1]",
            spec.workgroup
        ));
    }
    let mut groups = [0u32; 3];
    for d in 0..3 {
        if grid[d] % u32::from(wg[d]) != 0 {
            return Err(format!(
                "grid {grid:?} is not a whole number of work-groups {wg:?}"
            ));
        }
        groups[d] = grid[d] / u32::from(wg[d]);
    }
    // What the GPU code would read as NUM_GROUPS must match the packet.
    for a in &info.args {
        if let ArgKind::BlockCount(d) = a.kind {
            let v = call.arg_u32(u64::from(a.offset))?;
            if v != groups[d] {
                return Err(format!(
                    "hidden block_count[{d}] is {v}, the packet implies {}",
                    groups[d]
                ));
            }
        }
    }
    let mut args = Vec::with_capacity(spec.args.len());
    for (a, (name, kind)) in info.explicit_args().zip(spec.args) {
        let v = match a.size {
            8 => call.arg_u64(u64::from(a.offset))?,
            4 => u64::from(call.arg_u32(u64::from(a.offset))?),
            s => return Err(format!("argument `{name}` is {s} bytes")),
        };
        if *kind == gpu::ArgKind::Ptr {
            // faults like the GPU would on an unmapped pointer
            call.read(v, 1)
                .map_err(|e| format!("argument `{name}`: {e}"))?;
        }
        args.push(v);
    }
    // SAFETY: every pointer argument was checked to be GPU-mapped; the backend places its
    // buffers at the same address for CPU and GPU (udmabuf imports at the CPU address, GTT
    // BOs mapped at their VA), so each VA is the CPU address of the same pages, sized by
    // the backend for the grid it dispatches.
    unsafe { host::run(spec.name, groups, &args) }.map_err(|e| e.to_string())
}
