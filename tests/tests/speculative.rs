//! Speculative decoding through the one generation loop: greedy speculation gives exactly
//! the tokens of plain greedy decoding (every tiny-a format and onebit-tiny, every KV cache
//! format, prompt lookup chains and Medusa trees, on the CPU and on the iGPU emulator), and
//! sampled speculation keeps the model's distribution (a chi-square test over seeded draws).

use std::collections::HashMap;
use std::time::Duration;

use onebit_engine::backend::cpu::CpuBackend;
use onebit_engine::backend::{open, Backend, Opened, SelectOptions, Surface, SurfaceChoice};
use onebit_engine::forward::{forward, KvFormat, LogitsMode, Session};
use onebit_engine::generate::{generate, generate_speculating, step, Options, Stream};
use onebit_engine::model::Model;
use onebit_engine::sampler::{Sampler, SamplingParams};
use onebit_engine::speculate::medusa::MedusaHeads;
use onebit_engine::speculate::{Mode, SpecOptions, SpecStats};
use onebit_tests::fixture;

/// Prompts with repeats (which prompt lookup drafts from) and without.
const PROMPTS: [&[u32]; 3] = [
    &[
        0, 863, 71, 260, 265, 80, 553, 223, 443, 71, 87, 71, 863, 71, 260, 265,
    ],
    &[0, 71, 87, 71, 553, 71, 87, 71, 553, 71],
    &[0, 443, 260, 80, 80, 80, 265, 863],
];

/// Every tiny-a format, and the embedded onebit-tiny.
const MODELS: [&str; 6] = [
    "tiny-a.i2_s.gguf",
    "tiny-a.tq2_0.gguf",
    "tiny-a.tq1_0.gguf",
    "hf",
    "hf-bitlinear",
    "onebit-tiny",
];

fn load(name: &str) -> Option<Model> {
    if name == "onebit-tiny" {
        return Some(onebit_engine::embedded::load().expect("embedded model").0);
    }
    let path = fixture(&format!("tiny-a/{name}"))?;
    Some(onebit_engine::format::load(&path).expect("tiny-a loads").0)
}

/// Heads with seeded random weights: their guesses are poor, so the trees they grow are
/// accepted in part, rejected in part, and branch everywhere: what verification must
/// survive without changing a token.
fn random_heads(hidden: usize, count: usize, seed: u64) -> MedusaHeads {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let scale = 4.0 / (hidden as f32).sqrt();
    MedusaHeads {
        hidden,
        weights: (0..count)
            .map(|_| (0..hidden * hidden).map(|_| next() * scale).collect())
            .collect(),
        biases: (0..count)
            .map(|_| (0..hidden).map(|_| next()).collect())
            .collect(),
    }
}

fn greedy(max_new: usize) -> Options {
    Options {
        max_new,
        sampling: SamplingParams::greedy(),
        stop_ids: vec![],
        logprobs: None,
    }
}

fn run<B: Backend>(
    b: &mut B,
    prompt: &[u32],
    opts: &Options,
    spec: Option<SpecOptions>,
) -> (Vec<u32>, Option<SpecStats>) {
    let mut s = b.new_session(0).unwrap();
    let g = match spec {
        Some(spec) => generate_speculating(b, &mut s, prompt, opts, spec, |_| true),
        None => generate(b, &mut s, prompt, opts, |_| true),
    }
    .unwrap();
    (g.tokens, g.spec)
}

fn spec(mode: Mode) -> SpecOptions {
    SpecOptions {
        always: true,
        ..SpecOptions::new(mode)
    }
}

#[test]
fn greedy_speculation_gives_plain_decodings_tokens() {
    for name in MODELS {
        let Some(mut model) = load(name) else {
            continue;
        };
        if model.medusa.is_none() {
            model.medusa = Some(random_heads(model.config.hidden_size, 4, 7));
        }
        for kv in [KvFormat::F32, KvFormat::F16, KvFormat::Q8_0] {
            let mut cpu = CpuBackend::new(&model, 256).with_kv_format(kv);
            let mut drafted = 0;
            for p in PROMPTS {
                let (plain, _) = run(&mut cpu, p, &greedy(40), None);
                for mode in [Mode::Lookup, Mode::Medusa, Mode::Auto] {
                    let (got, stats) = run(&mut cpu, p, &greedy(40), Some(spec(mode)));
                    assert_eq!(got, plain, "{name}, kv {kv}, {mode}, prompt {p:?}");
                    drafted += stats.unwrap().drafted;
                }
            }
            assert!(drafted > 0, "{name}: nothing was drafted");
        }
    }
}

#[test]
fn a_full_context_and_stop_tokens_end_speculation_where_plain_decoding_ends() {
    let Some(model) = load("onebit-tiny") else {
        return;
    };
    let p = PROMPTS[1];
    // A context that fills mid-draft.
    let mut cpu = CpuBackend::new(&model, p.len() + 9);
    let (plain, _) = run(&mut cpu, p, &greedy(40), None);
    let (got, _) = run(&mut cpu, p, &greedy(40), Some(spec(Mode::Lookup)));
    assert_eq!(got, plain);
    // A stop token the draft runs past.
    let mut cpu = CpuBackend::new(&model, 0);
    let (free, _) = run(&mut cpu, p, &greedy(30), None);
    let stop = free[free.len() / 2];
    let opts = Options {
        stop_ids: vec![stop],
        ..greedy(30)
    };
    let (plain, _) = run(&mut cpu, p, &opts, None);
    let (got, _) = run(&mut cpu, p, &opts, Some(spec(Mode::Lookup)));
    assert_eq!(got, plain);
    assert!(!got.contains(&stop));
}

#[test]
fn speculating_streams_batch_with_plain_ones() {
    let Some(model) = load("onebit-tiny") else {
        return;
    };
    let mut cpu = CpuBackend::new(&model, 256);
    let want: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| run(&mut cpu, p, &greedy(24), None).0)
        .collect();
    let mut sessions: Vec<_> = PROMPTS
        .iter()
        .map(|_| cpu.new_session(0).unwrap())
        .collect();
    let modes = [Mode::Lookup, Mode::Off, Mode::Medusa];
    let mut streams: Vec<Stream> = PROMPTS
        .iter()
        .zip(modes)
        .map(|(p, m)| Stream::new(p.to_vec(), 0, greedy(24)).with_speculation(spec(m)))
        .collect();
    let mut got = vec![Vec::new(); PROMPTS.len()];
    let mut done = [false; 3];
    while done.iter().any(|d| !d) {
        let live: Vec<usize> = (0..3).filter(|&i| !done[i]).collect();
        let mut rows: Vec<_> = sessions
            .iter_mut()
            .zip(streams.iter_mut())
            .enumerate()
            .filter(|(i, _)| !done[*i])
            .map(|(_, r)| r)
            .collect();
        for (i, adv) in live.into_iter().zip(step(&mut cpu, &mut rows, 4).unwrap()) {
            got[i].extend(adv.tokens);
            done[i] |= adv.finish.is_some();
        }
    }
    assert_eq!(got, want);
}

#[test]
fn the_igpu_emulator_verifies_drafts_to_the_cpus_greedy_tokens() {
    for name in ["tiny-a.i2_s.gguf", "onebit-tiny"] {
        let (Some(a), Some(b)) = (load(name), load(name)) else {
            continue;
        };
        let o = SelectOptions {
            choice: SurfaceChoice::Fixed(Surface::Igpu),
            emulator: true,
            ctx: 256,
            sessions: 2,
            device_timeout: Duration::from_secs(2),
            kv_format: KvFormat::F32,
            ..SelectOptions::default()
        };
        let Opened::Igpu(mut gpu) = open(a, &o).expect("the iGPU emulator opens") else {
            panic!("{name}: not the iGPU surface");
        };
        let mut cpu = CpuBackend::new(&b, 256).with_kv_format(KvFormat::F32);
        for p in PROMPTS {
            let (want, _) = run(&mut cpu, p, &greedy(24), None);
            // The iGPU verifies chains (no tree mask there, no hidden states for Medusa):
            // medusa falls back to prompt lookup, and the tokens stay the CPU's.
            for mode in [Mode::Lookup, Mode::Medusa, Mode::Auto] {
                let (got, _) = run(&mut gpu, p, &greedy(24), Some(spec(mode)));
                assert_eq!(got, want, "{name}, {mode}, prompt {p:?}");
            }
        }
    }
}

/// The exact probability of every `n_new`-token continuation of `prompt` under `sampler`,
/// from full forward passes.
fn exact_distribution(
    model: &Model,
    prompt: &[u32],
    n_new: usize,
    sampler: &Sampler,
) -> HashMap<Vec<u32>, f64> {
    let mut frontier = vec![(Vec::<u32>::new(), 1.0f64)];
    for _ in 0..n_new {
        let mut next = Vec::new();
        for (seq, p) in frontier {
            let mut s = Session::new(model, 64);
            let ids: Vec<u32> = prompt.iter().chain(&seq).copied().collect();
            let logits = forward(model, &mut s, &ids, LogitsMode::Last).unwrap();
            for (id, q) in sampler.distribution(&logits, &ids) {
                let mut longer = seq.clone();
                longer.push(id);
                next.push((longer, p * q));
            }
        }
        frontier = next;
    }
    frontier.into_iter().collect()
}

/// The chi-square quantile at upper tail 1e-4 (Wilson–Hilferty).
fn chi2_limit(df: usize) -> f64 {
    let (d, z) = (df as f64, 3.719);
    d * (1.0 - 2.0 / (9.0 * d) + z * (2.0 / (9.0 * d)).sqrt()).powi(3)
}

#[test]
fn sampled_speculation_keeps_the_models_distribution() {
    let Some(mut model) = load("onebit-tiny") else {
        return;
    };
    if model.medusa.is_none() {
        model.medusa = Some(random_heads(model.config.hidden_size, 3, 11));
    }
    // A small support (top-k 3), so the exact distribution of the first three new tokens
    // has 27 cells that many draws fill.
    let params = |seed| SamplingParams {
        temperature: 1.0,
        top_k: 3,
        top_p: 1.0,
        min_p: 0.0,
        seed: Some(seed),
        ..SamplingParams::default()
    };
    // Lookup drafts from a prompt that holds its own greedy continuation once (a draft
    // whenever the first draw is the greedy token, a rejection otherwise); the Medusa heads
    // from a line of text.
    let mut cpu = CpuBackend::new(&model, 64).with_kv_format(KvFormat::F32);
    let (cont, _) = run(&mut cpu, PROMPTS[1], &greedy(6), None);
    let repeated: Vec<u32> = PROMPTS[1]
        .iter()
        .chain(&cont)
        .chain(PROMPTS[1])
        .copied()
        .collect();
    let (_, tok) = onebit_engine::embedded::load().expect("embedded model");
    let text = tok.encode("And God said unto Moses,", true).unwrap();
    let n_new = 3;

    for (mode, prompt) in [
        (Mode::Lookup, repeated.as_slice()),
        (Mode::Medusa, text.as_slice()),
    ] {
        let exact = exact_distribution(&model, prompt, n_new, &Sampler::new(params(0)));
        let mut cpu = CpuBackend::new(&model, 64).with_kv_format(KvFormat::F32);
        let draws = 1200u64;
        let mut counts: HashMap<Vec<u32>, u64> = HashMap::new();
        let mut stats = SpecStats::default();
        for seed in 0..draws {
            let opts = Options {
                max_new: n_new,
                sampling: params(1000 + seed),
                stop_ids: vec![],
                logprobs: None,
            };
            let (got, st) = run(&mut cpu, prompt, &opts, Some(spec(mode)));
            assert_eq!(got.len(), n_new);
            stats.add(&st.unwrap());
            *counts.entry(got).or_default() += 1;
        }
        assert!(
            stats.drafted > 0 && stats.accepted > 0 && stats.accepted < stats.drafted,
            "{mode}: drafts must be both accepted and rejected ({stats:?})"
        );
        // Cells expected fewer than 5 times are pooled into one.
        let (mut chi2, mut df) = (0.0, 0usize);
        let (mut pooled_e, mut pooled_o) = (0.0, 0.0);
        for (seq, p) in &exact {
            let e = p * draws as f64;
            let o = *counts.get(seq).unwrap_or(&0) as f64;
            if e < 5.0 {
                pooled_e += e;
                pooled_o += o;
            } else {
                chi2 += (o - e).powi(2) / e;
                df += 1;
            }
        }
        if pooled_e > 0.0 {
            chi2 += (pooled_o - pooled_e).powi(2) / pooled_e.max(1e-9);
            df += 1;
        }
        let unexpected: u64 = counts
            .iter()
            .filter(|(s, _)| !exact.contains_key(*s))
            .map(|(_, c)| c)
            .sum();
        assert_eq!(unexpected, 0, "{mode}: drew continuations the model cannot");
        let limit = chi2_limit(df - 1);
        eprintln!(
            "{mode}: chi2 {chi2:.1} over {df} cells (limit {limit:.1}), acceptance {:.2}, {:.2} tokens per pass",
            stats.acceptance(),
            stats.tokens_per_pass()
        );
        assert!(
            chi2 < limit,
            "{mode}: chi2 {chi2:.1} ≥ {limit:.1} over {df} cells"
        );
    }
}
