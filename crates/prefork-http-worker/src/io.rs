//! A connection wrapper that shows in the scoreboard when a keep-alive client starts a request.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use prefork_scoreboard::WorkerState;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::shared::WorkerShared;

/// Passes reads and writes through; the first bytes read while in `K` switch the slot to `R`.
#[derive(Debug)]
pub(crate) struct ObservedIo<S> {
    inner: S,
    worker: Rc<WorkerShared>,
}

impl<S> ObservedIo<S> {
    pub(crate) fn new(inner: S, worker: Rc<WorkerShared>) -> Self {
        ObservedIo { inner, worker }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ObservedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && self.worker.slot.state() == WorkerState::KeepAlive {
            self.worker.set_state(WorkerState::Reading);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ObservedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
