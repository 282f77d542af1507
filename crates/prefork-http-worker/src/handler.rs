//! The handler contract: what a handler receives and the ways it may answer.
//!
//! As in SimpleHTTP, a handler gets the request (URI made absolute with the server's hostname
//! and port, body read in full), the DIR pattern that matched, and the connection. It answers
//! with a whole response ([`Reply::Done`], SimpleHTTP's DONE), a streamed one
//! ([`Reply::Stream`]: headers, then chunks over time, chunked encoding; SimpleHTTP's STREAM),
//! by closing the connection without a response ([`Reply::Close`], CLOSE; on HTTP/2, where
//! the connection carries other streams, only this request's stream is reset), or later
//! ([`Reply::later`]: a [`Responder`] answers from elsewhere, once; a second answer is an
//! [`AlreadyAnswered`] error, never a crash). A classic worker serves one connection at a time,
//! so a blocking handler is fine: that is what a preforking server is for.

use std::cell::RefCell;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};

use crate::request_body::RequestBody;

/// A request as handlers see it: the whole body is read before the handler runs.
pub type Request = http::Request<Bytes>;

/// A complete response a handler returns.
pub type Response = http::Response<Bytes>;

/// A chunk of a streamed response body, or `Err(CloseConnection)`: stop here and close the
/// connection without ending the body (SimpleHTTP's CLOSE during a stream).
pub type StreamItem = Result<Bytes, CloseConnection>;

/// Ends a stream by closing the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the handler closed the connection")]
pub struct CloseConnection;

/// A second answer to the same request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this request was already answered")]
pub struct AlreadyAnswered;

/// The client is gone, or the stream was already ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the stream is closed")]
pub struct StreamClosed;

/// What a handler decided.
pub enum Reply {
    /// Send this response.
    Done(Response),
    /// Send these headers, then the chunks as they come.
    Stream(StreamingResponse),
    /// Close the connection without a response.
    Close,
    /// The answer comes through a [`Responder`] (see [`Reply::later`]).
    Later(oneshot::Receiver<Reply>),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Done(response) => f.debug_tuple("Done").field(response).finish(),
            Reply::Stream(stream) => f.debug_tuple("Stream").field(&stream.head.status).finish(),
            Reply::Close => f.write_str("Close"),
            Reply::Later(_) => f.write_str("Later"),
        }
    }
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply::Done(response)
    }
}

impl Reply {
    /// An answer to be given later, through the returned [`Responder`] (from a task the handler
    /// spawned with `tokio::task::spawn_local`, say). If every clone of the responder is dropped
    /// without answering, the client gets `500 Internal Server Error`.
    ///
    /// # Examples
    ///
    /// A handler that returns at once and answers from a task it spawned:
    ///
    /// ```rust
    /// use std::time::Duration;
    ///
    /// use prefork_http_worker::{Handler, Reply, Request, RequestContext, Response};
    ///
    /// fn delayed(_request: Request, _context: RequestContext) -> Reply {
    ///     let (reply, responder) = Reply::later();
    ///     tokio::task::spawn_local(async move {
    ///         tokio::time::sleep(Duration::from_millis(100)).await;
    ///         // An error here means the request was answered already.
    ///         let _ = responder.done(Response::new("answered later\n".into()));
    ///     });
    ///     reply
    /// }
    ///
    /// let handler = Handler::new(delayed);
    /// ```
    pub fn later() -> (Reply, Responder) {
        let (tx, rx) = oneshot::channel();
        (Reply::Later(rx), Responder(Rc::new(RefCell::new(Some(tx)))))
    }
}

/// Answers a request once (SimpleHTTP's response object, on which DONE, STREAM or CLOSE is
/// posted). Cheap to clone; every clone answers the same request.
///
/// # Examples
///
/// ```rust
/// use prefork_http_worker::{AlreadyAnswered, Reply, Response};
///
/// let (_reply, responder) = Reply::later();
/// let twin = responder.clone();
/// assert!(!responder.is_closed());
/// responder.done(Response::new("first answer\n".into()))?;
/// // Any clone answers the same request, once: a second answer is an error value.
/// assert_eq!(twin.done(Response::new("second answer\n".into())), Err(AlreadyAnswered));
/// assert_eq!(twin.close(), Err(AlreadyAnswered));
/// assert!(twin.is_closed());
/// # Ok::<(), AlreadyAnswered>(())
/// ```
#[derive(Clone, Debug)]
pub struct Responder(Rc<RefCell<Option<oneshot::Sender<Reply>>>>);

impl Responder {
    fn answer(&self, reply: Reply) -> Result<(), AlreadyAnswered> {
        let sender = self.0.borrow_mut().take().ok_or(AlreadyAnswered)?;
        // The request may have been abandoned (client gone): that is not the handler's error.
        let _ = sender.send(reply);
        Ok(())
    }

    /// DONE: sends this response.
    pub fn done(&self, response: Response) -> Result<(), AlreadyAnswered> {
        self.answer(Reply::Done(response))
    }

    /// STREAM: sends these headers now; the chunks follow through the returned sender.
    pub fn stream(&self, head: http::response::Parts) -> Result<StreamSender, AlreadyAnswered> {
        let (stream, sender) = StreamingResponse::channel(head);
        self.answer(Reply::Stream(stream))?;
        Ok(sender)
    }

    /// CLOSE: closes the connection without a response.
    pub fn close(&self) -> Result<(), AlreadyAnswered> {
        self.answer(Reply::Close)
    }

    /// Whether an answer can no longer reach anyone (SimpleHTTP's `$response->connection->dead`):
    /// the request was abandoned (the client went away, the request ran past its time budget,
    /// the worker stopped), or it has been answered already.
    pub fn is_closed(&self) -> bool {
        self.0.borrow().as_ref().is_none_or(oneshot::Sender::is_closed)
    }
}

/// A response whose body is sent in chunks as they are produced (chunked encoding on
/// HTTP/1.1). No `Content-Length` is added.
///
/// # Examples
///
/// A handler that sends the headers at once and a chunk every second, from a task it spawned:
///
/// ```rust
/// use std::time::Duration;
///
/// use prefork_http_worker::{Handler, Reply, Request, RequestContext, StreamingResponse};
///
/// fn ticks(_request: Request, _context: RequestContext) -> Reply {
///     let head = http::Response::builder()
///         .header("content-type", "text/plain")
///         .body(())
///         .expect("a valid head")
///         .into_parts()
///         .0;
///     let (stream, sender) = StreamingResponse::channel(head);
///     tokio::task::spawn_local(async move {
///         for i in 1..=3 {
///             if sender.send(format!("tick {i}\n")).await.is_err() {
///                 return; // The client went away.
///             }
///             tokio::time::sleep(Duration::from_secs(1)).await;
///         }
///         sender.finish(); // Ends the body (as dropping the sender does).
///     });
///     Reply::Stream(stream)
/// }
///
/// let handler = Handler::new(ticks);
/// ```
pub struct StreamingResponse {
    pub(crate) head: http::response::Parts,
    pub(crate) body: Pin<Box<dyn Stream<Item = StreamItem>>>,
    /// The body's exact length, if known up front: sent as `Content-Length` (else chunked).
    pub(crate) length: Option<u64>,
}

impl std::fmt::Debug for StreamingResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingResponse").field("head", &self.head).finish_non_exhaustive()
    }
}

impl StreamingResponse {
    /// Headers, then the items of `body` as it yields them; `Err(CloseConnection)` ends the
    /// stream by closing the connection.
    pub fn new(head: http::response::Parts, body: impl Stream<Item = StreamItem> + 'static) -> StreamingResponse {
        StreamingResponse { head, body: Box::pin(body), length: None }
    }

    /// Says the body's exact length up front: the response carries it as `Content-Length`
    /// (rather than being chunked), and a body that turns out shorter or longer closes the
    /// connection, as the client could not otherwise tell.
    pub fn with_length(mut self, length: Option<u64>) -> StreamingResponse {
        self.length = length;
        self
    }

    /// Headers, then whatever the returned sender sends. Dropping or finishing the sender ends
    /// the body; [`StreamSender::close`] closes the connection instead.
    pub fn channel(head: http::response::Parts) -> (StreamingResponse, StreamSender) {
        // A few chunks of slack; a slow client slows the sender down (backpressure).
        let (tx, mut rx) = mpsc::channel(8);
        let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (StreamingResponse::new(head, body), StreamSender(tx))
    }
}

/// Sends the chunks of a [`StreamingResponse::channel`].
///
/// # Examples
///
/// Streaming through a [`Responder`], then closing the connection instead of ending the body
/// (SimpleHTTP's CLOSE during a stream):
///
/// ```rust
/// use prefork_http_worker::{Handler, Reply, Request, RequestContext};
///
/// fn stream(_request: Request, _context: RequestContext) -> Reply {
///     let head = http::Response::new(()).into_parts().0;
///     let (reply, responder) = Reply::later();
///     tokio::task::spawn_local(async move {
///         let Ok(sender) = responder.stream(head) else { return };
///         for i in 1..=3 {
///             if sender.is_closed() || sender.send(format!("chunk {i}\n")).await.is_err() {
///                 return;
///             }
///         }
///         let _ = sender.close().await;
///     });
///     reply
/// }
///
/// let handler = Handler::new(stream);
/// ```
#[derive(Debug)]
pub struct StreamSender(mpsc::Sender<StreamItem>);

impl StreamSender {
    /// Sends one chunk (waits while the client is slower than the handler).
    pub async fn send(&self, chunk: impl Into<Bytes>) -> Result<(), StreamClosed> {
        self.0.send(Ok(chunk.into())).await.map_err(|_| StreamClosed)
    }

    /// Ends the body normally (as dropping the sender does).
    pub fn finish(self) {}

    /// Ends the stream by closing the connection (SimpleHTTP's CLOSE).
    pub async fn close(self) -> Result<(), StreamClosed> {
        self.0.send(Err(CloseConnection)).await.map_err(|_| StreamClosed)
    }

    /// Whether the body is no longer read: the client went away (or the response was cut),
    /// so further chunks would go nowhere.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// The connection a request arrived on (SimpleHTTP's `$response->connection`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The client's address (unspecified on a unix socket).
    pub remote_ip: IpAddr,
    /// The client's port (0 on a unix socket).
    pub remote_port: u16,
    /// The address the connection arrived at (unspecified on a unix socket).
    pub local_ip: IpAddr,
    /// The port the connection arrived at (0 on a unix socket).
    pub local_port: u16,
    /// The connection came through a unix domain socket.
    pub unix_socket: bool,
    /// The connection is TLS.
    pub ssl: bool,
    /// The negotiated TLS cipher suite, when `ssl`.
    pub ssl_cipher: Option<String>,
    /// Connection number within this worker.
    pub id: u64,
}

impl ConnectionInfo {
    /// Info for a plain TCP connection.
    pub fn tcp(remote: SocketAddr, local: SocketAddr, id: u64) -> ConnectionInfo {
        ConnectionInfo {
            remote_ip: remote.ip(),
            remote_port: remote.port(),
            local_ip: local.ip(),
            local_port: local.port(),
            unix_socket: false,
            ssl: false,
            ssl_cipher: None,
            id,
        }
    }

    /// The client's address and port (SimpleHTTP's `remote_ip` and `remote_port`); `None` on
    /// a unix socket.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        (!self.unix_socket).then(|| SocketAddr::new(self.remote_ip, self.remote_port))
    }

    /// The server's address and port this connection arrived on; `None` on a unix socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        (!self.unix_socket).then(|| SocketAddr::new(self.local_ip, self.local_port))
    }

    /// Info for a unix-socket connection.
    pub fn unix(id: u64) -> ConnectionInfo {
        ConnectionInfo { unix_socket: true, ..ConnectionInfo::tcp(unspecified(), unspecified(), id) }
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
}

impl Default for ConnectionInfo {
    fn default() -> Self {
        ConnectionInfo::tcp(unspecified(), unspecified(), 0)
    }
}

/// Callbacks run when a connection closes, by the token that removes them.
pub(crate) type CloseHandlers = Rc<RefCell<Vec<(u64, Box<dyn FnOnce()>)>>>;

/// Names a close handler, to remove it ([`RequestContext::remove_close_handler`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseHandlerToken(u64);

/// Everything besides the request that a handler is given.
#[derive(Clone)]
pub struct RequestContext {
    /// The DIR pattern that matched (SimpleHTTP's ARG2).
    pub dir: Rc<str>,
    /// The connection the request arrived on.
    pub connection: Rc<ConnectionInfo>,
    pub(crate) close_handlers: CloseHandlers,
    pub(crate) next_close_token: Rc<std::cell::Cell<u64>>,
}

impl std::fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestContext").field("dir", &self.dir).field("connection", &self.connection).finish()
    }
}

impl RequestContext {
    /// Runs `handler` when this request's connection closes, whoever closes it (SimpleHTTP's
    /// SETCLOSEHANDLER). The token removes it again.
    pub fn on_close(&self, handler: impl FnOnce() + 'static) -> CloseHandlerToken {
        let token = self.next_close_token.get() + 1;
        self.next_close_token.set(token);
        self.close_handlers.borrow_mut().push((token, Box::new(handler)));
        CloseHandlerToken(token)
    }

    /// Removes a close handler before it runs (SimpleHTTP's SETCLOSEHANDLER with no event).
    /// True if it was still registered.
    pub fn remove_close_handler(&self, token: CloseHandlerToken) -> bool {
        let mut handlers = self.close_handlers.borrow_mut();
        let before = handlers.len();
        handlers.retain(|(t, _)| *t != token.0);
        handlers.len() != before
    }

    /// The worker serving this request (SimpleHTTP/PreFork's ISCHILD and friends); `None`
    /// only for a worker run without [`enter_worker`](crate::enter_worker).
    pub fn worker(&self) -> Option<crate::WorkerInfo> {
        crate::worker_info()
    }
}

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Reply>>>;

/// A request handler, plain or async. Cheap to clone.
///
/// Handlers need not be `Send` or `Sync`: each worker process runs them on one thread, which
/// is the point of a preforking server for code that is not thread-safe.
///
/// # Examples
///
/// ```rust
/// use std::time::Duration;
///
/// use prefork_http_worker::{Handler, Response, Router};
///
/// // A plain handler: it may block, and returns a response (or any `Into<Reply>`).
/// let hello = Handler::new(|request, context| {
///     Response::new(format!("{} matched {}\n", request.uri().path(), context.dir).into())
/// });
///
/// // An async handler: it may await timers, I/O or tasks it spawned.
/// let slow = Handler::new_async(|_request, _context| async {
///     tokio::time::sleep(Duration::from_millis(100)).await;
///     Response::new("done\n".into())
/// });
///
/// let mut router = Router::new();
/// router.add("^/hello", hello)?;
/// router.add("^/slow", slow)?;
/// # Ok::<(), prefork_http_worker::BadDir>(())
/// ```
#[derive(Clone)]
pub struct Handler(HandlerKind);

/// How a handler takes its request's body.
#[derive(Clone)]
pub(crate) enum HandlerKind {
    /// Read whole first (SimpleHTTP's contract).
    Whole(Rc<dyn Fn(Request, RequestContext) -> HandlerFuture>),
    /// Streamed to the handler as it comes.
    Streaming(Rc<dyn Fn(http::Request<RequestBody>, RequestContext) -> HandlerFuture>),
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handler")
    }
}

impl Handler {
    /// A plain function handler. It may block: the worker serves one connection at a time.
    pub fn new<F, R>(f: F) -> Handler
    where
        F: Fn(Request, RequestContext) -> R + 'static,
        R: Into<Reply>,
    {
        let f = Rc::new(f);
        Handler(HandlerKind::Whole(Rc::new(move |request, context| {
            let f = Rc::clone(&f);
            // Run the handler when the future is first polled, inside the panic guard.
            Box::pin(async move { f(request, context).into() })
        })))
    }

    /// An async handler.
    pub fn new_async<F, Fut, R>(f: F) -> Handler
    where
        F: Fn(Request, RequestContext) -> Fut + 'static,
        Fut: Future<Output = R> + 'static,
        R: Into<Reply>,
    {
        Handler(HandlerKind::Whole(Rc::new(move |request, context| {
            let future = f(request, context);
            Box::pin(async move { future.await.into() })
        })))
    }

    /// An async handler that reads the request body as the client sends it, rather than
    /// getting it whole: an upload written to disk as it arrives, say. The worker's body limits
    /// hold all the same: a body past `max_body_size`, or slower than the time rules, ends in an
    /// error, and the client gets `413` or `408` whatever the handler answers.
    pub fn new_streaming<F, Fut, R>(f: F) -> Handler
    where
        F: Fn(http::Request<RequestBody>, RequestContext) -> Fut + 'static,
        Fut: Future<Output = R> + 'static,
        R: Into<Reply>,
    {
        Handler(HandlerKind::Streaming(Rc::new(move |request, context| {
            let future = f(request, context);
            Box::pin(async move { future.await.into() })
        })))
    }

    /// Starts the handler on a request (a streaming handler gets the body whole, as a
    /// [`RequestBody::whole`]).
    pub fn call(&self, request: Request, context: RequestContext) -> HandlerFuture {
        match &self.0 {
            HandlerKind::Whole(f) => f(request, context),
            HandlerKind::Streaming(f) => f(request.map(RequestBody::whole), context),
        }
    }

    pub(crate) fn kind(&self) -> &HandlerKind {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_responder_answers_once_and_reports_a_second_answer_as_an_error() {
        let (reply, responder) = Reply::later();
        let Reply::Later(mut rx) = reply else { panic!() };
        let twin = responder.clone();
        assert!(responder.done(Response::new(Bytes::from_static(b"first"))).is_ok());
        assert_eq!(twin.done(Response::new(Bytes::from_static(b"second"))), Err(AlreadyAnswered));
        assert_eq!(twin.close(), Err(AlreadyAnswered));
        assert!(twin.stream(http::Response::new(()).into_parts().0).is_err());
        match rx.try_recv() {
            Ok(Reply::Done(response)) => assert_eq!(response.body(), "first"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_dropped_responder_is_seen_by_the_waiting_side() {
        let (reply, responder) = Reply::later();
        let Reply::Later(mut rx) = reply else { panic!() };
        drop(responder);
        assert!(rx.try_recv().is_err());
    }
}
