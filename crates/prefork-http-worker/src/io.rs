//! A connection wrapper that shows in the scoreboard when a keep-alive client starts a request,
//! and tells a closing stream when everything written so far has been flushed.

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf as _, Bytes, BytesMut};
use prefork_scoreboard::WorkerState;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::connection_scope::ConnectionScope;
use crate::head::{HeadLimits, Readiness, readiness};
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
///
/// On a connection that parks, it also *gates* what hyper reads: hyper gets one request at a
/// time, and only once that request is complete (its head, and a body of up to
/// [`crate::head::MAX_PARKED_BODY`]), just as a new connection reaches a worker only with its request
/// complete. A keep-alive client that sends its next request slowly (or pipelines one whose
/// body is still coming) thus never holds the worker: once the socket has nothing more for
/// now, the connection is let go with what it sent, and waits parked. A request hyper must
/// frame itself (chunked) ends the gating for the rest of the connection.
#[derive(Debug)]
pub(crate) struct ObservedIo<S> {
    inner: S,
    /// Bytes read from the stream that hyper has not had yet.
    pending: BytesMut,
    worker: Rc<WorkerShared>,
    /// HTTP/1.1 only (see [`crate::connection_scope::ConnectionScope::flush`]).
    flush: Option<Rc<FlushSignal>>,
    /// Set when the connection is to leave this worker, idle, to be parked: nothing more is
    /// read (the client's next request is for whoever takes the connection), and hyper's
    /// shutdown leaves the socket open.
    letting_go: Rc<Cell<bool>>,
    gate: Option<RequestGate>,
}

/// How much a read into `pending` asks for.
const READ_AHEAD: usize = 8 * 1024;

/// What the gate knows of the request being handed to hyper.
struct RequestGate {
    scope: Rc<ConnectionScope>,
    limits: HeadLimits,
    /// Bytes of the current request hyper may still read (its body may not have come yet).
    released: usize,
    /// A request hyper frames itself was seen: everything goes through from now on.
    unframed: bool,
}

impl std::fmt::Debug for RequestGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestGate").field("released", &self.released).field("unframed", &self.unframed).finish()
    }
}

impl<S> ObservedIo<S> {
    pub(crate) fn new(
        inner: S,
        prefix: Bytes,
        worker: Rc<WorkerShared>,
        flush: Option<Rc<FlushSignal>>,
        letting_go: Rc<Cell<bool>>,
    ) -> Self {
        // Without a copy: the bytes were read into a buffer of their own.
        ObservedIo { inner, pending: BytesMut::from(prefix), worker, flush, letting_go, gate: None }
    }

    /// Gates hyper's reads one complete request at a time (a connection that parks).
    pub(crate) fn gated(mut self, scope: Rc<ConnectionScope>) -> Self {
        let limits = scope.worker.park_rules().limits;
        self.gate = Some(RequestGate { scope, limits, released: 0, unframed: false });
        self
    }

    /// The stream, and the bytes read from it that hyper did not have.
    pub(crate) fn into_parts(self) -> (S, Bytes) {
        (self.inner, self.pending.freeze())
    }

    /// The first bytes of a request on a keep-alive connection: `K` becomes `R`.
    fn note_bytes(&self) {
        if self.worker.slot.state() == WorkerState::KeepAlive {
            self.worker.set_state(WorkerState::Reading);
        }
    }
}

impl<S: AsyncRead + Unpin> ObservedIo<S> {
    /// Hands hyper the next bytes of the request released to it, at most `limit`.
    fn hand_over(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>, limit: usize) -> Poll<io::Result<usize>> {
        if !self.pending.is_empty() {
            let n = self.pending.len().min(buf.remaining()).min(limit);
            buf.put_slice(&self.pending[..n]);
            self.pending.advance(n);
            return Poll::Ready(Ok(n));
        }
        let mut limited = buf.take(limit);
        let result = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        // SAFETY: the inner read initialised and filled `n` bytes of `buf`'s unfilled part.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        if n > 0 {
            self.note_bytes();
        }
        result.map_ok(|()| n)
    }

    fn poll_read_gated(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let gate = self.gate.as_mut().expect("gated");
            if gate.unframed {
                return self.hand_over(cx, buf, usize::MAX).map_ok(drop);
            }
            if gate.released > 0 {
                let released = gate.released;
                let n = ready!(self.hand_over(cx, buf, released))?;
                let gate = self.gate.as_mut().expect("gated");
                gate.released = if n == 0 { 0 } else { released - n };
                return Poll::Ready(Ok(()));
            }
            // Between two requests: release the next one once it is complete.
            if !self.pending.is_empty() {
                match readiness(&self.pending, gate.limits) {
                    Readiness::Ready { len: Some(len) } => {
                        gate.released = len;
                        continue;
                    }
                    Readiness::Ready { len: None } => {
                        gate.unframed = true;
                        continue;
                    }
                    Readiness::Waiting(_) => {}
                }
            }
            // Not complete yet: read what the socket has, after what came before.
            self.pending.reserve(READ_AHEAD);
            let mut read = ReadBuf::uninit(self.pending.spare_capacity_mut());
            let start = read.filled().as_ptr();
            let result = Pin::new(&mut self.inner).poll_read(cx, &mut read);
            // The stream must have filled our buffer, not swapped in one of its own (a safe
            // `AsyncRead` may): only then do the filled bytes lie in `pending`'s spare capacity.
            assert_eq!(start, read.filled().as_ptr(), "a read replaced the buffer it was given");
            let n = read.filled().len();
            match result {
                Poll::Ready(Ok(())) if n == 0 => {
                    if self.pending.is_empty() {
                        return Poll::Ready(Ok(())); // the client is gone: hyper sees the end
                    }
                    // A request cut short: hyper answers what there is.
                    self.gate.as_mut().expect("gated").unframed = true;
                }
                Poll::Ready(Ok(())) => {
                    // SAFETY: the read initialised `n` bytes of the spare capacity (the same
                    // buffer, checked above).
                    unsafe { self.pending.set_len(self.pending.len() + n) };
                    self.note_bytes();
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    // Part of a request, and nothing more for now: wait parked, not here.
                    let scope = &self.gate.as_ref().expect("gated").scope;
                    if !self.pending.is_empty() && scope.can_park() {
                        scope.let_go();
                        scope.went_idle.notify_one();
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ObservedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.letting_go.get() {
            // No waker is needed: the connection is being let go, which wakes its task.
            return Poll::Pending;
        }
        if self.gate.is_some() {
            return self.poll_read_gated(cx, buf);
        }
        self.hand_over(cx, buf, usize::MAX).map_ok(drop)
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
