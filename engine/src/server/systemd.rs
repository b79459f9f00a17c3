//! The service manager's side channels, written against sd_notify(3) directly (a unix
//! datagram to `$NOTIFY_SOCKET`): `READY=1`, `STATUS=`, `STOPPING=1` and `WATCHDOG=1`.
//! Without `NOTIFY_SOCKET` (not under systemd) every call is a no-op.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Mutex;
use std::time::Duration;

/// The socket connected at the first notification. Connecting checks the socket file's
/// permissions; sending on the connected socket does not, so notifications still reach a
/// root-only socket after onebitd dropped its privileges.
static CONNECTED: Mutex<Option<(String, UnixDatagram)>> = Mutex::new(None);

/// Sends `state` (newline-separated `KEY=value` lines). Returns false when not under a
/// service manager.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let target = target.to_string_lossy().into_owned();
    let mut c = CONNECTED.lock().unwrap_or_else(|p| p.into_inner());
    if c.as_ref().is_none_or(|(t, _)| *t != target) {
        *c = Some((target.clone(), connect(&target)?));
    }
    if let Some((_, sock)) = c.as_ref() {
        sock.send(state.as_bytes())?;
    }
    Ok(true)
}

/// Connects to `$NOTIFY_SOCKET`: a path, or `@name` in the abstract namespace.
fn connect(path: &str) -> io::Result<UnixDatagram> {
    let addr = if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())?
    } else if path.starts_with('/') {
        SocketAddr::from_pathname(path)?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET={path:?} is neither a path nor @abstract"),
        ));
    };
    let sock = UnixDatagram::unbound()?;
    sock.connect_addr(&addr)?;
    Ok(sock)
}

/// Logs instead of failing: a lost notification must not stop the daemon.
pub fn notify_or_log(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state, "cannot notify the service manager");
    }
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`, for this process only).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Decides each watchdog tick whether to ping: always while the model loads or the
/// engine is idle, and while busy only if the engine made a step since the last tick, so a
/// wedged engine (a stuck kernel, a GPU fence that never signals) stops the pings and
/// systemd restarts the daemon.
#[derive(Debug, Default)]
pub struct Watchdog {
    last: Option<u64>,
}

impl Watchdog {
    /// `progress`: None while loading, else (engine steps so far, engine idle).
    pub fn tick(&mut self, progress: Option<(u64, bool)>) -> bool {
        let ping = match progress {
            None | Some((_, true)) => true,
            Some((steps, false)) => self.last != Some(steps),
        };
        self.last = progress.map(|p| p.0);
        ping
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_pings_only_while_work_progresses() {
        let mut w = Watchdog::default();
        assert!(w.tick(None), "loading");
        assert!(w.tick(Some((0, true))), "idle");
        assert!(w.tick(Some((5, false))), "busy and moving");
        assert!(w.tick(Some((9, false))));
        assert!(!w.tick(Some((9, false))), "busy and stuck: no ping");
        assert!(!w.tick(Some((9, false))));
        assert!(w.tick(Some((10, false))), "moving again");
        assert!(w.tick(Some((10, true))), "idle again");
    }

    #[test]
    fn sends_datagrams_to_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("onebit-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("notify");
        let rx = UnixDatagram::bind(&p).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &p);
        assert!(notify("READY=1\nSTATUS=ok").unwrap());
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("onebit-test-{}", std::process::id());
        let rx2 =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        std::env::set_var("NOTIFY_SOCKET", format!("@{name}"));
        assert!(notify("WATCHDOG=1").unwrap());
        let n = rx2.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify("READY=1").unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
