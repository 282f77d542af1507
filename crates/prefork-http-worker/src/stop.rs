//! How an HTTP worker learns it must stop: the scoreboard crate's [`StopSignal`] (SIGTERM sets
//! a flag and wakes an eventfd), watched by the runtime too.
//!
//! The eventfd is both in the worker's accept epoll (so a worker waiting for a connection
//! wakes at once) and watched by the runtime while a connection is served (so the request in
//! hand is finished and keep-alive ends).

use std::os::fd::BorrowedFd;

pub(crate) use prefork_scoreboard::{StopSignal, stop_requested};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Installs the worker's stop signal (see [`StopSignal::install`]).
pub(crate) fn install() -> Result<StopSignal, crate::WorkerError> {
    StopSignal::install().map_err(|source| crate::WorkerError::Io { what: "install the SIGTERM handler", source })
}

/// A runtime handle on the stop eventfd (create inside the runtime).
pub(crate) fn watch(stop: &StopSignal) -> std::io::Result<StopWatch<'_>> {
    // SAFETY: the BorrowedFd keeps the eventfd (owned by `stop`) open and unchanged for as
    // long as the returned watch exists.
    let fd = unsafe { AsyncFd::register_with_interest(stop.as_fd(), Interest::READABLE) }?;
    Ok(StopWatch { fd })
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
            if stop_requested() {
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
