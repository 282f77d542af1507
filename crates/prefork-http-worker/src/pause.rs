//! How a worker learns that the pool was paused or resumed (SimpleHTTP's STOPLISTEN and
//! STARTLISTEN): the supervisor sets the scoreboard's paused bit and nudges every worker with
//! SIGUSR2, whose handler wakes an eventfd in the worker's accept wait; the wait then takes the
//! listener out of its epoll, or puts it back. (A worker that starts meanwhile reads the bit
//! after it has installed the handler, so it misses neither.)

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sys::eventfd::{EfdFlags, EventFd};
use signal_hook::SigId;

use crate::WorkerError;

/// The worker's side of pause and resume. One per worker process.
#[derive(Debug)]
pub(crate) struct PauseNudge {
    eventfd: EventFd,
    registration: SigId,
}

impl PauseNudge {
    /// Installs the SIGUSR2 handler (the supervisor ignored SIGUSR2 in the worker until now).
    pub(crate) fn install() -> Result<PauseNudge, WorkerError> {
        let eventfd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|errno| WorkerError::Sys { what: "eventfd", errno })?;
        // SAFETY: the eventfd is this value's, which unregisters the action when dropped, before
        // the descriptor closes; the extra action does nothing.
        let registration =
            unsafe { prefork_scoreboard::wake_eventfd_on(libc::SIGUSR2, eventfd.as_fd().as_raw_fd(), || {}) }
                .map_err(|error| WorkerError::Sys { what: "sigaction USR2", errno: errno_of(&error) })?;
        Ok(PauseNudge { eventfd, registration })
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
        signal_hook::low_level::unregister(self.registration);
    }
}

fn errno_of(error: &std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(error.raw_os_error().unwrap_or(libc::EINVAL))
}
