//! Worker states and their Apache mod_status letters.

/// What a worker is doing, as shown in the scoreboard string.
///
/// The letters are Apache's (`include/scoreboard.h`, `mod_status.c`), so operators read our
/// scoreboard the way they read Apache's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "report", derive(serde::Serialize), serde(into = "char"))]
#[repr(u8)]
pub enum WorkerState {
    /// `.`: open slot with no current process.
    Dead = 0,
    /// `S`: forked, running its fork handlers; not accepting yet.
    Starting = 1,
    /// `_`: waiting for a connection.
    Idle = 2,
    /// `R`: reading a request.
    Reading = 3,
    /// `W`: running the handler and writing the reply.
    Writing = 4,
    /// `K`: keep-alive, waiting for the next request on an open connection.
    KeepAlive = 5,
    /// `C`: closing the connection.
    Closing = 6,
    /// `G`: told to stop; finishing the request in hand.
    Graceful = 7,
    /// `I`: told to stop while idle; exiting without taking work.
    IdleKill = 8,
}

impl WorkerState {
    /// Every state, in discriminant order.
    pub const ALL: [WorkerState; 9] = [
        WorkerState::Dead,
        WorkerState::Starting,
        WorkerState::Idle,
        WorkerState::Reading,
        WorkerState::Writing,
        WorkerState::KeepAlive,
        WorkerState::Closing,
        WorkerState::Graceful,
        WorkerState::IdleKill,
    ];

    /// The mod_status letter.
    pub const fn letter(self) -> char {
        match self {
            WorkerState::Dead => '.',
            WorkerState::Starting => 'S',
            WorkerState::Idle => '_',
            WorkerState::Reading => 'R',
            WorkerState::Writing => 'W',
            WorkerState::KeepAlive => 'K',
            WorkerState::Closing => 'C',
            WorkerState::Graceful => 'G',
            WorkerState::IdleKill => 'I',
        }
    }

    /// A lower-case name, for metric labels and CSS classes.
    pub const fn name(self) -> &'static str {
        match self {
            WorkerState::Dead => "dead",
            WorkerState::Starting => "starting",
            WorkerState::Idle => "idle",
            WorkerState::Reading => "reading",
            WorkerState::Writing => "writing",
            WorkerState::KeepAlive => "keepalive",
            WorkerState::Closing => "closing",
            WorkerState::Graceful => "graceful",
            WorkerState::IdleKill => "idle_kill",
        }
    }

    /// A short human description, for legends.
    pub const fn describe(self) -> &'static str {
        match self {
            WorkerState::Dead => "open slot with no current process",
            WorkerState::Starting => "starting up",
            WorkerState::Idle => "waiting for connection",
            WorkerState::Reading => "reading request",
            WorkerState::Writing => "sending reply",
            WorkerState::KeepAlive => "keepalive (read)",
            WorkerState::Closing => "closing connection",
            WorkerState::Graceful => "gracefully finishing",
            WorkerState::IdleKill => "idle cleanup of worker",
        }
    }

    /// Decodes a stored byte. Unknown values (a newer layout, or garbage) read as `Dead` so
    /// that a reader never panics on shared memory it does not control.
    pub const fn from_u8(value: u8) -> WorkerState {
        match value {
            1 => WorkerState::Starting,
            2 => WorkerState::Idle,
            3 => WorkerState::Reading,
            4 => WorkerState::Writing,
            5 => WorkerState::KeepAlive,
            6 => WorkerState::Closing,
            7 => WorkerState::Graceful,
            8 => WorkerState::IdleKill,
            _ => WorkerState::Dead,
        }
    }

    /// Waiting for a connection: the capacity the spare policy counts.
    pub const fn is_idle(self) -> bool {
        matches!(self, WorkerState::Idle)
    }

    /// Holding a connection: reading, writing, keep-alive or closing.
    pub const fn is_busy(self) -> bool {
        matches!(self, WorkerState::Reading | WorkerState::Writing | WorkerState::KeepAlive | WorkerState::Closing)
    }

    /// Told to stop and finishing (`G`) or leaving (`I`).
    pub const fn is_stopping(self) -> bool {
        matches!(self, WorkerState::Graceful | WorkerState::IdleKill)
    }
}

impl From<WorkerState> for char {
    fn from(state: WorkerState) -> char {
        state.letter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_byte() {
        for state in WorkerState::ALL {
            assert_eq!(WorkerState::from_u8(state as u8), state);
        }
    }

    #[test]
    fn letters_are_apaches_and_distinct() {
        let letters: String = WorkerState::ALL.iter().map(|s| s.letter()).collect();
        assert_eq!(letters, ".S_RWKCGI");
    }

    #[test]
    fn garbage_reads_as_dead() {
        assert_eq!(WorkerState::from_u8(200), WorkerState::Dead);
    }

    #[test]
    fn idle_and_busy_do_not_overlap() {
        for state in WorkerState::ALL {
            let classes = [state.is_idle(), state.is_busy(), state.is_stopping()];
            assert!(classes.iter().filter(|c| **c).count() <= 1, "{state:?}");
        }
        assert!(!WorkerState::Starting.is_idle() && !WorkerState::Starting.is_busy());
    }
}
