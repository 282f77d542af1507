//! The classic worker (`worker_connections` 1): one request in a handler at a time, and no
//! worker held by a client that is not sending a request.
//!
//! The main thread waits (as a real `epoll_wait` waiter, for `EPOLLEXCLUSIVE`) for a new
//! connection or for one a sibling passed on with its request complete. A new connection is
//! read at once — with `TCP_DEFER_ACCEPT` its request is usually there already — and served if
//! its request is complete; otherwise it goes to the worker's parking thread
//! ([`crate::parking`]), which holds it until its request is complete and then passes it to the
//! hand-off queue for any idle worker. A keep-alive connection that idles after a response is
//! parked the same way (see [`crate::connection::PARK_AFTER`]). So a slowloris client, a slow
//! body or an idle browser costs a socket, never a worker, while a blocking handler still
//! blocks only its own worker and the requests behind it go to idle siblings.

use std::os::fd::OwnedFd;
use std::rc::Rc;

use bytes::Bytes;
use prefork_scoreboard::WorkerState;
use prefork_scoreboard::clock::monotonic_micros;
use tokio::task::LocalSet;

use crate::WorkerError;
use crate::accept::{Acceptor, Waited};
use crate::connection::{Incoming, serve_connection};
use crate::head::Progress;
use crate::parked::{ParkKind, ParkedConnection, ReadOutcome};
use crate::parking::{Leave, ParkingLot};
use crate::pause::PauseNudge;
use crate::shared::WorkerShared;
use crate::stop::{StopSignal, StopWatch, stop_requested};
use crate::transport::{Listener, Peer};

/// Accepts that fail for want of descriptors (each followed by a 100 ms pause) while the worker
/// holds no connection: a second of them, and the worker gives up.
pub(crate) const STARVED_ACCEPTS: u32 = 10;

/// Serves until told to stop, or until a recycling limit says this worker must go.
pub(crate) fn serve_classic(
    listener: &Listener,
    worker: &Rc<WorkerShared>,
    (stop, pause): (&StopSignal, &PauseNudge),
    stop_watch: &StopWatch<'_>,
    runtime: &tokio::runtime::Runtime,
    local: &LocalSet,
) -> Result<(), WorkerError> {
    // TLS connections cannot move between processes (their session lives in this one): they
    // are served where they are accepted, as in classic prefork.
    let parks = worker.config.tls.is_none();
    let lot = ParkingLot::new()?;
    std::thread::scope(|scope| {
        let parking = if parks {
            let (queue, writer) = (listener.handoff(), worker.slot.parking_writer());
            let (rules, capacity) = (worker.park_rules(), worker.config.max_parked);
            let (lot, epoll) = (&lot, lot.thread_epoll()?);
            // Its log lines carry the worker's span (pid, slot, generation) as the rest do.
            let span = tracing::Span::current();
            let thread = std::thread::Builder::new()
                .name("parking".into())
                .spawn_scoped(scope, move || span.in_scope(|| lot.run(epoll, queue, writer, rules, capacity)))
                .map_err(|source| WorkerError::Io { what: "start the parking thread", source })?;
            Some(thread)
        } else {
            None
        };
        // However the loop ends (a panic included), the parking thread must end too, or the
        // scope would wait for it forever.
        let leave = LeaveOnDrop { lot: &lot, worker };
        let classic = Classic { listener, worker, stop_watch, runtime, local, lot: &lot, parks };
        let mut acceptor = Acceptor::new(listener, stop.as_fd(), parks, pause, (worker.board, &worker.slot))?;
        worker.become_ready();
        let result = classic.run(&mut acceptor);
        // What the parking thread holds goes to a sibling; if the whole server stops, it is
        // closed, but for complete requests, which this worker serves before it exits, with
        // those still in the hand-off queue (nobody else would).
        let stopping = worker.slot.server_stopping();
        lot.leave(if stopping { Leave::Close } else { Leave::HandOff });
        if let Some(thread) = parking {
            let _ = thread.join();
        }
        if stopping && parks {
            classic.serve_leftovers(&mut acceptor);
        }
        drop(leave);
        result
    })
}

struct LeaveOnDrop<'a> {
    lot: &'a ParkingLot,
    worker: &'a WorkerShared,
}

impl Drop for LeaveOnDrop<'_> {
    fn drop(&mut self) {
        self.lot.leave(if self.worker.slot.server_stopping() { Leave::Close } else { Leave::HandOff });
    }
}

struct Classic<'a> {
    listener: &'a Listener,
    worker: &'a Rc<WorkerShared>,
    stop_watch: &'a StopWatch<'a>,
    runtime: &'a tokio::runtime::Runtime,
    local: &'a LocalSet,
    lot: &'a ParkingLot,
    parks: bool,
}

impl Classic<'_> {
    fn run(&self, acceptor: &mut Acceptor<'_>) -> Result<(), WorkerError> {
        let worker = self.worker;
        // Accepts failing for want of descriptors, in a row, while this worker holds none.
        let mut starved = 0;
        loop {
            if stop_requested() {
                worker.enter_stopping(WorkerState::IdleKill);
                return Ok(());
            }
            if let Some(error) = self.lot.dead() {
                return Err(error);
            }
            if worker.must_leave() {
                // Past a recycling limit's margin: take nothing more; what is parked goes to a
                // sibling. The replacement asked for at the early limit takes over.
                worker.enter_stopping(WorkerState::IdleKill);
                return Ok(());
            }
            worker.set_state(WorkerState::Idle);
            match acceptor.wait(worker.idle_check_interval())? {
                Waited::Connection(fd, peer, calls) => {
                    worker.record_accept_calls(calls);
                    self.take_new(fd, peer);
                }
                Waited::Adopted(conn) => {
                    worker.slot.count_adopted();
                    self.take_parked(conn);
                }
                Waited::Nothing(calls) => {
                    worker.record_accept_calls(calls);
                    worker.on_idle_tick();
                }
                Waited::OutOfDescriptors(errno) => {
                    worker.record_accept_calls(1);
                    // Holding nothing to close, it would wait forever, counted ready and
                    // serving nobody: better to fail, and let the supervisor back off.
                    starved = if worker.slot.parked() == 0 { starved + 1 } else { 0 };
                    if starved >= STARVED_ACCEPTS {
                        return Err(WorkerError::Sys { what: "accept: out of descriptors while holding none", errno });
                    }
                    continue;
                }
                Waited::Stop => {}
            }
            starved = 0;
        }
    }

    /// A new connection: read what it sent; serve it if its request is complete, park it if not.
    fn take_new(&self, fd: OwnedFd, peer: Peer) {
        let mut conn = ParkedConnection::new(fd, peer, ParkKind::Fresh, Vec::new(), monotonic_micros());
        if !self.parks {
            return self.serve(conn);
        }
        if conn.read_available() == ReadOutcome::Gone {
            return; // gone before it said anything: nothing to answer
        }
        self.take_parked(conn);
    }

    /// A connection whose request may be complete (new, or from a sibling).
    fn take_parked(&self, conn: ParkedConnection) {
        match conn.progress(&self.worker.park_rules()) {
            Progress::Ready => self.serve(conn),
            _ => self.lot.park(conn),
        }
    }

    /// The whole server stops: the complete requests this worker's parking thread gave back,
    /// and those in the hand-off queue, are served (with `Connection: close`) rather than
    /// dropped; what is incomplete is closed.
    fn serve_leftovers(&self, acceptor: &mut Acceptor<'_>) {
        let rules = self.worker.park_rules();
        let returned = self.lot.take_returned();
        let queued = std::iter::from_fn(|| acceptor.adopt().ok().flatten());
        for conn in returned.into_iter().chain(queued) {
            if conn.progress(&rules) == Progress::Ready {
                self.serve(conn);
            }
        }
    }

    /// Serves a connection until it closes, or idles and is parked. A connection is counted
    /// (and numbered) when a worker first serves it; one that comes back after waiting
    /// parked keeps its number.
    fn serve(&self, conn: ParkedConnection) {
        let worker = self.worker;
        worker.set_state(WorkerState::Reading);
        let accepted_here = conn.id.is_none();
        let id = conn.id.unwrap_or_else(|| worker.next_connection_id());
        worker.connection_opened();
        let received = Bytes::from(conn.buffered);
        let incoming = Incoming { fd: conn.fd, peer: conn.peer, received, id, accepted_here };
        let served = serve_connection(incoming, worker, self.stop_watch, self.parks);
        let parked = self.local.block_on(self.runtime, served);
        worker.connection_closed();
        if let Some(conn) = parked {
            self.lot.park(conn);
        }
    }
}

impl std::fmt::Debug for Classic<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classic").field("listener", &self.listener.address()).finish_non_exhaustive()
    }
}
