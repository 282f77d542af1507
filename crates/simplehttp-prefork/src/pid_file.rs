//! The pid file: written once the server runs, refused if it names a running server, removed
//! at exit.

use std::path::{Path, PathBuf};

use prefork_scoreboard::segment_name;

use crate::ServerError;

/// The pid file, removed when dropped (the server's whole run is inside its lifetime).
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
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
        Ok(PidFile { path })
    }

    pub(crate) fn write(&self) -> Result<(), ServerError> {
        std::fs::write(&self.path, format!("{}\n", std::process::id()))
            .map_err(|source| ServerError::PidFile { path: self.path.clone(), source })
    }
}

/// The supervisor pid a pid file records: `Ok(None)` if the file holds no pid.
pub fn read_pid_file(path: &Path) -> std::io::Result<Option<u32>> {
    Ok(std::fs::read_to_string(path)?.trim().parse().ok())
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own: a file rewritten by another server since is not ours to remove.
        let ours = std::fs::read_to_string(&self.path).is_ok_and(|t| t.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
