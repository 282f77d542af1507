//! A typed view of a mapped segment: the header, the slots, the single-writer slot handle.

use std::ptr::NonNull;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::clock::{monotonic_micros, unix_micros};
use crate::layout::{Header, LAYOUT_VERSION, MAGIC, MAX_SLOTS, Slot, segment_size, slots_offset};
use crate::snapshot::{HeaderSnapshot, SlotSnapshot, Snapshot};
use crate::{ScoreboardError, WorkerState};

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
    /// to 64, which stay mapped for as long as the returned `Board` (or any copy of its
    /// pointers) is used.
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
        h.start_unix_micros.store(unix_micros(), Relaxed);
        h.start_monotonic_micros.store(monotonic_micros(), Relaxed);
        // Published last: a reader that sees the magic sees the whole header.
        h.magic.store(MAGIC, Release);
        board
    }

    /// Validates the header of an existing segment of `len` bytes and returns the view.
    ///
    /// # Safety
    /// `base` must point to `len` readable and writable bytes aligned to 64 that stay mapped
    /// for as long as the returned `Board` is used.
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

    fn header(&self) -> &Header {
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

    /// Pid of the parent (supervisor) that created the segment.
    pub fn parent_pid(&self) -> u32 {
        self.header().parent_pid.load(Relaxed)
    }

    /// The current worker generation.
    pub fn generation(&self) -> u64 {
        self.header().generation.load(Acquire)
    }

    /// Parent only: starts a new worker generation (graceful reload) and returns it.
    pub fn bump_generation(&self) -> u64 {
        self.header().generation.fetch_add(1, Release) + 1
    }

    /// The state stored in a slot.
    pub fn slot_state(&self, index: usize) -> WorkerState {
        WorkerState::from_u8(self.slot(index).state.load(Acquire))
    }

    /// The pid stored in a slot (0 when empty).
    pub fn slot_pid(&self, index: usize) -> u32 {
        self.slot(index).pid.load(Acquire)
    }

    /// Worker only, once, right after fork: takes ownership of slot `index`, resets its
    /// per-process counters and marks it [`WorkerState::Starting`].
    ///
    /// The returned writer is the only handle that writes the slot afterwards.
    pub fn claim_slot(&self, index: usize, pid: u32, generation: u64) -> SlotWriter<'_> {
        let slot = self.slot(index);
        slot.requests.store(0, Relaxed);
        slot.bytes.store(0, Relaxed);
        slot.connections.store(0, Relaxed);
        slot.accept_calls.store(0, Relaxed);
        slot.generation.store(generation, Relaxed);
        slot.started_unix_micros.store(unix_micros(), Relaxed);
        let writer = SlotWriter { slot, index };
        writer.set_state(WorkerState::Starting);
        slot.pid.store(pid, Release);
        writer
    }

    /// Parent only, after `waitpid` has reaped the slot's worker: marks the slot empty and
    /// folds the worker's counters into the header totals.
    ///
    /// The slot keeps its counters until the next worker claims it, so a status reader can
    /// still see what the dead worker did; totals count only live slots plus the header.
    pub fn clear_slot(&self, index: usize) {
        let slot = self.slot(index);
        if slot.pid.swap(0, AcqRel) == 0 {
            return; // never claimed, or already cleared: nothing to fold in twice
        }
        slot.state.store(WorkerState::Dead as u8, Release);
        slot.last_change_micros.store(monotonic_micros(), Relaxed);
        let h = self.header();
        h.retired_requests.fetch_add(slot.requests.load(Relaxed), Relaxed);
        h.retired_bytes.fetch_add(slot.bytes.load(Relaxed), Relaxed);
        h.retired_connections.fetch_add(slot.connections.load(Relaxed), Relaxed);
        h.retired_accept_calls.fetch_add(slot.accept_calls.load(Relaxed), Relaxed);
    }

    /// Reads one slot's fields without locking.
    pub fn slot_snapshot(&self, index: usize) -> SlotSnapshot {
        let s = self.slot(index);
        SlotSnapshot {
            index,
            pid: s.pid.load(Acquire),
            state: WorkerState::from_u8(s.state.load(Acquire)),
            generation: s.generation.load(Relaxed),
            requests: s.requests.load(Relaxed),
            bytes: s.bytes.load(Relaxed),
            connections: s.connections.load(Relaxed),
            accept_calls: s.accept_calls.load(Relaxed),
            started_unix_micros: s.started_unix_micros.load(Relaxed),
            last_change_micros: s.last_change_micros.load(Relaxed),
        }
    }

    /// Reads every field without locking. Fields of one slot are read one by one, so a slot
    /// that changes during the read may mix two moments; each field is always whole.
    pub fn snapshot(&self) -> Snapshot {
        let h = self.header();
        let header = HeaderSnapshot {
            parent_pid: h.parent_pid.load(Relaxed),
            generation: h.generation.load(Acquire),
            slot_count: self.slot_count,
            start_unix_micros: h.start_unix_micros.load(Relaxed),
            start_monotonic_micros: h.start_monotonic_micros.load(Relaxed),
            retired_requests: h.retired_requests.load(Relaxed),
            retired_bytes: h.retired_bytes.load(Relaxed),
            retired_connections: h.retired_connections.load(Relaxed),
            retired_accept_calls: h.retired_accept_calls.load(Relaxed),
        };
        let slots = (0..self.slot_count).map(|index| self.slot_snapshot(index)).collect();
        Snapshot { taken_unix_micros: unix_micros(), taken_monotonic_micros: monotonic_micros(), header, slots }
    }
}

/// The owning worker's handle on its slot: the only writer of that slot while the worker lives.
#[derive(Debug)]
pub struct SlotWriter<'a> {
    slot: &'a Slot,
    index: usize,
}

impl SlotWriter<'_> {
    /// The slot's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The state last written.
    pub fn state(&self) -> WorkerState {
        WorkerState::from_u8(self.slot.state.load(Relaxed))
    }

    /// Publishes a state change and its time.
    pub fn set_state(&self, state: WorkerState) {
        self.slot.last_change_micros.store(monotonic_micros(), Relaxed);
        self.slot.state.store(state as u8, Release);
    }

    /// Counts one accepted connection.
    pub fn record_connection(&self) {
        self.slot.connections.fetch_add(1, Relaxed);
    }

    /// Counts one `accept4` call, successful or not.
    pub fn record_accept_call(&self) {
        self.slot.accept_calls.fetch_add(1, Relaxed);
    }

    /// Counts one finished request and the body bytes it sent.
    pub fn record_request(&self, body_bytes: u64) {
        self.slot.bytes.fetch_add(body_bytes, Relaxed);
        self.slot.requests.fetch_add(1, Release);
    }

    /// Requests this worker has finished.
    pub fn requests(&self) -> u64 {
        self.slot.requests.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::segment_size;

    /// A heap buffer standing in for a mapping (same layout, no shared memory needed).
    struct Memory(Vec<Slot>);

    impl Memory {
        fn board(&mut self, slots: usize) -> Board {
            // Two extra Slot-sized elements hold the 128-byte header.
            assert_eq!(segment_size(slots), (slots + 2) * size_of::<Slot>());
            let base = NonNull::new(self.0.as_mut_ptr().cast::<u8>()).unwrap();
            // SAFETY: the Vec is zeroed (all-zero atomics), 64-aligned and large enough.
            unsafe { Board::initialise(base, slots, 4242) }
        }
    }

    fn memory(slots: usize) -> Memory {
        Memory((0..slots + 2).map(|_| zeroed_slot()).collect())
    }

    fn zeroed_slot() -> Slot {
        // SAFETY: a Slot is only atomics, for which all-zero bytes are valid.
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn a_fresh_board_is_all_dead_slots_at_generation_one() {
        let mut mem = memory(4);
        let board = mem.board(4);
        let snap = board.snapshot();
        assert_eq!(snap.header.parent_pid, 4242);
        assert_eq!(snap.header.generation, 1);
        assert_eq!(snap.scoreboard_string(), "....");
        assert_eq!(snap.processes(), 0);
    }

    #[test]
    fn attach_validates_the_header_written_by_initialise() {
        let mut mem = memory(3);
        let board = mem.board(3);
        let base = board.header.cast::<u8>();
        // SAFETY: same memory, same length.
        let again = unsafe { Board::attach(base, segment_size(3)) }.unwrap();
        assert_eq!(again.slot_count(), 3);
        // SAFETY: as above, but a length too short for the slots.
        let short = unsafe { Board::attach(base, segment_size(2)) };
        assert!(matches!(short, Err(ScoreboardError::Layout(_))));
    }

    #[test]
    fn attach_refuses_memory_without_the_magic() {
        let mut mem = memory(1);
        let base = NonNull::new(mem.0.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: zeroed, aligned memory of the right size.
        let err = unsafe { Board::attach(base, segment_size(1)) }.unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");
    }

    #[test]
    fn a_claimed_slot_records_state_and_counters_and_clear_empties_it() {
        let mut mem = memory(2);
        let board = mem.board(2);
        let w = board.claim_slot(1, 777, 1);
        assert_eq!(board.slot_state(1), WorkerState::Starting);
        w.set_state(WorkerState::Idle);
        w.record_accept_call();
        w.record_accept_call();
        w.record_connection();
        w.set_state(WorkerState::Writing);
        w.record_request(12);
        w.record_request(30);
        let snap = board.snapshot();
        assert_eq!(snap.scoreboard_string(), ".W");
        let s = &snap.slots[1];
        assert_eq!((s.pid, s.requests, s.bytes, s.connections, s.accept_calls), (777, 2, 42, 1, 2));
        board.clear_slot(1);
        let snap = board.snapshot();
        assert_eq!(snap.scoreboard_string(), "..");
        assert_eq!(board.slot_pid(1), 0);
        // The dead worker's work still counts, once, even if the parent clears twice.
        board.clear_slot(1);
        let totals = board.snapshot().totals();
        assert_eq!((totals.requests, totals.bytes, totals.connections, totals.accept_calls), (2, 42, 1, 2));
    }

    #[test]
    fn claiming_a_slot_again_resets_the_previous_workers_counters() {
        let mut mem = memory(1);
        let board = mem.board(1);
        board.claim_slot(0, 1, 1).record_request(5);
        board.clear_slot(0);
        let w = board.claim_slot(0, 2, 2);
        assert_eq!(w.requests(), 0);
        assert_eq!(board.snapshot().slots[0].generation, 2);
    }

    #[test]
    fn bump_generation_counts_up() {
        let mut mem = memory(1);
        let board = mem.board(1);
        assert_eq!(board.bump_generation(), 2);
        assert_eq!(board.generation(), 2);
    }
}
