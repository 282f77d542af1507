//! A request body read under the worker's body limits, whole for a SimpleHTTP handler or
//! streamed to one that reads it as it comes (a tower service): the size limit (`413`), and the
//! time rules (`408`): done by `body_read_timeout`, and by the keep-alive timeout plus one
//! second per `body_min_rate` bytes received so far, so that a client trickling its body
//! cannot hold a worker for long (mod_reqtimeout's `body=…,MinRate=…`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::config::WorkerConfig;

/// What a body that failed its limits failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyVerdict {
    /// Read so far without breaking a limit.
    Fine,
    /// Longer than `max_body_size`: `413`.
    TooLarge,
    /// Not within `body_read_timeout`, or slower than `body_min_rate`: `408`.
    TooSlow,
}

/// Shared between the body (which a service may move anywhere, even to another thread) and
/// the worker, which answers `413` or `408` for a body that broke a limit, whatever the service
/// made of the error.
#[derive(Clone, Debug, Default)]
pub(crate) struct VerdictCell(Arc<AtomicU8>);

impl VerdictCell {
    pub(crate) fn get(&self) -> BodyVerdict {
        match self.0.load(Ordering::Relaxed) {
            1 => BodyVerdict::TooLarge,
            2 => BodyVerdict::TooSlow,
            _ => BodyVerdict::Fine,
        }
    }

    fn set(&self, verdict: BodyVerdict) {
        let code = match verdict {
            BodyVerdict::Fine => 0,
            BodyVerdict::TooLarge => 1,
            BodyVerdict::TooSlow => 2,
        };
        self.0.store(code, Ordering::Relaxed);
    }
}

/// The error a body slower than the worker's time rules ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received in time")]
pub struct BodyTooSlow;

/// The time rules, from the moment the body began to be read.
#[derive(Debug)]
struct Pace {
    start: Instant,
    hard: Instant,
    allowance: Duration,
    min_rate: u64,
    received: u64,
    /// Armed only once the body has to wait: a body already in the buffer costs no timer.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Pace {
    fn deadline(&self) -> Instant {
        match self.min_rate {
            0 => self.hard,
            rate => {
                let earned = Duration::from_micros(self.received.saturating_mul(1_000_000) / rate);
                (self.start + self.allowance + earned).min(self.hard)
            }
        }
    }

    /// Ready once the body is late.
    fn poll_late(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline();
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }
}

#[derive(Debug)]
enum Source {
    Incoming { body: Limited<Incoming>, pace: Box<Pace> },
    Whole(Option<Bytes>),
}

/// A request body as a handler that streams it receives it (see [`Handler::new_streaming`](crate::Handler::new_streaming)):
/// frames as the client sends them, ending in an error (a `LengthLimitError` past
/// `max_body_size`, [`BodyTooSlow`] past the time rules) when the client breaks a limit; the
/// worker then answers `413` or `408` itself, whatever the handler answered. `Send`, as axum
/// asks of a body.
#[derive(Debug)]
pub struct RequestBody {
    source: Source,
    verdict: VerdictCell,
}

impl RequestBody {
    /// A body that is already whole (for calling a streaming handler directly, in a test).
    pub fn whole(bytes: Bytes) -> RequestBody {
        RequestBody { source: Source::Whole((!bytes.is_empty()).then_some(bytes)), verdict: VerdictCell::default() }
    }

    /// The body of a request being read, under `config`'s limits.
    pub(crate) fn incoming(body: Incoming, config: &WorkerConfig) -> (RequestBody, VerdictCell) {
        let start = Instant::now();
        let pace = Pace {
            start,
            hard: start + config.body_read_timeout,
            allowance: config.keepalive_timeout,
            min_rate: config.body_min_rate,
            received: 0,
            timer: None,
        };
        let verdict = VerdictCell::default();
        let source = Source::Incoming { body: Limited::new(body, config.max_body_size), pace: Box::new(pace) };
        (RequestBody { source, verdict: verdict.clone() }, verdict)
    }

    /// The whole body, or what broke a limit (`Fine`: the connection failed).
    pub(crate) async fn read_whole(self) -> Result<Bytes, (BodyVerdict, crate::BoxError)> {
        let verdict = self.verdict.clone();
        self.collect().await.map(|collected| collected.to_bytes()).map_err(|error| (verdict.get(), error))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = crate::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let (body, pace) = match &mut this.source {
            Source::Whole(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Source::Incoming { body, pace } => (body, pace),
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                pace.received += frame.data_ref().map_or(0, |data| data.remaining() as u64);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                if error.downcast_ref::<LengthLimitError>().is_some() {
                    this.verdict.set(BodyVerdict::TooLarge);
                }
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(pace.poll_late(cx));
                this.verdict.set(BodyVerdict::TooSlow);
                Poll::Ready(Some(Err(Box::new(BodyTooSlow))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Whole(bytes) => bytes.is_none(),
            Source::Incoming { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Whole(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Source::Incoming { body, .. } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_body_yields_its_bytes_once() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let body = RequestBody::whole(Bytes::from_static(b"abc"));
            assert_eq!(body.size_hint().exact(), Some(3));
            assert_eq!(body.read_whole().await.unwrap(), "abc");
            assert!(RequestBody::whole(Bytes::new()).is_end_stream());
        });
    }

    #[test]
    fn the_deadline_grows_with_the_bytes_received_up_to_the_hard_limit() {
        let start = Instant::now();
        let mut pace = Pace {
            start,
            hard: start + Duration::from_secs(60),
            allowance: Duration::from_secs(5),
            min_rate: 500,
            received: 0,
            timer: None,
        };
        assert_eq!(pace.deadline(), start + Duration::from_secs(5));
        pace.received = 1000;
        assert_eq!(pace.deadline(), start + Duration::from_secs(7));
        pace.received = u64::MAX;
        assert_eq!(pace.deadline(), start + Duration::from_secs(60));
        pace.min_rate = 0;
        pace.received = 0;
        assert_eq!(pace.deadline(), start + Duration::from_secs(60));
    }
}
