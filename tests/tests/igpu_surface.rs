//! The compute surfaces behind the one `Backend` trait, on the KFD emulator: the iGPU
//! generates the CPU's tokens through the one generation loop, advances several sessions in
//! one submission, and a device fault in the middle of a generation moves the sessions to
//! the CPU with their KV cache, without changing a token.

use std::time::Duration;

use onebit_engine::backend::igpu::{FaultKind, FaultPlan};
use onebit_engine::backend::{
    open, Backend, Health, Opened, SelectOptions, Surface, SurfaceChoice,
};
use onebit_engine::forward::KvFormat;
use onebit_engine::generate::{generate, step, Options, Stream};
use onebit_engine::model::Model;
use onebit_engine::sampler::SamplingParams;
use onebit_tests::fixture;

const PROMPTS: [&[u32]; 3] = [
    &[0, 863, 71, 260, 265, 80, 553, 223, 443, 71, 87, 71],
    &[0, 71, 87, 71, 553],
    &[0, 443, 260, 80, 80, 80, 265, 863],
];

fn tiny_a(format: &str) -> Option<Model> {
    let path = fixture(&format!("tiny-a/tiny-a.{format}.gguf"))?;
    Some(onebit_engine::format::load(&path).expect("tiny-a loads").0)
}

/// Every test model, by name: the tiny-a fixture in each GGUF format and the embedded
/// onebit-tiny.
fn load(name: &str) -> Option<Model> {
    match name.strip_prefix("tiny-a.") {
        Some(format) => tiny_a(format),
        None => onebit_engine::embedded::load().ok().map(|(m, _)| m),
    }
}

const MODELS: [&str; 4] = ["tiny-a.i2_s", "tiny-a.tq2_0", "tiny-a.tq1_0", "onebit-tiny"];

fn surface(model: Model, s: Surface, fault: Option<FaultPlan>) -> Opened {
    let o = SelectOptions {
        choice: SurfaceChoice::Fixed(s),
        emulator: true,
        ctx: 256,
        sessions: 4,
        // A step counts as hung after this long: short where a hang is injected (the test
        // waits it out; a slow step taken for a hang moves the sessions to the CPU, which the
        // fault tests expect anyway), and out of reach of a loaded machine otherwise.
        device_timeout: if fault.is_some_and(|f| f.kind == FaultKind::Hang) {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(300)
        },
        fault,
        // The CPU computes what the device does only with the device's f32 cache.
        kv_format: KvFormat::F32,
        ..SelectOptions::default()
    };
    open(model, &o).expect("the surface opens")
}

fn options(temperature: f32) -> Options {
    Options {
        max_new: 16,
        sampling: SamplingParams {
            temperature,
            seed: Some(7),
            ..SamplingParams::default()
        },
        stop_ids: vec![],
        logprobs: None,
    }
}

fn tokens_on<B: Backend>(b: &mut B, prompt: &[u32], temperature: f32) -> Vec<u32> {
    let mut s = b.new_session(0).unwrap();
    generate(b, &mut s, prompt, &options(temperature), |_| true)
        .unwrap()
        .tokens
}

fn tokens(opened: &mut Opened, prompt: &[u32], temperature: f32) -> Vec<u32> {
    match opened {
        Opened::Cpu(b) => tokens_on(b, prompt, temperature),
        Opened::Igpu(b) => tokens_on(b, prompt, temperature),
        Opened::NpuCpu(b) => tokens_on(b, prompt, temperature),
        Opened::NpuIgpu(b) => tokens_on(b, prompt, temperature),
    }
}

#[test]
fn the_igpu_generates_the_cpus_greedy_tokens_and_samples_in_place() {
    for name in MODELS {
        let (Some(a), Some(b)) = (load(name), load(name)) else {
            eprintln!("SKIP {name}: not available here");
            continue;
        };
        let mut cpu = surface(a, Surface::Cpu, None);
        let mut gpu = surface(b, Surface::Igpu, None);
        assert_eq!(gpu.surface(), Surface::Igpu, "{name}");
        for p in PROMPTS {
            assert_eq!(
                tokens(&mut gpu, p, 0.0),
                tokens(&mut cpu, p, 0.0),
                "{name}, greedy, prompt {p:?}"
            );
            // Sampling reads the logits in place from the shared buffer. The GPU's float
            // sums are not the CPU's bit for bit, so a draw may land on the other side of
            // a boundary: a fixed seed reproduces the device's own run, and the first
            // draw (from a near-identical distribution) agrees with the CPU's.
            let sampled = tokens(&mut gpu, p, 0.8);
            assert_eq!(sampled.len(), 16);
            assert_eq!(
                sampled,
                tokens(&mut gpu, p, 0.8),
                "{name}: seeded run repeats"
            );
            assert_eq!(
                sampled[0],
                tokens(&mut cpu, p, 0.8)[0],
                "{name}: first draw"
            );
        }
    }
}

/// Every stream of `prompts` advanced together, one batched step at a time.
fn together<B: Backend>(b: &mut B, prompts: &[&[u32]], chunk: usize) -> Vec<Vec<u32>> {
    let mut sessions: Vec<B::Session> = prompts.iter().map(|_| b.new_session(0).unwrap()).collect();
    let mut streams: Vec<Stream> = prompts
        .iter()
        .map(|p| Stream::new(p.to_vec(), 0, options(0.0)))
        .collect();
    let mut out = vec![Vec::new(); prompts.len()];
    let mut done = vec![false; prompts.len()];
    while done.iter().any(|d| !d) {
        let mut rows: Vec<(&mut B::Session, &mut Stream)> = sessions
            .iter_mut()
            .zip(streams.iter_mut())
            .zip(&done)
            .filter(|(_, d)| !**d)
            .map(|((s, st), _)| (s, st))
            .collect();
        let live: Vec<usize> = (0..prompts.len()).filter(|&i| !done[i]).collect();
        let adv = step(b, &mut rows, chunk).unwrap();
        for (i, a) in live.into_iter().zip(adv) {
            out[i].extend(a.tokens);
            done[i] |= a.finish.is_some();
        }
    }
    out
}

#[test]
fn several_sessions_in_one_submission_match_one_at_a_time() {
    let Some(model) = tiny_a("i2_s") else {
        eprintln!("SKIP: tiny-a fixture absent");
        return;
    };
    let Opened::Igpu(mut gpu) = surface(model, Surface::Igpu, None) else {
        unreachable!()
    };
    let alone: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| tokens_on(&mut gpu, p, 0.0))
        .collect();
    // Prompts fed in chunks of 3 next to other sessions' decode steps, then batched decode.
    assert_eq!(together(&mut gpu, &PROMPTS, 3), alone);
    assert_eq!(gpu.health(), Health::Ok);
}

#[test]
fn a_device_fault_mid_generation_continues_on_the_cpu_with_the_same_tokens() {
    let Some(model) = tiny_a("i2_s") else {
        eprintln!("SKIP: tiny-a fixture absent");
        return;
    };
    let Opened::Cpu(mut cpu) = surface(model, Surface::Cpu, None) else {
        unreachable!()
    };
    let want: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| tokens_on(&mut cpu, p, 0.0))
        .collect();
    for kind in [FaultKind::DeviceError, FaultKind::Hang] {
        let model = tiny_a("i2_s").unwrap();
        // Step 1 prefills every prompt on the device; the fault strikes at step 5, with
        // four tokens of each session's KV cache written by the device.
        let plan = FaultPlan { kind, at: 5 };
        let Opened::Igpu(mut gpu) = surface(model, Surface::Igpu, Some(plan)) else {
            unreachable!()
        };
        assert_eq!(together(&mut gpu, &PROMPTS, 64), want, "{kind:?}");
        match gpu.health() {
            Health::Degraded {
                failed,
                serving,
                reason,
            } => {
                assert_eq!((failed, serving), (Surface::Igpu, Surface::Cpu));
                assert!(!reason.is_empty());
            }
            Health::Ok => panic!("{kind:?}: the fault went unnoticed"),
        }
        assert_eq!(gpu.fallbacks(), PROMPTS.len() as u64, "{kind:?}");
        assert_eq!(gpu.surface(), Surface::Cpu);
    }
}

#[test]
fn out_of_device_memory_for_a_session_puts_only_that_session_on_the_cpu() {
    let Some(model) = tiny_a("i2_s") else {
        eprintln!("SKIP: tiny-a fixture absent");
        return;
    };
    let Opened::Cpu(mut cpu) = surface(model, Surface::Cpu, None) else {
        unreachable!()
    };
    let want: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| tokens_on(&mut cpu, p, 0.0))
        .collect();
    let model = tiny_a("i2_s").unwrap();
    let plan = FaultPlan {
        kind: FaultKind::Enomem,
        at: 2,
    };
    let Opened::Igpu(mut gpu) = surface(model, Surface::Igpu, Some(plan)) else {
        unreachable!()
    };
    assert_eq!(together(&mut gpu, &PROMPTS, 64), want);
    assert_eq!(gpu.fallbacks(), 1);
    assert_eq!(
        gpu.health(),
        Health::Ok,
        "the device still serves the others"
    );
}

#[test]
fn npu_surfaces_say_what_they_need() {
    let Some(model) = tiny_a("i2_s") else {
        eprintln!("SKIP: tiny-a fixture absent");
        return;
    };
    let o = SelectOptions {
        choice: "npu+cpu".parse().unwrap(),
        ..SelectOptions::default()
    };
    let err = match open(model, &o) {
        Err(e) => e.to_string(),
        Ok(_) => return, // a build with NPU prefill
    };
    assert!(err.contains("IRON/Peano"), "{err}");
}

/// Whether every large weight the CPU reads lies inside `range` (an address range): the
/// token embedding (the tied head) and every projection.
fn weights_inside(m: &Model, range: &std::ops::Range<usize>) {
    let inside = |bytes: &[u8]| {
        let p = bytes.as_ptr() as usize;
        range.contains(&p) && p + bytes.len() <= range.end
    };
    assert!(inside(m.embed_tokens.data.as_slice()), "embedding");
    for (i, l) in m.layers.iter().enumerate() {
        for (name, t) in [
            ("q_proj", &l.q_proj),
            ("k_proj", &l.k_proj),
            ("v_proj", &l.v_proj),
            ("o_proj", &l.o_proj),
            ("gate_proj", &l.gate_proj),
            ("up_proj", &l.up_proj),
            ("down_proj", &l.down_proj),
        ] {
            assert!(inside(t.view().data), "layer {i} {name}");
            assert!(!t.data.is_mapped(), "layer {i} {name} still reads the file");
        }
    }
}

/// The file and inode behind the mapping that holds `addr`, from `/proc/self/maps`.
fn mapping_inode(addr: usize) -> Option<(u64, String)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (lo, hi) = f.next()?.split_once('-')?;
        let (lo, hi) = (
            usize::from_str_radix(lo, 16).ok()?,
            usize::from_str_radix(hi, 16).ok()?,
        );
        if !(lo..hi).contains(&addr) {
            return None;
        }
        let inode = f.nth(3)?.parse().ok()?;
        Some((inode, f.collect::<Vec<_>>().join(" ")))
    })
}

/// A model read into its sealed memfd is read in place: the GPU imports that memfd as it
/// is, and the CPU's tensors are windows of the very mapping the GPU's addresses name, so
/// the weights are in memory once. Only norms and the RoPE table are copied.
#[test]
fn the_cpu_and_the_igpu_read_the_model_files_own_pages() {
    use onebit_engine::model::Bytes;
    use std::os::unix::fs::MetadataExt;
    let Some(model) = tiny_a("i2_s") else {
        eprintln!("SKIP: tiny-a fixture absent");
        return;
    };
    let Bytes::Sealed { file, .. } = &model.embed_tokens.data else {
        panic!("the default load reads the file into a sealed memfd")
    };
    let fd = format!("/proc/self/fd/{}", file.raw_fd());
    let inode = std::fs::metadata(&fd).expect("the memfd").ino();
    let weight_bytes: usize = model.embed_tokens.data.len()
        + model
            .layers
            .iter()
            .map(|l| {
                [
                    &l.q_proj,
                    &l.k_proj,
                    &l.v_proj,
                    &l.o_proj,
                    &l.gate_proj,
                    &l.up_proj,
                    &l.down_proj,
                ]
                .iter()
                .map(|t| t.byte_len())
                .sum::<usize>()
            })
            .sum::<usize>();
    let Opened::Igpu(gpu) = surface(model, Surface::Igpu, None) else {
        unreachable!()
    };
    let be = gpu.device().backend();
    let in_file = be
        .file_weights()
        .expect("the GPU imports the model file's memfd");
    let range = in_file.cpu_range();
    // The mapping the GPU's addresses name is the loader's memfd, not a copy of it.
    let (maps_inode, path) = mapping_inode(range.start).expect("mapped");
    assert_eq!(maps_inode, inode, "{path}");
    assert!(
        be.same_va(),
        "the emulated GPU maps the buffers at the CPU's addresses"
    );
    weights_inside(gpu.cpu().model(), &range);
    // What was copied is only what the file cannot give in place: far less than the weights.
    let copied = be.weights().cpu_range().len();
    assert!(
        copied * 10 < weight_bytes,
        "{copied} bytes copied for {weight_bytes} bytes of weights"
    );
}

/// A model not read into a memfd (`--load mmap`) is copied once into the GPU's buffer, and
/// the CPU then reads that copy: still one copy in memory.
#[test]
fn a_mapped_model_is_copied_once_and_the_cpu_reads_the_copy() {
    use onebit_engine::format::{LoadMethod, LoadOptions};
    let Some(path) = fixture("tiny-a/tiny-a.i2_s.gguf") else {
        eprintln!("SKIP: tiny-a fixture absent");
        return;
    };
    let o = LoadOptions {
        method: LoadMethod::Mmap,
        ..LoadOptions::default()
    };
    let model = onebit_engine::format::load_with(&path, &o)
        .expect("tiny-a loads")
        .0;
    let Opened::Igpu(gpu) = surface(model, Surface::Igpu, None) else {
        unreachable!()
    };
    let be = gpu.device().backend();
    assert!(be.file_weights().is_none());
    weights_inside(gpu.cpu().model(), &be.weights().cpu_range());
}

/// A step of several decoding sessions is one chain that reads every big projection once:
/// q, o, gate, up and down run as one GEMM over all sessions' rows, and the LM head as one
/// pass over the embedding; only k and v (a GEMV straight into each session's own cache),
/// attention and argmax run per session.
#[test]
fn a_batched_decode_step_reads_the_big_projections_once() {
    use onebit_engine::backend::igpu::open::open_gpu;
    use onebit_engine::backend::igpu::{emulator, IgpuBackend, IgpuOptions};
    let Some(model) = tiny_a("i2_s") else {
        eprintln!("SKIP: tiny-a fixture absent");
        return;
    };
    let gpu = open_gpu(true)
        .expect("the emulator opens")
        .expect("emulated");
    let opts = IgpuOptions {
        max_ctx: 64,
        profile: true,
        ..IgpuOptions::default()
    };
    let mut be = IgpuBackend::new(&gpu.dev, &model, &opts).expect("the backend opens");
    emulator::bind(gpu.kfd.as_ref().expect("emulated"), &be);
    let mut seqs: Vec<_> = (0..3)
        .map(|_| be.new_sequence(64).expect("a sequence"))
        .collect();
    let mut refs: Vec<_> = seqs.iter_mut().collect();
    let prompts: Vec<&[u32]> = PROMPTS.to_vec();
    be.run(&mut refs, &prompts, &[true; 3]).expect("prefill");
    let next: Vec<u32> = refs.iter().map(|s| s.token()).collect();
    let ids: Vec<&[u32]> = next.iter().map(std::slice::from_ref).collect();
    be.run(&mut refs, &ids, &[true; 3])
        .expect("one decode step");
    let count = |name: &str| be.profile().iter().filter(|o| o.name == name).count();
    let layers = model.config.n_layers;
    assert_eq!(
        count("gemm_i2s"),
        5 * layers,
        "q, o, gate, up, down once per layer"
    );
    assert_eq!(count("gemv_i2s"), 2 * 3 * layers, "k and v per session");
    assert_eq!(count("attn_split"), 3 * layers);
    assert_eq!(count("argmax_final"), 3);
    assert_eq!(
        count("lm_head_f16_x8"),
        1,
        "the head read once for the 3 sessions"
    );
    assert_eq!(count("lm_head_f16"), 0);
}

/// After a device fault the session continues on the CPU on the very buffer the iGPU wrote
/// its keys and values into: nothing is copied, and the tokens stay the CPU's.
#[test]
fn a_session_moved_to_the_cpu_continues_on_its_shared_kv_buffer() {
    use onebit_engine::backend::fallback::FallbackSession;
    let (Some(model), Some(reference)) = (tiny_a("i2_s"), tiny_a("i2_s")) else {
        eprintln!("SKIP: tiny-a fixture absent");
        return;
    };
    let Opened::Cpu(mut cpu) = surface(reference, Surface::Cpu, None) else {
        unreachable!()
    };
    let want = tokens_on(&mut cpu, PROMPTS[0], 0.0);
    let plan = FaultPlan {
        kind: FaultKind::DeviceError,
        at: 4,
    };
    let Opened::Igpu(mut gpu) = surface(model, Surface::Igpu, Some(plan)) else {
        unreachable!()
    };
    let mut s = gpu.new_session(64).expect("a session");
    let FallbackSession::Device(d) = &s else {
        panic!("the session did not start on the device")
    };
    let device_buffer = d.seq.cpu_range();
    let mut got = Vec::new();
    generate(&mut gpu, &mut s, PROMPTS[0], &options(0.0), |t| {
        got.push(t);
        true
    })
    .expect("the generation survives the fault");
    assert_eq!(got, want);
    let FallbackSession::Cpu(c) = &s else {
        panic!("the fault did not move the session")
    };
    for l in 0..2 {
        let (k, v) = c.kv.layer_kv(l);
        assert!(
            device_buffer.contains(&(k.as_ptr() as usize)),
            "layer {l} keys copied"
        );
        assert!(
            device_buffer.contains(&(v.as_ptr() as usize)),
            "layer {l} values copied"
        );
    }
}
