//! How a worker learns it must stop: SIGTERM sets a flag and wakes an eventfd.
//!
//! The eventfd is both in the worker's accept epoll (so a worker waiting for a connection
//! wakes at once, with no lost-wakeup race between checking the flag and waiting) and
//! watched by the runtime while a connection is served (so the request in hand is finished
//! and keep-alive ends).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::SeqCst};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::WorkerError;

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigterm(_: libc::c_int) {
    STOP_REQUESTED.store(true, SeqCst);
    let fd = WAKE_FD.load(SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) on an eventfd is async-signal-safe; the buffer is a live local.
        unsafe { libc::write(fd, (&raw const one).cast(), size_of::<u64>()) };
    }
}

/// SIGTERM has arrived in this process.
pub(crate) fn stop_requested() -> bool {
    STOP_REQUESTED.load(SeqCst)
}

/// The worker's stop request. One per worker process.
#[derive(Debug)]
pub(crate) struct StopSignal {
    eventfd: EventFd,
}

impl StopSignal {
    /// Installs the SIGTERM handler. SIGINT, SIGHUP and SIGQUIT are ignored: a terminal sends
    /// them to the whole process group, and the supervisor, which gets them too, decides what
    /// happens to its workers (as Apache's children ignore SIGINT).
    pub(crate) fn install() -> Result<StopSignal, WorkerError> {
        let eventfd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| WorkerError::Sys { what: "eventfd", errno: e })?;
        WAKE_FD.store(eventfd.as_fd().as_raw_fd(), SeqCst);
        let term = SigAction::new(SigHandler::Handler(on_sigterm), SaFlags::SA_RESTART, SigSet::empty());
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: the handler only touches atomics and calls write(2), both async-signal-safe.
        unsafe {
            sigaction(Signal::SIGTERM, &term).map_err(|e| WorkerError::Sys { what: "sigaction TERM", errno: e })?;
            for signal in [Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT] {
                sigaction(signal, &ignore).map_err(|e| WorkerError::Sys { what: "sigaction", errno: e })?;
            }
        }
        Ok(StopSignal { eventfd })
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }

    /// A runtime handle on the eventfd (create inside the runtime).
    pub(crate) fn watch(&self) -> std::io::Result<StopWatch<'_>> {
        // SAFETY: the BorrowedFd keeps the eventfd (owned by `self`) open and unchanged for as
        // long as the returned watch exists.
        let fd = unsafe { AsyncFd::register_with_interest(self.eventfd.as_fd(), Interest::READABLE) }?;
        Ok(StopWatch { fd })
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        // The handler must never write to a descriptor number reused after this one closes.
        WAKE_FD.store(-1, SeqCst);
    }
}

/// Waits for the stop request inside the worker's runtime.
#[derive(Debug)]
pub(crate) struct StopWatch<'a> {
    fd: AsyncFd<BorrowedFd<'a>>,
}

impl StopWatch<'_> {
    /// Resolves once SIGTERM has arrived (at once if it already has).
    pub(crate) async fn requested(&self) {
        loop {
            if STOP_REQUESTED.load(SeqCst) {
                return;
            }
            match self.fd.readable().await {
                // The eventfd is never read: once signalled it stays readable, so keep the
                // readiness and let the flag check above return.
                Ok(_guard) => continue,
                Err(_) => std::future::pending::<()>().await,
            }
        }
    }
}
