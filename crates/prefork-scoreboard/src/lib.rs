#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod board;
pub mod clock;
mod control_request;
mod doorbell;
mod layout;
mod limits;
mod record;
#[cfg(feature = "report")]
pub mod report;
mod segment;
mod seqlock;
mod slot_fields;
mod snapshot;
mod state;
mod stop_signal;
pub mod usage;

pub use board::{Board, BoardConfig, FinishedRequest, ParkingWriter, RequestStart, SlotFlags, SlotWriter};
pub use control_request::ControlRequest;
pub use doorbell::Doorbell;
pub use layout::{
    BOOT_ERROR_BYTES, CLIENT_BYTES, LAYOUT_VERSION, MAX_SLOTS, PROTOCOL_BYTES, REQUEST_LINE_BYTES, VHOST_BYTES,
    segment_size,
};
pub use limits::{RecycleLimits, RecycleReason};
pub use record::{RequestInfo, RequestRecord, Text};
#[cfg(feature = "report")]
pub use report::StatusReport;
pub use segment::{
    AttachedScoreboard, DEFAULT_PREFIX, SHM_DIR, Scoreboard, is_segment_live, remove_stale_segments, segment_name,
    shm_path,
};
pub use snapshot::{HeaderSnapshot, SlotSnapshot, Snapshot, Totals};
pub use state::WorkerState;
pub use stop_signal::{StopSignal, handover_signal, pause_signal, resume_signal, stop_requested};
// How this workspace's workers wake an eventfd from a signal: internal, not part of the API.
#[doc(hidden)]
pub use stop_signal::wake_eventfd_on;

/// Why the scoreboard could not be created, opened or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreboardError {
    /// The segment name prefix is empty, too long or has a character other than letters,
    /// digits, `-`, `_` and `.`.
    #[error("invalid scoreboard name prefix {0:?}: use 1 to 200 letters, digits, '-', '_' or '.'")]
    BadPrefix(String),
    /// The slot count (`max_clients`) is 0 or above [`MAX_SLOTS`].
    #[error("a scoreboard needs 1 to {max} slots (max_clients), not {0}", max = MAX_SLOTS)]
    SlotCount(usize),
    // The cause is the error's source, not part of its message: chains ({:#}) print it once.
    /// Creating or mapping the shared memory segment failed.
    #[error("shared memory segment {name}")]
    Shmem {
        /// The segment's OS name.
        name: String,
        /// What the shared memory library reported.
        #[source]
        source: shared_memory::ShmemError,
    },
    /// A file operation on the segment failed.
    #[error("scoreboard segment {name}")]
    Io {
        /// The segment's name.
        name: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The named segment belongs to a server that is still running.
    #[error("scoreboard segment {0} is in use by a running server")]
    InUse(String),
    /// The segment is not a scoreboard this build can read: not a shared memory segment, too
    /// short, or with another magic, layout version or header/slot size.
    #[error("scoreboard layout: {0}")]
    Layout(String),
}
