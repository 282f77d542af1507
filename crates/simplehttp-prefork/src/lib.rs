#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod builder;
mod credentials;
pub mod log_file;
mod pid_file;
mod reload;
mod server;
mod upgrade;

pub use builder::ServerBuilder;
pub use pid_file::{oldbin_path, read_pid_file};
pub use prefork_http_worker as http_worker;
pub use prefork_http_worker::{
    AccessLogFormat, AlreadyAnswered, CloseConnection, CloseHandlerToken, ConnectionInfo, ControlError, Handler,
    ListenAddress, Reply, Request, RequestBody, RequestContext, Responder, Response, Shutdown, StreamClosed,
    StreamItem, StreamSender, StreamingResponse, WorkerInfo, pause_server, resume_server, retire_this_worker,
    shutdown_server, worker_info,
};
pub use prefork_scoreboard as scoreboard;
pub use prefork_supervisor as supervisor;
pub use prefork_supervisor::{SpawnRamp, StopReport};
pub use reload::Reloaded;
pub use server::{BoundServer, ForkHandlerError, Server, ServerError, Started};
/// Runs a future on the worker's thread, beside the request (handlers need not be `Send`).
pub use tokio::task::spawn_local;
pub use upgrade::this_command;
/// What handlers build responses with, re-exported so that one dependency is enough.
pub use {bytes, http};
