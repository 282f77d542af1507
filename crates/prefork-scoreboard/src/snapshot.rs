//! Plain copies of the board taken without locking, and the counts derived from them.

use crate::WorkerState;
use crate::board::{BoardConfig, SlotFlags};
use crate::record::RequestRecord;

/// The header fields at the moment of a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderSnapshot {
    /// The supervisor's pid.
    pub parent_pid: u32,
    /// The current worker generation (bumped by each graceful reload).
    pub generation: u64,
    /// Slots in the segment.
    pub slot_count: usize,
    /// When the server started (Unix epoch µs).
    pub start_unix_micros: u64,
    /// When the server started (`CLOCK_MONOTONIC` µs).
    pub start_monotonic_micros: u64,
    /// The configuration in force.
    pub config: BoardConfig,
    /// Workers forked since the server started.
    pub workers_forked: u64,
    /// Times a needed fork was refused because `max_clients` workers were running.
    pub max_clients_reached: u64,
    /// Connections waiting in the listen queue at the last sample.
    pub listen_queue: u64,
    /// The most connections ever seen waiting in the listen queue.
    pub listen_queue_max: u64,
    /// The listen queue's limit (the backlog).
    pub listen_backlog: u64,
    /// Workers killed because a request ran past `request_timeout`.
    pub stuck_kills: u64,
    /// Workers that failed to boot, in a row (0 once one boots).
    pub boot_failures: u64,
    /// The parent has stopped forking because workers keep failing to boot.
    pub spawning_halted: bool,
    /// Graceful reloads started.
    pub reloads: u64,
    /// Reloads that did not complete.
    pub reload_failures: u64,
    /// Why the last worker failed to boot (empty if none has).
    pub last_boot_error: String,
    /// The workers' own count of idle workers.
    pub idle_workers: u64,
    /// Workers taking a connection ring the parent when fewer than this are left idle.
    pub ring_below: u64,
    /// Maintenance rounds the parent has run (its wake-ups).
    pub parent_rounds: u64,
    /// The whole server is stopping.
    pub server_stopping: bool,
    /// A generation has been ready (readiness probes answer 200 unless `draining`).
    pub ready: bool,
    /// The server drains before it stops, or stops (readiness probes answer 503).
    pub draining: bool,
    /// The pool is paused: workers take no new connection (readiness probes answer 503).
    pub paused: bool,
}

/// Defines [`SlotSnapshot`] from the table in [`crate::slot_fields`].
macro_rules! define_slot_snapshot {
    (
        before { $( $(#[doc = $before_doc:literal])* $before:ident : $before_reset:ident ; )* }
        after { $( $(#[doc = $after_doc:literal])* $after:ident : $after_reset:ident ; )* }
    ) => {
        /// One slot at the moment of a snapshot. `Copy`, with fixed-size texts: taking a
        /// snapshot allocates nothing per slot.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct SlotSnapshot {
            /// The slot's position on the board.
            pub index: usize,
            /// 0 when the slot is empty.
            pub pid: u32,
            /// What the worker is doing.
            pub state: WorkerState,
            /// [`SlotFlags`] bits.
            pub flags: u8,
            $( $(#[doc = $before_doc])* pub $before: u64, )*
            $( $(#[doc = $after_doc])* pub $after: u64, )*
            /// The current or last request, if any was published since the slot was cleared.
            pub request: Option<RequestRecord>,
            /// The request record was being rewritten on every read attempt (or its writer
            /// died mid-update and has not been reaped yet).
            pub request_unreadable: bool,
        }

        impl SlotSnapshot {
            /// An empty slot.
            pub const EMPTY: SlotSnapshot = SlotSnapshot {
                index: 0,
                pid: 0,
                state: WorkerState::Dead,
                flags: 0,
                $( $before: 0, )*
                $( $after: 0, )*
                request: None,
                request_unreadable: false,
            };
        }
    };
}

crate::slot_fields::slot_fields!(define_slot_snapshot);

impl SlotSnapshot {
    /// A worker process owns the slot.
    pub fn is_live(&self) -> bool {
        self.pid != 0 && self.state != WorkerState::Dead
    }

    /// The worker has asked to be replaced.
    pub fn retire_requested(&self) -> bool {
        self.flags & SlotFlags::RETIRE_REQUESTED != 0
    }

    /// The worker's accept wait watches the listener (false once it has followed a pause).
    pub fn accepting(&self) -> bool {
        self.flags & SlotFlags::NOT_ACCEPTING == 0
    }
}

/// A whole board at one moment (each field read atomically, the whole not atomically).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// When the snapshot was taken (Unix epoch µs).
    pub taken_unix_micros: u64,
    /// When the snapshot was taken (`CLOCK_MONOTONIC` µs).
    pub taken_monotonic_micros: u64,
    /// The header's fields.
    pub header: HeaderSnapshot,
    /// Every slot, empty ones included, in slot order.
    pub slots: Vec<SlotSnapshot>,
}

/// Work done by all workers, past and present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests finished.
    pub requests: u64,
    /// Response body bytes sent.
    pub bytes: u64,
    /// Connections accepted.
    pub connections: u64,
    /// `accept4` calls, `EAGAIN` included.
    pub accept_calls: u64,
    /// Requests that took longer than the slow threshold.
    pub slow_requests: u64,
    /// Connections put in the hand-off queue (with a complete request, or as they were when
    /// their worker left), and taken from it.
    pub handed_off: u64,
    /// Connections taken from the hand-off queue.
    pub adopted: u64,
    /// Parked connections closed for not sending their request in time, or for lack of room.
    pub parked_timeouts: u64,
    /// Parked connections closed for lack of room.
    pub parked_evictions: u64,
}

impl Snapshot {
    /// A snapshot of nothing, to be filled by [`crate::Board::snapshot_into`].
    pub fn empty() -> Snapshot {
        Snapshot {
            taken_unix_micros: 0,
            taken_monotonic_micros: 0,
            header: HeaderSnapshot::default(),
            slots: Vec::new(),
        }
    }

    /// Slots owned by a live worker.
    pub fn live(&self) -> impl Iterator<Item = &SlotSnapshot> {
        self.slots.iter().filter(|s| s.is_live())
    }

    /// Worker processes.
    pub fn processes(&self) -> usize {
        self.live().count()
    }

    /// Workers waiting for a connection.
    pub fn idle(&self) -> usize {
        self.live().filter(|s| s.state.is_idle()).count()
    }

    /// Workers holding a connection.
    pub fn busy(&self) -> usize {
        self.live().filter(|s| s.state.is_busy()).count()
    }

    /// Workers told to stop and finishing.
    pub fn stopping(&self) -> usize {
        self.live().filter(|s| s.state.is_stopping()).count()
    }

    /// Workers in a given state.
    pub fn count(&self, state: WorkerState) -> usize {
        self.live().filter(|s| s.state == state).count()
    }

    /// One letter per slot, as Apache's `Scoreboard:` line.
    pub fn scoreboard_string(&self) -> String {
        self.slots.iter().map(|s| if s.is_live() { s.state.letter() } else { WorkerState::Dead.letter() }).collect()
    }

    /// Seconds since the server started.
    pub fn uptime_seconds(&self) -> f64 {
        self.taken_monotonic_micros.saturating_sub(self.header.start_monotonic_micros) as f64 / 1e6
    }

    /// Seconds a slot has been in its current state.
    pub fn seconds_in_state(&self, slot: &SlotSnapshot) -> f64 {
        self.taken_monotonic_micros.saturating_sub(slot.last_change_micros) as f64 / 1e6
    }

    /// Seconds since the slot's current or last request began.
    pub fn seconds_since_request(&self, slot: &SlotSnapshot) -> Option<f64> {
        let request = slot.request?;
        Some(self.taken_monotonic_micros.saturating_sub(request.started_micros()) as f64 / 1e6)
    }

    /// Work done by all workers since the server started: the sum of every slot's per-slot
    /// counters, which never go down, so neither do these (a Prometheus counter must not).
    pub fn totals(&self) -> Totals {
        // Saturating: a reader must survive a corrupt segment.
        self.slots.iter().fold(Totals::default(), |t, s| Totals {
            requests: t.requests.saturating_add(s.requests_slot),
            bytes: t.bytes.saturating_add(s.bytes_slot),
            connections: t.connections.saturating_add(s.connections_slot),
            accept_calls: t.accept_calls.saturating_add(s.accept_calls_slot),
            slow_requests: t.slow_requests.saturating_add(s.slow_requests_slot),
            handed_off: t.handed_off.saturating_add(s.handed_off_slot),
            adopted: t.adopted.saturating_add(s.adopted_slot),
            parked_timeouts: t.parked_timeouts.saturating_add(s.parked_timeouts_slot),
            parked_evictions: t.parked_evictions.saturating_add(s.parked_evictions_slot),
        })
    }

    /// Connections parked in live workers (between requests, not in a handler).
    pub fn parked(&self) -> u64 {
        self.live().fold(0u64, |sum, s| sum.saturating_add(s.parked))
    }
}
