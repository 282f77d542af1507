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
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Incoming;
use prefork_scoreboard::RequestStart;
use prefork_scoreboard::clock::monotonic_micros;

use crate::body::{ResponseBody, Written};
use crate::handler::{CloseHandlers, ConnectionInfo, Reply, Request, RequestContext, Response, StreamingResponse};
use crate::hooks::call_hook;
use crate::in_flight::InFlight;
use crate::io::FlushSignal;
use crate::shared::WorkerShared;
use crate::status;

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
    /// Tells a stream ending in CLOSE that its last chunks are out (HTTP/1.1 only: on HTTP/2
    /// a CLOSE resets its stream, and there is nothing to wait for).
    pub flush: Option<Rc<FlushSignal>>,
    /// Requests of this connection now running (several on HTTP/2).
    in_flight: Cell<usize>,
    /// When a request of this connection last began or ended, or the connection opened
    /// (`CLOCK_MONOTONIC` µs).
    last_activity_micros: Cell<u64>,
}

impl ConnectionScope {
    pub(crate) fn new(
        worker: Rc<WorkerShared>,
        info: ConnectionInfo,
        flush: Option<Rc<FlushSignal>>,
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
            flush,
            in_flight: Cell::new(0),
            last_activity_micros: Cell::new(monotonic_micros()),
        }
    }

    /// A request of this connection began (see [`InFlight`], the only caller).
    pub(crate) fn request_started(&self, start: RequestStart) {
        self.in_flight.set(self.in_flight.get() + 1);
        self.last_activity_micros.set(start.micros());
        self.worker.request_started(start);
    }

    /// The request begun at `start` ended after `duration_micros`.
    pub(crate) fn request_finished(&self, start: RequestStart, duration_micros: u64) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
        self.last_activity_micros.set(start.micros() + duration_micros);
        self.worker.request_finished(start);
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
    let in_flight = InFlight::begin(&request, Rc::clone(&scope));
    let close_after = worker.dispatch();
    let (parts, body) = request.into_parts();
    if let Some(log) = &worker.config.hooks.log {
        call_hook("LOGHANDLER", || log(&parts, scope.info.remote_ip));
    }
    let logged = worker.wants_written().then(|| parts.clone());
    let request_line = parts.method.as_str().len() + uri_len(&parts.uri) + 9;
    let outcome = if status::is_status_request(parts.uri.path(), worker) {
        Outcome::Full(status::respond(parts.uri.query(), &parts.headers, &scope.info, worker))
    } else if request_line > worker.config.max_request_line {
        Outcome::Full(text(StatusCode::URI_TOO_LONG, "414 URI Too Long"))
    } else {
        dispatch(parts, body, &in_flight).await
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
            // PROXYMODE adds no Content-Length of its own: the handler's, or chunked.
            let exact = !worker.config.proxy_mode || head.headers.contains_key(header::CONTENT_LENGTH);
            let body = ResponseBody::full(bytes, exact, in_flight, written(&head));
            Ok(hyper::Response::from_parts(head, body))
        }
        Outcome::Stream(StreamingResponse { mut head, body }) => {
            apply_defaults(&mut head, worker, close_after);
            head.headers.remove(header::CONTENT_LENGTH);
            let body = ResponseBody::stream(body, in_flight, written(&head));
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
    let collected = tokio::time::timeout(config.body_read_timeout, Limited::new(body, config.max_body_size).collect());
    let body = match collected.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Outcome::Full(text(StatusCode::PAYLOAD_TOO_LARGE, "413 Payload Too Large"));
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "request body could not be read");
            return Outcome::Full(text(StatusCode::BAD_REQUEST, "400 Bad Request"));
        }
        Err(_) => return Outcome::Full(text(StatusCode::REQUEST_TIMEOUT, "408 Request Timeout")),
    };
    if let (false, Some(authority)) = (config.proxy_mode, &worker.authority) {
        let scheme = if scope.info.ssl { Scheme::HTTPS } else { Scheme::HTTP };
        parts.uri = absolute_uri(&parts.uri, scheme, authority);
    }
    let request = Request::from_parts(parts, body);
    let context = RequestContext {
        dir: Rc::clone(dir),
        connection: Rc::clone(&scope.info),
        close_handlers: Rc::clone(&scope.close_handlers),
    };
    // A handler panic, whether while being called or while its future runs, costs this
    // request a 500 and nothing more: the worker lives on.
    let answer = async move {
        let mut reply = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(request, context))) {
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
    let answered = match config.handler_timeout {
        Some(budget) => match tokio::time::timeout(budget, answer).await {
            Ok(answered) => answered,
            Err(_) => {
                tracing::warn!(budget = ?budget, "handler ran past its time budget; answered 503");
                return Outcome::Full(text(StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable"));
            }
        },
        None => answer.await,
    };
    match answered {
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
