//! The hostile-request corpus: a few hundred malformed, ambiguous or abusive requests, each
//! sent raw on its own connection to a running classic pool.
//!
//! For every case: the answer is a 4xx/5xx or a close (a well-formed request gets its 2xx),
//! the connection ends within the harness's deadline (incomplete requests get `408` at the
//! header timeout, lowered here to 1 s), no request hidden behind ambiguous framing (always
//! `GET /smuggled`, which would be a 404) is ever answered, and a normal `GET /` on a new
//! connection is answered 200 afterwards. Across each family no worker dies (`workers_forked`
//! and the worker pids are unchanged, read from the scoreboard) and nothing panics.
//!
//! Every case has a name, so a failure says which one; `CORPUS_VERBOSE=1` prints what each
//! case was answered.

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use prefork_tests::{
    DEADLINE, HttpConnection, ServerProcess, TempPath, count, http_get, status_json, status_pids, wait_for,
};

/// The request hidden behind ambiguous framing. It would be answered 404, and nothing else in
/// a case carrying it targets a missing path: a 404 there means the hidden request was served.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// Workers in each family's pool (also its `--max-clients`, so the pool never forks more:
/// `workers_forked` only moves if a worker dies and is replaced).
const POOL: u32 = 6;

/// Cases run at once against one pool.
const CLIENTS: usize = 4;

/// What a case sends, in order.
#[derive(Clone, Debug)]
enum Step {
    Send(Vec<u8>),
    /// The client shuts its write side (a half-close).
    ShutWrite,
}

/// What a case must be answered (1xx interim answers are not counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// One 4xx/5xx answer, or a close without any.
    Reject,
    /// Exactly one answer, with this status.
    Status(u16),
    /// Exactly `n` answers, all 2xx.
    Ok(usize),
    /// `n` 2xx answers, then one 4xx/5xx or a close.
    OkThenReject(usize),
    /// Ambiguous framing with a hidden request: `good` 2xx answers for the requests before
    /// it, then at most one answer (the ambiguous request's, of any status), then a close.
    Smuggle { good: usize },
    /// Tolerated either way (the RFC allows both): at most one answer, of any status.
    Either,
    /// Not HTTP/1 at all (HTTP/2 frames): only that the server ends the connection.
    Closed,
}

#[derive(Clone, Debug)]
struct Case {
    name: String,
    steps: Vec<Step>,
    want: Want,
}

impl Case {
    fn new(name: impl Into<String>, bytes: impl AsRef<[u8]>, want: Want) -> Case {
        Case { name: name.into(), steps: vec![Step::Send(bytes.as_ref().to_vec())], want }
    }

    /// The same case, with the client shutting its write side after sending.
    fn half_closed(mut self) -> Case {
        self.steps.push(Step::ShutWrite);
        self
    }

    fn carries_smuggled(&self) -> bool {
        let needle = b"/smuggled";
        self.steps.iter().any(|step| match step {
            Step::Send(bytes) => bytes.windows(needle.len()).any(|w| w == needle),
            Step::ShutWrite => false,
        })
    }
}

/// How the server ended a case's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Closed,
    Reset,
    /// Still open at the deadline: the server hung.
    Open,
}

/// What the server sent back on one case's connection.
#[derive(Debug)]
struct Exchange {
    /// Final (non-1xx) statuses, in order.
    statuses: Vec<u16>,
    interim: usize,
    /// Bytes after the last whole response that do not make one.
    trailing: Option<String>,
    end: End,
    took: Duration,
}

/// Sends the case's steps (from a thread of its own, so that a server answering while the
/// client still writes cannot deadlock it) and reads everything until the server closes, or
/// the deadline passes.
fn exchange(addr: SocketAddr, case: &Case) -> Result<Exchange> {
    let started = Instant::now();
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).context("connecting")?;
    let writer = {
        let mut stream = stream.try_clone()?;
        let steps = case.steps.clone();
        thread::spawn(move || {
            for step in steps {
                let sent = match step {
                    Step::Send(bytes) => stream.write_all(&bytes),
                    Step::ShutWrite => stream.shutdown(Shutdown::Write),
                };
                // The server may close before it has read everything: that is its right.
                if sent.is_err() {
                    return;
                }
            }
        })
    };
    let mut raw = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let end = loop {
        let left = DEADLINE.saturating_sub(started.elapsed());
        if left.is_zero() {
            break End::Open;
        }
        stream.set_read_timeout(Some(left))?;
        match (&stream).read(&mut chunk) {
            Ok(0) => break End::Closed,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                break End::Open;
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break End::Reset,
            Err(e) => return Err(e).context("reading the answer"),
        }
    };
    let took = started.elapsed();
    // Unblocks the writer if the server stopped reading.
    let _ = stream.shutdown(Shutdown::Both);
    let _ = writer.join();
    let (statuses, interim, trailing) = parse_responses(&raw);
    Ok(Exchange { statuses, interim, trailing, end, took })
}

/// Splits what the server sent into responses: final statuses, the count of 1xx ones, and a
/// description of any bytes that are not a whole response.
fn parse_responses(mut raw: &[u8]) -> (Vec<u16>, usize, Option<String>) {
    let (mut statuses, mut interim) = (Vec::new(), 0);
    while !raw.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(raw) {
            Ok(httparse::Status::Complete(head)) => head,
            Ok(httparse::Status::Partial) => return (statuses, interim, Some(describe("incomplete response", raw))),
            Err(e) => return (statuses, interim, Some(describe(&format!("not a response ({e})"), raw))),
        };
        let status = response.code.unwrap_or(0);
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
        };
        if (100..200).contains(&status) {
            interim += 1;
            raw = &raw[head..];
            continue;
        }
        if header("transfer-encoding").is_some() {
            return (statuses, interim, Some(describe("a chunked response", raw)));
        }
        // Every answer of this server has a Content-Length (a HEAD answer's has no body: the
        // corpus sends HEAD only alone, where the rest is empty anyway).
        let length = header("content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(raw.len() - head);
        statuses.push(status);
        raw = &raw[(head + length).min(raw.len())..];
    }
    (statuses, interim, None)
}

fn describe(what: &str, raw: &[u8]) -> String {
    let shown = &raw[..raw.len().min(200)];
    format!("{what}: {} bytes, {:?}", raw.len(), String::from_utf8_lossy(shown))
}

/// Whether `exchange` is what `case` must get; the reason if not.
fn judge(case: &Case, exchange: &Exchange) -> Result<()> {
    let statuses = &exchange.statuses;
    let ok = |s: &u16| (200..300).contains(s);
    let error = |s: &u16| (400..600).contains(s);
    ensure!(exchange.end != End::Open, "still open after {DEADLINE:?} (answers so far: {statuses:?})");
    if case.want == Want::Closed {
        return Ok(());
    }
    if let Some(trailing) = &exchange.trailing {
        bail!("after answers {statuses:?}, {trailing}");
    }
    if case.carries_smuggled() {
        ensure!(!statuses.contains(&404), "the hidden GET /smuggled was answered: {statuses:?}");
    }
    match case.want {
        Want::Reject => {
            ensure!(statuses.len() <= 1 && statuses.iter().all(error), "want a 4xx/5xx or a close, got {statuses:?}")
        }
        Want::Status(status) => ensure!(statuses == &[status], "want exactly [{status}], got {statuses:?}"),
        Want::Ok(n) => {
            let good = statuses.iter().filter(|s| ok(s)).count();
            ensure!(
                statuses.len() == n && good == n,
                "want {n} 2xx answers, got {} ({})",
                statuses.len(),
                summary(statuses)
            )
        }
        Want::OkThenReject(n) => {
            let (first, rest) = statuses.split_at(statuses.len().min(n));
            ensure!(
                first.len() == n && first.iter().all(ok) && rest.len() <= 1 && rest.iter().all(error),
                "want {n} 2xx answers then a 4xx/5xx or a close, got {}",
                summary(statuses)
            )
        }
        Want::Smuggle { good } => {
            let (first, rest) = statuses.split_at(statuses.len().min(good));
            ensure!(
                first.len() == good && first.iter().all(ok) && rest.len() <= 1,
                "want {good} 2xx answers then at most one more, got {}",
                summary(statuses)
            )
        }
        Want::Either => ensure!(statuses.len() <= 1, "want at most one answer, got {statuses:?}"),
        Want::Closed => {}
    }
    Ok(())
}

/// Statuses in short: `[200 x1000, 400]`.
fn summary(statuses: &[u16]) -> String {
    let mut runs: Vec<(u16, usize)> = Vec::new();
    for &status in statuses {
        match runs.last_mut() {
            Some((last, n)) if *last == status => *n += 1,
            _ => runs.push((status, 1)),
        }
    }
    let runs: Vec<String> =
        runs.iter().map(|(s, n)| if *n == 1 { s.to_string() } else { format!("{s} x{n}") }).collect();
    format!("[{}]", runs.join(", "))
}

/// Runs one case and the normal request after it.
fn run_case(addr: SocketAddr, case: &Case) -> Result<()> {
    let exchange = exchange(addr, case)?;
    if std::env::var_os("CORPUS_VERBOSE").is_some() {
        let _ = writeln!(
            std::io::stderr(),
            "corpus {:<50} {} interim {} {:?} in {:?}",
            case.name,
            summary(&exchange.statuses),
            exchange.interim,
            exchange.end,
            exchange.took
        );
    }
    judge(case, &exchange)?;
    let after = http_get(addr, "/").context("GET / after the case")?;
    ensure!(after.status == 200, "GET / after the case was answered {}", after.status);
    Ok(())
}

/// Starts a pool, runs `cases` against it from a few clients at once, and checks that every
/// case got what it must, that no worker died and that nothing panicked.
fn run_corpus(family: &str, cases: Vec<Case>) -> Result<()> {
    run_corpus_with(family, cases, &[])
}

/// As [`run_corpus`], with the server started with `args` besides.
fn run_corpus_with(family: &str, cases: Vec<Case>, args: &[&str]) -> Result<()> {
    check_names(&cases)?;
    let pid_file = TempPath::new(&format!("corpus-{family}.pid"));
    let pool = POOL.to_string();
    let mut all = vec![
        "--max-clients",
        &pool,
        "--keepalive-timeout",
        "1s",
        "--body-read-timeout",
        "5s",
        "--pid-file",
        pid_file.as_str(),
    ];
    all.extend_from_slice(args);
    let server = ServerProcess::start_pool(POOL, 1, POOL, &all)?;
    let before = wait_for("every worker ready", DEADLINE, || {
        let status = status_json(&pid_file)?;
        Ok((count(&status, "idle") == u64::from(POOL)).then_some(status))
    })?;
    let total = cases.len();
    let queue = Mutex::new(cases.into_iter());
    let failures = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..CLIENTS {
            scope.spawn(|| {
                loop {
                    let Some(case) = queue.lock().unwrap().next() else { return };
                    if let Err(error) = run_case(server.addr(), &case) {
                        failures.lock().unwrap().push(format!("{}: {error:#}", case.name));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    let after = status_json(&pid_file)?;
    if count(&after, "workers_forked") != count(&before, "workers_forked") {
        failures.push(format!(
            "workers_forked went from {} to {}: a worker died",
            count(&before, "workers_forked"),
            count(&after, "workers_forked")
        ));
    }
    if status_pids(&after) != status_pids(&before) {
        failures.push(format!("worker pids changed: {:?} -> {:?}", status_pids(&before), status_pids(&after)));
    }
    let stderr = server.stderr();
    if stderr.contains("panicked") {
        failures.push(format!("the server panicked:\n{stderr}"));
    }
    ensure!(failures.is_empty(), "{family}: {} of {total} cases failed:\n{}", failures.len(), failures.join("\n"));
    Ok(())
}

fn check_names(cases: &[Case]) -> Result<()> {
    let mut seen = HashSet::new();
    for case in cases {
        ensure!(seen.insert(case.name.as_str()), "two cases are named {}", case.name);
    }
    Ok(())
}

mod http1;
mod other;

use http1::{control_byte_cases, get, overlong_cases, smuggling_cases};
use other::{
    expect_and_upgrade_cases, h2_cases, pipeline_and_half_closed_cases, route_cases, target_cases,
    version_and_protocol_cases,
};

// ----- The tests -----

#[test]
fn the_corpus_has_over_150_named_cases() -> Result<()> {
    let all: Vec<Case> = [
        smuggling_cases(),
        control_byte_cases(),
        overlong_cases(),
        version_and_protocol_cases(),
        target_cases(),
        expect_and_upgrade_cases(),
        pipeline_and_half_closed_cases(),
        route_cases(),
        h2_cases(),
    ]
    .concat();
    check_names(&all)?;
    ensure!(all.len() >= 150, "only {} cases", all.len());
    Ok(())
}

#[test]
fn request_smuggling_is_refused_or_closed() -> Result<()> {
    run_corpus("smuggling", smuggling_cases())
}

#[test]
fn control_bytes_and_overlong_parts_are_refused() -> Result<()> {
    run_corpus("bytes", [control_byte_cases(), overlong_cases()].concat())
}

#[test]
fn other_protocols_versions_and_targets_are_refused() -> Result<()> {
    run_corpus("protocols", [version_and_protocol_cases(), target_cases()].concat())
}

#[test]
fn expectations_upgrades_pipelines_and_half_closes() -> Result<()> {
    run_corpus("connections", [expect_and_upgrade_cases(), pipeline_and_half_closed_cases()].concat())
}

#[test]
fn hostile_http2_frames_end_in_a_close() -> Result<()> {
    run_corpus_with("h2c", h2_cases(), &["--http2"])
}

#[test]
fn built_in_routes_refuse_bad_parameters() -> Result<()> {
    run_corpus("routes", route_cases())
}

/// A keep-alive connection idle for a moment leaves its worker and waits parked, carrying the
/// bytes of its next request received so far: what arrives after must continue that request
/// exactly, neither losing nor repeating a byte.
#[test]
fn a_request_split_across_a_let_go_is_neither_lost_nor_smuggled() -> Result<()> {
    let pid_file = TempPath::new("corpus-let-go.pid");
    // A longer header timeout: the rest of the request follows a poll of the scoreboard.
    let server = ServerProcess::start_pool(
        2,
        1,
        2,
        &["--max-clients", "2", "--keepalive-timeout", "10s", "--pid-file", pid_file.as_str()],
    )?;
    let before = wait_for("every worker ready", DEADLINE, || {
        let status = status_json(&pid_file)?;
        Ok((count(&status, "idle") == 2).then_some(status))
    })?;
    let keep = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let splits: &[(&str, String, String, usize)] = &[
        ("head", format!("{keep}GET / HTTP/1.1\r\nHo"), "st: x\r\nConnection: close\r\n\r\n".into(), 1),
        (
            "header_name",
            format!("{keep}POST / HTTP/1.1\r\nHost: x\r\nContent-Len"),
            format!("gth: 10\r\n\r\nhelloworld{}", get("/")),
            2,
        ),
        ("stray_crlf", format!("{keep}\r\n"), get("/"), 1),
    ];
    for (name, first, rest, more) in splits {
        let mut connection = HttpConnection::open(server.addr())?;
        connection.send(first.as_bytes())?;
        let response = connection.read_response()?;
        ensure!(response.status == 200, "{name}: first answer {}", response.status);
        wait_parked(&pid_file)?;
        connection.send(rest.as_bytes())?;
        for n in 0..*more {
            let response = connection.read_response().with_context(|| format!("{name}: answer {}", n + 2))?;
            ensure!(response.status == 200, "{name}: answer {} was {}", n + 2, response.status);
        }
        ensure!(connection.closed_by_server_within(DEADLINE)?, "{name}: not closed after Connection: close");
    }
    // The ambiguous request's head is split by the let-go: it must still not reach /smuggled.
    let mut connection = HttpConnection::open(server.addr())?;
    let cl = 5 + SMUGGLED.len();
    connection.send(format!("{keep}POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {cl}\r\nTransfer-").as_bytes())?;
    ensure!(connection.read_response()?.status == 200, "smuggle: first answer");
    wait_parked(&pid_file)?;
    connection.send(format!("Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}").as_bytes())?;
    // One answer at most (to the ambiguous request, whatever its status), then a close.
    let mut answers = Vec::new();
    while let Ok(response) = connection.read_response() {
        answers.push(response.status);
    }
    ensure!(
        answers.len() <= 1 && !answers.contains(&404),
        "smuggle: after the ambiguous request, answers {answers:?} (a 404 is the hidden GET /smuggled)"
    );
    let after = status_json(&pid_file)?;
    ensure!(count(&after, "workers_forked") == count(&before, "workers_forked"), "a worker died");
    ensure!(!server.stderr().contains("panicked"), "the server panicked:\n{}", server.stderr());
    Ok(())
}

/// An HTTP/2 connection left idle after the preface and SETTINGS: at the keep-alive timeout the
/// server sends GOAWAY and a PING, then waits for the PING's answer, which never comes; the
/// connection, and with it a classic worker, stays taken (over 3 minutes measured), so as
/// many such clients as workers take the whole pool.
#[test]
fn an_idle_http2_connection_does_not_hold_its_worker() -> Result<()> {
    let server = ServerProcess::start_pool(1, 1, 1, &["--max-clients", "1", "--http2", "--keepalive-timeout", "1s"])?;
    let mut idle = TcpStream::connect(server.addr())?;
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")?;
    let mut normal = TcpStream::connect(server.addr())?;
    normal.set_read_timeout(Some(DEADLINE))?;
    normal.write_all(get("/").as_bytes())?;
    let mut answer = Vec::new();
    let read = normal.read_to_end(&mut answer);
    ensure!(answer.starts_with(b"HTTP/1.1 200"), "the only worker stayed with the idle h2c connection: {read:?}");
    Ok(())
}

/// Waits until the server holds a connection parked (here: the one idle keep-alive
/// connection, let go by its worker).
fn wait_parked(pid_file: &TempPath) -> Result<()> {
    wait_for("the idle connection to be parked", DEADLINE, || {
        Ok((count(&status_json(pid_file)?, "parked") >= 1).then_some(()))
    })
}
