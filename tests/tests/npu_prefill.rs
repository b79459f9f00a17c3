//! NPU prefill on the emulated amdxdna: whole generations with `npu+cpu` give exactly the
//! CPU's tokens, greedy and with seeded sampling; with `npu+igpu` (NPU prefill, KV cache
//! handed to the emulated iGPU, decode there) the prefill's logits are the CPU's bit for
//! bit and every greedy pick is the CPU's best up to rounding; and the emulated NPU kernel
//! equals the CPU GEMM bit for bit on odd sizes.

use std::sync::Arc;

use onebit_engine::backend::cpu::CpuBackend;
use onebit_engine::backend::fallback::Fallback;
use onebit_engine::backend::npu::selftest;
use onebit_engine::backend::npu::{ArtifactSource, GemmShape, NpuSurface, PrefillPlan};
use onebit_engine::backend::{
    open, Backend, Health, Need, Opened, Output, SelectOptions, Surface, SurfaceChoice,
};
use onebit_engine::forward::KvFormat;
use onebit_engine::generate::{generate, Options};
use onebit_engine::model::Model;
use onebit_engine::sampler::SamplingParams;
use onebit_tests::fixture;

const CTX: usize = 256;

fn tiny_a() -> Option<Model> {
    let path = fixture("tiny-a/tiny-a.i2_s.gguf")?;
    Some(onebit_engine::format::load(&path).expect("tiny-a loads").0)
}

fn embedded() -> Model {
    onebit_engine::embedded::load()
        .expect("the embedded model loads")
        .0
}

fn prompts(model: &Model) -> [Vec<u32>; 2] {
    let v = model.config.vocab_size as u32;
    let first: Vec<u32> = (0..45u32).map(|i| (i * 7919 + 13) % v).collect();
    let second: Vec<u32> = (0..9u32).map(|i| (i * 104_729 + 5) % v).collect();
    [first, second]
}

fn options(seeded: bool) -> Options {
    Options {
        max_new: 20,
        sampling: if seeded {
            SamplingParams {
                temperature: 0.9,
                seed: Some(1234),
                ..SamplingParams::default()
            }
        } else {
            SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            }
        },
        stop_ids: Vec::new(),
        logprobs: None,
    }
}

/// Two turns in one session: the second prompt's prefill starts from the cache the first
/// turn's decode left.
fn two_turns<B: Backend>(b: &mut B, prompts: &[Vec<u32>; 2], seeded: bool) -> Vec<Vec<u32>> {
    let mut s = b.new_session(CTX).expect("a session");
    prompts
        .iter()
        .map(|p| {
            generate(b, &mut s, p, &options(seeded), |_| true)
                .expect("generation")
                .tokens
        })
        .collect()
}

/// `kv`: the cache format the surface under test decodes with (the iGPU's is f32).
fn cpu_tokens(model: Model, seeded: bool, kv: KvFormat) -> Vec<Vec<u32>> {
    let p = prompts(&model);
    let mut cpu = CpuBackend::new(Arc::new(model), CTX).with_kv_format(kv);
    two_turns(&mut cpu, &p, seeded)
}

/// Tiny models are far too small for the NPU to pay in the roofline model (their plan
/// keeps every chunk on the decode surface); these tests check numbers, so every prompt
/// of two or more tokens goes to the NPU.
fn every_prompt_on_the_npu<D: onebit_engine::backend::npu::DecodeSurface>(
    s: NpuSurface<D>,
) -> NpuSurface<D> {
    let plan = s.plan();
    eprintln!("planned: {plan:?}");
    s.with_plan(PrefillPlan {
        chunk: plan.chunk,
        min_rows: 2,
    })
}

/// `surface` opened on the emulators.
fn open_emulated(model: Model, surface: Surface) -> Opened {
    let opts = SelectOptions {
        choice: SurfaceChoice::Fixed(surface),
        emulator: true,
        ctx: CTX,
        ..SelectOptions::default()
    };
    open(model, &opts).expect("the emulated NPU surface opens")
}

/// `npu+igpu` on the emulators, every prompt on the NPU.
fn npu_igpu(model: Model) -> NpuSurface<Fallback> {
    let Opened::NpuIgpu(b) = open_emulated(model, Surface::NpuIgpu) else {
        panic!("npu+igpu expected");
    };
    every_prompt_on_the_npu(*b)
}

fn npu_tokens(model: Model, surface: Surface, seeded: bool) -> Vec<Vec<u32>> {
    let p = prompts(&model);
    match open_emulated(model, surface) {
        Opened::NpuIgpu(b) => {
            let mut b = every_prompt_on_the_npu(*b);
            let out = two_turns(&mut b, &p, seeded);
            assert!(
                b.npu().launches() > 0,
                "no NPU launch: the test proves nothing"
            );
            assert_eq!(b.health(), Health::Ok);
            assert_eq!(b.surface(), Surface::NpuIgpu);
            assert_eq!(
                b.decode().surface(),
                Surface::Igpu,
                "decode stayed on the iGPU"
            );
            out
        }
        Opened::NpuCpu(b) => {
            let mut b = every_prompt_on_the_npu(*b);
            let out = two_turns(&mut b, &p, seeded);
            assert!(
                b.npu().launches() > 0,
                "no NPU launch: the test proves nothing"
            );
            assert_eq!(b.health(), Health::Ok);
            out
        }
        o => panic!("asked for {surface}, got {}", o.surface()),
    }
}

/// Greedy and seeded generations equal the CPU's. With the iGPU decoding, seeded sampling
/// is left out and greedy is checked pick by pick: the iGPU's own decode logits differ
/// from the CPU's in the last bits (its attention uses the GPU's `expf`; `--surface igpu`
/// alone samples differently too), so there the prefill's logits are compared bit for bit
/// ([`prefill_logits_equal_the_cpus`]) and each decode pick up to rounding
/// ([`each_pick_is_the_cpus_best_up_to_rounding`]).
fn same_as_cpu(load: impl Fn() -> Model, surface: Surface) {
    let seeds: &[bool] = if surface.decodes_on_igpu() {
        &[false]
    } else {
        &[false, true]
    };
    for &seeded in seeds {
        let kv = if surface.decodes_on_igpu() {
            KvFormat::F32
        } else {
            KvFormat::default()
        };
        let want = cpu_tokens(load(), seeded, kv);
        let got = npu_tokens(load(), surface, seeded);
        assert!(want.iter().chain(&got).all(|t| t.len() == 20));
        if surface.decodes_on_igpu() {
            // The iGPU sums in another order: where the CPU's best two logits are within
            // rounding, greedy may take either, and the rest of the turn follows that pick.
            // So every token it picked must be the CPU's best up to rounding, with the
            // CPU fed the iGPU's own tokens.
            each_pick_is_the_cpus_best_up_to_rounding(&load, &got);
        } else {
            assert_eq!(got, want, "{surface}, seeded {seeded}");
        }
    }
    if surface.decodes_on_igpu() {
        prefill_logits_equal_the_cpus(load);
    }
}

/// Feeds the CPU (f32 cache, like the iGPU's) and a fresh `npu+igpu` the two turns as
/// `picked` generated them, in lockstep, and checks at every step that:
/// - the surface's argmax is its pick (the generation took the surface's best);
/// - the two surfaces' logits differ by no more than one int8 rounding flip does (the
///   iGPU's attention sums in another order with another `expf`, and where an activation
///   sits on a rounding boundary the two quantize it apart, moving logits by ~1 % of the
///   largest on these random weights; a wrong kernel moves them by far more);
/// - where the pick is not the CPU's best, the CPU's margin between the two is within
///   what the logits differ by at that step: a near-tie, decided by rounding.
fn each_pick_is_the_cpus_best_up_to_rounding(load: impl Fn() -> Model, picked: &[Vec<u32>]) {
    let model = load();
    let p = prompts(&model);
    let mut cpu = CpuBackend::new(Arc::new(load()), CTX).with_kv_format(KvFormat::F32);
    let mut dev = npu_igpu(model);
    let mut cs = cpu.new_session(CTX).unwrap();
    let mut ds = dev.new_session(CTX).unwrap();
    let argmax = |l: &[f32]| {
        (0..l.len())
            .reduce(|a, b| if l[b] > l[a] { b } else { a })
            .unwrap()
    };
    let (mut same, mut all) = (0, 0);
    for (turn, (prompt, picks)) in p.iter().zip(picked).enumerate() {
        let mut feed = prompt.clone();
        for (i, &t) in picks.iter().enumerate() {
            cpu.step(&mut [&mut cs], &[&feed], &[Need::Logits]).unwrap();
            dev.step(&mut [&mut ds], &[&feed], &[Need::Logits]).unwrap();
            let (Output::Logits(c), Output::Logits(d)) = (cpu.output(&cs), dev.output(&ds)) else {
                panic!("logits expected");
            };
            let at = format!("turn {turn}, token {i}");
            assert_eq!(argmax(d) as u32, t, "{at}: the surface repeats its pick");
            let apart = c
                .iter()
                .zip(d)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            let scale = c.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            assert!(
                apart / scale < 3e-2,
                "{at}: logits {} (relative) apart, beyond a rounding flip",
                apart / scale
            );
            let best = argmax(c);
            let margin = c[best] - c[t as usize];
            assert!(
                margin <= 2.0 * apart,
                "{at}: picked {t}, {margin} below the CPU's best {best}, logits only {apart} apart"
            );
            same += usize::from(best == t as usize);
            all += 1;
            feed = vec![t];
        }
    }
    eprintln!("{same} of {all} picks are the CPU's own best");
}

/// The logits a prefill leaves (every row's, and the last row's) are the CPU's, bit for
/// bit: what the NPU computed decides them.
fn prefill_logits_equal_the_cpus(load: impl Fn() -> Model) {
    let model = load();
    let [prompt, _] = prompts(&model);
    let mut cpu = CpuBackend::new(Arc::new(load()), CTX).with_kv_format(KvFormat::F32);
    let mut b = npu_igpu(model);
    for need in [Need::AllLogits, Need::Logits] {
        let mut cs = cpu.new_session(CTX).unwrap();
        cpu.step(&mut [&mut cs], &[&prompt], &[need]).unwrap();
        let mut ns = b.new_session(CTX).unwrap();
        let before = b.npu().launches();
        b.step(&mut [&mut ns], &[&prompt], &[need]).unwrap();
        assert!(b.npu().launches() > before);
        let (Output::Logits(want), Output::Logits(got)) = (cpu.output(&cs), b.output(&ns)) else {
            panic!("{need:?}: logits expected");
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(got), bits(want), "{need:?}");
        // The cache went to the iGPU session: a decode step there continues from it.
        assert_eq!(b.tokens(&ns), &prompt[..]);
    }
}

#[test]
fn npu_igpu_generates_the_cpus_tokens_on_tiny_a() {
    if tiny_a().is_none() {
        return;
    }
    same_as_cpu(|| tiny_a().unwrap(), Surface::NpuIgpu);
}

#[test]
fn npu_cpu_generates_the_cpus_tokens_on_tiny_a() {
    if tiny_a().is_none() {
        return;
    }
    same_as_cpu(|| tiny_a().unwrap(), Surface::NpuCpu);
}

#[test]
fn npu_igpu_generates_the_cpus_tokens_on_the_embedded_model() {
    same_as_cpu(embedded, Surface::NpuIgpu);
}

#[test]
fn npu_cpu_generates_the_cpus_tokens_on_the_embedded_model() {
    same_as_cpu(embedded, Surface::NpuCpu);
}

#[test]
fn a_failing_npu_hands_prefill_to_the_cpu_with_the_same_tokens() {
    let want = cpu_tokens(embedded(), false, KvFormat::default());
    let model = embedded();
    let p = prompts(&model);
    let opts = SelectOptions {
        choice: SurfaceChoice::Fixed(Surface::NpuCpu),
        emulator: true,
        ctx: CTX,
        ..SelectOptions::default()
    };
    let Opened::NpuCpu(b) = open(model, &opts).unwrap() else {
        panic!("npu+cpu expected");
    };
    let mut b = every_prompt_on_the_npu(*b);
    b.npu().emulator().expect("emulated").fail_next_commands(1);
    let got = two_turns(&mut b, &p, false);
    assert_eq!(got, want);
    assert_eq!(
        b.npu().launches(),
        0,
        "the first launch failed, none ran after"
    );
    match b.health() {
        Health::Degraded {
            failed, serving, ..
        } => {
            assert_eq!((failed, serving), (Surface::NpuCpu, Surface::Cpu));
        }
        h => panic!("health {h:?}"),
    }
}

/// The file and inode behind a descriptor.
fn inode(fd: std::os::fd::RawFd) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .expect("an open descriptor")
        .ino()
}

/// With the iGPU decoding, the NPU reads the projections in place from the model file's
/// memfd, the very pages the iGPU and the CPU read: nothing is copied for it.
#[test]
fn the_npu_reads_the_projections_in_place_from_the_model_files_memfd() {
    let Some(model) = tiny_a() else {
        eprintln!("SKIP: tiny-a fixture absent");
        return;
    };
    let Some((fd, _)) = model.embed_tokens.data.memfd_window() else {
        panic!("the default load reads the file into a sealed memfd")
    };
    let file_inode = inode(fd);
    let projections: usize = model
        .layers
        .iter()
        .flat_map(|l| {
            [
                &l.q_proj,
                &l.k_proj,
                &l.v_proj,
                &l.o_proj,
                &l.gate_proj,
                &l.up_proj,
                &l.down_proj,
            ]
        })
        .map(|t| t.byte_len())
        .sum();
    let b = npu_igpu(model);
    let npu = b.npu();
    assert_eq!(
        npu.in_place_bytes(),
        projections,
        "every projection in place"
    );
    assert_eq!(npu.copied_bytes(), 0);
    let memfds = npu.weight_memfds();
    assert!(!memfds.is_empty());
    for m in memfds {
        assert_eq!(
            inode(m),
            file_inode,
            "an NPU weight buffer exports another memfd"
        );
    }
}

/// An iGPU session prefilled on the NPU is lent to the CPU over its own shared buffer: the
/// keys and values the prefill writes lie in that buffer, and the next decode step runs on
/// the iGPU from the same buffer. Nothing is copied either way, and nothing counts as a
/// fallback.
#[test]
fn npu_prefill_writes_the_igpu_sessions_own_kv_buffer() {
    use onebit_engine::backend::fallback::FallbackSession;
    let Some(model) = tiny_a() else {
        eprintln!("SKIP: tiny-a fixture absent");
        return;
    };
    let prompt = prompts(&model)[0].clone();
    let mut b = npu_igpu(model);
    let mut s = b.new_session(0).expect("a session");
    let FallbackSession::Device(d) = &s.inner else {
        panic!("a new session lives on the iGPU")
    };
    let buffer = d.seq.cpu_range();

    b.step(&mut [&mut s], &[&prompt], &[Need::Greedy])
        .expect("prefill");
    assert!(b.npu().launches() > 0, "the prompt went to the NPU");
    let token = match b.output(&s) {
        Output::Token(t) => t,
        o => panic!("greedy output {o:?}"),
    };
    let FallbackSession::Cpu(c) = &s.inner else {
        panic!("the prefill ran in the session lent to the CPU")
    };
    assert_eq!(c.kv.tokens(), &prompt[..]);
    for l in 0..b.decode().cpu().model().config.n_layers {
        let (k, v) = c.kv.layer_kv(l);
        for x in [&k, &v] {
            let at = x.as_ptr() as usize;
            assert!(
                matches!(x, std::borrow::Cow::Borrowed(_)) && buffer.contains(&at),
                "layer {l}: the prefill's keys and values are not in the iGPU session's buffer"
            );
        }
    }

    b.step(&mut [&mut s], &[&[token]], &[Need::Greedy])
        .expect("decode");
    let FallbackSession::Device(d) = &s.inner else {
        panic!("decoding went back to the iGPU")
    };
    assert_eq!(d.seq.cpu_range(), buffer, "the same buffer");
    assert_eq!(d.seq.tokens().len(), prompt.len() + 1);
    assert_eq!(b.fallbacks(), 0);
    assert_eq!(b.health(), Health::Ok);
}

#[test]
fn without_artifacts_npu_surfaces_say_what_to_do() {
    std::env::remove_var(onebit_engine::backend::select::NPU_ARTIFACTS_ENV);
    let opts = SelectOptions {
        choice: SurfaceChoice::Fixed(Surface::NpuCpu),
        ..SelectOptions::default()
    };
    let Err(e) = open(embedded(), &opts) else {
        panic!("npu+cpu opened without artifacts or emulator");
    };
    let msg = e.to_string();
    assert!(
        msg.contains("kernels/npu/build.sh") && msg.contains("--emulator"),
        "{msg}"
    );
}

#[test]
fn the_emulated_npu_kernel_equals_the_cpu_gemm_bit_for_bit_on_odd_sizes() {
    let cases = [
        (
            GemmShape {
                m: 5,
                k: 256,
                n: 37,
            },
            200,
        ),
        (GemmShape { m: 3, k: 384, n: 1 }, 300),
        (
            GemmShape {
                m: 7,
                k: 128,
                n: 129,
            },
            1,
        ),
        (
            GemmShape {
                m: 33,
                k: 640,
                n: 61,
            },
            600,
        ),
    ];
    let checks = selftest::run(&ArtifactSource::Emulated, &cases, 99).expect("kernels run");
    assert_eq!(checks.len(), cases.len());
    for c in checks {
        assert_eq!(c.mismatches, 0, "{c:?}");
        assert!(c.elements > 0);
    }
}
