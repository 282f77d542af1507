//! What the requests of one connection share: the worker, the connection's identity and close
//! handlers, whether it parks or closes, and its requests in flight, counted and idle time.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use http::{HeaderMap, header};
use prefork_scoreboard::RequestStart;
use prefork_scoreboard::clock::monotonic_micros;

use crate::handler::{CloseHandlers, ConnectionInfo};
use crate::io::FlushSignal;
use crate::lazy_io::LazyShared;
use crate::shared::WorkerShared;

/// Per-connection context of the service.
pub(crate) struct ConnectionScope {
    pub worker: Rc<WorkerShared>,
    pub info: Rc<ConnectionInfo>,
    /// `address:port` of the client, formatted once per connection for the scoreboard.
    pub client: String,
    /// Run when the connection closes (SETCLOSEHANDLER).
    pub close_handlers: CloseHandlers,
    /// The last close handler's token on this connection.
    pub next_close_token: Rc<Cell<u64>>,
    /// Tells a stream ending in CLOSE that its last chunks are out (HTTP/1.1 only: on HTTP/2
    /// a CLOSE resets its stream, and there is nothing to wait for).
    pub flush: Option<Rc<FlushSignal>>,
    /// Set when the connection is to leave this worker, idle, for parking (`None`: it never
    /// parks; only a classic worker's cleartext HTTP/1.1 connections do). From then on the
    /// connection reads nothing more (the next request is for whoever takes it) and its
    /// shutdown leaves the socket open (see [`crate::io::ObservedIo`]).
    letting_go: Option<Rc<Cell<bool>>>,
    /// The socket of an HTTP/1.1 connection (`None` on HTTP/2), told when a request runs so
    /// that hyper's look for a hang-up costs nothing unless the handler waits (see
    /// [`crate::lazy_io`]).
    socket: Option<Rc<LazyShared>>,
    /// Told when a request ends (on a connection that parks): the connection arms its idle
    /// check, or leaves for a sibling at once if the worker is going.
    pub went_idle: tokio::sync::Notify,
    /// A response of this connection closes it (`Connection: close` asked or answered, HTTP/1.0
    /// without keep-alive): the connection must end, not move to a sibling.
    closing: Cell<bool>,
    /// Requests of this connection now running (several on HTTP/2).
    in_flight: Cell<usize>,
    /// Requests of this connection counted (handlers, the status page), and probes answered.
    counted_requests: Cell<u64>,
    probes: Cell<u64>,
    /// When a request of this connection last began or ended, or the connection opened
    /// (`CLOCK_MONOTONIC` µs).
    last_activity_micros: Cell<u64>,
}

impl ConnectionScope {
    pub(crate) fn new(
        worker: Rc<WorkerShared>,
        info: ConnectionInfo,
        flush: Option<Rc<FlushSignal>>,
        letting_go: Option<Rc<Cell<bool>>>,
        socket: Option<Rc<LazyShared>>,
    ) -> ConnectionScope {
        let client = if info.unix_socket {
            "unix".to_owned()
        } else {
            SocketAddr::new(info.remote_ip, info.remote_port).to_string()
        };
        ConnectionScope {
            worker,
            info: Rc::new(info),
            client,
            close_handlers: CloseHandlers::default(),
            next_close_token: Rc::new(Cell::new(0)),
            flush,
            letting_go,
            socket,
            went_idle: tokio::sync::Notify::new(),
            closing: Cell::new(false),
            in_flight: Cell::new(0),
            counted_requests: Cell::new(0),
            probes: Cell::new(0),
            last_activity_micros: Cell::new(monotonic_micros()),
        }
    }

    /// A request of this connection began (see [`InFlight`], the only caller).
    /// hyper has read a request's head and calls the service: from now on its reads only
    /// look for a hang-up (see [`crate::lazy_io`]). Called before the request's future runs.
    pub(crate) fn request_arrived(&self) {
        if let Some(socket) = &self.socket {
            socket.set_mid_request(true);
        }
    }

    pub(crate) fn request_started(&self, start: RequestStart) {
        self.in_flight.set(self.in_flight.get() + 1);
        self.last_activity_micros.set(start.micros());
        self.worker.request_started(start);
    }

    /// The request begun at `start` ended after `duration_micros`.
    pub(crate) fn request_finished(&self, start: RequestStart, duration_micros: u64) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
        if let Some(socket) = self.socket.as_ref().filter(|_| self.in_flight.get() == 0) {
            socket.set_mid_request(false);
        }
        self.last_activity_micros.set(start.micros() + duration_micros);
        self.worker.request_finished(start);
        // A going worker lets the connection go as soon as it is idle, before hyper reads
        // the client's next request (that one is for the sibling that takes the connection).
        let going = self.worker.is_going() && self.can_park();
        if going {
            self.let_go();
        }
        // The connection's loop arms its idle check, lets the connection go if the worker is
        // going, and polls hyper again: hyper put off reading the next request while this one
        // ran (its look for a hang-up was answered `Pending`), and reads it now.
        if self.parks() {
            self.went_idle.notify_one();
        }
    }

    /// The request's handler did not answer at once (or streams its answer): the socket joins
    /// the reactor, so that a client hanging up meanwhile is noticed.
    pub(crate) fn arm_socket(&self) {
        if let Some(socket) = &self.socket {
            socket.arm();
        }
    }

    /// After a response's head: whether it ends the connection (the client asked, or the
    /// answer says `Connection: close`).
    pub(crate) fn note_closing(&self, asked: bool, answer: &HeaderMap) {
        if asked || has_token(answer, "close") {
            self.closing.set(true);
        }
    }

    /// Counts a request of this connection: a probe, or one of the requests proper.
    pub(crate) fn count_request(&self, probe: bool) {
        let counter = if probe { &self.probes } else { &self.counted_requests };
        counter.set(counter.get() + 1);
    }

    /// Whether the connection parks (see `letting_go`).
    pub(crate) fn parks(&self) -> bool {
        self.letting_go.is_some()
    }

    /// Marks the connection as leaving this worker.
    pub(crate) fn let_go(&self) {
        if let Some(flag) = &self.letting_go {
            flag.set(true);
        }
    }

    /// Whether the connection is leaving this worker.
    pub(crate) fn letting_go(&self) -> bool {
        self.letting_go.as_ref().is_some_and(|flag| flag.get())
    }

    /// Whether the connection can leave this worker between requests for a sibling: it parks,
    /// no close handler is registered (SETCLOSEHANDLER code lives in this process), and the
    /// whole server is not stopping (nobody would take it).
    pub(crate) fn may_hand_over(&self) -> bool {
        self.parks() && self.close_handlers.borrow().is_empty() && !self.worker.slot.server_stopping()
    }

    /// Whether the connection, idle now, may leave this worker.
    pub(crate) fn can_park(&self) -> bool {
        self.in_flight.get() == 0 && !self.closing.get() && self.may_hand_over()
    }

    /// Whether a request is running on this connection.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.get() > 0
    }

    /// When this connection's last request ended (or it opened), `CLOCK_MONOTONIC` µs.
    pub(crate) fn idle_since_micros(&self) -> u64 {
        self.last_activity_micros.get()
    }

    /// The connection carried load balancers' probes and nothing else.
    pub(crate) fn only_probed(&self) -> bool {
        self.probes.get() > 0 && self.counted_requests.get() == 0
    }

    /// How long this connection has had no request running (zero while one is).
    pub(crate) fn idle_for(&self) -> Duration {
        if self.in_flight.get() > 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(monotonic_micros().saturating_sub(self.last_activity_micros.get()))
    }
}

/// Whether a `Connection` header lists `token`.
pub(crate) fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}
