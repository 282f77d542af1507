//! The built-in probes for load balancers and orchestrators, answered by any free worker from
//! the scoreboard (the supervisor is never asked): liveness (`/healthz`) and readiness
//! (`/readyz`).
//!
//! They are exact paths, checked before the routes (as the status page is), open to every
//! client (they tell nothing but a word), small, never cached, and left out of the access
//! counts: a balancer checking every 200 ms must not recycle workers nor swell the totals.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

use crate::handler::Response;
use crate::shared::WorkerShared;

/// Which probe a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Alive, and able to fork.
    Health,
    /// Ready to take traffic.
    Ready,
}

/// The probe `path` asks for, if any.
pub(crate) fn probe_for(path: &str, worker: &WorkerShared) -> Option<Probe> {
    if worker.config.health_path.as_deref() == Some(path) {
        Some(Probe::Health)
    } else if worker.config.ready_path.as_deref() == Some(path) {
        Some(Probe::Ready)
    } else {
        None
    }
}

/// The probe's answer, from the scoreboard.
pub(crate) fn respond(probe: Probe, worker: &WorkerShared) -> Response {
    let board = worker.board;
    let (status, word): (StatusCode, &'static str) = match probe {
        Probe::Health if board.spawning_halted() => (StatusCode::SERVICE_UNAVAILABLE, "spawning halted\n"),
        // Workers die with their parent (PR_SET_PDEATHSIG), but the answer must not race it.
        Probe::Health if nix::unistd::getppid().as_raw() as u32 != board.parent_pid() => {
            (StatusCode::SERVICE_UNAVAILABLE, "supervisor gone\n")
        }
        Probe::Health => (StatusCode::OK, "ok\n"),
        Probe::Ready if board.is_draining() => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        Probe::Ready if board.is_paused() => (StatusCode::SERVICE_UNAVAILABLE, "paused\n"),
        Probe::Ready if !board.is_ready() => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        Probe::Ready => (StatusCode::OK, "ready\n"),
    };
    let mut response = Response::new(Bytes::from_static(word.as_bytes()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
