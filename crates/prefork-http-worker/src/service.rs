//! One request: status page or route lookup, limits, body collection, the handler and its
//! reply, SimpleHTTP's response defaults.

use std::cell::Cell;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use prefork_scoreboard::RequestStart;
use prefork_scoreboard::clock::monotonic_micros;

use crate::body::{ResponseBody, Written};
use crate::handler::{
    CloseHandlers, ConnectionInfo, HandlerKind, Reply, Request, RequestContext, Response, StreamingResponse,
};
use crate::hooks::call_hook;
use crate::in_flight::InFlight;
use crate::io::FlushSignal;
use crate::lazy_io::LazyShared;
use crate::request_body::{BodyVerdict, RequestBody};
use crate::shared::WorkerShared;
use crate::{probe, status};

/// Returned to hyper when a handler chose to close the connection without a response:
/// hyper then drops the connection without writing anything.
#[derive(Debug, thiserror::Error)]
#[error("handler closed the connection without a response")]
pub(crate) struct ClosedByHandler;

/// Per-connection context of the service.
pub(crate) struct ConnectionScope {
    pub worker: Rc<WorkerShared>,
    pub info: Rc<ConnectionInfo>,
    /// `address:port` of the client, formatted once per connection for the scoreboard.
    pub client: String,
    /// Run when the connection closes (SETCLOSEHANDLER).
    pub close_handlers: CloseHandlers,
    /// The last close handler's token on this connection.
    pub next_close_token: Rc<Cell<u64>>,
    /// Tells a stream ending in CLOSE that its last chunks are out (HTTP/1.1 only: on HTTP/2
    /// a CLOSE resets its stream, and there is nothing to wait for).
    pub flush: Option<Rc<FlushSignal>>,
    /// Set when the connection is to leave this worker, idle, for parking (`None`: it never
    /// parks; only a classic worker's cleartext HTTP/1.1 connections do). From then on the
    /// connection reads nothing more (the next request is for whoever takes it) and its
    /// shutdown leaves the socket open (see [`crate::io::ObservedIo`]).
    letting_go: Option<Rc<Cell<bool>>>,
    /// The socket of an HTTP/1.1 connection (`None` on HTTP/2), told when a request runs so
    /// that hyper's look for a hang-up costs nothing unless the handler waits (see
    /// [`crate::lazy_io`]).
    socket: Option<Rc<LazyShared>>,
    /// Told when a request ends (on a connection that parks): the connection arms its idle
    /// check, or leaves for a sibling at once if the worker is going.
    pub went_idle: tokio::sync::Notify,
    /// A response of this connection closes it (`Connection: close` asked or answered, HTTP/1.0
    /// without keep-alive): the connection must end, not move to a sibling.
    closing: Cell<bool>,
    /// Requests of this connection now running (several on HTTP/2).
    in_flight: Cell<usize>,
    /// Requests of this connection counted (handlers, the status page), and probes answered.
    counted_requests: Cell<u64>,
    probes: Cell<u64>,
    /// When a request of this connection last began or ended, or the connection opened
    /// (`CLOCK_MONOTONIC` µs).
    last_activity_micros: Cell<u64>,
}

impl ConnectionScope {
    pub(crate) fn new(
        worker: Rc<WorkerShared>,
        info: ConnectionInfo,
        flush: Option<Rc<FlushSignal>>,
        letting_go: Option<Rc<Cell<bool>>>,
        socket: Option<Rc<LazyShared>>,
    ) -> ConnectionScope {
        let client = if info.unix_socket {
            "unix".to_owned()
        } else {
            SocketAddr::new(info.remote_ip, info.remote_port).to_string()
        };
        ConnectionScope {
            worker,
            info: Rc::new(info),
            client,
            close_handlers: CloseHandlers::default(),
            next_close_token: Rc::new(Cell::new(0)),
            flush,
            letting_go,
            socket,
            went_idle: tokio::sync::Notify::new(),
            closing: Cell::new(false),
            in_flight: Cell::new(0),
            counted_requests: Cell::new(0),
            probes: Cell::new(0),
            last_activity_micros: Cell::new(monotonic_micros()),
        }
    }

    /// A request of this connection began (see [`InFlight`], the only caller).
    /// hyper has read a request's head and calls the service: from now on its reads only
    /// look for a hang-up (see [`crate::lazy_io`]). Called before the request's future runs.
    pub(crate) fn request_arrived(&self) {
        if let Some(socket) = &self.socket {
            socket.set_mid_request(true);
        }
    }

    pub(crate) fn request_started(&self, start: RequestStart) {
        self.in_flight.set(self.in_flight.get() + 1);
        self.last_activity_micros.set(start.micros());
        self.worker.request_started(start);
    }

    /// The request begun at `start` ended after `duration_micros`.
    pub(crate) fn request_finished(&self, start: RequestStart, duration_micros: u64) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
        if let Some(socket) = self.socket.as_ref().filter(|_| self.in_flight.get() == 0) {
            socket.set_mid_request(false);
        }
        self.last_activity_micros.set(start.micros() + duration_micros);
        self.worker.request_finished(start);
        // A going worker lets the connection go as soon as it is idle, before hyper reads
        // the client's next request (that one is for the sibling that takes the connection).
        let going = self.worker.is_going() && self.can_park();
        if going {
            self.let_go();
        }
        // The connection's loop arms its idle check, lets the connection go if the worker is
        // going, and polls hyper again: hyper put off reading the next request while this one
        // ran (its look for a hang-up was answered `Pending`), and reads it now.
        if self.parks() {
            self.went_idle.notify_one();
        }
    }

    /// The request's handler did not answer at once (or streams its answer): the socket joins
    /// the reactor, so that a client hanging up meanwhile is noticed.
    pub(crate) fn arm_socket(&self) {
        if let Some(socket) = &self.socket {
            socket.arm();
        }
    }

    /// After a response's head: whether it ends the connection (the client asked, or the
    /// answer says `Connection: close`).
    fn note_closing(&self, asked: bool, answer: &HeaderMap) {
        if asked || has_token(answer, "close") {
            self.closing.set(true);
        }
    }

    /// Whether the connection parks (see `letting_go`).
    pub(crate) fn parks(&self) -> bool {
        self.letting_go.is_some()
    }

    /// Marks the connection as leaving this worker.
    pub(crate) fn let_go(&self) {
        if let Some(flag) = &self.letting_go {
            flag.set(true);
        }
    }

    /// Whether the connection is leaving this worker.
    pub(crate) fn letting_go(&self) -> bool {
        self.letting_go.as_ref().is_some_and(|flag| flag.get())
    }

    /// Whether the connection can leave this worker between requests for a sibling: it parks,
    /// no close handler is registered (SETCLOSEHANDLER code lives in this process), and the
    /// whole server is not stopping (nobody would take it).
    pub(crate) fn may_hand_over(&self) -> bool {
        self.parks() && self.close_handlers.borrow().is_empty() && !self.worker.slot.server_stopping()
    }

    /// Whether the connection, idle now, may leave this worker.
    pub(crate) fn can_park(&self) -> bool {
        self.in_flight.get() == 0 && !self.closing.get() && self.may_hand_over()
    }

    /// Whether a request is running on this connection.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.get() > 0
    }

    /// When this connection's last request ended (or it opened), `CLOCK_MONOTONIC` µs.
    pub(crate) fn idle_since_micros(&self) -> u64 {
        self.last_activity_micros.get()
    }

    /// The connection carried load balancers' probes and nothing else.
    pub(crate) fn only_probed(&self) -> bool {
        self.probes.get() > 0 && self.counted_requests.get() == 0
    }

    /// How long this connection has had no request running (zero while one is).
    pub(crate) fn idle_for(&self) -> Duration {
        if self.in_flight.get() > 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(monotonic_micros().saturating_sub(self.last_activity_micros.get()))
    }
}

/// What a request comes to.
enum Outcome {
    Full(Response),
    Stream(StreamingResponse),
    Close,
}

/// hyper's service function for one request.
pub(crate) async fn serve_request(
    request: hyper::Request<Incoming>,
    scope: Rc<ConnectionScope>,
) -> Result<hyper::Response<ResponseBody>, ClosedByHandler> {
    let worker = &scope.worker;
    let mut in_flight = InFlight::begin(&request, Rc::clone(&scope));
    let probe = probe::probe_for(request.uri().path(), worker);
    if probe.is_some() {
        in_flight.uncounted();
    }
    // A worker that is going closes the connection after this response, unless the
    // connection can move to a sibling (then it leaves, idle, right after the response).
    let going = if probe.is_some() {
        scope.probes.set(scope.probes.get() + 1);
        worker.dispatch_uncounted()
    } else {
        scope.counted_requests.set(scope.counted_requests.get() + 1);
        worker.dispatch()
    };
    let close_after = going && !scope.may_hand_over();
    let (parts, body) = request.into_parts();
    // A probe is the balancer's, not a client's: not in the access log nor the log hooks.
    if let Some(log) = worker.config.hooks.log.as_ref().filter(|_| probe.is_none()) {
        call_hook("LOGHANDLER", || log(&parts, scope.info.remote_ip));
    }
    let asks_close = asks_close(&parts);
    let logged = (probe.is_none() && worker.wants_written()).then(|| parts.clone());
    // `METHOD SP target SP HTTP/1.1`: the method, the target, two spaces and eight bytes.
    let request_line = parts.method.as_str().len() + uri_len(&parts.uri) + 10;
    // The request's time budget (request_timeout, handler_timeout) runs from here: reading
    // its body, the handler, and a streamed response.
    let budget = worker.config.request_budget();
    let deadline = budget.map(|budget| tokio::time::Instant::now() + budget);
    let outcome = if let Some(probe) = probe {
        Outcome::Full(probe::respond(probe, worker))
    } else if status::is_status_request(parts.uri.path(), worker) {
        Outcome::Full(status::respond(parts.uri.query(), &parts.headers, &scope.info, worker))
    } else if request_line > worker.config.max_request_line {
        Outcome::Full(text(StatusCode::URI_TOO_LONG, "414 URI Too Long"))
    } else if let Some(deadline) = deadline {
        match tokio::time::timeout_at(deadline, arm_if_waiting(&scope, dispatch(parts, body, &in_flight))).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // Dropping the handler's future ends it: an async handler is cut here. (A
                // blocking one never yields to this; the supervisor kills its worker.)
                tracing::warn!(
                    request = %in_flight.line(),
                    client = %scope.client,
                    budget = ?budget.unwrap_or_default(),
                    "request ran past its time budget: handler dropped, answered 503"
                );
                Outcome::Full(text(StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable"))
            }
        }
    } else {
        arm_if_waiting(&scope, dispatch(parts, body, &in_flight)).await
    };
    let written = |response: &http::response::Parts| {
        logged.map(|request| Box::new(Written { request, response: response.clone() }))
    };
    match outcome {
        // Dropping `in_flight` ends the request.
        Outcome::Close => Err(ClosedByHandler),
        Outcome::Full(response) => {
            let (mut head, bytes) = response.into_parts();
            apply_defaults(&mut head, worker, close_after);
            scope.note_closing(asks_close, &head.headers);
            // PROXYMODE adds no Content-Length of its own: the handler's, or chunked.
            let exact = !worker.config.proxy_mode || head.headers.contains_key(header::CONTENT_LENGTH);
            let body = ResponseBody::full(bytes, exact, in_flight, written(&head));
            Ok(hyper::Response::from_parts(head, body))
        }
        Outcome::Stream(StreamingResponse { mut head, body, length }) => {
            scope.arm_socket();
            apply_defaults(&mut head, worker, close_after);
            scope.note_closing(asks_close, &head.headers);
            match length {
                Some(length) => {
                    head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
                }
                None => {
                    head.headers.remove(header::CONTENT_LENGTH);
                }
            }
            let body = ResponseBody::stream(body, length, deadline, in_flight, written(&head));
            Ok(hyper::Response::from_parts(head, body))
        }
    }
}

async fn dispatch(mut parts: http::request::Parts, body: Incoming, in_flight: &InFlight) -> Outcome {
    let scope = in_flight.scope();
    let worker = &scope.worker;
    let config = &worker.config;
    let route = if config.proxy_mode {
        worker.router.find(&parts.uri.to_string())
    } else {
        worker.router.find(parts.uri.path())
    };
    let Some((dir, handler)) = route else {
        return Outcome::Full(text(StatusCode::NOT_FOUND, "404 Not Found"));
    };
    // A declared length past the limit is refused before anything is read (and before a
    // `100 Continue` would invite the upload).
    if http_body::Body::size_hint(&body).lower() > config.max_body_size as u64 {
        return Outcome::Full(text(StatusCode::PAYLOAD_TOO_LARGE, "413 Payload Too Large"));
    }
    let (body, verdict) = RequestBody::incoming(body, config);
    // A SimpleHTTP handler gets the body whole; a streaming one (a tower service) as it comes.
    let body = match handler.kind() {
        HandlerKind::Streaming(_) => BodyFor::Streaming(body),
        HandlerKind::Whole(_) => match body.read_whole().await {
            Ok(bytes) => BodyFor::Whole(bytes),
            Err((BodyVerdict::Fine, error)) => {
                tracing::debug!(%error, "request body could not be read");
                return Outcome::Full(text(StatusCode::BAD_REQUEST, "400 Bad Request"));
            }
            Err((broken, _)) => return refused_body(broken),
        },
    };
    if let (false, Some(authority)) = (config.proxy_mode, &worker.authority) {
        let scheme = if scope.info.ssl { Scheme::HTTPS } else { Scheme::HTTP };
        parts.uri = absolute_uri(&parts.uri, scheme, authority);
    }
    let context = RequestContext {
        dir: Rc::clone(dir),
        connection: Rc::clone(&scope.info),
        close_handlers: Rc::clone(&scope.close_handlers),
        next_close_token: Rc::clone(&scope.next_close_token),
    };
    // A handler panic, whether while being called or while its future runs, costs this
    // request a 500 and nothing more: the worker lives on.
    let answer = async move {
        let started = AssertUnwindSafe(|| match (handler.kind(), body) {
            (HandlerKind::Streaming(f), BodyFor::Streaming(body)) => f(http::Request::from_parts(parts, body), context),
            (_, BodyFor::Whole(bytes)) => handler.call(Request::from_parts(parts, bytes), context),
            (HandlerKind::Whole(_), BodyFor::Streaming(_)) => unreachable!("a whole handler's body is read first"),
        });
        let mut reply = match std::panic::catch_unwind(started) {
            Ok(future) => AssertUnwindSafe(future).catch_unwind().await?,
            Err(panic) => return Err(panic),
        };
        // An answer given later, through a Responder.
        while let Reply::Later(receiver) = reply {
            reply = match receiver.await {
                Ok(later) => later,
                Err(_) => {
                    tracing::error!(
                        request = %in_flight.line(),
                        "handler dropped its responder without answering; answered 500"
                    );
                    return Ok(Reply::Done(text(StatusCode::INTERNAL_SERVER_ERROR, "500 Internal Server Error")));
                }
            };
        }
        Ok(reply)
    };
    let answer = answer.await;
    // A streamed body that broke a limit gets the worker's answer, whatever the handler's.
    match verdict.get() {
        BodyVerdict::Fine => {}
        broken => return refused_body(broken),
    }
    match answer {
        Ok(Reply::Done(response)) => Outcome::Full(response),
        Ok(Reply::Stream(stream)) => Outcome::Stream(stream),
        Ok(Reply::Close) => Outcome::Close,
        Ok(Reply::Later(_)) => unreachable!("resolved above"),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %message, "handler panicked; answered 500");
            Outcome::Full(text(StatusCode::INTERNAL_SERVER_ERROR, "500 Internal Server Error"))
        }
    }
}

/// Whether the request ends its connection: `Connection: close`, or HTTP/1.0 without
/// `Connection: keep-alive`.
fn asks_close(request: &http::request::Parts) -> bool {
    match request.version {
        Version::HTTP_10 => !has_token(&request.headers, "keep-alive"),
        Version::HTTP_11 => has_token(&request.headers, "close"),
        _ => false,
    }
}

/// Whether a `Connection` header lists `token`.
fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// Runs a request's dispatch; the first time it has to wait (an async handler, a body still
/// coming), the connection's socket joins the reactor (see [`crate::lazy_io`]), so that a
/// client hanging up meanwhile ends the request (hyper drops its future: the handler's
/// `Responder` and `StreamSender` then say `is_closed`).
async fn arm_if_waiting<F: std::future::Future>(scope: &ConnectionScope, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut armed = false;
    std::future::poll_fn(|cx| {
        let polled = future.as_mut().poll(cx);
        if polled.is_pending() && !armed {
            armed = true;
            scope.arm_socket();
        }
        polled
    })
    .await
}

/// A request's body as its handler takes it.
enum BodyFor {
    Whole(Bytes),
    Streaming(RequestBody),
}

/// The answer to a body that broke a limit: `413` past the size, `408` past the time rules.
fn refused_body(verdict: BodyVerdict) -> Outcome {
    match verdict {
        BodyVerdict::TooSlow => Outcome::Full(text(StatusCode::REQUEST_TIMEOUT, "408 Request Timeout")),
        BodyVerdict::TooLarge | BodyVerdict::Fine => {
            Outcome::Full(text(StatusCode::PAYLOAD_TOO_LARGE, "413 Payload Too Large"))
        }
    }
}

/// `http://HOSTNAME:PORT/path?query` (`https` over TLS), as SimpleHTTP hands requests to
/// handlers. A URI that is already absolute stays as it is.
pub(crate) fn absolute_uri(uri: &Uri, scheme: Scheme, authority: &Authority) -> Uri {
    if uri.scheme().is_some() {
        return uri.clone();
    }
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority.clone());
    parts.path_and_query.get_or_insert_with(|| PathAndQuery::from_static("/"));
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// `HOSTNAME:PORT` (just `HOSTNAME` for port 0: a unix socket) as a URI authority, or `None`
/// (URIs are then left relative) if the host name cannot be one.
pub(crate) fn authority(hostname: &str, port: u16) -> Option<Authority> {
    let text = if port == 0 { hostname.to_owned() } else { format!("{hostname}:{port}") };
    match Authority::try_from(text) {
        Ok(authority) => Some(authority),
        Err(_) => {
            tracing::warn!(hostname, "host name cannot be part of a URI; handlers get relative URIs");
            None
        }
    }
}

/// SimpleHTTP's response rules: default headers, `text/plain` unless told otherwise, and
/// `Connection: close` after an error status (and while the worker drains or stops).
fn apply_defaults(head: &mut http::response::Parts, worker: &WorkerShared, close_after: bool) {
    add_defaults(&mut head.headers, &worker.config.default_headers);
    if !head.headers.contains_key(header::CONTENT_TYPE) {
        head.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    if head.status.as_u16() >= 400 || close_after {
        head.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// The length of `uri` as it came on the request line, without formatting it.
fn uri_len(uri: &Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let rest = uri.path_and_query().map_or(0, |p| p.as_str().len());
    scheme + authority + rest
}

/// Adds each default header the handler did not set, with all its values.
fn add_defaults(headers: &mut HeaderMap, defaults: &HeaderMap) {
    for name in defaults.keys() {
        if !headers.contains_key(name) {
            for value in defaults.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut response = Response::new(Bytes::from_static(body.as_bytes()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_len_is_the_length_of_the_uri_as_written() {
        for written in ["/", "/a/b?c=d", "http://example.org:8080/x?y", "*", "example.org:443"] {
            let uri: Uri = written.parse().unwrap();
            assert_eq!(uri_len(&uri), uri.to_string().len(), "{written}");
        }
    }

    #[test]
    fn default_headers_keep_all_their_values_unless_the_handler_set_the_name() {
        let mut defaults = HeaderMap::new();
        defaults.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        defaults.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        defaults.append(header::SERVER, HeaderValue::from_static("default"));
        let mut headers = HeaderMap::new();
        headers.insert(header::SERVER, HeaderValue::from_static("mine"));
        add_defaults(&mut headers, &defaults);
        assert_eq!(headers.get_all(header::SET_COOKIE).iter().count(), 2);
        assert_eq!(headers[header::SERVER], "mine");
    }

    #[test]
    fn relative_uris_become_absolute_with_hostname_and_port() {
        let uri: Uri = "/a/b?c=d".parse().unwrap();
        let authority = authority("example.org", 8080).unwrap();
        assert_eq!(absolute_uri(&uri, Scheme::HTTP, &authority).to_string(), "http://example.org:8080/a/b?c=d");
        assert_eq!(absolute_uri(&uri, Scheme::HTTPS, &authority).to_string(), "https://example.org:8080/a/b?c=d");
        let unix = super::authority("example.org", 0).unwrap();
        assert_eq!(absolute_uri(&uri, Scheme::HTTP, &unix).to_string(), "http://example.org/a/b?c=d");
    }

    #[test]
    fn absolute_uris_are_kept() {
        let uri: Uri = "http://other:1/x".parse().unwrap();
        assert_eq!(absolute_uri(&uri, Scheme::HTTP, &authority("example.org", 8080).unwrap()), uri);
    }

    #[test]
    fn a_hostname_that_cannot_be_an_authority_is_refused() {
        assert!(authority("bad host", 80).is_none());
    }
}
