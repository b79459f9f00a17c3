//! The embedded default model (onebit-tiny, engine/models/onebit-tiny): it loads from the
//! binary, its greedy text is deterministic and is the recorded one (eval.json, written by
//! tools/train/record_onebit.py), and its held-out perplexity matches the number the training
//! code computed with the same numerics.

use onebit_engine::backend::cpu::CpuBackend;
use onebit_engine::backend::Backend;
use onebit_engine::embedded;
use onebit_engine::forward::{forward, LogitsMode, Session};
use onebit_engine::generate::{generate, Options};
use onebit_engine::model::Model;
use onebit_engine::sampler::{argmax, SamplingParams};
use onebit_engine::tokenizer::Tokenizer;
use serde_json::Value;
use std::path::PathBuf;

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../engine/models/onebit-tiny")
}

fn recorded() -> Value {
    let path = model_dir().join("eval.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

fn load() -> (Model, Tokenizer) {
    embedded::load().expect("the embedded model loads")
}

fn greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let opts = Options {
        max_new: n,
        sampling: SamplingParams::greedy(),
        stop_ids: vec![1, 2],
        logprobs: None,
    };
    let mut cpu = CpuBackend::new(model, 0);
    let mut session = cpu.new_session(0).unwrap();
    generate(&mut cpu, &mut session, prompt, &opts, |_| true)
        .unwrap()
        .tokens
}

#[test]
fn embedded_model_is_the_shipped_file_and_loads() {
    let on_disk = std::fs::read(model_dir().join("onebit-tiny.i2_s.gguf")).unwrap();
    assert!(
        embedded::gguf_bytes() == on_disk.as_slice(),
        "the binary embeds a different file than engine/models/onebit-tiny/onebit-tiny.i2_s.gguf"
    );
    let (model, tok) = load();
    let c = &model.config;
    let rec = recorded();
    let shape = &rec["config"];
    assert_eq!(c.hidden_size as u64, shape["hidden_size"].as_u64().unwrap());
    assert_eq!(
        c.intermediate_size as u64,
        shape["intermediate_size"].as_u64().unwrap()
    );
    assert_eq!(
        c.n_layers as u64,
        shape["num_hidden_layers"].as_u64().unwrap()
    );
    assert_eq!(
        c.n_heads as u64,
        shape["num_attention_heads"].as_u64().unwrap()
    );
    assert_eq!(
        c.n_kv_heads as u64,
        shape["num_key_value_heads"].as_u64().unwrap()
    );
    assert_eq!(c.vocab_size as u64, shape["vocab_size"].as_u64().unwrap());
    assert_eq!(
        c.max_context as u64,
        shape["max_position_embeddings"].as_u64().unwrap()
    );
    assert_eq!(model.provenance.ternary_type, "I2_S");
    assert_eq!(tok.bos_id(), Some(0));
    assert_eq!(tok.token_to_id("<|eot_id|>"), Some(2));
    let text = "To be, or not to be: that is the question.";
    let enc = tok.encode(text, true).unwrap();
    assert_eq!(enc[0], 0, "BOS first");
    assert_eq!(tok.decode(&enc[1..]).unwrap(), text);
}

#[test]
fn embedded_greedy_text_is_deterministic_and_recorded() {
    let (model, tok) = load();
    let vocab = model.config.vocab_size;
    let rec = recorded();
    for g in rec["greedy"].as_array().unwrap() {
        let prompt = g["prompt"].as_str().unwrap();
        let prompt_ids = tok.encode(prompt, true).unwrap();
        assert_eq!(
            prompt_ids,
            ids(&g["prompt_ids"]),
            "{prompt:?}: prompt tokens"
        );
        let want = ids(&g["tokens_onebit"]);
        let first = greedy(&model, &prompt_ids, want.len());
        let second = greedy(&model, &prompt_ids, want.len());
        assert_eq!(
            first, second,
            "{prompt:?}: greedy generation is not deterministic"
        );
        assert_eq!(
            first.len(),
            want.len(),
            "{prompt:?}: generation stopped early"
        );

        // The training code's exact-numerics forward (tools/train/evaluate.py), an independent
        // implementation, scored the recorded trajectory: its argmax and top-1 minus top-2
        // margin at every step. Where that margin is at least 0.1 onebit must pick the same
        // token; below it, int8 activation rounding (a step function) may flip a near-tie.
        let trained = ids(&g["tokens_training_code"]);
        let margins: Vec<f64> = g["margins_training_code"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        assert_eq!((trained.len(), margins.len()), (want.len(), want.len()));
        let decisive: Vec<usize> = (0..want.len()).filter(|&i| margins[i] >= 0.1).collect();
        assert!(
            decisive.len() * 4 >= want.len() * 3,
            "{prompt:?}: only {} of {} recorded steps are decisive",
            decisive.len(),
            want.len()
        );

        // Teacher-forced on the recorded tokens, onebit's argmax is the recorded token and the
        // training code's at every decisive step.
        let seq: Vec<u32> = prompt_ids.iter().chain(&want).copied().collect();
        let mut session = Session::new(&model, seq.len());
        let logits = forward(&model, &mut session, &seq[..seq.len() - 1], LogitsMode::All).unwrap();
        let p = prompt_ids.len();
        for &i in &decisive {
            let row = &logits[(p - 1 + i) * vocab..(p + i) * vocab];
            let got = argmax(row);
            assert_eq!(
                (got, got),
                (want[i], trained[i]),
                "{prompt:?}: step {i} (training-code margin {}): onebit's argmax vs recorded, training code",
                margins[i]
            );
        }

        // Free-running, the text is the recorded one up to the first near-tie.
        let upto = margins.iter().position(|m| *m < 0.1).unwrap_or(want.len());
        assert_eq!(
            first[..upto],
            want[..upto],
            "{prompt:?}: greedy tokens before step {upto} differ from the recorded ones"
        );
        let text = tok.decode(&first).unwrap();
        if first == want {
            assert_eq!(text, g["text_onebit"].as_str().unwrap());
        }
        eprintln!(
            "{prompt:?} -> {text:?}: {} of {} decisive steps agree with the training code; \
             the whole recorded text {}",
            decisive.len(),
            want.len(),
            if first == want {
                "matches"
            } else {
                "diverges after a near-tie"
            }
        );
    }
}

#[test]
fn embedded_heldout_perplexity_matches_the_training_code() {
    let (model, tok) = load();
    let rec = recorded();
    let spec = &rec["heldout"];
    let text = std::fs::read_to_string(model_dir().join("heldout.txt")).unwrap();
    let ctx = spec["ctx"].as_u64().unwrap() as usize;
    let ids = tok.encode(&text, true).unwrap();
    let p = onebit_engine::eval::perplexity(&model, &ids, ctx).unwrap();
    assert_eq!(p.n_scored as u64, spec["n_scored"].as_u64().unwrap());

    let trained = spec["training_code"]["perplexity"].as_f64().unwrap();
    let rel = (p.perplexity - trained).abs() / trained;
    assert!(
        rel <= 5e-3,
        "perplexity {} vs the training code's {trained} ({:.3} %)",
        p.perplexity,
        rel * 100.0
    );
    let unigram = spec["unigram_perplexity"].as_f64().unwrap();
    assert!(
        p.perplexity * 5.0 < unigram,
        "perplexity {} is not far below the unigram baseline {unigram}",
        p.perplexity
    );
    eprintln!(
        "held-out perplexity {:.4} (training code {trained:.4}, {:.4} %; unigram {unigram:.1})",
        p.perplexity,
        rel * 100.0
    );
}
