//! A preforking HTTP server with the options and handler contract of Perl's
//! `POE::Component::Server::SimpleHTTP::PreFork`, built on hyper.
//!
//! The parent binds one listening socket, creates the scoreboard, and forks worker processes
//! that share the socket; it keeps between `min_spare_servers` and `max_spare_servers` idle
//! workers, never more than `max_clients`. Each worker runs the `fork_handlers` once, then
//! serves one connection at a time, dispatching each request to the first handler whose DIR
//! regex matches the path.
//!
//! ```no_run
//! use simplehttp_prefork::{Handler, Response, Server};
//!
//! let server = Server::builder()
//!     .address("127.0.0.1".parse().unwrap())
//!     .port(8080)
//!     .handler("^/hello", Handler::new(|request, _context| {
//!         Response::new(format!("Hello, {}!\n", request.uri()).into())
//!     }))
//!     .start_servers(4)
//!     .min_spare_servers(2)
//!     .max_spare_servers(6)
//!     .max_clients(32)
//!     .fork_handler(|| {
//!         // open this worker's database connection, seed its RNG, ...
//!         Ok(())
//!     })
//!     .build()?;
//! let bound = server.bind()?;
//! bound.run_with(|started| println!("listening on {}", started.url()))?;
//! # Ok::<(), simplehttp_prefork::ServerError>(())
//! ```
//!
//! The building blocks are re-exported: [`scoreboard`], [`supervisor`], [`http_worker`].

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
