//! New handlers for the next generation (SimpleHTTP's SETHANDLERS and SETFORKHANDLERS, done
//! better): a hook the parent runs on HUP, before it forks the new generation, so that every new
//! worker serves with them, while the old generation finishes with its own, and no request
//! fails. (In Perl they never reached workers forked already.)

use prefork_http_worker::{Handler, Router, WorkerInfo};

use crate::server::{ForkHandler, ForkHandlerError, Server};

/// What a reload hook gives the next generation: its handlers, in order (they replace all of
/// the current ones), and, if given, its fork handlers (else the current ones run again); or a
/// whole newly built [`Server`] ([`from_server`](Self::from_server)), settings included.
///
/// ```no_run
/// use simplehttp_prefork::{Handler, Reloaded, Response, Server};
///
/// let server = Server::builder()
///     .handler("^/", Handler::new(|_, _| Response::new("version 1\n".into())))
///     .on_reload(|| {
///         // Re-read templates, configuration, routes... in the parent, on HUP.
///         Ok(Reloaded::new().handler("^/", Handler::new(|_, _| Response::new("version 2\n".into()))))
///     })
///     .build()?;
/// # Ok::<(), simplehttp_prefork::ServerError>(())
/// ```
#[derive(Default)]
pub struct Reloaded {
    pub(crate) handlers: Vec<(String, Handler)>,
    pub(crate) service: Option<Handler>,
    pub(crate) fork_handlers: Option<Vec<ForkHandler>>,
    pub(crate) server: Option<Box<Server>>,
}

impl std::fmt::Debug for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dirs: Vec<&str> = self.handlers.iter().map(|(dir, _)| dir.as_str()).collect();
        f.debug_struct("Reloaded").field("handlers", &dirs).finish_non_exhaustive()
    }
}

impl Reloaded {
    /// No handlers yet (every request would get `404`).
    pub fn new() -> Reloaded {
        Reloaded::default()
    }

    /// The next generation as `server` describes it (built again from a configuration file
    /// read again, say): its handlers and service, its fork handlers if it has any (else the
    /// current ones run again), and its pool, recycling and worker settings. What needs a new
    /// listening socket or a new process (the address, the TLS files, the user and group, the
    /// pid file, `defer_accept`, `max_clients`) keeps its running value and is logged as
    /// needing a restart. Handlers added to the result are tried after the server's.
    pub fn from_server(server: Server) -> Reloaded {
        Reloaded { server: Some(Box::new(server)), ..Reloaded::default() }
    }

    /// Adds a handler after the others (SimpleHTTP's DIR and handler).
    pub fn handler(mut self, dir: impl Into<String>, handler: Handler) -> Self {
        self.handlers.push((dir.into(), handler));
        self
    }

    /// A `tower::Service` answers what no DIR handler matches, as
    /// [`ServerBuilder::service`](crate::ServerBuilder::service) does at start.
    pub fn service<S, ResBody>(mut self, service: S) -> Self
    where
        S: tower_service::Service<http::Request<prefork_http_worker::RequestBody>, Response = http::Response<ResBody>>
            + Clone
            + 'static,
        S::Error: std::fmt::Display,
        S::Future: 'static,
        ResBody: http_body::Body<Data = bytes::Bytes> + 'static,
        ResBody::Error: std::fmt::Display,
    {
        self.service = Some(Handler::from_service(service));
        self
    }

    /// Replaces the fork handlers (the first call drops the current ones; later calls add).
    pub fn fork_handler(mut self, handler: impl FnMut(&WorkerInfo) -> Result<(), ForkHandlerError> + 'static) -> Self {
        self.fork_handlers.get_or_insert_with(Vec::new).push(Box::new(handler));
        self
    }

    /// The router for these handlers, or why a DIR is no regular expression.
    pub(crate) fn router(&self) -> Result<Router, prefork_http_worker::BadDir> {
        let mut router = self.server.as_ref().map(|server| server.router.clone()).unwrap_or_default();
        // The service comes last: it answers whatever the DIRs leave (an empty DIR matches all).
        for (dir, handler) in &self.handlers {
            router.add(dir, handler.clone())?;
        }
        if let Some(service) = &self.service {
            router.add("", service.clone())?;
        }
        Ok(router)
    }
}

/// Builds the next generation's handlers; an error abandons the reload.
pub(crate) type ReloadHook = Box<dyn FnMut() -> Result<Reloaded, ForkHandlerError>>;
