//! The iGPU backend on the KFD emulator: whole generations through real AQL packets,
//! doorbells and completion signals, each kernel symbol running the host build of its own
//! GPU source, against the CPU forward pass.

use std::time::Duration;

use onebit_drv::emu::Emulator;
use onebit_drv::kfd::{Device, DeviceOptions};
use onebit_engine::backend::igpu::{emulator, IgpuBackend, IgpuOptions};
use onebit_engine::forward::{forward, LogitsMode, Session};
use onebit_engine::model::Model;
use onebit_engine::sampler::argmax;
use onebit_tests::fixture;

const PROMPT: [u32; 12] = [0, 863, 71, 260, 265, 80, 553, 223, 443, 71, 87, 71];
const STEPS: usize = 24;

fn model() -> Option<Model> {
    let path = fixture("tiny-a/tiny-a.i2_s.gguf")?;
    Some(onebit_engine::format::load(&path).expect("tiny-a loads").0)
}

/// Greedy tokens and the first step's logits on the CPU.
fn cpu_generate(model: &Model, prompt: &[u32]) -> (Vec<u32>, Vec<f32>) {
    let mut s = Session::new(model, 512);
    let first = forward(model, &mut s, prompt, LogitsMode::Last).unwrap();
    let mut tok = argmax(&first);
    let mut out = vec![tok];
    for _ in 1..STEPS {
        tok = argmax(&forward(model, &mut s, &[tok], LogitsMode::Last).unwrap());
        out.push(tok);
    }
    (out, first)
}

/// Greedy tokens and the first step's logits on the emulated iGPU.
fn igpu_generate(
    model: &Model,
    prompt: &[u32],
    opts: &IgpuOptions,
    prompt_one_by_one: bool,
) -> (Vec<u32>, Vec<f32>) {
    let (emu, kfd) = Emulator::strix_halo();
    emulator::register_kernels(&kfd).unwrap();
    let result = {
        let dev = Device::open(
            &emu.io(),
            &DeviceOptions {
                gfx: Some("gfx1151".into()),
            },
        )
        .unwrap();
        let mut be = IgpuBackend::new(&dev, model, opts).unwrap();
        emulator::bind(&kfd, &be);
        assert!(be.same_va(), "emulated buffers sit at the CPU address");
        let fault = |e| panic!("{e}; emulated CP: {:?}", kfd.queue_fault(1));
        let mut tok = if prompt_one_by_one {
            let mut t = 0;
            for id in prompt {
                t = be.forward(&[*id]).unwrap_or_else(fault);
            }
            t
        } else {
            be.forward(prompt).unwrap_or_else(fault)
        };
        let first = be.logits();
        assert_eq!(
            tok,
            argmax(&first),
            "GPU argmax agrees with the logits it wrote"
        );
        let mut out = vec![tok];
        for _ in 1..STEPS {
            tok = be.forward(&[tok]).unwrap_or_else(fault);
            out.push(tok);
        }
        assert_eq!(be.len(), prompt.len() + STEPS - 1);
        (out, first)
    };
    emu.assert_no_leaks();
    result
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

#[test]
fn igpu_generation_on_the_emulator_matches_the_cpu() {
    let Some(model) = model() else { return };
    let (cpu, cpu_logits) = cpu_generate(&model, &PROMPT);
    let opts = IgpuOptions {
        max_ctx: 512,
        // Only a hung emulator may reach this; a loaded machine's slow steps must not.
        timeout: Duration::from_secs(300),
        ..IgpuOptions::default()
    };
    let (gpu, gpu_logits) = igpu_generate(&model, &PROMPT, &opts, false);
    let d = max_rel_diff(&gpu_logits, &cpu_logits);
    assert!(
        d < 1e-4,
        "first-step logits differ by {d} (relative to the largest)"
    );
    assert_eq!(gpu, cpu, "greedy tokens");
}

#[test]
fn prefill_chunks_and_token_by_token_prompts_agree() {
    let Some(model) = model() else { return };
    let (cpu, _) = cpu_generate(&model, &PROMPT);
    // 5-token chunks: GEMM prefill over three chunks, partial GEMM tiles
    let chunked = IgpuOptions {
        max_ctx: 512,
        max_batch: 5,
        ..IgpuOptions::default()
    };
    assert_eq!(igpu_generate(&model, &PROMPT, &chunked, false).0, cpu);
    // GEMV only
    let one = IgpuOptions {
        max_ctx: 512,
        ..IgpuOptions::default()
    };
    assert_eq!(igpu_generate(&model, &PROMPT, &one, true).0, cpu);
}

#[test]
fn flash_decoding_splits_stay_close_to_the_cpu() {
    let Some(model) = model() else { return };
    let (_, cpu_logits) = cpu_generate(&model, &PROMPT);
    // 5 positions per split: the 12-token prompt's attention runs over 3 splits
    let opts = IgpuOptions {
        max_ctx: 512,
        split_len: 5,
        ..IgpuOptions::default()
    };
    let (_, gpu_logits) = igpu_generate(&model, &PROMPT, &opts, false);
    let d = max_rel_diff(&gpu_logits, &cpu_logits);
    assert!(d < 1e-3, "split attention changed logits by {d}");
}

#[test]
fn profile_mode_times_every_op() {
    let Some(model) = model() else { return };
    let (emu, kfd) = Emulator::strix_halo();
    emulator::register_kernels(&kfd).unwrap();
    {
        let dev = Device::open(&emu.io(), &DeviceOptions::default()).unwrap();
        let opts = IgpuOptions {
            max_ctx: 64,
            profile: true,
            ..IgpuOptions::default()
        };
        let mut be = IgpuBackend::new(&dev, &model, &opts).unwrap();
        emulator::bind(&kfd, &be);
        let tok = be.forward(&[0]).unwrap();
        let p = be.profile();
        let per_layer = 22;
        assert_eq!(
            p.len(),
            1 + model.config.n_layers * per_layer + 4,
            "one timing per dispatched op"
        );
        assert_eq!(p[0].name, "embed_f16");
        assert_eq!(p.last().unwrap().name, "argmax_final");
        let mut s = Session::new(&model, 64);
        assert_eq!(
            tok,
            argmax(&forward(&model, &mut s, &[0], LogitsMode::Last).unwrap())
        );
        let err = be.forward(&[5000]).unwrap_err().to_string();
        assert!(err.contains("outside the vocabulary"), "{err}");
    }
    emu.assert_no_leaks();
}
