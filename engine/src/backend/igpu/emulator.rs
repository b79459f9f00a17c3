//! The iGPU kernels on the KFD emulator: each kernel symbol is registered with the host
//! build of its own C source (`onebit_kernels::gpu::host`), fed from the dispatch packet
//! and the kernarg segment exactly as the GPU would be — explicit arguments at the code
//! object's metadata offsets, the grid checked against the v5 hidden block counts, the
//! work-group size the kernel reads from the v5 hidden `group_size_x` (it traps, as on the
//! GPU, when that is not the size its source is written for).
//!
//! [`register_kernels_with`] picks the host build: serial (fast, the default) or SIMT (one
//! thread per work-item of the packet's work-group, real barriers, poisoned LDS).

use std::sync::Arc;

use onebit_drv::codeobj::load::Program;
use onebit_drv::codeobj::{ArgKind, CodeObject, KernelInfo, EF_AMDGPU_MACH_GFX1151};
use onebit_drv::emu::kfd::{KernelCall, KfdEmu};
use onebit_kernels::gpu::{self, host, KernelSpec};

use super::{IgpuBackend, IgpuError, Result};

/// Registers every kernel of the embedded code object with `kfd`, run by the serial host
/// build; after creating a backend on it, call [`bind`].
pub fn register_kernels(kfd: &KfdEmu) -> Result<()> {
    register_kernels_with(kfd, host::Mode::Serial)
}

/// [`register_kernels`] with the host build run in `mode`.
pub fn register_kernels_with(kfd: &KfdEmu, mode: host::Mode) -> Result<()> {
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
        kfd.register_kernel(spec.name, move |call| run(spec, &info, call, mode));
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
    mode: host::Mode,
) -> std::result::Result<(), String> {
    let (grid, wg) = (call.grid(), call.workgroup());
    if wg[1] != 1 || wg[2] != 1 {
        return Err(format!(
            "dispatched with work-group {wg:?}; the kernels are 1-D in work-items"
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
    // What the GPU code would read as NUM_GROUPS must match the packet; the work-group
    // size it checks comes from the hidden group_size_x, which must match it too.
    let mut group_size_x = None;
    for a in &info.args {
        match a.kind {
            ArgKind::BlockCount(d) => {
                let v = call.arg_u32(u64::from(a.offset))?;
                if v != groups[d] {
                    return Err(format!(
                        "hidden block_count[{d}] is {v}, the packet implies {}",
                        groups[d]
                    ));
                }
            }
            ArgKind::GroupSize(0) => {
                let v = u16::from_le_bytes(
                    call.kernarg(u64::from(a.offset), 2)?
                        .try_into()
                        .expect("2 bytes"),
                );
                if v != wg[0] {
                    return Err(format!(
                        "hidden group_size_x is {v}, the packet's workgroup_size_x {}",
                        wg[0]
                    ));
                }
                group_size_x = Some(v);
            }
            _ => {}
        }
    }
    // A kernel that reads no hidden argument (`empty`) checks nothing: give it the packet's.
    let group_size_x = group_size_x.unwrap_or(wg[0]);
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
    unsafe { host::run_as(spec.name, groups, group_size_x.into(), &args, mode) }
        .map(|_| ())
        .map_err(|e| e.to_string())
}
