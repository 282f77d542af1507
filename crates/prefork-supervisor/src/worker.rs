//! What a forked worker receives from the supervisor, and the exit codes it reports back.

use std::cell::Cell;
use std::time::Instant;

use prefork_scoreboard::{Board, Doorbell, RecycleLimits, RecycleReason, SlotWriter, WorkerState, usage};

/// Exit codes shared by workers and the supervisor, so the parent can tell why a worker ended.
pub mod exit_code {
    /// Finished normally: stopped on request, or recycled after its request limit.
    pub const FINISHED: i32 = 0;
    /// Failed after it had started serving.
    pub const FAILED: i32 = 1;
    /// Panicked (`EX_SOFTWARE`).
    pub const PANICKED: i32 = 70;
    /// Found its parent gone right after fork (`EX_TEMPFAIL`).
    pub const ORPHANED: i32 = 75;
    /// Could not get ready to serve, for example a failing fork handler (`EX_CONFIG`).
    pub const BOOT_FAILED: i32 = 78;
}

/// Handed to the worker function in each new worker process, after fork.
#[derive(Debug)]
pub struct WorkerContext {
    /// This worker's scoreboard slot, marked `Starting`. The only writer of that slot.
    pub slot: SlotWriter<'static>,
    /// Which slot that is (0-based; the status page's row).
    pub slot_index: usize,
    /// The whole board, for reading (status pages).
    pub board: &'static Board,
    /// The segment's name, for status output.
    pub scoreboard_name: String,
    /// The generation this worker belongs to.
    pub generation: u64,
    /// The supervisor's pid.
    pub parent_pid: u32,
    /// Ring it on leaving idle, so the supervisor can fork spares at once.
    pub doorbell: Doorbell,
    /// When to ask to be replaced (jitter applied). [`WorkerContext::recycling`] checks them:
    /// at the early limit it asks for a replacement (the supervisor forks it and sends this
    /// worker SIGTERM once it is ready), past the hard one it says to leave.
    pub limits: RecycleLimits,
    /// When the worker started (its lifetime limit counts from here).
    pub(crate) born: Instant,
    pub(crate) replacement_asked: Cell<bool>,
}

/// What a worker should do, given its recycling limits (see [`WorkerContext::recycling`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recycling {
    /// Go on serving (perhaps with a replacement asked for already).
    Serve,
    /// Past a limit and its margin: finish what is in hand, take nothing new, and exit.
    Leave(RecycleReason),
}

impl WorkerContext {
    /// Publishes `state` in the slot, and rings the doorbell if this worker just left idle
    /// and the pool is short of spares (the supervisor then forks at once, not at its next
    /// round).
    pub fn set_state(&self, state: WorkerState) {
        if self.slot.set_state(state) {
            self.doorbell.ring();
        }
    }

    /// The worker is ready to serve: `Idle`, and the supervisor is told at once (a reload,
    /// a replacement, a readiness probe wait for ready workers).
    pub fn become_ready(&self) {
        self.slot.set_state(WorkerState::Idle);
        self.doorbell.ring();
    }

    /// Where this worker stands, having answered `requests` and accepted `connections`.
    /// Samples its CPU time and memory into its slot (the status page shows them; the memory
    /// limit reads them), asks once for a replacement at the early limit, and says
    /// [`Recycling::Leave`] past the hard one. Call it between requests.
    pub fn recycling(&self, requests: u64, connections: u64) -> Recycling {
        self.slot.record_usage(usage::cpu_micros(), usage::rss_bytes());
        let (age, rss) = (self.born.elapsed(), self.slot.rss_bytes());
        if !self.replacement_asked.get() && self.limits.early().reached(requests, connections, age, rss).is_some() {
            self.replacement_asked.set(true);
            self.slot.request_retirement();
            self.doorbell.ring();
        }
        match self.limits.hard().reached(requests, connections, age, rss) {
            Some(reason) => Recycling::Leave(reason),
            None => Recycling::Serve,
        }
    }
}

/// How a worker function ended; becomes the process exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerExit {
    /// Stopped on request, or recycled.
    Finished,
    /// Never became ready (its slot never left `Starting`); the supervisor backs off.
    BootFailed(String),
    /// Failed while serving.
    Failed(String),
}

impl WorkerExit {
    /// The process exit code for this outcome.
    pub fn code(&self) -> i32 {
        match self {
            WorkerExit::Finished => exit_code::FINISHED,
            WorkerExit::BootFailed(_) => exit_code::BOOT_FAILED,
            WorkerExit::Failed(_) => exit_code::FAILED,
        }
    }
}
