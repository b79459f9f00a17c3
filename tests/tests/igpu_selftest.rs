//! `onebit selftest --surface igpu` on the KFD emulator: every kernel case dispatched
//! through AQL and judged against the CPU references, and the end-to-end model check.

use onebit_drv::emu::Emulator;
use onebit_drv::kfd::{Device, DeviceOptions};
use onebit_engine::backend::igpu::open::{open_gpu, Gpu};
use onebit_engine::backend::igpu::{emulator, selftest};
use onebit_tests::fixture;

#[test]
fn every_kernel_passes_on_the_emulator() {
    let (emu, kfd) = Emulator::strix_halo();
    emulator::register_kernels(&kfd).unwrap();
    {
        let dev = Device::open(&emu.io(), &DeviceOptions::default()).unwrap();
        let reports =
            selftest::run_kernels(&dev, 42, &|p| emulator::bind_program(&kfd, p)).unwrap();
        let names: Vec<_> = reports.iter().map(|r| r.name).collect();
        for k in [
            "gemv_i2s",
            "gemm_i2s",
            "gemv_sherry",
            "gemm_sherry",
            "act_quant",
            "rms_norm",
            "rope",
            "attention",
            "lm_head_f16+argmax",
            "lm_head_f16_x8",
            "empty",
        ] {
            assert!(names.contains(&k), "{k} not tested: {names:?}");
        }
        for r in &reports {
            assert!(r.ok, "{}: {}", r.name, r.detail);
        }
    }
    emu.assert_no_leaks();
}

/// The same cases with the SIMT host build: each dispatch runs one thread per work-item of
/// the packet's work-group, with real barriers and LDS poisoned before every group.
#[test]
fn every_kernel_passes_on_the_emulator_with_simt_work_items() {
    let (emu, kfd) = Emulator::strix_halo();
    let mode =
        onebit_kernels::gpu::host::Mode::simt(onebit_kernels::gpu::host::Schedule::Concurrent);
    emulator::register_kernels_with(&kfd, mode).unwrap();
    {
        let dev = Device::open(&emu.io(), &DeviceOptions::default()).unwrap();
        let reports = selftest::run_kernels(&dev, 7, &|p| emulator::bind_program(&kfd, p)).unwrap();
        assert!(reports.len() >= 8, "{} cases", reports.len());
        for r in &reports {
            assert!(r.ok, "{}: {}", r.name, r.detail);
        }
    }
    emu.assert_no_leaks();
}

#[test]
fn the_model_check_agrees_with_the_cpu() {
    let Some(path) = fixture("tiny-a/tiny-a.i2_s.gguf") else {
        return;
    };
    let model = onebit_engine::format::load(&path).unwrap().0;
    let (r, gpu) = selftest::run_model(emulated(), &model, &[0, 863, 71, 260], 8).unwrap();
    assert_eq!(r.gpu_tokens, r.cpu_tokens);
    assert!(r.ok());
    no_leaks(gpu);
}

/// The emulated iGPU `onebit selftest --emulator` opens.
fn emulated() -> Gpu {
    open_gpu(true)
        .unwrap()
        .expect("the emulator is always there")
}

/// Closes the device and checks the emulator saw every fd and mapping released.
fn no_leaks(gpu: Gpu) {
    let Gpu { dev, kfd, emu } = gpu;
    drop((dev, kfd));
    emu.expect("emulated").assert_no_leaks();
}

#[test]
fn the_embedded_bf16_model_runs_on_the_emulated_igpu() {
    if !onebit_engine::embedded::AVAILABLE {
        eprintln!("SKIP: built without the embedded model");
        return;
    }
    let model = onebit_engine::embedded::load().unwrap().0;
    let bos = model.config.bos_token_id.unwrap_or(0);
    let (r, gpu) = selftest::run_model(emulated(), &model, &[bos, 100, 200, 300], 8).unwrap();
    // BF16 LM-head sums differ from the CPU's order in the last bits: equal tokens, or a
    // first difference at a near tie
    assert!(
        r.ok(),
        "cpu {:?} vs igpu {:?} (margin {:?})",
        r.cpu_tokens,
        r.gpu_tokens,
        r.margin_at_mismatch
    );
    no_leaks(gpu);
}
