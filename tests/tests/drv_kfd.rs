//! `onebit probe` and the GPU path end to end: on this machine (skips nothing: a machine
//! without /dev/kfd must get a report saying so) and on the emulated Strix Halo, where the
//! probe's answer drives device bring-up and a dispatch whose results land in CPU memory.

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
        let mut buf = SharedGpuBuffer::new(&dev, "activations", 256 * 4).unwrap();
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
