//! When a worker asks to be replaced, and when it leaves on its own: its counts (requests,
//! connections, age, memory) against its recycling limits.
//!
//! Near a limit (a tenth early) the worker asks the supervisor for a replacement, which it forks
//! at once and lets this worker go (SIGTERM) once it is ready: only then do this worker's
//! clients move, so the spare pool never pays for a recycling. If no SIGTERM has come by the
//! limit plus its margin (the replacement is slow to boot, or the pool is at `max_clients`),
//! the worker leaves on its own: it takes no more connections, closes the one it serves after
//! the response in hand, and exits, so the limit holds whatever the arrival rate. Connections
//! arriving meanwhile wait in the listen queue for a sibling or the replacement; none is
//! refused.

use std::cell::Cell;
use std::time::{Duration, Instant};

use prefork_scoreboard::RecycleLimits;

/// One worker's recycling counts and decisions.
#[derive(Debug)]
pub(crate) struct Recycling {
    limits: RecycleLimits,
    /// Where to ask for a replacement, and where to leave (worked out once).
    early_limits: RecycleLimits,
    hard_limits: RecycleLimits,
    /// Requests handed to the service, for the request limit.
    dispatched: Cell<u64>,
    /// Connections accepted, for connection ids and the connection limit.
    connections: Cell<u64>,
    /// Of those, connections that closed having carried only probes: not counted.
    probe_connections: Cell<u64>,
    /// When this process started, for the lifetime limit.
    started: Instant,
    /// The supervisor was asked for a replacement.
    replacement_requested: Cell<bool>,
    /// At a limit's margin without having been replaced: the worker takes no more connections,
    /// every response closes its connection, and it exits once it holds none.
    leaving: Cell<bool>,
    /// Told when `leaving` is set, so that HTTP/2 connections send GOAWAY at once rather than
    /// take more streams past the limit.
    pub leaving_notice: tokio::sync::Notify,
}

impl Recycling {
    pub(crate) fn new(limits: RecycleLimits) -> Recycling {
        Recycling {
            early_limits: limits.early(),
            hard_limits: limits.hard(),
            limits,
            dispatched: Cell::new(0),
            connections: Cell::new(0),
            probe_connections: Cell::new(0),
            started: Instant::now(),
            replacement_requested: Cell::new(false),
            leaving: Cell::new(false),
            leaving_notice: tokio::sync::Notify::new(),
        }
    }

    /// Counts a request handed to a handler.
    pub(crate) fn count_request(&self) {
        self.dispatched.set(self.dispatched.get() + 1);
    }

    /// Counts an accepted connection and returns its id.
    pub(crate) fn count_connection(&self) -> u64 {
        let id = self.connections.get() + 1;
        self.connections.set(id);
        id
    }

    /// A connection closed having carried only a load balancer's probes: it stops counting
    /// towards the connection limit (it counted while it was open).
    pub(crate) fn connection_only_probed(&self) {
        self.probe_connections.set(self.probe_connections.get() + 1);
    }

    /// At a limit's margin: take no more connections, and exit once none is held.
    pub(crate) fn is_leaving(&self) -> bool {
        self.leaving.get()
    }

    /// Looks at the counts (and `rss_bytes`, sampled) against the limits: true the first time
    /// a replacement is due (the caller asks the supervisor); past the margin, the worker
    /// leaves.
    pub(crate) fn check(&self, rss_bytes: u64) -> bool {
        if self.leaving.get() || self.limits.is_unlimited() {
            return false;
        }
        let connections = self.connections.get().saturating_sub(self.probe_connections.get());
        let requests = self.dispatched.get();
        // The clock only when a lifetime limit asks for it.
        let age = if self.limits.max_lifetime.is_some() { self.started.elapsed() } else { Duration::ZERO };
        let early = (!self.replacement_requested.get())
            .then(|| self.early_limits.reached(requests, connections, age, rss_bytes));
        let ask = match early.flatten() {
            Some(reason) => {
                self.replacement_requested.set(true);
                tracing::info!(%reason, "approaching a recycling limit: asking the supervisor for a replacement");
                true
            }
            None => false,
        };
        if let Some(reason) = self.hard_limits.reached(requests, connections, age, rss_bytes) {
            self.leave();
            tracing::info!(%reason, "at a recycling limit's margin and not yet replaced: leaving on its own");
        }
        ask
    }

    /// Retires this worker at its own code's request: true if a replacement is to be asked for
    /// (it had not been yet); the worker leaves as at a limit's margin.
    pub(crate) fn retire_now(&self) -> bool {
        let ask = !self.replacement_requested.replace(true);
        if !self.leaving.get() {
            self.leave();
            tracing::info!("retiring at the handler's request");
        }
        ask
    }

    fn leave(&self) {
        self.leaving.set(true);
        self.leaving_notice.notify_waiters();
    }

    /// How long an idle worker may wait for a connection before it must look at its lifetime
    /// and memory again (`None`: no such limit).
    pub(crate) fn idle_check_interval(&self) -> Option<Duration> {
        (self.limits.max_lifetime.is_some() || self.limits.max_rss_bytes.is_some()).then(|| Duration::from_secs(1))
    }
}
