//! Unit tests of the board over heap memory laid out like a segment.

use super::*;
use crate::layout::segment_size;

/// A heap buffer standing in for a mapping (same layout, no shared memory needed).
struct Memory(Vec<Slot>);

impl Memory {
    fn new(slots: usize) -> Memory {
        // The header is 384 bytes, and a Slot is 512: one extra Slot covers it.
        assert!(segment_size(slots) <= (slots + 1) * size_of::<Slot>());
        // SAFETY: a Slot is only atomics, for which all-zero bytes are valid.
        Memory((0..=slots).map(|_| unsafe { std::mem::zeroed() }).collect())
    }

    fn base(&mut self) -> NonNull<u8> {
        NonNull::new(self.0.as_mut_ptr().cast::<u8>()).unwrap()
    }

    fn board(&mut self, slots: usize) -> Board {
        // SAFETY: zeroed (all-zero atomics), 64-aligned and large enough.
        unsafe { Board::initialise(self.base(), slots, 4242) }
    }
}

#[test]
fn a_fresh_board_is_all_dead_slots_at_generation_one() {
    let mut mem = Memory::new(4);
    let board = mem.board(4);
    let snap = board.snapshot();
    assert_eq!(snap.header.parent_pid, 4242);
    assert_eq!(snap.header.generation, 1);
    assert_eq!(snap.header.config.max_clients, 4);
    assert_eq!(snap.scoreboard_string(), "....");
    assert_eq!(snap.processes(), 0);
}

#[test]
fn attach_validates_the_header_written_by_initialise() {
    let mut mem = Memory::new(3);
    let base = mem.base();
    let _board = mem.board(3);
    // SAFETY: same memory, same length.
    let again = unsafe { Board::attach(base, segment_size(3)) }.unwrap();
    assert_eq!(again.slot_count(), 3);
    // SAFETY: as above, but a length too short for the slots.
    let short = unsafe { Board::attach(base, segment_size(2)) };
    assert!(matches!(short, Err(ScoreboardError::Layout(_))));
}

#[test]
fn attach_refuses_memory_without_the_magic() {
    let mut mem = Memory::new(1);
    // SAFETY: zeroed, aligned memory of the right size.
    let err = unsafe { Board::attach(mem.base(), segment_size(1)) }.unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
}

#[test]
fn a_claimed_slot_records_requests_and_its_work_stays_in_the_totals_after_clear() {
    let mut mem = Memory::new(2);
    let board = mem.board(2);
    let w = board.claim_slot(1, 777, 1);
    assert_eq!(board.slot_snapshot(1).state, WorkerState::Starting);
    w.set_state(WorkerState::Idle);
    w.record_accept_calls(2);
    w.record_connection();
    w.set_state(WorkerState::Writing);
    let start = w.begin_request(&RequestInfo { line: b"GET / HTTP/1.1", client: b"127.0.0.1:1", ..Default::default() });
    w.finish_request(start, 12);
    let start =
        w.begin_request(&RequestInfo { line: b"GET /b HTTP/1.1", client: b"127.0.0.1:1", ..Default::default() });
    w.finish_request(start, 30);
    let snap = board.snapshot();
    assert_eq!(snap.scoreboard_string(), ".W");
    let s = &snap.slots[1];
    assert_eq!((s.pid, s.requests_child, s.requests_slot, s.requests_connection), (777, 2, 2, 2));
    assert_eq!((s.bytes_child, s.connections, s.accept_calls), (42, 1, 2));
    assert_eq!(s.request.unwrap().line().to_string_lossy(), "GET /b HTTP/1.1");
    board.clear_slot(1);
    let snap = board.snapshot();
    assert_eq!(snap.scoreboard_string(), "..");
    assert!(snap.slots[1].request.is_none(), "a cleared slot forgets its request");
    // The dead worker's work still counts, once, even if the parent clears twice, and after
    // a new worker claims the slot.
    board.clear_slot(1);
    let totals = board.snapshot().totals();
    assert_eq!((totals.requests, totals.bytes, totals.connections, totals.accept_calls), (2, 42, 1, 2));
    let w = board.claim_slot(1, 778, 1);
    w.record_connection();
    let totals = board.snapshot().totals();
    assert_eq!((totals.requests, totals.connections, totals.accept_calls), (2, 2, 2));
}

#[test]
fn per_slot_counts_survive_a_new_worker_but_per_child_counts_restart() {
    let mut mem = Memory::new(1);
    let board = mem.board(1);
    let first = board.claim_slot(0, 1, 1);
    first.finish_request(first.begin_request(&RequestInfo::default()), 5);
    board.clear_slot(0);
    let second = board.claim_slot(0, 2, 2);
    assert_eq!(board.slot_snapshot(0).requests_child, 0);
    second.finish_request(second.begin_request(&RequestInfo::default()), 7);
    let s = board.slot_snapshot(0);
    assert_eq!((s.requests_child, s.requests_slot, s.bytes_child, s.bytes_slot, s.generation), (1, 2, 7, 12, 2));
}

#[test]
fn a_new_connection_restarts_the_per_connection_count() {
    let mut mem = Memory::new(1);
    let board = mem.board(1);
    let w = board.claim_slot(0, 1, 1);
    w.record_connection();
    w.finish_request(w.begin_request(&RequestInfo::default()), 1);
    w.finish_request(w.begin_request(&RequestInfo::default()), 1);
    w.record_connection();
    w.finish_request(w.begin_request(&RequestInfo::default()), 1);
    assert_eq!(board.slot_snapshot(0).requests_connection, 1);
}

#[test]
fn slow_requests_are_counted_against_the_published_threshold() {
    let mut mem = Memory::new(1);
    let board = mem.board(1);
    board.publish_config(&BoardConfig { slow_request_micros: 1, ..Default::default() });
    let w = board.claim_slot(0, 1, 1);
    let start = w.begin_request(&RequestInfo::default());
    std::thread::sleep(std::time::Duration::from_millis(2));
    let finished = w.finish_request(start, 0);
    assert!(finished.duration_micros >= 2_000 && finished.slow, "{finished:?}");
    board.publish_config(&BoardConfig { slow_request_micros: 0, ..Default::default() });
    let start = w.begin_request(&RequestInfo::default());
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert!(!w.finish_request(start, 0).slow);
    let snap = board.snapshot();
    assert_eq!((snap.slots[0].slow_requests, snap.totals().slow_requests), (1, 1));
}

#[test]
fn header_counters_and_config_are_published() {
    let mut mem = Memory::new(2);
    let board = mem.board(2);
    board.publish_config(&BoardConfig {
        start_servers: 2,
        min_spare_servers: 1,
        max_spare_servers: 2,
        max_clients: 2,
        max_requests_per_child: 50,
        slow_request_micros: 9,
    });
    board.count_fork();
    board.count_max_clients_reached();
    board.record_listen_queue(5, 511);
    board.record_listen_queue(2, 511);
    board.count_stuck_kill();
    board.set_boot_failures(3, true);
    assert_eq!(board.bump_generation(), 2);
    board.count_reload_failure();
    let h = board.header_snapshot();
    assert_eq!(h.config.max_requests_per_child, 50);
    assert_eq!((h.workers_forked, h.max_clients_reached, h.stuck_kills), (1, 1, 1));
    assert_eq!((h.listen_queue, h.listen_queue_max, h.listen_backlog), (2, 5, 511));
    assert_eq!((h.boot_failures, h.spawning_halted, h.reloads, h.reload_failures), (3, true, 1, 1));
    // A failed reload goes back to generation 1; the next one never reuses 2.
    board.set_generation(1);
    assert_eq!(board.bump_generation(), 3);
}

#[test]
fn a_worker_can_ask_to_retire() {
    let mut mem = Memory::new(1);
    let board = mem.board(1);
    let w = board.claim_slot(0, 1, 1);
    assert_eq!(board.slot_snapshot(0).flags & SlotFlags::RETIRE_REQUESTED, 0);
    w.request_retirement();
    assert_ne!(board.slot_snapshot(0).flags & SlotFlags::RETIRE_REQUESTED, 0);
    board.clear_slot(0);
    assert_eq!(board.slot_snapshot(0).flags, 0);
}
