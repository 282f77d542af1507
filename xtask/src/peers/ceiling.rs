//! The ceiling of classic prefork, `xtask ceiling`: the least a preforking server can do per
//! request, on raw system calls. The parent binds, forks the workers and reaps them; each worker
//! loops on a blocking `accept`, then `read`s requests and `write`s a canned reply until the
//! client closes (keep-alive) or asks for `Connection: close`. No HTTP parsing beyond finding the
//! end of the head: two system calls per keep-alive request, four per connection.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Result, bail, ensure};

/// The reply to a request that keeps its connection: 12 bytes of body, as nginx's static file.
const KEEP_ALIVE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nHello world\n";
/// The reply to `Connection: close`.
const CLOSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nHello world\n";

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Worker processes forked at start (never more, never fewer).
    #[arg(long, default_value_t = 40)]
    workers: usize,
    /// Sleep this long before each reply, as a blocking handler would.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    delay: Duration,
}

/// Binds, prints `listening on http://127.0.0.1:PORT`, forks the workers and waits for them.
/// Must run in a single-threaded process (a fork copies only the calling thread).
pub fn serve(options: &Options) -> Result<()> {
    ensure!(threads() == Some(1), "the ceiling server must fork from a single-threaded process");
    let listener = bind(options.port)?;
    let port = local_port(listener)?;
    println!("listening on http://127.0.0.1:{port}");
    std::io::stdout().flush()?;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    for _ in 0..options.workers {
        // SAFETY: the process is single-threaded (checked above); the child only makes system
        // calls and ends with `_exit`, never returning into the parent's code.
        match unsafe { libc::fork() } {
            -1 => bail!("fork: {}", std::io::Error::last_os_error()),
            0 => worker(listener, parent, options.delay),
            _ => {}
        }
    }
    // Reap the workers; the bench stops this process with a signal (the workers die with it).
    loop {
        // SAFETY: a null status pointer is allowed.
        if unsafe { libc::wait(std::ptr::null_mut()) } < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
        {
            return Ok(());
        }
    }
}

/// The listening socket on 127.0.0.1:`port`, blocking, with a deep backlog.
fn bind(port: u16) -> Result<libc::c_int> {
    // SAFETY: plain system calls on arguments that live across each call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be() },
            sin_zero: [0; 8],
        };
        let bound = libc::bind(
            fd,
            (&address as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        ensure!(bound == 0, "bind 127.0.0.1:{port}: {}", std::io::Error::last_os_error());
        ensure!(libc::listen(fd, 4096) == 0, "listen: {}", std::io::Error::last_os_error());
        Ok(fd)
    }
}

fn local_port(fd: libc::c_int) -> Result<u16> {
    // SAFETY: an all-zero sockaddr_in is valid; getsockname writes at most `len` bytes into it.
    unsafe {
        let mut address: libc::sockaddr_in = std::mem::zeroed();
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let done = libc::getsockname(fd, (&mut address as *mut libc::sockaddr_in).cast(), &mut len);
        ensure!(done == 0, "getsockname: {}", std::io::Error::last_os_error());
        Ok(u16::from_be(address.sin_port))
    }
}

/// One worker: blocking accept, serve the connection to its end, close, again. Never returns.
fn worker(listener: libc::c_int, parent: libc::pid_t, delay: Duration) -> ! {
    // SAFETY: prctl and getppid have no memory arguments; dying with the parent is the point.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
    }
    let mut buffer = [0u8; 16 * 1024];
    loop {
        // SAFETY: null address arguments are allowed.
        let connection = unsafe { libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut()) };
        if connection < 0 {
            continue; // EINTR, ECONNABORTED: wait for the next one.
        }
        serve_connection(connection, &mut buffer, delay);
        // SAFETY: `connection` is ours and closed once.
        unsafe { libc::close(connection) };
    }
}

/// Answers every complete request head on `connection` until EOF, an error, or `Connection: close`.
fn serve_connection(connection: libc::c_int, buffer: &mut [u8], delay: Duration) {
    let mut filled = 0;
    loop {
        let free = &mut buffer[filled..];
        // SAFETY: reads at most `free.len()` bytes into `free`.
        let read = unsafe { libc::read(connection, free.as_mut_ptr().cast(), free.len()) };
        if read <= 0 {
            return;
        }
        filled += read as usize;
        let mut start = 0;
        while let Some(length) = head_length(&buffer[start..filled]) {
            let close = wants_close(&buffer[start..start + length]);
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            if !write_all(connection, if close { CLOSE } else { KEEP_ALIVE }) || close {
                return;
            }
            start += length;
        }
        buffer.copy_within(start..filled, 0);
        filled -= start;
        if filled == buffer.len() {
            return; // A head larger than the buffer: give up on the connection.
        }
    }
}

/// The length of the request head at the start of `bytes`, through its `\r\n\r\n`.
fn head_length(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
}

/// Whether the head asks for `Connection: close` (any case).
fn wants_close(head: &[u8]) -> bool {
    const HEADER: &[u8] = b"\nconnection: close";
    head.windows(HEADER.len()).any(|w| w.eq_ignore_ascii_case(HEADER))
}

fn write_all(connection: libc::c_int, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: writes at most `bytes.len()` bytes from `bytes`.
        let written = unsafe { libc::write(connection, bytes.as_ptr().cast(), bytes.len()) };
        if written <= 0 {
            return false;
        }
        bytes = &bytes[written as usize..];
    }
    true
}

/// The number of threads of this process, from `/proc/self/status`.
fn threads() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| line.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_heads_and_close() {
        let two = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nConnection: Close\r\n\r\n";
        let first = head_length(two).unwrap();
        assert_eq!(&two[..first], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(!wants_close(&two[..first]));
        assert!(wants_close(&two[first..]));
        assert_eq!(head_length(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(KEEP_ALIVE.len() - head_length(KEEP_ALIVE).unwrap(), 12);
        assert_eq!(CLOSE.len() - head_length(CLOSE).unwrap(), 12);
    }
}
