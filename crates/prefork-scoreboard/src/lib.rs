#![doc = include_str!("../README.md")]

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
mod stop_signal;
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
pub use stop_signal::{StopSignal, stop_requested};

/// Why the scoreboard could not be created, opened or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
