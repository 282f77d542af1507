//! Apache-style scoreboard for a preforking server, in named POSIX shared memory.
//!
//! The parent creates one segment per server instance ([`Scoreboard::create`]) before it forks;
//! it holds a header (configuration in force, totals, what the parent saw) and one 512-byte
//! slot per possible worker (state, counters per request, connection, process and slot, CPU
//! and memory samples, and the current request's line, client, protocol and virtual host). Each slot is written only by
//! the worker that owns it ([`Board::claim_slot`] returns the single [`SlotWriter`]), and
//! reset by the parent after it has reaped that worker ([`Board::clear_slot`]). Every field is
//! an atomic, so readers take a [`Snapshot`] without locking, and a worker killed at any
//! instant cannot wedge or corrupt anyone else's view; the multi-field request record is
//! published under a per-slot sequence counter, so it is never read torn either. No cross-process lock is used; the
//! only lock is an `flock` that marks the segment as in use, which the kernel releases when
//! the last process of the server dies.
//!
//! Besides the board, workers can wake the parent through a [`Doorbell`] (an eventfd shared
//! across the fork) when they stop being idle, so pool control reacts in milliseconds.
//!
//! ```no_run
//! use prefork_scoreboard::{Scoreboard, WorkerState};
//! let scoreboard = Scoreboard::create("my-server", 16)?;          // in the parent
//! let slot = scoreboard.board().claim_slot(0, std::process::id(), 1); // in worker 0
//! slot.set_state(WorkerState::Idle);
//! println!("{}", scoreboard.board().snapshot().scoreboard_string()); // "_..............."
//! # Ok::<(), prefork_scoreboard::ScoreboardError>(())
//! ```

mod board;
pub mod clock;
mod doorbell;
mod layout;
mod limits;
mod record;
pub mod report;
mod segment;
mod seqlock;
mod snapshot;
mod state;
pub mod usage;

pub use board::{Board, BoardConfig, FinishedRequest, ParkingWriter, RequestStart, SlotFlags, SlotWriter};
pub use doorbell::Doorbell;
pub use layout::{
    BOOT_ERROR_BYTES, CLIENT_BYTES, LAYOUT_VERSION, MAX_SLOTS, PROTOCOL_BYTES, REQUEST_LINE_BYTES, VHOST_BYTES,
    segment_size,
};
pub use limits::{RecycleLimits, RecycleReason};
pub use record::{RequestInfo, RequestRecord, Text};
pub use report::StatusReport;
pub use segment::{
    AttachedScoreboard, DEFAULT_PREFIX, SHM_DIR, Scoreboard, is_segment_live, remove_stale_segments, segment_name,
    shm_path,
};
pub use snapshot::{HeaderSnapshot, SlotSnapshot, Snapshot, Totals};
pub use state::WorkerState;

/// Why the scoreboard could not be created, opened or read.
#[derive(Debug, thiserror::Error)]
pub enum ScoreboardError {
    #[error("invalid scoreboard name prefix {0:?}: use 1 to 200 letters, digits, '-', '_' or '.'")]
    BadPrefix(String),
    #[error("a scoreboard needs 1 to {max} slots (max_clients), not {0}", max = MAX_SLOTS)]
    SlotCount(usize),
    // The cause is the error's source, not part of its message: chains ({:#}) print it once.
    #[error("shared memory segment {name}")]
    Shmem {
        name: String,
        #[source]
        source: shared_memory::ShmemError,
    },
    #[error("scoreboard segment {name}")]
    Io {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("scoreboard segment {0} is in use by a running server")]
    InUse(String),
    #[error("scoreboard layout: {0}")]
    Layout(String),
}
