//! Plain copies of the board taken without locking, and the counts derived from them.

use serde::Serialize;

use crate::WorkerState;

/// The header fields at the moment of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeaderSnapshot {
    pub parent_pid: u32,
    pub generation: u64,
    pub slot_count: usize,
    pub start_unix_micros: u64,
    pub start_monotonic_micros: u64,
    pub retired_requests: u64,
    pub retired_bytes: u64,
    pub retired_connections: u64,
    pub retired_accept_calls: u64,
}

/// One slot at the moment of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlotSnapshot {
    pub index: usize,
    /// 0 when the slot is empty.
    pub pid: u32,
    pub state: WorkerState,
    pub generation: u64,
    pub requests: u64,
    pub bytes: u64,
    pub connections: u64,
    pub accept_calls: u64,
    pub started_unix_micros: u64,
    pub last_change_micros: u64,
}

impl SlotSnapshot {
    /// A worker process owns the slot.
    pub fn is_live(&self) -> bool {
        self.pid != 0 && self.state != WorkerState::Dead
    }
}

/// A whole board at one moment (each field read atomically, the whole not atomically).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub taken_unix_micros: u64,
    pub taken_monotonic_micros: u64,
    pub header: HeaderSnapshot,
    pub slots: Vec<SlotSnapshot>,
}

/// Work done by all workers, past and present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub bytes: u64,
    pub connections: u64,
    pub accept_calls: u64,
}

impl Snapshot {
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

    /// Workers holding or finishing a connection.
    pub fn busy(&self) -> usize {
        self.live().filter(|s| s.state.is_busy()).count()
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

    /// Counters of exited workers plus those of live ones.
    pub fn totals(&self) -> Totals {
        let h = &self.header;
        self.live().fold(
            Totals {
                requests: h.retired_requests,
                bytes: h.retired_bytes,
                connections: h.retired_connections,
                accept_calls: h.retired_accept_calls,
            },
            |t, s| Totals {
                requests: t.requests + s.requests,
                bytes: t.bytes + s.bytes,
                connections: t.connections + s.connections,
                accept_calls: t.accept_calls + s.accept_calls,
            },
        )
    }
}
