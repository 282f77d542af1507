//! The parent's signals: blocked and read from a signalfd, and given back to each forked worker.

use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::SupervisorError;

/// Every signal the parent handles. All are blocked in the parent and delivered only through
/// the signalfd, so no handler ever runs in the middle of the supervisor's work.
pub(crate) const HANDLED: [Signal; 9] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// What the signalfd delivered: a standard signal, or one of the real-time control signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Received {
    Signal(Signal),
    /// [`prefork_scoreboard::pause_signal`]: pause the pool.
    Pause,
    /// [`prefork_scoreboard::resume_signal`]: resume it.
    Resume,
    /// [`prefork_scoreboard::handover_signal`]: the successor started by an upgrade is ready.
    Handover,
}

/// The blocked signal set and the signalfd that receives it.
pub(crate) struct SignalInbox {
    fd: Option<SignalFd>,
    saved_mask: SigSet,
}

impl SignalInbox {
    /// Blocks [`HANDLED`] in this (single) thread and opens the signalfd.
    ///
    /// Dispositions inherited from whoever started us are reset first: with SIGCHLD ignored,
    /// for one, the kernel would reap workers itself and the supervisor would never see them
    /// die.
    pub(crate) fn open() -> Result<SignalInbox, SupervisorError> {
        let set = handled_set();
        for handled in HANDLED {
            // SAFETY: installing SIG_DFL runs no code of ours in signal context.
            unsafe { signal(handled, SigHandler::SigDfl) }.map_err(|e| sys("reset signal disposition", e))?;
        }
        let saved_mask = set.thread_swap_mask(SigmaskHow::SIG_BLOCK).map_err(|e| sys("block signals", e))?;
        match SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
            Ok(fd) => Ok(SignalInbox { fd: Some(fd), saved_mask }),
            Err(errno) => {
                let _ = saved_mask.thread_set_mask();
                Err(sys("signalfd", errno))
            }
        }
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("signalfd is open in the parent").as_fd()
    }

    /// Every signal waiting in the signalfd, in arrival order.
    pub(crate) fn drain(&self) -> Result<Vec<Received>, SupervisorError> {
        let fd = self.fd.as_ref().expect("signalfd is open in the parent");
        let mut signals = Vec::new();
        loop {
            match fd.read_signal() {
                Ok(Some(info)) => {
                    let number = info.ssi_signo as i32;
                    if number == prefork_scoreboard::pause_signal() {
                        signals.push(Received::Pause);
                    } else if number == prefork_scoreboard::resume_signal() {
                        signals.push(Received::Resume);
                    } else if number == prefork_scoreboard::handover_signal() {
                        signals.push(Received::Handover);
                    } else if let Ok(signal) = Signal::try_from(number) {
                        signals.push(Received::Signal(signal));
                    }
                }
                Ok(None) | Err(Errno::EAGAIN) => return Ok(signals),
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err(sys("read signalfd", errno)),
            }
        }
    }

    /// In a freshly forked worker: closes the signalfd and restores the mask the parent had
    /// before it blocked anything, minus the signals the supervisor uses (a worker must get
    /// its SIGTERM even if whoever started the server had blocked it).
    pub(crate) fn release_in_child(&mut self) {
        drop(self.fd.take());
        let mut mask = self.saved_mask;
        for handled in HANDLED {
            mask.remove(handled);
        }
        let mut raw = *mask.as_ref();
        for control in control_signals() {
            // SAFETY: `raw` is an initialised sigset_t (a copy of a SigSet's).
            unsafe { libc::sigdelset(&mut raw, control) };
        }
        // SAFETY: still initialised.
        let _ = unsafe { SigSet::from_sigset_t_unchecked(raw) }.thread_set_mask();
    }
}

impl Drop for SignalInbox {
    fn drop(&mut self) {
        if self.fd.is_some() {
            let _ = self.saved_mask.thread_set_mask();
        }
    }
}

/// The real-time control signals (which nix's `Signal` cannot name).
fn control_signals() -> [libc::c_int; 3] {
    [prefork_scoreboard::pause_signal(), prefork_scoreboard::resume_signal(), prefork_scoreboard::handover_signal()]
}

/// [`HANDLED`] and the real-time control signals.
fn handled_set() -> SigSet {
    let mut raw = *HANDLED.into_iter().collect::<SigSet>().as_ref();
    for control in control_signals() {
        // SAFETY: `raw` is an initialised sigset_t (a copy of a SigSet's).
        unsafe { libc::sigaddset(&mut raw, control) };
    }
    // SAFETY: still initialised.
    unsafe { SigSet::from_sigset_t_unchecked(raw) }
}

pub(crate) fn sys(what: &'static str, errno: Errno) -> SupervisorError {
    SupervisorError::Sys { what, errno }
}
