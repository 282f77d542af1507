//! Serving one accepted connection with hyper, until it closes or the worker is told to stop.

use std::rc::Rc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prefork_scoreboard::WorkerState;

use crate::handler::ConnectionInfo;
use crate::io::ObservedIo;
use crate::service::{ConnectionScope, serve_request};
use crate::shared::WorkerShared;
use crate::stop::StopWatch;

/// Serves HTTP/1.1 on `stream` until the client or hyper closes it.
///
/// On a stop request the connection is drained, not cut: the request in hand is finished, and
/// so is the next one if the client is between requests (a fresh connection gets its first
/// one), each answered with `Connection: close`. Closing an idle keep-alive connection instead
/// would race with a request the client may be sending at that moment, and fail it. An idle
/// client that sends nothing is closed at the keep-alive timeout, as always.
pub(crate) async fn serve(
    stream: tokio::net::TcpStream,
    info: ConnectionInfo,
    worker: &Rc<WorkerShared>,
    stop: &StopWatch<'_>,
) {
    let scope = Rc::new(ConnectionScope::new(Rc::clone(worker), info));
    let service = service_fn(move |request| serve_request(request, Rc::clone(&scope)));
    let config = &worker.config;
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(config.keepalive_timeout).keep_alive(config.keepalive);
    let connection = builder.serve_connection(TokioIo::new(ObservedIo::new(stream, Rc::clone(worker))), service);
    tokio::pin!(connection);
    let mut stopping = worker.is_stopping();
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            // Only to show `G` at once: responses learn of the stop in `dispatch`.
            () = stop.requested(), if !stopping => {
                stopping = true;
                worker.enter_stopping(WorkerState::Graceful);
            }
        }
    };
    worker.set_state(WorkerState::Closing);
    if let Err(error) = result {
        // Timeouts, resets, malformed requests (hyper answers those with 400 itself), or a
        // handler's CLOSE: all end this connection only.
        tracing::debug!(%error, "connection ended with an error");
    }
}
