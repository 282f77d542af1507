//! Forking a worker, and everything the child does before it runs the worker function.

use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};

use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, fork, getpid, getppid};
use prefork_scoreboard::RecycleLimits;
use prefork_scoreboard::clock::monotonic_micros;

use crate::SupervisorError;
use crate::children::ChildRecord;
use crate::policy::ExitKind;
use crate::pool::Pool;
use crate::worker::{WorkerContext, WorkerExit, exit_code};

impl<W: FnMut(WorkerContext) -> WorkerExit> Pool<'_, W> {
    /// Forks one worker of the current generation into the lowest free slot. False if none
    /// was forked (no free slot, or fork failed): forking more this round would fail too.
    pub(crate) fn fork_worker(&mut self) -> Result<bool, SupervisorError> {
        let Some(slot) = self.children.free_slot() else { return Ok(false) };
        let generation = self.scoreboard.board().generation();
        // Chosen here, in the parent, so jitter differs between workers.
        let limits = self.config.recycle.limits_for_worker(|| fastrand::u64(..));
        // Buffered output would otherwise be written twice, by the parent and by the child.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // SAFETY: the supervisor is single-threaded (checked before the first fork: no runtime,
        // no helper thread exists in this process), so the child is a complete copy and may
        // allocate and run normally.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // Whatever happens in the child, it must never unwind into the parent's code
                // (which would run the parent's cleanup in the child) nor return from here.
                let code = catch_unwind(AssertUnwindSafe(|| self.become_worker(slot, generation, limits)))
                    .unwrap_or(exit_code::PANICKED);
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                self.scoreboard.board().count_fork();
                let record = ChildRecord {
                    pid: child,
                    slot,
                    generation,
                    forked_at: monotonic_micros(),
                    retiring: false,
                    stuck_since: None,
                };
                self.children.insert(record);
                tracing::debug!(pid = child.as_raw(), slot, generation, "forked worker");
                Ok(true)
            }
            Err(errno) => {
                // Out of processes or memory: back off as for a worker that failed to boot.
                tracing::error!(%errno, "fork failed");
                self.scoreboard.board().publish_boot_error(&format!("fork failed: {errno}"));
                self.memory.worker_exited(
                    ExitKind::BootFailure,
                    generation,
                    monotonic_micros(),
                    &self.config.pool,
                    fastrand::f64(),
                );
                Ok(false)
            }
        }
    }

    /// The child side of a fork. Returns the process exit code.
    fn become_worker(&mut self, slot: usize, generation: u64, limits: RecycleLimits) -> i32 {
        // The supervisor forwards SIGUSR1 (reopen logs) to every worker; its default action
        // would kill a worker that does not handle it. A terminal sends SIGINT, SIGHUP and
        // SIGQUIT to the whole process group: the supervisor decides what they mean for its
        // workers. All ignored before the mask is restored: one sent since the fork is pending,
        // and would be delivered at once (the worker installs its own handling later).
        // SIGUSR2 is the supervisor's nudge (the pool was paused or resumed).
        let ignored = [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT];
        for signal in ignored {
            // SAFETY: installing SIG_IGN runs no code of ours in signal context.
            let _ = unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigIgn) };
        }
        self.signals.release_in_child();
        // The service manager's variables are the supervisor's: a worker (or a program it
        // runs) must not speak for the service, nor take its sockets.
        for name in ["NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            // SAFETY: right after the fork this process has one thread: nothing reads the
            // environment concurrently.
            unsafe { std::env::remove_var(name) };
        }
        // Die with the parent, even if it is SIGKILLed; then close the race where the parent
        // died before prctl took effect.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        if getppid().as_raw() as u32 != self.parent_pid {
            return exit_code::ORPHANED;
        }
        // SAFETY: this process ends with std::process::exit in fork_worker and never drops
        // or moves the Scoreboard.
        let board = unsafe { self.scoreboard.worker_board() };
        let pid = getpid().as_raw() as u32;
        let doorbell = self.doorbell.take().expect("the parent keeps its doorbell until it forks");
        let context = WorkerContext {
            doorbell,
            slot: board.claim_slot(slot, pid, generation),
            slot_index: slot,
            board,
            scoreboard_name: self.scoreboard.name().to_owned(),
            generation,
            parent_pid: self.parent_pid,
            limits,
            born: std::time::Instant::now(),
            replacement_asked: std::cell::Cell::new(false),
        };
        // Every line the worker logs (any thread it runs the span in too) says who it is: its
        // own span, not inside the supervisor's (whose pid would read as the writer's).
        let _span = tracing::info_span!(parent: None, "worker", pid, slot, generation).entered();
        match catch_unwind(AssertUnwindSafe(|| (self.worker)(context))) {
            Ok(WorkerExit::Finished) => exit_code::FINISHED,
            Ok(WorkerExit::BootFailed(cause)) => {
                // For the parent, which reads it from the slot after reaping this process.
                board.publish_note(slot, &cause);
                tracing::error!(%cause, "worker could not get ready");
                exit_code::BOOT_FAILED
            }
            Ok(exit @ WorkerExit::Failed(_)) => {
                tracing::error!(?exit, "worker ended with an error");
                exit.code()
            }
            Err(_) => {
                board.publish_note(slot, "panicked while starting or serving");
                exit_code::PANICKED
            }
        }
    }
}
