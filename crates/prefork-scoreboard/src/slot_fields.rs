//! The slot's 64-bit fields, declared once: from this one table come the shared-memory layout
//! ([`crate::layout::Slot`]), the plain copy ([`crate::SlotSnapshot`] and its `EMPTY`), the
//! snapshot's loads and the reset when a worker claims the slot (in `board.rs`). A new counter
//! is one line here, and its place in the status document one line in `report/mod.rs`; the
//! layout tests still pin every offset (and `LAYOUT_VERSION` must be bumped when one moves).
//!
//! Each field says when it is reset: `worker` (to 0 when a new worker claims the slot: the
//! process's own count), `slot` (never: the slot's count over every process, which the server's
//! totals add up), or `claim` (set by `claim_slot` itself). The fields come in two groups, laid
//! out before and after the request record (their offsets are part of the layout).

/// Invokes `$then!` with the table: `before { .. } after { .. }`, each field as
/// `/// doc` `name: reset;`.
macro_rules! slot_fields {
    ($then:ident) => {
        $then! {
            before {
                /// The generation the worker was forked into.
                generation: claim;
                /// When the worker process started (Unix epoch µs).
                started_unix_micros: claim;
                /// When `state` last changed (`CLOCK_MONOTONIC` µs).
                last_change_micros: claim;
                /// Requests finished by this worker process (Apache's `Acc` triple: this
                /// process, the slot, the connection).
                requests_child: worker;
                /// Requests finished by every process in this slot.
                requests_slot: slot;
                /// Requests finished on the current connection.
                requests_connection: worker;
                /// Response body bytes sent by this process.
                bytes_child: worker;
                /// Response body bytes sent by every process in this slot.
                bytes_slot: slot;
                /// Connections accepted by this process.
                connections: worker;
                /// `accept4` calls by this process, `EAGAIN` included: `accept_calls /
                /// connections` is the herd cost.
                accept_calls: worker;
                /// Requests of this process that took longer than the slow threshold.
                slow_requests: worker;
                /// Duration of the last finished request, µs.
                last_duration_micros: worker;
                /// CPU time used by the process (user + system), µs, as last sampled.
                cpu_micros: worker;
                /// Resident memory of the process, bytes, as last sampled.
                rss_bytes: worker;
                /// When `cpu_micros` and `rss_bytes` were sampled (`CLOCK_MONOTONIC` µs).
                usage_sampled_micros: worker;
            }
            after {
                /// Connections accepted by every process in this slot. (The slot's counts are
                /// never reset: the server's totals are their sums, so they only grow whatever
                /// workers come and go while a reader adds them up.)
                connections_slot: slot;
                /// `accept4` calls of every process in this slot.
                accept_calls_slot: slot;
                /// Slow requests of every process in this slot.
                slow_requests_slot: slot;
                /// When the oldest request still running began (`CLOCK_MONOTONIC` µs); 0: none
                /// running. Unlike the request record (the latest request), this is what the
                /// stuck-worker watchdog needs when a worker runs several requests at once.
                oldest_in_flight_micros: worker;
                /// Connections this worker holds between requests, not yet in its handler:
                /// still sending their request (head, or a body the handler will want whole),
                /// or idle on keep-alive.
                parked: worker;
                /// Connections this slot's workers put in the listener's hand-off queue (with a
                /// complete request, or, when the worker leaves, whatever they had sent).
                handed_off_slot: slot;
                /// Connections this slot's workers took from the hand-off queue.
                adopted_slot: slot;
                /// Parked connections this slot's workers closed because their request did not
                /// arrive in time (header or body timeout, or too slow a body).
                parked_timeouts_slot: slot;
                /// Parked connections this slot's workers closed for lack of room.
                parked_evictions_slot: slot;
            }
        }
    };
}

/// `reset_on_claim!(kind, field)`: stores 0 in a field of kind `worker`, leaves the others.
macro_rules! reset_on_claim {
    (worker, $field:expr) => {
        $field.store(0, std::sync::atomic::Ordering::Relaxed)
    };
    (slot, $field:expr) => {};
    (claim, $field:expr) => {};
}

pub(crate) use {reset_on_claim, slot_fields};
