//! The handler contract: what a handler receives and what it may answer.
//!
//! As in SimpleHTTP, a handler gets the request (URI made absolute with the server's hostname
//! and port), the DIR pattern that matched, and the connection's addresses. It answers with a
//! response ([`Reply::Done`]) or closes the connection without one ([`Reply::Close`]). A
//! classic worker serves one connection at a time, so a blocking handler is fine: that is
//! what a preforking server is for.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;

/// A request as handlers see it: the whole body is read before the handler runs.
pub type Request = http::Request<Bytes>;

/// A response a handler returns.
pub type Response = http::Response<Bytes>;

/// What a handler decided.
#[derive(Debug)]
pub enum Reply {
    /// Send this response (SimpleHTTP's DONE).
    Done(Response),
    /// Close the connection without a response (SimpleHTTP's CLOSE).
    Close,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply::Done(response)
    }
}

/// The connection a request arrived on (SimpleHTTP's `$response->connection`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub remote_ip: IpAddr,
    pub remote_port: u16,
    pub local_ip: IpAddr,
    pub local_port: u16,
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
            ssl: false,
            ssl_cipher: None,
            id,
        }
    }
}

impl Default for ConnectionInfo {
    fn default() -> Self {
        let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        ConnectionInfo::tcp(any, any, 0)
    }
}

/// Everything besides the request that a handler is given.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// The DIR pattern that matched (SimpleHTTP's ARG2).
    pub dir: Rc<str>,
    pub connection: Rc<ConnectionInfo>,
}

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Reply>>>;

/// A request handler, plain or async. Cheap to clone.
///
/// Handlers need not be `Send` or `Sync`: each worker process runs them on one thread, which
/// is the point of a preforking server for code that is not thread-safe.
#[derive(Clone)]
pub struct Handler(Rc<dyn Fn(Request, RequestContext) -> HandlerFuture>);

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
        Handler(Rc::new(move |request, context| {
            let f = Rc::clone(&f);
            // Run the handler when the future is first polled, inside the panic guard.
            Box::pin(async move { f(request, context).into() })
        }))
    }

    /// An async handler.
    pub fn new_async<F, Fut, R>(f: F) -> Handler
    where
        F: Fn(Request, RequestContext) -> Fut + 'static,
        Fut: Future<Output = R> + 'static,
        R: Into<Reply>,
    {
        Handler(Rc::new(move |request, context| {
            let future = f(request, context);
            Box::pin(async move { future.await.into() })
        }))
    }

    /// Starts the handler on a request.
    pub fn call(&self, request: Request, context: RequestContext) -> HandlerFuture {
        (self.0)(request, context)
    }
}
