//! The two clocks the scoreboard stores: monotonic (durations, comparable across processes) and wall.

use nix::time::{ClockId, clock_gettime};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds on `CLOCK_MONOTONIC`.
///
/// The clock is system-wide, so values written by one worker compare with values read by the
/// parent or a status tool; `std::time::Instant` exposes no raw value to store in shared memory.
pub fn monotonic_micros() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; 0 is a harmless fallback for a reader.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|ts| ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

/// Microseconds on `CLOCK_MONOTONIC_COARSE`: the same clock, read from the kernel's last
/// tick (a few ms old at most) at a fraction of the cost. For state-change times, which are
/// written on every transition and only ever shown in seconds.
pub fn coarse_monotonic_micros() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
        .map(|ts| ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch, for display.
pub fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_does_not_go_back() {
        let a = monotonic_micros();
        let b = monotonic_micros();
        assert!(a > 0 && b >= a);
    }

    #[test]
    fn the_coarse_clock_is_the_same_clock_a_tick_behind_at_most() {
        let coarse = coarse_monotonic_micros();
        let precise = monotonic_micros();
        // Linux ticks at 100 to 1000 Hz: the coarse value lags by at most 10 ms.
        assert!(coarse <= precise && precise - coarse < 10_000, "{coarse} vs {precise}");
    }
}
