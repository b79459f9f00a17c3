//! Skipping down_proj's zero-input columns is lossless: with the input-channel-major copy
//! the forward pass gives the very same logits, bit for bit, as with the row-major weights,
//! in prefill (GEMM), single-token decode (GEMV) and batched decode.

use onebit_engine::forward::{decode_batch, forward, LogitsMode, Session};
use onebit_engine::model::{Model, SPARSE_COLUMNS};
use onebit_tests::fixture;
use std::sync::Mutex;

/// `SPARSE_COLUMNS` is one counter for the whole process: the checks that reset and read it
/// take turns, so that one test's reset never lands between another's run and its read.
static COUNTER_TURN: Mutex<()> = Mutex::new(());

/// Logits of a prefill of `prompt`, then of `steps` decode steps feeding back the argmax.
fn trace(model: &Model, prompt: &[u32], steps: usize) -> Vec<Vec<f32>> {
    let mut session = Session::new(model, prompt.len() + steps + 1);
    let mut out = vec![forward(model, &mut session, prompt, LogitsMode::All).unwrap()];
    for _ in 0..steps {
        let last = &out.last().unwrap()[out.last().unwrap().len() - model.config.vocab_size..];
        let next = onebit_engine::sampler::argmax(last);
        out.push(forward(model, &mut session, &[next], LogitsMode::Last).unwrap());
    }
    out
}

/// Three sessions at different positions decoded together.
fn batched(model: &Model) -> Vec<Vec<f32>> {
    let prompts: [&[u32]; 3] = [&[1, 5, 9, 13], &[2, 7], &[3, 4, 8, 16, 32, 64]];
    let mut sessions: Vec<Session> = prompts.iter().map(|_| Session::new(model, 16)).collect();
    for (s, p) in sessions.iter_mut().zip(prompts) {
        forward(model, s, p, LogitsMode::None).unwrap();
    }
    let mut refs: Vec<&mut Session> = sessions.iter_mut().collect();
    let mut out = Vec::new();
    for step in 0..3u32 {
        out.extend(decode_batch(model, &mut refs, &[10 + step, 20 + step, 30 + step]).unwrap());
    }
    out
}

fn assert_bit_equal(what: &str, dense: &[Vec<f32>], sparse: &[Vec<f32>]) {
    assert_eq!(dense.len(), sparse.len(), "{what}: step count");
    for (step, (d, s)) in dense.iter().zip(sparse).enumerate() {
        assert_eq!(d.len(), s.len(), "{what}: logits length at step {step}");
        if let Some(i) = d
            .iter()
            .zip(s)
            .position(|(a, b)| a.to_bits() != b.to_bits())
        {
            panic!(
                "{what}: step {step}, logit {i}: dense {} vs sparse {}",
                d[i], s[i]
            );
        }
    }
}

fn check(what: &str, mut model: Model, prompt: &[u32]) {
    let _turn = COUNTER_TURN.lock().unwrap_or_else(|p| p.into_inner());
    let dense = (trace(&model, prompt, 6), batched(&model));
    let done = model.use_sparse_down();
    assert!(
        model.has_sparse_down(),
        "{what}: sparse down_proj not in use"
    );
    assert!(done.column_bytes > 0);
    SPARSE_COLUMNS.reset();
    let sparse = (trace(&model, prompt, 6), batched(&model));
    let read = SPARSE_COLUMNS.density().expect("the sparse GEMV ran");
    assert!(
        read < 1.0,
        "{what}: every down_proj column had a nonzero input ({read})"
    );
    eprintln!(
        "{what}: down_proj read {:.1} % of its columns",
        read * 100.0
    );
    assert_bit_equal(&format!("{what} prefill+decode"), &dense.0, &sparse.0);
    assert_bit_equal(&format!("{what} batched decode"), &dense.1, &sparse.1);
    // A daemon with several slots keeps the rows too, and its batched steps take the dense
    // tiles for down_proj wherever they beat the column walk: the same bits.
    assert!(model.keep_down_rows() > 0, "{what}: no down_proj rows kept");
    assert!(
        model.layers.iter().all(|l| l.down_proj.rows_resident()),
        "{what}: a down_proj is still not resident"
    );
    assert_bit_equal(
        &format!("{what} batched decode with the rows kept"),
        &dense.1,
        &batched(&model),
    );
    model.use_dense_down();
    assert!(!model.has_sparse_down());
    assert_bit_equal(
        &format!("{what} dense again"),
        &dense.0,
        &trace(&model, prompt, 6),
    );
}

#[test]
fn embedded_model_sparse_down_is_bit_identical() {
    let (model, tok) = onebit_engine::embedded::load().unwrap();
    let prompt = tok.encode("In the beginning God created", true).unwrap();
    check("onebit-tiny", model, &prompt);
}

#[test]
fn tiny_a_sparse_down_is_bit_identical_in_every_format() {
    let mut ran = 0;
    for name in [
        "hf",
        "tiny-a.i2_s.gguf",
        "tiny-a.tq2_0.gguf",
        "tiny-a.tq1_0.gguf",
    ] {
        let Some(path) = fixture(&format!("tiny-a/{name}")) else {
            continue;
        };
        let (model, _) = onebit_engine::format::load(&path).unwrap();
        check(name, model, &[1, 17, 42, 99, 7, 3, 250, 11, 64]);
        ran += 1;
    }
    if ran == 0 {
        eprintln!("skipped: ../shared/fixtures/tiny-a is absent");
    }
}

#[test]
fn parked_or_dropped_row_major_weights_read_back_unchanged() {
    // I2_S is used from the file mapping (pages parked); TQ2_0 is repacked at load (the
    // owned copy is dropped and rebuilt from the columns on demand).
    for name in ["tiny-a.i2_s.gguf", "tiny-a.tq2_0.gguf"] {
        let Some(path) = fixture(&format!("tiny-a/{name}")) else {
            return;
        };
        let (mut model, _) = onebit_engine::format::load(&path).unwrap();
        let before: Vec<Vec<u8>> = model
            .layers
            .iter()
            .map(|l| l.down_proj.view().data.to_vec())
            .collect();
        let done = model.use_sparse_down();
        assert!(
            done.released_bytes > 0,
            "{name}: no row-major bytes left memory"
        );
        // Reading the row-major weights again (the iGPU layout, the dense fallback) brings
        // them back.
        for (l, b) in model.layers.iter().zip(&before) {
            assert_eq!(l.down_proj.view().data, b.as_slice(), "{name}");
        }
        model.use_dense_down();
        for (l, b) in model.layers.iter().zip(&before) {
            assert_eq!(
                l.down_proj.view().data,
                b.as_slice(),
                "{name} after use_dense_down"
            );
        }
    }
}
