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

/// Serves HTTP/1.1 on `stream` until the client or hyper closes it. On a stop request the
/// request in hand is finished (a fresh connection still gets its first request answered,
/// bounded by the header timeout) and keep-alive ends.
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
    if stopping {
        connection.as_mut().graceful_shutdown();
    }
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            () = stop.requested(), if !stopping => {
                stopping = true;
                worker.enter_stopping(WorkerState::Graceful);
                connection.as_mut().graceful_shutdown();
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
