//! One request: status page or route lookup, limits, body collection, the handler and its
//! reply, SimpleHTTP's response defaults.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::uri::Scheme;
use http::{HeaderMap, HeaderValue, StatusCode, Uri, Version, header};
use hyper::body::Incoming;

use crate::absolute_uri::absolute_uri;
use crate::body::{ResponseBody, Written};
use crate::connection_scope::{ConnectionScope, has_token};
use crate::handler::{HandlerKind, Reply, Request, RequestContext, Response, StreamingResponse};
use crate::hooks::call_hook;
use crate::in_flight::InFlight;
use crate::request_body::{BodyVerdict, RequestBody};
use crate::shared::WorkerShared;
use crate::{probe, status};

/// Returned to hyper when a handler chose to close the connection without a response:
/// hyper then drops the connection without writing anything.
#[derive(Debug, thiserror::Error)]
#[error("handler closed the connection without a response")]
pub(crate) struct ClosedByHandler;

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
    scope.count_request(probe.is_some());
    let going = if probe.is_some() { worker.dispatch_uncounted() } else { worker.dispatch() };
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
    // A SimpleHTTP handler gets the body whole; a streaming one (a tower service) as it comes,
    // with a verdict the worker reads after the handler. No body (most requests): nothing to
    // read, time or allocate.
    let mut verdict = None;
    let body = match handler.kind() {
        HandlerKind::Whole(_) if http_body::Body::is_end_stream(&body) => BodyFor::Whole(Bytes::new()),
        HandlerKind::Streaming(_) => {
            let (body, cell) = RequestBody::incoming(body, config);
            verdict = Some(cell);
            BodyFor::Streaming(body)
        }
        HandlerKind::Whole(_) => match RequestBody::incoming(body, config).0.read_whole().await {
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
    match verdict.map_or(BodyVerdict::Fine, |cell| cell.get()) {
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
}
