//! A connection wrapper that shows in the scoreboard when a keep-alive client starts a request,
//! and tells a closing stream when everything written so far has been flushed.

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf as _, Bytes};
use prefork_scoreboard::WorkerState;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::shared::WorkerShared;

/// Lets a streamed body that must close the connection (SimpleHTTP's CLOSE) wait until the
/// chunks before the close have left hyper's buffer: hyper drops unflushed data when a body
/// fails.
#[derive(Debug, Default)]
pub(crate) struct FlushSignal {
    waiting: Cell<bool>,
    flushed: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl FlushSignal {
    /// Ready once a flush completed after this was first called.
    pub(crate) fn poll_flushed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.flushed.get() {
            return Poll::Ready(());
        }
        self.waiting.set(true);
        *self.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }

    fn flush_completed(&self) {
        if self.waiting.get() {
            self.flushed.set(true);
            if let Some(waker) = self.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }
}

/// Passes reads and writes through, reading first the bytes already read from the connection
/// (the request received while it was parked, and those read to tell HTTP/2 from HTTP/1.1,
/// see [`crate::preface`]); the first bytes read while in `K` switch the slot to `R`.
#[derive(Debug)]
pub(crate) struct ObservedIo<S> {
    inner: S,
    /// Bytes put back in front of the stream.
    prefix: Bytes,
    worker: Rc<WorkerShared>,
    /// HTTP/1.1 only (see [`crate::service::ConnectionScope::flush`]).
    flush: Option<Rc<FlushSignal>>,
    /// Set when the connection is to leave this worker, idle, to be parked: nothing more is
    /// read (the client's next request is for whoever takes the connection), and hyper's
    /// shutdown leaves the socket open.
    letting_go: Rc<Cell<bool>>,
}

impl<S> ObservedIo<S> {
    pub(crate) fn new(
        inner: S,
        prefix: Bytes,
        worker: Rc<WorkerShared>,
        flush: Option<Rc<FlushSignal>>,
        letting_go: Rc<Cell<bool>>,
    ) -> Self {
        ObservedIo { inner, prefix, worker, flush, letting_go }
    }

    /// The stream, and the bytes put back in front of it that nobody read yet.
    pub(crate) fn into_parts(self) -> (S, Bytes) {
        (self.inner, self.prefix)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ObservedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.letting_go.get() {
            // No waker is needed: the connection is being let go, which wakes its task.
            return Poll::Pending;
        }
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
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
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        if let (Poll::Ready(Ok(())), Some(flush)) = (&result, &self.flush) {
            flush.flush_completed();
        }
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.letting_go.get() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
