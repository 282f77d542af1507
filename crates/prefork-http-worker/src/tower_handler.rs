//! Any `tower::Service` over HTTP as a handler: an axum `Router` with tower-http layers, say,
//! served by preforked workers next to (or instead of) SimpleHTTP-style handlers.
//!
//! A worker is single-threaded, so the service need not be `Send`: it is cloned per request,
//! asked whether it is ready, then called (so a middleware's own per-instance state, a rate
//! limiter's say, starts afresh with each request: share such state through an `Rc` or `Arc`). The
//! request reaches it with its body already read, under the worker's body limits (`413`, the
//! body minimum rate), as a `Full<Bytes>`; the response body is streamed to the client frame by
//! frame as the service produces it, chunked (its trailers and any `Content-Length` it set are
//! dropped), or sent in one piece with its `Content-Length` when it says its exact size up
//! front and that is at most 256 KiB.

use std::fmt::Display;

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt as _, Full};

use crate::handler::{CloseConnection, Handler, Reply, Request, StreamingResponse};

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
    /// use http_body_util::Full;
    /// use prefork_http_worker::{Handler, Router};
    ///
    /// // A tower service written by hand (an axum Router is one too).
    /// let echo = tower::service_fn(|request: http::Request<Full<Bytes>>| async move {
    ///     Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(request.uri().path().to_owned()))))
    /// });
    /// let mut router = Router::new();
    /// router.add("^/", Handler::from_service(echo))?;
    /// # Ok::<(), prefork_http_worker::BadDir>(())
    /// ```
    pub fn from_service<S, ResBody>(service: S) -> Handler
    where
        S: tower_service::Service<http::Request<Full<Bytes>>, Response = http::Response<ResBody>> + Clone + 'static,
        S::Error: Display,
        S::Future: 'static,
        ResBody: Body<Data = Bytes> + 'static,
        ResBody::Error: Display,
    {
        Handler::new_async(move |request: Request, _context| {
            let mut service = service.clone();
            async move {
                if let Err(error) = std::future::poll_fn(|cx| service.poll_ready(cx)).await {
                    tracing::error!(%error, "the service is not ready");
                    return internal_error();
                }
                let (parts, body) = request.into_parts();
                match service.call(http::Request::from_parts(parts, Full::new(body))).await {
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
    if body.size_hint().exact().is_some_and(|size| size <= WHOLE_BODY_BYTES) {
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
    Reply::Stream(StreamingResponse::new(head, frames))
}
