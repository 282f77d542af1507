//! Listening sockets (TCP over IPv4 or IPv6, unix domain), bound once by the parent and shared
//! by every worker, and the streams accepted from them, plain or TLS.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Apache's and php-fpm's default backlog (the kernel caps it at `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: i32 = 511;

/// Where a server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddress {
    Tcp(SocketAddr),
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

/// The listening socket of a worker pool.
///
/// `O_NONBLOCK` is set once, at bind: it lives on the open file description that every forked
/// worker shares, so no worker may ever change it. Workers wait for connections in their own
/// epoll (with `EPOLLEXCLUSIVE`) and accept without blocking. No `SO_REUSEPORT`: one socket,
/// one queue, so no connection waits behind a busy worker while another is idle, and none is
/// reset when a worker exits.
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
    address: ListenAddress,
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
        let bound = socket.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an inet socket"))?;
        Ok(Listener { socket, address: ListenAddress::Tcp(bound), owns_path: false })
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
        Ok(Listener { socket, address: ListenAddress::Unix(path.to_path_buf()), owns_path: true })
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

/// A plain accepted stream.
#[derive(Debug)]
pub(crate) enum PlainStream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// The peer of an accepted connection.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Peer {
    Tcp { remote: SocketAddr, local: SocketAddr },
    Unix,
}

impl PlainStream {
    /// Registers a just-accepted connection with the runtime (call inside it).
    pub(crate) fn from_accepted(fd: OwnedFd, listener: &Listener) -> io::Result<(PlainStream, Peer)> {
        match listener.address {
            ListenAddress::Tcp(_) => {
                let stream = std::net::TcpStream::from(fd);
                let peer = Peer::Tcp { remote: stream.peer_addr()?, local: stream.local_addr()? };
                let _ = stream.set_nodelay(true);
                Ok((PlainStream::Tcp(tokio::net::TcpStream::from_std(stream)?), peer))
            }
            ListenAddress::Unix(_) => {
                let stream = std::os::unix::net::UnixStream::from(fd);
                Ok((PlainStream::Unix(tokio::net::UnixStream::from_std(stream)?), Peer::Unix))
            }
        }
    }
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

delegate_async_io!(PlainStream, PlainStream::Tcp, PlainStream::Unix);
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
}
