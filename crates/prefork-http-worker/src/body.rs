//! The response body type: sends the handler's bytes and records the request in the scoreboard.

use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prefork_scoreboard::WorkerState;

use crate::shared::WorkerShared;

/// A complete response body. When hyper is done with it (sent, or dropped because the client
/// left or the request was HEAD) the request is counted and the slot goes back to keep-alive.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    data: Option<Bytes>,
    len: u64,
    sent: u64,
    worker: Rc<WorkerShared>,
}

impl ResponseBody {
    pub(crate) fn new(data: Bytes, worker: Rc<WorkerShared>) -> ResponseBody {
        let len = data.len() as u64;
        ResponseBody { data: (!data.is_empty()).then_some(data), len, sent: 0, worker }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.data.take() {
            Some(data) => {
                self.sent += data.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let slot = &self.worker.slot;
        let duration = slot.finish_request(self.sent);
        let slow_after = slot.slow_request_micros();
        if slow_after > 0 && duration > slow_after {
            // Like php-fpm's slowlog: say which request, from whom, and how long it took.
            let request = self.worker.board.slot_snapshot(slot.index()).request;
            tracing::warn!(
                duration_ms = duration / 1000,
                request = %request.as_ref().map(|r| r.line().to_string_lossy()).unwrap_or_default(),
                client = %request.as_ref().map(|r| r.client().to_string_lossy()).unwrap_or_default(),
                "slow request"
            );
        }
        self.worker.sample_usage_if_due();
        self.worker.check_recycle_limits();
        self.worker.set_state(WorkerState::KeepAlive);
    }
}
