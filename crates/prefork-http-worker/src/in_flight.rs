//! One request's passage through the worker: counted when it begins and finished exactly once,
//! however it ends (response sent, client gone, HTTP/2 stream reset, handler chose to close).

use std::rc::Rc;

use crate::service::ConnectionScope;

/// A request between service entry and the end of its response. Dropping it unfinished (its
/// future was cancelled, or no body was ever sent) finishes it with no bytes sent, so the
/// worker's in-flight count, its slot's state and the watchdog's view never keep a request
/// that no longer exists.
pub(crate) struct InFlight {
    scope: Rc<ConnectionScope>,
    started_micros: u64,
    finished: bool,
}

impl InFlight {
    /// The request that began at `started_micros` (as the scoreboard's `begin_request`
    /// returned it) is now running.
    pub(crate) fn begin(scope: Rc<ConnectionScope>, started_micros: u64) -> InFlight {
        scope.worker.request_started(started_micros);
        scope.request_started();
        InFlight { scope, started_micros, finished: false }
    }

    /// Ends the request, `body_bytes` sent; returns its duration in µs (0 if already ended).
    pub(crate) fn finish(&mut self, body_bytes: u64) -> u64 {
        if std::mem::replace(&mut self.finished, true) {
            return 0;
        }
        let worker = &self.scope.worker;
        let duration = worker.slot.finish_request_begun_at(self.started_micros, body_bytes);
        self.scope.request_finished();
        worker.request_finished(self.started_micros);
        duration
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.finish(0);
    }
}
