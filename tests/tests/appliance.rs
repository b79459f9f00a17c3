//! The appliance (tools/appliance):
//! - its static onebitd in an empty root: a mount and PID namespace whose root holds only
//!   the binary, a model, `/dev/null` and `/proc`, run as an unprivileged uid. It must start,
//!   report ready over `NOTIFY_SOCKET` and serve a completion, with no shared libraries, no
//!   /etc and no /sys to lean on;
//! - its image recipe: what `image.sh` stages for mkosi is complete and consistent, and
//!   mkosi reads the configuration.
//!
//! The binaries come from `ONEBIT_STATIC_DIR`, else `target/appliance/no-model/`, which
//! `tools/appliance/build.sh` (and so `.ci/run`) builds. The empty-root test needs root (for
//! the namespaces and the device node) and util-linux's `unshare`. Each test skips with the
//! reason where something is missing, except under `CI=true`.

mod server_support;

use serde_json::json;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::os::unix::prelude::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The unprivileged uid and gid the daemon runs as inside the empty root (nobody/nogroup).
const NOBODY: u32 = 65534;

/// Prints why the test cannot run and returns, or fails under CI, where it must run.
fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the empty-root test must run under CI=true: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// The directory with the static `onebitd` and `onebit`.
fn static_dir() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("ONEBIT_STATIC_DIR") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/appliance/no-model"),
    };
    if dir.join("onebitd").is_file() && dir.join("onebit").is_file() {
        Ok(dir)
    } else {
        Err(format!(
            "no static onebitd and onebit in {} (build them with tools/appliance/build.sh, or set ONEBIT_STATIC_DIR)",
            dir.display()
        ))
    }
}

/// Whether an ELF executable asks for a program interpreter (PT_INTERP): every dynamically
/// linked one does, a static (or static-pie) one does not.
fn has_interpreter(elf: &[u8]) -> bool {
    assert!(
        elf.len() >= 64 && &elf[..4] == b"\x7fELF",
        "not an ELF file"
    );
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == PT_INTERP
    })
}

/// The empty root: the binary, the model, /dev/null and an empty /proc for the namespace's
/// own proc mount. Readable by the unprivileged uid.
fn make_root(dir: &Path, onebitd: &Path, model: &Path) {
    for sub in ["dev", "proc"] {
        std::fs::create_dir(dir.join(sub)).unwrap();
    }
    std::fs::copy(onebitd, dir.join("onebitd")).unwrap();
    std::fs::copy(model, dir.join("model.gguf")).unwrap();
    std::fs::set_permissions(
        dir.join("model.gguf"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(dir.join("onebitd"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let null = std::ffi::CString::new(dir.join("dev/null").as_os_str().as_bytes()).unwrap();
    // SAFETY: `null` is a NUL-terminated path that outlives the call; mknod reads only it.
    let rc = unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(
        rc,
        0,
        "mknod /dev/null: {}",
        std::io::Error::last_os_error()
    );
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `unshare` with the daemon under it, and the root it serves from: a failed assertion
/// must not leave either behind (`--kill-child` takes the daemon down with `unshare`).
struct Sandbox {
    unshare: Option<Child>,
    root: PathBuf,
}

impl Sandbox {
    fn child(&self) -> &Child {
        self.unshare.as_ref().expect("unshare is running")
    }

    /// Waits for `unshare` to exit and returns its status and the daemon's log.
    fn wait(mut self) -> (std::process::ExitStatus, String) {
        let out = self.unshare.take().unwrap().wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(mut child) = self.unshare.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The onebitd process inside the namespace: the child of `unshare --fork`.
fn daemon_pid(unshare: &Child) -> u32 {
    let pid = unshare.id();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    children
        .split_whitespace()
        .next()
        .and_then(|c| c.parse().ok())
        .expect("unshare has forked the daemon")
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn static_onebitd_serves_from_an_empty_root() {
    let onebitd = match static_dir() {
        Ok(dir) => dir.join("onebitd"),
        Err(reason) => return skip(&reason),
    };
    let bytes = std::fs::read(&onebitd).unwrap();
    assert!(
        !has_interpreter(&bytes),
        "{} is dynamically linked (it names a program interpreter)",
        onebitd.display()
    );
    let Some(model) = onebit_tests::fixture("tiny-a/tiny-a.i2_s.gguf") else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("needs root: it makes mount and PID namespaces and a device node");
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        return skip("util-linux's unshare is not installed");
    }

    let root = std::env::temp_dir().join(format!("onebit-empty-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir(&root).unwrap();
    make_root(&root, &onebitd, &model);

    // Readiness comes as READY=1 on an abstract socket, which a chroot does not hide.
    let notify_name = format!("onebit-empty-root-{}", std::process::id());
    let notify =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(notify_name.as_bytes()).unwrap())
            .unwrap();
    // Only a bound on a broken start: readiness itself is the event waited for.
    notify
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let unshare = Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "--kill-child", "--mount-proc"])
        .arg(format!("--root={}", root.display()))
        .args([
            "--setgid",
            &NOBODY.to_string(),
            "--setuid",
            &NOBODY.to_string(),
        ])
        .args(["/onebitd", "-m", "/model.gguf", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string(), "-np", "1", "--temp", "0"])
        .env_clear()
        .env("NOTIFY_SOCKET", format!("@{notify_name}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start unshare");
    let sandbox = Sandbox {
        unshare: Some(unshare),
        root,
    };

    let mut buf = [0u8; 512];
    let ready = loop {
        match notify.recv(&mut buf) {
            Ok(n)
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1") =>
            {
                break Ok(())
            }
            Ok(_) => continue,
            Err(e) => break Err(e),
        }
    };
    if let Err(e) = ready {
        // SAFETY: kill(2) with the pid of this test's child; no memory is involved.
        unsafe { libc::kill(sandbox.child().id() as i32, libc::SIGKILL) };
        let (_, log) = sandbox.wait();
        panic!("no READY=1 from onebitd in the empty root ({e}); its log:\n{log}");
    }

    let pid = daemon_pid(sandbox.child());
    assert_eq!(uid_of(pid), NOBODY, "onebitd runs as the unprivileged uid");
    let health = server_support::get(port, "/health");
    assert_eq!(health.status, 200, "{}", health.text());
    let resp = server_support::post(
        port,
        "/v1/completions",
        &json!({"prompt": "In the beginning", "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body = resp.json();
    assert_eq!(
        body["model"], "model",
        "the model id is its file name: {body}"
    );
    let generated = body["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(generated >= 1, "no tokens generated: {body}");
    assert!(body["choices"][0]["text"].is_string(), "{body}");

    // SAFETY: kill(2) with a pid this test's child forked; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let (status, log) = sandbox.wait();
    assert!(
        status.success(),
        "onebitd in the empty root exited with {status}:\n{log}"
    );
}

/// Without /proc the weights cannot be sealed (the memfd is reopened read-only through
/// /proc/self/fd): the daemon must exit saying so, not with a bare "No such file".
#[test]
fn static_onebitd_without_proc_says_to_mount_it() {
    let onebitd = match static_dir() {
        Ok(dir) => dir.join("onebitd"),
        Err(reason) => return skip(&reason),
    };
    let Some(model) = onebit_tests::fixture("tiny-a/tiny-a.i2_s.gguf") else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("needs root: it makes mount and PID namespaces and a device node");
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        return skip("util-linux's unshare is not installed");
    }
    let root = std::env::temp_dir().join(format!("onebit-no-proc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir(&root).unwrap();
    make_root(&root, &onebitd, &model);
    let out = Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "--kill-child"])
        .arg(format!("--root={}", root.display()))
        .args([
            "--setgid",
            &NOBODY.to_string(),
            "--setuid",
            &NOBODY.to_string(),
        ])
        .args([
            "/onebitd",
            "-m",
            "/model.gguf",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ])
        .env_clear()
        .output()
        .expect("run unshare");
    let _ = std::fs::remove_dir_all(&root);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "onebitd served without /proc:\n{log}"
    );
    assert!(
        log.contains("/proc is not mounted"),
        "the error does not say that /proc is missing:\n{log}"
    );
}

#[test]
fn image_recipe_stages_every_file_it_names() {
    let bins = match static_dir() {
        Ok(dir) => dir,
        Err(reason) => return skip(&reason),
    };
    let Some(model) = onebit_tests::fixture("tiny-a/tiny-a.i2_s.gguf") else {
        return;
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::temp_dir().join(format!("onebit-image-{}", std::process::id()));
    let staged = Command::new("bash")
        .arg(repo.join("tools/appliance/image.sh"))
        .args([bins.as_os_str(), model.as_os_str(), out.as_os_str()])
        .arg("--stage-only")
        .output()
        .expect("run image.sh");
    assert!(
        staged.status.success(),
        "image.sh --stage-only failed:\n{}",
        String::from_utf8_lossy(&staged.stderr)
    );
    let tree = out.join("extra");
    let file = |rel: &str| tree.join(rel.trim_start_matches('/'));

    // The unit's ExecStart names a binary in the image, and a static one.
    let unit = std::fs::read_to_string(file("usr/lib/systemd/system/onebitd.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .and_then(|cmd| cmd.split_whitespace().next())
        .expect("onebitd.service has an ExecStart");
    let binary = std::fs::read(file(exec)).unwrap_or_else(|e| panic!("{exec} is not staged: {e}"));
    assert!(
        !has_interpreter(&binary),
        "{exec} in the image is not static"
    );
    assert!(file("usr/bin/onebit").is_file());

    // The settings file names the staged model, and only root may read it (it may hold the key).
    let env_file = file("etc/onebit/onebitd.env");
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "onebitd.env must be 0600");
    let settings = std::fs::read_to_string(&env_file).unwrap();
    let model_path = settings
        .lines()
        .find_map(|l| l.strip_prefix("ONEBIT_ARG_MODEL="))
        .expect("onebitd.env sets ONEBIT_ARG_MODEL");
    assert_eq!(
        std::fs::read(file(model_path)).unwrap(),
        std::fs::read(&model).unwrap(),
        "{model_path} is the model given"
    );

    // The user the unit runs as is made by the staged sysusers.d file; the rules are staged.
    let user = unit.lines().find_map(|l| l.strip_prefix("User=")).unwrap();
    let sysusers = std::fs::read_to_string(file("usr/lib/sysusers.d/onebit.conf")).unwrap();
    assert!(
        sysusers
            .lines()
            .any(|l| l.starts_with(&format!("u {user} "))),
        "sysusers.d does not create {user}"
    );
    assert!(file("usr/lib/udev/rules.d/70-onebit.rules").is_file());

    // Enabled units: every link points at a unit file inside the image.
    for link in [
        "etc/systemd/system/sockets.target.wants/onebitd.socket",
        "etc/systemd/system/multi-user.target.wants/onebitd.service",
    ] {
        let target = std::fs::read_link(file(link)).unwrap_or_else(|e| panic!("{link}: {e}"));
        assert!(
            file(target.to_str().unwrap()).is_file(),
            "{link} points at {} outside the image",
            target.display()
        );
    }

    // No ROCm and no XRT: the image's packages are the base system only.
    let config = std::fs::read_to_string(repo.join("tools/appliance/mkosi.default")).unwrap();
    let packages = config
        .lines()
        .find_map(|l| l.strip_prefix("Packages="))
        .expect("mkosi.default lists packages");
    for p in packages.split(',') {
        assert!(
            !["rocm", "hip", "xrt", "amdxdna"]
                .iter()
                .any(|bad| p.contains(bad)),
            "the image must not install {p}"
        );
    }

    // mkosi itself reads the configuration with the staged tree.
    match Command::new("mkosi")
        .arg("--default")
        .arg(repo.join("tools/appliance/mkosi.default"))
        .arg("--extra-tree")
        .arg(&tree)
        .arg("summary")
        .current_dir(&out)
        .output()
    {
        Ok(summary) => {
            // mkosi 14 prints the summary on stdout or stderr depending on its version's logging.
            let text = String::from_utf8_lossy(&summary.stdout).into_owned()
                + &String::from_utf8_lossy(&summary.stderr);
            assert!(
                summary.status.success(),
                "mkosi rejects the configuration:\n{text}"
            );
            assert!(text.contains("Distribution: debian"), "{text}");
        }
        Err(e) => skip(&format!(
            "mkosi is not installed ({e}): apt-get install mkosi"
        )),
    }
    let _ = std::fs::remove_dir_all(&out);
}
