//! Dropping root: onebitd opens what needs privileges (listening sockets, device nodes,
//! the model file) as root, then becomes an unprivileged user before it serves anyone.

use nix::unistd::{chown, getegid, geteuid, initgroups, setgid, setuid, Gid, Uid, User};
use std::ffi::CString;
use std::path::Path;

/// True when running with root's effective uid.
pub fn is_root() -> bool {
    geteuid().is_root()
}

/// Becomes `name` (uid, primary gid and its supplementary groups, e.g. `render`), and
/// checks that root cannot be regained. `owned` (socket files onebitd created) are
/// given to the user first, so it can remove them at exit.
pub fn drop_to(name: &str, owned: &[&Path]) -> Result<(Uid, Gid), String> {
    let user = User::from_name(name)
        .map_err(|e| format!("cannot look up user '{name}': {e}"))?
        .ok_or_else(|| {
            format!(
                "user '{name}' does not exist: install sysusers.d/onebit.conf (systemd-sysusers), pick another with --user, or run with --allow-root"
            )
        })?;
    if user.uid.is_root() {
        return Err(format!(
            "user '{name}' is root; pick an unprivileged user with --user"
        ));
    }
    for p in owned {
        chown(*p, Some(user.uid), Some(user.gid))
            .map_err(|e| format!("chown {}: {e}", p.display()))?;
    }
    let cname =
        CString::new(name).map_err(|_| format!("user name {name:?} contains a NUL byte"))?;
    initgroups(&cname, user.gid).map_err(|e| format!("initgroups({name}): {e}"))?;
    setgid(user.gid).map_err(|e| format!("setgid({}): {e}", user.gid))?;
    setuid(user.uid).map_err(|e| format!("setuid({}): {e}", user.uid))?;
    if setuid(Uid::from_raw(0)).is_ok() || geteuid().is_root() {
        return Err("privileges were not dropped: root could be regained".into());
    }
    Ok((geteuid(), getegid()))
}
