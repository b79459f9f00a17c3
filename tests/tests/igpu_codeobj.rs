//! The code-object loader against the emulated KFD: the image lands in executable GPU
//! memory exactly as laid out, descriptors are where dispatches will point, kernarg
//! segments are aligned and bounded.

use onebit_drv::codeobj::load::{dispatch_args, KernargArena, LoadError, Program};
use onebit_drv::codeobj::{CodeObject, Launch, EF_AMDGPU_MACH_GFX1151};
use onebit_drv::emu::Emulator;
use onebit_drv::kfd::{Device, DeviceOptions};
use onebit_kernels::gpu;

#[test]
fn program_loads_into_gpu_memory_as_laid_out() {
    let (emu, _kfd) = Emulator::strix_halo();
    {
        let dev = Device::open(
            &emu.io(),
            &DeviceOptions {
                gfx: Some("gfx1151".into()),
            },
        )
        .unwrap();
        let co = CodeObject::parse(gpu::CODE_OBJECT, EF_AMDGPU_MACH_GFX1151).unwrap();
        let program = Program::load(&dev, &co).unwrap();
        let base = program.base();
        assert_eq!(base % 4096, 0);
        let want = co.image(base).unwrap();
        // SAFETY: the code buffer is CPU-visible at its VA and `image_size` bytes long.
        let got = unsafe { std::slice::from_raw_parts(base as *const u8, want.len()) };
        assert_eq!(got, &want[..], "image bytes in GPU memory");
        for spec in gpu::KERNELS {
            let (k, object) = program.kernel(spec.name).unwrap();
            assert_eq!(object, base + k.descriptor_offset);
            assert_eq!(object % 64, 0, "{}: descriptor alignment", spec.name);
            assert_eq!(
                k.explicit_args().count(),
                spec.args.len(),
                "{}: argument count",
                spec.name
            );
            for (a, (name, kind)) in k.explicit_args().zip(spec.args) {
                assert_eq!(
                    a.size as usize,
                    kind.size(),
                    "{}: argument {name}",
                    spec.name
                );
            }
        }
        assert!(matches!(
            program.kernel("nope"),
            Err(LoadError::NoKernel(_))
        ));

        let mut arena = KernargArena::new(&dev, 4096).unwrap();
        let (k, object) = program.kernel("add").unwrap();
        let launch = Launch::groups([3, 1, 1], [256, 1, 1]);
        let a = arena.push(k, &[0x1000, 0x2000, 700], &launch).unwrap();
        let b = arena.push(k, &[0x1000, 0x2000, 700], &launch).unwrap();
        assert_eq!((a % 64, b % 64), (0, 0));
        assert!(b >= a + u64::from(k.kernarg_size));
        let d = dispatch_args(k, object, a, &launch);
        assert_eq!((d.grid, d.workgroup), ([768, 1, 1], [256, 1, 1]));
        assert_eq!(d.group_segment_size, k.group_segment_fixed_size);
        d.validate().unwrap();
        let mut full = 0;
        while arena.push(k, &[0, 0, 0], &launch).is_ok() {
            full += 1;
            assert!(full < 100, "the arena never fills");
        }
        assert!(matches!(
            arena.push(k, &[0, 0, 0], &launch),
            Err(LoadError::ArenaFull { .. })
        ));
        arena.reset();
        assert_eq!(arena.used(), 0);
    }
    emu.assert_no_leaks();
}
