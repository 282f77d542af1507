//! A typed view of a mapped segment: the header, the slots, the single-writer slot handle.

use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::clock::{coarse_monotonic_micros, monotonic_micros, unix_micros};
use crate::layout::{
    DRAINING, Header, LAYOUT_VERSION, MAGIC, MAX_SLOTS, PAUSED, READY, Slot, segment_size, slots_offset,
};
use crate::record::{self, RecordRead, RequestInfo};
use crate::slot_fields::{reset_on_claim, slot_fields};
use crate::snapshot::{HeaderSnapshot, SlotSnapshot, Snapshot};
use crate::{ScoreboardError, WorkerState};

/// Bits of a slot's `flags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotFlags;

impl SlotFlags {
    /// The worker has reached a recycling limit and asks the parent to replace it.
    pub const RETIRE_REQUESTED: u8 = 1;
    /// The worker's accept wait has taken the listener out (the pool is paused): it takes
    /// no new connection.
    pub const NOT_ACCEPTING: u8 = 2;
}

/// The configuration in force, as published in the header for status readers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BoardConfig {
    /// Workers forked at start.
    pub start_servers: u64,
    /// Fewer idle workers than this: the parent forks more.
    pub min_spare_servers: u64,
    /// More idle workers than this: the parent retires some.
    pub max_spare_servers: u64,
    /// Most worker processes at once (the number of slots).
    pub max_clients: u64,
    /// 0: no limit.
    pub max_requests_per_child: u64,
    /// 0: slow requests are not counted.
    pub slow_request_micros: u64,
}

/// The header and slots of one mapped segment.
///
/// A `Board` only reads and writes atomics in memory shared with other processes, so it is
/// `Send + Sync`; the mapping it points into outlives it (see [`crate::Scoreboard`]).
#[derive(Debug)]
pub struct Board {
    header: NonNull<Header>,
    slots: NonNull<Slot>,
    slot_count: usize,
}

// SAFETY: every field reached through the pointers is an atomic; the mapping is shared memory
// that stays mapped for the Board's whole life, so sharing the pointers between threads is sound.
unsafe impl Send for Board {}
// SAFETY: as above; all access goes through atomic operations.
unsafe impl Sync for Board {}

impl Board {
    /// Writes a fresh header over zeroed memory and returns the view.
    ///
    /// # Safety
    /// `base` must point to at least `segment_size(slot_count)` zeroed, writable bytes aligned
    /// to 64, which stay mapped for as long as the returned `Board` is used.
    pub(crate) unsafe fn initialise(base: NonNull<u8>, slot_count: usize, parent_pid: u32) -> Board {
        // SAFETY: the caller guarantees the size and alignment of the memory.
        let board = unsafe { Board::from_raw(base, slot_count) };
        let h = board.header();
        h.layout_version.store(LAYOUT_VERSION, Relaxed);
        h.header_size.store(slots_offset() as u32, Relaxed);
        h.slot_size.store(size_of::<Slot>() as u32, Relaxed);
        h.slot_count.store(slot_count as u32, Relaxed);
        h.parent_pid.store(parent_pid, Relaxed);
        h.generation.store(1, Relaxed);
        h.highest_generation.store(1, Relaxed);
        h.start_unix_micros.store(unix_micros(), Relaxed);
        h.start_monotonic_micros.store(monotonic_micros(), Relaxed);
        h.max_clients.store(slot_count as u64, Relaxed);
        // Published last: a reader that sees the magic sees the whole header.
        h.magic.store(MAGIC, Release);
        board
    }

    /// Validates the header of an existing segment of `len` bytes and returns the view.
    ///
    /// # Safety
    /// `base` must point to `len` readable bytes aligned to 64 that stay mapped for as long as
    /// the returned `Board` is used. If the memory is mapped read-only, only reading methods
    /// (`snapshot`, `slot_snapshot`, the getters) may be called.
    pub(crate) unsafe fn attach(base: NonNull<u8>, len: usize) -> Result<Board, ScoreboardError> {
        if len < slots_offset() {
            return Err(ScoreboardError::Layout(format!("segment of {len} bytes is too small for a header")));
        }
        // SAFETY: at least a header's worth of memory is mapped (checked above).
        let header = unsafe { base.cast::<Header>().as_ref() };
        let magic = header.magic.load(Acquire);
        if magic != MAGIC {
            return Err(ScoreboardError::Layout(format!(
                "bad magic {magic:#018x}: not a scoreboard, or not initialised yet"
            )));
        }
        let version = header.layout_version.load(Relaxed);
        if version != LAYOUT_VERSION {
            return Err(ScoreboardError::Layout(format!(
                "layout version {version}, this build reads version {LAYOUT_VERSION}"
            )));
        }
        let header_size = header.header_size.load(Relaxed) as usize;
        let slot_size = header.slot_size.load(Relaxed) as usize;
        let slot_count = header.slot_count.load(Relaxed) as usize;
        if header_size != slots_offset() || slot_size != size_of::<Slot>() {
            return Err(ScoreboardError::Layout(format!(
                "header/slot sizes {header_size}/{slot_size}, expected {}/{}",
                slots_offset(),
                size_of::<Slot>()
            )));
        }
        if slot_count > MAX_SLOTS || segment_size(slot_count) > len {
            return Err(ScoreboardError::Layout(format!("{slot_count} slots do not fit in a segment of {len} bytes")));
        }
        // SAFETY: size and alignment were checked against the mapping's length.
        Ok(unsafe { Board::from_raw(base, slot_count) })
    }

    /// # Safety
    /// `base` is 64-aligned and maps at least `segment_size(slot_count)` bytes.
    unsafe fn from_raw(base: NonNull<u8>, slot_count: usize) -> Board {
        // SAFETY: slots_offset() is inside the mapping by the caller's guarantee.
        let slots = unsafe { base.add(slots_offset()) }.cast::<Slot>();
        Board { header: base.cast::<Header>(), slots, slot_count }
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the pointer is valid for the Board's life (constructor contract).
        unsafe { self.header.as_ref() }
    }

    fn slot(&self, index: usize) -> &Slot {
        assert!(index < self.slot_count, "slot {index} out of range 0..{}", self.slot_count);
        // SAFETY: index is in range and the slots array lies inside the mapping.
        unsafe { self.slots.add(index).as_ref() }
    }

    /// Number of slots (the server's `max_clients`).
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// The current worker generation.
    pub fn generation(&self) -> u64 {
        self.header().generation.load(Acquire)
    }

    // ----- Parent only -----

    /// Parent only: starts a new worker generation (graceful reload) and returns it: one
    /// above any generation ever started, even if a failed reload went back to an older one.
    pub fn bump_generation(&self) -> u64 {
        let h = self.header();
        h.reloads.fetch_add(1, Relaxed);
        let next = self.next_generation();
        h.highest_generation.store(next, Relaxed);
        h.generation.store(next, Release);
        next
    }

    /// The number the next reload's generation will have (one never used before).
    pub fn next_generation(&self) -> u64 {
        let h = self.header();
        h.highest_generation.load(Relaxed).max(h.generation.load(Relaxed)) + 1
    }

    /// Parent only: goes back to an earlier generation (a reload whose new workers could not
    /// boot is abandoned; the old workers are current again).
    pub fn set_generation(&self, generation: u64) {
        self.header().generation.store(generation, Release);
    }

    /// Parent only: why the last worker failed to boot.
    pub fn publish_boot_error(&self, cause: &str) {
        self.header().last_boot_error.publish_text(cause.as_bytes());
    }

    /// Parent only: publishes the configuration in force.
    pub fn publish_config(&self, config: &BoardConfig) {
        let h = self.header();
        h.start_servers.store(config.start_servers, Relaxed);
        h.min_spare_servers.store(config.min_spare_servers, Relaxed);
        h.max_spare_servers.store(config.max_spare_servers, Relaxed);
        h.max_clients.store(config.max_clients, Relaxed);
        h.max_requests_per_child.store(config.max_requests_per_child, Relaxed);
        h.slow_request_micros.store(config.slow_request_micros, Relaxed);
    }

    /// Parent only: a worker was forked.
    pub fn count_fork(&self) {
        self.header().workers_forked.fetch_add(1, Relaxed);
    }

    /// Parent only: a needed fork was refused at `max_clients`.
    pub fn count_max_clients_reached(&self) {
        self.header().max_clients_reached.fetch_add(1, Relaxed);
    }

    /// Parent only: a worker was killed for running a request past `request_timeout`.
    pub fn count_stuck_kill(&self) {
        self.header().stuck_kills.fetch_add(1, Relaxed);
    }

    /// Parent only: a reload did not complete.
    pub fn count_reload_failure(&self) {
        self.header().reload_failures.fetch_add(1, Relaxed);
    }

    /// Parent only: boot failures in a row, and whether forking is halted because of them.
    pub fn set_boot_failures(&self, in_a_row: u64, spawning_halted: bool) {
        self.header().boot_failures.store(in_a_row, Relaxed);
        self.header().spawning_halted.store(u64::from(spawning_halted), Relaxed);
    }

    /// Parent only: a listen-queue sample (connections waiting, and the queue's limit).
    pub fn record_listen_queue(&self, queued: u64, backlog: u64) {
        let h = self.header();
        h.listen_queue.store(queued, Relaxed);
        h.listen_backlog.store(backlog, Relaxed);
        h.listen_queue_max.fetch_max(queued, Relaxed);
    }

    /// Parent only: publishes below how many idle workers a worker taking a connection rings
    /// the doorbell (0: never, while the parent could not fork anyway).
    pub fn set_ring_below(&self, idle: u64) {
        self.header().ring_below.store(idle, Relaxed);
    }

    /// Parent only: counts one maintenance round (one wake-up of the parent).
    pub fn count_parent_round(&self) {
        self.header().parent_rounds.fetch_add(1, Relaxed);
    }

    /// Parent only: the whole server is stopping (workers close what they hold between
    /// requests rather than hand it to a sibling that is stopping too).
    pub fn set_server_stopping(&self) {
        self.header().server_stopping.store(1, Release);
        self.set_draining();
    }

    /// Parent only: a generation is ready, so the server is (from then on, until it drains).
    pub fn set_ready(&self) {
        self.header().readiness.fetch_or(READY, Release);
    }

    /// Parent only: the server drains (readiness probes fail) before it stops.
    pub fn set_draining(&self) {
        self.header().readiness.fetch_or(DRAINING, Release);
    }

    /// Whether a generation has been ready, and the server neither drains, stops nor is
    /// paused: what a readiness probe answers.
    pub fn is_ready(&self) -> bool {
        self.header().readiness.load(Acquire) & (READY | DRAINING | PAUSED) == READY
    }

    /// Parent only: pauses the pool (workers take no new connection; those that come wait in
    /// the listen queue) or resumes it. Workers read it when the parent nudges them.
    pub fn set_paused(&self, paused: bool) {
        if paused {
            self.header().readiness.fetch_or(PAUSED, Release);
        } else {
            self.header().readiness.fetch_and(!PAUSED, Release);
        }
    }

    /// Whether the pool is paused.
    pub fn is_paused(&self) -> bool {
        self.header().readiness.load(Acquire) & PAUSED != 0
    }

    /// Whether the server drains or stops.
    pub fn is_draining(&self) -> bool {
        self.header().readiness.load(Acquire) & DRAINING != 0
    }

    /// The supervisor's pid.
    pub fn parent_pid(&self) -> u32 {
        self.header().parent_pid.load(Relaxed)
    }

    /// Whether the parent has stopped forking because workers keep failing to boot.
    pub fn spawning_halted(&self) -> bool {
        self.header().spawning_halted.load(Relaxed) != 0
    }

    /// The workers' own count of idle workers (see [`Board::repair_idle_count`]).
    pub fn idle_workers(&self) -> u64 {
        self.header().idle_workers.load(Relaxed)
    }

    /// Parent only: the slots counted as idle right now (each slot's own flag), for checking
    /// the workers' shared count, which a worker killed between its two writes leaves off by
    /// one.
    pub fn idle_flags(&self) -> u64 {
        (0..self.slot_count).filter(|&i| self.slot(i).counted_idle.load(Relaxed) != 0).count() as u64
    }

    /// Parent only: moves the shared idle count by `delta` (a drift the parent has seen last
    /// long enough not to be a transition in progress).
    pub fn repair_idle_count(&self, delta: i64) {
        let count = &self.header().idle_workers;
        if delta >= 0 {
            count.fetch_add(delta as u64, Relaxed);
        } else {
            let _ = count.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(delta.unsigned_abs())));
        }
    }

    /// Parent only, after `waitpid` has reaped the slot's worker: marks the slot empty.
    ///
    /// The per-slot counters (behind the server's totals) keep what the dead worker did; the
    /// next worker to claim the slot restarts only the per-process ones.
    pub fn clear_slot(&self, index: usize) {
        let slot = self.slot(index);
        if slot.pid.swap(0, AcqRel) == 0 {
            return; // never claimed, or already cleared
        }
        slot.state.store(WorkerState::Dead as u8, Release);
        if slot.counted_idle.swap(0, AcqRel) != 0 {
            self.repair_idle_count(-1);
        }
        slot.flags.store(0, Relaxed);
        slot.parked.store(0, Relaxed);
        slot.oldest_in_flight_micros.store(0, Relaxed);
        slot.last_change_micros.store(monotonic_micros(), Relaxed);
        record::clear(slot);
    }

    // ----- Worker only -----

    /// Worker only, once, right after fork: takes ownership of slot `index`, resets its
    /// per-process counters (the per-slot ones go on) and marks it [`WorkerState::Starting`].
    ///
    /// The returned writer is the only handle that writes the slot afterwards.
    pub fn claim_slot(&self, index: usize, pid: u32, generation: u64) -> SlotWriter<'_> {
        let slot = self.slot(index);
        // The process's own counts start again; the slot's go on (see `slot_fields`).
        macro_rules! reset_worker_fields {
            (
                before { $( $(#[doc = $bd:literal])* $before:ident : $before_reset:ident ; )* }
                after { $( $(#[doc = $ad:literal])* $after:ident : $after_reset:ident ; )* }
            ) => {
                $( reset_on_claim!($before_reset, slot.$before); )*
                $( reset_on_claim!($after_reset, slot.$after); )*
            };
        }
        slot_fields!(reset_worker_fields);
        slot.counted_idle.store(0, Relaxed);
        slot.flags.store(0, Relaxed);
        slot.generation.store(generation, Relaxed);
        slot.started_unix_micros.store(unix_micros(), Relaxed);
        let writer = SlotWriter { slot, header: self.header() };
        let _ = writer.set_state(WorkerState::Starting);
        slot.pid.store(pid, Release);
        writer
    }

    /// The owning worker only (after its worker function returned): publishes a note in place
    /// of a request, such as why it could not get ready, for the parent to read after
    /// reaping it.
    pub fn publish_note(&self, index: usize, note: &str) {
        record::publish(
            self.slot(index),
            monotonic_micros(),
            &RequestInfo { line: note.as_bytes(), ..Default::default() },
        );
    }

    // ----- Anyone -----

    /// Reads one slot without locking; its request record is a consistent copy.
    pub fn slot_snapshot(&self, index: usize) -> SlotSnapshot {
        let mut snapshot = SlotSnapshot::EMPTY;
        self.fill_slot_snapshot(index, &mut snapshot, true);
        snapshot
    }

    /// Reads one slot's states and counters, not its request record (`request` is `None`):
    /// for the supervisor's maintenance rounds, which never look at the record.
    pub fn slot_counters(&self, index: usize) -> SlotSnapshot {
        let mut snapshot = SlotSnapshot::EMPTY;
        self.fill_slot_snapshot(index, &mut snapshot, false);
        snapshot
    }

    /// Reads one slot into `out` in place (no allocation); the request record too if
    /// `with_request`.
    fn fill_slot_snapshot(&self, index: usize, out: &mut SlotSnapshot, with_request: bool) {
        let s = self.slot(index);
        out.index = index;
        out.pid = s.pid.load(Acquire);
        out.state = WorkerState::from_u8(s.state.load(Acquire));
        out.flags = s.flags.load(Relaxed);
        macro_rules! copy_fields {
            (
                before { $( $(#[doc = $bd:literal])* $before:ident : $before_reset:ident ; )* }
                after { $( $(#[doc = $ad:literal])* $after:ident : $after_reset:ident ; )* }
            ) => {
                $( out.$before = s.$before.load(Relaxed); )*
                $( out.$after = s.$after.load(Relaxed); )*
            };
        }
        slot_fields!(copy_fields);
        // An empty slot's record was cleared with it: skip the copy.
        out.request_unreadable = if out.pid == 0 || !with_request {
            out.request = None;
            false
        } else {
            record::read_into(s, &mut out.request) == RecordRead::Unreadable
        };
    }

    /// The header's fields.
    pub fn header_snapshot(&self) -> HeaderSnapshot {
        let h = self.header();
        let get = |field: &AtomicU64| field.load(Relaxed);
        HeaderSnapshot {
            parent_pid: h.parent_pid.load(Relaxed),
            generation: h.generation.load(Acquire),
            slot_count: self.slot_count,
            start_unix_micros: get(&h.start_unix_micros),
            start_monotonic_micros: get(&h.start_monotonic_micros),
            config: BoardConfig {
                start_servers: get(&h.start_servers),
                min_spare_servers: get(&h.min_spare_servers),
                max_spare_servers: get(&h.max_spare_servers),
                max_clients: get(&h.max_clients),
                max_requests_per_child: get(&h.max_requests_per_child),
                slow_request_micros: get(&h.slow_request_micros),
            },
            workers_forked: get(&h.workers_forked),
            max_clients_reached: get(&h.max_clients_reached),
            listen_queue: get(&h.listen_queue),
            listen_queue_max: get(&h.listen_queue_max),
            listen_backlog: get(&h.listen_backlog),
            stuck_kills: get(&h.stuck_kills),
            boot_failures: get(&h.boot_failures),
            spawning_halted: get(&h.spawning_halted) != 0,
            reloads: get(&h.reloads),
            reload_failures: get(&h.reload_failures),
            last_boot_error: h.last_boot_error.read_text().unwrap_or_default(),
            idle_workers: get(&h.idle_workers),
            ring_below: get(&h.ring_below),
            parent_rounds: get(&h.parent_rounds),
            server_stopping: get(&h.server_stopping) != 0,
            ready: get(&h.readiness) & READY != 0,
            draining: get(&h.readiness) & DRAINING != 0,
            paused: get(&h.readiness) & PAUSED != 0,
        }
    }

    /// Reads the whole board without locking. Fields of one slot are read one by one, so a
    /// slot that changes during the read may mix two moments; each field is always whole,
    /// and each request record is one consistent copy.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::empty();
        self.snapshot_into(&mut snapshot);
        snapshot
    }

    /// As [`snapshot`](Self::snapshot), reusing `into`'s allocation.
    pub fn snapshot_into(&self, into: &mut Snapshot) {
        into.taken_unix_micros = unix_micros();
        into.taken_monotonic_micros = monotonic_micros();
        into.header = self.header_snapshot();
        into.slots.resize(self.slot_count, SlotSnapshot::EMPTY);
        for (index, slot) in into.slots.iter_mut().enumerate() {
            self.fill_slot_snapshot(index, slot, true);
        }
    }
}

/// The owning worker's handle on its slot: the only writer of that slot while the worker lives.
#[derive(Debug)]
pub struct SlotWriter<'a> {
    slot: &'a Slot,
    header: &'a Header,
}

impl SlotWriter<'_> {
    /// The state last written.
    pub fn state(&self) -> WorkerState {
        WorkerState::from_u8(self.slot.state.load(Relaxed))
    }

    /// Publishes a state change and its time (to the kernel tick: this runs several times per
    /// request, and the time is only ever shown in seconds), and keeps the pool's count of
    /// idle workers. True if this worker just left `_` and fewer idle workers than the parent
    /// asked for are left: the caller should ring the doorbell.
    pub fn set_state(&self, state: WorkerState) -> bool {
        self.slot.last_change_micros.store(coarse_monotonic_micros(), Relaxed);
        self.slot.state.store(state as u8, Release);
        let idle = state.is_idle();
        let counted = self.slot.counted_idle.load(Relaxed) != 0;
        if idle == counted {
            return false;
        }
        // The flag first, then the count: the parent repairs the count from the flags if this
        // worker dies in between.
        self.slot.counted_idle.store(u8::from(idle), Relaxed);
        if idle {
            self.header.idle_workers.fetch_add(1, Relaxed);
            false
        } else {
            // Never below zero (a repair may have raced a transition).
            let before =
                self.header.idle_workers.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1))).unwrap_or(0);
            before.saturating_sub(1) < self.header.ring_below.load(Relaxed)
        }
    }

    /// The slot's parking fields, for the worker's parking thread (their only writer).
    /// The HTTP worker's own: not part of the stable API.
    #[doc(hidden)]
    pub fn parking_writer(&self) -> ParkingWriter<'_> {
        ParkingWriter { slot: self.slot }
    }

    /// Counts a connection taken from a sibling (the HTTP worker's hand-off; not part of the
    /// stable API).
    #[doc(hidden)]
    pub fn count_adopted(&self) {
        self.slot.adopted_slot.fetch_add(1, Relaxed);
    }

    /// Whether the whole server is stopping.
    pub fn server_stopping(&self) -> bool {
        self.header.server_stopping.load(Acquire) != 0
    }

    /// Counts one accepted connection (and starts its per-connection count).
    pub fn record_connection(&self) {
        self.slot.requests_connection.store(0, Relaxed);
        self.slot.connections.fetch_add(1, Relaxed);
        self.slot.connections_slot.fetch_add(1, Relaxed);
    }

    /// Counts `calls` `accept4` calls, successful or not.
    pub fn record_accept_calls(&self, calls: u64) {
        if calls > 0 {
            self.slot.accept_calls.fetch_add(calls, Relaxed);
            self.slot.accept_calls_slot.fetch_add(calls, Relaxed);
        }
    }

    /// Publishes the request that begins now (the status page shows it as the slot's current
    /// request); finish it with [`SlotWriter::finish_request`].
    #[must_use = "a begun request is finished with SlotWriter::finish_request"]
    pub fn begin_request(&self, info: &RequestInfo<'_>) -> RequestStart {
        let now = monotonic_micros();
        record::publish(self.slot, now, info);
        RequestStart(now)
    }

    /// Counts the request begun at `start` that ends now, with the body bytes it sent. With
    /// several requests at once (HTTP/2, several connections) the one ending is not
    /// necessarily the last one begun: hence the start passed back.
    pub fn finish_request(&self, start: RequestStart, body_bytes: u64) -> FinishedRequest {
        let duration_micros = monotonic_micros().saturating_sub(start.0);
        let slow_after = self.header.slow_request_micros.load(Relaxed);
        let slow = slow_after > 0 && duration_micros > slow_after;
        self.slot.last_duration_micros.store(duration_micros, Relaxed);
        if slow {
            self.slot.slow_requests.fetch_add(1, Relaxed);
            self.slot.slow_requests_slot.fetch_add(1, Relaxed);
        }
        self.slot.bytes_child.fetch_add(body_bytes, Relaxed);
        self.slot.bytes_slot.fetch_add(body_bytes, Relaxed);
        self.slot.requests_connection.fetch_add(1, Relaxed);
        self.slot.requests_slot.fetch_add(1, Relaxed);
        self.slot.requests_child.fetch_add(1, Release);
        FinishedRequest { duration_micros, slow }
    }

    /// Publishes the oldest request still running (`None`: none is running), which the
    /// supervisor's stuck-worker watchdog reads.
    pub fn set_oldest_in_flight(&self, oldest: Option<RequestStart>) {
        self.slot.oldest_in_flight_micros.store(oldest.map_or(0, |start| start.0), Release);
    }

    /// The connections this worker's parking thread holds (as it last published).
    pub fn parked(&self) -> u64 {
        self.slot.parked.load(Relaxed)
    }

    /// The resident memory last sampled, bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.slot.rss_bytes.load(Relaxed)
    }

    /// Publishes a sample of the process's CPU time (µs) and resident memory (bytes).
    pub fn record_usage(&self, cpu_micros: u64, rss_bytes: u64) {
        self.slot.cpu_micros.store(cpu_micros, Relaxed);
        self.slot.rss_bytes.store(rss_bytes, Relaxed);
        self.slot.usage_sampled_micros.store(monotonic_micros(), Relaxed);
    }

    /// When usage was last sampled (`CLOCK_MONOTONIC` µs, 0: never).
    pub fn usage_sampled_micros(&self) -> u64 {
        self.slot.usage_sampled_micros.load(Relaxed)
    }

    /// Asks the parent to replace this worker (a recycling limit was reached).
    pub fn request_retirement(&self) {
        self.slot.flags.fetch_or(SlotFlags::RETIRE_REQUESTED, Release);
    }

    /// Says whether this worker's accept wait watches the listener (false: the pool is
    /// paused, and this worker has stopped taking new connections).
    pub fn set_accepting(&self, accepting: bool) {
        if accepting {
            self.slot.flags.fetch_and(!SlotFlags::NOT_ACCEPTING, Release);
        } else {
            self.slot.flags.fetch_or(SlotFlags::NOT_ACCEPTING, Release);
        }
    }
}

/// The fields of a slot that a worker's parking thread writes (the connections it holds
/// between requests, and what became of them); the rest of the slot is the main thread's.
/// The HTTP worker's own: not part of the stable API.
#[doc(hidden)]
#[derive(Debug)]
pub struct ParkingWriter<'a> {
    slot: &'a Slot,
}

impl ParkingWriter<'_> {
    /// Publishes how many connections the worker holds between requests.
    pub fn set_parked(&self, connections: usize) {
        self.slot.parked.store(connections as u64, Relaxed);
    }

    /// When the oldest request the worker's main thread runs began (`CLOCK_MONOTONIC` µs;
    /// 0: none), for noticing a worker about to be killed for it.
    pub fn oldest_in_flight_micros(&self) -> u64 {
        self.slot.oldest_in_flight_micros.load(Relaxed)
    }

    /// Counts a connection handed to a sibling (with its complete request, or, when this
    /// worker goes, as it is).
    pub fn count_handed_off(&self) {
        self.slot.handed_off_slot.fetch_add(1, Relaxed);
    }

    /// Counts a parked connection closed because its request did not arrive in time.
    pub fn count_parked_timeout(&self) {
        self.slot.parked_timeouts_slot.fetch_add(1, Relaxed);
    }

    /// Counts a parked connection closed to make room for another.
    pub fn count_parked_eviction(&self) {
        self.slot.parked_evictions_slot.fetch_add(1, Relaxed);
    }
}

/// A request begun with [`SlotWriter::begin_request`]; ordered by start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestStart(u64);

impl RequestStart {
    /// When it began (`CLOCK_MONOTONIC` µs).
    pub fn micros(self) -> u64 {
        self.0
    }
}

/// What [`SlotWriter::finish_request`] recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FinishedRequest {
    /// How long the request took, µs.
    pub duration_micros: u64,
    /// Longer than the slow-request threshold in force (and counted as slow).
    pub slow: bool,
}

#[cfg(test)]
mod tests;
