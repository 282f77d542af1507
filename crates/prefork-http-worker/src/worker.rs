//! A worker's main loop: wait for a connection without a thundering herd, serve it, repeat.

use std::net::TcpListener;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{SockFlag, accept4};
use prefork_scoreboard::{Board, Doorbell, SlotWriter, WorkerState};

use crate::WorkerError;
use crate::config::WorkerConfig;
use crate::connection;
use crate::handler::ConnectionInfo;
use crate::router::Router;
use crate::shared::WorkerShared;
use crate::stop::StopSignal;

const LISTENER: u64 = 0;
const STOP: u64 = 1;

/// Why a worker's loop ended normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerOutcome {
    /// SIGTERM: stopped after finishing the request in hand (retired, recycled, reloaded or
    /// the server stopping).
    Stopped,
}

/// What ties a worker to its pool: its scoreboard slot, the board, the parent's doorbell.
#[derive(Debug)]
pub struct PoolLink {
    /// This worker's slot (the only writer of it).
    pub slot: SlotWriter<'static>,
    /// The whole board, read by the status page.
    pub board: &'static Board,
    /// The segment's name, shown by the status page.
    pub scoreboard_name: String,
    /// Rung whenever the worker stops being idle, so the parent can fork spares at once.
    pub doorbell: Option<Doorbell>,
}

/// The HTTP side of one worker process.
#[derive(Debug)]
pub struct HttpWorker<'l> {
    listener: &'l TcpListener,
    router: Router,
    config: WorkerConfig,
}

impl<'l> HttpWorker<'l> {
    /// A worker serving `listener` (bound by the parent, shared by all workers).
    pub fn new(listener: &'l TcpListener, router: Router, config: WorkerConfig) -> HttpWorker<'l> {
        HttpWorker { listener, router, config }
    }

    /// Serves connections one at a time until SIGTERM or the request limit. Call it in the
    /// forked worker process, once it is ready to serve: the slot goes from `S` to `_` here.
    ///
    /// Classic prefork: while a worker holds a connection it does not accept, so idle
    /// siblings take new ones. Each idle worker waits in its own epoll on the shared listener
    /// with `EPOLLEXCLUSIVE`, so the kernel wakes one waiter per connection instead of all.
    pub fn run(self, link: PoolLink) -> Result<WorkerOutcome, WorkerError> {
        let stop = StopSignal::install()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| WorkerError::Io { what: "build runtime", source })?;
        let stop_watch = {
            let _entered = runtime.enter();
            stop.watch().map_err(|source| WorkerError::Io { what: "watch stop eventfd", source })?
        };
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(sys("epoll_create"))?;
        epoll
            .add(self.listener.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, LISTENER))
            .map_err(sys("epoll_ctl listener"))?;
        epoll.add(stop.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, STOP)).map_err(sys("epoll_ctl eventfd"))?;

        let PoolLink { slot, board, scoreboard_name, doorbell } = link;
        let worker = Rc::new(WorkerShared::new(slot, board, scoreboard_name, doorbell, self.router, self.config));
        worker.sample_usage_if_due();
        // Ready: tell the supervisor at once, so a reload or a recycling replacement that was
        // waiting for this worker completes now rather than at the next maintenance tick.
        worker.ring();
        let mut events = [EpollEvent::empty(); 2];
        loop {
            if stop.requested() {
                worker.enter_stopping(WorkerState::IdleKill);
                return Ok(WorkerOutcome::Stopped);
            }
            worker.set_state(WorkerState::Idle);
            let timeout = match worker.idle_check_interval() {
                Some(interval) => EpollTimeout::try_from(interval).unwrap_or(EpollTimeout::NONE),
                None => EpollTimeout::NONE,
            };
            let ready = match epoll.wait(&mut events, timeout) {
                Ok(n) => &events[..n],
                Err(Errno::EINTR) => &[][..],
                Err(errno) => return Err(WorkerError::Sys { what: "epoll_wait", errno }),
            };
            // With EPOLLEXCLUSIVE the kernel woke only this worker for the new connection: if
            // the stop request raced with that wake-up, the connection must still be taken
            // here, or it would wait in the backlog until some later connection wakes a
            // sibling. It is then served with keep-alive off, as any request in hand.
            if !ready.iter().any(|e| e.data() == LISTENER) {
                if ready.is_empty() {
                    // Timed out: an idle worker ages and its memory may grow too.
                    worker.sample_usage_if_due();
                    worker.check_recycle_limits();
                }
                continue;
            }
            worker.slot.record_accept_call();
            let fd = match accept4(self.listener.as_fd(), SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK) {
                Ok(fd) => fd,
                // Another worker took it, the client gave up while queued, or (accept(2)) a
                // network error already pending on the new socket: that connection only.
                Err(
                    Errno::EAGAIN
                    | Errno::ECONNABORTED
                    | Errno::EINTR
                    | Errno::EPROTO
                    | Errno::ENETDOWN
                    | Errno::ENOPROTOOPT
                    | Errno::EHOSTDOWN
                    | Errno::ENONET
                    | Errno::EHOSTUNREACH
                    | Errno::EOPNOTSUPP
                    | Errno::ENETUNREACH
                    | Errno::EPERM,
                ) => continue,
                // Out of descriptors or memory: the listener stays readable, so pause instead
                // of spinning, and let a sibling try.
                Err(errno @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                    tracing::warn!(%errno, "accept failed; pausing 100 ms");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(errno) => return Err(WorkerError::Sys { what: "accept4", errno }),
            };
            worker.set_state(WorkerState::Reading);
            worker.ring();
            let stream = std::net::TcpStream::from(fd);
            let id = worker.next_connection_id();
            let (Ok(remote), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
                continue; // the client already left
            };
            let info = ConnectionInfo::tcp(remote, local, id);
            runtime.block_on(async {
                match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => connection::serve(stream, info, &worker, &stop_watch).await,
                    Err(error) => tracing::warn!(%error, "cannot register connection"),
                }
            });
        }
    }
}

fn sys(what: &'static str) -> impl Fn(Errno) -> WorkerError {
    move |errno| WorkerError::Sys { what, errno }
}
