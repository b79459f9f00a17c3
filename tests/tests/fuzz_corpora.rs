//! Replays the committed fuzz corpora (`engine/fuzz/corpus/TARGET/*`) and the inputs that
//! once crashed a target (`engine/fuzz/regressions/TARGET/*`) through the same entry
//! points the fuzz targets call, on stable Rust and without the fuzzer: every input the
//! campaign kept must still parse or fail cleanly, and every fixed crash stays fixed.
//! One test only: the panic hook it installs is process-wide.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/fuzz")
}

/// The files of `dir/TARGET` for each target, sorted; a folder named after no target is
/// an error (a renamed target whose corpus would silently stop being replayed).
fn inputs(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            onebit_engine::fuzz::target(&name).is_some(),
            "{} names no fuzz target; targets: {:?}",
            e.path().display(),
            onebit_engine::fuzz::TARGETS
                .iter()
                .map(|t| t.0)
                .collect::<Vec<_>>()
        );
        for f in std::fs::read_dir(e.path()).unwrap() {
            out.push((name.clone(), f.unwrap().path()));
        }
    }
    out.sort();
    out
}

/// Panics seen by the hook [`replay`] installs, caught ones included.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Runs every input; collects the ones that panic, so one run names all of them. A panic
/// that the code under test catches counts too, as it does under libFuzzer (whose hook
/// aborts on any panic): a parser that panics and is rescued is still a finding.
fn replay(list: &[(String, PathBuf)]) -> Vec<String> {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        default(info);
    }));
    let mut failed = Vec::new();
    for (target, path) in list {
        let f = onebit_engine::fuzz::target(target).unwrap();
        let data = std::fs::read(path).unwrap();
        let before = PANICS.load(Ordering::Relaxed);
        let unwound = catch_unwind(AssertUnwindSafe(|| f(&data))).is_err();
        if unwound || PANICS.load(Ordering::Relaxed) != before {
            failed.push(format!("{target}: {}", path.display()));
        }
    }
    let _ = std::panic::take_hook();
    failed
}

#[test]
fn every_target_has_a_corpus_and_every_input_replays() {
    let corpus = inputs(&fuzz_dir().join("corpus"));
    for (name, _) in onebit_engine::fuzz::TARGETS {
        let n = corpus.iter().filter(|(t, _)| t == name).count();
        assert!(n > 0, "fuzz target {name} has no committed corpus");
    }
    let mut all = corpus;
    all.extend(inputs(&fuzz_dir().join("regressions")));
    let failed = replay(&all);
    assert!(failed.is_empty(), "inputs that panic: {failed:#?}");
}
