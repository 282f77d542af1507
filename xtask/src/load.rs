//! A small HTTP/1.1 load generator on hyper's client: N connections, each sending requests
//! back to back for a fixed time (or until told to stop), recording every failure and which
//! worker it hit; and clients that misbehave (slow, malformed), one connection each.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
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

/// A load on its own thread, for at least its duration and then until told to finish (or
/// dropped: whatever fails leaves no load behind).
pub struct BackgroundLoad {
    control: Arc<LoadControl>,
    thread: Option<std::thread::JoinHandle<Result<LoadResult>>>,
}

impl Drop for BackgroundLoad {
    fn drop(&mut self) {
        self.control.stop();
    }
}

impl BackgroundLoad {
    /// Starts `spec`; it never runs past `limit` (a load must end by itself).
    pub fn start(spec: LoadSpec, limit: Duration) -> BackgroundLoad {
        let control = Arc::new(LoadControl::default());
        let steering = Arc::clone(&control);
        let thread = std::thread::spawn(move || run_until_stopped(&spec, steering, limit));
        BackgroundLoad { control, thread: Some(thread) }
    }

    /// Ends the load once it has run its duration (see [`finish`](Self::finish)).
    pub fn stop(&self) {
        self.control.stop();
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits (up to `timeout`) until the load has been answered `more` times from now: the
    /// server, or the cluster, serves it.
    pub fn wait_served(&self, more: u64, timeout: Duration) -> Result<()> {
        let target = self.control.answered() + more;
        prefork_tests::wait_for(&format!("{more} more responses to the load"), timeout, || {
            anyhow::ensure!(!self.is_finished(), "the load ended");
            Ok((self.control.answered() >= target).then_some(()))
        })
    }

    /// Stops the load (once it has run its duration) and returns what it saw.
    pub fn finish(mut self) -> Result<LoadResult> {
        self.control.stop();
        let thread = self.thread.take().ok_or_else(|| anyhow::anyhow!("the load was already finished"))?;
        thread.join().map_err(|_| anyhow::anyhow!("load thread panicked"))?
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

// Clients that misbehave, one connection each (the soak's slow and malformed clients): each
// says what the server made of it.

/// A misbehaving client gives up after this (then the server never answered it).
const MISBEHAVING_LIMIT: Duration = Duration::from_secs(30);

/// What a slow or malformed client came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Answered with this status.
    Status(u16),
    /// Closed by the server without an answer.
    Closed,
    /// Reset (its worker was killed, say).
    Reset,
    /// Closed or reset with no answer, on a connection a killed worker held.
    Killed,
    /// Nothing within the client's limit.
    NoAnswer,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Status(code) => write!(f, "{code}"),
            Outcome::Closed => write!(f, "closed"),
            Outcome::Reset => write!(f, "reset"),
            Outcome::Killed => write!(f, "closed by a kill"),
            Outcome::NoAnswer => write!(f, "NO ANSWER"),
        }
    }
}

/// Reads what the server says until it answers or closes, or `limit` passes.
pub fn outcome_of(stream: &mut TcpStream, limit: Duration) -> Outcome {
    let deadline = Instant::now() + limit;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return status_of(&received).map_or(Outcome::NoAnswer, Outcome::Status);
        }
        let _ = stream.set_read_timeout(Some(left.min(Duration::from_millis(500))));
        match stream.read(&mut buf) {
            Ok(0) => return status_of(&received).map_or(Outcome::Closed, Outcome::Status),
            Ok(n) => {
                received.extend_from_slice(&buf[..n]);
                if let Some(code) = status_of(&received) {
                    return Outcome::Status(code);
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return status_of(&received).map_or(Outcome::Reset, Outcome::Status);
            }
            Err(_) => return Outcome::Reset,
        }
    }
}

/// The status code of a response whose status line has arrived.
pub fn status_of(received: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(received.get(..received.iter().position(|b| *b == b'\n')?)?).ok()?;
    text.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

/// A side client's connection, and its outcome with the connection's client port.
pub fn side_client(addr: SocketAddr, client: impl FnOnce(&mut TcpStream) -> Outcome) -> (Outcome, Option<u16>) {
    let Ok(mut stream) = TcpStream::connect(addr) else { return (Outcome::Reset, None) };
    let port = stream.local_addr().ok().map(|a| a.port());
    (client(&mut stream), port)
}

/// Half a head, then nothing: the header timeout must close it (408).
pub fn slow_head(stream: &mut TcpStream) -> Outcome {
    if stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: sl").is_err() {
        return Outcome::Reset;
    }
    outcome_of(stream, MISBEHAVING_LIMIT)
}

/// A head announcing 64 KiB, then a byte every 200 ms (5 B/s): the minimum rate must end it.
pub fn slow_body(stream: &mut TcpStream) -> Outcome {
    if stream.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n").is_err() {
        return Outcome::Reset;
    }
    let deadline = Instant::now() + MISBEHAVING_LIMIT;
    while Instant::now() < deadline {
        // A byte, then whatever the server said meanwhile (its pace is this client's input).
        if stream.write_all(b"x").is_err() {
            return outcome_of(stream, Duration::from_secs(1));
        }
        match outcome_of(stream, Duration::from_millis(200)) {
            Outcome::NoAnswer => {}
            outcome => return outcome,
        }
    }
    Outcome::NoAnswer
}

/// A request that must not be served.
pub fn malformed(stream: &mut TcpStream, request: &'static [u8]) -> Outcome {
    if stream.write_all(request).is_err() {
        return Outcome::Reset;
    }
    outcome_of(stream, MISBEHAVING_LIMIT)
}
