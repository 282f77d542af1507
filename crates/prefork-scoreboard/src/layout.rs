//! The `#[repr(C)]` memory layout of the segment: one header, then one slot per possible worker.
//!
//! Every field is an atomic, so any process may read any field at any time without a lock and
//! a process killed mid-update leaves every field whole. Fields that only make sense together
//! (the current request's line, client, protocol, virtual host and start time) are published
//! under a per-slot sequence counter (see [`crate::record`]). Slots are cache-line aligned:
//! each worker writes its own lines and never slows a neighbour.

use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};

/// "SHPFSCBD": identifies a simplehttp-prefork scoreboard.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHPFSCBD");

/// Bumped whenever the layout changes, so that a status tool built from another version
/// refuses to read a segment it would misinterpret.
pub const LAYOUT_VERSION: u32 = 6;

/// Upper bound on slots, far beyond Apache's default ServerLimit of 256.
pub const MAX_SLOTS: usize = 65_536;

/// Bytes kept of the request line (`GET /path HTTP/1.1`), as php-fpm keeps 128 of the URI.
pub const REQUEST_LINE_BYTES: usize = 128;
/// Bytes kept of the client address (`[v6 address]:port` fits).
pub const CLIENT_BYTES: usize = 48;
/// Bytes kept of the protocol (`HTTP/1.1`, `HTTP/2.0`).
pub const PROTOCOL_BYTES: usize = 16;
/// Bytes kept of the virtual host (the `Host` header).
pub const VHOST_BYTES: usize = 64;
/// The four texts, packed into words.
pub(crate) const TEXT_WORDS: usize = (REQUEST_LINE_BYTES + CLIENT_BYTES + PROTOCOL_BYTES + VHOST_BYTES) / 8;
/// A request record: start time, the texts' lengths, the texts.
pub(crate) const RECORD_WORDS: usize = 2 + TEXT_WORDS;

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
    /// Bumped by the parent on each graceful reload (and set back by a failed one).
    pub(crate) generation: AtomicU64,
    pub(crate) start_unix_micros: AtomicU64,
    pub(crate) start_monotonic_micros: AtomicU64,

    // The configuration in force (TTIN/TTOU change the spare bounds at run time).
    pub(crate) start_servers: AtomicU64,
    pub(crate) min_spare_servers: AtomicU64,
    pub(crate) max_spare_servers: AtomicU64,
    pub(crate) max_clients: AtomicU64,
    /// 0: no limit.
    pub(crate) max_requests_per_child: AtomicU64,
    /// Requests longer than this count as slow (0: not counted).
    pub(crate) slow_request_micros: AtomicU64,

    // What the parent saw.
    pub(crate) workers_forked: AtomicU64,
    /// Times a needed fork was refused because `max_clients` workers were running.
    pub(crate) max_clients_reached: AtomicU64,
    /// Connections waiting in the listen queue at the last sample, the most seen, the limit.
    pub(crate) listen_queue: AtomicU64,
    pub(crate) listen_queue_max: AtomicU64,
    pub(crate) listen_backlog: AtomicU64,
    /// Workers killed because a request ran past `request_timeout`.
    pub(crate) stuck_kills: AtomicU64,
    /// Workers that failed to boot, in a row (0 once one boots).
    pub(crate) boot_failures: AtomicU64,
    /// 1 while the parent has stopped forking because workers keep failing to boot.
    pub(crate) spawning_halted: AtomicU64,
    pub(crate) reloads: AtomicU64,
    pub(crate) reload_failures: AtomicU64,
    /// The highest generation ever started: a reload after a failed one takes a number never
    /// used, so no straggler of the abandoned generation passes for a new worker.
    pub(crate) highest_generation: AtomicU64,
    /// Why the last worker failed to boot, published under its own sequence counter.
    pub(crate) last_boot_error: SeqWords<BOOT_ERROR_WORDS>,

    // Written by workers (the only header fields that are): how many wait for a connection.
    /// Workers in `_`, kept by the workers themselves as they enter and leave it (each slot's
    /// `counted_idle` says whether it is counted), so that a worker taking a connection knows,
    /// without reading every slot, whether the pool just ran short of idle workers.
    pub(crate) idle_workers: AtomicU64,
    /// Written by the parent: a worker leaving `_` rings the doorbell when fewer than this
    /// many are left idle (`min_spare_servers`; 0 while the parent could not fork anyway).
    pub(crate) ring_below: AtomicU64,
    /// Maintenance rounds the parent has run (each is one wake-up of the parent).
    pub(crate) parent_rounds: AtomicU64,
    /// 1 once the whole server is stopping: workers close the connections they hold between
    /// requests instead of handing them to a sibling.
    pub(crate) server_stopping: AtomicU64,
    /// What load balancers' readiness probes answer from: [`READY`] once the first generation
    /// is ready, [`DRAINING`] from a stop request on (the drain delay, then the stop), and
    /// [`PAUSED`] while the pool is paused.
    pub(crate) readiness: AtomicU64,
    /// Written by workers too: what workers asked of the supervisor (one bit per
    /// [`ControlRequest`](crate::ControlRequest)), taken and cleared by the parent. Workers
    /// that dropped their privileges cannot signal a parent running as root.
    pub(crate) control_requests: AtomicU64,
}

/// [`Header::readiness`] bit: a generation has been ready.
pub(crate) const READY: u64 = 1;
/// [`Header::readiness`] bit: the server is draining or stopping.
pub(crate) const DRAINING: u64 = 2;
/// [`Header::readiness`] bit: the pool is paused (workers take no new connection).
pub(crate) const PAUSED: u64 = 4;

/// Bytes kept of the last boot failure's cause.
pub const BOOT_ERROR_BYTES: usize = 128;
/// Its length, then the text.
pub(crate) const BOOT_ERROR_WORDS: usize = 1 + BOOT_ERROR_BYTES / 8;

/// Words one process rewrites while others read them, under a sequence counter (see
/// [`crate::seqlock`]).
#[repr(C)]
#[derive(Debug)]
pub struct SeqWords<const N: usize> {
    /// Odd while the writer writes.
    pub(crate) seq: AtomicU64,
    pub(crate) words: [AtomicU64; N],
}

/// Lays out [`Slot`] from the table in [`crate::slot_fields`].
macro_rules! define_slot {
    (
        before { $( $(#[doc = $before_doc:literal])* $before:ident : $before_reset:ident ; )* }
        after { $( $(#[doc = $after_doc:literal])* $after:ident : $after_reset:ident ; )* }
    ) => {
        /// One worker's slot. Written only by the worker that owns it, and reset by the parent
        /// after it has reaped that worker.
        #[repr(C, align(64))]
        #[derive(Debug)]
        pub struct Slot {
            pub(crate) pid: AtomicU32,
            /// A [`crate::WorkerState`] discriminant.
            pub(crate) state: AtomicU8,
            /// [`crate::SlotFlags`] bits.
            pub(crate) flags: AtomicU8,
            /// 1 while this slot is counted in the header's `idle_workers`.
            pub(crate) counted_idle: AtomicU8,
            pub(crate) _pad: AtomicU8,
            $( $(#[doc = $before_doc])* pub(crate) $before: AtomicU64, )*
            /// The current (or last) request: when it began (`CLOCK_MONOTONIC` µs; 0: none
            /// yet), the lengths of its four texts (one byte each), then request line, client,
            /// protocol and virtual host back to back (see [`crate::record`]).
            pub(crate) record: SeqWords<RECORD_WORDS>,
            $( $(#[doc = $after_doc])* pub(crate) $after: AtomicU64, )*
        }
    };
}

crate::slot_fields::slot_fields!(define_slot);

/// Bytes needed for a segment with `slot_count` slots.
pub const fn segment_size(slot_count: usize) -> usize {
    size_of::<Header>() + slot_count * size_of::<Slot>()
}

/// Offset of slot 0 from the start of the segment.
pub const fn slots_offset() -> usize {
    size_of::<Header>()
}

const _: () = assert!(size_of::<Header>() == 384 && align_of::<Header>() == 64);
const _: () = assert!(size_of::<Slot>() == 512 && align_of::<Slot>() == 64);
const _: () = assert!(TEXT_WORDS * 8 == REQUEST_LINE_BYTES + CLIENT_BYTES + PROTOCOL_BYTES + VHOST_BYTES);
const _: () = assert!(REQUEST_LINE_BYTES <= 255 && VHOST_BYTES <= 255);

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn header_fields_sit_at_fixed_offsets() {
        // A status tool of the same LAYOUT_VERSION reads these offsets; moving one is a layout change.
        assert_eq!(offset_of!(Header, magic), 0);
        assert_eq!(offset_of!(Header, layout_version), 8);
        assert_eq!(offset_of!(Header, slot_count), 20);
        assert_eq!(offset_of!(Header, parent_pid), 24);
        assert_eq!(offset_of!(Header, generation), 32);
        assert_eq!(offset_of!(Header, start_unix_micros), 40);
        assert_eq!(offset_of!(Header, start_servers), 56);
        assert_eq!(offset_of!(Header, slow_request_micros), 96);
        assert_eq!(offset_of!(Header, workers_forked), 104);
        assert_eq!(offset_of!(Header, reload_failures), 176);
        assert_eq!(offset_of!(Header, last_boot_error), 192);
        assert_eq!(offset_of!(Header, idle_workers), 336);
        assert_eq!(offset_of!(Header, server_stopping), 360);
        assert_eq!(offset_of!(Header, readiness), 368);
        assert_eq!(offset_of!(Header, control_requests), 376);
    }

    #[test]
    fn slot_fields_sit_at_fixed_offsets() {
        assert_eq!(offset_of!(Slot, pid), 0);
        assert_eq!(offset_of!(Slot, state), 4);
        assert_eq!(offset_of!(Slot, flags), 5);
        assert_eq!(offset_of!(Slot, generation), 8);
        assert_eq!(offset_of!(Slot, requests_child), 32);
        assert_eq!(offset_of!(Slot, accept_calls), 80);
        assert_eq!(offset_of!(Slot, usage_sampled_micros), 120);
        assert_eq!(offset_of!(Slot, record), 128);
        assert_eq!(offset_of!(Slot, connections_slot), 408);
        assert_eq!(offset_of!(Slot, oldest_in_flight_micros), 432);
        assert_eq!(offset_of!(Slot, counted_idle), 6);
        assert_eq!(offset_of!(Slot, parked), 440);
        assert_eq!(offset_of!(Slot, parked_evictions_slot), 472);
    }

    #[test]
    fn segment_size_is_header_plus_slots() {
        assert_eq!(segment_size(0), 384);
        assert_eq!(segment_size(256), 384 + 256 * 512);
        assert_eq!(slots_offset() % align_of::<Slot>(), 0);
    }

    #[test]
    fn magic_spells_its_name() {
        assert_eq!(&MAGIC.to_le_bytes(), b"SHPFSCBD");
    }
}
