//! `onebit probe` and the GPU path end to end: on this machine (skips nothing: a machine
//! without /dev/kfd must get a report saying so) and on the emulated Strix Halo, where the
//! probe's answer drives device bring-up and a dispatch whose results land in CPU memory.

use onebit_drv::buffer::BufferDescriptor;
use std::path::Path;
use std::time::Duration;

use onebit_drv::emu::Emulator;
use onebit_drv::kfd::SharedGpuBuffer;
use onebit_drv::kfd::{
    AllocOptions, AqlQueue, Device, DeviceOptions, DispatchArgs, GpuBuffer, QueueOptions,
};
use onebit_engine::probe::{probe_report, probe_system};

#[test]
fn probe_of_this_machine_never_fails() {
    let r = probe_system();
    let text = r.to_text();
    eprintln!("{text}");
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["kfd"]["present"], Path::new("/dev/kfd").exists());
    if !Path::new("/dev/kfd").exists() {
        assert!(text.contains("not present"));
        assert!(r.advice.iter().any(|a| a.contains("no /dev/kfd")));
    }
}

#[test]
fn probe_then_dispatch_on_the_emulated_strix_halo() {
    let (emu, kfd) = Emulator::strix_halo();
    kfd.register_kernel("scale2", |call| {
        let (p, n) = (call.arg_u64(0)?, call.arg_u32(8)? as usize);
        let v: Vec<f32> = call.read_f32(p, n)?.iter().map(|x| x * 2.0).collect();
        call.write_f32(p, &v)
    });
    {
        let io = emu.io();
        let report = probe_report(io.as_ref());
        assert!(report.gpu_ready(), "{}", report.to_text());
        let gfx = report
            .gpus
            .iter()
            .find(|g| g.supported)
            .unwrap()
            .gfx
            .clone();
        let dev = Device::open(&io, &DeviceOptions { gfx: Some(gfx) }).unwrap();
        let mut buf =
            SharedGpuBuffer::new(&dev, "activations", 256 * 4, BufferDescriptor::f32()).unwrap();
        for (i, c) in buf.as_mut_slice().chunks_exact_mut(4).enumerate() {
            c.copy_from_slice(&(i as f32).to_le_bytes());
        }
        let code = GpuBuffer::alloc(&dev, 4096, AllocOptions::code()).unwrap();
        kfd.bind_symbol(code.va(), "scale2");
        let mut ka = GpuBuffer::alloc(&dev, 4096, AllocOptions::gtt()).unwrap();
        ka.as_mut_slice().unwrap()[..8].copy_from_slice(&buf.gpu_va().to_le_bytes());
        ka.as_mut_slice().unwrap()[8..12].copy_from_slice(&256u32.to_le_bytes());
        let q = AqlQueue::new(&dev, QueueOptions::default()).unwrap();
        q.dispatch(&DispatchArgs::linear(code.va(), ka.va(), 256, 64))
            .unwrap()
            .wait(Duration::from_secs(10))
            .unwrap();
        let last = f32::from_le_bytes(buf.as_slice()[255 * 4..].try_into().unwrap());
        assert_eq!(last, 510.0);
    }
    emu.assert_no_leaks();
}

/// The emulated CP's cache rules: each case faults its queue with the reason, where the
/// GPU would silently compute on stale data or out-of-range LDS.
#[test]
fn the_emulated_cp_enforces_fence_scopes_and_lds_sizes() {
    use onebit_drv::kfd::{Batch, FenceScope};
    let (emu, kfd) = Emulator::strix_halo();
    kfd.register_kernel("noop", |_| Ok(()));
    {
        let dev = Device::open(&emu.io(), &DeviceOptions::default()).unwrap();
        let mut code = GpuBuffer::alloc(&dev, 4096, AllocOptions::code()).unwrap();
        // kernel descriptor: group_segment_fixed_size = 1024
        code.as_mut_slice().unwrap()[..4].copy_from_slice(&1024u32.to_le_bytes());
        kfd.bind_symbol(code.va(), "noop");
        let ka = GpuBuffer::alloc(&dev, 4096, AllocOptions::gtt()).unwrap();
        let ok = DispatchArgs {
            group_segment_size: 1024,
            ..DispatchArgs::linear(code.va(), ka.va(), 64, 64)
        };
        let cases = [
            (
                DispatchArgs {
                    acquire: FenceScope::Agent,
                    ..ok
                },
                "stale L2",
            ),
            (
                DispatchArgs {
                    release: FenceScope::Agent,
                    ..ok
                },
                "release at system scope",
            ),
            (
                DispatchArgs {
                    group_segment_size: 0,
                    ..ok
                },
                "1024 bytes of LDS",
            ),
        ];
        for (args, why) in cases {
            let q = AqlQueue::new(&dev, QueueOptions::default()).unwrap();
            let done = q.dispatch(&ok).unwrap();
            done.wait(Duration::from_secs(10)).unwrap();
            // the host saw the completion: the next packet must acquire at system scope
            let r = q.dispatch(&args).unwrap().wait(Duration::from_secs(10));
            let fault = kfd.queue_faults(q.id()).join("; ");
            assert!(r.is_err() && fault.contains(why), "{why}: {r:?} / {fault}");
        }
        // agent-scope acquire in the middle of a batch is what a chain does: accepted
        let q = AqlQueue::new(&dev, QueueOptions::default()).unwrap();
        let mid = DispatchArgs {
            acquire: FenceScope::Agent,
            release: FenceScope::Agent,
            ..ok
        };
        let batch = Batch::new().dispatch(&ok).unwrap().dispatch(&mid).unwrap();
        let batch = batch
            .dispatch(&DispatchArgs {
                acquire: FenceScope::Agent,
                ..ok
            })
            .unwrap();
        q.submit(batch)
            .unwrap()
            .wait(Duration::from_secs(10))
            .unwrap();
        // acquire None never enters a batch
        let none = DispatchArgs {
            acquire: FenceScope::None,
            ..ok
        };
        let e = Batch::new()
            .dispatch(&ok)
            .unwrap()
            .dispatch(&none)
            .unwrap_err();
        assert!(e.to_string().contains("acquire scope None"), "{e}");
    }
    emu.assert_no_leaks();
}
