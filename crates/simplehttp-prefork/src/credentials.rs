//! Workers that run as an unprivileged user (Apache's `User` and `Group`): the names are
//! resolved when the server is built, so that an unknown user is an error at start; each
//! worker switches after its fork, before its fork handlers run and before it serves. The
//! parent keeps its privileges, which it needs to fork workers that switch, and holds what was
//! opened as root: the listening socket (a port below 1024 included), the scoreboard (mapped
//! into every worker before it switches), the pid file and the log file (made the user's, so
//! that a worker can reopen it after rotation).

use std::ffi::CString;

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Group, Uid, User, getegid, geteuid, getppid, initgroups, setgid, setgroups, setuid};

/// The user and group workers run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Credentials {
    /// The user's name, for its supplementary groups (`None`: a bare uid, or only a group).
    user_name: Option<String>,
    pub(crate) uid: Uid,
    pub(crate) gid: Gid,
}

impl Credentials {
    /// `user` and `group` by name or number. No user: workers keep this process's user and
    /// change only their group. Neither: `None`. Switching to another user or group needs the
    /// server to start as root, which is checked here too.
    pub(crate) fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Credentials>, String> {
        if user.is_none() && group.is_none() {
            return Ok(None);
        }
        let (user_name, uid, user_gid) = match user {
            None => (None, geteuid(), getegid()),
            Some(text) => match text.parse::<u32>() {
                Ok(number) => match User::from_uid(Uid::from_raw(number)).map_err(|e| format!("user {text}: {e}"))? {
                    Some(found) => (Some(found.name), found.uid, found.gid),
                    // No passwd entry, so no group of its own: this process's would be root's.
                    None if group.is_none() => {
                        return Err(format!("user {text} has no passwd entry: give its group too"));
                    }
                    None => (None, Uid::from_raw(number), getegid()),
                },
                Err(_) => match User::from_name(text).map_err(|e| format!("user {text}: {e}"))? {
                    Some(found) => (Some(found.name), found.uid, found.gid),
                    None => return Err(format!("user {text:?}: no such user")),
                },
            },
        };
        let gid = match group {
            None => user_gid,
            Some(text) => match text.parse::<u32>() {
                Ok(number) => Gid::from_raw(number),
                Err(_) => match Group::from_name(text).map_err(|e| format!("group {text}: {e}"))? {
                    Some(found) => found.gid,
                    None => return Err(format!("group {text:?}: no such group")),
                },
            },
        };
        let credentials = Credentials { user_name, uid, gid };
        if !geteuid().is_root() && credentials.changes_anything() {
            return Err(format!(
                "running workers as user {} and group {} needs the server to start as root (it runs as uid {})",
                uid,
                gid,
                geteuid()
            ));
        }
        Ok(Some(credentials))
    }

    fn changes_anything(&self) -> bool {
        self.uid != geteuid() || self.gid != getegid()
    }

    /// In a worker, right after the fork: the group, the supplementary groups (the user's own,
    /// or none but the group), then the user; no way back to root afterwards. A change of
    /// credentials makes the kernel forget the worker's parent-death signal and its
    /// dumpability: both are set again (as nginx does), and the parent checked once more, so
    /// that the worker still dies with its supervisor.
    pub(crate) fn assume(&self, parent_pid: u32) -> Result<(), String> {
        if !self.changes_anything() {
            return Ok(());
        }
        let name = self.user_name.as_deref().map(CString::new).transpose().map_err(|e| e.to_string())?;
        match name {
            Some(name) => initgroups(&name, self.gid).map_err(|e| format!("initgroups: {e}"))?,
            None => setgroups(&[self.gid]).map_err(|e| format!("setgroups: {e}"))?,
        }
        setgid(self.gid).map_err(|e| format!("setgid {}: {e}", self.gid))?;
        setuid(self.uid).map_err(|e| format!("setuid {}: {e}", self.uid))?;
        // setuid as root sets every uid (real, effective, saved): check that none stayed 0.
        if !self.uid.is_root() && setuid(Uid::from_raw(0)).is_ok() {
            return Err("still able to become root after setuid".into());
        }
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
        if getppid().as_raw() as u32 != parent_pid {
            return Err("the supervisor died while this worker switched user".into());
        }
        // Core dumps of a crashing handler, as before the switch.
        nix::sys::prctl::set_dumpable(true).map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_asked_is_nothing_to_do_and_unknown_names_are_errors_that_say_so() {
        assert_eq!(Credentials::resolve(None, None), Ok(None));
        let unknown = Credentials::resolve(Some("no-such-user-here"), None).unwrap_err();
        assert!(unknown.contains("no such user"), "{unknown}");
        let unknown = Credentials::resolve(None, Some("no-such-group-here")).unwrap_err();
        assert!(unknown.contains("no such group"), "{unknown}");
    }

    #[test]
    fn this_process_own_user_needs_no_privileges() {
        let me = geteuid().as_raw().to_string();
        let credentials = Credentials::resolve(Some(&me), None).unwrap().unwrap();
        assert_eq!(credentials.uid, geteuid());
        assert!(!credentials.changes_anything() || geteuid().is_root());
    }
}
