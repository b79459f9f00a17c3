//! Sampling through the int8-screened head is exact: for every request the screen can
//! serve (a top-k, or greedy, with or without penalties), the tokens that could be drawn
//! get the very probabilities the full F16 head gives them, and a fixed seed generates the
//! same tokens, on every tiny-a format and onebit-tiny.

use onebit_engine::backend::cpu::CpuBackend;
use onebit_engine::backend::{Backend, Need, Output};
use onebit_engine::generate::{generate, Options};
use onebit_engine::model::Model;
use onebit_engine::sampler::{Sampler, SamplingParams};
use onebit_tests::fixture;

const MODELS: [&str; 4] = ["tiny-a.i2_s", "tiny-a.tq2_0", "tiny-a.tq1_0", "onebit-tiny"];

fn load(name: &str) -> Option<Model> {
    match name.strip_prefix("tiny-a.") {
        Some(format) => {
            let path = fixture(&format!("tiny-a/tiny-a.{format}.gguf"))?;
            Some(onebit_engine::format::load(&path).expect("tiny-a loads").0)
        }
        None => Some(
            onebit_engine::embedded::load()
                .expect("onebit-tiny loads")
                .0,
        ),
    }
}

/// llama.cpp's defaults, a narrow and a wide top-k, every penalty, and greedy with a
/// repeat penalty (greedy is top-1 with the penalized history scored exactly).
fn settings() -> Vec<(&'static str, SamplingParams)> {
    let seeded = |p: SamplingParams| SamplingParams {
        seed: Some(11),
        ..p
    };
    vec![
        ("llama.cpp defaults", seeded(SamplingParams::default())),
        (
            "top-k 5, hot",
            seeded(SamplingParams {
                top_k: 5,
                temperature: 1.7,
                ..SamplingParams::default()
            }),
        ),
        (
            "top-k 300, no top-p/min-p",
            seeded(SamplingParams {
                top_k: 300,
                top_p: 1.0,
                min_p: 0.0,
                temperature: 1.0,
                ..SamplingParams::default()
            }),
        ),
        (
            "penalties",
            seeded(SamplingParams {
                repeat_penalty: 1.4,
                repeat_last_n: 8,
                presence_penalty: 0.6,
                frequency_penalty: 0.4,
                ..SamplingParams::default()
            }),
        ),
        (
            "greedy with repeat penalty",
            seeded(SamplingParams {
                repeat_penalty: 1.8,
                ..SamplingParams::greedy()
            }),
        ),
    ]
}

const PROMPT: [u32; 6] = [1, 17, 300, 301, 17, 42];

/// Decoding step by step, the screened head's candidates and the full head's logits give
/// the sampler the same distribution (compared exactly) at every position.
#[test]
fn screened_candidates_give_the_full_heads_distribution() {
    for name in MODELS {
        let Some(model) = load(name) else {
            eprintln!("skipped {name}: the tiny-a fixture is absent");
            continue;
        };
        for (what, params) in settings() {
            let sampler = Sampler::new(params.clone());
            let (k, recent) = sampler
                .screened_top_k()
                .expect("every setting here can be screened");
            let mut screened = CpuBackend::new(&model, 64);
            let mut full = CpuBackend::new(&model, 64).with_screened_head(false);
            let mut a = screened.new_session(0).unwrap();
            let mut b = full.new_session(0).unwrap();
            let mut feed: Vec<u32> = PROMPT.to_vec();
            let mut draw = Sampler::new(params.clone());
            for step in 0..12 {
                screened
                    .step(&mut [&mut a], &[&feed], &[Need::TopK { k, recent }])
                    .unwrap();
                full.step(&mut [&mut b], &[&feed], &[Need::Logits]).unwrap();
                let history = screened.tokens(&a).to_vec();
                let Output::Candidates(cand) = screened.output(&a) else {
                    panic!("{name}, {what}: the CPU surface screens an F16 head");
                };
                let Output::Logits(logits) = full.output(&b) else {
                    panic!("{name}, {what}: full logits expected");
                };
                assert!(
                    cand.len() < logits.len(),
                    "{name}, {what}: the screen kept every token"
                );
                for (id, v) in cand {
                    assert_eq!(
                        v.to_bits(),
                        logits[*id as usize].to_bits(),
                        "{name}, {what}, step {step}: token {id} scored differently"
                    );
                }
                let want = sampler.distribution(logits, &history);
                let got = sampler.distribution_candidates(cand, &history);
                assert_eq!(
                    got, want,
                    "{name}, {what}, step {step}: distributions differ"
                );
                let next = draw.sample(logits, &history);
                feed = vec![next];
            }
        }
    }
}

/// Whole generations through the one generation loop: the same tokens with the screen on
/// and off, under fixed seeds.
#[test]
fn a_fixed_seed_generates_the_same_tokens_with_and_without_the_screen() {
    for name in MODELS {
        let Some(model) = load(name) else {
            eprintln!("skipped {name}: the tiny-a fixture is absent");
            continue;
        };
        for (what, sampling) in settings() {
            let opts = Options {
                max_new: 24,
                sampling,
                stop_ids: Vec::new(),
                logprobs: None,
            };
            let run = |screen: bool| {
                let mut be = CpuBackend::new(&model, 64).with_screened_head(screen);
                let mut s = be.new_session(0).unwrap();
                generate(&mut be, &mut s, &PROMPT, &opts, |_| true)
                    .unwrap()
                    .tokens
            };
            let (on, off) = (run(true), run(false));
            assert_eq!(on.len(), 24, "{name}, {what}");
            assert_eq!(on, off, "{name}, {what}: the screen changed the tokens");
        }
    }
}
