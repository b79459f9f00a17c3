//! `onebit pull` against a local mock of the Hugging Face Hub (the real one cannot be
//! reached from CI): the file it chooses, the cache layout huggingface_hub shares, a
//! transfer cut off and resumed, a corrupted download refused, the token, and `-m
//! OWNER/NAME` in `onebit` and `onebitd` once pulled.

mod mock_hub;

use mock_hub::{File, MockHub, COMMIT};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/onebit-tiny")
}

/// A GGUF repo as bitnet.cpp publishes one: the I2_S file, a larger f16 one that onebit
/// should not pick, and a README kept in git.
fn gguf_repo() -> Vec<File> {
    let gguf = std::fs::read(models_dir().join("onebit-tiny.i2_s.gguf")).unwrap();
    vec![
        File::new("README.md", b"# onebit-tiny\n".to_vec(), false),
        File::new("onebit-tiny-f16.gguf", vec![7u8; 4096], true),
        File::new("onebit-tiny-i2_s.gguf", gguf, true),
    ]
}

/// A transformers-style model directory.
fn hf_repo() -> Vec<File> {
    let dir = models_dir().join("hf");
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    vec![
        File::new("config.json", read("config.json"), false),
        File::new(
            "generation_config.json",
            read("generation_config.json"),
            false,
        ),
        File::new("tokenizer.json", read("tokenizer.json"), true),
        File::new("model.safetensors", read("model.safetensors"), true),
        File::new(
            ".gitattributes",
            b"*.safetensors filter=lfs\n".to_vec(),
            false,
        ),
    ]
}

/// A fresh `HF_HOME` for one test.
fn hf_home(test: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hub-{test}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin);
    c.args(args)
        .env("ONEBIT_LOG", "info")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HOME")
        .env_remove("HF_ENDPOINT");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run the binary")
}

fn onebit(args: &[&str], env: &[(&str, &str)]) -> Output {
    run(env!("CARGO_BIN_EXE_onebit"), args, env)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn env<'a>(hub: &'a str, home: &'a Path) -> [(&'a str, &'a str); 2] {
    [("HF_ENDPOINT", hub), ("HF_HOME", home.to_str().unwrap())]
}

fn greedy(model: Option<&str>, env: &[(&str, &str)]) -> String {
    let mut args = vec![
        "run",
        "-p",
        "Once upon a time",
        "-n",
        "6",
        "--temp",
        "0",
        "--json",
    ];
    if let Some(m) = model {
        args.extend(["-m", m]);
    }
    let v: serde_json::Value = serde_json::from_str(&ok(&onebit(&args, env))).unwrap();
    v["text"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

#[test]
fn pull_picks_i2_s_lays_out_the_cache_resumes_a_cut_transfer_and_runs() {
    let hub = MockHub::start(vec![("test/tiny", gguf_repo())], &[]);
    let home = hf_home("gguf");
    let endpoint = hub.endpoint();
    let env = env(&endpoint, &home);
    // The first transfer of the model is cut half-way; the same pull resumes it.
    hub.faults()
        .cut
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let out = onebit(&["pull", "test/tiny"], &env);
    let stdout = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("I2_S") && stderr.contains("resuming"),
        "{stderr}"
    );
    let repo = home.join("hub/models--test--tiny");
    let file = &gguf_repo()[2];
    assert_eq!(
        PathBuf::from(stdout.trim()),
        repo.join("snapshots")
            .join(COMMIT)
            .join("onebit-tiny-i2_s.gguf")
    );
    let cdn = hub.seen(&format!("/cdn/{}", file.sha256()));
    assert_eq!(cdn.len(), 2, "{cdn:?}");
    assert_eq!(cdn[0].range, None);
    assert_eq!(
        cdn[1].range,
        Some(format!("bytes={}-", file.bytes.len() / 2))
    );
    assert!(
        hub.seen("/cdn/")
            .iter()
            .all(|s| !s.path.contains(&gguf_repo()[1].sha256())),
        "the f16 file is not fetched"
    );
    // huggingface_hub's layout: blobs named by sha256, relative links, refs/main.
    let blob = repo.join("blobs").join(file.sha256());
    assert_eq!(std::fs::read(&blob).unwrap(), file.bytes);
    let link = repo
        .join("snapshots")
        .join(COMMIT)
        .join("onebit-tiny-i2_s.gguf");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from("../../blobs").join(file.sha256())
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    assert!(!repo
        .join("blobs")
        .join(format!("{}.incomplete", file.sha256()))
        .exists());
    // -m OWNER/NAME runs what was pulled: the same text as the embedded copy of the model.
    assert_eq!(greedy(Some("test/tiny"), &env), greedy(None, &env));
    let info = ok(&onebit(
        &["info", "-m", "test/tiny:onebit-tiny-i2_s.gguf", "--json"],
        &env,
    ));
    assert!(info.contains("i2_s") || info.contains("I2_S"), "{info}");
    // Pulling again fetches nothing.
    let before = hub.seen("/cdn/").len();
    let out = onebit(&["pull", "test/tiny", "--json"], &env);
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["files"][0]["downloaded"], false, "{v}");
    assert_eq!(hub.seen("/cdn/").len(), before);
}

#[test]
fn an_interrupted_pull_resumes_from_its_partial_file_on_the_next_run() {
    let hub = MockHub::start(vec![("test/tiny", gguf_repo())], &[]);
    let home = hf_home("resume");
    let endpoint = hub.endpoint();
    let env = env(&endpoint, &home);
    let file = &gguf_repo()[2];
    // Every try of the first pull is cut: it gives up, keeping what it has.
    hub.faults()
        .cut
        .store(3, std::sync::atomic::Ordering::SeqCst);
    let err = failed(&onebit(&["pull", "test/tiny:onebit-tiny-i2_s.gguf"], &env));
    assert!(err.contains("run `onebit pull` again to resume"), "{err}");
    let part = home
        .join("hub/models--test--tiny/blobs")
        .join(format!("{}.incomplete", file.sha256()));
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(kept > 0 && (kept as usize) < file.bytes.len(), "{kept}");
    let err = failed(&onebit(&["info", "-m", "test/tiny"], &env));
    assert!(err.contains("onebit pull test/tiny"), "{err}");
    // The next pull asks only for the rest.
    let before = hub.seen("/cdn/").len();
    ok(&onebit(&["pull", "test/tiny:onebit-tiny-i2_s.gguf"], &env));
    let cdn = hub.seen("/cdn/");
    assert_eq!(cdn.len(), before + 1);
    assert_eq!(cdn[before].range, Some(format!("bytes={kept}-")));
    let blob = home
        .join("hub/models--test--tiny/blobs")
        .join(file.sha256());
    assert_eq!(std::fs::read(blob).unwrap(), file.bytes);
    assert!(!part.exists());
}

#[test]
fn a_corrupted_download_is_refused_and_removed() {
    let hub = MockHub::start(vec![("test/tiny", gguf_repo())], &[]);
    let home = hf_home("corrupt");
    let endpoint = hub.endpoint();
    let env = env(&endpoint, &home);
    hub.faults()
        .corrupt
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = failed(&onebit(&["pull", "test/tiny"], &env));
    assert!(
        err.contains("does not match the Hub's checksum") && err.contains("sha256"),
        "{err}"
    );
    let repo = home.join("hub/models--test--tiny");
    let leftovers: Vec<_> = std::fs::read_dir(repo.join("blobs")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!repo.join("snapshots").exists());
    let err = failed(&onebit(
        &["run", "-m", "test/tiny", "-p", "x", "-n", "1"],
        &env,
    ));
    assert!(err.contains("onebit pull test/tiny"), "{err}");
}

#[test]
fn a_model_directory_repo_is_pulled_whole_and_runs() {
    let hub = MockHub::start(vec![("test/tiny-hf", hf_repo())], &[]);
    let home = hf_home("hfdir");
    let endpoint = hub.endpoint();
    let env = env(&endpoint, &home);
    let path = ok(&onebit(&["pull", "test/tiny-hf"], &env));
    let snapshot = home
        .join("hub/models--test--tiny-hf/snapshots")
        .join(COMMIT);
    assert_eq!(PathBuf::from(path.trim()), snapshot);
    for f in hf_repo().iter().filter(|f| f.name != ".gitattributes") {
        assert_eq!(
            std::fs::read(snapshot.join(&f.name)).unwrap(),
            f.bytes,
            "{}",
            f.name
        );
        assert!(home
            .join("hub/models--test--tiny-hf/blobs")
            .join(f.blob())
            .exists());
    }
    assert!(!snapshot.join(".gitattributes").exists());
    assert_eq!(greedy(Some("test/tiny-hf"), &env), greedy(None, &env));
}

#[test]
fn the_token_and_hf_hub_cache_are_honoured() {
    let hub = MockHub::start(
        vec![("gated/tiny", gguf_repo())],
        &[("gated/tiny", "hf_sekrit")],
    );
    let home = hf_home("token");
    let cache = home.join("elsewhere");
    let endpoint = hub.endpoint();
    let base = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
    ];
    let err = failed(&onebit(&["pull", "gated/tiny"], &base));
    assert!(err.contains("401") && err.contains("HF_TOKEN"), "{err}");
    let with_token = [base[0], base[1], ("HF_TOKEN", "hf_sekrit")];
    ok(&onebit(&["pull", "gated/tiny"], &with_token));
    assert!(hub
        .seen("/api/")
        .iter()
        .any(|s| s.auth.as_deref() == Some("Bearer hf_sekrit")));
    assert!(cache.join("models--gated--tiny/refs/main").exists());
    // Found in HF_HUB_CACHE without the network.
    let offline = [("HF_ENDPOINT", "http://127.0.0.1:9"), base[1]];
    ok(&onebit(&["info", "-m", "gated/tiny"], &offline));
    let err = failed(&onebit(&["pull", "no/such-repo"], &base));
    assert!(err.contains("404"), "{err}");
}

/// A cache as `huggingface-cli download` leaves it (made here by hand, byte for byte the
/// same layout) is used as it is, and a pull finds nothing to fetch.
#[test]
fn a_cache_written_by_huggingface_cli_is_reused() {
    let home = hf_home("hfcli");
    let repo = home.join("hub/models--test--tiny");
    let file = &gguf_repo()[2];
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots").join(COMMIT)).unwrap();
    std::fs::write(repo.join("blobs").join(file.sha256()), &file.bytes).unwrap();
    std::os::unix::fs::symlink(
        format!("../../blobs/{}", file.sha256()),
        repo.join("snapshots").join(COMMIT).join(&file.name),
    )
    .unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    let offline = [
        ("HF_ENDPOINT", "http://127.0.0.1:9"),
        ("HF_HOME", home.to_str().unwrap()),
    ];
    assert_eq!(greedy(Some("test/tiny"), &offline), greedy(None, &offline));
    let hub = MockHub::start(vec![("test/tiny", gguf_repo())], &[]);
    let endpoint = hub.endpoint();
    let out = onebit(&["pull", "test/tiny", "--json"], &env(&endpoint, &home));
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["files"][0]["downloaded"], false, "{v}");
    assert!(hub.seen("/cdn/").is_empty());
}

/// onebitd serving `-m test/tiny-hf` once pulled: the model id it reports.
#[test]
fn onebitd_serves_a_pulled_reference_under_the_repo_name() {
    use std::io::{BufRead, BufReader, Read, Write};
    let hub = MockHub::start(vec![("test/tiny-hf", hf_repo())], &[]);
    let home = hf_home("daemon-serves");
    let endpoint = hub.endpoint();
    ok(&onebit(&["pull", "test/tiny-hf"], &env(&endpoint, &home)));
    let mut child = Command::new(env!("CARGO_BIN_EXE_onebitd"))
        .args([
            "-m",
            "test/tiny-hf",
            "--port",
            "0",
            "--allow-root",
            "--surface",
            "cpu",
        ])
        .env("HF_HOME", &home)
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("HF_HUB_CACHE")
        .env("ONEBIT_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The log says where it listens, then that it is ready.
    let mut address = None;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(a) = line.split("address=http://").nth(1) {
            address = Some(a.trim().to_string());
        }
        if line.contains(" ready ") {
            break;
        }
    }
    let address = address.expect("onebitd said where it listens");
    let mut s = std::net::TcpStream::connect(&address).unwrap();
    write!(
        s,
        "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#""id":"test/tiny-hf""#), "{resp}");
}

#[test]
fn onebitd_takes_a_pulled_reference_and_names_what_to_do_when_absent() {
    let home = hf_home("daemon");
    let out = run(
        env!("CARGO_BIN_EXE_onebitd"),
        &["-m", "nobody/nothing", "--port", "0"],
        &[("HF_HOME", home.to_str().unwrap())],
    );
    let err = failed(&out);
    assert!(err.contains("onebit pull nobody/nothing"), "{err}");
    let out = run(
        env!("CARGO_BIN_EXE_onebitd"),
        &["--port", "0"],
        &[
            ("HF_HOME", home.to_str().unwrap()),
            ("ONEBIT_ARG_MODEL", "nobody/nothing"),
        ],
    );
    assert!(failed(&out).contains("onebit pull nobody/nothing"));
}

/// huggingface_hub itself (the Python package behind `huggingface-cli`), or None with the
/// reason printed; under `CI=true` its absence fails.
fn huggingface_hub_python() -> Option<()> {
    let found = Command::new("python3")
        .args(["-c", "import huggingface_hub"])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(());
    }
    let msg = "the huggingface_hub Python package is not installed (pip install huggingface_hub; .ci/run installs it)";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIP: {msg}");
    None
}

/// `hf_hub_download` of the I2_S file with `env`, printing the path it returns.
fn hf_hub_download(env: &[(&str, &str)]) -> String {
    let script = "import huggingface_hub as h; print(h.hf_hub_download('test/tiny', 'onebit-tiny-i2_s.gguf'))";
    let mut c = Command::new("python3");
    c.args(["-c", script])
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_CACHE");
    for (k, v) in env {
        c.env(k, v);
    }
    ok(&c.output().expect("run python3"))
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

#[test]
fn huggingface_hub_and_onebit_find_each_others_downloads() {
    if huggingface_hub_python().is_none() {
        return;
    }
    let hub = MockHub::start(vec![("test/tiny", gguf_repo())], &[]);
    let endpoint = hub.endpoint();
    let file = &gguf_repo()[2];
    let cdn_gets = || {
        hub.seen("/cdn/")
            .iter()
            .filter(|s| s.method == "GET")
            .count()
    };
    // huggingface_hub downloads; onebit runs it with no network and a pull fetches nothing.
    let home = hf_home("from-python");
    let path = hf_hub_download(&env(&endpoint, &home));
    assert_eq!(std::fs::read(&path).unwrap(), file.bytes);
    let offline = [
        ("HF_ENDPOINT", "http://127.0.0.1:9"),
        ("HF_HOME", home.to_str().unwrap()),
    ];
    assert_eq!(greedy(Some("test/tiny"), &offline), greedy(None, &offline));
    let before = cdn_gets();
    let out = ok(&onebit(&["pull", "test/tiny"], &env(&endpoint, &home)));
    assert_eq!(out.trim(), path);
    assert_eq!(
        cdn_gets(),
        before,
        "onebit fetched again what huggingface_hub had"
    );
    // onebit downloads; huggingface_hub finds it offline.
    let home = hf_home("to-python");
    let pulled = ok(&onebit(&["pull", "test/tiny"], &env(&endpoint, &home)));
    let found = hf_hub_download(&[
        ("HF_HOME", home.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
        ("HF_ENDPOINT", "http://127.0.0.1:9"),
    ]);
    assert_eq!(found, pulled.trim());
}

/// While huggingface_hub's lock on the blob is held (as by a `huggingface-cli download` in
/// progress), a pull waits; when the holder has put the blob in place, the pull uses it.
#[test]
fn a_pull_waits_for_the_blob_lock_and_uses_what_the_holder_fetched() {
    use nix::fcntl::{Flock, FlockArg};
    let hub = MockHub::start(vec![("test/tiny", gguf_repo())], &[]);
    let home = hf_home("lock");
    let endpoint = hub.endpoint();
    let file = &gguf_repo()[2];
    let locks = home.join("hub/.locks/models--test--tiny");
    std::fs::create_dir_all(&locks).unwrap();
    let lock_file = std::fs::File::create(locks.join(format!("{}.lock", file.sha256()))).unwrap();
    let held = Flock::lock(lock_file, FlockArg::LockExclusive).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_onebit"))
        .args(["pull", "test/tiny", "--json"])
        .env("HF_ENDPOINT", &endpoint)
        .env("HF_HOME", &home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the pull says it waits for the lock (the line comes just before it blocks).
    let stderr = child.stderr.take().expect("piped");
    let (said, waiting) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let line = line.unwrap_or_default();
            if line.contains("waiting for it") {
                let _ = said.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if waiting.recv().is_err() {
        panic!(
            "the pull ended without waiting for the lock: {}",
            log.join().unwrap()
        );
    }
    // The holder finishes its download, then lets go.
    let repo = home.join("hub/models--test--tiny");
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::write(repo.join("blobs").join(file.sha256()), &file.bytes).unwrap();
    drop(held);
    let mut out = child.wait_with_output().unwrap();
    out.stderr = log.join().unwrap().into_bytes();
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["files"][0]["downloaded"], false, "{v}");
    assert!(hub.seen("/cdn/").iter().all(|s| s.method != "GET"));
}
