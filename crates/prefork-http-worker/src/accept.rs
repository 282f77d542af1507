//! Waiting for work without a thundering herd: a new connection on the shared listener, or a
//! connection with a complete request that a sibling passed through the hand-off queue.
//!
//! Each waiting thread has its own epoll holding the listener and the queue with
//! `EPOLLEXCLUSIVE` (and the worker's stop eventfd): the kernel wakes one waiter per new
//! connection instead of every worker. The wait must be a real `epoll_wait` by a thread: an
//! epoll nested in another (such as tokio's) is not a "waiter" for `EPOLLEXCLUSIVE`, and every
//! worker would wake again.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::WorkerError;
use crate::handoff::MAX_MESSAGE_BYTES;
use crate::parked::ParkedConnection;
use crate::pause::PauseNudge;
use crate::transport::{Listener, Peer};
use prefork_scoreboard::{Board, SlotWriter};

const LISTENER: u64 = 0;
const STOP: u64 = 1;
const HANDOFF: u64 = 2;
const PAUSE: u64 = 3;

/// What a wait brought.
#[derive(Debug)]
pub(crate) enum Waited {
    /// A new connection, its peer, and the `accept4` calls it took (EAGAIN included).
    Connection(OwnedFd, Peer, u64),
    /// A connection a sibling passed on (usually with its request complete).
    Adopted(ParkedConnection),
    /// The stop eventfd is readable.
    Stop,
    /// The timeout passed, or the connection went to a sibling: `accept4` calls made.
    Nothing(u64),
    /// `accept4` failed for want of descriptors or memory (after a pause): one call made.
    OutOfDescriptors(Errno),
}

/// One thread's private wait on the shared listener (and hand-off queue).
#[derive(Debug)]
pub(crate) struct Acceptor<'l> {
    epoll: Epoll,
    listener: &'l Listener,
    /// The pool's pause: while it is paused the listener is out of `epoll` (new connections
    /// wait in the listen queue); parked and handed-off connections are still served.
    pause: &'l PauseNudge,
    board: &'static Board,
    /// Where this worker says whether it follows the pause (ctl and tests wait for it).
    slot: &'l SlotWriter<'static>,
    listening: bool,
    /// Room for one hand-off message (only when the queue is watched).
    message: Vec<u8>,
    /// A descriptor kept open to be closed just before taking a connection from the queue: a
    /// worker out of descriptors would otherwise take the message and lose its socket (the
    /// kernel closes what it cannot install).
    reserve: Option<OwnedFd>,
}

/// A spare descriptor: a duplicate of one already open (`F_DUPFD_CLOEXEC`), which fails only
/// for want of a descriptor, unlike opening a file (a sandbox may have no `/dev/null`).
fn spare_descriptor(of: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    of.try_clone_to_owned().map_err(|e| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))
}

/// Out of descriptors (the process's or the system's).
fn out_of_descriptors(errno: Errno) -> bool {
    matches!(errno, Errno::EMFILE | Errno::ENFILE)
}

impl<'l> Acceptor<'l> {
    /// A wait on `listener` and `stop`, and on the listener's hand-off queue if `adopt`.
    pub(crate) fn new(
        listener: &'l Listener,
        stop: impl AsFd,
        adopt: bool,
        pause: &'l PauseNudge,
        (board, slot): (&'static Board, &'l SlotWriter<'static>),
    ) -> Result<Acceptor<'l>, WorkerError> {
        let sys = |what| move |errno| WorkerError::Sys { what, errno };
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(sys("epoll_create"))?;
        let exclusive = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
        // (The nudge's handler is installed already: a pause from now on wakes this wait.)
        let listening = !board.is_paused();
        if listening {
            epoll.add(listener.as_fd(), EpollEvent::new(exclusive, LISTENER)).map_err(sys("epoll_ctl listener"))?;
        }
        epoll.add(stop, EpollEvent::new(EpollFlags::EPOLLIN, STOP)).map_err(sys("epoll_ctl eventfd"))?;
        epoll.add(pause.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, PAUSE)).map_err(sys("epoll_ctl pause"))?;
        // A worker with no descriptor left for even one connection would boot only to fail
        // every accept: that is a boot failure (the supervisor backs off), said at once.
        let queue = listener.handoff().receiver();
        let spare = spare_descriptor(queue).map_err(sys("no descriptor free for a connection"))?;
        let (mut message, mut reserve) = (Vec::new(), None);
        if adopt {
            epoll.add(queue, EpollEvent::new(exclusive, HANDOFF)).map_err(sys("epoll_ctl hand-off queue"))?;
            message = vec![0; MAX_MESSAGE_BYTES];
            reserve = Some(spare);
        }
        slot.set_accepting(listening);
        Ok(Acceptor { epoll, listener, pause, board, slot, listening, message, reserve })
    }

    /// The pool was paused or resumed: the listener leaves this wait, or comes back.
    fn follow_pause(&mut self) -> Result<(), WorkerError> {
        self.pause.drain();
        let paused = self.board.is_paused();
        if paused != self.listening {
            return Ok(());
        }
        let sys = |what| move |errno| WorkerError::Sys { what, errno };
        if paused {
            self.epoll.delete(self.listener.as_fd()).map_err(sys("epoll_ctl listener"))?;
            tracing::debug!("paused: not accepting");
        } else {
            let exclusive = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
            self.epoll
                .add(self.listener.as_fd(), EpollEvent::new(exclusive, LISTENER))
                .map_err(sys("epoll_ctl listener"))?;
            tracing::debug!("resumed: accepting");
        }
        self.listening = !paused;
        self.slot.set_accepting(self.listening);
        Ok(())
    }

    /// Waits (up to `timeout`, `None`: forever) for a connection or the stop request.
    ///
    /// When the kernel woke this waiter for a connection, the connection is taken even if the
    /// stop request arrived at the same moment: with `EPOLLEXCLUSIVE` nobody else was woken
    /// for it, and it would otherwise wait in the backlog until some later connection wakes a
    /// sibling. The caller serves it as any request in hand.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> Result<Waited, WorkerError> {
        let mut events = [EpollEvent::empty(); 4];
        let timeout = timeout.map_or(EpollTimeout::NONE, |t| EpollTimeout::try_from(t).unwrap_or(EpollTimeout::NONE));
        let ready = match self.epoll.wait(&mut events, timeout) {
            Ok(n) => &events[..n],
            Err(Errno::EINTR) => &[][..],
            Err(errno) => return Err(WorkerError::Sys { what: "epoll_wait", errno }),
        };
        let (listener, handoff, stop) = ready.iter().fold((false, false, false), |(l, h, s), e| {
            (l || e.data() == LISTENER, h || e.data() == HANDOFF, s || e.data() == STOP)
        });
        if ready.iter().any(|e| e.data() == PAUSE) {
            self.follow_pause()?;
        }
        let listener = listener && self.listening;
        // A request already complete first: its client has waited longest.
        if handoff {
            match self.adopt() {
                Ok(Some(conn)) => return Ok(Waited::Adopted(conn)),
                Ok(None) => {}
                Err(errno) => return Ok(Waited::OutOfDescriptors(errno)),
            }
        }
        if listener {
            return self.accept();
        }
        Ok(if stop { Waited::Stop } else { Waited::Nothing(0) })
    }

    /// Takes the next connection from the hand-off queue, if any, with a descriptor freed for
    /// it first (see `reserve`). Out of descriptors even so: pauses, as a failed accept does,
    /// and says so (`EMFILE`, `ENFILE`); any other failure is logged and taken as "nothing".
    pub(crate) fn adopt(&mut self) -> Result<Option<ParkedConnection>, Errno> {
        let queue = self.listener.handoff().receiver();
        if self.reserve.is_none() {
            match spare_descriptor(queue) {
                Ok(spare) => self.reserve = Some(spare),
                Err(errno) if out_of_descriptors(errno) => {
                    tracing::warn!(%errno, "out of descriptors: not taking connections from siblings; pausing 100 ms");
                    std::thread::sleep(Duration::from_millis(100));
                    return Err(errno);
                }
                // Not for want of a descriptor: take the connection without a spare.
                Err(errno) => tracing::debug!(%errno, "no spare descriptor for the hand-off queue"),
            }
        }
        drop(self.reserve.take());
        let received = self.listener.handoff().receive(&mut self.message);
        self.reserve = spare_descriptor(queue).ok();
        match received {
            Ok(conn) => Ok(conn),
            Err(error) => {
                let errno = error.raw_os_error().map_or(Errno::EIO, Errno::from_raw);
                tracing::error!(%error, "hand-off queue: receive failed; pausing 100 ms");
                std::thread::sleep(Duration::from_millis(100));
                if out_of_descriptors(errno) { Err(errno) } else { Ok(None) }
            }
        }
    }

    fn accept(&mut self) -> Result<Waited, WorkerError> {
        let mut accepted = self.listener.accept();
        // The descriptor kept for the queue is this connection's if none other is free: the
        // reserve must not cost the listener a connection.
        if matches!(accepted, Err(Errno::EMFILE)) && self.reserve.is_some() {
            drop(self.reserve.take());
            accepted = self.listener.accept();
            self.reserve = spare_descriptor(self.listener.handoff().receiver()).ok();
        }
        match accepted {
            Ok((fd, peer)) => Ok(Waited::Connection(fd, peer, 1)),
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
            ) => Ok(Waited::Nothing(1)),
            // Out of descriptors or memory: the listener stays readable, so pause instead of
            // spinning, and let a sibling try.
            Err(errno @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                tracing::warn!(%errno, "accept failed; pausing 100 ms");
                std::thread::sleep(Duration::from_millis(100));
                Ok(Waited::OutOfDescriptors(errno))
            }
            Err(errno) => Err(WorkerError::Sys { what: "accept4", errno }),
        }
    }
}
