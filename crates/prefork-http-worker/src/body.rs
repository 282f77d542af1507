//! The response body: the handler's bytes or its stream, and the bookkeeping when it is done
//! (the request finished in the scoreboard, LOG2HANDLER, the access log).

use std::future::Future as _;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};
use time::OffsetDateTime;
use tokio::time::Sleep;

use crate::handler::{CloseConnection, StreamItem};
use crate::hooks::{access_line, call_hook};
use crate::in_flight::InFlight;

enum Source {
    /// A whole body, sent in one frame; `exact` gives hyper its Content-Length.
    Full { data: Option<Bytes>, len: u64, exact: bool },
    /// A stream; `closing` once it asked to close the connection (after the flush); cut
    /// at `deadline` (the request's time budget), if any.
    Stream {
        body: Pin<Box<dyn Stream<Item = StreamItem>>>,
        /// Its exact length, if said up front (hyper then frames it by `Content-Length`).
        length: Option<u64>,
        closing: bool,
        deadline: Option<Pin<Box<Sleep>>>,
    },
}

/// What the access log and LOG2HANDLER need once the response is written.
pub(crate) struct Written {
    pub request: http::request::Parts,
    pub response: http::response::Parts,
}

/// A response body. When hyper is done with it (sent, or dropped because the client left or
/// the request was HEAD) the request is finished and logged.
pub(crate) struct ResponseBody {
    source: Source,
    in_flight: InFlight,
    sent: u64,
    complete: bool,
    written: Option<Box<Written>>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").field("sent", &self.sent).finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// A whole body; `exact: false` leaves the length unknown to hyper (PROXYMODE adds no
    /// Content-Length of its own).
    pub(crate) fn full(data: Bytes, exact: bool, in_flight: InFlight, written: Option<Box<Written>>) -> Self {
        let len = data.len() as u64;
        let source = Source::Full { data: (!data.is_empty()).then_some(data), len, exact };
        ResponseBody { source, in_flight, sent: 0, complete: false, written }
    }

    /// A streamed body, cut (its connection closed: the head is already sent) if it is still
    /// running at `deadline`.
    pub(crate) fn stream(
        body: Pin<Box<dyn Stream<Item = StreamItem>>>,
        length: Option<u64>,
        deadline: Option<tokio::time::Instant>,
        in_flight: InFlight,
        written: Option<Box<Written>>,
    ) -> Self {
        let deadline = deadline.map(|at| Box::pin(tokio::time::sleep_until(at)));
        let source = Source::Stream { body, length, closing: false, deadline };
        ResponseBody { source, in_flight, sent: 0, complete: false, written }
    }
}

/// Fails the body once hyper has flushed the chunks before it (HTTP/1.1: hyper drops unflushed
/// data when a body fails); at once on HTTP/2, where the failure resets only this stream.
fn poll_close(in_flight: &InFlight, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, CloseConnection>>> {
    match &in_flight.scope().flush {
        Some(flush) if flush.poll_flushed(cx).is_pending() => Poll::Pending,
        _ => Poll::Ready(Some(Err(CloseConnection))),
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = CloseConnection;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CloseConnection>>> {
        let this = &mut *self;
        match &mut this.source {
            Source::Full { data, .. } => match data.take() {
                Some(data) => {
                    this.sent += data.len() as u64;
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                None => {
                    this.complete = true;
                    Poll::Ready(None)
                }
            },
            // CLOSE: first let hyper flush the chunks before it, then fail the body, which
            // makes hyper drop the connection without the terminating chunk.
            Source::Stream { closing: true, .. } => poll_close(&this.in_flight, cx),
            Source::Stream { body, closing, deadline, .. } => loop {
                if let Some(deadline) = deadline.as_mut()
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    tracing::warn!(
                        request = %this.in_flight.line(),
                        "streamed response still running at the request timeout; connection closed"
                    );
                    return Poll::Ready(Some(Err(CloseConnection)));
                }
                // A panicking stream costs its connection (the response is half sent, so the
                // only honest end is to cut it), never the worker.
                let polled =
                    std::panic::catch_unwind(AssertUnwindSafe(|| body.as_mut().poll_next(cx))).unwrap_or_else(|_| {
                        tracing::error!("response stream panicked; closing the connection");
                        Poll::Ready(Some(Err(CloseConnection)))
                    });
                match polled {
                    // An empty chunk would end a chunked body early: skip it.
                    Poll::Ready(Some(Ok(chunk))) if chunk.is_empty() => continue,
                    Poll::Ready(Some(Ok(chunk))) => {
                        this.sent += chunk.len() as u64;
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    Poll::Ready(Some(Err(CloseConnection))) => {
                        *closing = true;
                        return poll_close(&this.in_flight, cx);
                    }
                    Poll::Ready(None) => {
                        this.complete = true;
                        return Poll::Ready(None);
                    }
                    Poll::Pending => return Poll::Pending,
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.source, Source::Full { data: None, .. })
    }

    fn size_hint(&self) -> SizeHint {
        match self.source {
            Source::Full { len, exact: true, .. } => SizeHint::with_exact(len),
            Source::Stream { length: Some(length), .. } => SizeHint::with_exact(length.saturating_sub(self.sent)),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.in_flight.finish(self.sent);
        let Some(written) = self.written.take() else { return };
        let scope = self.in_flight.scope();
        let config = &scope.worker.config;
        if let Some(format) = config.access_log {
            let status = written.response.status.as_u16();
            let now = OffsetDateTime::now_utc();
            let line = access_line(format, scope.info.remote_ip, &written.request, status, self.sent, now);
            tracing::info!(target: "access", "{line}{}", if self.complete { "" } else { " (incomplete)" });
        }
        if let Some(log2) = &config.hooks.log2 {
            call_hook("LOG2HANDLER", || log2(&written.request, &written.response));
        }
    }
}
