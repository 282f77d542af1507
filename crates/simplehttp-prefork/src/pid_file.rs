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

    /// A successor is about to start: this server's pid moves to `NAME.oldbin`.
    pub(crate) fn make_way(&self) -> std::io::Result<()> {
        let oldbin = oldbin_path(&self.path);
        std::fs::rename(&self.path, &oldbin)?;
        *self.current.borrow_mut() = oldbin;
        Ok(())
    }

    /// The successor failed: the pid file names this server again (unless something else
    /// wrote it meanwhile).
    pub(crate) fn take_back(&self) {
        let current = self.current.replace(self.path.clone());
        if current != self.path && !self.path.exists() {
            let _ = std::fs::rename(&current, &self.path);
        }
    }
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
