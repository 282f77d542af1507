//! The facade's builder: SimpleHTTP/PreFork option names, and the validation that turns
//! impossible settings into clear errors.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use prefork_http_worker::{
    AccessLogFormat, ConnectionInfo, Handler, Router, TlsFiles, TlsSettings, WorkerConfig, WorkerInfo,
};
use prefork_supervisor::{SpawnRamp, SupervisorConfig};

use crate::credentials::Credentials;
use crate::reload::Reloaded;
use crate::server::{ForkHandler, ForkHandlerError, Listen, Server, ServerError, SetupHandler};
use crate::upgrade::{UpgradeCommand, check_program};

/// Builds a [`Server`]. Option names follow SimpleHTTP and SimpleHTTP::PreFork.
pub struct ServerBuilder {
    listen: Listen,
    hostname: Option<String>,
    handlers: Vec<(String, Handler)>,
    headers: Vec<(String, String)>,
    worker: WorkerConfig,
    /// SSLKEYCERT: key and certificate.
    key_cert: Option<(PathBuf, PathBuf)>,
    /// SSLINTERMEDIATECACERT.
    intermediate_ca: Option<PathBuf>,
    supervisor: SupervisorConfig,
    pid_file: Option<PathBuf>,
    fork_handlers: Vec<ForkHandler>,
    setup_handler: Option<SetupHandler>,
    on_reload: Option<crate::reload::ReloadHook>,
    defer_accept: bool,
    socket_activation: bool,
    user: Option<String>,
    group: Option<String>,
    upgrade: Option<UpgradeCommand>,
    /// The tower service that answers what no DIR handler matches.
    service: Option<Handler>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("listen", &self.listen)
            .field("handlers", &self.handlers.iter().map(|(dir, _)| dir).collect::<Vec<_>>())
            .field("supervisor", &self.supervisor)
            .finish_non_exhaustive()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            listen: Listen::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)),
            hostname: None,
            handlers: Vec::new(),
            headers: Vec::new(),
            worker: WorkerConfig::default(),
            key_cert: None,
            intermediate_ca: None,
            supervisor: SupervisorConfig::default(),
            pid_file: None,
            fork_handlers: Vec::new(),
            setup_handler: None,
            on_reload: None,
            defer_accept: true,
            socket_activation: true,
            user: None,
            group: None,
            upgrade: None,
            service: None,
        }
    }
}

impl ServerBuilder {
    /// ADDRESS: the address to listen on, IPv4 or IPv6 (default 127.0.0.1).
    pub fn address(mut self, address: IpAddr) -> Self {
        let port = match &self.listen {
            Listen::Tcp(addr) => addr.port(),
            Listen::Unix(_) => 0,
        };
        self.listen = Listen::Tcp(SocketAddr::new(address, port));
        self
    }

    /// PORT: the port to listen on; 0 (the default) picks a free one.
    pub fn port(mut self, port: u16) -> Self {
        if let Listen::Tcp(addr) = &mut self.listen {
            addr.set_port(port);
        }
        self
    }

    /// DOMAIN AF_UNIX with ADDRESS a path: listen on a unix domain socket instead of TCP.
    pub fn unix_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.listen = Listen::Unix(path.into());
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

    /// A `tower::Service` (an axum `Router`, with tower-http layers, say) answers every request
    /// no DIR handler matches, preforked like any handler: the scoreboard, the status page,
    /// the limits and the logs see its requests as theirs. It need not be `Send` (a worker is
    /// single-threaded); its state is best built per worker, in a fork handler. See
    /// [`Handler::from_service`](crate::Handler::from_service) and `examples/axum.rs`.
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
        self.worker.keepalive = keepalive;
        self
    }

    /// How long an idle keep-alive connection, a client still sending headers, or a TLS
    /// handshake may hold a worker (default 5 s).
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.worker.keepalive_timeout = timeout;
        self
    }

    /// PROXYMODE: match DIR against the full request URI, leave it unchanged, and add no
    /// Content-Length of our own.
    pub fn proxy_mode(mut self, proxy_mode: bool) -> Self {
        self.worker.proxy_mode = proxy_mode;
        self
    }

    /// SSLKEYCERT: serve TLS with this private key and certificate (chain), both PEM.
    pub fn ssl_key_cert(mut self, key: impl Into<PathBuf>, cert: impl Into<PathBuf>) -> Self {
        self.key_cert = Some((key.into(), cert.into()));
        self
    }

    /// SSLINTERMEDIATECACERT: intermediate CA certificates sent after the chain (PEM).
    pub fn ssl_intermediate_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.intermediate_ca = Some(path.into());
        self
    }

    /// Accept HTTP/2 with prior knowledge on cleartext connections (over TLS, HTTP/2 is
    /// always offered by ALPN).
    pub fn http2(mut self, enabled: bool) -> Self {
        self.worker.http2_cleartext = enabled;
        self
    }

    /// Connections one worker serves at once (default 1: classic prefork).
    pub fn worker_connections(mut self, n: usize) -> Self {
        self.worker.worker_connections = n;
        self
    }

    /// Longest request line (`414` beyond; default 8190 bytes).
    pub fn max_request_line(mut self, bytes: usize) -> Self {
        self.worker.max_request_line = bytes;
        self
    }

    /// Largest request head (`431` beyond; default 64 KiB).
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.worker.max_header_size = bytes;
        self
    }

    /// Most request headers (`431` beyond; default 100).
    pub fn max_headers(mut self, n: usize) -> Self {
        self.worker.max_headers = n;
        self
    }

    /// Largest request body accepted (`413` beyond; default 16 MiB).
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.worker.max_body_size = bytes;
        self
    }

    /// Bodies slower than this many bytes per second, after the keep-alive timeout's allowance,
    /// get `408` (mod_reqtimeout's `MinRate`; default 500; 0: no minimum).
    pub fn body_min_rate(mut self, bytes_per_second: u64) -> Self {
        self.worker.body_min_rate = bytes_per_second;
        self
    }

    /// Connections a classic worker holds between requests — still sending their request, or
    /// idle on keep-alive — before it closes the one held longest (default 256).
    pub fn max_parked(mut self, connections: usize) -> Self {
        self.worker.max_parked = connections;
        self
    }

    /// Wake a worker for a new TCP connection only once its first bytes arrived
    /// (`TCP_DEFER_ACCEPT`, waiting up to the keep-alive timeout; default on).
    pub fn defer_accept(mut self, enabled: bool) -> Self {
        self.defer_accept = enabled;
        self
    }

    /// Serve the listening socket a service manager passed (systemd's socket activation:
    /// `LISTEN_FDS` and `LISTEN_PID` naming this process) instead of binding the address,
    /// port or unix socket set here (default on; without those variables nothing changes).
    /// More than one socket passed is an error from [`Server::bind`](crate::Server::bind).
    pub fn socket_activation(mut self, enabled: bool) -> Self {
        self.socket_activation = enabled;
        self
    }

    /// Workers run as this user (a name or a uid; Apache's `User`): the parent binds, keeps
    /// its privileges to fork, and each worker switches right after its fork, before its fork
    /// handlers run. Without [`group`](Self::group), the user's own group. An unknown user, or
    /// a server not started as root, is an error from [`build`](Self::build).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// A binary upgrade without downtime on SIGUSR2 (unicorn's and nginx's): the server starts
    /// `program` with `args` (the binary now on disk: a new build installed over the old one),
    /// handing it the listening socket and the hand-off queue; the new server forks its pool,
    /// and once it is ready this one retires its workers (their idle keep-alive connections
    /// move to the new workers) and exits. The pid file names the new server from then on (the
    /// old one's is `NAME.oldbin` while both run). If the new one fails to start or to become
    /// ready, this one serves on and logs why. The `simplehttp-prefork` command sets this to
    /// itself ([`this_command`](crate::this_command), taken when it starts).
    pub fn binary_upgrade(mut self, program: impl Into<PathBuf>, args: Vec<std::ffi::OsString>) -> Self {
        self.upgrade = Some(UpgradeCommand { program: program.into(), args });
        self
    }

    /// Workers run with this group (a name or a gid; Apache's `Group`).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// A request body not received within this gets `408` (default 60 s).
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.worker.body_read_timeout = timeout;
        self
    }

    /// An async handler that has not answered within this gets `503` (default: no budget).
    pub fn handler_timeout(mut self, budget: Option<Duration>) -> Self {
        self.worker.handler_timeout = budget;
        self
    }

    /// LOGHANDLER: called with each request's head and the client's address before dispatch.
    pub fn log_handler(mut self, f: impl Fn(&http::request::Parts, IpAddr) + 'static) -> Self {
        self.worker.hooks.log = Some(Rc::new(f));
        self
    }

    /// LOG2HANDLER: called with each request's and response's heads once the response is
    /// written.
    pub fn log2_handler(mut self, f: impl Fn(&http::request::Parts, &http::response::Parts) + 'static) -> Self {
        self.worker.hooks.log2 = Some(Rc::new(f));
        self
    }

    /// ERRORHANDLER: called when a connection fails (malformed request, timeout, reset, TLS).
    pub fn error_handler(mut self, f: impl Fn(&ConnectionInfo, &str) + 'static) -> Self {
        self.worker.hooks.error = Some(Rc::new(f));
        self
    }

    /// SETUPHANDLER: called once, in the parent, with the address actually bound.
    pub fn setup_handler(mut self, f: impl FnOnce(&prefork_http_worker::ListenAddress) + 'static) -> Self {
        self.setup_handler = Some(Box::new(f));
        self
    }

    /// Log every request in Common or Combined Log Format (tracing target `access`).
    pub fn access_log(mut self, format: Option<AccessLogFormat>) -> Self {
        self.worker.access_log = format;
        self
    }

    /// Path of the built-in status page, e.g. `/server-status`: answered before the routes, so
    /// off (`None`) by default, and a route of your own for that path wins. The
    /// `simplehttp-prefork` command turns it on.
    pub fn status_path(mut self, path: Option<String>) -> Self {
        self.worker.status_path = path;
        self
    }

    /// Path of the liveness probe, e.g. `/healthz`: `200` while the supervisor lives and can
    /// fork, `503` once forking has halted. Like the status page, an exact path answered
    /// before the routes (so off, `None`, by default; the command turns it on), by any free
    /// worker, and left out of the request counts and logs.
    pub fn health_path(mut self, path: Option<String>) -> Self {
        self.worker.health_path = path;
        self
    }

    /// Path of the readiness probe, e.g. `/readyz`: `200` once a generation is ready, `503`
    /// while starting and while draining or stopping. Off (`None`) by default; the command
    /// turns it on.
    pub fn ready_path(mut self, path: Option<String>) -> Self {
        self.worker.ready_path = path;
        self
    }

    /// Client networks allowed to read the status page (default: loopback only).
    pub fn status_allow(mut self, networks: Vec<IpNet>) -> Self {
        self.worker.status_allow = networks;
        self
    }

    /// Requests longer than this are counted as slow in the scoreboard and logged with their
    /// request line (default: not counted).
    pub fn slow_request_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.supervisor.slow_request_threshold = threshold;
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
        self.supervisor.pool.start_servers = n;
        self
    }

    /// MINSPARESERVERS: fork more when fewer workers than this are idle (default 5).
    pub fn min_spare_servers(mut self, n: usize) -> Self {
        self.supervisor.pool.min_spare_servers = n;
        self
    }

    /// MAXSPARESERVERS: retire workers when more than this are idle (default 10).
    pub fn max_spare_servers(mut self, n: usize) -> Self {
        self.supervisor.pool.max_spare_servers = n;
        self
    }

    /// MAXCLIENTS: never more worker processes than this (default 256).
    pub fn max_clients(mut self, n: usize) -> Self {
        self.supervisor.pool.max_clients = n;
        self
    }

    /// MAXREQUESTPERCHILD: a worker is replaced after answering this many requests (default:
    /// never). Unlike the Perl module, the replacement is forked first and the old worker
    /// finishes its request once it is ready, so capacity never dips.
    pub fn max_requests_per_child(mut self, n: Option<u64>) -> Self {
        self.supervisor.recycle.max_requests_per_child = n;
        self
    }

    /// A worker is replaced after accepting this many connections (Apache's
    /// MaxConnectionsPerChild; default: never).
    pub fn max_connections_per_child(mut self, n: Option<u64>) -> Self {
        self.supervisor.recycle.max_connections_per_child = n;
        self
    }

    /// Each worker's request and connection limits get up to this many more, at random, so
    /// workers started together are not replaced together (gunicorn's max_requests_jitter).
    pub fn max_requests_jitter(mut self, n: u64) -> Self {
        self.supervisor.recycle.max_requests_jitter = n;
        self
    }

    /// A worker is replaced once it has lived this long, plus its jitter (default: never).
    pub fn max_worker_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.supervisor.recycle.max_worker_lifetime = lifetime;
        self
    }

    /// Up to this much longer per worker, at random, so that workers started together are not
    /// replaced together (default 0).
    pub fn max_worker_lifetime_jitter(mut self, jitter: Duration) -> Self {
        self.supervisor.recycle.max_worker_lifetime_jitter = jitter;
        self
    }

    /// A worker is replaced once its resident memory reaches this many bytes, plus its jitter
    /// (sampled once a second; default: never).
    pub fn max_worker_rss(mut self, bytes: Option<u64>) -> Self {
        self.supervisor.recycle.max_worker_rss = bytes;
        self
    }

    /// Up to this many bytes more per worker, at random (default 0).
    pub fn max_worker_rss_jitter(mut self, bytes: u64) -> Self {
        self.supervisor.recycle.max_worker_rss_jitter = bytes;
        self
    }

    /// At most this many workers are being replaced at once (default 2).
    pub fn max_recycling(mut self, n: usize) -> Self {
        self.supervisor.pool.max_recycling = n;
        self
    }

    /// Most workers forked in one maintenance round (default 32).
    pub fn max_spawn_rate(mut self, n: usize) -> Self {
        self.supervisor.pool.max_spawn_rate = n;
        self
    }

    /// How the fork batch grows while spares are short (default: the whole deficit at once;
    /// [`SpawnRamp::Doubling`] behaves like Apache or php-fpm).
    pub fn spawn_ramp(mut self, ramp: SpawnRamp) -> Self {
        self.supervisor.pool.spawn_ramp = ramp;
        self
    }

    /// At most one excess idle worker is retired per interval, once the surplus has lasted
    /// that long (default 1 s).
    pub fn idle_retire_interval(mut self, interval: Duration) -> Self {
        self.supervisor.pool.idle_retire_interval = interval;
        self
    }

    /// A request running longer than this is ended (gunicorn's `timeout`, php-fpm's
    /// `request_terminate_timeout`): at the timeout the worker drops an async handler's request
    /// and answers `503` (or closes the connection if the response had begun); a worker whose
    /// request still runs [`request_timeout_grace`](Self::request_timeout_grace) later — a
    /// blocking handler, which only a signal can stop — is SIGKILLed and replaced, the request
    /// named in the log (default: no limit).
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.supervisor.pool.request_timeout = timeout;
        self
    }

    /// How long after `request_timeout` a worker still running the request is SIGKILLed
    /// (default 1 s).
    pub fn request_timeout_grace(mut self, grace: Duration) -> Self {
        self.supervisor.pool.request_timeout_grace = grace;
        self
    }

    /// Workers that fail to boot are respawned after this, doubling per failure in a row up to
    /// [`boot_backoff_max`](Self::boot_backoff_max) (default 250 ms).
    pub fn boot_backoff_initial(mut self, delay: Duration) -> Self {
        self.supervisor.pool.boot_backoff_initial = delay;
        self
    }

    /// The longest delay between respawns of workers that keep failing to boot, and the
    /// interval between probes once forking has halted (default 30 s).
    pub fn boot_backoff_max(mut self, delay: Duration) -> Self {
        self.supervisor.pool.boot_backoff_max = delay;
        self
    }

    /// After this many boot failures in a row forking stops, but for one probe per
    /// `boot_backoff_max` (0: never; default 10).
    pub fn max_boot_failures(mut self, failures: u32) -> Self {
        self.supervisor.pool.max_boot_failures = failures;
        self
    }

    /// After this many workers of a new generation fail to boot in a row, a reload (SIGHUP)
    /// is abandoned and the old generation keeps serving (default 3).
    pub fn max_reload_boot_failures(mut self, failures: u32) -> Self {
        self.supervisor.pool.max_reload_boot_failures = failures;
        self
    }

    /// On TERM/INT, how long the server drains before its graceful stop begins (default 0):
    /// the readiness probe answers `503` so that load balancers take it out of rotation, while
    /// everything is served as before (Kubernetes' preStop pattern). A second TERM/INT
    /// cuts the drain short.
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.supervisor.drain_delay = delay;
        self
    }

    /// How long a graceful stop waits for busy workers before killing them (default 30 s).
    pub fn graceful_timeout(mut self, timeout: Duration) -> Self {
        self.supervisor.graceful_timeout = timeout;
        self
    }

    /// The scoreboard segment is `/dev/shm/<prefix>.<pid>` (default `simplehttp-prefork`).
    pub fn scoreboard_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.supervisor.scoreboard_prefix = prefix.into();
        self
    }

    /// FORKHANDLERS, one at a time: run in each new worker, after fork and before it
    /// accepts, in the order given, with the worker's identity (SimpleHTTP/PreFork's ISCHILD,
    /// and its slot and generation). An error (or panic) makes the worker exit as a boot
    /// failure; the supervisor then backs off before forking again.
    pub fn fork_handler(mut self, handler: impl FnMut(&WorkerInfo) -> Result<(), ForkHandlerError> + 'static) -> Self {
        self.fork_handlers.push(Box::new(handler));
        self
    }

    /// Runs in the parent on HUP, before the new generation forks: the handlers (and fork
    /// handlers) it returns serve every new worker, while the old generation finishes with its
    /// own, so that new handlers go live by a graceful reload with no failed request
    /// (SimpleHTTP's SETHANDLERS and SETFORKHANDLERS, which never reached forked workers). An
    /// error (or a DIR that is no regular expression) abandons that reload, logged: the old
    /// generation serves on.
    pub fn on_reload(mut self, hook: impl FnMut() -> Result<Reloaded, ForkHandlerError> + 'static) -> Self {
        self.on_reload = Some(Box::new(hook));
        self
    }

    /// Validates the options as SimpleHTTP::PreFork does, with clear errors, and loads the TLS
    /// files.
    ///
    /// MINSPARESERVERS and STARTSERVERS must be positive; a MAXSPARESERVERS below
    /// MINSPARESERVERS becomes MINSPARESERVERS + 1 (as the Perl module documents); a
    /// MAXREQUESTPERCHILD of 0 is refused; limits that cannot hold together (more start or
    /// spare servers than MAXCLIENTS) are refused.
    pub fn build(mut self) -> Result<Server, ServerError> {
        let invalid = |message: String| Err(ServerError::InvalidOption(message));
        let worker = &mut self.worker;
        for (name, duration) in
            [("keepalive_timeout", worker.keepalive_timeout), ("body_read_timeout", worker.body_read_timeout)]
        {
            if duration.is_zero() {
                return invalid(format!("{name} must be longer than zero"));
            }
        }
        if worker.handler_timeout.is_some_and(|t| t.is_zero()) {
            return invalid("handler_timeout must be longer than zero".into());
        }
        for (name, duration) in [
            ("keepalive_timeout", worker.keepalive_timeout),
            ("body_read_timeout", worker.body_read_timeout),
            ("handler_timeout", worker.handler_timeout.unwrap_or_default()),
        ] {
            prefork_supervisor::check_duration(name, duration)?;
        }
        for (name, value, min) in [
            ("worker_connections", worker.worker_connections, 1),
            ("max_request_line", worker.max_request_line, 16),
            ("max_header_size", worker.max_header_size, 1024),
            ("max_headers", worker.max_headers, 1),
            ("max_parked", worker.max_parked, 1),
        ] {
            if value < min {
                return invalid(format!("{name} must be at least {min}, got {value}"));
            }
        }
        let pool = &mut self.supervisor.pool;
        if pool.min_spare_servers > 0 && pool.max_spare_servers < pool.min_spare_servers {
            let adjusted = pool.min_spare_servers.saturating_add(1);
            tracing::warn!(
                max_spare_servers = pool.max_spare_servers,
                min_spare_servers = pool.min_spare_servers,
                adjusted,
                "max_spare_servers is below min_spare_servers; using min_spare_servers + 1"
            );
            pool.max_spare_servers = adjusted;
        }
        self.supervisor.validate()?;
        // The worker ends an async request at the timeout itself; the supervisor kills what
        // still runs after the grace.
        self.worker.request_timeout = self.supervisor.pool.request_timeout;
        let mut router = Router::new();
        // The service comes last: it answers whatever the DIRs leave (an empty DIR matches all).
        for (dir, handler) in self.handlers.into_iter().chain(self.service.map(|s| (String::new(), s))) {
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
        self.worker.default_headers = default_headers;
        let built_in = [
            ("status_path", &self.worker.status_path),
            ("health_path", &self.worker.health_path),
            ("ready_path", &self.worker.ready_path),
        ];
        for (index, (name, path)) in built_in.iter().enumerate() {
            let Some(path) = path else { continue };
            if !path.starts_with('/') {
                return invalid(format!("{name} must start with '/': {path:?}"));
            }
            if let Some((other, _)) = built_in[..index].iter().find(|(_, p)| p.as_ref() == Some(path)) {
                return invalid(format!("{name} and {other} are both {path:?}"));
            }
        }
        self.worker.hostname = match self.hostname {
            Some(name) => name,
            None => {
                nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
            }
        };
        let mut tls_files = None;
        match (self.key_cert, self.intermediate_ca) {
            (Some((key, cert)), intermediate_ca) => {
                let files = TlsFiles { key, cert, intermediate_ca };
                self.worker.tls = Some(TlsSettings::load(&files, cfg!(feature = "http2"))?);
                tls_files = Some(files);
            }
            (None, Some(_)) => return invalid("ssl_intermediate_ca needs ssl_key_cert too".into()),
            (None, None) => {}
        }
        let credentials =
            Credentials::resolve(self.user.as_deref(), self.group.as_deref()).map_err(ServerError::InvalidOption)?;
        if let Some(upgrade) = &self.upgrade {
            check_program(&upgrade.program).map_err(ServerError::InvalidOption)?;
        }
        Ok(Server {
            credentials,
            upgrade: self.upgrade,
            listen: self.listen,
            router,
            worker: self.worker,
            supervisor: self.supervisor,
            pid_file: self.pid_file,
            fork_handlers: self.fork_handlers,
            setup_handler: self.setup_handler,
            on_reload: self.on_reload,
            defer_accept: self.defer_accept,
            socket_activation: self.socket_activation,
            tls_files,
        })
    }
}
