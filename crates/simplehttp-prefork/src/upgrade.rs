//! The facade's side of a binary upgrade (USR2): start the binary now on disk with the
//! listening socket and the hand-off queue as descriptors 3, 4 and 5, and, in that new
//! process, take them over instead of binding. The supervisor does the rest (see
//! `prefork_supervisor::Supervisor::on_upgrade`): the new server tells the old one once it is
//! ready, and the old one retires its workers and exits.

use std::ffi::OsString;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use prefork_http_worker::Listener;

use crate::ServerError;

/// Names the server that started this process for an upgrade (its pid). The descriptors are
/// taken only if they are what an upgrade passes (a listening socket, then two sequenced-packet
/// sockets); the predecessor is told only while it is this process's parent. Each worker
/// removes the variable as it starts.
pub(crate) const UPGRADE_FROM: &str = "SIMPLEHTTP_PREFORK_UPGRADE_FROM";
/// Where the listening socket, the hand-off queue's sender and its receiver arrive.
const FIRST_FD: RawFd = 3;

/// The program and arguments a successor is started with.
#[derive(Clone, Debug)]
pub(crate) struct UpgradeCommand {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
}

/// In a server started by an upgrade: the listener its predecessor handed over, and the
/// predecessor's pid.
pub(crate) fn inherited_listener() -> Result<Option<(Listener, Option<u32>)>, ServerError> {
    let Some(predecessor) = std::env::var(UPGRADE_FROM).ok().and_then(|pid| pid.parse::<u32>().ok()) else {
        return Ok(None);
    };
    let invalid = |what: &str| {
        let message = format!("{UPGRADE_FROM} is set, but descriptor {what}: not started by an upgrade?");
        ServerError::Activation(std::io::Error::new(std::io::ErrorKind::InvalidInput, message))
    };
    for (fd, kind) in
        [(FIRST_FD, libc::SOCK_STREAM), (FIRST_FD + 1, libc::SOCK_SEQPACKET), (FIRST_FD + 2, libc::SOCK_SEQPACKET)]
    {
        if socket_type(fd) != Some(kind) {
            return Err(invalid(&format!("{fd} is not the socket an upgrade passes")));
        }
    }
    // SAFETY: checked just above: 3, 4 and 5 are open sockets of the kinds a predecessor
    // passes, and nothing in this process has taken them (the server binds after this).
    let [listener, sender, receiver] = [0, 1, 2].map(|i| unsafe { OwnedFd::from_raw_fd(FIRST_FD + i) });
    let listener = Listener::adopt_with_handoff(listener, sender, receiver).map_err(ServerError::Activation)?;
    // A predecessor that is gone (it stopped meanwhile) is not told; this server serves alone.
    let parent = nix::unistd::getppid().as_raw() as u32;
    Ok(Some((listener, (parent == predecessor).then_some(predecessor))))
}

/// `SO_TYPE` of an open socket; `None` for a closed descriptor or anything else.
fn socket_type(fd: RawFd) -> Option<libc::c_int> {
    let mut kind: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt with a pointer to a local int and its size; a bad descriptor fails.
    let done = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, (&raw mut kind).cast(), &raw mut len) };
    (done == 0).then_some(kind)
}

/// Starts `command`'s program as this server's successor, with `fds` (the listener, the
/// queue's sender and receiver) as its descriptors 3, 4 and 5, its signal mask cleared (this
/// supervisor blocks the signals it reads from its signalfd), and its own stdio. Returns its pid.
pub(crate) fn start_successor(command: &UpgradeCommand, fds: [BorrowedFd<'_>; 3]) -> Result<u32, String> {
    let raw = fds.map(|fd| fd.as_raw_fd());
    // Descriptors 3 to 5 must be open here, so that nothing the spawn opens (its error pipe)
    // lands on one of them and is overwritten in the child.
    let _placeholders = occupy(FIRST_FD..FIRST_FD + 3).map_err(|e| format!("preparing descriptors: {e}"))?;
    let mut successor = Command::new(&command.program);
    successor.args(&command.args).env(UPGRADE_FROM, std::process::id().to_string());
    if std::env::var_os("WATCHDOG_USEC").is_some() {
        // systemd's watchdog names the main process; the successor feeds it once it is main.
        successor.env("WATCHDOG_PID", std::process::id().to_string());
    }
    let hand_over = move || -> std::io::Result<()> {
        // Only async-signal-safe calls here: between fork and exec.
        // SAFETY: a zeroed sigset_t emptied by sigemptyset, then installed as the mask.
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        }
        // First out of the way (a source may itself be 3, 4 or 5), then into place; dup2 leaves
        // the copies open across exec, the high ones close.
        let mut high = [0; 3];
        for (slot, fd) in high.iter_mut().zip(raw) {
            // SAFETY: fcntl on a descriptor this process holds.
            *slot = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
            if *slot < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        for (target, fd) in (FIRST_FD..).zip(high) {
            // SAFETY: dup2 between descriptors this process holds.
            if unsafe { libc::dup2(fd, target) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure makes only async-signal-safe calls (sigprocmask, fcntl, dup2).
    unsafe { successor.pre_exec(hand_over) };
    let child = successor.spawn().map_err(|e| format!("{}: {e}", command.program.display()))?;
    Ok(child.id())
}

/// Opens `/dev/null` on every descriptor of `range` that is free, and keeps it open while the
/// result lives.
fn occupy(range: std::ops::Range<RawFd>) -> std::io::Result<Vec<std::fs::File>> {
    let mut held = Vec::new();
    for fd in range {
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        while unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            let file = std::fs::File::open("/dev/null")?;
            let opened = file.as_raw_fd();
            held.push(file);
            if opened > fd {
                break; // the lowest free descriptor is above: `fd` is taken after all
            }
        }
    }
    Ok(held)
}

/// The command that started this process, to start again from the binary now on disk: the
/// path it was started by (`argv[0]`, made absolute, or found in `PATH` as the shell found
/// it), not the file it resolves to, so that a new binary installed over it, or a `current`
/// symbolic link switched to a new release, is the one started; and its arguments.
pub fn this_command() -> std::io::Result<(PathBuf, Vec<OsString>)> {
    let mut args = std::env::args_os();
    let argv0 = args.next().map(PathBuf::from);
    let program = match argv0 {
        Some(path) if path.components().count() > 1 => std::path::absolute(path)?,
        Some(name) => std::env::var_os("PATH")
            .into_iter()
            .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .map(|dir| dir.join(&name))
            .find(|candidate| candidate.is_file())
            .map_or_else(std::env::current_exe, Ok)?,
        None => std::env::current_exe()?,
    };
    Ok((program, args.collect()))
}

/// Whether `path` names a program a successor could be started from.
pub(crate) fn check_program(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(format!("binary_upgrade: {} is not a file", path.display())),
        Err(error) => Err(format!("binary_upgrade: {}: {error}", path.display())),
    }
}
