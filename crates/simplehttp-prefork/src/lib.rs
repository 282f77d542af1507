#![doc = include_str!("../README.md")]

mod builder;
pub mod log_file;
mod pid_file;
mod server;

pub use builder::ServerBuilder;
pub use pid_file::read_pid_file;
pub use prefork_http_worker as http_worker;
pub use prefork_http_worker::{
    AccessLogFormat, AlreadyAnswered, CloseConnection, ConnectionInfo, Handler, ListenAddress, Reply, Request,
    RequestContext, Responder, Response, StreamClosed, StreamItem, StreamSender, StreamingResponse,
};
pub use prefork_scoreboard as scoreboard;
pub use prefork_supervisor as supervisor;
pub use prefork_supervisor::{SpawnRamp, StopReport};
pub use server::{BoundServer, ForkHandlerError, Server, ServerError, Started};
