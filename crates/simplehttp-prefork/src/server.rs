//! The facade's builder (SimpleHTTP/PreFork option names), its validation, and the run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsFd as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use prefork_http_worker::{BadDir, DEFAULT_BACKLOG, Handler, HttpWorker, PoolLink, Router, WorkerConfig, bind_tcp};
use prefork_scoreboard::RecycleLimits;
use prefork_supervisor::{
    ConfigError, PoolConfig, RecycleConfig, SpawnRamp, StopReport, Supervisor, SupervisorConfig, SupervisorError,
    WorkerExit,
};

use crate::log_file;

/// What a fork handler may fail with; the worker then exits as a boot failure.
pub type ForkHandlerError = Box<dyn std::error::Error + Send + Sync>;

type ForkHandler = Box<dyn FnMut() -> Result<(), ForkHandlerError>>;

/// Why a server could not be built, bound or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    InvalidOption(String),
    #[error(transparent)]
    Pool(#[from] ConfigError),
    #[error(transparent)]
    BadDir(#[from] BadDir),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error("pid file {path}: {source}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pid file {path} names process {pid}, a server that is still running")]
    AlreadyRunning { path: PathBuf, pid: u32 },
}

/// Builds a [`Server`]. Option names follow SimpleHTTP and SimpleHTTP::PreFork.
pub struct ServerBuilder {
    address: IpAddr,
    port: u16,
    hostname: Option<String>,
    handlers: Vec<(String, Handler)>,
    headers: Vec<(String, String)>,
    keepalive: bool,
    keepalive_timeout: Duration,
    proxy_mode: bool,
    max_body_size: usize,
    status_path: Option<String>,
    status_allow: Vec<IpNet>,
    pool: PoolConfig,
    recycle: RecycleConfig,
    slow_request_threshold: Option<Duration>,
    graceful_timeout: Duration,
    scoreboard_prefix: String,
    pid_file: Option<PathBuf>,
    fork_handlers: Vec<ForkHandler>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("handlers", &self.handlers.iter().map(|(dir, _)| dir).collect::<Vec<_>>())
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        let worker = WorkerConfig::default();
        let supervisor = SupervisorConfig::default();
        ServerBuilder {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            hostname: None,
            handlers: Vec::new(),
            headers: Vec::new(),
            keepalive: worker.keepalive,
            keepalive_timeout: worker.keepalive_timeout,
            proxy_mode: worker.proxy_mode,
            max_body_size: worker.max_body_size,
            status_path: worker.status_path,
            status_allow: worker.status_allow,
            pool: supervisor.pool,
            recycle: RecycleConfig::default(),
            slow_request_threshold: None,
            graceful_timeout: supervisor.graceful_timeout,
            scoreboard_prefix: supervisor.scoreboard_prefix,
            pid_file: None,
            fork_handlers: Vec::new(),
        }
    }
}

impl ServerBuilder {
    /// ADDRESS: the address to listen on (default 127.0.0.1).
    pub fn address(mut self, address: IpAddr) -> Self {
        self.address = address;
        self
    }

    /// PORT: the port to listen on; 0 (the default) picks a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// HOSTNAME: used to make request URIs absolute (default: this machine's host name).
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// HANDLERS, one at a time: requests whose path matches the DIR regex (unanchored) go to
    /// `handler`, the first match in the order given winning.
    pub fn handler(mut self, dir: impl Into<String>, handler: Handler) -> Self {
        self.handlers.push((dir.into(), handler));
        self
    }

    /// HANDLERS, all at once, replacing any given before.
    pub fn handlers(mut self, handlers: impl IntoIterator<Item = (String, Handler)>) -> Self {
        self.handlers = handlers.into_iter().collect();
        self
    }

    /// HEADERS: a header added to every response that does not set it.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// KEEPALIVE: keep HTTP/1.1 connections open (default off, as SimpleHTTP).
    pub fn keepalive(mut self, keepalive: bool) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// How long an idle keep-alive connection, or a client still sending headers, may hold a
    /// worker (default 5 s).
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.keepalive_timeout = timeout;
        self
    }

    /// PROXYMODE: match DIR against the full request URI and leave it unchanged.
    pub fn proxy_mode(mut self, proxy_mode: bool) -> Self {
        self.proxy_mode = proxy_mode;
        self
    }

    /// Largest request body accepted (default 16 MiB); larger gets `413`.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// Path of the built-in status page (default `/server-status`), `None` to switch it off.
    pub fn status_path(mut self, path: Option<String>) -> Self {
        self.status_path = path;
        self
    }

    /// Client networks allowed to read the status page (default: loopback only).
    pub fn status_allow(mut self, networks: Vec<IpNet>) -> Self {
        self.status_allow = networks;
        self
    }

    /// Requests longer than this are counted as slow in the scoreboard and logged with their
    /// request line (default: not counted).
    pub fn slow_request_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.slow_request_threshold = threshold;
        self
    }

    /// Write the supervisor's pid to this file while the server runs (removed at exit); the
    /// `status` command finds the scoreboard through it.
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.pid_file = Some(path.into());
        self
    }

    /// STARTSERVERS: workers forked at start (default 10).
    pub fn start_servers(mut self, n: usize) -> Self {
        self.pool.start_servers = n;
        self
    }

    /// MINSPARESERVERS: fork more when fewer workers than this are idle (default 5).
    pub fn min_spare_servers(mut self, n: usize) -> Self {
        self.pool.min_spare_servers = n;
        self
    }

    /// MAXSPARESERVERS: retire workers when more than this are idle (default 10).
    pub fn max_spare_servers(mut self, n: usize) -> Self {
        self.pool.max_spare_servers = n;
        self
    }

    /// MAXCLIENTS: never more worker processes than this (default 256).
    pub fn max_clients(mut self, n: usize) -> Self {
        self.pool.max_clients = n;
        self
    }

    /// MAXREQUESTPERCHILD: a worker is replaced after answering this many requests (default:
    /// never). Unlike the Perl module, the replacement is forked first and the old worker
    /// finishes its request once it is ready, so capacity never dips; meanwhile its responses
    /// close their connections.
    pub fn max_requests_per_child(mut self, n: Option<u64>) -> Self {
        self.recycle.max_requests_per_child = n;
        self
    }

    /// A worker is replaced after accepting this many connections (Apache's
    /// MaxConnectionsPerChild; default: never).
    pub fn max_connections_per_child(mut self, n: Option<u64>) -> Self {
        self.recycle.max_connections_per_child = n;
        self
    }

    /// Each worker's request and connection limits get up to this many more, at random, so
    /// workers started together are not replaced together (gunicorn's max_requests_jitter).
    pub fn max_requests_jitter(mut self, n: u64) -> Self {
        self.recycle.max_requests_jitter = n;
        self
    }

    /// A worker is replaced once it has lived this long, plus up to `jitter` (default: never).
    pub fn max_worker_lifetime(mut self, lifetime: Option<Duration>, jitter: Duration) -> Self {
        self.recycle.max_worker_lifetime = lifetime;
        self.recycle.max_worker_lifetime_jitter = jitter;
        self
    }

    /// A worker is replaced once its resident memory reaches this many bytes, plus up to
    /// `jitter` (sampled once a second; default: never).
    pub fn max_worker_rss(mut self, bytes: Option<u64>, jitter: u64) -> Self {
        self.recycle.max_worker_rss = bytes;
        self.recycle.max_worker_rss_jitter = jitter;
        self
    }

    /// At most this many workers are being replaced at once (default 2).
    pub fn max_recycling(mut self, n: usize) -> Self {
        self.pool.max_recycling = n;
        self
    }

    /// Most workers forked in one maintenance round (default 32).
    pub fn max_spawn_rate(mut self, n: usize) -> Self {
        self.pool.max_spawn_rate = n;
        self
    }

    /// How the fork batch grows while spares are short (default: the whole deficit at once;
    /// [`SpawnRamp::Doubling`] behaves like Apache or php-fpm).
    pub fn spawn_ramp(mut self, ramp: SpawnRamp) -> Self {
        self.pool.spawn_ramp = ramp;
        self
    }

    /// At most one excess idle worker is retired per interval, once the surplus has lasted
    /// that long (default 1 s).
    pub fn idle_retire_interval(mut self, interval: Duration) -> Self {
        self.pool.idle_retire_interval = interval;
        self
    }

    /// A request running longer than this gets its worker SIGTERMed, then SIGKILLed after
    /// `grace`, with its request line logged (default: no limit; grace 5 s).
    pub fn request_timeout(mut self, timeout: Option<Duration>, grace: Duration) -> Self {
        self.pool.request_timeout = timeout;
        self.pool.request_timeout_grace = grace;
        self
    }

    /// Workers that fail to boot are respawned after `initial`, doubling per failure in a row
    /// up to `max`; after `halt_after` in a row (0: never) forking stops but for one probe per
    /// `max` (defaults 250 ms, 30 s, 10).
    pub fn boot_backoff(mut self, initial: Duration, max: Duration, halt_after: u32) -> Self {
        self.pool.boot_backoff_initial = initial;
        self.pool.boot_backoff_max = max;
        self.pool.max_boot_failures = halt_after;
        self
    }

    /// How long a graceful stop waits for busy workers before killing them (default 30 s).
    pub fn graceful_timeout(mut self, timeout: Duration) -> Self {
        self.graceful_timeout = timeout;
        self
    }

    /// The scoreboard segment is `/dev/shm/<prefix>.<pid>` (default `simplehttp-prefork`).
    pub fn scoreboard_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.scoreboard_prefix = prefix.into();
        self
    }

    /// FORKHANDLERS, one at a time: run in each new worker, after fork and before it
    /// accepts, in the order given. An error (or panic) makes the worker exit as a boot
    /// failure; the supervisor then backs off before forking again.
    pub fn fork_handler(mut self, handler: impl FnMut() -> Result<(), ForkHandlerError> + 'static) -> Self {
        self.fork_handlers.push(Box::new(handler));
        self
    }

    /// Validates the options as SimpleHTTP::PreFork does, with clear errors.
    ///
    /// MINSPARESERVERS and STARTSERVERS must be positive; a MAXSPARESERVERS below
    /// MINSPARESERVERS becomes MINSPARESERVERS + 1 (as the Perl module documents); a
    /// MAXREQUESTPERCHILD of 0 is refused; limits that cannot hold together (more start or
    /// spare servers than MAXCLIENTS) are refused.
    pub fn build(mut self) -> Result<Server, ServerError> {
        if self.keepalive_timeout.is_zero() {
            return Err(ServerError::InvalidOption("keepalive_timeout must be longer than zero".into()));
        }
        if self.pool.min_spare_servers > 0 && self.pool.max_spare_servers < self.pool.min_spare_servers {
            let adjusted = self.pool.min_spare_servers + 1;
            tracing::warn!(
                max_spare_servers = self.pool.max_spare_servers,
                min_spare_servers = self.pool.min_spare_servers,
                adjusted,
                "max_spare_servers is below min_spare_servers; using min_spare_servers + 1"
            );
            self.pool.max_spare_servers = adjusted;
        }
        let supervisor = SupervisorConfig {
            pool: self.pool,
            graceful_timeout: self.graceful_timeout,
            scoreboard_prefix: self.scoreboard_prefix,
            recycle: self.recycle,
            slow_request_threshold: self.slow_request_threshold,
            ..SupervisorConfig::default()
        };
        supervisor.validate()?;
        let mut router = Router::new();
        for (dir, handler) in self.handlers {
            router.add(&dir, handler)?;
        }
        let mut default_headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ServerError::InvalidOption(format!("invalid header name {name:?}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| ServerError::InvalidOption(format!("invalid value for header {name}: {value:?}")))?;
            default_headers.append(header, value);
        }
        if let Some(path) = self.status_path.as_ref().filter(|path| !path.starts_with('/')) {
            return Err(ServerError::InvalidOption(format!("status_path must start with '/': {path:?}")));
        }
        let hostname = match self.hostname {
            Some(name) => name,
            None => {
                nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
            }
        };
        let worker = WorkerConfig {
            keepalive: self.keepalive,
            keepalive_timeout: self.keepalive_timeout,
            recycle: RecycleLimits::default(),
            max_body_size: self.max_body_size,
            hostname,
            port: self.port,
            proxy_mode: self.proxy_mode,
            default_headers,
            status_path: self.status_path,
            status_allow: self.status_allow,
        };
        Ok(Server {
            address: SocketAddr::new(self.address, self.port),
            router,
            worker,
            supervisor,
            pid_file: self.pid_file,
            fork_handlers: self.fork_handlers,
        })
    }
}

/// A validated server, not yet listening.
pub struct Server {
    address: SocketAddr,
    router: Router,
    worker: WorkerConfig,
    supervisor: SupervisorConfig,
    pid_file: Option<PathBuf>,
    fork_handlers: Vec<ForkHandler>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .field("supervisor", &self.supervisor)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Starts building a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The pool settings in force (after validation and adjustment).
    pub fn pool(&self) -> &PoolConfig {
        &self.supervisor.pool
    }

    /// Binds the listening socket (once, for the server's whole life).
    pub fn bind(self) -> Result<BoundServer, ServerError> {
        let listener = bind_tcp(self.address, DEFAULT_BACKLOG)
            .map_err(|source| ServerError::Bind { address: self.address, source })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind { address: self.address, source })?;
        Ok(BoundServer { server: self, listener, local_addr })
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
    pub local_addr: SocketAddr,
    /// The scoreboard segment's name (`/prefix.pid`).
    pub scoreboard_name: &'a str,
}

/// A server with its listening socket bound.
#[derive(Debug)]
pub struct BoundServer {
    server: Server,
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl BoundServer {
    /// The address actually listened on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Forks the pool and supervises it until SIGTERM/SIGINT (graceful) or SIGQUIT
    /// (immediate). Call from a single-threaded process: it forks.
    pub fn run(self) -> Result<StopReport, ServerError> {
        self.run_with(|_| {})
    }

    /// As [`run`](Self::run), calling `on_started` in the parent once the scoreboard exists
    /// and just before the first worker is forked (stale segments are gone by then).
    pub fn run_with(self, on_started: impl FnOnce(&Started<'_>)) -> Result<StopReport, ServerError> {
        let BoundServer { server, listener, local_addr } = self;
        let Server { router, mut worker, supervisor, mut fork_handlers, pid_file, .. } = server;
        let pid_file = pid_file.map(|path| PidFile::check(path, &supervisor.scoreboard_prefix)).transpose()?;
        worker.port = local_addr.port();
        let listener = &listener;
        let run_worker = move |ctx: prefork_supervisor::WorkerContext| -> WorkerExit {
            if let Err(errno) = log_file::reopen_on_usr1() {
                return WorkerExit::BootFailed(format!("cannot handle SIGUSR1: {errno}"));
            }
            for (index, fork_handler) in fork_handlers.iter_mut().enumerate() {
                match catch_unwind(AssertUnwindSafe(&mut *fork_handler)) {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => return WorkerExit::BootFailed(format!("fork handler {index} failed: {error}")),
                    Err(_) => return WorkerExit::BootFailed(format!("fork handler {index} panicked")),
                }
            }
            let config = WorkerConfig { recycle: ctx.limits, ..worker.clone() };
            let http = HttpWorker::new(listener, router.clone(), config);
            let link = PoolLink {
                slot: ctx.slot,
                board: ctx.board,
                scoreboard_name: ctx.scoreboard_name,
                doorbell: Some(ctx.doorbell),
            };
            match http.run(link) {
                Ok(_) => WorkerExit::Finished,
                Err(error) => WorkerExit::Failed(error.to_string()),
            }
        };
        let mut pid_file_error = None;
        let result = Supervisor::new(supervisor, run_worker)?
            .watch_listen_queue(listener.as_fd())
            .on_reopen_logs(log_file::request_reopen)
            .on_started(|scoreboard_name, _board| {
                if let Some(pid_file) = &pid_file {
                    pid_file_error = pid_file.write().err();
                }
                on_started(&Started { local_addr, scoreboard_name })
            })
            .run();
        if let Some(error) = pid_file_error {
            tracing::error!(%error, "could not write the pid file");
        }
        drop(pid_file);
        Ok(result?)
    }
}

/// The pid file, removed when dropped (the server's whole run is inside its lifetime).
struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Refuses a pid file that names a running server (one whose scoreboard is still held).
    fn check(path: PathBuf, scoreboard_prefix: &str) -> Result<PidFile, ServerError> {
        let recorded = std::fs::read_to_string(&path).ok().and_then(|text| text.trim().parse::<u32>().ok());
        if let Some(pid) = recorded.filter(|pid| *pid != std::process::id()) {
            let name = format!("/{scoreboard_prefix}.{pid}");
            if prefork_scoreboard::is_segment_live(&name).unwrap_or(false) {
                return Err(ServerError::AlreadyRunning { path, pid });
            }
        }
        Ok(PidFile { path })
    }

    fn write(&self) -> Result<(), ServerError> {
        std::fs::write(&self.path, format!("{}\n", std::process::id()))
            .map_err(|source| ServerError::PidFile { path: self.path.clone(), source })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own: a file rewritten by another server since is not ours to remove.
        let ours = std::fs::read_to_string(&self.path).is_ok_and(|t| t.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(builder: ServerBuilder) -> String {
        builder.build().unwrap_err().to_string()
    }

    #[test]
    fn perl_validation_rules_hold() {
        assert!(error(Server::builder().min_spare_servers(0)).contains("min_spare_servers"));
        assert!(error(Server::builder().start_servers(0)).contains("start_servers"));
        assert!(error(Server::builder().max_requests_per_child(Some(0))).contains("max_requests_per_child"));
        assert!(error(Server::builder().max_worker_rss(Some(0), 0)).contains("max_worker_rss"));
        assert!(
            error(Server::builder().request_timeout(Some(Duration::ZERO), Duration::ZERO)).contains("request_timeout")
        );
        let server = Server::builder().min_spare_servers(6).max_spare_servers(2).build().unwrap();
        assert_eq!(server.pool().max_spare_servers, 7, "max spare below min spare becomes min + 1");
    }

    #[test]
    fn impossible_limits_are_refused() {
        assert!(error(Server::builder().max_clients(4)).contains("start_servers (10) cannot exceed max_clients (4)"));
        assert!(error(Server::builder().max_clients(0)).contains("max_clients"));
    }

    #[test]
    fn bad_handler_patterns_and_headers_are_refused() {
        let ok = Handler::new(|_, _| crate::Response::new(bytes::Bytes::new()));
        assert!(error(Server::builder().handler("(", ok.clone())).contains("not a valid regular expression"));
        assert!(error(Server::builder().header("bad name", "x")).contains("invalid header name"));
        assert!(error(Server::builder().header("X-Ok", "line\nbreak")).contains("invalid value"));
        assert!(error(Server::builder().status_path(Some("status".into()))).contains("status_path"));
    }

    #[test]
    fn binding_port_zero_reports_the_real_port() {
        let bound = Server::builder().build().unwrap().bind().unwrap();
        assert_ne!(bound.local_addr().port(), 0);
        assert!(bound.local_addr().ip().is_loopback());
    }
}
