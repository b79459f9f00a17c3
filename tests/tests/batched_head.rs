//! The LM head runs once per forward call for all rows (one GEMM, one screened pass), and
//! that changes no number: on tiny-a, every session of a batched call gets the very logits
//! and tokens it gets alone, bit for bit, and under fixed seeds a batch of sampled requests
//! generates the same tokens as the same requests run one at a time.

use onebit_engine::backend::cpu::CpuBackend;
use onebit_engine::backend::{Backend, Need};
use onebit_engine::forward::{forward_needs, RowResult, Session};
use onebit_engine::generate::{generate, step, Options, Stream};
use onebit_engine::model::Model;
use onebit_engine::sampler::SamplingParams;
use onebit_kernels::screen::Int8Head;
use onebit_tests::fixture;

const FORMATS: [&str; 2] = ["tiny-a.i2_s.gguf", "tiny-a.tq2_0.gguf"];

fn load(format: &str) -> Option<Model> {
    let path = fixture(&format!("tiny-a/{format}"))?;
    Some(
        onebit_engine::format::load(&path)
            .unwrap_or_else(|e| panic!("{format}: {e}"))
            .0,
    )
}

/// Equal results, logits compared bit for bit.
fn assert_same(what: &str, alone: &RowResult, together: &RowResult) {
    match (alone, together) {
        (RowResult::Logits(a), RowResult::Logits(b)) => {
            assert_eq!(a.len(), b.len(), "{what}: logits length");
            if let Some(i) = a
                .iter()
                .zip(b)
                .position(|(x, y)| x.to_bits() != y.to_bits())
            {
                panic!("{what}: logit {i}: alone {} vs together {}", a[i], b[i]);
            }
        }
        _ => assert_eq!(alone, together, "{what}"),
    }
}

/// Runs `feeds` (one id list and need per session) through `sessions`, one call for all
/// or one call per session.
fn run(
    model: &Model,
    sessions: &mut [Session],
    feeds: &[(&[u32], Need)],
    screen: Option<&Int8Head>,
    together: bool,
) -> Vec<RowResult> {
    if together {
        let mut refs: Vec<&mut Session> = sessions.iter_mut().collect();
        let ids: Vec<&[u32]> = feeds.iter().map(|f| f.0).collect();
        let needs: Vec<Need> = feeds.iter().map(|f| f.1).collect();
        return forward_needs(model, &mut refs, &ids, &needs, screen).unwrap();
    }
    sessions
        .iter_mut()
        .zip(feeds)
        .map(|(s, (ids, need))| {
            forward_needs(model, &mut [s], &[ids], &[*need], screen)
                .unwrap()
                .remove(0)
        })
        .collect()
}

#[test]
fn every_session_of_a_batched_call_gets_its_one_session_results() {
    for format in FORMATS {
        let Some(model) = load(format) else {
            eprintln!("skipped: the tiny-a fixture is absent");
            return;
        };
        let screen = Int8Head::new(&model.embed_tokens.view()).expect("tiny-a has an F16 head");
        // Every kind of row in one call: all logits of a prompt (perplexity), the last
        // logits, greedy tokens with and without the screen, and a row that needs nothing.
        let prompts: [(&[u32], Need); 5] = [
            (&[0, 5, 9, 100, 7, 7, 3], Need::AllLogits),
            (&[0, 7], Need::Logits),
            (&[0, 300, 301, 302, 303, 304], Need::Greedy),
            (&[0, 11, 12], Need::Nothing),
            (&[0, 900, 2, 1000, 5], Need::Greedy),
        ];
        let decode: Vec<(&[u32], Need)> = [&[42u32][..], &[43], &[44], &[45], &[46]]
            .into_iter()
            .zip([
                Need::Logits,
                Need::AllLogits,
                Need::Greedy,
                Need::Logits,
                Need::Greedy,
            ])
            .collect();
        for screen in [Some(&screen), None] {
            let mut results = [Vec::new(), Vec::new()];
            for (together, out) in [false, true].into_iter().zip(&mut results) {
                let mut sessions: Vec<Session> =
                    prompts.iter().map(|_| Session::new(&model, 64)).collect();
                out.extend(run(&model, &mut sessions, &prompts, screen, together));
                out.extend(run(&model, &mut sessions, &decode, screen, together));
            }
            for (i, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
                let what = format!(
                    "{format}, screen {}, {} of session {}",
                    screen.is_some(),
                    if i < 5 { "prompt" } else { "decode step" },
                    i % 5
                );
                assert_same(&what, a, b);
            }
            assert!(matches!(results[1][0], RowResult::Logits(ref l) if l.len() == 7 * 1024));
            assert!(matches!(results[1][2], RowResult::Token(_)));
            assert_eq!(results[1][3], RowResult::Nothing);
        }
    }
}

/// Sampled, greedy and logprob requests with fixed seeds.
fn requests() -> Vec<(Vec<u32>, Options)> {
    let sampled = |seed, temperature| Options {
        max_new: 12,
        sampling: SamplingParams {
            temperature,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        stop_ids: Vec::new(),
        logprobs: None,
    };
    let mut with_logprobs = sampled(5, 0.8);
    with_logprobs.logprobs = Some(3);
    vec![
        (vec![0, 5, 9, 100], sampled(1, 0.8)),
        (vec![0, 7], sampled(2, 1.5)),
        (vec![0, 300, 301, 302, 303, 304], sampled(3, 0.0)),
        (vec![0, 50, 60], with_logprobs),
        (vec![0, 900, 2, 1000, 5, 6, 7, 8], sampled(4, 0.8)),
    ]
}

#[test]
fn a_batch_of_seeded_requests_generates_what_each_does_alone() {
    for format in FORMATS {
        let Some(model) = load(format) else {
            eprintln!("skipped: the tiny-a fixture is absent");
            return;
        };
        let mut backend = CpuBackend::new(&model, 64);
        let alone: Vec<Vec<u32>> = requests()
            .iter()
            .map(|(prompt, opts)| {
                let mut s = backend.new_session(0).unwrap();
                generate(&mut backend, &mut s, prompt, opts, |_| true)
                    .unwrap()
                    .tokens
            })
            .collect();

        let mut sessions: Vec<_> = requests()
            .iter()
            .map(|_| backend.new_session(0).unwrap())
            .collect();
        let mut streams: Vec<Stream> = requests()
            .into_iter()
            .map(|(prompt, opts)| Stream::new(prompt, 0, opts))
            .collect();
        let mut together = vec![Vec::new(); streams.len()];
        let mut finished = vec![false; streams.len()];
        while finished.contains(&false) {
            let mut rows: Vec<_> = sessions.iter_mut().zip(streams.iter_mut()).collect();
            let mut rows: Vec<_> = rows.iter_mut().map(|(s, t)| (&mut **s, &mut **t)).collect();
            for (i, adv) in step(&mut backend, &mut rows, usize::MAX)
                .unwrap()
                .into_iter()
                .enumerate()
            {
                together[i].extend(adv.tokens);
                finished[i] |= adv.finish.is_some();
            }
        }
        for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
            assert_eq!(a.len(), 12, "{format}: request {i} stopped early");
            assert_eq!(a, b, "{format}: request {i}, alone vs in a batch");
        }
    }
}
