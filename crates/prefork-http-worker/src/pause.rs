//! How a worker learns that the pool was paused or resumed (SimpleHTTP's STOPLISTEN and
//! STARTLISTEN): the supervisor sets the scoreboard's paused bit and nudges every worker with
//! SIGUSR2, whose handler wakes an eventfd in the worker's accept wait; the wait then takes the
//! listener out of its epoll, or puts it back. (A worker that starts meanwhile reads the bit
//! after it has installed the handler, so it misses neither.)

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicI32, Ordering::SeqCst};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::WorkerError;

static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigusr2(_: libc::c_int) {
    let fd = WAKE_FD.load(SeqCst);
    if fd >= 0 {
        // SAFETY: reading and restoring this thread's errno, and write(2) on an eventfd, are
        // async-signal-safe; the buffer is a live local.
        unsafe {
            let saved = *libc::__errno_location();
            let one: u64 = 1;
            libc::write(fd, (&raw const one).cast(), size_of::<u64>());
            *libc::__errno_location() = saved;
        }
    }
}

/// The worker's side of pause and resume. One per worker process.
#[derive(Debug)]
pub(crate) struct PauseNudge {
    eventfd: EventFd,
}

impl PauseNudge {
    /// Installs the SIGUSR2 handler (the supervisor ignored SIGUSR2 in the worker until now).
    pub(crate) fn install() -> Result<PauseNudge, WorkerError> {
        let eventfd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|errno| WorkerError::Sys { what: "eventfd", errno })?;
        WAKE_FD.store(eventfd.as_fd().as_raw_fd(), SeqCst);
        let nudge = SigAction::new(SigHandler::Handler(on_sigusr2), SaFlags::SA_RESTART, SigSet::empty());
        // SAFETY: the handler only reads an atomic and calls write(2), both async-signal-safe.
        unsafe { sigaction(Signal::SIGUSR2, &nudge) }
            .map_err(|errno| WorkerError::Sys { what: "sigaction USR2", errno })?;
        Ok(PauseNudge { eventfd })
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }

    /// Consumes the nudges so far (the eventfd is level-triggered in the wait's epoll).
    pub(crate) fn drain(&self) {
        let _ = self.eventfd.read();
    }
}

impl Drop for PauseNudge {
    fn drop(&mut self) {
        let _ = WAKE_FD.compare_exchange(self.eventfd.as_fd().as_raw_fd(), -1, SeqCst, SeqCst);
    }
}
