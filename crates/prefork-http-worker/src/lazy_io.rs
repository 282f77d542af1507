//! A connection's socket as hyper sees it: reads and writes go straight to the non-blocking
//! socket, and the socket joins the runtime's reactor only once the connection has to wait.
//!
//! Most connections a prefork worker serves never wait: their request was read whole while
//! they were parked (or in the same read that took them), the handler answers at once, and
//! the response fits the socket's buffer. Registering each of them with tokio's epoll would
//! cost two system calls (`EPOLL_CTL_ADD`, `EPOLL_CTL_DEL`) and a third for the first
//! readiness (`epoll_wait`), more than the request itself. So a [`LazySocket`] reads and
//! writes directly, and registers (an `AsyncFd`) only when a read or write would block and
//! the connection really must wait: for its next keep-alive request, for a slow reader, or
//! to notice a client that leaves while an async handler runs.
//!
//! A classic worker (one connection at a time, nothing else to run) waits for a keep-alive
//! client's next request the way a blocking server does: in `recv` itself, for at most
//! [`IDLE_READ_WAIT`] (`SO_RCVTIMEO`), so a request on a busy keep-alive connection costs two
//! system calls, `recvfrom` and `sendmsg`, as in the process model's own ceiling. Longer than
//! that (or a signal), and the connection joins the reactor, where the worker's timers and its
//! stop request are seen. Only the first bytes of a request are waited for so: the rest is read
//! without waiting, and a request that does not come whole goes to the parking thread. (While
//! it waits, the worker's other tasks — a handler's `spawn_local`s, timers — wait too, for at
//! most that long.) Every other call passes `MSG_DONTWAIT`: the socket itself is left in
//! blocking mode for that one wait.
//!
//! One read is deliberately *not* a reason to register: hyper reads again right after it has
//! parsed a request head, only to notice a client that hangs up mid-request. While a request
//! runs ([`LazyShared::set_mid_request`]) that read is answered `Pending` at no cost; if the
//! handler does not answer at once (its future is pending) the connection arms
//! ([`LazyShared::arm`]): it registers and wakes hyper to read again, this time waiting for
//! real. A blocking handler's request is never interrupted anyway.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker, ready};

use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// How long a classic worker waits in `recv` itself for a keep-alive client's next request
/// before it joins the reactor (the connection's idle check then lets it go parked).
pub(crate) const IDLE_READ_WAIT: Duration = Duration::from_millis(100);

/// The socket, before and after it joined the reactor.
#[derive(Debug)]
enum Socket {
    Direct(OwnedFd),
    Registered(AsyncFd<OwnedFd>),
    /// Taken back (see [`LazySocket::into_fd`]); never seen by hyper again.
    Gone,
}

/// What the connection and its socket share (single-threaded: the worker's runtime thread).
#[derive(Debug)]
pub(crate) struct LazyShared {
    socket: RefCell<Socket>,
    /// The last direct read found the socket empty (or short): the next read without a
    /// registration may answer `Pending` without asking the kernel.
    drained: Cell<bool>,
    /// A request is running on this HTTP/1.1 connection: reads are only hyper's look for a
    /// hang-up (see the module docs). Never set for HTTP/2, which reads all along.
    mid_request: Cell<bool>,
    /// The task of a read answered `Pending` without registration, to wake once armed.
    deferred_read: RefCell<Option<Waker>>,
    /// Wait for the next request in `recv` itself (a classic worker's HTTP/1.1 connection; see
    /// the module docs).
    wait_in_recv: Cell<bool>,
    /// `SO_RCVTIMEO` is set (once per connection, on its first such wait).
    recv_timeout_set: Cell<bool>,
    /// The wait in `recv` is for the first bytes of the next request only: once some came,
    /// the rest is read without waiting, so a client trickling its request cannot hold the
    /// worker (its connection goes to the parking thread instead). Set again when a request
    /// ends.
    may_wait_in_recv: Cell<bool>,
}

impl LazyShared {
    /// HTTP/2 multiplexes requests whose handlers must run while the connection waits: never
    /// wait in `recv` then.
    pub(crate) fn never_wait_in_recv(&self) {
        self.wait_in_recv.set(false);
    }

    /// Marks a request running (or not) on this connection.
    pub(crate) fn set_mid_request(&self, running: bool) {
        self.mid_request.set(running);
        if !running {
            self.may_wait_in_recv.set(true);
        }
    }

    /// The request's handler is waiting: join the reactor now, so that a client hanging up
    /// meanwhile ends the request, and wake the read that was put off. Registered even when no
    /// read was put off yet: a handler streaming the request body reads it after its answer
    /// began, and those reads must wait for real.
    pub(crate) fn arm(&self) {
        if self.register().is_ok()
            && let Some(waker) = self.deferred_read.borrow_mut().take()
        {
            waker.wake();
        }
    }

    fn register(&self) -> io::Result<()> {
        let mut socket = self.socket.borrow_mut();
        if let Socket::Direct(_) = &*socket {
            let Socket::Direct(fd) = std::mem::replace(&mut *socket, Socket::Gone) else { unreachable!() };
            // SAFETY: the OwnedFd stays open and the same descriptor for the AsyncFd's whole
            // life (it owns it; `into_inner` gives it back).
            match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) } {
                Ok(registered) => *socket = Socket::Registered(registered),
                Err(error) => {
                    let (fd, cause) = error.into_parts();
                    *socket = Socket::Direct(fd);
                    return Err(cause);
                }
            }
        }
        Ok(())
    }
}

/// A plain (TCP or unix) accepted socket, non-blocking, joining the reactor only when needed.
#[derive(Debug)]
pub(crate) struct LazySocket {
    shared: Rc<LazyShared>,
}

impl LazySocket {
    /// `drained`: everything the socket held was just read (a parked connection's request),
    /// so the first read need not ask the kernel. `wait_in_recv`: a classic worker, which may
    /// wait for the next request in `recv` (the socket must be in blocking mode).
    pub(crate) fn new(fd: OwnedFd, drained: bool, wait_in_recv: bool) -> LazySocket {
        let shared = LazyShared {
            socket: RefCell::new(Socket::Direct(fd)),
            drained: Cell::new(drained),
            mid_request: Cell::new(false),
            deferred_read: RefCell::new(None),
            wait_in_recv: Cell::new(wait_in_recv),
            recv_timeout_set: Cell::new(false),
            may_wait_in_recv: Cell::new(true),
        };
        LazySocket { shared: Rc::new(shared) }
    }

    /// The handle the connection keeps (to mark requests and arm).
    pub(crate) fn shared(&self) -> Rc<LazyShared> {
        Rc::clone(&self.shared)
    }

    /// Takes the socket back, out of the reactor if it had joined it (to park the connection).
    pub(crate) fn into_fd(self) -> io::Result<OwnedFd> {
        match std::mem::replace(&mut *self.shared.socket.borrow_mut(), Socket::Gone) {
            Socket::Direct(fd) => Ok(fd),
            Socket::Registered(registered) => Ok(registered.into_inner()),
            Socket::Gone => Err(io::Error::other("socket already taken")),
        }
    }

    /// Runs `op` on the socket: directly while unregistered (registering on `WouldBlock`: the
    /// connection must wait), through readiness after. `exhausted` tells from `op`'s result
    /// that the socket has nothing more for now (a short read), so that readiness is cleared
    /// at once rather than by one more call answering `EAGAIN`.
    fn poll_io<T>(
        &self,
        cx: &mut Context<'_>,
        interest: Interest,
        mut op: impl FnMut(RawFd) -> io::Result<T>,
        exhausted: impl Fn(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        loop {
            {
                let socket = self.shared.socket.borrow();
                match &*socket {
                    Socket::Direct(fd) => match op(fd.as_raw_fd()) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        result => return Poll::Ready(result),
                    },
                    Socket::Registered(registered) => {
                        let mut guard = if interest.is_readable() {
                            ready!(registered.poll_read_ready(cx))?
                        } else {
                            ready!(registered.poll_write_ready(cx))?
                        };
                        match guard.try_io(|fd| op(fd.as_raw_fd())) {
                            Ok(result) => {
                                if result.as_ref().is_ok_and(&exhausted) {
                                    // As tokio's own streams do: only a readiness event newer
                                    // than this one is kept.
                                    guard.clear_ready();
                                }
                                return Poll::Ready(result);
                            }
                            Err(_would_block) => continue,
                        }
                    }
                    Socket::Gone => return Poll::Ready(Err(io::Error::from(io::ErrorKind::NotConnected))),
                }
            }
            self.shared.register()?;
        }
    }
}

impl LazySocket {
    /// Waits in `recv` for at most [`IDLE_READ_WAIT`]: `Some` with what came (bytes, the end,
    /// an error), or `None` if nothing did (timed out, or a signal): join the reactor then.
    fn wait_in_recv(&self, buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
        let socket = self.shared.socket.borrow();
        let Socket::Direct(fd) = &*socket else { return None };
        let fd = fd.as_raw_fd();
        if !self.shared.recv_timeout_set.replace(true) {
            let timeout = libc::timeval { tv_sec: 0, tv_usec: IDLE_READ_WAIT.as_micros() as libc::suseconds_t };
            // SAFETY: setsockopt with a live socket and a timeval of the size given.
            let set = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const timeout).cast(),
                    size_of::<libc::timeval>() as libc::socklen_t,
                )
            };
            if set != 0 {
                return None;
            }
        }
        // SAFETY: recv only writes into the unfilled part; only what it reports is marked.
        let unfilled = unsafe { buf.unfilled_mut() };
        let n = loop {
            // SAFETY: receiving into the unfilled part of a buffer we hold mutably.
            let n = unsafe { libc::recv(fd, unfilled.as_mut_ptr().cast(), unfilled.len(), 0) };
            if n >= 0 {
                break n;
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                // A signal that is not the stop (log reopening, a tracer attaching): wait on.
                io::ErrorKind::Interrupted if !crate::stop::stop_requested() => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => return None,
                _ => return Some(Err(error)),
            }
        };
        let n = n as usize;
        self.shared.drained.set(n < unfilled.len());
        self.shared.may_wait_in_recv.set(false);
        // SAFETY: recv wrote `n` bytes.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Some(Ok(()))
    }
}

fn last_error<T>(result: isize, ok: impl FnOnce(usize) -> T) -> io::Result<T> {
    if result < 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::Interrupted {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        Err(error)
    } else {
        Ok(ok(result as usize))
    }
}

impl AsyncRead for LazySocket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let shared = &self.shared;
        let direct = matches!(&*shared.socket.borrow(), Socket::Direct(_));
        if direct && shared.drained.get() && shared.mid_request.get() {
            // Only hyper's look for a hang-up while a request runs: put off until armed.
            *shared.deferred_read.borrow_mut() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if direct && shared.wait_in_recv.get() && shared.may_wait_in_recv.get() && !shared.mid_request.get() {
            // The next request of a keep-alive connection, in a classic worker: wait for it in
            // recv, briefly (see the module docs).
            match self.wait_in_recv(buf) {
                Some(result) => return Poll::Ready(result),
                None => shared.register()?,
            }
        } else if direct && shared.drained.get() {
            // Nothing was there a moment ago, and the connection waits for its next request:
            // join the reactor rather than ask the kernel once more for nothing.
            shared.register()?;
        }
        // SAFETY: recv only writes into the unfilled part, and we mark as initialised only the
        // bytes it reports written.
        let unfilled = unsafe { buf.unfilled_mut() };
        let want = unfilled.len();
        let n = ready!(self.poll_io(
            cx,
            Interest::READABLE,
            |fd| {
                // SAFETY: receiving into `want` bytes of a buffer we hold mutably.
                let n = unsafe { libc::recv(fd, unfilled.as_mut_ptr().cast(), want, libc::MSG_DONTWAIT) };
                last_error(n, |n| n)
            },
            |&n| n > 0 && n < want,
        ))?;
        shared.drained.set(n < want);
        // SAFETY: recv wrote `n` bytes.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for LazySocket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        self.poll_io(
            cx,
            Interest::WRITABLE,
            |fd| {
                // SAFETY: a msghdr naming the caller's slices (IoSlice is ABI-compatible with
                // iovec), at most IOV_MAX of them; MSG_NOSIGNAL: a gone client is an error, not a
                // SIGPIPE.
                let n = unsafe {
                    let mut message: libc::msghdr = std::mem::zeroed();
                    message.msg_iov = bufs.as_ptr().cast_mut().cast();
                    message.msg_iovlen = bufs.len().min(1024) as _;
                    libc::sendmsg(fd, &message, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
                };
                last_error(n, |n| n)
            },
            // A short write: the socket's buffer is full.
            |&n| n < total,
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let socket = self.shared.socket.borrow();
        let fd = match &*socket {
            Socket::Direct(fd) => fd.as_raw_fd(),
            Socket::Registered(registered) => registered.get_ref().as_raw_fd(),
            Socket::Gone => return Poll::Ready(Ok(())),
        };
        // SAFETY: shutdown(2) on a socket we own.
        match unsafe { libc::shutdown(fd, libc::SHUT_WR) } {
            0 => Poll::Ready(Ok(())),
            _ => match io::Error::last_os_error() {
                // The client is gone already: nothing left to shut.
                e if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
                e => Poll::Ready(Err(e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn pair() -> (LazySocket, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        (LazySocket::new(ours.into(), false, false), theirs)
    }

    fn registered(socket: &LazySocket) -> bool {
        matches!(&*socket.shared.socket.borrow(), Socket::Registered(_))
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn what_is_there_is_read_and_written_without_joining_the_reactor() {
        runtime().block_on(async {
            let (mut socket, mut theirs) = pair();
            theirs.write_all(b"request").unwrap();
            let mut buf = [0u8; 64];
            let n = socket.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"request");
            socket.write_all(b"response").await.unwrap();
            socket.shutdown().await.unwrap();
            assert!(!registered(&socket));
            let mut answer = Vec::new();
            theirs.read_to_end(&mut answer).unwrap();
            assert_eq!(answer, b"response");
        });
    }

    #[test]
    fn waiting_for_the_next_request_joins_the_reactor_and_wakes_when_it_comes() {
        runtime().block_on(async {
            let (mut socket, mut theirs) = pair();
            let writer = std::thread::spawn(move || {
                std::thread::park_timeout(std::time::Duration::from_millis(50));
                theirs.write_all(b"next").unwrap();
                theirs
            });
            let mut buf = [0u8; 64];
            let n = socket.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"next");
            assert!(registered(&socket));
            drop(writer.join());
        });
    }

    #[test]
    fn a_read_put_off_mid_request_is_woken_by_arming_and_then_sees_a_hang_up() {
        runtime().block_on(async {
            let (socket, theirs) = pair();
            let shared = socket.shared();
            shared.drained.set(true);
            shared.set_mid_request(true);
            let mut socket = Box::pin(socket);
            let mut buf = [0u8; 8];
            // Put off: pending, not registered.
            let polled = std::future::poll_fn(|cx| {
                let mut read_buf = ReadBuf::new(&mut buf);
                Poll::Ready(socket.as_mut().poll_read(cx, &mut read_buf).is_pending())
            })
            .await;
            assert!(polled);
            assert!(!registered(&socket));
            shared.arm();
            assert!(registered(&socket));
            drop(theirs);
            let n = socket.read(&mut buf).await.unwrap();
            assert_eq!(n, 0, "the hang-up is seen once armed");
        });
    }

    #[test]
    fn the_socket_comes_back_out_of_the_reactor() {
        runtime().block_on(async {
            let (socket, _theirs) = pair();
            socket.shared.register().unwrap();
            let fd = socket.into_fd().unwrap();
            // Still a working socket.
            let stream = std::os::unix::net::UnixStream::from(fd);
            assert!(stream.peer_addr().is_ok());
        });
    }
}
