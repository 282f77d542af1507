//! The named POSIX shared-memory segment: creation, stale-segment removal, attach, unlink.
//!
//! The segment is `/dev/shm/<prefix>.<parent pid>`, mode 0600. The creating parent also holds
//! an exclusive `flock` on it; forked workers inherit that open file description, so the lock
//! is held exactly as long as some process of the server lives, and the kernel drops it when
//! the last one dies, however it dies. A segment whose lock can be taken is stale.

use std::fs::{File, TryLockError};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::{Duration, SystemTime};

use std::num::NonZeroUsize;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use nix::sys::signal::kill;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use shared_memory::{Shmem, ShmemConf, ShmemError};

use crate::layout::{MAX_SLOTS, segment_size};
use crate::{Board, ScoreboardError, Snapshot};

/// Where Linux exposes POSIX shared-memory objects.
pub const SHM_DIR: &str = "/dev/shm";

/// The default name prefix.
pub const DEFAULT_PREFIX: &str = "simplehttp-prefork";

/// An unlocked segment younger than this may belong to a server that is starting right now
/// (between `shm_open` and `flock`), unless its pid is already dead.
const STARTUP_GRACE: Duration = Duration::from_secs(5);

/// The segment as owned by the parent: unlinked when dropped, on every exit path that unwinds.
pub struct Scoreboard {
    shmem: Shmem,
    board: Board,
    /// Holds the liveness `flock` for as long as the server lives.
    _liveness: File,
}

impl std::fmt::Debug for Scoreboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoreboard")
            .field("name", &self.name())
            .field("owner", &self.shmem.is_owner())
            .field("slots", &self.board.slot_count())
            .finish()
    }
}

impl Scoreboard {
    /// Creates `/<prefix>.<pid>` with `slot_count` empty slots, after removing stale
    /// segments with the same prefix left by servers that died without cleaning up.
    pub fn create(prefix: &str, slot_count: usize) -> Result<Scoreboard, ScoreboardError> {
        validate_prefix(prefix)?;
        if slot_count == 0 || slot_count > MAX_SLOTS {
            return Err(ScoreboardError::SlotCount(slot_count));
        }
        remove_stale_segments(prefix)?;
        let pid = std::process::id();
        let os_id = segment_name(prefix, pid);
        let shmem =
            ShmemConf::new().size(segment_size(slot_count)).os_id(&os_id).create().map_err(|source| match source {
                // Say why in words ("Read-only file system"), not as a bare number.
                ShmemError::MapCreateFailed(errno)
                | ShmemError::MapOpenFailed(errno)
                | ShmemError::UnknownOsError(errno) => {
                    io_error(&os_id, std::io::Error::from_raw_os_error(errno as i32))
                }
                source => ScoreboardError::Shmem { name: os_id.clone(), source },
            })?;
        // From here on, dropping `shmem` (owner) unlinks the segment on any error.
        let path = shm_path(&os_id);
        let liveness = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| io_error(&os_id, source))?;
        // Blocking: a server starting in parallel may be holding it for a moment while it
        // checks whether this (brand-new, still unlocked) segment is stale.
        liveness.lock().map_err(|source| io_error(&os_id, source))?;
        // The segment's pages, reserved now: a tmpfs with room for the file but not for them
        // would otherwise kill the server with SIGBUS on its first write there.
        // SAFETY: posix_fallocate on a descriptor we own, within the segment's size.
        let reserved =
            unsafe { libc::posix_fallocate(liveness.as_raw_fd(), 0, segment_size(slot_count) as libc::off_t) };
        if reserved != 0 {
            return Err(io_error(&os_id, std::io::Error::from_raw_os_error(reserved)));
        }
        let base = NonNull::new(shmem.as_ptr()).ok_or_else(|| ScoreboardError::Layout("null mapping".into()))?;
        // SAFETY: shared_memory mapped `segment_size(slot_count)` fresh (zeroed, page-aligned)
        // bytes that stay mapped while `shmem` lives, which is as long as `board` does.
        let board = unsafe { Board::initialise(base, slot_count, pid) };
        tracing::debug!(name = %os_id, slots = slot_count, "created scoreboard segment");
        Ok(Scoreboard { shmem, board, _liveness: liveness })
    }

    /// The segment's POSIX name (`/prefix.pid`).
    pub fn name(&self) -> &str {
        self.shmem.get_os_id()
    }

    /// The board inside the segment.
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// In a freshly forked worker: gives up ownership (so nothing this process does can
    /// unlink the segment) and returns a view that lives as long as the process.
    ///
    /// # Safety
    /// The caller must never drop, move out or unmap this `Scoreboard` afterwards: the worker
    /// process has to end with `std::process::exit`, which is the project's invariant for
    /// forked workers. Dropping it would unmap memory the returned reference points into.
    pub unsafe fn worker_board(&mut self) -> &'static Board {
        self.shmem.set_owner(false);
        let base = NonNull::new(self.shmem.as_ptr()).expect("mapped segment");
        // SAFETY: the mapping stays valid for the rest of the process by the caller's promise.
        let board = unsafe { Board::attach(base, self.shmem.len()) }.expect("the parent's own segment is valid");
        Box::leak(Box::new(board))
    }
}

/// A segment opened read-only by a process that did not create it (status tools). It maps
/// the memory without write permission, so it can neither change nor unlink anything.
pub struct AttachedScoreboard {
    name: String,
    mapping: NonNull<std::ffi::c_void>,
    len: usize,
    board: Board,
}

impl std::fmt::Debug for AttachedScoreboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachedScoreboard").field("name", &self.name).field("len", &self.len).finish()
    }
}

impl AttachedScoreboard {
    /// Opens an existing segment by name (`/prefix.pid` or `prefix.pid`), maps it read-only,
    /// and checks its layout.
    pub fn open(name: &str) -> Result<AttachedScoreboard, ScoreboardError> {
        let os_id = if name.starts_with('/') { name.to_owned() } else { format!("/{name}") };
        let errno = |e: Errno| io_error(&os_id, std::io::Error::from(e));
        // Non-blocking: a FIFO (or another odd file) in its place must not hang the reader.
        let fd = nix::sys::mman::shm_open(os_id.as_str(), OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty())
            .map_err(errno)?;
        let file = File::from(fd);
        let metadata = file.metadata().map_err(|source| io_error(&os_id, source))?;
        if !metadata.is_file() {
            return Err(ScoreboardError::Layout(format!("{os_id} is not a shared memory segment")));
        }
        let len = metadata.len() as usize;
        let length = NonZeroUsize::new(len).ok_or_else(|| ScoreboardError::Layout(format!("{os_id} is empty")))?;
        // SAFETY: a fresh shared, read-only mapping of the whole object; nothing else in this
        // process refers to it, and it is unmapped only when this struct is dropped.
        let mapping =
            unsafe { mmap(None, length, ProtFlags::PROT_READ, MapFlags::MAP_SHARED, &file, 0) }.map_err(errno)?;
        // SAFETY: `len` readable bytes, page-aligned, mapped until drop; Board::attach only
        // reads, and this type exposes only reading methods of the board.
        match unsafe { Board::attach(mapping.cast::<u8>(), len) } {
            Ok(board) => Ok(AttachedScoreboard { name: os_id, mapping, len, board }),
            Err(error) => {
                // SAFETY: unmapping the mapping made above, never used again.
                let _ = unsafe { munmap(mapping, len) };
                Err(error)
            }
        }
    }

    /// The segment's POSIX name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the whole board.
    pub fn snapshot(&self) -> Snapshot {
        self.board.snapshot()
    }

    /// Whether the server that owns the segment is still running.
    pub fn is_live(&self) -> Result<bool, ScoreboardError> {
        is_segment_live(&self.name)
    }
}

impl Drop for AttachedScoreboard {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`; the board pointing into it is dropped with us.
        let _ = unsafe { munmap(self.mapping, self.len) };
    }
}

/// The name of the segment created by the supervisor `pid` with `prefix`: `/<prefix>.<pid>`.
pub fn segment_name(prefix: &str, pid: u32) -> String {
    format!("/{prefix}.{pid}")
}

/// Path of a POSIX shared-memory object under `/dev/shm`.
pub fn shm_path(os_id: &str) -> PathBuf {
    Path::new(SHM_DIR).join(os_id.trim_start_matches('/'))
}

/// Whether some process of the server that created `name` is still alive (it holds the lock).
pub fn is_segment_live(name: &str) -> Result<bool, ScoreboardError> {
    let file = File::open(shm_path(name)).map_err(|source| io_error(name, source))?;
    match file.try_lock() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(source)) => Err(io_error(name, source)),
    }
}

/// Removes `<prefix>.<pid>` segments that no live server holds. Returns the names removed.
pub fn remove_stale_segments(prefix: &str) -> Result<Vec<String>, ScoreboardError> {
    validate_prefix(prefix)?;
    let entries = match std::fs::read_dir(SHM_DIR) {
        Ok(entries) => entries,
        Err(source) => return Err(io_error(SHM_DIR, source)),
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else { continue };
        let Some(pid) = file_name.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('.')) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else { continue };
        if is_stale(&entry.path(), pid) {
            let os_id = format!("/{file_name}");
            match nix::sys::mman::shm_unlink(os_id.as_str()) {
                Ok(()) | Err(Errno::ENOENT) => {
                    tracing::warn!(name = %os_id, "removed stale scoreboard segment left by a server that died");
                    removed.push(os_id);
                }
                Err(errno) => tracing::warn!(name = %os_id, %errno, "cannot remove stale scoreboard segment"),
            }
        }
    }
    Ok(removed)
}

/// Stale: no process holds its lock, and either its creator is gone or it is too old to be a
/// server caught between creating and locking it.
fn is_stale(path: &Path, pid: i32) -> bool {
    let Ok(file) = File::open(path) else { return false };
    if file.try_lock().is_err() {
        return false; // held by a live server (or unreadable: not ours to judge)
    }
    let creator_gone =
        pid <= 0 || pid as u32 == std::process::id() || kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH);
    let old = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > STARTUP_GRACE);
    creator_gone || old
}

fn validate_prefix(prefix: &str) -> Result<(), ScoreboardError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 200
        && prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(ScoreboardError::BadPrefix(prefix.to_owned())) }
}

fn io_error(name: &str, source: std::io::Error) -> ScoreboardError {
    ScoreboardError::Io { name: name.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorkerState;

    /// A prefix no other test (or server) uses, so tests can run in parallel.
    fn prefix(test: &str) -> String {
        format!("prefork-scoreboard-test-{test}-{}", std::process::id())
    }

    #[test]
    fn create_makes_a_0600_segment_and_drop_unlinks_it() {
        let prefix = prefix("create");
        let board = Scoreboard::create(&prefix, 8).unwrap();
        let path = shm_path(board.name());
        assert_eq!(board.name(), format!("/{prefix}.{}", std::process::id()));
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        assert!(is_segment_live(board.name()).unwrap());
        drop(board);
        assert!(!path.exists());
    }

    #[test]
    fn a_read_only_reader_sees_what_the_owner_writes_and_never_unlinks() {
        let prefix = prefix("attach");
        let owner = Scoreboard::create(&prefix, 2).unwrap();
        let writer = owner.board().claim_slot(1, 99, 1);
        writer.set_state(WorkerState::Writing);
        let reader = AttachedScoreboard::open(owner.name()).unwrap();
        assert_eq!(reader.snapshot().scoreboard_string(), ".W");
        assert!(reader.is_live().unwrap());
        writer.set_state(WorkerState::Idle);
        assert_eq!(reader.snapshot().scoreboard_string(), "._", "the mapping is shared, not a copy");
        drop(reader);
        assert!(shm_path(owner.name()).exists());
    }

    #[test]
    fn attaching_to_a_missing_or_foreign_segment_is_a_clear_error() {
        let missing = AttachedScoreboard::open(&format!("/{}.1", prefix("missing"))).unwrap_err();
        let cause = std::error::Error::source(&missing).map(ToString::to_string).unwrap_or_default();
        assert!(missing.to_string().contains("missing") && cause.contains("No such file"), "{missing}: {cause}");
        let os_id = format!("/{}.1", prefix("foreign"));
        let mut foreign = ShmemConf::new().size(4096).os_id(&os_id).create().unwrap();
        let err = AttachedScoreboard::open(&os_id).unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");
        foreign.set_owner(true);
    }

    #[test]
    fn a_segment_nobody_holds_is_removed_at_the_next_start() {
        let prefix = prefix("stale");
        // Pid beyond Linux's pid_max (4194304): its creator is certainly dead.
        let os_id = format!("/{prefix}.4194999");
        let leftover = ShmemConf::new().size(4096).os_id(&os_id).create().unwrap();
        let mut leftover = leftover;
        leftover.set_owner(false); // simulate a SIGKILLed owner: nobody will unlink it
        drop(leftover);
        assert!(shm_path(&os_id).exists());
        let fresh = Scoreboard::create(&prefix, 1).unwrap();
        assert!(!shm_path(&os_id).exists(), "stale segment survived");
        assert!(shm_path(fresh.name()).exists());
    }

    #[test]
    fn a_segment_held_by_a_live_server_is_left_alone() {
        let prefix = prefix("live");
        let live = Scoreboard::create(&prefix, 1).unwrap();
        let removed = remove_stale_segments(&prefix).unwrap();
        assert!(removed.is_empty());
        assert!(shm_path(live.name()).exists());
    }

    #[test]
    fn bad_prefixes_and_slot_counts_are_refused() {
        assert!(matches!(Scoreboard::create("a/b", 1), Err(ScoreboardError::BadPrefix(_))));
        assert!(matches!(Scoreboard::create("", 1), Err(ScoreboardError::BadPrefix(_))));
        assert!(matches!(Scoreboard::create(&prefix("zero"), 0), Err(ScoreboardError::SlotCount(0))));
        assert!(matches!(Scoreboard::create(&prefix("huge"), MAX_SLOTS + 1), Err(ScoreboardError::SlotCount(_))));
    }
}
