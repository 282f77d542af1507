//! Small facts read from the kernel: a listening socket's accept queue, this process's threads.

use std::os::fd::{AsRawFd as _, BorrowedFd};

/// Connections waiting in a TCP listening socket's accept queue, and the queue's limit
/// (Linux reports both through `TCP_INFO` for a socket in LISTEN state). `None` for other
/// sockets.
pub(crate) fn listen_queue(socket: BorrowedFd<'_>) -> Option<(u64, u64)> {
    // TCP_LISTEN in the kernel's tcp_states.h (libc does not export it).
    const TCP_LISTEN: u8 = 10;
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the buffer and its length describe `info`, which outlives the call.
    let rc = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len)
    };
    (rc == 0 && info.tcpi_state == TCP_LISTEN).then(|| (u64::from(info.tcpi_unacked), u64::from(info.tcpi_sacked)))
}

/// Threads of this process, from `/proc/self/status`.
pub(crate) fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| line.strip_prefix("Threads:"))?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsFd as _;

    #[test]
    fn a_listening_socket_reports_its_queue_and_a_connected_one_does_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (queued, backlog) = listen_queue(listener.as_fd()).unwrap();
        assert_eq!(queued, 0);
        assert!(backlog > 0);
        let _waiting = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(listen_queue(listener.as_fd()).unwrap().0, 1, "one connection waits to be accepted");
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(listen_queue(client.as_fd()), None);
    }

    #[test]
    fn this_process_has_threads() {
        assert!(thread_count().unwrap() >= 1);
    }
}
