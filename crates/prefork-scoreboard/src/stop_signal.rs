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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use signal_hook::SigId;

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Runs `wake_eventfd(fd)` on `signal`, in the handler that signal-hook installs (it keeps
/// `errno` for the interrupted code, and chains to any handler installed before). Undone by
/// [`signal_hook::low_level::unregister`] with the id returned, before `fd` closes.
///
/// # Safety
///
/// `fd` must stay an open eventfd until the action is unregistered; `also` must be
/// async-signal-safe.
pub unsafe fn wake_eventfd_on(signal: libc::c_int, fd: RawFd, also: fn()) -> io::Result<SigId> {
    // SAFETY: the action stores to atomics (`also`, per the contract) and calls write(2) on an
    // eventfd that outlives the registration (the caller's contract): async-signal-safe.
    unsafe {
        signal_hook::low_level::register(signal, move || {
            also();
            let one = 1u64.to_ne_bytes();
            libc::write(fd, one.as_ptr().cast(), one.len());
        })
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
    registration: SigId,
}

impl StopSignal {
    /// Installs the SIGTERM handler. SIGINT, SIGHUP and SIGQUIT are ignored: a terminal sends
    /// them to the whole process group, and the supervisor, which gets them too, decides what
    /// happens to its workers (as Apache's children ignore SIGINT).
    pub fn install() -> io::Result<StopSignal> {
        let eventfd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        // SAFETY: the eventfd is this value's, which unregisters the action when dropped, before
        // the descriptor closes; the extra action stores to an atomic.
        let registration = unsafe {
            wake_eventfd_on(libc::SIGTERM, eventfd.as_fd().as_raw_fd(), || STOP_REQUESTED.store(true, SeqCst))?
        };
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: ignoring a signal installs no code.
        unsafe {
            for signal in [Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT] {
                sigaction(signal, &ignore)?;
            }
        }
        Ok(StopSignal { eventfd, registration })
    }

    /// The eventfd: readable once SIGTERM has arrived, and from then on (it is never read).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        // The handler must never write to a descriptor number reused after this one closes.
        signal_hook::low_level::unregister(self.registration);
    }
}
