//! Control from a handler's own code: which worker this is (SimpleHTTP/PreFork's ISCHILD), and
//! stopping the server or retiring this worker (its SHUTDOWN, parent-side and child-side).
//!
//! A worker learns who it is once, right after the fork ([`enter_worker`], done by whoever
//! forks: the `simplehttp-prefork` facade does it before the fork handlers run); in the parent,
//! and in any process that is not a worker, [`worker_info`] is `None` and the controls are an
//! error, as in the Perl module.

use std::cell::RefCell;
use std::rc::Weak;
use std::sync::OnceLock;

use prefork_scoreboard::ControlRequest;

use crate::shared::WorkerShared;

/// Who this worker is. Fork handlers get it as their argument, handlers through
/// [`RequestContext::worker`](crate::RequestContext::worker), anyone through [`worker_info`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its scoreboard slot (the status page's row).
    pub slot: usize,
    /// The generation it belongs to (a reload starts the next).
    pub generation: u64,
    /// The supervisor's pid.
    pub parent_pid: u32,
    /// This process's pid.
    pub pid: u32,
    /// Always true for a worker (SimpleHTTP/PreFork's ISCHILD): there is no `WorkerInfo` in
    /// the parent.
    pub is_child: bool,
}

static WORKER: OnceLock<WorkerInfo> = OnceLock::new();

thread_local! {
    /// The serving worker's state, for [`retire_this_worker`].
    static SERVING: RefCell<Weak<WorkerShared>> = const { RefCell::new(Weak::new()) };
}

/// Records who this process is, right after the fork and before any user code runs in it.
/// Once per process: later calls keep the first.
pub fn enter_worker(info: WorkerInfo) {
    let _ = WORKER.set(info);
}

/// This worker, or `None` in the parent (or any process that is not a worker).
pub fn worker_info() -> Option<WorkerInfo> {
    WORKER.get().cloned()
}

/// How [`shutdown_server`] stops the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// As SIGTERM to the supervisor: every worker finishes its request (after the drain
    /// delay, if one is set).
    Graceful,
    /// As SIGQUIT: every worker is killed at once.
    Immediate,
}

/// Why a control call could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Called outside a worker process.
    #[error("not in a worker process: the server is controlled from its workers' code (or by signals)")]
    NotAWorker,
    /// Called from a worker that is still running its fork handlers.
    #[error("this worker is not serving yet (it is running its fork handlers)")]
    NotServing,
    /// The signal to the supervisor could not be sent.
    #[error("signalling the supervisor (pid {pid})")]
    Signal {
        /// The supervisor's pid.
        pid: u32,
        /// The error `kill` returned.
        #[source]
        source: std::io::Error,
    },
}

/// Stops the whole server, as TERM (graceful) or QUIT (immediate) sent to the supervisor would
/// (SimpleHTTP's SHUTDOWN posted to the server). From a handler or a fork handler; the request
/// in hand is answered in a graceful stop. A worker that runs as another user than the
/// supervisor (`--user`) may not signal it, and asks through the scoreboard instead: from a
/// handler only (a fork handler there gets the `Signal` error).
pub fn shutdown_server(how: Shutdown) -> Result<(), ControlError> {
    match how {
        Shutdown::Graceful => ask_supervisor(libc::SIGTERM, ControlRequest::GracefulStop),
        Shutdown::Immediate => ask_supervisor(libc::SIGQUIT, ControlRequest::ImmediateStop),
    }
}

/// Pauses the whole pool (SimpleHTTP's STOPLISTEN), as the pause signal
/// ([`prefork_scoreboard::pause_signal`]) sent to the supervisor would: no
/// worker takes a new connection (they wait in the listen queue, none refused), connections
/// already taken are served; readiness probes answer `503`.
pub fn pause_server() -> Result<(), ControlError> {
    ask_supervisor(prefork_scoreboard::pause_signal(), ControlRequest::Pause)
}

/// Resumes a paused pool (SimpleHTTP's STARTLISTEN), as the resume signal sent to the
/// supervisor would: the
/// connections that waited are taken.
pub fn resume_server() -> Result<(), ControlError> {
    ask_supervisor(prefork_scoreboard::resume_signal(), ControlRequest::Resume)
}

/// Signals the supervisor; a worker that may not (it dropped its privileges, and the
/// supervisor runs as root: `EPERM`) asks through the scoreboard instead, which a serving
/// worker can always do.
fn ask_supervisor(signal: libc::c_int, request: ControlRequest) -> Result<(), ControlError> {
    let pid = WORKER.get().ok_or(ControlError::NotAWorker)?.parent_pid;
    // SAFETY: kill(2) with a pid and a signal number; no memory is involved.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    let serving = SERVING.with(|serving| serving.borrow().upgrade());
    match (error.raw_os_error(), serving) {
        (Some(libc::EPERM), Some(worker)) => {
            worker.ask_supervisor(request);
            Ok(())
        }
        _ => Err(ControlError::Signal { pid, source: error }),
    }
}

/// Retires this worker (SimpleHTTP/PreFork's SHUTDOWN in a child): it answers the request in
/// hand (its connection closes after the response, or moves to a sibling), takes nothing new,
/// and exits; the supervisor forks its replacement at once. From a handler.
pub fn retire_this_worker() -> Result<(), ControlError> {
    if WORKER.get().is_none() {
        return Err(ControlError::NotAWorker);
    }
    let worker = SERVING.with(|serving| serving.borrow().upgrade()).ok_or(ControlError::NotServing)?;
    worker.retire_now();
    Ok(())
}

/// The worker serves from now on (its state for [`retire_this_worker`]).
pub(crate) fn serving(worker: &std::rc::Rc<WorkerShared>) {
    SERVING.with(|serving| *serving.borrow_mut() = std::rc::Rc::downgrade(worker));
}
