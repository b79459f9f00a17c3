//! The `onebit` binary as a user runs it: output formats, determinism, and errors that
//! exit non-zero with a message.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(rel: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("ONEBIT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let p = dir.join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIP: fixture {} is absent", p.display());
        None
    }
}

/// tiny-a's I2_S file and its evaluation text, as path strings.
fn tiny_a_and_eval() -> Option<(String, String)> {
    let m = fixture("tiny-a/tiny-a.i2_s.gguf")?;
    let f = fixture("tiny-a/eval.txt")?;
    Some((m.to_str()?.to_owned(), f.to_str()?.to_owned()))
}

fn onebit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onebit"))
        .args(args)
        .env("ONEBIT_LOG", "warn")
        .output()
        .expect("run onebit")
}

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "onebit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// `onebit run` greedy for 8 tokens after the fixture's greedy prompt, as JSON.
fn greedy_json_args(model: &str) -> [&str; 10] {
    [
        "run",
        "-m",
        model,
        "-p",
        "The ternary queue",
        "-n",
        "8",
        "--temp",
        "0",
        "--json",
    ]
}

#[test]
fn run_json_greedy_matches_reference_and_is_deterministic() {
    let Some(m) = fixture("tiny-a/tiny-a.i2_s.gguf") else {
        return;
    };
    let m = m.to_str().unwrap();
    let args = greedy_json_args(m);
    // Everything but the wall-clock seconds repeats.
    let run = || {
        let mut v = stdout_json(&onebit(&args));
        let o = v.as_object_mut().unwrap();
        assert!(o.remove("prefill_seconds").is_some() && o.remove("decode_seconds").is_some());
        v
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    let want: Vec<u64> = vec![373, 199, 706, 941, 373, 941, 373, 941];
    let got: Vec<u64> = a["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(got, want, "greedy tokens of the fixture's greedy_prompt");
    assert_eq!(a["prompt_tokens"][0], 0, "BOS first");
    assert!(a["text"].is_string());
}

#[test]
fn run_with_seed_reproduces_sampling() {
    let Some(m) = fixture("tiny-a/hf") else {
        return;
    };
    let m = m.to_str().unwrap();
    let args = [
        "run", "-m", m, "-p", "Hello", "-n", "12", "--temp", "1.0", "--seed", "7", "--json",
    ];
    let a = stdout_json(&onebit(&args));
    let b = stdout_json(&onebit(&args));
    assert_eq!(a["tokens"], b["tokens"]);
    let c = stdout_json(&onebit(&[
        "run", "-m", m, "-p", "Hello", "-n", "12", "--temp", "1.0", "--seed", "8", "--json",
    ]));
    assert_ne!(
        a["tokens"], c["tokens"],
        "another seed should sample differently"
    );
}

#[test]
fn dense_down_gives_the_same_tokens() {
    // Sampling reads every logit, so any difference in down_proj would show.
    let args = [
        "run",
        "-p",
        "In the beginning",
        "-n",
        "24",
        "--temp",
        "0.8",
        "--seed",
        "3",
        "--json",
    ];
    let sparse = stdout_json(&onebit(&args));
    let mut dense_args = args.to_vec();
    dense_args.push("--dense-down");
    let dense = stdout_json(&onebit(&dense_args));
    assert_eq!(sparse["tokens"], dense["tokens"]);
    assert_eq!(sparse["text"], dense["text"]);
}

#[test]
fn chat_mode_uses_the_bitnet_template() {
    let Some(m) = fixture("tiny-a/tiny-a.tq2_0.gguf") else {
        return;
    };
    let out = stdout_json(&onebit(&[
        "run",
        "-m",
        m.to_str().unwrap(),
        "-p",
        "Hello!",
        "--chat",
        "-n",
        "4",
        "--temp",
        "0",
        "--json",
    ]));
    // reference.json greedy_chat: "User: Hello!<|eot_id|>Assistant: " with BOS
    let want = [
        0, 55, 529, 28, 763, 71, 415, 81, 3, 2, 35, 435, 277, 86, 379, 28, 223,
    ];
    let got: Vec<u64> = out["prompt_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn perplexity_json_and_tokenize() {
    let Some((m, f)) = tiny_a_and_eval() else {
        return;
    };
    let (m_s, f_s) = (m.as_str(), f.as_str());
    let p = stdout_json(&onebit(&[
        "perplexity",
        "-m",
        m_s,
        "-f",
        f_s,
        "--ctx",
        "64",
        "--json",
    ]));
    assert_eq!(p["n_scored"], 63);
    assert!(p["perplexity"].as_f64().unwrap() > 1.0);
    // Without --ctx the text is scored up to the model's context.
    let whole = stdout_json(&onebit(&["perplexity", "-m", m_s, "-f", f_s, "--json"]));
    let ctx = stdout_json(&onebit(&["info", "-m", m_s, "--json"]))["config"]["max_context"]
        .as_u64()
        .unwrap_or(0);
    let capped = stdout_json(&onebit(&[
        "perplexity",
        "-m",
        m_s,
        "-f",
        f_s,
        "--ctx",
        &ctx.to_string(),
        "--json",
    ]));
    assert!(whole["n_scored"].as_u64().unwrap() > 63);
    assert_eq!(whole, capped);
    let t = stdout_json(&onebit(&[
        "tokenize",
        "-m",
        m_s,
        "--json",
        "The ternary queue",
    ]));
    assert_eq!(
        t["ids"],
        serde_json::json!([863, 71, 260, 265, 80, 553, 223, 443, 71, 87, 71])
    );
    let t = stdout_json(&onebit(&[
        "tokenize",
        "-m",
        m_s,
        "--bos",
        "--json",
        "The ternary queue",
    ]));
    assert_eq!(t["ids"][0], 0);
}

#[test]
fn logits_writes_safetensors() {
    let Some(m) = fixture("tiny-a/hf") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("onebit-cli-logits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("l.safetensors");
    let o = onebit(&[
        "logits",
        "-m",
        m.to_str().unwrap(),
        "--ids",
        "0,5,7",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("logits").unwrap();
    assert_eq!(t.shape(), &[3, 1024]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn info_json_describes_the_model() {
    let Some(m) = fixture("tiny-a/tiny-a.tq1_0.gguf") else {
        return;
    };
    let i = stdout_json(&onebit(&["info", "-m", m.to_str().unwrap(), "--json"]));
    assert_eq!(i["config"]["hidden_size"], 256);
    assert_eq!(i["config"]["n_layers"], 2);
    assert_eq!(i["embedding"]["type"], "F16");
}

/// Every `--kv` format runs and reports its size; q4_0 (`q4` for short) stays near f32, and a
/// format that does not exist is refused with the ones that do.
#[test]
fn kv_formats_run_and_a_bad_one_names_the_accepted_values() {
    let Some((m, f)) = tiny_a_and_eval() else {
        return;
    };
    let (m, f) = (m.as_str(), f.as_str());
    // tiny-a: 2 layers, 2 KV heads of 64 (2 blocks of 32 each).
    let i = stdout_json(&onebit(&["info", "-m", m, "--json"]));
    let by = &i["kv_cache_bytes_per_token_by_format"];
    assert_eq!(by["f32"], 2 * 2 * 128 * 4);
    assert_eq!(by["q8_0"], 2 * 2 * 4 * 34);
    assert_eq!(by["q4_0"], 2 * 2 * 4 * 18);
    let ppl = |kv: &str| {
        let args = [
            "perplexity",
            "-m",
            m,
            "-f",
            f,
            "--ctx",
            "128",
            "--json",
            "--surface",
            "cpu",
            "--kv",
            kv,
        ];
        stdout_json(&onebit(&args))["perplexity"].as_f64().unwrap()
    };
    let exact = ppl("f32");
    let (q4, q4_0) = (ppl("q4"), ppl("q4_0"));
    assert_eq!(q4, q4_0, "q4 is q4_0");
    assert!(
        q4 != exact,
        "a 4-bit cache cannot score exactly as f32: {q4}"
    );
    assert!(
        (q4 - exact).abs() / exact < 0.02,
        "q4_0 {q4} vs f32 {exact}"
    );
    let o = onebit(&["perplexity", "-m", m, "-f", f, "--kv", "q5_1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("f32, f16, q8_0 or q4_0"), "{err}");
}

#[test]
fn bad_input_exits_nonzero_with_a_message() {
    let Some(m) = fixture("tiny-a/tiny-a.i2_s.gguf") else {
        return;
    };
    let m = m.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["run", "-m", m, "-p", "", "-n", "4"], "empty"),
        (
            &[
                "run",
                "-m",
                m,
                "-p",
                "word word word word word word word word",
                "-c",
                "4",
            ],
            "context",
        ),
        (
            &["logits", "-m", m, "--ids", "0,99999", "--out", "/dev/null"],
            "vocabulary",
        ),
        (
            &["run", "-m", "/nonexistent/model.gguf", "-p", "x"],
            "/nonexistent/model.gguf",
        ),
        (
            &["perplexity", "-m", m, "-f", "/nonexistent.txt"],
            "/nonexistent.txt",
        ),
    ];
    for (args, needle) in cases {
        let o = onebit(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(
            err.contains(needle),
            "{args:?}: stderr should mention '{needle}': {err}"
        );
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}

#[test]
fn convert_between_formats_keeps_the_model() {
    let Some(m) = fixture("tiny-a/hf") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("onebit-cli-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |model: &str| {
        stdout_json(&onebit(&[
            "run",
            "-m",
            model,
            "-p",
            "The ternary queue",
            "-n",
            "6",
            "--temp",
            "0",
            "--json",
        ]))["tokens"]
            .clone()
    };
    let want = run(m.to_str().unwrap());
    for fmt in ["i2s", "tq2_0", "tq1_0", "hf"] {
        let out = dir.join(format!("m-{fmt}"));
        let o = onebit(&[
            "convert",
            "-m",
            m.to_str().unwrap(),
            "--format",
            fmt,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "{fmt}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            run(out.to_str().unwrap()),
            want,
            "{fmt}: greedy tokens after conversion"
        );
    }
    let o = onebit(&[
        "convert",
        "-m",
        m.to_str().unwrap(),
        "--format",
        "q4",
        "--out",
        dir.join("x").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn run_on_the_emulated_igpu_gives_the_cpu_tokens() {
    let Some(m) = fixture("tiny-a/tiny-a.i2_s.gguf") else {
        return;
    };
    let m = m.to_str().unwrap();
    let base = greedy_json_args(m);
    let cpu = stdout_json(&onebit(&base));
    let mut args = base.to_vec();
    args.extend(["--surface", "igpu", "--emulator"]);
    let gpu = stdout_json(&onebit(&args));
    assert_eq!(gpu["surface"], "igpu");
    assert_eq!(gpu["tokens"], cpu["tokens"]);
    // Without the hardware (and without --emulator) it says so and fails.
    if !std::path::Path::new("/dev/kfd").exists() {
        let o = onebit(&args[..args.len() - 1]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("/dev/kfd"));
    }
}

#[test]
fn perplexity_and_bench_run_on_the_emulated_igpu() {
    let Some((m, f)) = tiny_a_and_eval() else {
        return;
    };
    let (m, f) = (m.as_str(), f.as_str());
    let ppl = |surface: &[&str]| {
        let mut args = vec!["perplexity", "-m", m, "-f", f, "--ctx", "48", "--json"];
        args.extend(surface);
        stdout_json(&onebit(&args))["perplexity"].as_f64().unwrap()
    };
    // The iGPU's cache is f32: the CPU's must be too for the same numbers.
    let (cpu, gpu) = (
        ppl(&["--surface", "cpu", "--kv", "f32"]),
        ppl(&["--surface", "igpu", "--emulator"]),
    );
    // Same model, float sums in another order: the same perplexity to well under 0.1 %.
    assert!((cpu - gpu).abs() / cpu < 1e-3, "cpu {cpu} vs igpu {gpu}");
    let bench = stdout_json(&onebit(&[
        "bench",
        "-m",
        m,
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "1",
        "-o",
        "json",
        "--surface",
        "igpu",
        "--emulator",
    ]));
    assert_eq!(bench["backend"], "igpu (emulator)");
    assert_eq!(bench["results"].as_array().unwrap().len(), 2);
}

/// `onebit jitter` writes every dispatch's latency, for experiments: each wait mode is its
/// own series in one run, and the JSON names the conditions the samples were taken under.
#[test]
fn jitter_writes_raw_samples_per_wait_mode() {
    let dir = std::env::temp_dir().join(format!("onebit-jitter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, csv) = (dir.join("j.json"), dir.join("j.csv"));
    let out = onebit(&[
        "jitter",
        "--surface",
        "igpu",
        "--emulator",
        "--runs",
        "20",
        "--wait",
        "poll,interrupt",
        "--json",
        json.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let series = j["series"].as_array().unwrap();
    assert_eq!(
        series.len(),
        4,
        "empty and gemv, for each of two wait modes"
    );
    for s in series {
        assert_eq!(s["samples_ns"].as_array().unwrap().len(), 20);
        assert!(s["stats"]["p50"].as_u64().unwrap() > 0);
    }
    assert!(series[0]["name"].as_str().unwrap().ends_with("poll"));
    assert_eq!(j["conditions"]["wait"], "poll,interrupt");
    assert_eq!(j["conditions"]["sched"], "SCHED_OTHER");
    let c = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(c.lines().count(), 1 + 4 * 20);
    let _ = std::fs::remove_dir_all(&dir);
    // A condition that cannot hold is an error that says why, not a silent run.
    let bad = onebit(&["jitter", "--runs", "5", "--pin-cpu", "100000"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--pin-cpu"));
}

/// `onebit bench -d` runs every test after that many tokens in the KV cache and names the
/// rows as llama-bench does; the decode rows' roofline counts the bytes they read.
#[test]
fn bench_runs_each_test_at_each_depth() {
    let Some(m) = fixture("tiny-a/tiny-a.i2_s.gguf") else {
        return;
    };
    let m = m.to_str().unwrap();
    let out = onebit(&[
        "bench",
        "-m",
        m,
        "-p",
        "8",
        "-n",
        "4",
        "-d",
        "0,16",
        "-r",
        "1",
        "-t",
        "1",
        "-o",
        "json",
        "--greedy-head",
    ]);
    let r = stdout_json(&out);
    let tests: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["test"].as_str().unwrap())
        .collect();
    assert_eq!(
        tests,
        [
            "pp8",
            "tg4",
            "pp8 @ d16",
            "tg4 @ d16",
            "tg4 greedy, int8-screened head",
            "tg4 @ d16 greedy, int8-screened head"
        ]
    );
    let rows = r["results"].as_array().unwrap();
    assert_eq!(rows[3]["n_depth"], 16);
    assert_eq!(rows[3]["n_gen"], 4);
    assert_eq!(rows[5]["sampling"], "greedy-screened");
    // At depth 16 a token reads the KV of 16 more positions than at depth 0 (+ n/2 each),
    // and the screened head reads fewer bytes than the F16 one.
    let bytes = |i: usize| rows[i]["bytes_per_token"].as_f64().unwrap();
    assert!(bytes(3) > bytes(1), "{} vs {}", bytes(3), bytes(1));
    assert!(bytes(4) < bytes(1), "{} vs {}", bytes(4), bytes(1));
    assert!(r["bandwidth_probes"][0][1]["best_gbs"].as_f64().unwrap() > 0.0);
    // The markdown rows carry the depth too.
    let md = onebit(&[
        "bench",
        "-m",
        m,
        "-p",
        "8",
        "-n",
        "4",
        "-d",
        "16",
        "-r",
        "1",
        "-t",
        "1",
        "--no-bandwidth",
    ]);
    let text = String::from_utf8_lossy(&md.stdout);
    assert!(
        text.contains("| pp8 @ d16 |") && text.contains("| tg4 @ d16 |"),
        "{text}"
    );
    // A depth that is not a number, and nothing to run, fail with a message.
    let bad = onebit(&["bench", "-m", m, "-d", "deep"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("deep"));
    let none = onebit(&["bench", "-m", m, "-p", "0", "-n", "0"]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("-p and -n are both 0"));
}

#[test]
fn convert_to_sherry_reports_the_projection_and_the_perplexity_it_measured() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/onebit-tiny");
    let (m, text) = (root.join("onebit-tiny.i2_s.gguf"), root.join("heldout.txt"));
    let (m, text) = (m.to_str().unwrap(), text.to_str().unwrap());
    let out = std::env::temp_dir().join(format!("onebit-cli-sherry-{}.gguf", std::process::id()));
    let out_s = out.to_str().unwrap();
    let o = onebit(&[
        "convert", "-m", m, "--format", "sherry", "--calib", text, "--eval", text, "--out", out_s,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("% of") && err.contains("blocks changed"),
        "{err}"
    );
    // "perplexity on FILE (N tokens): BEFORE -> AFTER (+D %)": AFTER is what the written
    // file scores.
    let after = err
        .lines()
        .find(|l| l.starts_with("perplexity on"))
        .and_then(|l| l.split("-> ").nth(1))
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("no perplexity line: {err}"))
        .to_owned();
    let p = stdout_json(&onebit(&["perplexity", "-m", out_s, "-f", text, "--json"]));
    assert_eq!(format!("{:.4}", p["perplexity"].as_f64().unwrap()), after);
    let info = String::from_utf8_lossy(&onebit(&["info", "-m", out_s]).stdout).into_owned();
    assert!(info.contains("SHERRY"), "{info}");
    // --calib and --eval belong to --format sherry.
    let o = onebit(&[
        "convert", "-m", m, "--format", "i2s", "--eval", text, "--out", out_s,
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--format sherry"));
    std::fs::remove_file(out).ok();
}
