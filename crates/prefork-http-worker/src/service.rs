//! One request: status page or route lookup, body collection, the handler, response defaults.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Incoming;
use prefork_scoreboard::{REQUEST_LINE_BYTES, RequestInfo, WorkerState};

use crate::body::ResponseBody;
use crate::handler::{ConnectionInfo, Reply, Request, RequestContext, Response};
use crate::shared::WorkerShared;
use crate::status;

/// Returned to hyper when a handler chose to close the connection without a response:
/// hyper then drops the connection without writing anything.
#[derive(Debug, thiserror::Error)]
#[error("handler closed the connection without a response")]
pub(crate) struct ClosedByHandler;

/// Per-connection context of the service.
#[derive(Debug)]
pub(crate) struct ConnectionScope {
    pub worker: Rc<WorkerShared>,
    pub info: Rc<ConnectionInfo>,
    /// `address:port` of the client, formatted once per connection for the scoreboard.
    pub client: String,
}

impl ConnectionScope {
    pub(crate) fn new(worker: Rc<WorkerShared>, info: ConnectionInfo) -> ConnectionScope {
        let client = SocketAddr::new(info.remote_ip, info.remote_port).to_string();
        ConnectionScope { worker, info: Rc::new(info), client }
    }
}

/// hyper's service function for one request.
pub(crate) async fn serve_request(
    request: hyper::Request<Incoming>,
    scope: Rc<ConnectionScope>,
) -> Result<hyper::Response<ResponseBody>, ClosedByHandler> {
    let worker = &scope.worker;
    worker.set_state(WorkerState::Writing);
    publish_request(&request, &scope);
    let close_after = worker.dispatch();
    let (parts, body) = request.into_parts();
    let mut response = if status::is_status_request(parts.uri.path(), worker) {
        status::respond(parts.uri.query(), &parts.headers, &scope.info, worker)
    } else {
        match dispatch(parts, body, &scope).await {
            Ok(response) => response,
            Err(closed) => {
                worker.slot.finish_request(0);
                return Err(closed);
            }
        }
    };
    apply_defaults(&mut response, worker, close_after);
    Ok(response.map(|bytes| ResponseBody::new(bytes, Rc::clone(worker))))
}

/// Shows the request in the scoreboard: line, client, protocol, virtual host, start time.
/// Built on the stack: no allocation per request.
fn publish_request(request: &hyper::Request<Incoming>, scope: &ConnectionScope) {
    let mut line = LineBuffer::default();
    let protocol = protocol_name(request.version());
    let _ = write!(line, "{} {} {protocol}", request.method(), request.uri());
    let vhost = request
        .headers()
        .get(header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| request.uri().authority().map(|a| a.as_str().as_bytes()))
        .unwrap_or_default();
    scope.worker.slot.begin_request(&RequestInfo {
        line: line.as_bytes(),
        client: scope.client.as_bytes(),
        protocol: protocol.as_bytes(),
        vhost,
    });
}

/// `HTTP/1.1` and friends.
fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// A request line cut at the scoreboard's field size, formatted without allocating.
struct LineBuffer {
    bytes: [u8; REQUEST_LINE_BYTES],
    len: usize,
}

impl Default for LineBuffer {
    fn default() -> Self {
        LineBuffer { bytes: [0; REQUEST_LINE_BYTES], len: 0 }
    }
}

impl LineBuffer {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Write for LineBuffer {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(REQUEST_LINE_BYTES - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

async fn dispatch(
    mut parts: http::request::Parts,
    body: Incoming,
    scope: &ConnectionScope,
) -> Result<Response, ClosedByHandler> {
    let worker = &scope.worker;
    let config = &worker.config;
    let route = if config.proxy_mode {
        worker.router.find(&parts.uri.to_string())
    } else {
        worker.router.find(parts.uri.path())
    };
    let Some((dir, handler)) = route else {
        return Ok(text(StatusCode::NOT_FOUND, "404 Not Found"));
    };
    let body = match Limited::new(body, config.max_body_size).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "413 Payload Too Large"));
        }
        Err(error) => {
            tracing::debug!(%error, "request body could not be read");
            return Ok(text(StatusCode::BAD_REQUEST, "400 Bad Request"));
        }
    };
    if let (false, Some(authority)) = (config.proxy_mode, &worker.authority) {
        parts.uri = absolute_uri(&parts.uri, authority);
    }
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    let request = Request::from_parts(parts, body);
    let context = RequestContext { dir: Rc::clone(dir), connection: Rc::clone(&scope.info) };
    // A handler panic, whether while being called or while its future runs, costs this
    // request a 500 and nothing more: the worker lives on.
    let reply = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(request, context))) {
        Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    match reply {
        Ok(Reply::Done(response)) => Ok(response),
        Ok(Reply::Close) => Err(ClosedByHandler),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%method, %uri, panic = %message, "handler panicked; answered 500");
            Ok(text(StatusCode::INTERNAL_SERVER_ERROR, "500 Internal Server Error"))
        }
    }
}

/// `http://HOSTNAME:PORT/path?query`, as SimpleHTTP hands requests to handlers. A URI that is
/// already absolute stays as it is.
pub(crate) fn absolute_uri(uri: &Uri, authority: &Authority) -> Uri {
    if uri.scheme().is_some() {
        return uri.clone();
    }
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query.get_or_insert_with(|| PathAndQuery::from_static("/"));
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// `HOSTNAME:PORT` as a URI authority, or `None` (URIs are then left relative) if the host
/// name cannot be one.
pub(crate) fn authority(hostname: &str, port: u16) -> Option<Authority> {
    match Authority::try_from(format!("{hostname}:{port}")) {
        Ok(authority) => Some(authority),
        Err(_) => {
            tracing::warn!(hostname, "host name cannot be part of a URI; handlers get relative URIs");
            None
        }
    }
}

/// SimpleHTTP's response rules: default headers, `text/plain` unless told otherwise, and
/// `Connection: close` after an error status (and while the worker drains towards recycling).
fn apply_defaults(response: &mut Response, worker: &WorkerShared, close_after: bool) {
    let headers = response.headers_mut();
    for (name, value) in &worker.config.default_headers {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    if response.status().as_u16() >= 400 || close_after {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
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
    fn relative_uris_become_absolute_with_hostname_and_port() {
        let uri: Uri = "/a/b?c=d".parse().unwrap();
        let authority = authority("example.org", 8080).unwrap();
        assert_eq!(absolute_uri(&uri, &authority).to_string(), "http://example.org:8080/a/b?c=d");
    }

    #[test]
    fn absolute_uris_are_kept() {
        let uri: Uri = "http://other:1/x".parse().unwrap();
        assert_eq!(absolute_uri(&uri, &authority("example.org", 8080).unwrap()), uri);
    }

    #[test]
    fn the_request_line_buffer_cuts_at_the_field_size() {
        let mut line = LineBuffer::default();
        let _ = write!(line, "GET /{} HTTP/1.1", "x".repeat(500));
        assert_eq!(line.as_bytes().len(), REQUEST_LINE_BYTES);
        assert!(line.as_bytes().starts_with(b"GET /xxx"));
    }

    #[test]
    fn a_hostname_that_cannot_be_an_authority_is_refused() {
        assert!(authority("bad host", 80).is_none());
    }
}
