//! The response body: the handler's bytes or its stream, and the bookkeeping when it is done
//! (scoreboard, slow-request log, LOG2HANDLER, access log).

use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};
use time::OffsetDateTime;

use crate::handler::{CloseConnection, StreamItem};
use crate::hooks::{access_line, call_hook};
use crate::in_flight::InFlight;
use crate::io::FlushSignal;
use crate::shared::WorkerShared;

enum Source {
    /// A whole body, sent in one frame; `exact` gives hyper its Content-Length.
    Full { data: Option<Bytes>, len: u64, exact: bool },
    /// A stream; `closing` once it asked to close the connection (after the flush).
    Stream { body: Pin<Box<dyn Stream<Item = StreamItem>>>, flush: Rc<FlushSignal>, closing: bool },
}

/// What the access log and LOG2HANDLER need once the response is written.
pub(crate) struct Written {
    pub request: http::request::Parts,
    pub response: http::response::Parts,
    pub client: IpAddr,
}

/// A response body. When hyper is done with it (sent, or dropped because the client left or
/// the request was HEAD) the request is counted and logged.
pub(crate) struct ResponseBody {
    source: Source,
    in_flight: InFlight,
    sent: u64,
    complete: bool,
    worker: Rc<WorkerShared>,
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
    pub(crate) fn full(
        data: Bytes,
        exact: bool,
        in_flight: InFlight,
        worker: Rc<WorkerShared>,
        written: Option<Box<Written>>,
    ) -> Self {
        let len = data.len() as u64;
        let source = Source::Full { data: (!data.is_empty()).then_some(data), len, exact };
        ResponseBody { source, in_flight, sent: 0, complete: false, worker, written }
    }

    /// A streamed body.
    pub(crate) fn stream(
        body: Pin<Box<dyn Stream<Item = StreamItem>>>,
        flush: Rc<FlushSignal>,
        in_flight: InFlight,
        worker: Rc<WorkerShared>,
        written: Option<Box<Written>>,
    ) -> Self {
        ResponseBody {
            source: Source::Stream { body, flush, closing: false },
            in_flight,
            sent: 0,
            complete: false,
            worker,
            written,
        }
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
            Source::Stream { flush, closing: true, .. } => match flush.poll_flushed(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(CloseConnection))),
                Poll::Pending => Poll::Pending,
            },
            Source::Stream { body, flush, closing } => loop {
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
                        return match flush.poll_flushed(cx) {
                            Poll::Ready(()) => Poll::Ready(Some(Err(CloseConnection))),
                            Poll::Pending => Poll::Pending,
                        };
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
            _ => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let worker = &self.worker;
        let duration = self.in_flight.finish(self.sent);
        let slow_after = worker.slot.slow_request_micros();
        if slow_after > 0 && duration > slow_after {
            // Like php-fpm's slowlog: say which request, from whom, and how long it took.
            let request = worker.board.slot_snapshot(worker.slot.index()).request;
            tracing::warn!(
                duration_ms = duration / 1000,
                request = %request.as_ref().map(|r| r.line().to_string_lossy()).unwrap_or_default(),
                client = %request.as_ref().map(|r| r.client().to_string_lossy()).unwrap_or_default(),
                "slow request"
            );
        }
        if let Some(written) = self.written.take() {
            if let Some(format) = worker.config.access_log {
                let status = written.response.status.as_u16();
                let line =
                    access_line(format, written.client, &written.request, status, self.sent, OffsetDateTime::now_utc());
                tracing::info!(target: "access", "{line}{}", if self.complete { "" } else { " (incomplete)" });
            }
            if let Some(log2) = &worker.config.hooks.log2 {
                call_hook("LOG2HANDLER", || log2(&written.request, &written.response));
            }
        }
    }
}
