//! How a worker serves HTTP: keep-alive, timeouts, limits, recycling, the status page.

use std::time::Duration;

use http::HeaderMap;
use ipnet::IpNet;
use prefork_scoreboard::RecycleLimits;

/// Per-worker HTTP settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Keep HTTP/1.1 connections open between requests (SimpleHTTP's KEEPALIVE).
    pub keepalive: bool,
    /// How long a connection may take to send a request's headers, and how long an idle
    /// keep-alive connection is kept. One timer does both (hyper's `header_read_timeout`):
    /// a prefork worker held by an idle or slow client serves nobody else.
    pub keepalive_timeout: Duration,
    /// When this worker asks to be replaced (requests, connections, lifetime, memory). It asks
    /// a little before the limit and keeps serving until the supervisor has a replacement
    /// ready and sends SIGTERM (see `WorkerShared::check_recycle_limits`).
    pub recycle: RecycleLimits,
    /// Request bodies larger than this get `413 Payload Too Large`.
    pub max_body_size: usize,
    /// Host name used to make request URIs absolute (SimpleHTTP's HOSTNAME).
    pub hostname: String,
    /// The port the server listens on, for absolute URIs.
    pub port: u16,
    /// Match DIR against the full request URI and leave it unchanged (SimpleHTTP's PROXYMODE).
    pub proxy_mode: bool,
    /// Headers added to every response that does not set them (SimpleHTTP's HEADERS).
    pub default_headers: HeaderMap,
    /// Path of the built-in status page, `None` to switch it off.
    pub status_path: Option<String>,
    /// Client networks allowed to read the status page (default: loopback only).
    pub status_allow: Vec<IpNet>,
}

/// `127.0.0.0/8` and `::1/128`.
pub fn loopback_networks() -> Vec<IpNet> {
    vec!["127.0.0.0/8".parse().expect("valid network"), "::1/128".parse().expect("valid network")]
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            keepalive: false,
            keepalive_timeout: Duration::from_secs(5),
            recycle: RecycleLimits::default(),
            max_body_size: 16 * 1024 * 1024,
            hostname: "localhost".to_owned(),
            port: 80,
            proxy_mode: false,
            default_headers: HeaderMap::new(),
            status_path: Some("/server-status".to_owned()),
            status_allow: loopback_networks(),
        }
    }
}
