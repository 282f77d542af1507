//! A classic worker's parking thread: it holds the connections that are between requests,
//! reads their bytes as they come, and passes each one whose request is complete to the
//! hand-off queue, where any idle worker (this one included) takes it.
//!
//! This is what keeps a slow client from taking a worker. The worker's main thread only ever
//! serves a connection whose request is complete; a connection still sending its head, or a
//! small body, or idle between keep-alive requests, waits here, costing a socket and its
//! bytes. The thread never runs a handler, so the connections it holds keep being read while
//! the main thread is blocked in one; and since a complete request goes to the queue rather
//! than back to this worker, no client waits behind a sibling's slow handler.
//!
//! Bounded: a connection whose request is not complete by its deadline is answered `408` (or,
//! idle on keep-alive, closed), and past the worker's capacity the one parked longest is
//! closed (idle keep-alive connections first), so a flood of slow clients costs memory in
//! proportion to the capacity, never unbounded.

use std::collections::VecDeque;
use std::os::fd::AsFd as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use prefork_scoreboard::ParkingWriter;
use prefork_scoreboard::clock::monotonic_micros;

use crate::WorkerError;
use crate::handoff::{HandoffQueue, SendError};
use crate::head::Progress;
use crate::parked::{ParkKind, ParkRules, ParkedConnection, ReadOutcome};

const WAKE: u64 = u64::MAX;
const QUEUE: u64 = u64::MAX - 1;

const RUNNING: u8 = 0;
const HAND_OFF: u8 = 1;
const CLOSE: u8 = 2;

/// How long a leaving worker keeps trying to pass its parked connections on while the queue
/// is full (every other worker busy); those still held afterwards are closed.
const LEAVING_PATIENCE: Duration = Duration::from_secs(2);

/// The main thread's side: park connections, tell the thread to leave.
#[derive(Debug)]
pub(crate) struct ParkingLot {
    incoming: Mutex<Vec<ParkedConnection>>,
    wake: EventFd,
    mode: AtomicU8,
}

/// What the parking thread does with what it holds when the worker goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Leave {
    /// The pool goes on (this worker retires, recycles, reloads): pass every connection to
    /// the queue, for a sibling to take.
    HandOff,
    /// The whole server stops: close them.
    Close,
}

impl ParkingLot {
    pub(crate) fn new() -> Result<ParkingLot, WorkerError> {
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|errno| WorkerError::Sys { what: "eventfd", errno })?;
        Ok(ParkingLot { incoming: Mutex::new(Vec::new()), wake, mode: AtomicU8::new(RUNNING) })
    }

    /// Hands a connection to the parking thread.
    pub(crate) fn park(&self, conn: ParkedConnection) {
        self.incoming.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        let _ = self.wake.write(1);
    }

    /// Tells the parking thread to finish (it passes on or closes what it holds, then returns).
    pub(crate) fn leave(&self, how: Leave) {
        let mode = match how {
            Leave::HandOff => HAND_OFF,
            Leave::Close => CLOSE,
        };
        self.mode.store(mode, Ordering::Release);
        let _ = self.wake.write(1);
    }

    /// The parking thread's body: returns once told to [`leave`](Self::leave).
    pub(crate) fn run(&self, queue: &HandoffQueue, writer: ParkingWriter<'_>, rules: ParkRules, capacity: usize) {
        // Signals are the main thread's business (its epoll wakes for SIGTERM).
        let _ = nix::sys::signal::SigSet::all().thread_block();
        let mut thread = match ParkingThread::new(self, queue, writer, rules, capacity) {
            Ok(thread) => thread,
            Err(error) => {
                tracing::error!(%error, "the parking thread could not start; parked connections are closed");
                return self.close_incoming_until_left();
            }
        };
        thread.serve();
    }

    /// Without a working thread: refuse what is parked, until told to leave.
    fn close_incoming_until_left(&self) {
        loop {
            drop(std::mem::take(&mut *self.incoming.lock().unwrap_or_else(|p| p.into_inner())));
            if self.mode.load(Ordering::Acquire) != RUNNING {
                return;
            }
            let _ = nix::poll::poll(
                &mut [nix::poll::PollFd::new(self.wake.as_fd(), nix::poll::PollFlags::POLLIN)],
                nix::poll::PollTimeout::NONE,
            );
            let _ = self.wake.read();
        }
    }
}

/// One parked connection and when its request must be complete.
struct Entry {
    conn: ParkedConnection,
    deadline: u64,
}

struct ParkingThread<'a> {
    lot: &'a ParkingLot,
    queue: &'a HandoffQueue,
    writer: ParkingWriter<'a>,
    rules: ParkRules,
    capacity: usize,
    epoll: Epoll,
    /// Parked connections by epoll token; `None` marks a free token.
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    held: usize,
    /// Complete requests waiting for room in the queue (no longer read).
    waiting_for_queue: VecDeque<ParkedConnection>,
    watching_queue: bool,
}

impl<'a> ParkingThread<'a> {
    fn new(
        lot: &'a ParkingLot,
        queue: &'a HandoffQueue,
        writer: ParkingWriter<'a>,
        rules: ParkRules,
        capacity: usize,
    ) -> Result<ParkingThread<'a>, Errno> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(lot.wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        Ok(ParkingThread {
            lot,
            queue,
            writer,
            rules,
            capacity: capacity.max(1),
            epoll,
            entries: Vec::new(),
            free: Vec::new(),
            held: 0,
            waiting_for_queue: VecDeque::new(),
            watching_queue: false,
        })
    }

    fn serve(&mut self) {
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            let now = monotonic_micros();
            self.expire(now);
            self.make_room();
            self.writer.set_parked(self.held + self.waiting_for_queue.len());
            match self.lot.mode.load(Ordering::Acquire) {
                RUNNING => {}
                HAND_OFF => return self.leave(true),
                _ => return self.leave(false),
            }
            let timeout = self.next_deadline().map_or(EpollTimeout::NONE, |at| {
                let millis = at.saturating_sub(now).div_ceil(1000).min(i32::MAX as u64);
                EpollTimeout::try_from(millis as i32).unwrap_or(EpollTimeout::NONE)
            });
            let ready = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(errno) => {
                    tracing::error!(%errno, "parking thread: epoll_wait failed; closing what it holds");
                    return self.leave(false);
                }
            };
            for event in &events[..ready] {
                match event.data() {
                    WAKE => self.take_incoming(),
                    QUEUE => self.retry_queue(),
                    token => self.on_readable(token as usize),
                }
            }
        }
    }

    fn take_incoming(&mut self) {
        let _ = self.lot.wake.read();
        let incoming = std::mem::take(&mut *self.lot.incoming.lock().unwrap_or_else(|p| p.into_inner()));
        let now = monotonic_micros();
        for conn in incoming {
            // Bytes may already be there (a keep-alive request begun before parking).
            self.consider(conn, now);
        }
    }

    fn on_readable(&mut self, token: usize) {
        let Some(mut entry) = self.remove(token) else { return };
        match entry.conn.read_available() {
            ReadOutcome::Gone => {}
            ReadOutcome::Progressed => self.consider(entry.conn, monotonic_micros()),
        }
    }

    /// Passes a complete request on, or holds the connection (again) until its deadline.
    fn consider(&mut self, mut conn: ParkedConnection, now: u64) {
        match conn.progress(&self.rules) {
            Progress::Ready => self.hand_off(conn),
            progress => {
                let deadline = conn.deadline(progress, &self.rules, now);
                self.hold(conn, deadline);
            }
        }
    }

    fn hand_off(&mut self, conn: ParkedConnection) {
        if !self.waiting_for_queue.is_empty() {
            // Keep the order: the queue is full, and earlier requests go first.
            self.waiting_for_queue.push_back(conn);
            return;
        }
        match self.queue.send(conn) {
            Ok(()) => self.writer.count_handed_off(),
            Err(SendError::Full(conn)) => {
                self.waiting_for_queue.push_back(conn);
                self.watch_queue(true);
            }
            Err(SendError::Failed(errno)) => tracing::error!(%errno, "hand-off queue failed; connection closed"),
        }
    }

    /// The queue has room again: pass on what waited, in order.
    fn retry_queue(&mut self) {
        while let Some(conn) = self.waiting_for_queue.pop_front() {
            match self.queue.send(conn) {
                Ok(()) => self.writer.count_handed_off(),
                Err(SendError::Full(conn)) => {
                    self.waiting_for_queue.push_front(conn);
                    return;
                }
                Err(SendError::Failed(errno)) => tracing::error!(%errno, "hand-off queue failed; connection closed"),
            }
        }
        self.watch_queue(false);
    }

    fn watch_queue(&mut self, on: bool) {
        if on == self.watching_queue {
            return;
        }
        let event = EpollEvent::new(EpollFlags::EPOLLOUT, QUEUE);
        let result =
            if on { self.epoll.add(self.queue.sender(), event) } else { self.epoll.delete(self.queue.sender()) };
        match result {
            Ok(()) => self.watching_queue = on,
            Err(errno) => tracing::error!(%errno, "parking thread: cannot watch the hand-off queue"),
        }
    }

    fn hold(&mut self, conn: ParkedConnection, deadline: u64) {
        let token = self.free.pop().unwrap_or_else(|| {
            self.entries.push(None);
            self.entries.len() - 1
        });
        let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, token as u64);
        if let Err(errno) = self.epoll.add(conn.fd.as_fd(), event) {
            tracing::error!(%errno, "parking thread: cannot watch a connection; closed");
            self.free.push(token);
            return;
        }
        self.entries[token] = Some(Entry { conn, deadline });
        self.held += 1;
    }

    /// Takes a connection out of the epoll and the table (closing it is the caller's choice).
    fn remove(&mut self, token: usize) -> Option<Entry> {
        let entry = self.entries.get_mut(token)?.take()?;
        // Before the socket leaves this process: a socket passed to another process stays open,
        // and would stay in this epoll too.
        let _ = self.epoll.delete(entry.conn.fd.as_fd());
        self.free.push(token);
        self.held -= 1;
        Some(entry)
    }

    fn tokens(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.entries.iter().enumerate().filter_map(|(token, entry)| Some((token, entry.as_ref()?)))
    }

    fn next_deadline(&self) -> Option<u64> {
        self.tokens().map(|(_, entry)| entry.deadline).min()
    }

    /// Answers `408` to requests not complete in time (and closes silent keep-alive ones).
    fn expire(&mut self, now: u64) {
        let late: Vec<usize> = self.tokens().filter(|(_, e)| e.deadline <= now).map(|(token, _)| token).collect();
        for token in late {
            if let Some(entry) = self.remove(token) {
                if entry.conn.kind == ParkKind::Fresh || !entry.conn.buffered.is_empty() {
                    self.writer.count_parked_timeout();
                }
                entry.conn.close_timed_out();
            }
        }
    }

    /// Past capacity, closes the connections parked longest: idle keep-alive ones first (their
    /// clients reconnect), then the slowest requests.
    fn make_room(&mut self) {
        while self.held > self.capacity {
            let victim = self
                .tokens()
                .min_by_key(|(_, e)| (e.conn.kind == ParkKind::Fresh, e.conn.since_micros))
                .map(|(token, _)| token);
            let Some(entry) = victim.and_then(|token| self.remove(token)) else { return };
            self.writer.count_parked_eviction();
            tracing::debug!(kind = ?entry.conn.kind, "parking full: closed the connection parked longest");
        }
    }

    /// The worker goes: pass every connection on (or close them all).
    fn leave(&mut self, hand_off: bool) {
        let tokens: Vec<usize> = self.tokens().map(|(token, _)| token).collect();
        let mut all: VecDeque<ParkedConnection> = std::mem::take(&mut self.waiting_for_queue);
        all.extend(tokens.into_iter().filter_map(|token| self.remove(token)).map(|entry| entry.conn));
        // Whatever the main thread parked last comes along.
        all.extend(std::mem::take(&mut *self.lot.incoming.lock().unwrap_or_else(|p| p.into_inner())));
        self.writer.set_parked(all.len());
        if !hand_off {
            return self.writer.set_parked(0);
        }
        let give_up_at = monotonic_micros() + LEAVING_PATIENCE.as_micros() as u64;
        while let Some(conn) = all.pop_front() {
            match self.queue.send(conn) {
                Ok(()) => self.writer.count_handed_off(),
                Err(SendError::Full(conn)) => {
                    let now = monotonic_micros();
                    if now >= give_up_at {
                        tracing::warn!(
                            closed = all.len() + 1,
                            "leaving: no worker took the remaining parked connections in time; closing them"
                        );
                        break;
                    }
                    all.push_front(conn);
                    let wait = (give_up_at - now).div_ceil(1000).min(100) as u16;
                    let mut fds = [nix::poll::PollFd::new(self.queue.sender(), nix::poll::PollFlags::POLLOUT)];
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(wait));
                }
                Err(SendError::Failed(errno)) => tracing::error!(%errno, "hand-off queue failed; connection closed"),
            }
        }
        self.writer.set_parked(0);
    }
}
