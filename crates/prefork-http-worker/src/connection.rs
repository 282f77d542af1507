//! Serving one accepted connection: TLS handshake, protocol choice (HTTP/1.1, or HTTP/2 by
//! ALPN or prior knowledge), hyper, and the end of the connection (close handlers, errors).

use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prefork_scoreboard::WorkerState;

use crate::handler::CloseConnection;
use crate::handler::ConnectionInfo;
use crate::io::{FlushSignal, ObservedIo};
use crate::preface::sniff_h2_preface;
use crate::service::{ClosedByHandler, ConnectionScope, serve_request};
use crate::shared::WorkerShared;
use crate::stop::StopWatch;
use crate::tls;
use crate::transport::{Io, Peer, PlainStream};

/// The full life of one accepted connection.
pub(crate) async fn serve_accepted(
    stream: PlainStream,
    peer: Peer,
    id: u64,
    worker: &Rc<WorkerShared>,
    stop: &StopWatch<'_>,
) {
    let mut info = match peer {
        Peer::Tcp { remote, local } => ConnectionInfo::tcp(remote, local, id),
        Peer::Unix => ConnectionInfo::unix(id),
    };
    let config = &worker.config;
    let mut io = match &config.tls {
        Some(settings) => match settings.accept(stream, config.keepalive_timeout).await {
            Ok(io) => io,
            Err(error) => {
                // A bad or abandoned handshake costs this connection only.
                report_error(worker, &info, &format!("TLS handshake failed: {error}"));
                return;
            }
        },
        None => Io::Plain(stream),
    };
    let mut alpn_h2 = false;
    if let Some((cipher, h2)) = tls::negotiated(&io) {
        info.ssl = true;
        info.ssl_cipher = Some(cipher);
        alpn_h2 = h2;
    }
    let (h2, prefix) = if config.http2_cleartext && !info.ssl {
        sniff_h2_preface(&mut io, config.keepalive_timeout).await
    } else {
        (alpn_h2, Bytes::new())
    };
    let flush = (!h2).then(|| Rc::new(FlushSignal::default()));
    let scope = Rc::new(ConnectionScope::new(Rc::clone(worker), info, flush.clone()));
    let io = TokioIo::new(ObservedIo::new(io, prefix, Rc::clone(worker), flush));
    let result = if h2 { serve_h2(io, &scope, stop).await } else { serve_h1(io, &scope, stop).await };
    worker.set_state(WorkerState::Closing);
    match result {
        // The handler asked for the close (CLOSE, or a stream ending in CLOSE): not an error,
        // as SimpleHTTP posts no ERRORHANDLER for it.
        Err(error) if closed_by_handler(&error) => tracing::debug!("the handler closed the connection"),
        // Timeouts, resets, malformed requests (hyper answers those with 400, 414 or 431
        // itself): each ends this connection only.
        Err(error) => report_error(worker, &scope.info, &error.to_string()),
        Ok(()) => {}
    }
    // SETCLOSEHANDLER callbacks, whoever closed the connection.
    let handlers = std::mem::take(&mut *scope.close_handlers.borrow_mut());
    for handler in handlers {
        if std::panic::catch_unwind(AssertUnwindSafe(handler)).is_err() {
            tracing::error!("a close handler panicked");
        }
    }
}

type Conn = TokioIo<ObservedIo<Io>>;

/// HTTP/1.1. On a stop request the connection is drained, not cut: the request in hand is
/// finished, and so is the next one if the client is between requests (a fresh connection gets
/// its first one), each answered with `Connection: close` (see `WorkerShared::dispatch`).
/// Closing an idle keep-alive connection instead would race with a request the client may be
/// sending at that moment, and fail it. An idle client that sends nothing is closed at the
/// keep-alive timeout, as always.
async fn serve_h1(io: Conn, scope: &Rc<ConnectionScope>, stop: &StopWatch<'_>) -> hyper::Result<()> {
    let worker = &scope.worker;
    let config = &worker.config;
    let service_scope = Rc::clone(scope);
    let service = service_fn(move |request| serve_request(request, Rc::clone(&service_scope)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.keepalive_timeout)
        .keep_alive(config.keepalive)
        .max_headers(config.max_headers)
        .max_header_size(config.max_header_size);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = worker.is_stopping();
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            // Only to show `G` at once: responses learn of the stop in `dispatch`.
            () = stop.requested(), if !stopping => {
                stopping = true;
                worker.enter_stopping(WorkerState::Graceful);
            }
        }
    }
}

/// HTTP/2: streams run concurrently on this worker's thread. A stop sends GOAWAY (streams in
/// progress finish, the client opens new ones elsewhere); so does a worker draining towards
/// its replacement (`Connection: close` means nothing in HTTP/2), and a connection with no
/// stream for the keep-alive timeout is closed the same way.
#[cfg(feature = "http2")]
async fn serve_h2(io: Conn, scope: &Rc<ConnectionScope>, stop: &StopWatch<'_>) -> hyper::Result<()> {
    let worker = &scope.worker;
    let timeout = worker.config.keepalive_timeout;
    let service_scope = Rc::clone(scope);
    let service = service_fn(move |request| serve_request(request, Rc::clone(&service_scope)));
    let mut builder = hyper::server::conn::http2::Builder::new(LocalExec);
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .max_header_list_size(worker.config.max_header_size as u32);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    // At least 10 ms: a zero period would panic, and a tiny one would spin.
    let period = (timeout / 2).max(std::time::Duration::from_millis(10));
    let mut idle_check = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            () = stop.requested(), if !closing => {
                closing = true;
                worker.enter_stopping(WorkerState::Graceful);
                connection.as_mut().graceful_shutdown();
            }
            _ = idle_check.tick(), if !closing => {
                if scope.idle_for() >= timeout || worker.is_draining() {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

#[cfg(not(feature = "http2"))]
async fn serve_h2(io: Conn, scope: &Rc<ConnectionScope>, stop: &StopWatch<'_>) -> hyper::Result<()> {
    serve_h1(io, scope, stop).await
}

/// Runs HTTP/2 stream tasks on the worker's thread (`LocalSet`): handlers need not be `Send`.
#[cfg(feature = "http2")]
#[derive(Clone, Copy, Debug)]
struct LocalExec;

#[cfg(feature = "http2")]
impl<F: std::future::Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

/// Whether hyper's error is a handler's own request to close the connection.
fn closed_by_handler(error: &hyper::Error) -> bool {
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        if e.is::<ClosedByHandler>() || e.is::<CloseConnection>() {
            return true;
        }
        cause = e.source();
    }
    false
}

fn report_error(worker: &WorkerShared, info: &ConnectionInfo, error: &str) {
    tracing::debug!(%error, client = %info.remote_ip, "connection ended with an error");
    if let Some(hook) = &worker.config.hooks.error {
        crate::hooks::call_hook("ERRORHANDLER", || hook(info, error));
    }
}
