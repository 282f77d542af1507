//! Any `tower::Service` over HTTP as a handler: an axum `Router` with tower-http layers, say,
//! served by preforked workers next to (or instead of) SimpleHTTP-style handlers.
//!
//! A worker is single-threaded, so the service need not be `Send`: it is cloned per request,
//! asked whether it is ready, then called (so a middleware's own per-instance state, a rate
//! limiter's say, starts afresh with each request: share such state through an `Rc` or `Arc`). The
//! request's body streams to it as the client sends it, a [`RequestBody`], under the worker's
//! body limits (past them the client gets `413` or `408`); the response body is streamed to
//! the client frame by frame as the service produces it, with its `Content-Length` when it says
//! its exact size up front (else chunked; trailers are dropped), or sent in one piece when that
//! size is at most 256 KiB.

use std::fmt::Display;

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt as _;

use crate::handler::{CloseConnection, Handler, Reply, StreamingResponse};
use crate::request_body::RequestBody;

/// Bodies this large or smaller, of a size known up front, are sent whole.
const WHOLE_BODY_BYTES: u64 = 256 * 1024;

impl Handler {
    /// A handler that calls `service` (any `tower::Service` from HTTP requests to HTTP
    /// responses: an axum `Router`, a tower-http stack, a hand-written service). A service
    /// error, or one that is not ready, answers `500` (and is logged); a response body that
    /// fails midway closes the connection.
    ///
    /// # Examples
    ///
    /// ```rust
    /// use std::convert::Infallible;
    ///
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt as _, Full};
    /// use prefork_http_worker::{Handler, RequestBody, Router};
    ///
    /// // A tower service written by hand (an axum Router is one too): it echoes the body.
    /// let echo = tower::service_fn(|request: http::Request<RequestBody>| async move {
    ///     let body = request.into_body().collect().await?.to_bytes();
    ///     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(http::Response::new(Full::new(body)))
    /// });
    /// let mut router = Router::new();
    /// router.add("^/", Handler::from_service(echo))?;
    /// # Ok::<(), prefork_http_worker::BadDir>(())
    /// ```
    pub fn from_service<S, ResBody>(service: S) -> Handler
    where
        S: tower_service::Service<http::Request<RequestBody>, Response = http::Response<ResBody>> + Clone + 'static,
        S::Error: Display,
        S::Future: 'static,
        ResBody: Body<Data = Bytes> + 'static,
        ResBody::Error: Display,
    {
        Handler::new_streaming(move |request: http::Request<RequestBody>, _context| {
            let mut service = service.clone();
            async move {
                if let Err(error) = std::future::poll_fn(|cx| service.poll_ready(cx)).await {
                    tracing::error!(%error, "the service is not ready");
                    return internal_error();
                }
                match service.call(request).await {
                    Ok(response) => reply(response).await,
                    Err(error) => {
                        tracing::error!(%error, "the service failed");
                        internal_error()
                    }
                }
            }
        })
    }
}

fn internal_error() -> Reply {
    let mut response = http::Response::new(Bytes::from_static(b"500 Internal Server Error\n"));
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    Reply::Done(response)
}

/// The service's response as the worker sends it.
async fn reply<B>(response: http::Response<B>) -> Reply
where
    B: Body<Data = Bytes> + 'static,
    B::Error: Display,
{
    let (head, body) = response.into_parts();
    let exact = body.size_hint().exact();
    if exact.is_some_and(|size| size <= WHOLE_BODY_BYTES) {
        return match body.collect().await {
            Ok(collected) => Reply::Done(http::Response::from_parts(head, collected.to_bytes())),
            Err(error) => {
                tracing::error!(%error, "the service's response body failed");
                internal_error()
            }
        };
    }
    let frames = futures_util::stream::unfold(Box::pin(body), |mut body| async move {
        loop {
            match body.frame().await? {
                Ok(frame) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => return Some((Ok(data), body)),
                    Err(_trailers) => continue,
                },
                Err(error) => {
                    tracing::error!(%error, "the service's response body failed midway: closing the connection");
                    return Some((Err(CloseConnection), body));
                }
            }
        }
    });
    Reply::Stream(StreamingResponse::new(head, frames).with_length(exact))
}
