//! A worker's main loop: wait for a connection without a thundering herd, serve it, repeat.

use std::rc::Rc;
use std::sync::{Condvar, Mutex};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;

use prefork_scoreboard::{Board, Doorbell, SlotWriter, WorkerState};
use tokio::sync::mpsc;
use tokio::task::LocalSet;

use bytes::Bytes;

use crate::WorkerError;
use crate::accept::{Acceptor, Waited};
use crate::classic::{STARVED_ACCEPTS, serve_classic};
use crate::config::WorkerConfig;
use crate::connection::{Incoming, serve_connection};
use crate::pause::PauseNudge;
use crate::router::Router;
use crate::shared::WorkerShared;
use crate::stop::{StopSignal, StopWatch, stop_requested};
use crate::transport::{Listener, Peer};

/// What ties a worker to its pool: its scoreboard slot, the board, the parent's doorbell.
#[derive(Debug)]
pub struct PoolLink {
    /// This worker's slot (the only writer of it).
    pub slot: SlotWriter<'static>,
    /// The whole board, read by the status page.
    pub board: &'static Board,
    /// The segment's name, shown by the status page.
    pub scoreboard_name: String,
    /// Rung when the worker becomes ready, stops being idle, or asks to be replaced, so the
    /// parent acts at once.
    pub doorbell: Option<Doorbell>,
}

/// The HTTP side of one worker process.
#[derive(Debug)]
pub struct HttpWorker<'l> {
    listener: &'l Listener,
    router: Router,
    config: WorkerConfig,
}

impl<'l> HttpWorker<'l> {
    /// A worker serving `listener` (bound by the parent, shared by all workers).
    pub fn new(listener: &'l Listener, router: Router, config: WorkerConfig) -> HttpWorker<'l> {
        HttpWorker { listener, router, config }
    }

    /// Serves connections until SIGTERM. Call it in the forked worker process, once it is
    /// ready to serve: the slot goes from `S` to `_` here.
    ///
    /// With `worker_connections` 1 (classic prefork), the worker's only thread waits for a
    /// connection, serves it to its end, and waits again: while it holds a connection it does
    /// not accept, so idle siblings take new ones. With more, a second thread waits and
    /// accepts while the runtime serves, and stops accepting while the worker is full.
    pub fn run(self, link: PoolLink) -> Result<(), WorkerError> {
        let stop = crate::stop::install()?;
        let pause = PauseNudge::install()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| WorkerError::Io { what: "build runtime", source })?;
        let local = LocalSet::new();
        let stop_watch = {
            let _entered = runtime.enter();
            crate::stop::watch(&stop).map_err(|source| WorkerError::Io { what: "watch stop eventfd", source })?
        };
        let PoolLink { slot, board, scoreboard_name, doorbell } = link;
        let connections = self.config.worker_connections.max(1);
        let worker = Rc::new(WorkerShared::new(slot, board, scoreboard_name, doorbell, self.router, self.config));
        crate::control::serving(&worker);
        // Each way of serving marks the worker ready (`WorkerShared::become_ready`) only once
        // all it needs exists: a worker that fails before is a boot failure, backed off.
        if connections == 1 {
            return serve_classic(self.listener, &worker, (&stop, &pause), &stop_watch, &runtime, &local);
        }
        let context =
            Context { listener: self.listener, worker: &worker, stop: &stop, pause: &pause, stop_watch: &stop_watch };
        context.serve_many(&runtime, &local, connections)
    }
}

struct Context<'a> {
    listener: &'a Listener,
    worker: &'a Rc<WorkerShared>,
    stop: &'a StopSignal,
    pause: &'a PauseNudge,
    stop_watch: &'a StopWatch<'a>,
}

impl Context<'_> {
    /// Up to `limit` connections at once: an accept thread waits (a real waiter, so
    /// `EPOLLEXCLUSIVE` still wakes one worker per connection) while a place is free, and hands
    /// connections to the runtime.
    ///
    /// On stop the thread stops accepting, but every connection it already took is served: the
    /// runtime keeps reading the channel until the thread has gone.
    fn serve_many(&self, runtime: &tokio::runtime::Runtime, local: &LocalSet, limit: usize) -> Result<(), WorkerError> {
        let worker = self.worker;
        let acceptor =
            Acceptor::new(self.listener, self.stop.as_fd(), false, self.pause, (worker.board, &worker.slot))?;
        let free = ConnectionPlaces::new(limit);
        worker.become_ready();
        let (tx, mut rx) = mpsc::unbounded_channel();
        std::thread::scope(|scope| {
            let (free, idle_check) = (&free, worker.idle_check_interval());
            let mut acceptor = acceptor;
            scope.spawn(move || accept_loop(&mut acceptor, free, idle_check, &tx));
            // However the runtime leaves (a panic included), the accept thread must stop too,
            // or the scope would wait for it forever.
            let _close_on_exit = CloseOnDrop(free);
            local.block_on(runtime, async {
                let mut open = FuturesUnordered::new();
                let (mut stopping, mut accepting) = (false, true);
                let mut failure = None;
                loop {
                    tokio::select! {
                        handed = rx.recv(), if accepting => match handed {
                            Some(Handed::Connection(fd, peer, calls)) => {
                                worker.record_accept_calls(calls);
                                let id = worker.next_connection_id();
                                worker.connection_opened();
                                open.push(async move {
                                    let stop = self.stop_watch;
                                    let incoming =
                                        Incoming { fd, peer, received: Bytes::new(), id, accepted_here: true };
                                    serve_connection(incoming, worker, stop, false).await;
                                    worker.connection_closed();
                                    free.give_back();
                                });
                            }
                            Some(Handed::Nothing(calls)) => {
                                worker.record_accept_calls(calls);
                                worker.on_idle_tick();
                            }
                            Some(Handed::Failed(error)) => {
                                tracing::error!(%error, "accept thread failed; finishing open connections");
                                failure = Some(error);
                            }
                            None => accepting = false,
                        },
                        Some(()) = open.next(), if !open.is_empty() => {}
                        () = self.stop_watch.requested(), if !stopping => {}
                    }
                    // Told to stop, or at a recycling limit's margin: no new connections.
                    if !stopping && (stop_requested() || !accepting || worker.must_leave()) {
                        // No new connections; the open ones finish (they see the stop too).
                        stopping = true;
                        let state = if open.is_empty() { WorkerState::IdleKill } else { WorkerState::Graceful };
                        worker.enter_stopping(state);
                        free.close();
                    }
                    if stopping && !accepting && open.is_empty() {
                        break;
                    }
                }
                failure.map_or(Ok(()), Err)
            })
        })
    }
}

/// What the accept thread hands to the runtime.
enum Handed {
    Connection(std::os::fd::OwnedFd, Peer, u64),
    /// A wait ended without a connection (timeout, or a sibling took it): `accept4` calls.
    Nothing(u64),
    /// The wait itself failed; the thread has stopped.
    Failed(WorkerError),
}

/// The accept thread of a worker serving several connections: takes a free place, waits for a
/// connection, hands it over; stops when the places are closed, on stop, or on failure.
fn accept_loop(
    acceptor: &mut Acceptor<'_>,
    free: &ConnectionPlaces,
    idle_check: Option<std::time::Duration>,
    tx: &mpsc::UnboundedSender<Handed>,
) {
    let mut starved = 0;
    while free.take() {
        let handed = match acceptor.wait(idle_check) {
            Ok(Waited::Connection(fd, peer, calls)) => Handed::Connection(fd, peer, calls),
            Ok(Waited::OutOfDescriptors(errno)) => {
                free.give_back();
                // Holding no connection to close, it would wait forever, counted ready and
                // serving nobody: better to fail, and let the supervisor back off.
                starved = if free.all_free() { starved + 1 } else { 0 };
                if starved >= STARVED_ACCEPTS {
                    let what = "accept: out of descriptors while holding none";
                    let _ = tx.send(Handed::Failed(WorkerError::Sys { what, errno }));
                    return;
                }
                Handed::Nothing(1)
            }
            Ok(Waited::Adopted(_)) => unreachable!("this acceptor does not watch the hand-off queue"),
            Ok(Waited::Nothing(calls)) => {
                free.give_back();
                Handed::Nothing(calls)
            }
            Ok(Waited::Stop) => return,
            Err(error) => {
                let _ = tx.send(Handed::Failed(error));
                return;
            }
        };
        if tx.send(handed).is_err() {
            return;
        }
    }
}

/// Closes the free places when dropped.
struct CloseOnDrop<'a>(&'a ConnectionPlaces);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Free connection places of a worker (of `worker_connections`), shared with its accept
/// thread. (Not scoreboard slots: a worker has one slot, and up to this many connections.)
#[derive(Debug)]
struct ConnectionPlaces {
    free: Mutex<(usize, bool)>,
    changed: Condvar,
    limit: usize,
}

impl ConnectionPlaces {
    fn new(limit: usize) -> ConnectionPlaces {
        ConnectionPlaces { free: Mutex::new((limit, false)), changed: Condvar::new(), limit }
    }

    /// Waits for a free place and takes it; false once closed.
    fn take(&self) -> bool {
        let mut state = self.free.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match *state {
                (_, true) => return false,
                (0, false) => state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
                (n, false) => {
                    *state = (n - 1, false);
                    return true;
                }
            }
        }
    }

    fn give_back(&self) {
        let mut state = self.free.lock().unwrap_or_else(|p| p.into_inner());
        state.0 += 1;
        self.changed.notify_all();
    }

    /// No connection is open.
    fn all_free(&self) -> bool {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).0 == self.limit
    }

    fn close(&self) {
        let mut state = self.free.lock().unwrap_or_else(|p| p.into_inner());
        state.1 = true;
        self.changed.notify_all();
    }
}
