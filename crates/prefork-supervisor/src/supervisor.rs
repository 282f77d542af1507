//! The parent process: forks workers, reaps them, carries out the policy, handles signals.
//!
//! Single-threaded and tokio-free by design: it may fork at any moment, and a fork copies only
//! the calling thread. All it does is block in `poll` on a signalfd, with a timeout for the
//! next maintenance round.

use std::io::Write as _;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};
use prefork_scoreboard::clock::monotonic_micros;
use prefork_scoreboard::{Board, Doorbell, Scoreboard, WorkerState};

use crate::SupervisorError;
use crate::children::{ChildRecord, ChildTable};
use crate::config::SupervisorConfig;
use crate::policy::{self, ExitKind, Micros, Notice, PolicyMemory, PoolView, WorkerView};
use crate::signals::{SignalInbox, sys};
use crate::worker::{WorkerContext, WorkerExit, exit_code};

/// How the server stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopReport {
    /// Graceful (TERM/INT) or immediate (QUIT, or a second TERM/INT).
    pub graceful: bool,
    /// Workers still running at `graceful_timeout`, killed with SIGKILL.
    pub killed_at_timeout: usize,
    /// Workers forked over the server's life.
    pub workers_forked: u64,
}

/// After a doorbell-driven round, further rings wait this long: a flood of accepts costs the
/// parent at most a few hundred rounds per second.
const DOORBELL_GAP: Micros = 5_000;

type StartedHook<'a> = Box<dyn FnOnce(&str, &Board) + 'a>;

/// Runs a preforked pool until a stop signal. See the crate docs.
pub struct Supervisor<'a, W> {
    config: SupervisorConfig,
    worker: W,
    on_started: Option<StartedHook<'a>>,
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
        Ok(Supervisor { config, worker, on_started: None, listen_socket: None })
    }

    /// Samples this TCP listening socket's accept queue every maintenance round, into the
    /// scoreboard (`listen_queue`, its maximum, the backlog limit).
    pub fn watch_listen_queue(mut self, socket: BorrowedFd<'a>) -> Self {
        self.listen_socket = Some(socket);
        self
    }

    /// Called once in the parent, after the scoreboard exists and before the first fork.
    pub fn on_started(mut self, hook: impl FnOnce(&str, &Board) + 'a) -> Self {
        self.on_started = Some(Box::new(hook));
        self
    }

    /// Creates the scoreboard, forks `start_servers` workers and supervises them until
    /// SIGTERM/SIGINT (graceful) or SIGQUIT (immediate). Returns after every worker has been
    /// reaped; the scoreboard segment is removed on every way out, errors and panics included.
    ///
    /// Must be called from a single-threaded process (it forks).
    pub fn run(self) -> Result<StopReport, SupervisorError> {
        let signals = SignalInbox::open()?;
        let doorbell = Doorbell::new().map_err(|e| sys("eventfd", Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        let scoreboard = Scoreboard::create(&self.config.scoreboard_prefix, self.config.pool.max_clients)?;
        scoreboard.board().publish_config(&self.config.board_config());
        if let Some(hook) = self.on_started {
            hook(scoreboard.name(), scoreboard.board());
        }
        // A fork copies only the calling thread: with another thread alive (a runtime, a log
        // writer, anything holding a lock) the workers would start from a broken copy.
        if let Some(threads) = thread_count().filter(|n| *n != 1) {
            return Err(SupervisorError::Threaded(threads));
        }
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
            forked: 0,
            recheck_at: None,
            listen_socket: self.listen_socket,
        };
        pool.run()
    }
}

/// Whether a stop lets workers finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopMode {
    Graceful,
    Immediate,
}

/// The running supervisor's state. Dropping it (normal end, error or panic) kills and reaps
/// any remaining worker before the scoreboard it owns is unlinked.
struct Pool<'a, W> {
    config: SupervisorConfig,
    worker: W,
    scoreboard: Scoreboard,
    signals: SignalInbox,
    /// Always `Some` in the parent; a forked worker takes it.
    doorbell: Option<Doorbell>,
    last_doorbell_round: Micros,
    children: ChildTable,
    memory: PolicyMemory,
    parent_pid: u32,
    forked: u64,
    recheck_at: Option<Micros>,
    listen_socket: Option<BorrowedFd<'a>>,
}

impl<W: FnMut(WorkerContext) -> WorkerExit> Pool<'_, W> {
    fn run(&mut self) -> Result<StopReport, SupervisorError> {
        let pool = &self.config.pool;
        tracing::info!(
            scoreboard = self.scoreboard.name(),
            start_servers = pool.start_servers,
            min_spare_servers = pool.min_spare_servers,
            max_spare_servers = pool.max_spare_servers,
            max_clients = pool.max_clients,
            "supervisor started"
        );
        for _ in 0..self.config.pool.start_servers {
            self.fork_worker()?;
        }
        loop {
            self.maintain()?;
            let signals = self.wait_for_signals(self.next_wakeup(), true)?;
            for signal in signals {
                match signal {
                    Signal::SIGTERM | Signal::SIGINT => {
                        tracing::info!(%signal, "graceful stop requested");
                        return self.stop(StopMode::Graceful);
                    }
                    Signal::SIGQUIT => {
                        tracing::info!(%signal, "immediate stop requested");
                        return self.stop(StopMode::Immediate);
                    }
                    Signal::SIGHUP => {
                        let generation = self.scoreboard.board().bump_generation();
                        tracing::info!(
                            generation,
                            "reload: forking a new generation; old workers finish once it is ready"
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
                    Signal::SIGCHLD => {}
                    other => tracing::info!(signal = %other, "signal has no meaning for the supervisor yet; ignored"),
                }
            }
            self.reap(false);
        }
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

    /// When the next maintenance round is due.
    fn next_wakeup(&self) -> Micros {
        let tick = monotonic_micros() + self.config.maintenance_interval.as_micros() as u64;
        self.recheck_at.map_or(tick, |at| at.min(tick))
    }

    /// Blocks until a signal arrives, `deadline` (monotonic µs) passes, or (when
    /// `watch_doorbell`) a worker rings the doorbell, coalescing rings closer than
    /// [`DOORBELL_GAP`].
    fn wait_for_signals(&mut self, deadline: Micros, watch_doorbell: bool) -> Result<Vec<Signal>, SupervisorError> {
        let now = monotonic_micros();
        let doorbell_open_at = self.last_doorbell_round + DOORBELL_GAP;
        let deadline = match (watch_doorbell, now >= doorbell_open_at) {
            // Still inside the coalescing gap: wake when it ends, to look at the doorbell then.
            (true, false) => deadline.min(doorbell_open_at),
            _ => deadline,
        };
        let watch_doorbell = watch_doorbell && now >= doorbell_open_at;
        let wait = Duration::from_micros(deadline.saturating_sub(now));
        // Round up so a wait for 0.4 ms does not become a busy loop of 0 ms polls.
        let millis = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        let doorbell = self.doorbell.as_ref().expect("the parent keeps its doorbell");
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        if watch_doorbell {
            fds.push(PollFd::new(doorbell.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => return Err(sys("poll", errno)),
        }
        let rang = watch_doorbell && fds[1].any().unwrap_or(false);
        if rang {
            doorbell.drain();
            self.last_doorbell_round = monotonic_micros();
        }
        self.signals.drain()
    }

    /// One maintenance round: ask the policy, carry out its decision.
    fn maintain(&mut self) -> Result<(), SupervisorError> {
        let board = self.scoreboard.board();
        if let Some((queued, backlog)) = self.listen_socket.and_then(listen_queue) {
            board.record_listen_queue(queued, backlog);
        }
        let now = monotonic_micros();
        let workers: Vec<WorkerView> = self.children.iter().map(|c| view_of(c, board)).collect();
        let view = PoolView { now, generation: board.generation(), workers: &workers };
        let (decision, memory) = policy::decide(&view, &self.config.pool, &self.memory);
        self.memory = memory;
        self.recheck_at = decision.recheck_at;
        for notice in &decision.notices {
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
            }
        }
        for slot in decision.retire {
            if let Some(child) = self.children.by_slot_mut(slot) {
                child.retiring = true;
                let pid = child.pid;
                tracing::info!(pid = pid.as_raw(), slot, "retiring worker (surplus idle, or old generation)");
                signal_child(pid, Signal::SIGTERM);
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
            self.fork_worker()?;
        }
        Ok(())
    }

    fn fork_worker(&mut self) -> Result<(), SupervisorError> {
        let Some(slot) = self.children.free_slot() else { return Ok(()) };
        let generation = self.scoreboard.board().generation();
        // Buffered output would otherwise be written twice, by the parent and by the child.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // SAFETY: the supervisor is single-threaded (no runtime, no helper thread exists in
        // this process), so the child is a complete copy and may allocate and run normally.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // Whatever happens in the child, it must never unwind into the parent's code
                // (which would run the parent's cleanup in the child) nor return from here.
                let code = catch_unwind(AssertUnwindSafe(|| self.become_worker(slot, generation)))
                    .unwrap_or(exit_code::PANICKED);
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                self.forked += 1;
                self.scoreboard.board().count_fork();
                let record =
                    ChildRecord { pid: child, slot, generation, forked_at: monotonic_micros(), retiring: false };
                self.children.insert(record);
                tracing::debug!(pid = child.as_raw(), slot, generation, "forked worker");
                Ok(())
            }
            Err(errno) => {
                // Out of processes or memory: back off as for a worker that failed to boot.
                tracing::error!(%errno, "fork failed");
                self.memory.worker_exited(ExitKind::BootFailure, monotonic_micros(), &self.config.pool);
                Ok(())
            }
        }
    }

    /// The child side of a fork. Returns the process exit code.
    fn become_worker(&mut self, slot: usize, generation: u64) -> i32 {
        self.signals.release_in_child();
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
        let Some(doorbell) = self.doorbell.take() else { return exit_code::BOOT_FAILED };
        let context = WorkerContext {
            doorbell,
            slot: board.claim_slot(slot, pid, generation),
            board,
            scoreboard_name: self.scoreboard.name().to_owned(),
            generation,
            parent_pid: self.parent_pid,
        };
        let _span = tracing::info_span!("worker", pid, slot).entered();
        match catch_unwind(AssertUnwindSafe(|| (self.worker)(context))) {
            Ok(WorkerExit::Finished) => exit_code::FINISHED,
            Ok(exit @ (WorkerExit::BootFailed(_) | WorkerExit::Failed(_))) => {
                tracing::error!(?exit, "worker ended with an error");
                exit.code()
            }
            Err(_) => exit_code::PANICKED,
        }
    }

    /// Reaps every child that has exited and clears its slot.
    fn reap(&mut self, stopping: bool) {
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
        let Some(record) = self.children.remove(pid) else { return };
        let board = self.scoreboard.board();
        let slot = board.slot_snapshot(record.slot);
        let claimed = slot.pid == pid.as_raw() as u32;
        let last_state = if claimed { slot.state } else { WorkerState::Starting };
        let requests = if claimed { slot.requests_child } else { 0 };
        board.clear_slot(record.slot);

        // A worker that exits, or crashes, before it ever became ready failed to boot. One
        // SIGKILLed meanwhile (an operator, the OOM killer) says nothing about booting.
        let never_ready = last_state == WorkerState::Starting && signal != Some(Signal::SIGKILL);
        let boot_failure = !record.retiring && !stopping && (code == Some(exit_code::BOOT_FAILED) || never_ready);
        let now = monotonic_micros();
        let kind = if boot_failure { ExitKind::BootFailure } else { ExitKind::AfterReady };
        self.memory.worker_exited(kind, now, &self.config.pool);
        board.set_boot_failures(u64::from(self.memory.boot_failures), false);

        let (pid, slot) = (pid.as_raw(), record.slot);
        let expected = record.retiring || stopping;
        match (code, signal) {
            _ if boot_failure => tracing::error!(
                pid,
                slot,
                code,
                signal = signal.map(|s| s.as_str()),
                failures_in_a_row = self.memory.boot_failures,
                retry_in_ms = policy::backoff(self.memory.boot_failures, &self.config.pool) / 1000,
                "worker failed to boot"
            ),
            (Some(exit_code::FINISHED), _) if expected => tracing::debug!(pid, slot, requests, "worker finished"),
            (Some(exit_code::FINISHED), _) => tracing::info!(pid, slot, requests, "worker recycled itself"),
            (_, Some(Signal::SIGKILL | Signal::SIGTERM)) if expected => {
                tracing::debug!(pid, slot, requests, "worker stopped by signal")
            }
            (Some(code), _) => {
                tracing::warn!(pid, slot, code, requests, last_state = %last_state.letter(), "worker exited with an error")
            }
            (None, signal) => tracing::warn!(
                pid,
                slot,
                signal = signal.map(|s| s.as_str()),
                requests,
                last_state = %last_state.letter(),
                "worker died"
            ),
        }
    }

    /// Stops every worker and returns once all are reaped.
    fn stop(&mut self, mode: StopMode) -> Result<StopReport, SupervisorError> {
        let mut report =
            StopReport { graceful: mode == StopMode::Graceful, killed_at_timeout: 0, workers_forked: self.forked };
        if mode == StopMode::Graceful {
            let deadline = monotonic_micros() + self.config.graceful_timeout.as_micros() as u64;
            for child in self.children.iter_mut() {
                child.retiring = true;
                signal_child(child.pid, Signal::SIGTERM);
            }
            tracing::info!(workers = self.children.len(), timeout = ?self.config.graceful_timeout, "waiting for workers to finish");
            self.reap(true);
            while !self.children.is_empty() && monotonic_micros() < deadline {
                let signals = self.wait_for_signals(deadline, false)?;
                if signals.iter().any(|s| matches!(s, Signal::SIGQUIT | Signal::SIGTERM | Signal::SIGINT)) {
                    tracing::warn!("second stop signal: stopping immediately");
                    report.graceful = false;
                    break;
                }
                self.reap(true);
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
        Ok(report)
    }

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
        let pids: Vec<Pid> = self.children.iter().map(|c| c.pid).collect();
        for pid in &pids {
            signal_child(*pid, Signal::SIGKILL);
        }
        for pid in pids {
            let _ = waitpid(pid, None);
        }
    }
}

/// The policy's view of one child, from the parent's table and the child's slot.
fn view_of(child: &ChildRecord, board: &Board) -> WorkerView {
    let slot = board.slot_snapshot(child.slot);
    let claimed = slot.pid == child.pid.as_raw() as u32;
    WorkerView {
        slot: child.slot,
        generation: child.generation,
        // Forked but not yet running: it will come up as Starting.
        state: if claimed { slot.state } else { WorkerState::Starting },
        state_since: if claimed { slot.last_change_micros } else { child.forked_at },
        forked_at: child.forked_at,
        retiring: child.retiring,
    }
}

/// Connections waiting in a TCP listening socket's accept queue, and the queue's limit
/// (Linux reports both through `TCP_INFO` for a socket in LISTEN state). `None` for other
/// sockets.
fn listen_queue(socket: BorrowedFd<'_>) -> Option<(u64, u64)> {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the buffer and its length describe `info`, which outlives the call.
    let rc = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len)
    };
    // TCP_LISTEN in the kernel's tcp_states.h (libc does not export it).
    const TCP_LISTEN: u8 = 10;
    (rc == 0 && info.tcpi_state == TCP_LISTEN).then(|| (u64::from(info.tcpi_unacked), u64::from(info.tcpi_sacked)))
}

/// Threads of this process, from `/proc/self/status`.
fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| line.strip_prefix("Threads:"))?.trim().parse().ok()
}

fn signal_child(pid: Pid, signal: Signal) {
    match kill(pid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(errno) => tracing::warn!(pid = pid.as_raw(), %signal, %errno, "cannot signal worker"),
    }
}
