//! Request handling in one preforked worker: accept, serve HTTP/1.1 with hyper, keep the
//! scoreboard slot true.
//!
//! A worker is a process forked by the supervisor. [`HttpWorker::run`] builds a
//! `current_thread` tokio runtime (after the fork: the parent never touches tokio), then
//! loops: wait for a connection on the shared listener or the hand-off queue, serve it while
//! its requests come complete, wait again. One request at a time is Apache prefork's model: a
//! handler may block, and a busy worker leaves new connections to its idle siblings.
//!
//! A connection still sending its request, or idle between keep-alive requests, holds no
//! handler place: the worker's parking thread holds it (header timeout, body minimum rate,
//! a bounded number per worker) and, once its request is complete, puts it in the hand-off
//! queue that every worker watches next to the listener, so whichever worker is idle answers
//! it. A worker that leaves passes on what it holds the same way.
//!
//! Requests are dispatched SimpleHTTP's way ([`Router`]): the request path is matched against
//! each DIR regex in order, unanchored, and the first match's [`Handler`] answers; no match
//! gives `404 Not Found`. The slot shows `_` idle, `R` reading, `W` writing, `K` keep-alive,
//! `C` closing, `G`/`I` stopping; requests and body bytes are counted as they finish.
//!
//! This crate knows the scoreboard, not the supervisor: it is handed its slot writer.

mod accept;
mod body;
mod classic;
mod config;
mod connection;
mod handler;
mod handoff;
mod head;
mod hooks;
mod in_flight;
mod io;
mod lazy_io;
mod parked;
mod parking;
mod preface;
mod router;
mod service;
mod shared;
mod status;
mod stop;
mod tls;
mod transport;
mod worker;

pub use config::{WorkerConfig, loopback_networks};
pub use handler::{
    AlreadyAnswered, CloseConnection, ConnectionInfo, Handler, HandlerFuture, Reply, Request, RequestContext,
    Responder, Response, StreamClosed, StreamItem, StreamSender, StreamingResponse,
};
pub use handoff::HandoffQueue;
pub use hooks::{AccessLogFormat, ErrorHook, Hooks, Log2Hook, LogHook};
pub use router::{BadDir, Router};
pub use tls::{TlsError, TlsFiles, TlsSettings};
pub use transport::{DEFAULT_BACKLOG, ListenAddress, Listener};
pub use worker::{HttpWorker, PoolLink};

/// Why a worker could not serve.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{what}: {errno}")]
    Sys { what: &'static str, errno: nix::errno::Errno },
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}
