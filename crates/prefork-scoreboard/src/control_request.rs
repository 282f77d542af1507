//! What a worker asks of its supervisor through the scoreboard rather than by a signal: a
//! worker that dropped its privileges (`--user`) may not signal a supervisor that runs as
//! root, and the scoreboard is shared with every worker whatever its user.
//!
//! A worker sets its request's bit in the header and rings the doorbell; the parent takes and
//! clears every bit at its next round and acts as on the matching signal. Requests of one kind
//! made before the parent looks count once, as signals of one kind do.

use std::sync::atomic::Ordering::{AcqRel, Acquire};

use crate::Board;

/// A request from a worker to the supervisor, each one what a signal to the supervisor does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlRequest {
    /// As SIGTERM: a graceful stop (after the drain delay, if one is set).
    GracefulStop,
    /// As SIGQUIT: an immediate stop.
    ImmediateStop,
    /// As the pause signal: no worker takes a new connection.
    Pause,
    /// As the resume signal.
    Resume,
}

impl ControlRequest {
    /// Every request, in the order the parent carries them out when several are pending: an
    /// immediate stop before a graceful one (which it overrides).
    pub const ALL: [ControlRequest; 4] =
        [ControlRequest::ImmediateStop, ControlRequest::GracefulStop, ControlRequest::Pause, ControlRequest::Resume];

    fn bit(self) -> u64 {
        1 << self as u32
    }
}

impl Board {
    /// Any process on the board: asks the supervisor for `request` (ring the doorbell after,
    /// so that it looks at once).
    pub fn request_control(&self, request: ControlRequest) {
        // Pause and resume undo each other: the later one wins, as with signals in order.
        let undone = match request {
            ControlRequest::Pause => ControlRequest::Resume.bit(),
            ControlRequest::Resume => ControlRequest::Pause.bit(),
            _ => 0,
        };
        let _ =
            self.header().control_requests.fetch_update(AcqRel, Acquire, |bits| Some(bits & !undone | request.bit()));
    }

    /// Parent only: the requests made since the last call, in [`ControlRequest::ALL`]'s order.
    pub fn take_control_requests(&self) -> Vec<ControlRequest> {
        let bits = self.header().control_requests.swap(0, AcqRel);
        ControlRequest::ALL.into_iter().filter(|request| bits & request.bit() != 0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scoreboard;

    #[test]
    fn requests_are_taken_once_in_order_and_repeats_count_once() {
        let scoreboard =
            Scoreboard::create(&format!("prefork-scoreboard-test-control-{}", std::process::id()), 2).unwrap();
        let board = scoreboard.board();
        assert!(board.take_control_requests().is_empty());
        board.request_control(ControlRequest::GracefulStop);
        board.request_control(ControlRequest::Pause);
        board.request_control(ControlRequest::Pause);
        assert_eq!(board.take_control_requests(), [ControlRequest::GracefulStop, ControlRequest::Pause]);
        assert!(board.take_control_requests().is_empty());
        board.request_control(ControlRequest::Resume);
        board.request_control(ControlRequest::Pause);
        board.request_control(ControlRequest::GracefulStop);
        board.request_control(ControlRequest::ImmediateStop);
        assert_eq!(
            board.take_control_requests(),
            [ControlRequest::ImmediateStop, ControlRequest::GracefulStop, ControlRequest::Pause],
            "the later of pause and resume wins; an immediate stop comes first"
        );
    }
}
