//! The supervisor's public face: configure it, give it the worker function, run it.

use std::os::fd::BorrowedFd;

use prefork_scoreboard::{Board, Doorbell, Scoreboard};

use crate::SupervisorError;
use crate::children::ChildTable;
use crate::config::SupervisorConfig;
use crate::policy::PolicyMemory;
use crate::pool::Pool;
use crate::probes::thread_count;
use crate::service_manager::ServiceManager;
use crate::signals::{SignalInbox, sys};
use crate::upgrade::UpgradeState;
use crate::worker::{WorkerContext, WorkerExit};

/// How the server stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopReport {
    /// Graceful (TERM/INT) or immediate (QUIT, or a second TERM/INT).
    pub graceful: bool,
    /// Workers still running at `graceful_timeout`, killed with SIGKILL.
    pub killed_at_timeout: usize,
    /// Workers forked over the server's life.
    pub workers_forked: u64,
    /// The server handed over to its successor (a binary upgrade): the listening socket is
    /// the successor's now (a unix socket's file stays).
    pub handed_over: bool,
}

pub(crate) type StartedHook<'a> = Box<dyn FnOnce(&str, &Board) + 'a>;
pub(crate) type ReopenLogsHook<'a> = Box<dyn FnMut() + 'a>;
/// Returns the settings the pool runs with from the reload on, if they change.
pub(crate) type ReloadHook<'a> = Box<dyn FnMut(u64) -> Result<Option<SupervisorConfig>, String> + 'a>;

/// How to start a successor, and what to undo if it fails (see [`Supervisor::on_upgrade`]).
pub(crate) struct UpgradeHooks<'a> {
    pub(crate) start: Box<dyn FnMut() -> Result<u32, String> + 'a>,
    pub(crate) failed: Box<dyn FnMut(&str) + 'a>,
}

/// Runs a preforked pool until a stop signal. See the crate docs.
pub struct Supervisor<'a, W> {
    config: SupervisorConfig,
    worker: W,
    on_started: Option<StartedHook<'a>>,
    on_reopen_logs: Option<ReopenLogsHook<'a>>,
    on_reload: Option<ReloadHook<'a>>,
    upgrade_hooks: Option<UpgradeHooks<'a>>,
    predecessor: Option<u32>,
    listen_socket: Option<BorrowedFd<'a>>,
}

impl<W> std::fmt::Debug for Supervisor<'_, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<'a, W: FnMut(WorkerContext) -> WorkerExit> Supervisor<'a, W> {
    /// A supervisor that runs `worker` in each forked worker process. `worker` runs after the
    /// fork, in the child only, and its return value becomes the child's exit code.
    pub fn new(config: SupervisorConfig, worker: W) -> Result<Self, SupervisorError> {
        config.validate()?;
        Ok(Supervisor {
            config,
            worker,
            on_started: None,
            on_reopen_logs: None,
            on_reload: None,
            upgrade_hooks: None,
            predecessor: None,
            listen_socket: None,
        })
    }

    /// Called once in the parent, after the scoreboard exists and before the first fork.
    pub fn on_started(mut self, hook: impl FnOnce(&str, &Board) + 'a) -> Self {
        self.on_started = Some(Box::new(hook));
        self
    }

    /// Called in the parent on SIGUSR1 (which is also forwarded to every worker): reopen log
    /// files after rotation.
    pub fn on_reopen_logs(mut self, hook: impl FnMut() + 'a) -> Self {
        self.on_reopen_logs = Some(Box::new(hook));
        self
    }

    /// Called in the parent on SIGHUP with the number the new generation will have, before
    /// it is forked: state the worker function picks by `WorkerContext::generation` (new
    /// handlers, say) reaches every worker of the new generation, while the old one, and any
    /// worker forked for it later (a replacement, or all of them if the reload is abandoned
    /// because the new workers cannot boot), keeps its own. An error abandons the reload
    /// (logged with its text): the old generation serves on.
    pub fn on_reload(mut self, mut hook: impl FnMut(u64) -> Result<(), String> + 'a) -> Self {
        self.on_reload = Some(Box::new(move |generation| hook(generation).map(|()| None)));
        self
    }

    /// As [`on_reload`](Self::on_reload), the hook also giving the settings the supervisor
    /// runs with from this reload on (a configuration file read again, say), or `None` to keep
    /// them. They are checked as at start; what a running pool cannot change (`max_clients`,
    /// the scoreboard's size, and `scoreboard_prefix`) keeps its value and is logged as
    /// needing a restart. Settings that fail the check abandon the reload.
    pub fn on_reload_with_config(
        mut self,
        hook: impl FnMut(u64) -> Result<Option<SupervisorConfig>, String> + 'a,
    ) -> Self {
        self.on_reload = Some(Box::new(hook));
        self
    }

    /// A binary upgrade without downtime on SIGUSR2 (unicorn's and nginx's): `start` starts
    /// the successor, a process that serves the same listening socket (the hook hands it over:
    /// the supervisor knows nothing of sockets), and returns its pid; the successor calls
    /// [`take_over_from`](Self::take_over_from) with this supervisor's pid. Once the
    /// successor's first generation is ready, it sends the handover signal
    /// (`prefork_scoreboard::handover_signal`) and this supervisor retires every worker
    /// gracefully (without the whole-server stop, so their idle connections move to the
    /// successor's workers through a shared hand-off queue) and returns with
    /// [`StopReport::handed_over`]. If the successor exits first, `failed` is called with how it
    /// ended (to undo what `start` did, such as renaming a pid file), and this supervisor serves
    /// on. Without this hook USR2 is logged and ignored.
    pub fn on_upgrade(
        mut self,
        start: impl FnMut() -> Result<u32, String> + 'a,
        failed: impl FnMut(&str) + 'a,
    ) -> Self {
        self.upgrade_hooks = Some(UpgradeHooks { start: Box::new(start), failed: Box::new(failed) });
        self
    }

    /// This supervisor is the successor of the one running as `predecessor` (see
    /// [`on_upgrade`](Self::on_upgrade)): once its first generation is ready, it tells it to
    /// hand over.
    pub fn take_over_from(mut self, predecessor: u32) -> Self {
        self.predecessor = Some(predecessor);
        self
    }

    /// Samples this TCP listening socket's accept queue every maintenance round, into the
    /// scoreboard (`listen_queue`, its maximum, the backlog limit).
    pub fn watch_listen_queue(mut self, socket: BorrowedFd<'a>) -> Self {
        self.listen_socket = Some(socket);
        self
    }

    /// Creates the scoreboard, forks `start_servers` workers and supervises them until
    /// SIGTERM/SIGINT (graceful) or SIGQUIT (immediate). Returns after every worker has been
    /// reaped; the scoreboard segment is removed on every way out, errors and panics included.
    ///
    /// Must be called from a single-threaded process (it forks): it refuses to start otherwise.
    pub fn run(self) -> Result<StopReport, SupervisorError> {
        // A fork copies only the calling thread: with another thread alive (a runtime, a log
        // writer, anything holding a lock) the workers would start from a broken copy. Checked
        // before anything is set up (signal dispositions, the segment), so that a refusal
        // leaves the process as it was, and again after the hook, which may start a thread.
        let single_threaded = || match thread_count().filter(|n| *n != 1) {
            Some(threads) => Err(SupervisorError::Threaded(threads)),
            None => Ok(()),
        };
        single_threaded()?;
        let signals = SignalInbox::open()?;
        let doorbell =
            Doorbell::new().map_err(|e| sys("eventfd", nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        let scoreboard = Scoreboard::create(&self.config.scoreboard_prefix, self.config.pool.max_clients)?;
        scoreboard.board().publish_config(&self.config.board_config());
        if let Some(hook) = self.on_started {
            hook(scoreboard.name(), scoreboard.board());
        }
        single_threaded()?;
        let mut pool = Pool {
            children: ChildTable::new(self.config.pool.max_clients),
            config: self.config,
            worker: self.worker,
            scoreboard,
            signals,
            doorbell: Some(doorbell),
            last_doorbell_round: 0,
            memory: PolicyMemory::default(),
            parent_pid: std::process::id(),
            recheck_at: None,
            idle_drift: None,
            woken_by_doorbell: false,
            doorbell_muted_until: 0,
            listen_socket: self.listen_socket,
            on_reopen_logs: self.on_reopen_logs,
            on_reload: self.on_reload,
            upgrade_hooks: self.upgrade_hooks,
            upgrade: UpgradeState {
                predecessor: self.predecessor.map(|pid| nix::unistd::Pid::from_raw(pid as i32)),
                ..UpgradeState::default()
            },
            drain_until: None,
            ready: false,
            service_manager: ServiceManager::from_env(self.predecessor),
        };
        // The supervisor's lines say which process wrote them (unless the caller's span says
        // it already); each worker's span (pid, slot, generation) follows it, through the fork.
        let span = match tracing::Span::current().is_none() {
            true => tracing::info_span!("supervisor", pid = pool.parent_pid),
            false => tracing::Span::none(),
        };
        span.in_scope(|| pool.run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_threaded_process_is_refused_before_anything_is_set_up() {
        // The test harness runs tests on threads; one more makes sure, whatever its settings.
        let (stop, parked) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::spawn(move || parked.recv());
        let supervisor = Supervisor::new(SupervisorConfig::default(), |_| WorkerExit::Finished).unwrap();
        let result = supervisor.run();
        drop(stop);
        let _ = helper.join();
        assert!(matches!(result, Err(SupervisorError::Threaded(n)) if n >= 2), "{result:?}");
    }
}
