//! Waiting for a connection on the shared listener without a thundering herd, and accepting it.
//!
//! Each waiting thread has its own epoll holding the listener with `EPOLLEXCLUSIVE` (and the
//! worker's stop eventfd): the kernel wakes one waiter per new connection instead of every
//! worker. The wait must be a real `epoll_wait` by a thread: an epoll nested in another (such
//! as tokio's) is not a "waiter" for `EPOLLEXCLUSIVE`, and every worker would wake again.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{SockFlag, accept4};

use crate::WorkerError;
use crate::transport::Listener;

const LISTENER: u64 = 0;
const STOP: u64 = 1;

/// What a wait brought.
#[derive(Debug)]
pub(crate) enum Waited {
    /// A connection, and the `accept4` calls it took (EAGAIN included).
    Connection(OwnedFd, u64),
    /// The stop eventfd is readable.
    Stop,
    /// The timeout passed, or the connection went to a sibling: `accept4` calls made.
    Nothing(u64),
}

/// One thread's private wait on the shared listener.
#[derive(Debug)]
pub(crate) struct Acceptor<'l> {
    epoll: Epoll,
    listener: &'l Listener,
}

impl<'l> Acceptor<'l> {
    pub(crate) fn new(listener: &'l Listener, stop: impl AsFd) -> Result<Acceptor<'l>, WorkerError> {
        let sys = |what| move |errno| WorkerError::Sys { what, errno };
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(sys("epoll_create"))?;
        epoll
            .add(listener.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, LISTENER))
            .map_err(sys("epoll_ctl listener"))?;
        epoll.add(stop, EpollEvent::new(EpollFlags::EPOLLIN, STOP)).map_err(sys("epoll_ctl eventfd"))?;
        Ok(Acceptor { epoll, listener })
    }

    /// Waits (up to `timeout`, `None`: forever) for a connection or the stop request.
    ///
    /// When the kernel woke this waiter for a connection, the connection is taken even if the
    /// stop request arrived at the same moment: with `EPOLLEXCLUSIVE` nobody else was woken
    /// for it, and it would otherwise wait in the backlog until some later connection wakes a
    /// sibling. The caller serves it as any request in hand.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Result<Waited, WorkerError> {
        let mut events = [EpollEvent::empty(); 2];
        let timeout = timeout.map_or(EpollTimeout::NONE, |t| EpollTimeout::try_from(t).unwrap_or(EpollTimeout::NONE));
        let ready = match self.epoll.wait(&mut events, timeout) {
            Ok(n) => &events[..n],
            Err(Errno::EINTR) => &[][..],
            Err(errno) => return Err(WorkerError::Sys { what: "epoll_wait", errno }),
        };
        if ready.iter().any(|e| e.data() == LISTENER) {
            return self.accept();
        }
        Ok(if ready.iter().any(|e| e.data() == STOP) { Waited::Stop } else { Waited::Nothing(0) })
    }

    fn accept(&self) -> Result<Waited, WorkerError> {
        match accept4(self.listener.as_fd(), SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK) {
            Ok(fd) => Ok(Waited::Connection(fd, 1)),
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
                Ok(Waited::Nothing(1))
            }
            Err(errno) => Err(WorkerError::Sys { what: "accept4", errno }),
        }
    }
}
