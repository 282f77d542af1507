//! How a worker learns it must stop: the supervisor's SIGTERM sets a flag and wakes an eventfd.
//!
//! The supervisor asks a worker to finish (a graceful stop, a reload, a retirement) with
//! SIGTERM. A worker puts the eventfd in whatever it waits on (its accept `epoll` or `poll`, a
//! runtime's reactor), so a worker waiting for work wakes at once, with no lost-wakeup race
//! between checking the flag and waiting; a worker busy with a request checks
//! [`stop_requested`] when it is done. It lives beside the [`Doorbell`](crate::Doorbell), the
//! line the other way (worker to parent), so that any worker, HTTP or not, gets both from
//! this crate.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::SeqCst};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigterm(_: libc::c_int) {
    STOP_REQUESTED.store(true, SeqCst);
    wake(WAKE_FD.load(SeqCst));
}

/// From a signal handler: adds one to the eventfd `fd` (if any), keeping `errno` as the
/// interrupted code had it.
pub(crate) fn wake(fd: libc::c_int) {
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

/// The signal that pauses a pool (SimpleHTTP's STOPLISTEN): a real-time signal, which no
/// terminal, shell or service manager sends on its own (unlike WINCH or CONT).
pub fn pause_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

/// The signal that resumes a paused pool (STARTLISTEN): see [`pause_signal`].
pub fn resume_signal() -> libc::c_int {
    libc::SIGRTMIN() + 5
}

/// The signal a successor supervisor (a binary upgrade: see `prefork_supervisor`'s
/// `on_upgrade`) sends the supervisor that started it once its own first generation is ready:
/// this one then retires its workers, whose idle connections move to the successor's, and
/// exits. A real-time signal: nothing else sends it.
pub fn handover_signal() -> libc::c_int {
    libc::SIGRTMIN() + 6
}

/// SIGTERM has arrived in this process (since [`StopSignal::install`]).
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(SeqCst)
}

/// A worker's stop request: one per worker process, installed after the fork.
///
/// ```no_run
/// use prefork_scoreboard::{StopSignal, stop_requested};
/// let stop = StopSignal::install()?;
/// // poll(2) on `stop.as_fd()` together with the listening socket ...
/// while !stop_requested() {
///     // ... serve ...
/// #   break;
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct StopSignal {
    eventfd: EventFd,
}

impl StopSignal {
    /// Installs the SIGTERM handler. SIGINT, SIGHUP and SIGQUIT are ignored: a terminal sends
    /// them to the whole process group, and the supervisor, which gets them too, decides what
    /// happens to its workers (as Apache's children ignore SIGINT).
    pub fn install() -> io::Result<StopSignal> {
        let eventfd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        WAKE_FD.store(eventfd.as_fd().as_raw_fd(), SeqCst);
        let term = SigAction::new(SigHandler::Handler(on_sigterm), SaFlags::SA_RESTART, SigSet::empty());
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: the handler only touches atomics and calls write(2), both async-signal-safe.
        unsafe {
            sigaction(Signal::SIGTERM, &term)?;
            for signal in [Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT] {
                sigaction(signal, &ignore)?;
            }
        }
        Ok(StopSignal { eventfd })
    }

    /// The eventfd: readable once SIGTERM has arrived, and from then on (it is never read).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        // The handler must never write to a descriptor number reused after this one closes;
        // but a newer signal's descriptor is not this one's to clear.
        let _ = WAKE_FD.compare_exchange(self.eventfd.as_fd().as_raw_fd(), -1, SeqCst, SeqCst);
    }
}
