//! onebitd's listening options, end to end through the binary: the warning when it listens
//! beyond loopback without an API key, `--socket-mode` / `--socket-group` on a Unix socket
//! it creates, and `no_new_privs` set by the daemon itself. Each test waits for the
//! daemon's own log lines, never for time.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running onebitd whose stderr is read line by line; killed when dropped.
struct Daemon {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStderr>>,
    seen: Vec<String>,
}

impl Daemon {
    fn start(args: &[&str]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_onebitd"));
        cmd.args(args)
            .env("ONEBIT_LOG", "info")
            .env_remove("ONEBIT_API_KEY")
            .env_remove("LISTEN_FDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if nix::unistd::geteuid().is_root() {
            // Started as root onebitd drops to the user "onebit", which a build machine lacks.
            cmd.arg("--allow-root");
        }
        let mut child = cmd.spawn().expect("start onebitd");
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads log lines until one contains `what`; panics with the log if the daemon exits
    /// first.
    fn wait_for(&mut self, what: &str) -> String {
        for line in self.lines.by_ref() {
            let line = line.unwrap_or_default();
            self.seen.push(line.clone());
            if line.contains(what) {
                return line;
            }
        }
        panic!(
            "onebitd ended before logging {what:?}:\n{}",
            self.seen.join("\n")
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WARNING: &str = "listening beyond loopback without an API key";

#[test]
fn listening_beyond_loopback_without_a_key_warns() {
    let mut d = Daemon::start(&["--host", "0.0.0.0", "--port", "0"]);
    let warned = d.wait_for(WARNING);
    assert!(warned.contains("--api-key-file"), "{warned}");
    assert!(warned.contains("WARN"), "{warned}");

    // With a key, or on loopback, the server starts listening without the warning.
    for args in [
        &["--host", "0.0.0.0", "--port", "0", "--api-key", "k"][..],
        &["--host", "127.0.0.1", "--port", "0"][..],
    ] {
        let mut d = Daemon::start(args);
        d.wait_for("listening");
        assert!(
            !d.seen.iter().any(|l| l.contains(WARNING)),
            "{args:?}: {:#?}",
            d.seen
        );
    }
}

#[test]
fn socket_mode_and_group_shape_the_unix_socket() {
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir().join(format!("onebitd-sock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Started as root, onebitd wants a socket directory nobody else may write.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sock = dir.join("api.sock");
    let gid = nix::unistd::getegid();
    let group = nix::unistd::Group::from_gid(gid)
        .unwrap()
        .expect("this process's group has a name")
        .name;
    let mut d = Daemon::start(&[
        "--host",
        sock.to_str().unwrap(),
        "--socket-mode",
        "600",
        "--socket-group",
        &group,
    ]);
    d.wait_for("listening");
    // Set in code before anything is opened, whatever the unit says.
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())).unwrap();
    assert!(
        status.lines().any(|l| l == "NoNewPrivs:\t1"),
        "onebitd runs without no_new_privs:\n{status}"
    );
    let m = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!(m.mode() & 0o777, 0o600);
    assert_eq!(m.gid(), gid.as_raw());
    drop(d);

    // A mode that is not octal permission bits is refused before anything is bound.
    let out = Command::new(env!("CARGO_BIN_EXE_onebitd"))
        .args(["--host", sock.to_str().unwrap(), "--socket-mode", "999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a file mode"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
