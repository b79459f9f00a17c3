//! Dropping root: when onebitd is started as root it opens what needs privileges
//! (listening sockets, device nodes, the model file), then becomes an unprivileged user
//! before it serves anyone. The units in `udev/` start it as that user to begin with.

use nix::unistd::{getegid, geteuid, getgroups, initgroups, setgid, setuid, Gid, Uid, User};
use std::ffi::CString;

/// True when running with root's effective uid.
pub fn is_root() -> bool {
    geteuid().is_root()
}

/// The user onebitd becomes.
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    /// Primary group.
    pub gid: Gid,
}

/// Looks up `name` and checks that becoming it gives up root: neither its uid nor its
/// primary group may be 0 (group root owns files that user root does).
pub fn lookup(name: &str) -> Result<Account, String> {
    let user = User::from_name(name)
        .map_err(|e| format!("cannot look up user '{name}': {e}"))?
        .ok_or_else(|| {
            format!(
                "user '{name}' does not exist: install sysusers.d/onebit.conf (systemd-sysusers), pick another with --user, or run with --allow-root"
            )
        })?;
    check_unprivileged(name, user.uid, &[user.gid])?;
    Ok(Account {
        name: name.to_string(),
        uid: user.uid,
        gid: user.gid,
    })
}

/// Refuses uid 0 and membership of group 0.
fn check_unprivileged(name: &str, uid: Uid, groups: &[Gid]) -> Result<(), String> {
    if uid.is_root() {
        return Err(format!(
            "user '{name}' is root; pick an unprivileged user with --user"
        ));
    }
    if groups.iter().any(|g| g.as_raw() == 0) {
        return Err(format!(
            "user '{name}' is in group 0 (root); give it its own primary group and remove it from group root"
        ));
    }
    Ok(())
}

/// Becomes `account` (uid, primary gid and its supplementary groups, e.g. `render`), and
/// checks that root cannot be regained.
pub fn drop_to(account: &Account) -> Result<(Uid, Gid), String> {
    let name = &account.name;
    let cname = CString::new(name.as_str())
        .map_err(|_| format!("user name {name:?} contains a NUL byte"))?;
    initgroups(&cname, account.gid).map_err(|e| format!("initgroups({name}): {e}"))?;
    let groups = getgroups().map_err(|e| format!("getgroups: {e}"))?;
    check_unprivileged(name, account.uid, &groups)?;
    setgid(account.gid).map_err(|e| format!("setgid({}): {e}", account.gid))?;
    setuid(account.uid).map_err(|e| format!("setuid({}): {e}", account.uid))?;
    if setuid(Uid::from_raw(0)).is_ok() || geteuid().is_root() {
        return Err("privileges were not dropped: root could be regained".into());
    }
    Ok((geteuid(), getegid()))
}

/// Sets `PR_SET_NO_NEW_PRIVS`: nothing this process or its children run can gain
/// privileges (setuid binaries, file capabilities), whatever the unit says.
pub fn forbid_new_privileges() -> Result<(), String> {
    // SAFETY: prctl(2) PR_SET_NO_NEW_PRIVS takes the value 1 and four unused zero
    // arguments; it reads and writes no memory of this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(format!(
            "prctl(PR_SET_NO_NEW_PRIVS): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Whether `PR_SET_NO_NEW_PRIVS` is set for this process.
pub fn new_privileges_forbidden() -> bool {
    // SAFETY: prctl(2) PR_GET_NO_NEW_PRIVS takes four unused zero arguments and returns
    // the flag; it touches no memory of this process.
    unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_uid_and_group_are_refused() {
        let u = Uid::from_raw(998);
        assert!(check_unprivileged("onebit", u, &[Gid::from_raw(998), Gid::from_raw(105)]).is_ok());
        let e =
            check_unprivileged("onebit", u, &[Gid::from_raw(998), Gid::from_raw(0)]).unwrap_err();
        assert!(e.contains("group 0"), "{e}");
        let e = check_unprivileged("toor", Uid::from_raw(0), &[Gid::from_raw(5)]).unwrap_err();
        assert!(e.contains("is root"), "{e}");
    }

    #[test]
    fn no_new_privileges_sticks() {
        forbid_new_privileges().unwrap();
        assert!(new_privileges_forbidden());
    }
}
