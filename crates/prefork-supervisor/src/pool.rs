//! The running supervisor: wait for signals and wake-ups, reap, ask the policy, carry it out.
//!
//! Single-threaded and tokio-free by design: it may fork at any moment, and a fork copies only
//! the calling thread. All it does is block in `poll` on a signalfd and the doorbell, with a
//! timeout for the next maintenance round.

use std::os::fd::{AsFd as _, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use prefork_scoreboard::clock::monotonic_micros;
use prefork_scoreboard::{Board, ControlRequest, Doorbell, Scoreboard, SlotSnapshot, WorkerState};

use crate::SupervisorError;
use crate::children::{ChildRecord, ChildTable};
use crate::config::SupervisorConfig;
use crate::policy::{self, ExitKind, Micros, Notice, PolicyMemory, PoolView, WorkerView};
use crate::probes::listen_queue;
use crate::service_manager::ServiceManager;
use crate::signals::{Received, SignalInbox, sys};
use crate::supervisor::{ReloadHook, ReopenLogsHook, StopReport, UpgradeHooks};
use crate::upgrade::UpgradeState;
use crate::worker::{WorkerContext, WorkerExit, exit_code};

/// After a doorbell-driven round, further rings wait this long: a flood of accepts costs the
/// parent at most a few hundred rounds per second.
const DOORBELL_GAP: Micros = 5_000;

/// Whether a stop lets workers finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopMode {
    Graceful,
    Immediate,
    /// Graceful, for a successor that serves the same socket: workers pass their idle
    /// connections on instead of closing them.
    Handover,
}

/// The running supervisor's state. Dropping it (normal end, error or panic) kills and reaps
/// any remaining worker before the scoreboard it owns is unlinked.
pub(crate) struct Pool<'a, W> {
    pub(crate) config: SupervisorConfig,
    pub(crate) worker: W,
    pub(crate) scoreboard: Scoreboard,
    pub(crate) signals: SignalInbox,
    /// Always `Some` in the parent; a forked worker takes it.
    pub(crate) doorbell: Option<Doorbell>,
    pub(crate) last_doorbell_round: Micros,
    pub(crate) children: ChildTable,
    pub(crate) memory: PolicyMemory,
    pub(crate) parent_pid: u32,
    pub(crate) recheck_at: Option<Micros>,
    /// The idle count's difference from the slots' flags at the last round (see
    /// `check_idle_count`).
    pub(crate) idle_drift: Option<i64>,
    /// The last wake-up came from the doorbell.
    pub(crate) woken_by_doorbell: bool,
    /// Until then, only an empty pool rings (see `maintain`).
    pub(crate) doorbell_muted_until: Micros,
    pub(crate) listen_socket: Option<BorrowedFd<'a>>,
    pub(crate) on_reopen_logs: Option<ReopenLogsHook<'a>>,
    pub(crate) on_reload: Option<ReloadHook<'a>>,
    pub(crate) upgrade_hooks: Option<UpgradeHooks<'a>>,
    pub(crate) upgrade: UpgradeState,
    /// A stop was asked for with a drain delay: the graceful stop begins at this moment.
    pub(crate) drain_until: Option<Micros>,
    /// The scoreboard says the server is ready (a generation has been).
    pub(crate) ready: bool,
    /// systemd's notify protocol (silent without `NOTIFY_SOCKET`).
    pub(crate) service_manager: ServiceManager,
}

impl<W: FnMut(WorkerContext) -> WorkerExit> Pool<'_, W> {
    pub(crate) fn run(&mut self) -> Result<StopReport, SupervisorError> {
        let pool = &self.config.pool;
        tracing::info!(
            scoreboard = self.scoreboard.name(),
            start_servers = pool.start_servers,
            min_spare_servers = pool.min_spare_servers,
            max_spare_servers = pool.max_spare_servers,
            max_clients = pool.max_clients,
            spawn_ramp = ?pool.spawn_ramp,
            "supervisor started"
        );
        for _ in 0..self.config.pool.start_servers {
            if !self.fork_worker()? {
                break;
            }
        }
        loop {
            self.maintain()?;
            // A binary upgrade's successor whose workers cannot boot leaves: the server it was
            // to succeed serves on (and logs that this one ended).
            if self.upgrade.predecessor.is_some()
                && self.memory.boot_failures >= self.config.pool.max_reload_boot_failures
            {
                tracing::error!(
                    boot_failures = self.memory.boot_failures,
                    "upgrade: this server's workers cannot boot; leaving the previous server in service"
                );
                return Err(SupervisorError::SuccessorCannotBoot(self.memory.boot_failures));
            }
            let mut signals = self.wait_for_signals(self.next_wakeup(), true)?;
            signals.extend(self.scoreboard.board().take_control_requests().into_iter().map(|request| {
                tracing::info!(?request, "a worker asked the supervisor");
                match request {
                    ControlRequest::Pause => Received::Pause,
                    ControlRequest::Resume => Received::Resume,
                    ControlRequest::GracefulStop => Received::Signal(Signal::SIGTERM),
                    ControlRequest::ImmediateStop => Received::Signal(Signal::SIGQUIT),
                }
            }));
            for received in signals {
                let signal = match received {
                    Received::Pause => {
                        self.set_paused(true);
                        continue;
                    }
                    Received::Resume => {
                        self.set_paused(false);
                        continue;
                    }
                    Received::Handover => match self.upgrade.successor {
                        Some(successor) if !self.upgrade.handing_over => {
                            tracing::info!(
                                successor = successor.as_raw(),
                                "upgrade: the new server is ready; handing over"
                            );
                            self.upgrade.handing_over = true;
                            self.service_manager.handed_over(successor.as_raw() as u32);
                            match self.stop_or_abort(StopMode::Handover)? {
                                Some(report) => return Ok(report),
                                // The successor ended meanwhile: serve on (the policy forks
                                // the pool again as the retiring workers leave).
                                None => continue,
                            }
                        }
                        _ => {
                            tracing::warn!("handover signal with no upgrade under way; ignored");
                            continue;
                        }
                    },
                    Received::Signal(signal) => signal,
                };
                match signal {
                    Signal::SIGTERM | Signal::SIGINT => {
                        let delay = self.config.drain_delay;
                        if delay.is_zero() || self.drain_until.is_some() {
                            tracing::info!(%signal, "graceful stop requested");
                            return self.stop(StopMode::Graceful);
                        }
                        // Not ready from now on, serving as before, so that load balancers
                        // take this server out of rotation before it stops.
                        self.scoreboard.board().set_draining();
                        self.service_manager.stopping();
                        self.drain_until = Some(monotonic_micros() + delay.as_micros() as u64);
                        tracing::info!(
                            %signal,
                            drain_delay = ?delay,
                            "stop requested: draining (readiness probes fail, everything is served) before the graceful stop; a second TERM or INT stops now"
                        );
                    }
                    Signal::SIGQUIT => {
                        tracing::info!(%signal, "immediate stop requested");
                        return self.stop(StopMode::Immediate);
                    }
                    Signal::SIGHUP => {
                        self.service_manager.reloading();
                        let next = self.scoreboard.board().next_generation();
                        let reloaded = match self.on_reload.as_mut().map(|hook| hook(next)) {
                            Some(Ok(Some(config))) => self.reconfigure(config),
                            Some(Ok(None)) | None => Ok(()),
                            Some(Err(error)) => Err(error),
                        };
                        if let Err(error) = reloaded {
                            tracing::error!(%error, "reload abandoned: its hook failed; the workers serve on as they are");
                            self.scoreboard.board().count_reload_failure();
                            self.service_manager.reload_over(format!("reload abandoned: {error}"));
                            continue;
                        }
                        let generation = self.scoreboard.board().bump_generation();
                        tracing::info!(
                            generation,
                            "reload: forking a new generation; the old one finishes once it is ready"
                        );
                    }
                    Signal::SIGTTIN => {
                        self.config.pool.raise_spares();
                        self.spares_changed("TTIN");
                    }
                    Signal::SIGTTOU => {
                        self.config.pool.lower_spares();
                        self.spares_changed("TTOU");
                    }
                    Signal::SIGUSR1 => self.reopen_logs(),
                    Signal::SIGUSR2 => self.start_upgrade(),
                    Signal::SIGCHLD => {}
                    other => tracing::info!(signal = %other, "signal has no meaning for the supervisor; ignored"),
                }
            }
            self.reap(false);
            if self.drain_until.is_some_and(|until| monotonic_micros() >= until) {
                tracing::info!("drain delay over: graceful stop");
                return self.stop(StopMode::Graceful);
            }
        }
    }

    /// Runs with `config` from now on (a reload's): what a running pool cannot change keeps
    /// its value, logged as needing a restart; settings that fail the checks change nothing.
    fn reconfigure(&mut self, mut config: SupervisorConfig) -> Result<(), String> {
        let running = &self.config;
        let mut need_restart = Vec::new();
        if config.pool.max_clients != running.pool.max_clients {
            need_restart.push((
                "max_clients",
                config.pool.max_clients.to_string(),
                running.pool.max_clients.to_string(),
            ));
            config.pool.max_clients = running.pool.max_clients;
        }
        if config.scoreboard_prefix != running.scoreboard_prefix {
            need_restart.push((
                "scoreboard_prefix",
                config.scoreboard_prefix.clone(),
                running.scoreboard_prefix.clone(),
            ));
            config.scoreboard_prefix = running.scoreboard_prefix.clone();
        }
        config.validate().map_err(|error| format!("the new settings: {error}"))?;
        for (setting, wanted, kept) in need_restart {
            tracing::warn!(
                setting,
                wanted,
                kept,
                "reload: this setting changes only with a restart; the running value stays"
            );
        }
        if config != self.config {
            tracing::info!(settings = ?config, "reload: the supervisor's settings changed");
            self.config = config;
            self.scoreboard.board().publish_config(&self.config.board_config());
        }
        Ok(())
    }

    fn spares_changed(&self, signal: &str) {
        self.scoreboard.board().publish_config(&self.config.board_config());
        let pool = &self.config.pool;
        tracing::info!(
            signal,
            min_spare_servers = pool.min_spare_servers,
            max_spare_servers = pool.max_spare_servers,
            "spare bounds changed"
        );
    }

    /// The pause signal pauses the pool (SimpleHTTP's STOPLISTEN: workers take no new
    /// connection, which wait in the listen queue; the socket stays open), the resume signal
    /// resumes it (STARTLISTEN); see `prefork_scoreboard::pause_signal`. Every
    /// worker is nudged (SIGUSR2) to look at the scoreboard's bit; a worker forked meanwhile
    /// reads it as it starts.
    fn set_paused(&mut self, paused: bool) {
        let board = self.scoreboard.board();
        if board.is_paused() == paused {
            return;
        }
        board.set_paused(paused);
        for child in self.children.iter() {
            signal_child(child.pid, Signal::SIGUSR2);
        }
        if paused {
            tracing::info!(
                workers = self.children.len(),
                "paused: no new connection is taken (they wait in the listen queue)"
            );
        } else {
            tracing::info!(workers = self.children.len(), "resumed: connections are taken again");
        }
    }

    /// USR1: the parent reopens its logs, and every worker is told to do the same.
    fn reopen_logs(&mut self) {
        if let Some(hook) = self.on_reopen_logs.as_mut() {
            hook();
        }
        for child in self.children.iter() {
            signal_child(child.pid, Signal::SIGUSR1);
        }
        tracing::info!(workers = self.children.len(), "USR1: log files reopened");
    }

    /// When the next maintenance round is due.
    fn next_wakeup(&self) -> Micros {
        let tick = monotonic_micros() + self.config.maintenance_interval.as_micros() as u64;
        [self.recheck_at, self.drain_until, self.service_manager.next_watchdog()]
            .into_iter()
            .flatten()
            .fold(tick, Micros::min)
    }

    /// Blocks until a signal arrives, `deadline` (monotonic µs) passes, or (when
    /// `watch_doorbell`) a worker rings the doorbell. Rings closer than [`DOORBELL_GAP`] to the
    /// last round are coalesced: inside the gap the doorbell is not watched, and once the gap
    /// is over the wait goes on, the doorbell watched again, so that one round answers them all.
    fn wait_for_signals(&mut self, deadline: Micros, watch_doorbell: bool) -> Result<Vec<Received>, SupervisorError> {
        let doorbell = self.doorbell.as_ref().expect("the parent keeps its doorbell");
        loop {
            let now = monotonic_micros();
            let doorbell_open_at = self.last_doorbell_round + DOORBELL_GAP;
            let watching = watch_doorbell && now >= doorbell_open_at;
            // Still inside the coalescing gap: wake when it ends, to watch the doorbell then.
            let wake_at = if watch_doorbell && !watching { deadline.min(doorbell_open_at) } else { deadline };
            let wait = Duration::from_micros(wake_at.saturating_sub(now));
            // Round up so a wait for 0.4 ms does not become a busy loop of 0 ms polls.
            let millis = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
            let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            if watching {
                fds.push(PollFd::new(doorbell.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(errno) => return Err(sys("poll", errno)),
            }
            let rang = watching && fds[1].any().unwrap_or(false);
            if rang {
                doorbell.drain();
                self.last_doorbell_round = monotonic_micros();
                self.woken_by_doorbell = true;
            }
            let signals = self.signals.drain()?;
            if rang || !signals.is_empty() || monotonic_micros() >= deadline {
                return Ok(signals);
            }
        }
    }

    /// One maintenance round: ask the policy, carry out its decision.
    fn maintain(&mut self) -> Result<(), SupervisorError> {
        self.check_upgrade_deadline(monotonic_micros());
        self.check_idle_count();
        let board = self.scoreboard.board();
        board.count_parent_round();
        if let Some((queued, backlog)) = self.listen_socket.and_then(listen_queue) {
            board.record_listen_queue(queued, backlog);
        }
        let now = monotonic_micros();
        let workers: Vec<WorkerView> = self.children.iter().map(|c| view_of(c, board)).collect();
        let view = PoolView { now, generation: board.generation(), workers: &workers };
        let generation_ready = policy::generation_ready(&view, &self.config.pool);
        if !self.ready && generation_ready {
            self.ready = true;
            board.set_ready();
            tracing::info!(generation = view.generation, "ready: readiness probes answer 200");
            self.service_manager.ready(pool_status(&view, board));
        } else if self.service_manager.is_reloading() && generation_ready {
            self.service_manager.reload_over(pool_status(&view, board));
        }
        if self.upgrade.predecessor.is_some() {
            let serving = workers
                .iter()
                .filter(|w| w.generation == view.generation && !w.retiring)
                .filter(|w| w.state != WorkerState::Starting && w.state != WorkerState::Dead)
                .count();
            if self.ready && serving >= self.config.pool.start_servers {
                self.upgrade.tell_predecessor();
            }
        }
        let (decision, memory) = policy::decide(&view, &self.config.pool, &self.memory);
        self.memory = memory;
        // A ring that finds nothing to do was a dip of a moment (the pool hovers at its
        // minimum of idle workers): until the next tick, only an empty pool rings, so that a
        // steady load does not keep the parent awake; a real burst still empties it.
        let futile = decision.spawn == 0
            && decision.retire.is_empty()
            && decision.stuck_kill.is_empty()
            && decision.revert_generation.is_none();
        if std::mem::take(&mut self.woken_by_doorbell) && futile {
            self.doorbell_muted_until = now + self.config.maintenance_interval.as_micros() as u64;
        }
        self.recheck_at = decision.recheck_at;
        // The board first: whoever reads a notice in the log finds the state it announces.
        board.set_boot_failures(u64::from(self.memory.boot_failures), self.memory.halted);
        for notice in &decision.notices {
            self.report(notice);
        }
        if let Some(generation) = decision.revert_generation {
            board.set_generation(generation);
            board.count_reload_failure();
            if self.service_manager.is_reloading() {
                self.service_manager.reload_over(format!("reload failed: generation {generation} serves on"));
            }
        }
        for (slot, reason) in decision.retire {
            if let Some(child) = self.children.by_slot_mut(slot) {
                child.retiring = true;
                tracing::info!(pid = child.pid.as_raw(), slot, reason = reason.describe(), "retiring worker");
                signal_child(child.pid, Signal::SIGTERM);
            }
        }
        for slot in decision.stuck_kill {
            let request = board.slot_snapshot(slot);
            // (The policy kills a stuck worker once: it skips those with `stuck_since`.)
            if let Some(child) = self.children.by_slot_mut(slot) {
                child.retiring = true;
                child.stuck_since = Some(now);
                log_stuck(child, &request, now);
                signal_child(child.pid, Signal::SIGKILL);
                board.count_stuck_kill();
            }
        }
        if decision.spawn >= 8 {
            tracing::info!(
                spawning = decision.spawn,
                processes = self.children.len(),
                "pool is busy: forking a batch of workers"
            );
        }
        for _ in 0..decision.spawn {
            if !self.fork_worker()? {
                break;
            }
        }
        // Workers wake the parent only when the pool runs short of idle workers, and only
        // while it could fork more: a steady load leaves it asleep.
        let can_fork = self.children.len() < self.config.pool.max_clients && !self.memory.halted;
        let ring_below = match (can_fork, monotonic_micros() < self.doorbell_muted_until) {
            (false, _) => 0,
            (true, true) => 1,
            (true, false) => self.config.pool.min_spare_servers as u64,
        };
        self.scoreboard.board().set_ring_below(ring_below);
        let board = self.scoreboard.board();
        let view = PoolView { now, generation: board.generation(), workers: &workers };
        self.service_manager.round(|| pool_status(&view, board));
        Ok(())
    }

    /// The workers keep the pool's idle count themselves; one killed between its two writes
    /// leaves it off by one. A difference from the slots' own flags that lasts two rounds is
    /// not a transition in progress: put it right.
    fn check_idle_count(&mut self) {
        let board = self.scoreboard.board();
        let drift = board.idle_flags() as i64 - board.idle_workers() as i64;
        if drift != 0 && self.idle_drift == Some(drift) {
            tracing::debug!(drift, "idle worker count repaired");
            board.repair_idle_count(drift);
            self.idle_drift = None;
        } else {
            self.idle_drift = (drift != 0).then_some(drift);
        }
    }

    fn report(&self, notice: &Notice) {
        let board = self.scoreboard.board();
        match notice {
            Notice::MaxClientsReached { processes, idle } => {
                board.count_max_clients_reached();
                tracing::warn!(
                    processes,
                    idle,
                    max_clients = self.config.pool.max_clients,
                    "server reached max_clients: no more workers can be forked; consider raising max_clients"
                )
            }
            Notice::BootBackoff { failures, wait_micros } => {
                tracing::debug!(failures, wait_ms = wait_micros / 1000, "spawning waits for boot-failure backoff")
            }
            Notice::SpawningHalted { failures } => tracing::error!(
                failures,
                last_cause = %board.header_snapshot().last_boot_error,
                probe_every = ?self.config.pool.boot_backoff_max,
                "workers keep failing to boot: forking halted; serving with the workers that run, \
                 and trying one new worker now and then"
            ),
            Notice::SpawningResumed => tracing::info!("a worker booted again: forking resumes"),
            Notice::ReloadFailed { abandoned, current, failures } => tracing::error!(
                abandoned_generation = abandoned,
                generation = current,
                failures,
                last_cause = %board.header_snapshot().last_boot_error,
                "reload failed: the new workers could not boot; the old generation keeps serving"
            ),
            // Logged with the request when the worker is signalled.
            Notice::Stuck { .. } => {}
        }
    }

    /// Reaps every child that has exited and clears its slot.
    pub(crate) fn reap(&mut self, stopping: bool) {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.child_exited(pid, Some(code), None, stopping),
                Ok(WaitStatus::Signaled(pid, signal, _core)) => self.child_exited(pid, None, Some(signal), stopping),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(errno) => {
                    tracing::error!(%errno, "waitpid failed");
                    return;
                }
            }
        }
    }

    fn child_exited(&mut self, pid: Pid, code: Option<i32>, signal: Option<Signal>, stopping: bool) {
        if self.successor_exited(pid, code, signal) {
            return;
        }
        let Some(record) = self.children.remove(pid) else { return };
        let board = self.scoreboard.board();
        let slot = board.slot_snapshot(record.slot);
        let claimed = slot.pid == pid.as_raw() as u32;
        let last_state = if claimed { slot.state } else { WorkerState::Starting };
        let requests = if claimed { slot.requests_child } else { 0 };
        // A worker that exits, or crashes, before it ever became ready failed to boot. One
        // SIGKILLed meanwhile (an operator, the OOM killer) says nothing about booting.
        let never_ready = last_state == WorkerState::Starting && signal != Some(Signal::SIGKILL);
        // So did one that failed without having served anything (out of descriptors, say):
        // its replacement would fail the same way, and re-forking at once would loop.
        let failed_unused = code.is_some_and(|code| code != exit_code::FINISHED)
            && (!claimed || (slot.requests_child == 0 && slot.connections == 0));
        let boot_failure =
            !record.retiring && !stopping && (code == Some(exit_code::BOOT_FAILED) || never_ready || failed_unused);
        let mut cause = match (code, signal) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!("killed by {signal}"),
            (None, None) => "ended".to_owned(),
        };
        if boot_failure {
            // The worker leaves its reason in its slot before exiting (see spawn.rs).
            let note = slot.request.filter(|_| claimed).map(|r| r.line().to_string_lossy().into_owned());
            if let Some(note) = note.filter(|n| !n.is_empty()) {
                cause = format!("{note} ({cause})");
            }
            board.publish_boot_error(&cause);
        }
        board.clear_slot(record.slot);
        let kind = if boot_failure { ExitKind::BootFailure } else { ExitKind::AfterReady };
        self.memory.worker_exited(kind, record.generation, monotonic_micros(), &self.config.pool, fastrand::f64());
        board.set_boot_failures(u64::from(self.memory.boot_failures), self.memory.halted);

        let (pid, slot) = (pid.as_raw(), record.slot);
        let expected = record.retiring || stopping;
        match (code, signal) {
            _ if boot_failure => tracing::error!(
                pid,
                slot,
                %cause,
                failures_in_a_row = self.memory.boot_failures,
                retry_in_ms = self.memory.spawn_not_before.saturating_sub(monotonic_micros()) / 1000,
                "worker failed to boot"
            ),
            (Some(exit_code::FINISHED), _) if expected => tracing::debug!(pid, slot, requests, "worker finished"),
            (Some(exit_code::FINISHED), _) => tracing::info!(pid, slot, requests, "worker exited on its own"),
            (_, Some(Signal::SIGKILL | Signal::SIGTERM)) if expected => {
                tracing::debug!(pid, slot, requests, "worker stopped by signal")
            }
            (Some(code), _) => {
                tracing::warn!(pid, slot, code, requests, last_state = %last_state.letter(), "worker exited with an error")
            }
            (None, _) => tracing::warn!(pid, slot, %cause, requests, last_state = %last_state.letter(), "worker died"),
        }
    }

    /// Stops every worker and returns once all are reaped.
    fn stop(&mut self, mode: StopMode) -> Result<StopReport, SupervisorError> {
        Ok(self.stop_or_abort(mode)?.expect("only a handover is abandoned"))
    }

    /// As [`stop`](Self::stop); a handover is abandoned (`None`) if the successor ends first.
    fn stop_or_abort(&mut self, mode: StopMode) -> Result<Option<StopReport>, SupervisorError> {
        // Workers close the connections they hold between requests rather than pass them to
        // a sibling that is stopping too; handing over, they pass them to the successor's.
        if mode != StopMode::Handover {
            self.scoreboard.board().set_server_stopping();
            self.service_manager.stopping();
        }
        let workers_forked = self.scoreboard.board().header_snapshot().workers_forked;
        // A successor serves the socket: the one handed over to, or one still starting.
        let handed_over = mode == StopMode::Handover || self.upgrade.successor.is_some();
        let mut report =
            StopReport { graceful: mode != StopMode::Immediate, killed_at_timeout: 0, workers_forked, handed_over };
        if mode != StopMode::Immediate {
            let deadline = monotonic_micros() + self.config.graceful_timeout.as_micros() as u64;
            for child in self.children.iter_mut() {
                child.retiring = true;
                signal_child(child.pid, Signal::SIGTERM);
            }
            tracing::info!(workers = self.children.len(), timeout = ?self.config.graceful_timeout, "waiting for workers to finish");
            self.reap(true);
            while !self.children.is_empty() && monotonic_micros() < deadline {
                let wake_at = self.service_manager.next_watchdog().map_or(deadline, |due| due.min(deadline));
                let signals = self.wait_for_signals(wake_at, false)?;
                self.service_manager.feed_watchdog_if_due();
                // Handing over, this server stops anyway: only QUIT hurries it.
                let stop = |s: &Received| match mode {
                    StopMode::Handover => matches!(s, Received::Signal(Signal::SIGQUIT)),
                    _ => matches!(s, Received::Signal(Signal::SIGQUIT | Signal::SIGTERM | Signal::SIGINT)),
                };
                // A worker's stop request counts as a second signal too (they are looked at
                // at each wake-up: a child's exit, a signal, the watchdog, the deadline).
                let asked = self.scoreboard.board().take_control_requests();
                let asked_to_stop =
                    asked.iter().any(|r| matches!(r, ControlRequest::GracefulStop | ControlRequest::ImmediateStop));
                if signals.iter().any(stop) || asked_to_stop {
                    tracing::warn!("second stop signal: stopping immediately");
                    report.graceful = false;
                    break;
                }
                self.reap(true);
                if mode == StopMode::Handover && !self.upgrade.handing_over {
                    return Ok(None); // the successor ended (see `successor_exited`)
                }
            }
            if report.graceful && !self.children.is_empty() {
                report.killed_at_timeout = self.children.len();
                tracing::warn!(
                    workers = self.children.len(),
                    "graceful_timeout passed: killing the workers still busy"
                );
            }
        }
        self.kill_all();
        tracing::info!(graceful = report.graceful, "all workers stopped");
        Ok(Some(report))
    }
}

impl<W> Pool<'_, W> {
    /// SIGKILLs and reaps every remaining child (blocking: SIGKILL cannot be refused).
    fn kill_all(&mut self) {
        let pids: Vec<Pid> = self.children.iter().map(|c| c.pid).collect();
        for pid in &pids {
            signal_child(*pid, Signal::SIGKILL);
        }
        for pid in pids {
            loop {
                match waitpid(pid, None) {
                    Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => break,
                    Ok(_) | Err(Errno::EINTR) => continue,
                    Err(errno) => {
                        tracing::error!(%errno, pid = pid.as_raw(), "waitpid failed");
                        break;
                    }
                }
            }
            if let Some(record) = self.children.remove(pid) {
                self.scoreboard.board().clear_slot(record.slot);
            }
        }
    }
}

impl<W> Drop for Pool<'_, W> {
    fn drop(&mut self) {
        // Normal stops have emptied the table already; this is the error/panic path. Never
        // leave workers serving without a parent, and reap them before the segment goes.
        self.kill_all();
    }
}

/// The pool in a line, for the service manager's status (`systemctl status`).
/// The current generation's workers are counted by state, the others (finishing after a
/// reload) together.
fn pool_status(view: &PoolView<'_>, board: &Board) -> String {
    let current = || view.workers.iter().filter(|w| w.generation == view.generation && w.state != WorkerState::Dead);
    let count = |state: WorkerState| current().filter(|w| w.state == state).count();
    let (idle, starting) = (count(WorkerState::Idle), count(WorkerState::Starting));
    let busy = current().count() - idle - starting;
    let older = view.workers.iter().filter(|w| w.generation != view.generation).count();
    let mut status = format!("generation {}: {idle} idle, {busy} busy, {starting} starting", view.generation);
    if older > 0 {
        status.push_str(&format!("; {older} of older generations finishing"));
    }
    if board.is_paused() {
        status.push_str("; paused");
    }
    status
}

/// The policy's view of one child, from the parent's table and the child's slot.
fn view_of(child: &ChildRecord, board: &Board) -> WorkerView {
    let slot = board.slot_counters(child.slot);
    let claimed = slot.pid == child.pid.as_raw() as u32;
    WorkerView {
        slot: child.slot,
        generation: child.generation,
        // Forked but not yet running: it will come up as Starting.
        state: if claimed { slot.state } else { WorkerState::Starting },
        state_since: if claimed { slot.last_change_micros } else { child.forked_at },
        forked_at: child.forked_at,
        retiring: child.retiring,
        retire_requested: claimed && slot.retire_requested(),
        request_started: (claimed && slot.oldest_in_flight_micros != 0).then_some(slot.oldest_in_flight_micros),
        stuck_since: child.stuck_since,
    }
}

/// Where it is stuck, for the operator (gunicorn's "WORKER TIMEOUT" says nothing of that).
fn log_stuck(child: &ChildRecord, slot: &SlotSnapshot, now: Micros) {
    let request = slot.request;
    tracing::error!(
        pid = child.pid.as_raw(),
        slot = child.slot,
        request = %request.map(|r| r.line().to_string_lossy().into_owned()).unwrap_or_default(),
        client = %request.map(|r| r.client().to_string_lossy().into_owned()).unwrap_or_default(),
        running_s = request.map_or(0.0, |r| now.saturating_sub(r.started_micros()) as f64 / 1e6),
        "request ran past request_timeout and its grace (a blocking handler): killing the worker"
    );
}

pub(crate) fn signal_child(pid: Pid, signal: Signal) {
    match kill(pid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(errno) => tracing::warn!(pid = pid.as_raw(), %signal, %errno, "cannot signal worker"),
    }
}
