#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod absolute_uri;
mod accept;
mod body;
mod classic;
mod config;
mod connection;
mod connection_scope;
mod control;
mod handler;
mod handoff;
mod head;
mod hooks;
mod in_flight;
mod io;
mod lazy_io;
mod parked;
mod parking;
mod pause;
mod preface;
mod probe;
mod recycling;
mod request_body;
mod router;
mod service;
mod shared;
mod status;
mod stop;
mod tls;
mod tower_handler;
mod transport;
mod worker;

pub use config::{WorkerConfig, loopback_networks};
pub use control::{
    ControlError, Shutdown, WorkerInfo, enter_worker, pause_server, resume_server, retire_this_worker, shutdown_server,
    worker_info,
};
pub use handler::{
    AlreadyAnswered, CloseConnection, CloseHandlerToken, ConnectionInfo, Handler, HandlerFuture, Reply, Request,
    RequestContext, Responder, Response, StreamClosed, StreamItem, StreamSender, StreamingResponse,
};
// The hand-off queue is this crate's own mechanism between its workers, public only because
// `Listener` makes it: not part of the stable API.
#[doc(hidden)]
pub use handoff::HandoffQueue;
pub use hooks::{AccessLogFormat, ErrorHook, Hooks, Log2Hook, LogHook};
pub use request_body::{BodyTooSlow, RequestBody};
pub use router::{BadDir, Router};
pub use tls::{TlsError, TlsFiles, TlsSettings};
pub use transport::{DEFAULT_BACKLOG, ListenAddress, Listener};
pub use worker::{HttpWorker, PoolLink};

/// The error of a request body a handler streams (any error, `Send`, as tower and axum take).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a worker could not serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A system call failed.
    #[error("{what}: {errno}")]
    Sys {
        /// What the worker was doing.
        what: &'static str,
        /// The error the system call returned.
        errno: nix::errno::Errno,
    },
    /// An I/O operation failed.
    #[error("{what}")]
    Io {
        /// What the worker was doing.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
