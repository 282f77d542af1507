//! A small HTTP/1.1 load generator on hyper's client: N connections, each sending requests
//! back to back for a fixed time (or until told to stop), recording every failure and which
//! worker it hit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper::client::conn::http1;
use hyper::header::{CONNECTION, HOST};
use hyper_util::rt::TokioIo;
use prefork_tests::hello_pid;

/// What to send.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub connections: usize,
    pub duration: Duration,
    pub path: String,
    /// Reuse connections (otherwise `Connection: close`, one request per connection).
    pub keepalive: bool,
}

/// A request that got no response.
#[derive(Clone, Debug)]
pub struct Failure {
    /// When, since the load started.
    pub at: Duration,
    /// The worker that served this connection's previous response, if any.
    pub worker_pid: Option<u32>,
    /// The client's port of the connection it was sent on (none if the connection failed).
    pub local_port: Option<u16>,
    pub error: String,
}

/// What happened.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub ok: u64,
    pub bad_status: u64,
    pub failures: Vec<Failure>,
    pub elapsed: Duration,
}

impl LoadResult {
    pub fn requests_per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Steers a load started with [`run_until_stopped`] from another thread: how far it has got,
/// and when to stop.
#[derive(Debug, Default)]
pub struct LoadControl {
    stop: AtomicBool,
    answered: AtomicU64,
}

impl LoadControl {
    /// Responses received so far (any status).
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Ends the load (once it has run its minimum time).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// When the clients stop.
#[derive(Clone, Debug)]
struct Until {
    /// Not before this...
    earliest: Instant,
    /// ...then once told to, and at the latest at this.
    latest: Instant,
    control: Option<Arc<LoadControl>>,
}

impl Until {
    fn running(&self) -> bool {
        let now = Instant::now();
        match &self.control {
            None => now < self.latest,
            Some(control) => now < self.latest && (now < self.earliest || !control.stop.load(Ordering::Relaxed)),
        }
    }

    fn answered(&self) {
        if let Some(control) = &self.control {
            control.answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs the load on a single-threaded runtime (like `wrk -t1`) and returns when it is done.
pub fn run(spec: &LoadSpec) -> Result<LoadResult> {
    let start = Instant::now();
    run_clients(spec, start, Until { earliest: start, latest: start + spec.duration, control: None })
}

/// As [`run`], for at least `spec.duration` and then until `control` says stop, which a test
/// does once the states it waits for are reached, however long that takes; but never longer
/// than `limit` (a load must end by itself).
pub fn run_until_stopped(spec: &LoadSpec, control: Arc<LoadControl>, limit: Duration) -> Result<LoadResult> {
    let start = Instant::now();
    let until =
        Until { earliest: start + spec.duration, latest: start + limit.max(spec.duration), control: Some(control) };
    run_clients(spec, start, until)
}

fn run_clients(spec: &LoadSpec, start: Instant, until: Until) -> Result<LoadResult> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let clients: Vec<_> =
            (0..spec.connections).map(|_| tokio::spawn(client(spec.clone(), start, until.clone()))).collect();
        let mut total = LoadResult::default();
        for client in clients {
            let result = client.await?;
            total.ok += result.ok;
            total.bad_status += result.bad_status;
            total.failures.extend(result.failures);
        }
        total.elapsed = start.elapsed();
        total.failures.sort_by_key(|f| f.at);
        Ok(total)
    })
}

async fn client(spec: LoadSpec, start: Instant, until: Until) -> LoadResult {
    let mut result = LoadResult::default();
    let host = spec.addr.to_string();
    'connections: while until.running() {
        let stream = match tokio::net::TcpStream::connect(spec.addr).await {
            Ok(stream) => stream,
            Err(error) => {
                result.failures.push(Failure {
                    at: start.elapsed(),
                    worker_pid: None,
                    local_port: None,
                    error: format!("connect: {error}"),
                });
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local_port = stream.local_addr().ok().map(|a| a.port());
        let (mut sender, connection) = match http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(error) => {
                result.failures.push(Failure {
                    at: start.elapsed(),
                    worker_pid: None,
                    local_port,
                    error: format!("handshake: {error}"),
                });
                continue;
            }
        };
        tokio::spawn(connection);
        let mut worker_pid = None;
        while until.running() {
            // A connection the server closed between requests is not a failed request.
            if sender.ready().await.is_err() {
                continue 'connections;
            }
            let request = Request::get(spec.path.as_str())
                .header(HOST, &host)
                .header(CONNECTION, if spec.keepalive { "keep-alive" } else { "close" })
                .body(Empty::new())
                .expect("valid request");
            let response = match sender.send_request(request).await {
                Ok(response) => response,
                Err(error) => {
                    result.failures.push(Failure {
                        at: start.elapsed(),
                        worker_pid,
                        local_port,
                        error: error.to_string(),
                    });
                    continue 'connections;
                }
            };
            let status = response.status();
            let closing =
                response.headers().get(CONNECTION).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            match response.into_body().collect().await {
                Ok(body) => {
                    until.answered();
                    let body = body.to_bytes();
                    worker_pid = std::str::from_utf8(&body).ok().and_then(|b| hello_pid(b).ok()).or(worker_pid);
                    if status.is_success() {
                        result.ok += 1;
                    } else {
                        result.bad_status += 1;
                    }
                }
                Err(error) => {
                    result.failures.push(Failure {
                        at: start.elapsed(),
                        worker_pid,
                        local_port,
                        error: format!("body: {error}"),
                    });
                    continue 'connections;
                }
            }
            if !spec.keepalive || closing {
                continue 'connections;
            }
        }
        break;
    }
    result
}
