//! The pid file: written once the server runs, refused if it names a running server, removed
//! at exit. During a binary upgrade the old server's moves to `NAME.oldbin` (nginx's and
//! unicorn's convention), so that the new one can write its own, and back if the upgrade fails.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use prefork_scoreboard::segment_name;

use crate::ServerError;

/// The pid file, removed when dropped (the server's whole run is inside its lifetime).
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
    /// Where this server's pid is now: `path`, or `path.oldbin` while a successor starts.
    current: RefCell<PathBuf>,
}

impl PidFile {
    /// Refuses a pid file that names a running server (one whose scoreboard is still held).
    pub(crate) fn check(path: PathBuf, scoreboard_prefix: &str) -> Result<PidFile, ServerError> {
        let recorded = read_pid_file(&path).ok().flatten();
        if let Some(pid) = recorded.filter(|pid| *pid != std::process::id())
            && prefork_scoreboard::is_segment_live(&segment_name(scoreboard_prefix, pid)).unwrap_or(false)
        {
            return Err(ServerError::AlreadyRunning { path, pid });
        }
        Ok(PidFile { current: RefCell::new(path.clone()), path })
    }

    pub(crate) fn write(&self) -> Result<(), ServerError> {
        std::fs::write(&self.path, format!("{}\n", std::process::id()))
            .map_err(|source| ServerError::PidFile { path: self.path.clone(), source })
    }

    /// A successor is about to start: this server's pid moves to `NAME.oldbin`. Refused while
    /// a `NAME.oldbin` exists (an upgrade of an upgrade not yet done: that file is its
    /// predecessor's); a pid file gone meanwhile is written there anew.
    pub(crate) fn make_way(&self) -> std::io::Result<()> {
        let oldbin = oldbin_path(&self.path);
        if oldbin.exists() {
            let message = format!("{} exists: an upgrade is under way", oldbin.display());
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, message));
        }
        match std::fs::rename(&self.path, &oldbin) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                std::fs::write(&oldbin, format!("{}\n", std::process::id()))?
            }
            done => done?,
        }
        *self.current.borrow_mut() = oldbin;
        Ok(())
    }

    /// The successor failed: the pid file names this server again, unless a server that still
    /// runs wrote it meanwhile (a successor that wrote it and died does not count).
    pub(crate) fn take_back(&self) {
        let current = self.current.borrow().clone();
        if current == self.path {
            return;
        }
        let named = read_pid_file(&self.path).ok().flatten();
        let live = named.is_some_and(|pid| pid != std::process::id() && is_alive(pid));
        if !live && std::fs::rename(&current, &self.path).is_ok() {
            *self.current.borrow_mut() = self.path.clone();
        }
    }
}

/// Whether a process runs under `pid` (a zombie does not).
fn is_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    state.is_some_and(|s| s != "Z" && s != "X")
}

/// `NAME.oldbin`: where a server's pid file goes while its successor starts.
pub fn oldbin_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".oldbin");
    PathBuf::from(name)
}

/// The supervisor pid a pid file records: `Ok(None)` if the file holds no pid.
pub fn read_pid_file(path: &Path) -> std::io::Result<Option<u32>> {
    Ok(std::fs::read_to_string(path)?.trim().parse().ok())
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own: a file rewritten by another server since is not ours to remove.
        let path = self.current.borrow();
        let ours = std::fs::read_to_string(&*path).is_ok_and(|t| t.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&*path);
        }
    }
}
