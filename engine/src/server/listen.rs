//! Where onebitd listens: a TCP address, a Unix socket path, or sockets systemd passed
//! in (`LISTEN_FDS`/`LISTEN_PID`, see sd_listen_fds(3)).

use nix::sys::socket::{
    getsockname, getsockopt, sockopt, AddressFamily, SockaddrLike, SockaddrStorage,
};
use nix::unistd::{Gid, Uid};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One client connection.
#[derive(Debug)]
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(t),
            Conn::Unix(s) => s.set_read_timeout(t),
        }
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_write_timeout(t),
            Conn::Unix(s) => s.set_write_timeout(t),
        }
    }

    pub fn shutdown(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Both),
            Conn::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    /// True once the client has closed its side or the connection failed. Does not
    /// consume anything the client sent.
    pub fn peer_gone(&self) -> bool {
        use nix::sys::socket::{recv, MsgFlags};
        let mut b = [0u8; 1];
        match recv(
            self.as_fd().as_raw_fd(),
            &mut b,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => true,
            Ok(_) => false,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => false,
            Err(_) => true,
        }
    }

    /// The local address a TCP client connected to (what it may name in `Host`).
    pub fn local_ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Conn::Tcp(s) => s.local_addr().ok().map(|a| a.ip()),
            Conn::Unix(_) => None,
        }
    }

    /// Who is at the other end, for per-client connection limits: the IP address of a
    /// TCP peer, the uid of a Unix socket peer.
    pub fn peer_key(&self) -> String {
        match self {
            Conn::Tcp(s) => s
                .peer_addr()
                .map_or_else(|_| "tcp:?".into(), |a| a.ip().to_string()),
            Conn::Unix(s) => getsockopt(s, sockopt::PeerCredentials)
                .map_or_else(|_| "unix:?".into(), |c| format!("uid:{}", c.uid())),
        }
    }

    pub fn peer(&self) -> String {
        match self {
            Conn::Tcp(s) => s
                .peer_addr()
                .map_or_else(|_| "tcp:?".into(), |a| a.to_string()),
            Conn::Unix(_) => "unix".into(),
        }
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Tcp(s) => s.as_fd(),
            Conn::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Unix(s) => s.flush(),
        }
    }
}

/// Who may connect to a Unix socket onebitd creates.
#[derive(Clone, Debug)]
pub struct SocketAccess {
    /// Given the socket file right after bind (the user onebitd becomes, when it starts
    /// as root), so that it can remove the file at exit.
    pub owner: Option<Uid>,
    /// Group of the socket file (`--socket-group`); clients in it may connect when
    /// `mode` lets the group write.
    pub group: Option<Gid>,
    /// Permission bits of the socket file (`--socket-mode`); connecting needs write.
    pub mode: u32,
}

impl Default for SocketAccess {
    fn default() -> Self {
        Self {
            owner: None,
            group: None,
            mode: 0o660,
        }
    }
}

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    /// The path is removed at shutdown when onebitd created it.
    Unix(UnixListener, Option<PathBuf>),
}

impl Listener {
    /// `host` ending in `.sock` or containing `/` is a Unix socket path, as in llama-server.
    pub fn bind(host: &str, port: u16) -> io::Result<Self> {
        Self::bind_with(host, port, &SocketAccess::default())
    }

    /// [`Listener::bind`], a Unix socket file getting `access`.
    pub fn bind_with(host: &str, port: u16, access: &SocketAccess) -> io::Result<Self> {
        if host.ends_with(".sock") || host.contains('/') {
            return Self::bind_unix(Path::new(host), access);
        }
        let l = TcpListener::bind((host, port)).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on {host}:{port}: {e}"))
        })?;
        Ok(Listener::Tcp(l))
    }

    /// Binds a Unix socket, replacing a stale socket file that nobody listens on; right
    /// after bind the file gets its owner (without following links) and `access.mode`.
    pub fn bind_unix(path: &Path, access: &SocketAccess) -> io::Result<Self> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        if nix::unistd::geteuid().is_root() {
            check_socket_dir(path)?;
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() && UnixStream::connect(path).is_err() {
                let _ = std::fs::remove_file(path);
            }
        }
        // bind(2) creates the file with 0777 & ~umask, so until the chmod below only its
        // owner (this process) can connect: connecting needs write, which a umask of 022
        // or stricter takes from the others.
        let l = UnixListener::bind(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot listen on {}: {e} (is another onebitd running?)",
                    path.display()
                ),
            )
        })?;
        if access.owner.is_some() || access.group.is_some() {
            nix::unistd::fchownat(
                None,
                path,
                access.owner,
                access.group,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| {
                let _ = std::fs::remove_file(path);
                io::Error::from(e).with_context(format!("chown {}", path.display()))
            })?;
        }
        // Follows links, but the directory is root's and closed (checked above when root),
        // and otherwise belongs to whoever could swap the file anyway.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode)).map_err(
            |e| {
                let _ = std::fs::remove_file(path);
                e.with_context(format!("chmod {:o} {}", access.mode, path.display()))
            },
        )?;
        Ok(Listener::Unix(l, Some(path.to_path_buf())))
    }

    pub fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                let _ = s.set_nodelay(true);
                Ok(Conn::Tcp(s))
            }
            Listener::Unix(l, _) => Ok(Conn::Unix(l.accept()?.0)),
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(on),
            Listener::Unix(l, _) => l.set_nonblocking(on),
        }
    }

    /// The TCP port, where there is one (tests bind port 0).
    pub fn port(&self) -> Option<u16> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().map(|a| a.port()),
            Listener::Unix(..) => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "tcp".into(), |a| format!("http://{a}")),
            Listener::Unix(l, _) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix socket".into()),
        }
    }

    /// Whether other machines can reach this socket: TCP on an address that is not
    /// loopback (the unspecified address 0.0.0.0 / :: included).
    pub fn exposed(&self) -> bool {
        match self {
            Listener::Tcp(l) => l.local_addr().is_ok_and(|a| !a.ip().is_loopback()),
            Listener::Unix(..) => false,
        }
    }

    /// The socket file onebitd created, if any.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Listener::Unix(_, p) => p.as_deref(),
            Listener::Tcp(_) => None,
        }
    }

    /// Removes the socket file onebitd created.
    pub fn cleanup(&self) {
        if let Some(p) = self.unix_path() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Refuses (when running as root) a socket directory that anyone but root owns or may
/// write: whoever can write it could swap the socket file for a link to a file of
/// root's while the model loads, and have that file handed to the service user.
fn check_socket_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(dir).map_err(|e| {
        io::Error::new(e.kind(), format!("socket directory {}: {e}", dir.display()))
    })?;
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "socket directory {} belongs to uid {} with mode {:03o}: started as root, onebitd puts its socket only in a directory that root owns and nobody else may write (e.g. /run/onebit, mode 0755), since whoever can write it could swap the socket for a link to a file of root's",
                dir.display(),
                meta.uid(),
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Adds what was being done to an error's message.
trait Context {
    fn with_context(self, what: String) -> io::Error;
}

impl Context for io::Error {
    fn with_context(self, what: String) -> io::Error {
        io::Error::new(self.kind(), format!("{what}: {self}"))
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l, _) => l.as_fd(),
        }
    }
}

/// The first fd systemd passes (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: i32 = 3;

/// Takes the listening sockets systemd passed, if `LISTEN_PID` names this process.
/// Clears the variables so that child processes do not take them too.
pub fn from_systemd() -> io::Result<Vec<Listener>> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let n = std::env::var("LISTEN_FDS").ok();
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let Some(n) = n.filter(|_| pid_ok) else {
        return Ok(Vec::new());
    };
    let n: i32 = n
        .parse()
        .ok()
        .filter(|&n| (0..=64).contains(&n))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("LISTEN_FDS={n:?} is not a small number"),
            )
        })?;
    let mut out = Vec::new();
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + n {
        // SAFETY: sd_listen_fds(3): systemd hands this process the fds 3..3+LISTEN_FDS, open
        // and owned by nobody else in it; LISTEN_PID was checked to be this process, and the
        // variables are removed above so no other code takes them.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        out.push(adopt(owned)?);
    }
    Ok(out)
}

/// Wraps a passed fd after checking it is a listening stream socket.
fn adopt(fd: OwnedFd) -> io::Result<Listener> {
    let raw = fd.as_raw_fd();
    let err = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {raw} from systemd: {what}"),
        )
    };
    let listening =
        getsockopt(&fd, sockopt::AcceptConn).map_err(|e| err(format!("not a socket ({e})")))?;
    if !listening {
        return Err(err(
            "not a listening socket; use ListenStream= in onebitd.socket".into(),
        ));
    }
    nix::fcntl::fcntl(
        raw,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| err(format!("cannot set close-on-exec: {e}")))?;
    let addr: SockaddrStorage = getsockname(raw).map_err(|e| err(format!("getsockname: {e}")))?;
    match addr.family() {
        Some(AddressFamily::Inet | AddressFamily::Inet6) => {
            Ok(Listener::Tcp(TcpListener::from(fd)))
        }
        Some(AddressFamily::Unix) => Ok(Listener::Unix(UnixListener::from(fd), None)),
        other => Err(err(format!(
            "unsupported socket family {other:?}; use a TCP or Unix stream socket"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopts_listening_sockets_and_rejects_others() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        let l = adopt(OwnedFd::from(tcp)).unwrap();
        assert_eq!(l.port(), Some(port));

        let (a, _b) = UnixStream::pair().unwrap();
        assert!(adopt(OwnedFd::from(a)).is_err());
    }

    #[test]
    fn peer_gone_sees_close() {
        let (a, b) = UnixStream::pair().unwrap();
        let c = Conn::Unix(a);
        assert!(!c.peer_gone());
        drop(b);
        assert!(c.peer_gone());
    }

    /// Started as root, onebitd refuses a socket directory another user can write: that
    /// user could swap the socket for a link to a file of root's while the model loads.
    #[test]
    fn socket_directory_others_can_write_is_refused_as_root() {
        use std::os::unix::fs::PermissionsExt;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: the socket directory check applies only when running as root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("onebit-sockdir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("api.sock");
        let nobody = (Uid::from_raw(65534), Gid::from_raw(65534));
        // Owned by another user.
        nix::unistd::chown(&dir, Some(nobody.0), Some(nobody.1)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = Listener::bind(sock.to_str().unwrap(), 0).unwrap_err();
        assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
        // Root's, but writable by all (like /tmp).
        nix::unistd::chown(&dir, Some(Uid::from_raw(0)), Some(Gid::from_raw(0))).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(Listener::bind(sock.to_str().unwrap(), 0).is_err());
        // Root's and closed: the socket is created with its mode and owner, no link followed.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let access = SocketAccess {
            owner: Some(nobody.0),
            group: Some(nobody.1),
            mode: 0o660,
        };
        let l = Listener::bind_with(sock.to_str().unwrap(), 0, &access).unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(&sock).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (65534, 65534, 0o660));
        l.cleanup();
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn unix_socket_replaces_stale_file() {
        let dir = std::env::temp_dir().join(format!("onebit-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("api.sock");
        let l = Listener::bind(p.to_str().unwrap(), 0).unwrap();
        drop(l);
        let l = Listener::bind(p.to_str().unwrap(), 0).unwrap();
        assert!(l.describe().contains("api.sock"));
        l.cleanup();
        assert!(!p.exists());
        let _ = std::fs::remove_dir(&dir);
    }
}
