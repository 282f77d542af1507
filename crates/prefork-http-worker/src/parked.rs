//! A connection between requests, held outside any handler: its socket, the bytes of its next
//! request received so far, and the time by which that request must have arrived.
//!
//! A classic worker's handler place is only taken by a connection whose request is complete
//! (see [`crate::head`]). Until then the connection is *parked*: new connections still sending
//! their head or a small body, and keep-alive connections idle between requests. Parked
//! connections cost a socket and their bytes, never a worker, and move between the worker
//! processes of a pool (see [`crate::handoff`]).

use std::io;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::time::Duration;

use crate::head::{self, HeadLimits, Progress};
use crate::transport::Peer;

/// Most bytes of a request kept while parked (head and small body); a request not complete
/// by then takes a worker, and hyper reads the rest itself (or answers `431`).
pub(crate) const MAX_PARKED_BYTES: usize = 128 * 1024;

/// Why a connection is parked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParkKind {
    /// Accepted, its first request not complete yet.
    Fresh,
    /// Served before, now idle between keep-alive requests.
    KeepAlive,
}

/// The deadlines a parked connection lives by (the worker's configuration).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ParkRules {
    /// For a request head (and for an idle keep-alive connection's next one), from parking.
    pub header_timeout: Duration,
    /// For a whole body, from the end of its head.
    pub body_timeout: Duration,
    /// A body slower than this (bytes per second, after `header_timeout`'s allowance) is
    /// cut: mod_reqtimeout's `MinRate`. 0: no minimum.
    pub body_min_rate: u64,
    pub limits: HeadLimits,
    /// A worker whose request runs past this is about to be killed (see the parking thread).
    pub request_timeout: Option<Duration>,
}

/// A connection waiting for its next request outside a handler.
#[derive(Debug)]
pub(crate) struct ParkedConnection {
    pub fd: OwnedFd,
    pub peer: Peer,
    pub kind: ParkKind,
    /// Its id, once a worker has served it (a connection is counted, and numbered, once).
    pub id: Option<u64>,
    /// The request's bytes received so far.
    pub buffered: Vec<u8>,
    /// When it was parked (`CLOCK_MONOTONIC` µs): the header timeout counts from here, and the
    /// longest parked goes first when room is short.
    pub since_micros: u64,
    /// When its head was complete and its body began (0: not yet).
    pub body_since_micros: u64,
}

/// What reading a parked connection brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// Bytes arrived (or none were waiting); see [`ParkedConnection::progress`].
    Progressed,
    /// The client closed or reset it.
    Gone,
}

impl ParkedConnection {
    pub(crate) fn new(fd: OwnedFd, peer: Peer, kind: ParkKind, buffered: Vec<u8>, now: u64) -> ParkedConnection {
        ParkedConnection { fd, peer, kind, id: None, buffered, since_micros: now, body_since_micros: 0 }
    }

    /// Where its request stands.
    pub(crate) fn progress(&self, rules: &ParkRules) -> Progress {
        head::progress(&self.buffered, rules.limits)
    }

    /// Reads what the socket holds (non-blocking), up to [`MAX_PARKED_BYTES`]. The end of the
    /// stream counts only once nothing more was read: a client may send its request and shut
    /// its side at once.
    pub(crate) fn read_available(&mut self) -> ReadOutcome {
        let before = self.buffered.len();
        loop {
            let room = MAX_PARKED_BYTES.saturating_sub(self.buffered.len()).min(16 * 1024);
            if room == 0 {
                return ReadOutcome::Progressed;
            }
            // Straight into the buffer's spare room: no copy.
            self.buffered.reserve(room);
            let spare = &mut self.buffered.spare_capacity_mut()[..room];
            // SAFETY: receiving into `room` bytes of spare capacity we hold mutably.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), spare.as_mut_ptr().cast(), room, libc::MSG_DONTWAIT) };
            match n {
                0 if self.buffered.len() > before => return ReadOutcome::Progressed,
                0 => return ReadOutcome::Gone,
                n if n > 0 => {
                    // SAFETY: recv initialised `n` bytes of the spare capacity.
                    unsafe { self.buffered.set_len(self.buffered.len() + n as usize) };
                    if (n as usize) < room {
                        return ReadOutcome::Progressed;
                    }
                }
                _ => match io::Error::last_os_error().kind() {
                    io::ErrorKind::WouldBlock => return ReadOutcome::Progressed,
                    io::ErrorKind::Interrupted => continue,
                    _ if self.buffered.len() > before => return ReadOutcome::Progressed,
                    _ => return ReadOutcome::Gone,
                },
            }
        }
    }

    /// When it must be ready, given where its request stands (`CLOCK_MONOTONIC` µs); notes when
    /// its body began.
    pub(crate) fn deadline(&mut self, progress: Progress, rules: &ParkRules, now: u64) -> u64 {
        let micros = |d: Duration| d.as_micros() as u64;
        match progress {
            Progress::Body { received, .. } => {
                if self.body_since_micros == 0 {
                    self.body_since_micros = now;
                }
                let allowance = match rules.body_min_rate {
                    0 => micros(rules.body_timeout),
                    rate => micros(rules.header_timeout) + (received as u64).saturating_mul(1_000_000) / rate,
                };
                self.body_since_micros + allowance.min(micros(rules.body_timeout))
            }
            Progress::Head | Progress::Ready => self.since_micros + micros(rules.header_timeout),
        }
    }

    /// Answers a request that did not arrive in time, as Apache's mod_reqtimeout does, and
    /// closes the connection. A keep-alive connection that stayed silent is just closed.
    pub(crate) fn close_timed_out(self) {
        if !self.buffered.is_empty() {
            let answer = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\
                           Connection: close\r\n\r\n408 Request Timeout";
            // SAFETY: writing a static buffer to a socket we own; the result does not matter
            // (the client may be gone), and MSG_DONTWAIT keeps it from blocking.
            let _ = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    answer.as_ptr().cast(),
                    answer.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ParkRules {
        ParkRules {
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(60),
            body_min_rate: 500,
            limits: HeadLimits { max_headers: 100, max_header_size: 8192 },
            request_timeout: None,
        }
    }

    fn parked(buffered: &[u8]) -> ParkedConnection {
        let (fd, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        ParkedConnection::new(fd.into(), Peer::Unix, ParkKind::Fresh, buffered.to_vec(), 1_000_000)
    }

    #[test]
    fn a_head_has_the_header_timeout_from_parking() {
        let mut conn = parked(b"GET / HT");
        let progress = conn.progress(&rules());
        assert_eq!(progress, Progress::Head);
        assert_eq!(conn.deadline(progress, &rules(), 2_000_000), 6_000_000);
    }

    #[test]
    fn a_body_gets_the_allowance_plus_time_for_what_arrived_at_the_minimum_rate() {
        let mut conn = parked(b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n");
        let progress = conn.progress(&rules());
        assert_eq!(progress, Progress::Body { received: 0, expected: 5000 });
        // Body began at 3 s: 5 s of allowance.
        assert_eq!(conn.deadline(progress, &rules(), 3_000_000), 8_000_000);
        // 1000 bytes in: two more seconds at 500 B/s, counted from the body's start.
        let later = Progress::Body { received: 1000, expected: 5000 };
        assert_eq!(conn.deadline(later, &rules(), 6_000_000), 10_000_000);
        // Never past the body timeout.
        let most = Progress::Body { received: 4999, expected: 5000 };
        let mut slow = ParkRules { body_timeout: Duration::from_secs(7), ..rules() };
        assert_eq!(conn.deadline(most, &slow, 9_000_000), 10_000_000);
        slow.body_min_rate = 0;
        assert_eq!(conn.deadline(most, &slow, 9_000_000), 10_000_000);
    }

    #[test]
    fn reading_stops_at_the_cap_and_sees_the_client_leave() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut conn = ParkedConnection::new(ours.into(), Peer::Unix, ParkKind::Fresh, Vec::new(), 0);
        use std::io::Write as _;
        (&theirs).write_all(b"GET / HTTP/1.1\r\n").unwrap();
        assert_eq!(conn.read_available(), ReadOutcome::Progressed);
        assert_eq!(conn.buffered, b"GET / HTTP/1.1\r\n");
        assert_eq!(conn.read_available(), ReadOutcome::Progressed, "nothing waiting is not an end");
        drop(theirs);
        assert_eq!(conn.read_available(), ReadOutcome::Gone);
    }
}
