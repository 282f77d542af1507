//! The listening socket, bound once by the parent and shared by every worker.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Apache's and php-fpm's default backlog (the kernel caps it at `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: i32 = 511;

/// Binds a TCP listener for a worker pool.
///
/// `O_NONBLOCK` is set here, once: it lives on the open file description that every forked
/// worker shares, so no worker may ever change it. Workers wait for connections in their own
/// epoll (with `EPOLLEXCLUSIVE`) and accept without blocking. No `SO_REUSEPORT`: one socket,
/// one queue, so no connection waits behind a busy worker while another is idle, and none is
/// reset when a worker exits.
pub fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_an_ephemeral_nonblocking_port() {
        let listener = bind_tcp("127.0.0.1:0".parse().unwrap(), DEFAULT_BACKLOG).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_ne!(port, 0);
        // Non-blocking: accept with nobody connecting returns WouldBlock instead of hanging.
        assert_eq!(listener.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_taken_port_is_an_error_not_a_second_socket() {
        let first = bind_tcp("127.0.0.1:0".parse().unwrap(), DEFAULT_BACKLOG).unwrap();
        let err = bind_tcp(first.local_addr().unwrap(), DEFAULT_BACKLOG).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
