//! Serving one connection in a worker: TLS handshake, protocol choice (HTTP/1.1, or HTTP/2 by
//! ALPN or prior knowledge), hyper, and the end of the connection (close handlers, errors) —
//! or, for a classic worker, letting go of it once it idles between keep-alive requests, so
//! that it waits parked instead of holding the worker.

use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prefork_scoreboard::WorkerState;

use crate::connection_scope::ConnectionScope;
use crate::handler::CloseConnection;
use crate::handler::ConnectionInfo;
use crate::io::{FlushSignal, ObservedIo};
use crate::parked::{MAX_PARKED_BYTES, ParkKind, ParkedConnection};
use crate::preface::sniff_h2_preface;
use crate::service::{ClosedByHandler, serve_request};
use crate::shared::WorkerShared;
use crate::stop::StopWatch;
use crate::tls;
use crate::transport::{Io, Peer, PlainStream};

/// A keep-alive connection idle this long leaves the worker and waits parked: a client that
/// sends its requests back to back keeps its worker (no cost per request), one that pauses
/// frees it for others.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(100);

/// The full life of one connection in this worker, from its first request's bytes
/// (`received`, already read while it was parked). Returns the connection if it was let go
/// idle, to be parked.
pub(crate) async fn serve_connection(
    conn: Incoming,
    worker: &Rc<WorkerShared>,
    stop: &StopWatch<'_>,
    may_park: bool,
) -> Option<ParkedConnection> {
    let Incoming { fd, peer, received, id, accepted_here } = conn;
    // A request already received means the socket was just read empty. A classic worker
    // (`may_park`) waits for a keep-alive client's next request in recv itself.
    let stream = PlainStream::new(fd, !received.is_empty(), may_park);
    let socket = stream.shared();
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
                return None;
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
        sniff_h2_preface(&mut io, received, config.keepalive_timeout).await
    } else {
        (alpn_h2, received)
    };
    if h2 {
        socket.never_wait_in_recv();
    }
    let may_park = may_park && !h2 && !info.ssl;
    let flush = (!h2).then(|| Rc::new(FlushSignal::default()));
    let letting_go = Rc::new(Cell::new(false));
    let scope = Rc::new(ConnectionScope::new(
        Rc::clone(worker),
        info,
        flush.clone(),
        may_park.then(|| Rc::clone(&letting_go)),
        // HTTP/2 reads all along: its socket is never told a request runs.
        (!h2).then_some(socket),
    ));
    let mut io = ObservedIo::new(io, prefix, Rc::clone(worker), flush, Rc::clone(&letting_go));
    if may_park {
        io = io.gated(Rc::clone(&scope));
    }
    let io = TokioIo::new(io);
    let result = if h2 {
        serve_h2(io, &scope, stop).await
    } else {
        match serve_h1(io, &scope, stop).await {
            H1End::Done(result) => result,
            H1End::Idle { io, buffered } => {
                worker.set_state(WorkerState::Closing);
                return park(io, buffered, peer, scope.info.id, scope.idle_since_micros());
            }
        }
    };
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
    if accepted_here && scope.only_probed() {
        worker.connection_only_probed();
    }
    // SETCLOSEHANDLER callbacks, whoever closed the connection.
    let handlers = std::mem::take(&mut *scope.close_handlers.borrow_mut());
    for (_, handler) in handlers {
        if std::panic::catch_unwind(AssertUnwindSafe(handler)).is_err() {
            tracing::error!("a close handler panicked");
        }
    }
    None
}

type Conn = TokioIo<ObservedIo<Io>>;

/// A connection for a worker to serve.
pub(crate) struct Incoming {
    pub fd: OwnedFd,
    pub peer: Peer,
    /// What it has sent already (a parked connection's request).
    pub received: Bytes,
    pub id: u64,
    /// This worker accepted it (and counted it towards its connection limit), rather than
    /// taking it from a sibling or back from parking.
    pub accepted_here: bool,
}

/// How an HTTP/1.1 connection's service ended.
enum H1End {
    /// Closed (by either side, or for an error).
    Done(hyper::Result<()>),
    /// Let go idle, its socket open, with whatever the client already sent of its next
    /// request: to be parked.
    Idle { io: Io, buffered: BytesMut },
}

/// An idle connection hyper let go, as a parked keep-alive connection (`None`: it could not
/// be, and is closed).
fn park(io: Io, buffered: BytesMut, peer: Peer, id: u64, idle_since: u64) -> Option<ParkedConnection> {
    let Io::Plain(stream) = io else {
        unreachable!("TLS connections are never parked");
    };
    if buffered.len() > MAX_PARKED_BYTES {
        tracing::debug!(bytes = buffered.len(), "an idle connection held too many unread bytes to park; closed");
        return None;
    }
    match stream.into_fd() {
        Ok(fd) => {
            let mut parked = ParkedConnection::new(fd, peer, ParkKind::KeepAlive, Vec::from(buffered), idle_since);
            parked.id = Some(id);
            Some(parked)
        }
        Err(error) => {
            tracing::debug!(%error, "could not take an idle connection back from the runtime; closed");
            None
        }
    }
}

/// HTTP/1.1. On a stop request the request in hand is finished, answered with `Connection:
/// close` (see `WorkerShared::dispatch`; a fresh connection gets its first request answered).
/// A connection that cannot move to a sibling (below) is drained while the pool goes on (this
/// worker reloads, retires or recycles): its next request is answered with `Connection: close`,
/// or it closes at the keep-alive timeout. Closing it while idle would race with a request the
/// client may be sending at that moment, and fail it. Only when the whole server stops is it
/// closed as soon as it is idle, so that the stop does not wait for the keep-alive timeout
/// (there, like any server closing an idle keep-alive connection, it may race with a request
/// in flight; the parked connections of a stopping server are closed the same way).
///
/// If it parks (a classic worker, cleartext), a connection idle for [`PARK_AFTER`] — or
/// idle when the worker is going (told to stop, or at a recycling limit's margin), at once
/// or right after the response in hand — is let go instead, its socket kept open, to wait
/// parked and then move to a sibling: hyper is asked to end the connection (it only does so
/// between requests, once everything written is flushed), its shutdown is skipped, and its
/// buffer comes back with the socket. So recycling and reloads never make a keep-alive
/// client reconnect; only a stop of the whole server closes its connections.
async fn serve_h1(io: Conn, scope: &Rc<ConnectionScope>, stop: &StopWatch<'_>) -> H1End {
    let worker = &scope.worker;
    let config = &worker.config;
    let may_park = scope.parks() && config.keepalive;
    let service_scope = Rc::clone(scope);
    let service = service_fn(move |request| {
        service_scope.request_arrived();
        serve_request(request, Rc::clone(&service_scope))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // A connection that parks never waits for a head here: its first request came whole,
        // and between requests it is let go within PARK_AFTER, with whatever part of the next
        // head arrived, to wait parked under the same timeout. No timer per connection then.
        .header_read_timeout((!may_park).then_some(config.keepalive_timeout))
        .keep_alive(config.keepalive)
        .max_headers(config.max_headers)
        .max_header_size(config.max_header_size);
    let mut connection = builder.serve_connection(io, service);
    let mut stopping = worker.is_stopping();
    // Armed when the first response is done (a connection closed after one request never
    // needs it; creating a timer costs the runtime a wake-up write).
    let mut park_check: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut letting_go = scope.letting_go();
    let mut shut_down = false;
    loop {
        tokio::select! {
            // The connection first: a connection that ends with its response needs nothing else.
            biased;
            result = &mut connection => {
                if letting_go && result.is_ok() {
                    let parts = connection.into_parts();
                    let (io, unread) = parts.io.into_inner().into_parts();
                    let mut buffered = BytesMut::from(&parts.read_buf[..]);
                    buffered.extend_from_slice(&unread);
                    return H1End::Idle { io, buffered };
                }
                return H1End::Done(result);
            }
            // Show `G` at once (responses learn of the stop in `dispatch`); an idle connection
            // that can wait parked goes there now, to be passed to a sibling.
            () = stop.requested(), if !stopping => {
                stopping = true;
                worker.enter_stopping(WorkerState::Graceful);
                if may_park && !letting_go && scope.can_park() {
                    letting_go = true;
                } else if worker.slot.server_stopping() && !(shut_down || may_park && scope.may_hand_over()) {
                    // The whole server stops, and it can never move: it closes now if idle,
                    // after the response in hand otherwise, not at the keep-alive timeout.
                    // (One that can move leaves once its response is done; while the pool
                    // goes on, one that cannot is drained, see above.)
                    shut_down = true;
                    std::pin::Pin::new(&mut connection).graceful_shutdown();
                }
            }
            // A response is done. If the worker is going (stop, or a recycling limit's margin)
            // the connection leaves now, for a sibling; otherwise it leaves once idle for
            // PARK_AFTER. (Not gated on the worker's state: a precondition is read once per
            // `select!`, which may run across many requests.)
            () = scope.went_idle.notified(), if may_park && !letting_go && !shut_down => {
                letting_go = scope.letting_go();
                if !letting_go && worker.slot.server_stopping() && !scope.busy() && !scope.can_park() {
                    // The whole server stops, and it cannot move (it became so during the
                    // response in hand): closed now, idle.
                    shut_down = true;
                    std::pin::Pin::new(&mut connection).graceful_shutdown();
                } else if park_check.is_none() {
                    park_check = Some(Box::pin(tokio::time::sleep(PARK_AFTER)));
                }
            }
            () = async { park_check.as_mut().expect("checked").await }, if may_park && !letting_go && !shut_down && park_check.is_some() => {
                let idle = scope.idle_for();
                let wait = if scope.busy() {
                    PARK_AFTER
                } else if scope.can_park() {
                    PARK_AFTER.saturating_sub(idle)
                } else if worker.slot.server_stopping() {
                    // It cannot move and the whole server stops: closed now.
                    Duration::ZERO
                } else {
                    // It cannot move (a close handler, a closing response): hyper's header
                    // timeout is off, so its idle limit is kept here.
                    config.keepalive_timeout.saturating_sub(idle)
                };
                if wait.is_zero() && scope.can_park() {
                    letting_go = true;
                } else if wait.is_zero() {
                    return H1End::Done(Ok(()));
                } else if let Some(check) = park_check.as_mut() {
                    check.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
        }
        if letting_go && !shut_down {
            shut_down = true;
            scope.let_go();
            std::pin::Pin::new(&mut connection).graceful_shutdown();
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
        // At a recycling limit's margin: GOAWAY now, so that the client opens no more streams
        // here (those already open are served).
        if !closing && worker.must_leave() {
            closing = true;
            connection.as_mut().graceful_shutdown();
        }
        tokio::select! {
            result = connection.as_mut() => return result,
            () = worker.recycling.leaving_notice.notified(), if !closing => {}
            () = stop.requested(), if !closing => {
                closing = true;
                worker.enter_stopping(WorkerState::Graceful);
                connection.as_mut().graceful_shutdown();
            }
            // Idle for the keep-alive timeout: GOAWAY. Once GOAWAY is sent, a connection still
            // open a keep-alive timeout later with no stream running is dropped: a client that
            // never answers the GOAWAY's PING would otherwise hold the worker for good.
            _ = idle_check.tick() => {
                if !closing && (scope.idle_for() >= timeout || worker.must_leave()) {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                } else if closing && scope.idle_for() >= timeout * 2 {
                    tracing::debug!("HTTP/2 connection still open long after its GOAWAY; closed");
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(not(feature = "http2"))]
async fn serve_h2(io: Conn, scope: &Rc<ConnectionScope>, stop: &StopWatch<'_>) -> hyper::Result<()> {
    // Without HTTP/2 built in, no connection is ever taken for one; serve it as HTTP/1.1.
    match serve_h1(io, scope, stop).await {
        H1End::Done(result) => result,
        H1End::Idle { .. } => Ok(()),
    }
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
