//! What a forked worker receives from the supervisor, and the exit codes it reports back.

use prefork_scoreboard::{Board, Doorbell, RecycleLimits, SlotWriter};

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
    /// When to ask to be replaced (jitter applied): check them, and call
    /// [`SlotWriter::request_retirement`] when one is reached; the supervisor then forks a
    /// replacement and sends SIGTERM once it is ready.
    pub limits: RecycleLimits,
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
