//! State one worker process shares among its connection, service, body and I/O wrappers.

use std::cell::Cell;

use http::uri::Authority;
use prefork_scoreboard::clock::coarse_monotonic_micros;
use prefork_scoreboard::{Board, SlotWriter, WorkerState, usage};

const USAGE_SAMPLE_INTERVAL_MICROS: u64 = 1_000_000;

use crate::config::WorkerConfig;
use crate::router::Router;

/// Everything a worker's request path needs. Lives for the whole worker process.
#[derive(Debug)]
pub(crate) struct WorkerShared {
    pub slot: SlotWriter<'static>,
    pub board: &'static Board,
    pub scoreboard_name: String,
    pub router: Router,
    pub config: WorkerConfig,
    /// `HOSTNAME:PORT` for absolute request URIs, parsed once.
    pub authority: Option<Authority>,
    /// Told to stop: the slot shows `G`/`I` from now on, whatever the connection does.
    stopping: Cell<bool>,
    /// Requests handed to the service, for `max_requests_per_child`.
    dispatched: Cell<u64>,
    /// Connections accepted, for connection ids.
    connections: Cell<u64>,
}

impl WorkerShared {
    pub(crate) fn new(
        slot: SlotWriter<'static>,
        board: &'static Board,
        scoreboard_name: String,
        router: Router,
        config: WorkerConfig,
    ) -> WorkerShared {
        WorkerShared {
            authority: crate::service::authority(&config.hostname, config.port),
            slot,
            board,
            scoreboard_name,
            router,
            config,
            stopping: Cell::new(false),
            dispatched: Cell::new(0),
            connections: Cell::new(0),
        }
    }

    /// Publishes a state change, unless the worker is stopping.
    pub(crate) fn set_state(&self, state: WorkerState) {
        if !self.stopping.get() {
            self.slot.set_state(state);
        }
    }

    /// Samples this process's CPU time and resident memory into the slot, at most once a
    /// second (reading `/proc` per request would cost more than the request).
    pub(crate) fn sample_usage_if_due(&self) {
        let last = self.slot.usage_sampled_micros();
        if last == 0 || coarse_monotonic_micros().saturating_sub(last) >= USAGE_SAMPLE_INTERVAL_MICROS {
            self.slot.record_usage(usage::cpu_micros(), usage::rss_bytes());
        }
    }

    /// The worker was told to stop; `state` is `G` (finishing) or `I` (was idle).
    pub(crate) fn enter_stopping(&self, state: WorkerState) {
        self.stopping.set(true);
        self.slot.set_state(state);
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Counts a request handed to a handler; true if it is the last this worker may take.
    pub(crate) fn dispatch(&self) -> bool {
        let n = self.dispatched.get() + 1;
        self.dispatched.set(n);
        self.config.max_requests_per_child.is_some_and(|max| n >= max)
    }

    /// The worker has reached `max_requests_per_child`.
    pub(crate) fn recycle_due(&self) -> bool {
        self.config.max_requests_per_child.is_some_and(|max| self.dispatched.get() >= max)
    }

    /// Counts an accepted connection and returns its id.
    pub(crate) fn next_connection_id(&self) -> u64 {
        let id = self.connections.get() + 1;
        self.connections.set(id);
        self.slot.record_connection();
        id
    }
}
