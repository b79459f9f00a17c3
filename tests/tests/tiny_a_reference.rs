//! tiny-a in every format against the logits, greedy tokens and perplexity that HF
//! transformers produced (tolerances from the fixture README).

use onebit_engine::backend::cpu::CpuBackend;
use onebit_engine::backend::Backend;
use onebit_engine::forward::{forward, LogitsMode, Session};
use onebit_engine::generate::{generate, Options};
use onebit_engine::model::Model;
use onebit_engine::sampler::SamplingParams;
use onebit_tests::fixture;
use serde_json::Value;

const FORMATS: [&str; 5] = [
    "hf",
    "hf-bitlinear",
    "tiny-a.i2_s.gguf",
    "tiny-a.tq2_0.gguf",
    "tiny-a.tq1_0.gguf",
];

struct Reference {
    json: Value,
    logits: Vec<u8>,
}

impl Reference {
    fn load() -> Option<Self> {
        let json_path = fixture("tiny-a/reference.json")?;
        let st_path = fixture("tiny-a/reference.safetensors")?;
        let json = serde_json::from_slice(&std::fs::read(json_path).unwrap()).unwrap();
        Some(Self {
            json,
            logits: std::fs::read(st_path).unwrap(),
        })
    }

    fn case_logits(&self, case: &str) -> Vec<f32> {
        let st = safetensors::SafeTensors::deserialize(&self.logits).unwrap();
        let t = st.tensor(&format!("logits.{case}")).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn argmax(x: &[f32]) -> usize {
    onebit_engine::sampler::argmax(x) as usize
}

fn load(format: &str) -> Option<(Model, onebit_engine::tokenizer::Tokenizer)> {
    let path = fixture(&format!("tiny-a/{format}"))?;
    Some(onebit_engine::format::load(&path).unwrap_or_else(|e| panic!("{format}: {e}")))
}

#[test]
fn logits_match_transformers_in_every_format() {
    let Some(reference) = Reference::load() else {
        return;
    };
    for format in FORMATS {
        let Some((model, _)) = load(format) else {
            return;
        };
        let vocab = model.config.vocab_size;
        for (case, spec) in reference.json["cases"].as_object().unwrap() {
            let input = ids(&spec["ids"]);
            let want = reference.case_logits(case);
            let mut session = Session::new(&model, input.len());
            let got = forward(&model, &mut session, &input, LogitsMode::All).unwrap();
            assert_eq!(got.len(), want.len(), "{format}/{case}: logits shape");
            let (mut num, mut den, mut max_abs) = (0f64, 0f64, 0f64);
            for (g, w) in got.iter().zip(&want) {
                let d = f64::from(g - w);
                num += d * d;
                den += f64::from(*w) * f64::from(*w);
                max_abs = max_abs.max(d.abs());
            }
            let nmse = num / den;
            assert!(nmse <= 5e-3, "{format}/{case}: NMSE {nmse:.3e} > 5e-3");
            if case == "bos_only" {
                assert!(
                    max_abs <= 1e-3,
                    "{format}/bos_only: max |Δlogit| {max_abs:.3e} > 1e-3"
                );
            }
            let margins = floats(&spec["margin"]);
            let want_argmax = ids(&spec["argmax"]);
            for (pos, margin) in margins.iter().enumerate() {
                if *margin > 0.1 {
                    let a = argmax(&got[pos * vocab..(pos + 1) * vocab]);
                    assert_eq!(
                        a as u32, want_argmax[pos],
                        "{format}/{case}: argmax at position {pos} (margin {margin})"
                    );
                }
            }
            eprintln!("{format}/{case}: NMSE {nmse:.2e}, max |Δ| {max_abs:.2e}");
        }
    }
}

#[test]
fn greedy_tokens_match_transformers_in_every_format() {
    let Some(reference) = Reference::load() else {
        return;
    };
    for format in FORMATS {
        let Some((model, tok)) = load(format) else {
            return;
        };
        for (name, spec) in reference.json["greedy"].as_object().unwrap() {
            let prompt_ids = ids(&spec["prompt_ids"]);
            let prompt = spec["prompt"].as_str().unwrap();
            // The prompt text must tokenize to the reference ids (BOS included).
            let mut encoded = tok.encode(prompt, true).unwrap();
            if prompt.starts_with("<|begin_of_text|>") {
                encoded = tok.encode(prompt, false).unwrap();
            }
            assert_eq!(encoded, prompt_ids, "{format}/{name}: prompt tokens");
            let want = ids(&spec["new_ids"]);
            let margins = floats(&spec["margins"]);
            let run = |screened_head: bool| {
                let opts = Options {
                    max_new: want.len(),
                    sampling: SamplingParams::greedy(),
                    stop_ids: vec![],
                    logprobs: None,
                };
                let mut cpu = CpuBackend::new(&model, 0).with_screened_head(screened_head);
                let mut session = cpu.new_session(0).unwrap();
                generate(&mut cpu, &mut session, &prompt_ids, &opts, |_| true)
                    .unwrap()
                    .tokens
            };
            let got = run(false);
            assert_eq!(
                run(true),
                got,
                "{format}/{name}: the int8-screened head must give the F16 head's tokens"
            );
            let decisive = margins.iter().position(|m| *m < 0.1).unwrap_or(want.len());
            assert_eq!(
                got[..decisive],
                want[..decisive],
                "{format}/{name}: greedy tokens before step {decisive}"
            );
            eprintln!(
                "{format}/{name}: {decisive} decisive steps match ({} of {} tokens equal overall)",
                got.iter().zip(&want).filter(|(a, b)| a == b).count(),
                want.len()
            );
        }
    }
}

#[test]
fn perplexity_matches_transformers_in_every_format() {
    let Some(reference) = Reference::load() else {
        return;
    };
    let Some(text_path) = fixture("tiny-a/eval.txt") else {
        return;
    };
    let text = std::fs::read_to_string(text_path).unwrap();
    let spec = &reference.json["perplexity"];
    let want = spec["perplexity"].as_f64().unwrap();
    let n_tokens = spec["n_tokens"].as_u64().unwrap() as usize;
    for format in FORMATS {
        let Some((model, tok)) = load(format) else {
            return;
        };
        let ids = tok.encode(&text, true).unwrap();
        let p = onebit_engine::eval::perplexity(&model, &ids, n_tokens).unwrap();
        assert_eq!(
            p.n_scored,
            spec["scored"].as_u64().unwrap() as usize,
            "{format}: scored tokens"
        );
        let rel = (p.perplexity - want).abs() / want;
        assert!(
            rel <= 5e-3,
            "{format}: perplexity {} vs reference {want} ({:.3} %)",
            p.perplexity,
            rel * 100.0
        );
        eprintln!(
            "{format}: perplexity {:.4} vs {want:.4} ({:.4} %)",
            p.perplexity,
            rel * 100.0
        );
    }
}

#[test]
fn batched_decode_equals_one_session_at_a_time() {
    let Some((model, _)) = load("tiny-a.i2_s.gguf") else {
        return;
    };
    let prompts: [&[u32]; 3] = [&[0, 5, 9, 100], &[0, 7], &[0, 300, 301, 302, 303, 304]];
    let mut alone = Vec::new();
    for p in prompts {
        let mut s = Session::new(&model, 64);
        forward(&model, &mut s, p, LogitsMode::None).unwrap();
        alone.push(forward(&model, &mut s, &[42], LogitsMode::Last).unwrap());
    }
    let mut sessions: Vec<Session> = prompts
        .iter()
        .map(|p| {
            let mut s = Session::new(&model, 64);
            forward(&model, &mut s, p, LogitsMode::None).unwrap();
            s
        })
        .collect();
    let mut refs: Vec<&mut Session> = sessions.iter_mut().collect();
    let together = onebit_engine::forward::decode_batch(&model, &mut refs, &[42, 42, 42]).unwrap();
    for (a, b) in alone.iter().zip(&together) {
        let max = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-4, "batched decode differs by {max}");
    }
}

#[test]
fn prompt_over_context_and_bad_ids_are_errors() {
    let Some((model, _)) = load("tiny-a.i2_s.gguf") else {
        return;
    };
    let mut s = Session::new(&model, 4);
    let err = forward(&model, &mut s, &[0, 1, 2, 3, 4], LogitsMode::Last).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    let err = forward(&model, &mut s, &[0, 99_999], LogitsMode::Last).unwrap_err();
    assert!(err.to_string().contains("vocabulary"), "{err}");
    assert_eq!(s.len(), 0, "a failed call must not change the session");
}
