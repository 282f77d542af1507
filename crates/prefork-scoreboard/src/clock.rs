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
    fn the_coarse_clock_is_the_same_clock_less_than_two_ticks_behind() {
        // The coarse clock's resolution is the kernel's tick (1 to 10 ms): it moves by whole
        // ticks, from the timer interrupt, so it lags by up to a tick plus the phase of the
        // kernel's accounting (less than another).
        let tick = nix::time::clock_getres(ClockId::CLOCK_MONOTONIC_COARSE).unwrap();
        let tick = tick.tv_sec() as u64 * 1_000_000 + tick.tv_nsec() as u64 / 1_000;
        assert!(tick > 0 && tick <= 10_000, "tick of {tick} µs");
        // Watched over a few of its moves, each read between two precise readings: never
        // ahead of the second, and just after a move less than two ticks behind the first. A
        // reader descheduled between the readings only moves them all forward, and a late
        // timer interrupt (a busy machine, a virtual CPU its host let wait) is one of several.
        let give_up = monotonic_micros() + 10_000_000;
        let (mut moves, mut last, mut least_lag) = (0, coarse_monotonic_micros(), u64::MAX);
        while moves < 5 {
            let before = monotonic_micros();
            let coarse = coarse_monotonic_micros();
            let after = monotonic_micros();
            assert!(coarse <= after, "the coarse clock ({coarse}) is ahead of the clock ({after})");
            if coarse != last {
                (moves, last) = (moves + 1, coarse);
                least_lag = least_lag.min(before.saturating_sub(coarse));
            }
            assert!(after < give_up, "the coarse clock moved {moves} times in 10 s");
        }
        assert!(least_lag < 2 * tick, "the coarse clock lags by {least_lag} µs, with a tick of {tick} µs");
    }
}
