//! Listening sockets (TCP over IPv4 or IPv6, unix domain), bound once by the parent and shared
//! by every worker, and the streams accepted from them, plain or TLS.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::handoff::HandoffQueue;
use crate::lazy_io::LazySocket;

/// Apache's and php-fpm's default backlog (the kernel caps it at `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: i32 = 511;

/// Where a server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddress {
    /// A TCP address and port, IPv4 or IPv6.
    Tcp(SocketAddr),
    /// A unix domain socket's path.
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddress::Tcp(addr) => write!(f, "{addr}"),
            ListenAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The listening socket of a worker pool, and its hand-off queue.
///
/// `O_NONBLOCK` is set once, at bind: it lives on the open file description that every forked
/// worker shares, so no worker may ever change it. Workers wait for connections in their own
/// epoll (with `EPOLLEXCLUSIVE`) and accept without blocking. No `SO_REUSEPORT`: one socket,
/// one queue, so no connection waits behind a busy worker while another is idle, and none is
/// reset when a worker exits. `TCP_NODELAY` is set on the listening socket, which accepted
/// sockets inherit (one system call less per connection).
///
/// The [`HandoffQueue`] is made with it and lives as long: connections parked between
/// requests move through it from one worker to any idle one.
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
    address: ListenAddress,
    /// The address every accepted connection has on our side, when bound to a specific one
    /// (`None`: a wildcard address, asked per connection).
    local: Option<SocketAddr>,
    handoff: HandoffQueue,
    /// A unix socket's path is removed when the listener (in the parent) is dropped.
    owns_path: bool,
}

impl Listener {
    /// Binds a TCP listener (`SO_REUSEADDR`; IPv6 addresses listen on IPv6 only).
    pub fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<Listener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        let bound = socket.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an inet socket"))?;
        let local = (!bound.ip().is_unspecified()).then_some(bound);
        Ok(Listener {
            socket,
            address: ListenAddress::Tcp(bound),
            local,
            handoff: HandoffQueue::new()?,
            owns_path: false,
        })
    }

    /// TCP: wake a worker for a new connection only once its first bytes have arrived
    /// (`TCP_DEFER_ACCEPT`, Apache's `AcceptFilter http data`, nginx's `deferred`), waiting
    /// at most about `timeout`: a connection that never speaks costs no worker a wake-up, and a
    /// worker woken for one finds its request already there. No effect on unix sockets.
    pub fn set_defer_accept(&self, timeout: Duration) -> io::Result<()> {
        if !self.is_tcp() {
            return Ok(());
        }
        let seconds = timeout.as_secs().max(1).min(i32::MAX as u64) as libc::c_int;
        // SAFETY: setsockopt with a live socket and a pointer to a local int of the size given.
        let done = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&raw const seconds).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if done == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    /// The queue through which workers pass parked connections to each other.
    #[doc(hidden)]
    pub fn handoff(&self) -> &HandoffQueue {
        &self.handoff
    }

    /// Accepts one connection (close-on-exec), with its peer taken from `accept4` itself and
    /// our side from the bound address when it is a specific one: no `getpeername` or
    /// `getsockname` per connection. The socket stays in blocking mode: every read and write
    /// of it says `MSG_DONTWAIT`, but one, a classic worker's bounded wait for a keep-alive
    /// client's next request (see [`crate::lazy_io`]).
    pub(crate) fn accept(&self) -> Result<(OwnedFd, Peer), nix::errno::Errno> {
        let flags = libc::SOCK_CLOEXEC;
        let fd = std::cell::Cell::new(-1);
        // SAFETY: accept4 writes at most `len` bytes of address into the storage socket2
        // hands us, and sets `len`; the descriptor it returns is ours alone.
        let accepted = unsafe {
            SockAddr::try_init(|storage, len| {
                let raw = libc::accept4(self.socket.as_raw_fd(), storage.cast(), len, flags);
                if raw < 0 {
                    return Err(io::Error::last_os_error());
                }
                fd.set(raw);
                Ok(())
            })
        };
        let ((), remote) = accepted.map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        // SAFETY: accept4 succeeded: `fd` is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd.get()) };
        let peer = match (&self.address, remote.as_socket()) {
            (ListenAddress::Tcp(bound), Some(remote)) => {
                let local = match self.local {
                    Some(local) => local,
                    None => socket2::SockRef::from(&fd).local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(*bound),
                };
                Peer::Tcp { remote, local }
            }
            _ => Peer::Unix,
        };
        Ok((fd, peer))
    }

    /// Binds a unix domain socket at `path`. A socket file left there by a server that is gone
    /// (nobody accepts on it) is replaced; one in use is an `AddrInUse` error.
    pub fn bind_unix(path: &Path, backlog: i32) -> io::Result<Listener> {
        if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
            std::fs::remove_file(path)?;
        }
        let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
        socket.bind(&SockAddr::unix(path)?).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                io::Error::new(io::ErrorKind::AddrInUse, format!("{} is in use by a running server", path.display()))
            } else {
                e
            }
        })?;
        socket.listen(backlog)?;
        socket.set_nonblocking(true)?;
        Ok(Listener {
            socket,
            address: ListenAddress::Unix(path.to_path_buf()),
            local: None,
            handoff: HandoffQueue::new()?,
            owns_path: true,
        })
    }

    /// Takes over a socket that another process bound and listens on: systemd's socket
    /// activation, or any service manager that passes its sockets. It must be a listening
    /// stream socket, TCP or unix; anything else is an `InvalidInput` error. It is made
    /// close-on-exec and non-blocking, and TCP sockets get `TCP_NODELAY`, as if bound here; a
    /// unix socket's file stays where it is when the server stops (its owner removes it).
    pub fn adopt(fd: OwnedFd) -> io::Result<Listener> {
        let socket = Socket::from(fd);
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        if socket.r#type()? != Type::STREAM {
            return Err(invalid("the socket passed is not a stream socket".into()));
        }
        // SO_ACCEPTCONN: listen() was called on it.
        let mut listening: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt with a live socket, a pointer to a local int and its size.
        let done = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ACCEPTCONN,
                (&raw mut listening).cast(),
                &raw mut len,
            )
        };
        if done != 0 {
            return Err(io::Error::last_os_error());
        }
        if listening == 0 {
            return Err(invalid("the socket passed is not listening".into()));
        }
        socket.set_cloexec(true)?;
        socket.set_nonblocking(true)?;
        let bound = socket.local_addr()?;
        let (address, local) = match (bound.as_socket(), bound.as_pathname()) {
            (Some(addr), _) => {
                socket.set_tcp_nodelay(true)?;
                (ListenAddress::Tcp(addr), (!addr.ip().is_unspecified()).then_some(addr))
            }
            (None, Some(path)) => (ListenAddress::Unix(path.to_path_buf()), None),
            (None, None) => {
                return Err(invalid("the socket passed is neither TCP nor a unix socket with a path".into()));
            }
        };
        Ok(Listener { socket, address, local, handoff: HandoffQueue::new()?, owns_path: false })
    }

    /// Takes over the listening socket and the hand-off queue of the server this one succeeds
    /// (a binary upgrade): as [`adopt`](Self::adopt), with the queue shared with it, so that
    /// the connections its workers pass on when they go reach this server's workers.
    pub fn adopt_with_handoff(listener: OwnedFd, sender: OwnedFd, receiver: OwnedFd) -> io::Result<Listener> {
        let mut adopted = Listener::adopt(listener)?;
        adopted.handoff = HandoffQueue::from_fds(sender, receiver)?;
        Ok(adopted)
    }

    /// The descriptors a successor needs: the listening socket, then the hand-off queue's
    /// sender and receiver.
    pub fn upgrade_fds(&self) -> [BorrowedFd<'_>; 3] {
        let [sender, receiver] = self.handoff.fds();
        [self.socket.as_fd(), sender, receiver]
    }

    /// A successor serves this socket now: a unix socket's file is left for it when this
    /// listener goes.
    pub fn disown_path(&mut self) {
        self.owns_path = false;
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub fn address(&self) -> &ListenAddress {
        &self.address
    }

    /// For the parent: a TCP listener's accept queue can be sampled (`TCP_INFO`).
    pub fn is_tcp(&self) -> bool {
        matches!(self.address, ListenAddress::Tcp(_))
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let (true, ListenAddress::Unix(path)) = (self.owns_path, &self.address) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A plain accepted stream (TCP or unix), which joins the runtime's reactor only when it must
/// wait (see [`crate::lazy_io`]).
pub(crate) type PlainStream = LazySocket;

/// The peer of an accepted connection.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Peer {
    Tcp { remote: SocketAddr, local: SocketAddr },
    Unix,
}

/// A connection's byte stream: plain or TLS over plain.
#[derive(Debug)]
pub(crate) enum Io {
    Plain(PlainStream),
    Tls(Box<tokio_rustls::server::TlsStream<PlainStream>>),
}

macro_rules! delegate_async_io {
    ($ty:ty, $($variant:path),+) => {
        impl AsyncRead for $ty {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($variant(s) => Pin::new(s).poll_read(cx, buf),)+
                }
            }
        }

        impl AsyncWrite for $ty {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($variant(s) => Pin::new(s).poll_write(cx, buf),)+
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($variant(s) => Pin::new(s).poll_write_vectored(cx, bufs),)+
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $($variant(s) => s.is_write_vectored(),)+
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($variant(s) => Pin::new(s).poll_flush(cx),)+
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($variant(s) => Pin::new(s).poll_shutdown(cx),)+
                }
            }
        }
    };
}

delegate_async_io!(Io, Io::Plain, Io::Tls);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_an_ephemeral_nonblocking_tcp_port() {
        let listener = Listener::bind_tcp("127.0.0.1:0".parse().unwrap(), DEFAULT_BACKLOG).unwrap();
        let ListenAddress::Tcp(addr) = listener.address() else { panic!() };
        assert_ne!(addr.port(), 0);
        // Non-blocking: accept with nobody connecting returns WouldBlock instead of hanging.
        assert_eq!(listener.socket.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_taken_port_is_an_error_not_a_second_socket() {
        let first = Listener::bind_tcp("127.0.0.1:0".parse().unwrap(), DEFAULT_BACKLOG).unwrap();
        let ListenAddress::Tcp(addr) = first.address().clone() else { panic!() };
        assert_eq!(Listener::bind_tcp(addr, DEFAULT_BACKLOG).unwrap_err().kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn ipv6_loopback_binds_when_available() {
        match Listener::bind_tcp("[::1]:0".parse().unwrap(), DEFAULT_BACKLOG) {
            Ok(listener) => assert!(matches!(listener.address(), ListenAddress::Tcp(SocketAddr::V6(_)))),
            // A machine without IPv6 cannot bind ::1; that is the only acceptable error.
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable, "{e}"),
        }
    }

    #[test]
    fn a_unix_socket_replaces_a_stale_file_refuses_a_live_one_and_is_removed_on_drop() {
        let path = std::env::temp_dir().join(format!("prefork-unix-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, "").unwrap(); // a stale file: nobody listens
        let listener = Listener::bind_unix(&path, DEFAULT_BACKLOG).unwrap();
        assert_eq!(listener.address().to_string(), format!("unix:{}", path.display()));
        let err = Listener::bind_unix(&path, DEFAULT_BACKLOG).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        drop(listener);
        assert!(!path.exists());
    }

    #[test]
    fn an_adopted_socket_is_a_listener_as_if_bound_here_and_its_file_stays() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = Listener::adopt(OwnedFd::from(tcp)).unwrap();
        assert_eq!(listener.address(), &ListenAddress::Tcp(addr));
        assert_eq!(listener.local, Some(addr), "a specific address is taken once");
        assert_eq!(listener.socket.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);

        let path = std::env::temp_dir().join(format!("prefork-adopt-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let listener = Listener::adopt(OwnedFd::from(unix)).unwrap();
        assert_eq!(listener.address(), &ListenAddress::Unix(path.clone()));
        drop(listener);
        assert!(path.exists(), "the socket's owner removes its file, not us");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_socket_that_does_not_listen_or_is_not_a_stream_is_refused() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let error = Listener::adopt(OwnedFd::from(udp)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
        let unbound = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let error = Listener::adopt(OwnedFd::from(unbound)).unwrap_err();
        assert!(error.to_string().contains("not listening"), "{error}");
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(Listener::adopt(OwnedFd::from(file)).is_err());
    }
}
