//! A validated server: bind its listening socket, then fork and supervise the pool.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::rc::Rc;

use prefork_http_worker::{
    BadDir, DEFAULT_BACKLOG, HttpWorker, ListenAddress, Listener, PoolLink, Router, TlsError, WorkerConfig, WorkerInfo,
};
use prefork_supervisor::{
    ConfigError, PoolConfig, StopReport, Supervisor, SupervisorConfig, SupervisorError, WorkerExit,
};

use crate::builder::ServerBuilder;
use crate::credentials::Credentials;
use crate::log_file;
use crate::pid_file::PidFile;
use crate::upgrade::{self, UpgradeCommand, inherited_listener};

/// What a fork handler may fail with; the worker then exits as a boot failure.
pub type ForkHandlerError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) type ForkHandler = Box<dyn FnMut(&WorkerInfo) -> Result<(), ForkHandlerError>>;
/// A fork handler that several generations run (a reload that gives none keeps them).
type SharedForkHandler = Rc<RefCell<ForkHandler>>;
pub(crate) type SetupHandler = Box<dyn FnOnce(&ListenAddress)>;

/// Why a server could not be built, bound or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// An option has an impossible value (the message says which).
    #[error("{0}")]
    InvalidOption(String),
    /// The pool or supervisor settings cannot work together.
    #[error(transparent)]
    Pool(#[from] ConfigError),
    /// A handler's DIR is not a valid regular expression.
    #[error(transparent)]
    BadDir(#[from] BadDir),
    /// The TLS key or certificates could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address (`ip:port`, or `unix:` and a path).
        address: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The socket passed by socket activation (`LISTEN_FDS`) cannot be served.
    #[error("socket activation: {0}")]
    Activation(#[source] std::io::Error),
    /// The supervisor could not start or keep running.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// A log file could not be handed to the workers' user.
    #[error("log file for the workers' user")]
    LogFile {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The pid file could not be written.
    #[error("pid file {path}")]
    PidFile {
        /// The pid file's path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The pid file names a server that is still running.
    #[error("pid file {path} names process {pid}, a server that is still running")]
    AlreadyRunning {
        /// The pid file's path.
        path: PathBuf,
        /// The running server's (supervisor's) pid.
        pid: u32,
    },
}

/// Where to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A validated server, not yet listening.
pub struct Server {
    pub(crate) listen: Listen,
    pub(crate) router: Router,
    pub(crate) worker: WorkerConfig,
    pub(crate) supervisor: SupervisorConfig,
    pub(crate) pid_file: Option<PathBuf>,
    pub(crate) fork_handlers: Vec<ForkHandler>,
    pub(crate) on_reload: Option<crate::reload::ReloadHook>,
    pub(crate) setup_handler: Option<SetupHandler>,
    pub(crate) defer_accept: bool,
    pub(crate) socket_activation: bool,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) upgrade: Option<UpgradeCommand>,
    /// Where the TLS material came from (a reload compares them).
    pub(crate) tls_files: Option<prefork_http_worker::TlsFiles>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.listen)
            .field("supervisor", &self.supervisor)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Starts building a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The supervisor's settings, as checked.
    pub fn supervisor_config(&self) -> &SupervisorConfig {
        &self.supervisor
    }

    /// The workers' settings, as checked (the TLS files loaded, the pool's `request_timeout`
    /// copied in; the port is set once the socket is bound).
    pub fn worker_config(&self) -> &WorkerConfig {
        &self.worker
    }

    /// The handlers' DIRs, in the order they are tried (SimpleHTTP's GETHANDLERS).
    pub fn handlers(&self) -> Vec<String> {
        self.router.dirs().map(str::to_owned).collect()
    }

    /// The pool settings in force (after validation and adjustment).
    pub fn pool(&self) -> &PoolConfig {
        &self.supervisor.pool
    }

    /// Binds the listening socket (once, for the server's whole life), and calls the
    /// SETUPHANDLER with the address bound. First of all, refuses a pid file that names a
    /// running server: that is the clearer error when both would listen on one port.
    pub fn bind(mut self) -> Result<BoundServer, ServerError> {
        let pid_file =
            self.pid_file.take().map(|path| PidFile::check(path, &self.supervisor.scoreboard_prefix)).transpose()?;
        let bind_error = |address: String| move |source| ServerError::Bind { address, source };
        // A binary upgrade's successor takes its predecessor's socket; then systemd's, if any.
        let inherited = inherited_listener()?;
        let predecessor = inherited.as_ref().and_then(|(_, pid)| *pid);
        let activated = match inherited {
            Some((listener, pid)) => {
                tracing::info!(address = %listener.address(), predecessor = pid, "upgrade: serving the socket of the server this one succeeds");
                Some(listener)
            }
            None if self.socket_activation => activated_socket()?.inspect(|listener| {
                tracing::info!(address = %listener.address(), "serving the socket passed by the service manager (socket activation)");
            }),
            None => None,
        };
        let listener = match (activated, &self.listen) {
            (Some(listener), _) => listener,
            (None, Listen::Tcp(addr)) => {
                Listener::bind_tcp(*addr, DEFAULT_BACKLOG).map_err(bind_error(addr.to_string()))?
            }
            (None, Listen::Unix(path)) => {
                Listener::bind_unix(path, DEFAULT_BACKLOG).map_err(bind_error(format!("unix:{}", path.display())))?
            }
        };
        if self.defer_accept
            && let Err(error) = listener.set_defer_accept(self.worker.keepalive_timeout)
        {
            tracing::warn!(%error, "TCP_DEFER_ACCEPT unavailable; workers are woken for connections that send nothing");
        }
        if let Some(setup) = self.setup_handler.take() {
            setup(listener.address());
        }
        Ok(BoundServer { server: self, listener, pid_file, predecessor })
    }

    /// Binds and runs until stopped (see [`BoundServer::run`]).
    pub fn run(self) -> Result<StopReport, ServerError> {
        self.bind()?.run()
    }
}

/// Facts about a server that has just started.
#[derive(Clone, Copy, Debug)]
pub struct Started<'a> {
    /// The address listened on.
    pub address: &'a ListenAddress,
    /// Connections are TLS.
    pub tls: bool,
    /// The scoreboard segment's name (`/prefix.pid`).
    pub scoreboard_name: &'a str,
}

impl Started<'_> {
    /// `http://ADDR:PORT`, `https://ADDR:PORT` or `unix:PATH`.
    pub fn url(&self) -> String {
        match (self.address, self.tls) {
            (ListenAddress::Tcp(addr), false) => format!("http://{addr}"),
            (ListenAddress::Tcp(addr), true) => format!("https://{addr}"),
            (ListenAddress::Unix(path), _) => format!("unix:{}", path.display()),
        }
    }
}

/// A server with its listening socket bound.
#[derive(Debug)]
pub struct BoundServer {
    server: Server,
    listener: Listener,
    pid_file: Option<PidFile>,
    /// This server succeeds the one with this pid (a binary upgrade).
    predecessor: Option<u32>,
}

impl BoundServer {
    /// The address actually listened on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> &ListenAddress {
        self.listener.address()
    }

    /// Forks the pool and supervises it until SIGTERM/SIGINT (graceful) or SIGQUIT
    /// (immediate). Call from a single-threaded process: it forks.
    pub fn run(self) -> Result<StopReport, ServerError> {
        self.run_with(|_| {})
    }

    /// As [`run`](Self::run), calling `on_started` in the parent once the scoreboard exists
    /// and just before the first worker is forked (stale segments are gone by then).
    pub fn run_with(self, on_started: impl FnOnce(&Started<'_>)) -> Result<StopReport, ServerError> {
        let BoundServer { server, mut listener, pid_file, predecessor } = self;
        let running = RestartOnly::of(&server);
        let Server { router, mut worker, supervisor, fork_handlers, mut on_reload, credentials, upgrade, .. } = server;
        if let Some(credentials) = &credentials {
            log_file::hand_to(credentials.uid, credentials.gid).map_err(|source| ServerError::LogFile { source })?;
        }
        // The handlers each generation forks with, by the generation they start at: the
        // reload hook adds the next one's, in the parent, on HUP. A worker takes those of the
        // latest generation not after its own, so that a reload abandoned (the board goes back
        // to the old generation) forks the old generation's handlers again.
        let shared = |handlers: Vec<ForkHandler>| -> Vec<SharedForkHandler> {
            handlers.into_iter().map(|h| Rc::new(RefCell::new(h))).collect()
        };
        worker.port = match listener.address() {
            ListenAddress::Tcp(addr) => addr.port(),
            ListenAddress::Unix(_) => 0,
        };
        let generation_zero = Generation { router, fork_handlers: shared(fork_handlers), worker: Rc::new(worker) };
        let generations = RefCell::new(BTreeMap::from([(0, generation_zero)]));
        let generations = &generations;
        let running_worker = generations.borrow()[&0].worker.clone();
        let tls = running_worker.tls.is_some();
        let listening = &listener;
        let run_worker = move |ctx: prefork_supervisor::WorkerContext| -> WorkerExit {
            // SAFETY: right after the fork this process has one thread: nothing reads the
            // environment concurrently. (The variable is the supervisor's: see upgrade.rs.)
            unsafe { std::env::remove_var(upgrade::UPGRADE_FROM) };
            // First of all: nothing of the user's runs as root.
            if let Some(Err(error)) = credentials.as_ref().map(|c| c.assume(ctx.parent_pid)) {
                return WorkerExit::BootFailed(format!("cannot switch to the workers' user: {error}"));
            }
            if let Err(errno) = log_file::reopen_on_usr1() {
                return WorkerExit::BootFailed(format!("cannot handle SIGUSR1: {errno}"));
            }
            // A SIGUSR1 forwarded while this worker was starting was ignored: reopen anyway,
            // so a rotation just before cannot leave it writing to the rotated file.
            log_file::request_reopen();
            let info = WorkerInfo {
                slot: ctx.slot_index,
                generation: ctx.generation,
                parent_pid: ctx.parent_pid,
                pid: std::process::id(),
                is_child: true,
            };
            prefork_http_worker::enter_worker(info.clone());
            let Generation { router, fork_handlers, worker } = {
                let generations = generations.borrow();
                let (_, generation) =
                    generations.range(..=ctx.generation).next_back().expect("generation 0 is always there");
                generation.clone()
            };
            for (index, fork_handler) in fork_handlers.iter().enumerate() {
                let mut fork_handler = fork_handler.borrow_mut();
                match catch_unwind(AssertUnwindSafe(|| fork_handler(&info))) {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => return WorkerExit::BootFailed(format!("fork handler {index} failed: {error}")),
                    Err(_) => return WorkerExit::BootFailed(format!("fork handler {index} panicked")),
                }
            }
            let config = WorkerConfig { recycle: ctx.limits, ..(*worker).clone() };
            let http = HttpWorker::new(listening, router, config);
            let link = PoolLink {
                slot: ctx.slot,
                board: ctx.board,
                scoreboard_name: ctx.scoreboard_name,
                doorbell: Some(ctx.doorbell),
            };
            match http.run(link) {
                Ok(()) => WorkerExit::Finished,
                Err(error) => WorkerExit::Failed(error_chain(&error)),
            }
        };
        let mut supervisor = Supervisor::new(supervisor, run_worker)?
            .on_reopen_logs(log_file::reopen_before_workers)
            .on_started(|scoreboard_name, _board| {
                // Said at once: `status --pid-file` cannot find this server without it.
                if let Some(Err(error)) = pid_file.as_ref().map(PidFile::write) {
                    tracing::error!(%error, "could not write the pid file");
                }
                on_started(&Started { address: listening.address(), tls, scoreboard_name })
            });
        if listening.is_tcp() {
            supervisor = supervisor.watch_listen_queue(listening.as_fd());
        }
        if let Some(predecessor) = predecessor {
            supervisor = supervisor.take_over_from(predecessor);
        }
        if let Some(command) = upgrade {
            let pid_file = &pid_file;
            supervisor = supervisor.on_upgrade(
                move || {
                    // The new server writes the pid file as it starts; this one's moves aside.
                    if let Some(Err(error)) = pid_file.as_ref().map(PidFile::make_way) {
                        return Err(format!("cannot move the pid file aside: {error}"));
                    }
                    upgrade::start_successor(&command, listening.upgrade_fds()).inspect_err(|_| {
                        if let Some(pid_file) = pid_file {
                            pid_file.take_back();
                        }
                    })
                },
                move |_| {
                    if let Some(pid_file) = pid_file {
                        pid_file.take_back();
                    }
                },
            );
        }
        if let Some(hook) = on_reload.as_mut() {
            supervisor = supervisor.on_reload_with_config(move |next_generation| {
                let mut reloaded = catch_unwind(AssertUnwindSafe(&mut *hook))
                    .map_err(|_| "the reload hook panicked".to_owned())?
                    .map_err(|error| format!("the reload hook failed: {error}"))?;
                let new_router = reloaded.router().map_err(|error| error_chain(&error))?;
                let dirs: Vec<&str> = new_router.dirs().collect();
                tracing::info!(generation = next_generation, handlers = ?dirs, "reload: the new generation gets new handlers");
                let mut generations = generations.borrow_mut();
                let current = generations.values().next_back().expect("generation 0 is always there").clone();
                let mut fork_handlers = reloaded.fork_handlers.take().map(shared);
                let (worker, supervisor) = match reloaded.server.map(|server| *server) {
                    None => (current.worker, None),
                    Some(next) => {
                        running.log_differences(&RestartOnly::of(&next));
                        let Server { worker: mut next_worker, supervisor, fork_handlers: next_fork_handlers, .. } = next;
                        // The socket, and so its port and TLS, stay the running ones.
                        next_worker.port = running_worker.port;
                        next_worker.tls = running_worker.tls.clone();
                        if fork_handlers.is_none() && !next_fork_handlers.is_empty() {
                            fork_handlers = Some(shared(next_fork_handlers));
                        }
                        (Rc::new(next_worker), Some(supervisor))
                    }
                };
                let fork_handlers = fork_handlers.unwrap_or(current.fork_handlers);
                generations.insert(next_generation, Generation { router: new_router, fork_handlers, worker });
                Ok(supervisor)
            });
        }
        let result = supervisor.run();
        if result.as_ref().is_ok_and(|report| report.handed_over) {
            listener.disown_path(); // a unix socket's file is the successor's now
        }
        drop(pid_file);
        Ok(result?)
    }
}

/// What one generation of workers is forked with.
#[derive(Clone)]
struct Generation {
    router: Router,
    fork_handlers: Vec<SharedForkHandler>,
    worker: Rc<WorkerConfig>,
}

/// The settings a reload cannot change: they need a new listening socket or a new process.
#[derive(PartialEq)]
struct RestartOnly {
    listen: Listen,
    tls_files: Option<prefork_http_worker::TlsFiles>,
    credentials: Option<Credentials>,
    pid_file: Option<PathBuf>,
    defer_accept: bool,
}

impl RestartOnly {
    fn of(server: &Server) -> RestartOnly {
        RestartOnly {
            listen: server.listen.clone(),
            tls_files: server.tls_files.clone(),
            credentials: server.credentials.clone(),
            pid_file: server.pid_file.clone(),
            defer_accept: server.defer_accept,
        }
    }

    /// Logs each setting `next` changes, as needing a restart (it keeps its running value).
    fn log_differences(&self, next: &RestartOnly) {
        let changed = [
            ("the listening address", self.listen != next.listen),
            ("the TLS files", self.tls_files != next.tls_files),
            ("the workers' user and group", self.credentials != next.credentials),
            ("the pid file", self.pid_file != next.pid_file),
            ("defer_accept", self.defer_accept != next.defer_accept),
        ];
        for (setting, _) in changed.iter().filter(|(_, changed)| *changed) {
            tracing::warn!(setting, "reload: this setting changes only with a restart; the running value stays");
        }
    }
}

/// The listening socket passed by socket activation, if this process was given one: systemd's
/// protocol (`LISTEN_PID` is this process, `LISTEN_FDS` counts the sockets from descriptor 3),
/// read by the `sd-notify` crate, which also removes the variables so that no worker or
/// program started later takes them for its own. One pool serves one socket: more is an error.
fn activated_socket() -> Result<Option<Listener>, ServerError> {
    let mut passed = sd_notify::listen_fds().map_err(ServerError::Activation)?;
    let Some(fd) = passed.next() else { return Ok(None) };
    let more = passed.count();
    if more > 0 {
        let message = format!("{} sockets passed (LISTEN_FDS); a server listens on one", more + 1);
        return Err(ServerError::Activation(std::io::Error::new(std::io::ErrorKind::InvalidInput, message)));
    }
    // SAFETY: systemd's protocol hands this process (LISTEN_PID is checked) descriptor 3, and
    // the variables are gone now: nobody else takes it.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    Listener::adopt(fd).map(Some).map_err(ServerError::Activation)
}

/// An error and its causes, `: `-separated (errors here keep their cause as their source, not
/// in their message).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Handler;

    fn error(builder: ServerBuilder) -> String {
        builder.build().unwrap_err().to_string()
    }

    #[test]
    fn perl_validation_rules_hold() {
        assert!(error(Server::builder().min_spare_servers(0)).contains("min_spare_servers"));
        assert!(error(Server::builder().start_servers(0)).contains("start_servers"));
        assert!(error(Server::builder().max_requests_per_child(Some(0))).contains("max_requests_per_child"));
        assert!(error(Server::builder().max_worker_rss(Some(0))).contains("max_worker_rss"));
        assert!(error(Server::builder().request_timeout(Some(Duration::ZERO))).contains("request_timeout"));
        let server = Server::builder().min_spare_servers(6).max_spare_servers(2).build().unwrap();
        assert_eq!(server.pool().max_spare_servers, 7, "max spare below min spare becomes min + 1");
    }

    #[test]
    fn impossible_limits_are_refused() {
        assert!(error(Server::builder().max_clients(4)).contains("start_servers (10) cannot exceed max_clients (4)"));
        assert!(error(Server::builder().max_clients(0)).contains("max_clients"));
        assert!(error(Server::builder().worker_connections(0)).contains("worker_connections"));
        assert!(error(Server::builder().max_headers(0)).contains("max_headers"));
        assert!(error(Server::builder().body_read_timeout(Duration::ZERO)).contains("body_read_timeout"));
    }

    #[test]
    fn bad_handler_patterns_headers_and_tls_files_are_refused() {
        let ok = Handler::new(|_, _| crate::Response::new(bytes::Bytes::new()));
        assert!(error(Server::builder().handler("(", ok.clone())).contains("not a valid regular expression"));
        assert!(error(Server::builder().header("bad name", "x")).contains("invalid header name"));
        assert!(error(Server::builder().header("X-Ok", "line\nbreak")).contains("invalid value"));
        assert!(error(Server::builder().status_path(Some("status".into()))).contains("status_path"));
        let missing = error(Server::builder().ssl_key_cert("/nonexistent/key.pem", "/nonexistent/cert.pem"));
        assert!(missing.contains("/nonexistent/cert.pem"), "{missing}");
        assert!(error(Server::builder().ssl_intermediate_ca("/x.pem")).contains("needs ssl_key_cert"));
    }

    #[test]
    fn binding_port_zero_reports_the_real_port_and_calls_the_setup_handler() {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(None));
        let record = std::rc::Rc::clone(&seen);
        let bound = Server::builder()
            .setup_handler(move |address| *record.borrow_mut() = Some(address.clone()))
            .build()
            .unwrap()
            .bind()
            .unwrap();
        let ListenAddress::Tcp(addr) = bound.local_addr().clone() else { panic!("not TCP") };
        assert_ne!(addr.port(), 0);
        assert!(addr.ip().is_loopback());
        assert_eq!(seen.borrow().clone(), Some(ListenAddress::Tcp(addr)));
    }

    #[test]
    fn a_unix_socket_is_bound_where_asked() {
        let path = std::env::temp_dir().join(format!("facade-unix-{}.sock", std::process::id()));
        let bound = Server::builder().unix_socket(&path).build().unwrap().bind().unwrap();
        assert_eq!(bound.local_addr(), &ListenAddress::Unix(path.clone()));
        assert!(path.exists());
        drop(bound);
        assert!(!path.exists(), "the parent removes its socket file");
    }
}
