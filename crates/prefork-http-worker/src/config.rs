//! How a worker serves HTTP: transport, keep-alive, limits, hooks, recycling, the status page.

use std::time::Duration;

use http::HeaderMap;
use ipnet::IpNet;
use prefork_scoreboard::RecycleLimits;

use crate::hooks::{AccessLogFormat, Hooks};
use crate::tls::TlsSettings;

/// Per-worker HTTP settings.
///
/// With serde, a missing field takes its default, durations are written `"5s"`, sizes in bytes;
/// what code provides (TLS material, default headers, hooks) and what each worker computes
/// (its recycling limits) is left out.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Serve TLS with this configuration (SSLKEYCERT); `None`: cleartext.
    #[serde(skip)]
    pub tls: Option<TlsSettings>,
    /// Accept HTTP/2 with prior knowledge on cleartext connections (over TLS, HTTP/2 is
    /// negotiated by ALPN whenever the `http2` feature is built in).
    pub http2_cleartext: bool,
    /// Connections one worker serves at once. 1 (the default) is classic prefork: a busy
    /// worker does not accept. With more, async handlers run concurrently and the worker stops
    /// accepting once it holds this many.
    pub worker_connections: usize,
    /// Keep HTTP/1.1 connections open between requests (SimpleHTTP's KEEPALIVE).
    pub keepalive: bool,
    /// How long a connection may take to send a request's headers (slowloris), to finish a
    /// TLS handshake, and how long an idle keep-alive connection is kept. One timer for all:
    /// a prefork worker held by an idle or slow client serves nobody else.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Longest request line (`METHOD target VERSION`); longer gets `414 URI Too Long`.
    pub max_request_line: usize,
    /// Largest request head (request line and headers); larger gets `431`.
    pub max_header_size: usize,
    /// Most request headers; more gets `431`.
    pub max_headers: usize,
    /// Request bodies larger than this get `413 Payload Too Large`.
    pub max_body_size: usize,
    /// A request body not received within this gets `408 Request Timeout`.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// A request body slower than this many bytes per second (after the keep-alive timeout's
    /// allowance) gets `408` too: mod_reqtimeout's `MinRate`. 0: no minimum.
    pub body_min_rate: u64,
    /// Connections a classic worker holds between requests (still sending their request, or
    /// idle on keep-alive) before it closes the one held longest.
    pub max_parked: usize,
    /// A request running longer than this is ended by the worker (an async handler is
    /// dropped: `503`, or the connection closed if its response had begun). The supervisor
    /// kills a worker whose request runs this plus its grace (a blocking handler).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    /// An async handler that has not answered within this gets `503 Service Unavailable`
    /// (a blocking handler cannot be interrupted: see the supervisor's `request_timeout`).
    #[serde(with = "humantime_serde")]
    pub handler_timeout: Option<Duration>,
    /// When this worker asks to be replaced (requests, connections, lifetime, memory). It asks
    /// a little before the limit and keeps serving until the supervisor has a replacement
    /// ready and sends SIGTERM (see `WorkerShared::check_recycle_limits`).
    #[serde(skip)]
    pub recycle: RecycleLimits,
    /// Host name used to make request URIs absolute (SimpleHTTP's HOSTNAME).
    pub hostname: String,
    /// The port the server listens on, for absolute URIs.
    pub port: u16,
    /// Match DIR against the full request URI, leave it unchanged, and add no
    /// `Content-Length` of our own (SimpleHTTP's PROXYMODE).
    pub proxy_mode: bool,
    /// Headers added to every response that does not set them (SimpleHTTP's HEADERS).
    #[serde(skip)]
    pub default_headers: HeaderMap,
    /// LOGHANDLER, LOG2HANDLER, ERRORHANDLER.
    #[serde(skip)]
    pub hooks: Hooks,
    /// Log every request in this format, through `tracing` target `access`.
    pub access_log: Option<AccessLogFormat>,
    /// Path of the built-in status page (answered before the routes), `None` (the default)
    /// for none.
    pub status_path: Option<String>,
    /// Client networks allowed to read the status page (default: loopback only; unix-socket
    /// clients are always allowed: the socket's file permissions already chose them).
    pub status_allow: Vec<IpNet>,
    /// Path of the liveness probe (`200` while the supervisor lives and can fork, `503` once
    /// forking has halted), `None` (the default) for none.
    pub health_path: Option<String>,
    /// Path of the readiness probe (`200` once a generation is ready, `503` while starting or
    /// draining), `None` (the default) for none.
    pub ready_path: Option<String>,
}

impl WorkerConfig {
    /// The time a request may take in the worker: the shorter of `request_timeout` and
    /// `handler_timeout`.
    pub fn request_budget(&self) -> Option<Duration> {
        match (self.request_timeout, self.handler_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// `127.0.0.0/8` and `::1/128`.
pub fn loopback_networks() -> Vec<IpNet> {
    vec!["127.0.0.0/8".parse().expect("valid network"), "::1/128".parse().expect("valid network")]
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            tls: None,
            http2_cleartext: false,
            worker_connections: 1,
            keepalive: false,
            keepalive_timeout: Duration::from_secs(5),
            max_request_line: 8190,
            max_header_size: 64 * 1024,
            max_headers: 100,
            max_body_size: 16 * 1024 * 1024,
            body_read_timeout: Duration::from_secs(60),
            body_min_rate: 500,
            max_parked: 256,
            request_timeout: None,
            handler_timeout: None,
            recycle: RecycleLimits::default(),
            hostname: "localhost".to_owned(),
            port: 80,
            proxy_mode: false,
            default_headers: HeaderMap::new(),
            hooks: Hooks::default(),
            access_log: None,
            // The built-in pages are opt-in: a library user's own routes for these paths win.
            // (The `simplehttp-prefork` command turns them on.)
            status_path: None,
            status_allow: loopback_networks(),
            health_path: None,
            ready_path: None,
        }
    }
}
