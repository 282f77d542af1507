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
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
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
/// The thread is gone (it could not go on): what is parked is closed at once.
const DEAD: u8 = 3;

/// How long a leaving worker keeps trying to pass its parked connections on while the queue
/// is full (every other worker busy); those still held afterwards are closed.
const LEAVING_PATIENCE: Duration = Duration::from_secs(2);

/// The main thread's side: park connections, tell the thread to leave.
#[derive(Debug)]
pub(crate) struct ParkingLot {
    incoming: Mutex<Vec<ParkedConnection>>,
    wake: EventFd,
    mode: AtomicU8,
    /// Why the thread died (an errno), once `mode` is `DEAD`.
    dead_errno: AtomicI32,
    /// Complete requests the thread gives back when the whole server stops (its worker serves
    /// them before it exits, rather than drop what a client fully sent).
    returned: Mutex<Vec<ParkedConnection>>,
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
        Ok(ParkingLot {
            incoming: Mutex::new(Vec::new()),
            wake,
            mode: AtomicU8::new(RUNNING),
            dead_errno: AtomicI32::new(0),
            returned: Mutex::new(Vec::new()),
        })
    }

    /// The parking thread's epoll, made by the worker's main thread before it says it is
    /// ready: a worker out of descriptors while it sets up fails to boot (and the supervisor
    /// backs off), rather than boot with no thread and close every connection it would park.
    pub(crate) fn thread_epoll(&self) -> Result<Epoll, WorkerError> {
        let sys = |what| move |errno| WorkerError::Sys { what, errno };
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(sys("parking thread: epoll_create"))?;
        epoll
            .add(self.wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))
            .map_err(sys("parking thread: epoll_ctl"))?;
        Ok(epoll)
    }

    /// The thread failed (its `epoll_wait`, which should never): the worker must leave, or
    /// it would close every connection it would park.
    pub(crate) fn dead(&self) -> Option<WorkerError> {
        let errno = Errno::from_raw(self.dead_errno.load(Ordering::Acquire));
        (self.mode.load(Ordering::Acquire) == DEAD)
            .then_some(WorkerError::Sys { what: "parking thread: epoll_wait", errno })
    }

    /// Hands a connection to the parking thread (or, if it is gone, closes it).
    pub(crate) fn park(&self, conn: ParkedConnection) {
        if self.mode.load(Ordering::Acquire) == DEAD {
            return;
        }
        self.incoming.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        let _ = self.wake.write(1);
    }

    /// The complete requests given back when the whole server stops.
    pub(crate) fn take_returned(&self) -> Vec<ParkedConnection> {
        std::mem::take(&mut *self.returned.lock().unwrap_or_else(|p| p.into_inner()))
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
    /// `epoll` comes from [`thread_epoll`](Self::thread_epoll).
    pub(crate) fn run(
        &self,
        epoll: Epoll,
        queue: &HandoffQueue,
        writer: ParkingWriter<'_>,
        rules: ParkRules,
        capacity: usize,
    ) {
        // Signals are the main thread's business (its epoll wakes for SIGTERM).
        let _ = nix::sys::signal::SigSet::all().thread_block();
        ParkingThread::new(self, epoll, queue, writer, rules, capacity).serve();
    }

    /// Without a working thread: what is parked now and later is closed, and the worker
    /// leaves (see [`dead`](Self::dead)).
    fn die(&self, errno: Errno) {
        self.dead_errno.store(errno as i32, Ordering::Release);
        self.mode.store(DEAD, Ordering::Release);
        drop(std::mem::take(&mut *self.incoming.lock().unwrap_or_else(|p| p.into_inner())));
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
    /// Complete requests waiting for room in the queue (no longer read).
    waiting_for_queue: VecDeque<ParkedConnection>,
    watching_queue: bool,
}

impl<'a> ParkingThread<'a> {
    fn new(
        lot: &'a ParkingLot,
        epoll: Epoll,
        queue: &'a HandoffQueue,
        writer: ParkingWriter<'a>,
        rules: ParkRules,
        capacity: usize,
    ) -> ParkingThread<'a> {
        ParkingThread {
            lot,
            queue,
            writer,
            rules,
            capacity: capacity.max(1),
            epoll,
            entries: Vec::new(),
            free: Vec::new(),
            waiting_for_queue: VecDeque::new(),
            watching_queue: false,
        }
    }

    fn serve(&mut self) {
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            let now = monotonic_micros();
            self.expire(now);
            self.make_room();
            let stuck_at = self.hand_off_if_worker_stuck(now);
            self.writer.set_parked(self.held() + self.waiting_for_queue.len());
            match self.lot.mode.load(Ordering::Acquire) {
                RUNNING => {}
                HAND_OFF => return self.leave(true),
                _ => return self.leave(false),
            }
            let wake_at = [self.next_deadline(), stuck_at].into_iter().flatten().min();
            let timeout = wake_at.map_or(EpollTimeout::NONE, |at| {
                let millis = at.saturating_sub(now).div_ceil(1000).min(i32::MAX as u64);
                EpollTimeout::try_from(millis as i32).unwrap_or(EpollTimeout::NONE)
            });
            let ready = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(errno) => {
                    tracing::error!(%errno, "parking thread: epoll_wait failed; closing what it holds");
                    self.leave(false);
                    return self.lot.die(errno);
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

    /// Connections parked now.
    fn held(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// A worker whose main thread has run one request past `request_timeout` is about to be
    /// killed, and what its parking thread holds with it: pass it all to siblings first.
    /// Returns when to look again (`None`: nothing running, or no timeout).
    fn hand_off_if_worker_stuck(&mut self, now: u64) -> Option<u64> {
        let timeout = self.rules.request_timeout?.as_micros() as u64;
        let started = self.writer.oldest_in_flight_micros();
        if started == 0 {
            return None;
        }
        if now < started + timeout {
            return Some(started + timeout);
        }
        if self.held() > 0 {
            tracing::warn!(
                parked = self.held(),
                "this worker's request runs past request_timeout: parked connections go to siblings"
            );
            let tokens: Vec<usize> = self.tokens().map(|(token, _)| token).collect();
            for token in tokens {
                if let Some(entry) = self.remove(token) {
                    self.hand_off(entry.conn);
                }
            }
        }
        None
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
        let now = monotonic_micros();
        let Some(Some(entry)) = self.entries.get_mut(token) else { return };
        if entry.conn.read_available() == ReadOutcome::Gone {
            self.remove(token);
            return;
        }
        // Still waiting for more: it stays watched, with its deadline moved by what came.
        match entry.conn.progress(&self.rules) {
            Progress::Ready => {
                if let Some(entry) = self.remove(token) {
                    self.hand_off(entry.conn);
                }
            }
            progress => entry.deadline = entry.conn.deadline(progress, &self.rules, now),
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
                self.waiting_for_queue.push_back(*conn);
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
                    self.waiting_for_queue.push_front(*conn);
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
    }

    /// Takes a connection out of the epoll and the table (closing it is the caller's choice).
    fn remove(&mut self, token: usize) -> Option<Entry> {
        let entry = self.entries.get_mut(token)?.take()?;
        // Before the socket leaves this process: a socket passed to another process stays open,
        // and would stay in this epoll too.
        let _ = self.epoll.delete(entry.conn.fd.as_fd());
        self.free.push(token);
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
    /// clients reconnect), then the slowest requests (one begun is cut only after those).
    fn make_room(&mut self) {
        while self.held() > self.capacity {
            let victim = self
                .tokens()
                .min_by_key(|(_, e)| {
                    let begun = e.conn.kind == ParkKind::Fresh || !e.conn.buffered.is_empty();
                    (begun, e.conn.since_micros)
                })
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
            // The whole server stops: what is still incomplete is closed, and the complete
            // requests that waited for room in the queue go back to this worker, which serves
            // them before it exits.
            let complete: Vec<ParkedConnection> =
                all.into_iter().filter(|conn| conn.progress(&self.rules) == Progress::Ready).collect();
            self.lot.returned.lock().unwrap_or_else(|p| p.into_inner()).extend(complete);
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
                    all.push_front(*conn);
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
