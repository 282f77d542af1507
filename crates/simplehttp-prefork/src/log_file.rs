//! A log file that can be reopened after rotation (SIGUSR1, as Apache and nginx do), shared by
//! the supervisor and its forked workers.
//!
//! Every process appends whole lines (`O_APPEND`, one `write` per event), so lines from many
//! workers never interleave. A reopen is requested by setting a flag (async-signal-safe: the
//! workers set it from their SIGUSR1 handler) and carried out at the next log line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use nix::unistd::{Gid, Uid, fchown, geteuid};

static REOPEN_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Every log file's path this process opened, so that the parent can make them ready for
/// workers that run as another user (see [`hand_to`]).
static PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// The user and group workers run as, when they switch (`--user`): log files the parent opens
/// or creates become theirs.
static OWNER: OnceLock<(Uid, Gid)> = OnceLock::new();

/// Workers will run as `uid`/`gid`: every log file this process opened, and any it creates
/// later on a reopen, becomes theirs, so that a worker can reopen it after rotation (as
/// nginx's master does for its workers).
pub(crate) fn hand_to(uid: Uid, gid: Gid) -> io::Result<()> {
    let _ = OWNER.set((uid, gid));
    let paths = PATHS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    paths.iter().try_for_each(|path| open_append(path).map(drop))
}

/// In the parent, on SIGUSR1, before the workers are told: creates every log file anew (a
/// rotation moved them away) and hands it to the workers' user, so that no worker creates it
/// as itself, or fails to in a directory only root may write to. The parent's own writers
/// reopen at their next line, as the workers' do.
pub(crate) fn reopen_before_workers() {
    request_reopen();
    if OWNER.get().is_none() {
        return;
    }
    let paths = PATHS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    for path in paths {
        if let Err(error) = open_append(&path) {
            let notice = format!("ERROR: cannot recreate log file {} for the workers: {error}\n", path.display());
            let _ = io::stderr().write_all(notice.as_bytes());
        }
    }
}

/// Asks every [`LogFile`] in this process to reopen its path before the next line.
pub fn request_reopen() {
    REOPEN_REQUESTED.store(true, Ordering::SeqCst);
}

/// In a worker: SIGUSR1 requests a reopen (the supervisor forwards its own SIGUSR1).
pub(crate) fn reopen_on_usr1() -> io::Result<()> {
    // SAFETY: the action only stores to an atomic, which is async-signal-safe.
    unsafe { signal_hook::low_level::register(libc::SIGUSR1, || REOPEN_REQUESTED.store(true, Ordering::SeqCst)) }
        .map(drop)
}

/// A log file for `tracing_subscriber::fmt().with_writer(..)`.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    /// Opens (creating) `path` for appending.
    pub fn open(path: impl AsRef<Path>) -> io::Result<LogFile> {
        let path = path.as_ref().to_path_buf();
        let file = open_append(&path)?;
        PATHS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(path.clone());
        Ok(LogFile { path, file: Mutex::new(file) })
    }

    fn file(&self) -> MutexGuard<'_, File> {
        let mut file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if REOPEN_REQUESTED.swap(false, Ordering::SeqCst) {
            match open_append(&self.path) {
                Ok(reopened) => *file = reopened,
                // Keep writing to the old file, and say so there (logging through tracing
                // from here would re-enter this writer), and on stderr.
                Err(error) => {
                    let notice = format!(
                        "ERROR pid={}: cannot reopen log file {}: {error}; still writing to the file open before\n",
                        std::process::id(),
                        self.path.display()
                    );
                    let _ = file.write_all(notice.as_bytes());
                    let _ = io::stderr().write_all(notice.as_bytes());
                }
            }
        }
        file
    }
}

/// Opens `path` for appending (creating it), and, in a root process whose workers run as
/// another user, makes it theirs. Then it opens no symbolic link (a worker able to write to
/// the log's directory could point the name at any file root may write: nginx's
/// CVE-2016-1247), and hands over only a plain file with one name: never a device, a pipe or
/// a file with other names.
fn open_append(path: &Path) -> io::Result<File> {
    let handing = OWNER.get().filter(|_| geteuid().is_root());
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    if handing.is_some() {
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let file = options.open(path)?;
    if let Some(&(uid, gid)) = handing {
        let meta = file.metadata()?;
        if meta.file_type().is_file() && meta.nlink() == 1 {
            fchown(&file, Some(uid), Some(gid)).map_err(io::Error::from)?;
        }
    }
    Ok(file)
}

/// One event's writer: holds the file for the event's single `write_all`.
#[derive(Debug)]
pub struct LogFileWriter<'a>(MutexGuard<'a, File>);

impl Write for LogFileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = LogFileWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter(self.file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter as _;

    #[test]
    fn a_reopen_after_rotation_writes_to_a_fresh_file() {
        let dir = std::env::temp_dir().join(format!("log-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.log");
        let log = LogFile::open(&path).unwrap();
        log.make_writer().write_all(b"first\n").unwrap();
        std::fs::rename(&path, dir.join("server.log.1")).unwrap();
        log.make_writer().write_all(b"second\n").unwrap();
        request_reopen();
        log.make_writer().write_all(b"third\n").unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("server.log.1")).unwrap(), "first\nsecond\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "third\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
