//! The `#[repr(C)]` memory layout of the segment: one header, then one slot per possible worker.
//!
//! Every field is an atomic, so any process may read any field at any time without a lock and
//! a process killed mid-update leaves every field whole. The slot is 64 bytes and 64-byte
//! aligned: each worker writes its own cache line and never slows its neighbours.

use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};

/// "SHPFSCBD": identifies a simplehttp-prefork scoreboard.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHPFSCBD");

/// Bumped whenever the layout changes, so that a status tool built from another version
/// refuses to read a segment it would misinterpret.
pub const LAYOUT_VERSION: u32 = 1;

/// Upper bound on slots, far beyond Apache's default ServerLimit of 256: the segment is
/// 64 bytes per slot, but a pool this large on one host is a configuration mistake.
pub const MAX_SLOTS: usize = 65_536;

/// The segment header. Written by the parent only.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Header {
    /// [`MAGIC`], stored last when the segment is initialised.
    pub(crate) magic: AtomicU64,
    pub(crate) layout_version: AtomicU32,
    pub(crate) header_size: AtomicU32,
    pub(crate) slot_size: AtomicU32,
    pub(crate) slot_count: AtomicU32,
    pub(crate) parent_pid: AtomicU32,
    pub(crate) _reserved: AtomicU32,
    /// Bumped by the parent on each graceful reload.
    pub(crate) generation: AtomicU64,
    pub(crate) start_unix_micros: AtomicU64,
    pub(crate) start_monotonic_micros: AtomicU64,
    /// Counters of workers that have exited, folded in by the parent when it clears their
    /// slot, so that totals survive recycling.
    pub(crate) retired_requests: AtomicU64,
    pub(crate) retired_bytes: AtomicU64,
    pub(crate) retired_connections: AtomicU64,
    pub(crate) retired_accept_calls: AtomicU64,
}

/// One worker's slot. Written only by the worker that owns it, and reset by the parent after
/// it has reaped that worker.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Slot {
    pub(crate) pid: AtomicU32,
    /// A [`crate::WorkerState`] discriminant.
    pub(crate) state: AtomicU8,
    pub(crate) _pad: [AtomicU8; 3],
    /// The generation the worker was forked into.
    pub(crate) generation: AtomicU64,
    /// Requests answered by this worker (responses finished or abandoned).
    pub(crate) requests: AtomicU64,
    /// Response body bytes sent by this worker.
    pub(crate) bytes: AtomicU64,
    /// Connections accepted by this worker.
    pub(crate) connections: AtomicU64,
    /// `accept4` calls made by this worker, including those that found nothing (`EAGAIN`):
    /// `accept_calls / connections` is the thundering-herd cost.
    pub(crate) accept_calls: AtomicU64,
    /// When the worker process started (Unix epoch µs).
    pub(crate) started_unix_micros: AtomicU64,
    /// When `state` last changed (`CLOCK_MONOTONIC` µs).
    pub(crate) last_change_micros: AtomicU64,
}

/// Bytes needed for a segment with `slot_count` slots.
pub const fn segment_size(slot_count: usize) -> usize {
    size_of::<Header>() + slot_count * size_of::<Slot>()
}

/// Offset of slot 0 from the start of the segment.
pub const fn slots_offset() -> usize {
    size_of::<Header>()
}

const _: () = assert!(size_of::<Slot>() == 64 && align_of::<Slot>() == 64);
const _: () = assert!(size_of::<Header>() == 128 && align_of::<Header>() == 64);

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn header_fields_sit_at_fixed_offsets() {
        // A status tool of the same LAYOUT_VERSION reads these offsets; moving one is a layout change.
        assert_eq!(offset_of!(Header, magic), 0);
        assert_eq!(offset_of!(Header, layout_version), 8);
        assert_eq!(offset_of!(Header, header_size), 12);
        assert_eq!(offset_of!(Header, slot_size), 16);
        assert_eq!(offset_of!(Header, slot_count), 20);
        assert_eq!(offset_of!(Header, parent_pid), 24);
        assert_eq!(offset_of!(Header, generation), 32);
        assert_eq!(offset_of!(Header, start_unix_micros), 40);
        assert_eq!(offset_of!(Header, start_monotonic_micros), 48);
        assert_eq!(offset_of!(Header, retired_requests), 56);
        assert_eq!(offset_of!(Header, retired_accept_calls), 80);
    }

    #[test]
    fn slot_fields_sit_at_fixed_offsets_within_one_cache_line() {
        assert_eq!(offset_of!(Slot, pid), 0);
        assert_eq!(offset_of!(Slot, state), 4);
        assert_eq!(offset_of!(Slot, generation), 8);
        assert_eq!(offset_of!(Slot, requests), 16);
        assert_eq!(offset_of!(Slot, bytes), 24);
        assert_eq!(offset_of!(Slot, connections), 32);
        assert_eq!(offset_of!(Slot, accept_calls), 40);
        assert_eq!(offset_of!(Slot, started_unix_micros), 48);
        assert_eq!(offset_of!(Slot, last_change_micros), 56);
    }

    #[test]
    fn segment_size_is_header_plus_slots() {
        assert_eq!(segment_size(0), 128);
        assert_eq!(segment_size(256), 128 + 256 * 64);
        assert_eq!(slots_offset() % align_of::<Slot>(), 0);
    }

    #[test]
    fn magic_spells_its_name() {
        assert_eq!(&MAGIC.to_le_bytes(), b"SHPFSCBD");
    }
}
