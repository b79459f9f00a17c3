//! onebitd driven by clients no one here wrote: the official `openai` Python package,
//! curl, a 32-client load test and systemd-style daemon tests (`tests/python/`). Skips
//! with a printed reason when Python or its packages are unavailable.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn openai_client_curl_load_and_daemon_tests() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/run.sh");
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIP: python3 is not installed");
        return;
    }
    let out = Command::new("bash")
        .arg(&script)
        .env("ONEBITD", env!("CARGO_BIN_EXE_onebitd"))
        .output()
        .expect("run tests/python/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "tests/python failed (output above)");
}
