//! State one worker process shares among its connection, service, body and I/O wrappers.

use std::cell::Cell;
use std::time::Duration;

use http::uri::Authority;
use prefork_scoreboard::clock::coarse_monotonic_micros;
use prefork_scoreboard::{Board, Doorbell, RequestStart, SlotWriter, WorkerState, usage};

const USAGE_SAMPLE_INTERVAL_MICROS: u64 = 1_000_000;

use crate::config::WorkerConfig;
use crate::head::HeadLimits;
use crate::in_flight::RequestsInFlight;
use crate::parked::ParkRules;
use crate::recycling::Recycling;
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
    /// The recycling counts and decisions.
    pub recycling: Recycling,
    /// How parked connections are timed (from `config`, worked out once).
    park_rules: ParkRules,
    /// The parent's doorbell, rung when this worker becomes ready and when it asks for a
    /// replacement.
    doorbell: Option<Doorbell>,
    /// The requests between service entry and the end of their response; the oldest is
    /// published for the supervisor's stuck-worker watchdog.
    in_flight: RequestsInFlight,
    /// Open connections (several with `worker_connections` > 1).
    open_connections: Cell<usize>,
}

impl WorkerShared {
    pub(crate) fn new(
        slot: SlotWriter<'static>,
        board: &'static Board,
        scoreboard_name: String,
        doorbell: Option<Doorbell>,
        router: Router,
        config: WorkerConfig,
    ) -> WorkerShared {
        WorkerShared {
            authority: crate::absolute_uri::authority(&config.hostname, config.port),
            recycling: Recycling::new(config.recycle),
            park_rules: ParkRules {
                header_timeout: config.keepalive_timeout,
                body_timeout: config.body_read_timeout,
                body_min_rate: config.body_min_rate,
                limits: HeadLimits { max_headers: config.max_headers, max_header_size: config.max_header_size },
                request_timeout: config.request_timeout,
            },
            slot,
            board,
            scoreboard_name,
            router,
            config,
            stopping: Cell::new(false),
            doorbell,
            in_flight: RequestsInFlight::default(),
            open_connections: Cell::new(0),
        }
    }

    /// Publishes a per-connection state change (`R`, `W`, `K`, `C`), unless the worker is
    /// stopping, or serves several connections at once: then its slot shows only whether it
    /// can take more (`_`) or not (`W`), see [`WorkerShared::connection_opened`].
    pub(crate) fn set_state(&self, state: WorkerState) {
        if !self.stopping.get() && self.config.worker_connections <= 1 {
            self.publish_state(state);
        }
    }

    /// Everything the worker needs exists: it is ready (`_`), and the supervisor hears so at
    /// once, so a reload or a recycling replacement waiting for it completes now rather than
    /// at the next maintenance tick.
    pub(crate) fn become_ready(&self) {
        self.sample_usage_if_due();
        self.publish_state(WorkerState::Idle);
        self.ring();
    }

    /// Writes the slot's state; if this worker just left `_` and the pool is short of idle
    /// workers, wakes the supervisor (the only per-connection wake-up it gets: a pool with
    /// enough idle workers is left to sleep).
    fn publish_state(&self, state: WorkerState) {
        if self.slot.set_state(state) {
            self.ring();
        }
    }

    /// How parked connections are timed.
    pub(crate) fn park_rules(&self) -> ParkRules {
        self.park_rules
    }

    /// A connection was accepted. With several connections per worker, the slot shows `_`
    /// while the worker can take more and `W` once it is full (the parent then counts it busy).
    pub(crate) fn connection_opened(&self) {
        let open = self.open_connections.get() + 1;
        self.open_connections.set(open);
        if self.config.worker_connections > 1 && open >= self.config.worker_connections && !self.stopping.get() {
            self.publish_state(WorkerState::Writing);
        }
    }

    /// A connection ended.
    pub(crate) fn connection_closed(&self) {
        let open = self.open_connections.get().saturating_sub(1);
        self.open_connections.set(open);
        if self.config.worker_connections > 1 && open < self.config.worker_connections && !self.stopping.get() {
            self.publish_state(WorkerState::Idle);
        }
    }

    /// A request began (see [`crate::in_flight::InFlight`], the only caller).
    pub(crate) fn request_started(&self, start: RequestStart) {
        let oldest = self.in_flight.begin(start);
        self.slot.set_oldest_in_flight(oldest);
        self.set_state(WorkerState::Writing);
    }

    /// The request begun at `start` is done (or abandoned).
    pub(crate) fn request_finished(&self, start: RequestStart) {
        let (left, oldest) = self.in_flight.end(start);
        self.slot.set_oldest_in_flight(oldest);
        // Requests and connections are checked as they are counted; memory only changes when
        // it is sampled.
        if self.sample_usage_if_due() {
            self.check_recycle_limits();
        }
        if left == 0 {
            self.set_state(WorkerState::KeepAlive);
        }
    }

    /// A wait for a connection ended without one (perhaps it timed out): an idle worker ages,
    /// and its memory may grow too, so it looks at its recycling limits.
    pub(crate) fn on_idle_tick(&self) {
        self.sample_usage_if_due();
        self.check_recycle_limits();
    }

    /// Whether finished responses must be kept for the access log or LOG2HANDLER.
    pub(crate) fn wants_written(&self) -> bool {
        self.config.access_log.is_some() || self.config.hooks.log2.is_some()
    }

    /// Samples this process's CPU time and resident memory into the slot, at most once a
    /// second (reading `/proc` per request would cost more than the request). True if it did.
    pub(crate) fn sample_usage_if_due(&self) -> bool {
        let last = self.slot.usage_sampled_micros();
        let due = last == 0 || coarse_monotonic_micros().saturating_sub(last) >= USAGE_SAMPLE_INTERVAL_MICROS;
        if due {
            self.slot.record_usage(usage::cpu_micros(), usage::rss_bytes());
        }
        due
    }

    /// The worker was told to stop; `state` is `G` (finishing) or `I` (was idle).
    pub(crate) fn enter_stopping(&self, state: WorkerState) {
        self.stopping.set(true);
        self.publish_state(state);
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// At a recycling limit's margin: take no more connections, and exit once none is held.
    pub(crate) fn must_leave(&self) -> bool {
        self.recycling.is_leaving()
    }

    /// Told to stop, or leaving on its own: connections go (or move) after their response.
    pub(crate) fn is_going(&self) -> bool {
        self.must_leave() || self.stopping.get() || crate::stop::stop_requested()
    }

    /// Counts a request handed to a handler. True if the response must close its
    /// connection: this worker is at a recycling limit's margin, or told to stop.
    pub(crate) fn dispatch(&self) -> bool {
        self.recycling.count_request();
        self.check_recycle_limits();
        self.dispatch_uncounted()
    }

    /// As [`dispatch`](Self::dispatch), for a request left out of the counts and limits (a
    /// load balancer's probe).
    pub(crate) fn dispatch_uncounted(&self) -> bool {
        if crate::stop::stop_requested() && !self.stopping.get() {
            self.enter_stopping(WorkerState::Graceful);
        }
        self.must_leave() || self.stopping.get()
    }

    /// Counts `accept4` calls (successful or not).
    pub(crate) fn record_accept_calls(&self, calls: u64) {
        self.slot.record_accept_calls(calls);
    }

    /// A connection this worker accepted closed having carried only a load balancer's probes:
    /// it stops counting towards the connection limit (it counted while it was open).
    pub(crate) fn connection_only_probed(&self) {
        self.recycling.connection_only_probed();
    }

    /// Counts an accepted connection and returns its id.
    pub(crate) fn next_connection_id(&self) -> u64 {
        let id = self.recycling.count_connection();
        self.slot.record_connection();
        self.check_recycle_limits();
        id
    }

    /// Wakes the supervisor.
    pub(crate) fn ring(&self) {
        if let Some(doorbell) = &self.doorbell {
            doorbell.ring();
        }
    }

    /// Near a recycling limit, asks the supervisor for a replacement; past its margin, leaves
    /// (see [`crate::recycling`]).
    pub(crate) fn check_recycle_limits(&self) {
        if self.recycling.check(self.slot.rss_bytes()) {
            self.slot.request_retirement();
            self.ring();
        }
    }

    /// Asks the supervisor for `request` through the scoreboard, and wakes it.
    pub(crate) fn ask_supervisor(&self, request: prefork_scoreboard::ControlRequest) {
        self.board.request_control(request);
        self.ring();
    }

    /// Retires this worker at its own code's request: a replacement is asked for, and the
    /// worker leaves as at a recycling limit's margin (nothing new taken, the connection in
    /// hand closed or moved after its response).
    pub(crate) fn retire_now(&self) {
        if self.recycling.retire_now() {
            self.slot.request_retirement();
            self.ring();
        }
    }

    /// How long the idle worker may wait for a connection before it must look at its
    /// lifetime and memory again (`None`: no such limit).
    pub(crate) fn idle_check_interval(&self) -> Option<Duration> {
        self.recycling.idle_check_interval()
    }
}
