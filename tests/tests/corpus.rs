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

// ----- The families -----

/// `POST /` with these header lines and this body.
fn post(headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut request = b"POST / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for header in headers {
        request.extend_from_slice(header.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    request
}

fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

/// Content-Length / Transfer-Encoding conflicts, duplicate and malformed lengths, odd
/// Transfer-Encoding values and header names, obs-fold.
fn smuggling_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    // CL.TE: the whole rest is the body by Content-Length, but chunked ends at once, leaving
    // the hidden request. TE.CL: the hidden request is a chunk's data, but Content-Length
    // ends the body before it.
    let cl_te_body = format!("0\r\n\r\n{SMUGGLED}");
    let chunk = format!("{:x}\r\n", SMUGGLED.len());
    let te_cl_body = format!("{chunk}{SMUGGLED}\r\n0\r\n\r\n");
    let te_values: &[(&str, &str)] = &[
        ("chunked", "chunked"),
        ("Chunked", "Chunked"),
        ("CHUNKED", "CHUNKED"),
        ("chunked_identity", "chunked, identity"),
        ("identity_chunked", "identity, chunked"),
        ("gzip_chunked", "gzip, chunked"),
        ("chunked_gzip", "chunked, gzip"),
        ("chunked_chunked", "chunked, chunked"),
        ("xchunked", "xchunked"),
        ("chunkedx", "chunkedx"),
        ("chunk", "chunk"),
        ("quoted", "\"chunked\""),
        ("chunked_semicolon", "chunked;"),
        ("identity", "identity"),
        ("empty", ""),
        ("comma_chunked", ",chunked"),
        ("chunked_comma", "chunked,"),
        ("chunked_tab", "chunked\t"),
        ("chunked_vtab", "chunked\x0b"),
        ("chunked_nul", "chunked\0"),
    ];
    for (name, value) in te_values {
        for (layout, cl, body) in
            [("cl_te", cl_te_body.len(), cl_te_body.as_str()), ("te_cl", chunk.len(), te_cl_body.as_str())]
        {
            let te = format!("Transfer-Encoding: {value}");
            let cl = format!("Content-Length: {cl}");
            cases.push(Case::new(
                format!("smuggle/{layout}/te_{name}/cl_first"),
                post(&[&cl, &te], body.as_bytes()),
                Want::Smuggle { good: 0 },
            ));
            cases.push(Case::new(
                format!("smuggle/{layout}/te_{name}/te_first"),
                post(&[&te, &cl], body.as_bytes()),
                Want::Smuggle { good: 0 },
            ));
        }
    }
    // Header names and repeats that a front end might read differently.
    let cl = format!("Content-Length: {}", cl_te_body.len());
    let te_headers: &[(&str, &[&str])] = &[
        ("space_before_colon", &["Transfer-Encoding : chunked"]),
        ("tab_before_colon", &["Transfer-Encoding\t: chunked"]),
        ("lower_case_name", &["transfer-encoding: chunked"]),
        ("underscore_name", &["Transfer_Encoding: chunked"]),
        ("no_space_after_colon", &["Transfer-Encoding:chunked"]),
        ("obs_fold_value", &["Transfer-Encoding:", " chunked"]),
        ("leading_space_line", &[" Transfer-Encoding: chunked"]),
        ("two_headers_chunked_identity", &["Transfer-Encoding: chunked", "Transfer-Encoding: identity"]),
        ("two_headers_identity_chunked", &["Transfer-Encoding: identity", "Transfer-Encoding: chunked"]),
        ("two_headers_chunked_chunked", &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"]),
        ("bare_lf_before", &["X-A: b\nTransfer-Encoding: chunked"]),
        ("bare_cr_before", &["X-A: b\rTransfer-Encoding: chunked"]),
    ];
    for (name, lines) in te_headers {
        let mut headers = vec![cl.as_str()];
        headers.extend_from_slice(lines);
        cases.push(Case::new(
            format!("smuggle/te_header/{name}"),
            post(&headers, cl_te_body.as_bytes()),
            Want::Smuggle { good: 0 },
        ));
    }
    cases.push(Case::new(
        "smuggle/te_on_http10",
        format!("POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{cl}\r\n\r\n{cl_te_body}"),
        Want::Reject,
    ));
    // Lengths: the body is exactly the hidden request, so any reading of the length short of
    // all of it would serve the hidden request.
    let n = SMUGGLED.len();
    let lengths: &[(&str, Vec<String>)] = &[
        ("zero_then_n", vec!["0".into(), n.to_string()]),
        ("n_then_zero", vec![n.to_string(), "0".into()]),
        ("list_zero_n", vec![format!("0, {n}")]),
        ("list_n_zero", vec![format!("{n}, 0")]),
        ("list_n_n", vec![format!("{n}, {n}")]),
        ("repeat_n_n", vec![n.to_string(), n.to_string()]),
        ("plus", vec![format!("+{n}")]),
        ("minus", vec![format!("-{n}")]),
        ("decimal_point", vec![format!("{n}.0")]),
        ("hex", vec![format!("0x{n:x}")]),
        ("two_numbers", vec![format!("{n} {n}")]),
        ("leading_zeros", vec![format!("000{n}")]),
        ("empty", vec![String::new()]),
        ("exponent", vec!["3.1e1".into()]),
        ("nul_after", vec![format!("{n}\0")]),
        ("u64_max", vec![u64::MAX.to_string()]),
        ("u64_overflow", vec!["18446744073709551616".into()]),
        ("huge", vec!["9".repeat(40)]),
        ("trailing_comma", vec![format!("{n},")]),
        ("leading_comma", vec![format!(",{n}")]),
    ];
    for (name, values) in lengths {
        let lines: Vec<String> = values.iter().map(|v| format!("Content-Length: {v}")).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        cases.push(Case::new(
            format!("smuggle/content_length/{name}"),
            post(&lines, SMUGGLED.as_bytes()),
            Want::Smuggle { good: 0 },
        ));
    }
    for (name, lines) in [
        ("space_before_colon", vec![format!("Content-Length : {n}")]),
        ("obs_fold", vec!["Content-Length: 0".into(), format!(" {n}")]),
        ("obs_fold_tab", vec!["Content-Length:".into(), format!("\t{n}")]),
    ] {
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        cases.push(Case::new(
            format!("smuggle/content_length/{name}"),
            post(&lines, SMUGGLED.as_bytes()),
            Want::Smuggle { good: 0 },
        ));
    }
    // Not a length at all: the body is empty, and what follows is a pipelined request.
    cases.push(Case::new(
        "smuggle/content_length/underscore_name_is_not_a_length",
        post(&[&format!("Content_Length: {}", get("/").len())], get("/").as_bytes()),
        Want::Ok(2),
    ));
    // obs-fold elsewhere: a continuation line is refused (RFC 9112 §5.2 allows a 400).
    for (name, head) in [
        ("host_space", "GET / HTTP/1.1\r\nHost: x\r\n y\r\n\r\n"),
        ("host_tab", "GET / HTTP/1.1\r\nHost: x\r\n\ty\r\n\r\n"),
        ("first_line", "GET / HTTP/1.1\r\n X-A: b\r\nHost: x\r\n\r\n"),
        ("after_empty_value", "GET / HTTP/1.1\r\nHost: x\r\nX-A:\r\n b\r\n\r\n"),
        ("folded_request_line", "GET /\r\n HTTP/1.1\r\nHost: x\r\n\r\n"),
    ] {
        cases.push(Case::new(format!("obs_fold/{name}"), head, Want::Reject));
    }
    cases.extend(chunked_cases());
    cases
}

/// Chunked bodies with bad sizes, extensions, data and trailers; the hidden request follows
/// each (and `Connection: close` makes anything after the first request off limits).
fn chunked_cases() -> Vec<Case> {
    let long_extension = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(20_000));
    let many_trailers = format!("0\r\n{}\r\n", "X-T: y\r\n".repeat(2_000));
    let bodies: &[(&str, &str, Want)] = &[
        ("valid", "5\r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 1 }),
        ("valid_extension", "5;a=b\r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 1 }),
        ("valid_trailer", "5\r\nhello\r\n0\r\nX-T: y\r\n\r\n", Want::Smuggle { good: 1 }),
        ("negative", "-1\r\nhello\r\n0\r\n\r\n", Want::Reject),
        ("hex_prefix", "0x5\r\nhello\r\n0\r\n\r\n", Want::Reject),
        ("not_hex", "g\r\nhello\r\n0\r\n\r\n", Want::Reject),
        ("overflow", "fffffffffffffffff\r\nhello\r\n0\r\n\r\n", Want::Reject),
        ("u64_max", "ffffffffffffffff\r\nhello\r\n0\r\n\r\n", Want::Reject),
        ("leading_zeros", "0000000000000000000000000005\r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 0 }),
        ("leading_space", " 5\r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 0 }),
        ("trailing_space", "5 \r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 0 }),
        ("empty_size", "\r\nhello\r\n0\r\n\r\n", Want::Reject),
        ("empty_extension", "5;\r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 0 }),
        ("unterminated_quote_extension", "5;a=\"b\r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 0 }),
        ("nul_in_extension", "5;a\0b\r\nhello\r\n0\r\n\r\n", Want::Smuggle { good: 0 }),
        ("long_extension", &long_extension, Want::Smuggle { good: 0 }),
        ("data_too_long", "5\r\nhelloXX\r\n0\r\n\r\n", Want::Reject),
        ("data_too_short", "5\r\nhell\r\n0\r\n\r\n", Want::Reject),
        ("bare_lf", "5\nhello\n0\n\n", Want::Smuggle { good: 0 }),
        ("bare_cr", "5\rhello\r0\r\r", Want::Reject),
        ("nul_in_trailer", "0\r\nX-T: a\0b\r\n\r\n", Want::Smuggle { good: 0 }),
        ("content_length_trailer", "0\r\nContent-Length: 99\r\n\r\n", Want::Smuggle { good: 0 }),
        ("many_trailers", &many_trailers, Want::Smuggle { good: 0 }),
        ("missing_last_chunk", "5\r\nhello\r\n\r\n", Want::Reject),
    ];
    let mut cases = Vec::new();
    for (name, body, want) in bodies {
        let body = format!("{body}{SMUGGLED}");
        cases.push(Case::new(
            format!("chunked/{name}"),
            post(&["Transfer-Encoding: chunked", "Connection: close"], body.as_bytes()),
            *want,
        ));
    }
    // Keep-alive: a valid chunked body and a pipelined request after it are both answered.
    let valid_then_next = format!("5\r\nhello\r\n0\r\n\r\n{}", get("/"));
    cases.push(Case::new(
        "chunked/valid_then_pipelined",
        post(&["Transfer-Encoding: chunked"], valid_then_next.as_bytes()),
        Want::Ok(2),
    ));
    // Unfinished: the body's minimum rate (or the client's half-close) ends it.
    cases.push(Case::new("chunked/unfinished", post(&["Transfer-Encoding: chunked"], b"5\r\nhello\r\n"), Want::Reject));
    cases.push(
        Case::new("chunked/unfinished_half_closed", post(&["Transfer-Encoding: chunked"], b"5\r\nhel"), Want::Reject)
            .half_closed(),
    );
    cases
}

/// NUL and control bytes in each part of a request.
fn control_byte_cases() -> Vec<Case> {
    let bytes: &[(&str, u8)] = &[
        ("nul", 0x00),
        ("soh", 0x01),
        ("backspace", 0x08),
        ("lf", 0x0a),
        ("vtab", 0x0b),
        ("formfeed", 0x0c),
        ("cr", 0x0d),
        ("escape", 0x1b),
        ("del", 0x7f),
        ("x80", 0x80),
        ("xff", 0xff),
    ];
    let mut cases = Vec::new();
    for &(byte_name, byte) in bytes {
        let b = [byte];
        let with = |before: &[u8], after: &[u8]| [before, &b[..], after].concat();
        let parts: [(&str, Vec<u8>, Want); 8] = [
            ("method", with(b"G", b"ET / HTTP/1.1\r\nHost: x\r\n\r\n"), Want::Reject),
            ("target", with(b"GET /", b"x HTTP/1.1\r\nHost: x\r\n\r\n"), Want::Reject),
            ("version", with(b"GET / HTTP/1.", b"1\r\nHost: x\r\n\r\n"), Want::Reject),
            ("header_name", with(b"GET / HTTP/1.1\r\nHost: x\r\nX-", b"A: b\r\n\r\n"), Want::Reject),
            (
                "header_value",
                with(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a", b"b\r\nConnection: close\r\n\r\n"),
                // obs-text (0x80-0xff) is allowed in a field value (RFC 9110 §5.5).
                if byte >= 0x80 { Want::Ok(1) } else { Want::Reject },
            ),
            // A bare LF may end a line (RFC 9112 §2.2): here it ends the head, and the CRLFs
            // after it are the start of a next request, timed out.
            (
                "header_line",
                with(b"GET / HTTP/1.1\r\nHost: x\r\n", b"\r\n\r\n"),
                if byte == b'\n' { Want::OkThenReject(1) } else { Want::Reject },
            ),
            // An empty line before the request line is skipped (RFC 9112 §2.2).
            (
                "before_request_line",
                with(b"", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
                if byte == b'\n' { Want::Ok(1) } else { Want::Reject },
            ),
            (
                "body",
                with(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\na", b"b"),
                Want::Ok(1),
            ),
        ];
        for (part, request, want) in parts {
            cases.push(Case::new(format!("control/{part}/{byte_name}"), request, want));
        }
    }
    cases
}

/// Request lines, header names and values, and heads past 8190 bytes and 64 KiB.
fn overlong_cases() -> Vec<Case> {
    // "GET " + target + " HTTP/1.1" is 13 bytes besides the target.
    let line = |len: usize| format!("GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "a".repeat(len - 14));
    let header =
        |name: &str, value: &str| format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{name}: {value}\r\n\r\n");
    let headers = |n: usize, value_len: usize| {
        let value = "v".repeat(value_len);
        let lines: String = (0..n).map(|i| format!("X-{i}: {value}\r\n")).collect();
        format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{lines}\r\n")
    };
    let mut cases = vec![
        // The request line limit (8190 by default) and hyper's own URI and head limits.
        Case::new("overlong/request_line_8190", line(8190), Want::Status(404)),
        Case::new("overlong/request_line_8191", line(8191), Want::Status(414)),
        Case::new("overlong/request_line_8192", line(8192), Want::Status(414)),
        Case::new("overlong/request_line_9000", line(9000), Want::Status(414)),
        Case::new("overlong/request_line_65536", line(65536), Want::Reject),
        Case::new("overlong/request_line_70000", line(70_000), Want::Reject),
        Case::new("overlong/request_line_200000", line(200_000), Want::Reject),
        Case::new("overlong/method_9000", format!("{} / HTTP/1.1\r\nHost: x\r\n\r\n", "A".repeat(9000)), Want::Reject),
        Case::new(
            "overlong/version_9000",
            format!("GET / HTTP/1.{}\r\nHost: x\r\n\r\n", "1".repeat(9000)),
            Want::Reject,
        ),
        Case::new("overlong/unterminated_line_200000", format!("GET /{}", "a".repeat(200_000)), Want::Reject),
        // Header names and values: only the whole head is limited (64 KiB by default).
        Case::new("overlong/header_name_8191", header(&"N".repeat(8191), "v"), Want::Ok(1)),
        Case::new("overlong/header_name_70000", header(&"N".repeat(70_000), "v"), Want::Reject),
        Case::new("overlong/header_value_8191", header("X-A", &"v".repeat(8191)), Want::Ok(1)),
        Case::new("overlong/header_value_65536", header("X-A", &"v".repeat(65_536)), Want::Reject),
        Case::new("overlong/header_value_200000", header("X-A", &"v".repeat(200_000)), Want::Reject),
        Case::new(
            "overlong/unterminated_header_200000",
            format!("GET / HTTP/1.1\r\nHost: x\r\nX-A: {}", "v".repeat(200_000)),
            Want::Reject,
        ),
        Case::new("overlong/head_60000", headers(50, 1200), Want::Ok(1)),
        Case::new("overlong/head_72000", headers(60, 1200), Want::Status(431)),
        // The header count (100 by default, Host and Connection included).
        Case::new("overlong/headers_100", headers(98, 1), Want::Ok(1)),
        Case::new("overlong/headers_101", headers(99, 1), Want::Status(431)),
        Case::new("overlong/headers_1000", headers(1000, 1), Want::Status(431)),
        Case::new("overlong/headers_10000_empty", headers(10_000, 0), Want::Reject),
        Case::new(
            "overlong/leading_empty_lines_70000",
            format!("{}GET / HTTP/1.1\r\nHost: x\r\n\r\n", "\r\n".repeat(35_000)),
            Want::Reject,
        ),
        // A body declared over the limit: 413 from its length alone, nothing read.
        Case::new("overlong/body_over_limit", post(&["Content-Length: 20000000"], b""), Want::Status(413)),
    ];
    cases.push(Case::new("overlong/leading_empty_line", format!("\r\n{}", get("/")), Want::Ok(1)));
    cases
}

/// Protocol versions, and bytes of other protocols on the cleartext HTTP/1 port.
fn version_and_protocol_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (name, version) in [
        ("http_0_9", "HTTP/0.9"),
        ("http_1_2", "HTTP/1.2"),
        ("http_2_0", "HTTP/2.0"),
        ("http_2", "HTTP/2"),
        ("http_3_0", "HTTP/3.0"),
        ("http_1_10", "HTTP/1.10"),
        ("http_01_1", "HTTP/01.1"),
        ("http_1_1_1", "HTTP/1.1.1"),
        ("lower_case", "http/1.1"),
        ("https", "HTTPS/1.1"),
        ("http_1_x", "HTTP/1.x"),
        ("http_9_9", "HTTP/9.9"),
        ("http_slash", "HTTP/"),
        ("trailing_space", "HTTP/1.1 "),
        ("extra_word", "HTTP/1.1 extra"),
    ] {
        cases.push(Case::new(format!("version/{name}"), format!("GET / {version}\r\nHost: x\r\n\r\n"), Want::Reject));
    }
    cases.extend([
        Case::new("version/http_0_9_simple_request", "GET /\r\n\r\n", Want::Reject),
        Case::new("version/http_0_9_half_closed", "GET /\r\n", Want::Reject).half_closed(),
        Case::new("version/leading_space", " GET / HTTP/1.1\r\nHost: x\r\n\r\n", Want::Reject),
        Case::new("version/double_spaces", "GET  /  HTTP/1.1\r\nHost: x\r\n\r\n", Want::Reject),
        Case::new("version/tabs", "GET\t/\tHTTP/1.1\r\nHost: x\r\n\r\n", Want::Reject),
        Case::new("version/http_1_0", "GET / HTTP/1.0\r\n\r\n", Want::Ok(1)),
        // RFC 9112 §3.2 wants a 400 for these; hyper serves them (noted, not an attack).
        Case::new("version/http_1_1_without_host", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", Want::Either),
        Case::new(
            "version/http_1_1_two_hosts",
            "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n",
            Want::Either,
        ),
    ]);
    // HTTP/2 on a server without --http2.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
    cases.extend([
        Case::new("h2/preface", &preface, Want::Reject),
        Case::new("h2/preface_and_settings", [&preface[..], &settings].concat(), Want::Reject),
        Case::new("h2/preface_half", "PRI * HTTP/2.0\r\n\r\n", Want::Reject),
        Case::new("h2/preface_start", "PRI * HTTP/2", Want::Reject),
        Case::new("h2/preface_bad_tail", "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", Want::Reject),
        Case::new("h2/settings_frame_alone", settings, Want::Reject),
    ]);
    // TLS on the cleartext port.
    cases.extend([
        Case::new("tls/client_hello", client_hello(), Want::Reject),
        Case::new("tls/client_hello_half_closed", client_hello(), Want::Reject).half_closed(),
        Case::new("tls/record_header_only", [0x16u8, 0x03, 0x01, 0x02, 0x00], Want::Reject),
        Case::new("tls/one_byte", [0x16u8], Want::Reject),
        Case::new(
            "tls/sslv2_hello",
            [0x80u8, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10, 0x07, 0x00, 0xc0],
            Want::Reject,
        ),
    ]);
    // Noise.
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    cases.extend([
        Case::new("noise/every_byte", all_bytes, Want::Reject),
        Case::new("noise/ff_1k", [0xffu8; 1024], Want::Reject),
        Case::new("noise/nul_1k", [0u8; 1024], Want::Reject),
        Case::new("noise/empty_lines_only", "\r\n\r\n\r\n", Want::Reject),
        Case::new("noise/utf8_method", "ĞET / HTTP/1.1\r\nHost: x\r\n\r\n", Want::Reject),
    ]);
    cases
}

/// HTTP/2 with prior knowledge on a server started with `--http2`: broken frames, a rapid-reset
/// burst, and HTTP/1 on the same port. A connection the client leaves open after its frames
/// is half-closed here: an idle one is never closed (the known bug of
/// `an_idle_http2_connection_does_not_hold_its_worker`).
fn h2_cases() -> Vec<Case> {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    };
    let settings = frame(4, 0, 0, &[]);
    // GET / with authority "x", from HPACK's static table; END_STREAM | END_HEADERS.
    let request = |stream: u32| frame(1, 5, stream, &[0x82, 0x86, 0x84, 0x41, 0x01, b'x']);
    let rst = |stream: u32| frame(3, 0, stream, &8u32.to_be_bytes());
    let with = |frames: &[Vec<u8>]| [&[preface.clone(), settings.clone()][..], frames].concat().concat();
    let rapid_reset: Vec<Vec<u8>> = (0..200u32).flat_map(|i| [request(2 * i + 1), rst(2 * i + 1)]).collect();
    vec![
        Case::new("h2c/a_request_half_closed", with(&[request(1)]), Want::Closed).half_closed(),
        Case::new("h2c/settings_half_closed", with(&[]), Want::Closed).half_closed(),
        Case::new("h2c/bad_hpack", with(&[frame(1, 5, 1, &[0xff; 5])]), Want::Closed),
        Case::new("h2c/data_on_stream_0", with(&[frame(0, 1, 0, b"hello")]), Want::Closed),
        Case::new("h2c/headers_on_stream_0", with(&[frame(1, 5, 0, &[0x82])]), Want::Closed),
        Case::new("h2c/even_stream", with(&[request(2)]), Want::Closed),
        Case::new("h2c/oversized_frame", with(&[vec![0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1]]), Want::Closed),
        Case::new("h2c/zero_window_update", with(&[frame(8, 0, 0, &[0; 4])]), Want::Closed),
        Case::new("h2c/settings_bad_length", with(&[frame(4, 0, 0, &[0; 5])]), Want::Closed),
        Case::new("h2c/unknown_frame_type", with(&[frame(0xfe, 0, 1, b"?"), request(1)]), Want::Closed).half_closed(),
        Case::new("h2c/continuation_without_headers", with(&[frame(9, 4, 1, &[0x82])]), Want::Closed),
        Case::new("h2c/rapid_reset_200", with(&rapid_reset), Want::Closed),
        Case::new("h2c/preface_bad_tail", "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", Want::Closed),
        Case::new("h2c/preface_only_half_closed", preface.clone(), Want::Closed).half_closed(),
        Case::new("h2c/http1_still_served", get("/"), Want::Ok(1)),
        Case::new("h2c/http1_with_nul", "GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n", Want::Reject),
    ]
}

/// A TLS 1.2 ClientHello record with a server name, as a browser's would start.
fn client_hello() -> Vec<u8> {
    let server_name = b"localhost";
    let mut sni = vec![0x00, 0x00]; // extension type: server_name
    let list_len = server_name.len() + 3;
    sni.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    sni.extend_from_slice(&(list_len as u16).to_be_bytes());
    sni.push(0); // host_name
    sni.extend_from_slice(&(server_name.len() as u16).to_be_bytes());
    sni.extend_from_slice(server_name);
    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // session id
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2f, 0x13, 0x01]); // cipher suites
    hello.extend_from_slice(&[0x01, 0x00]); // compression: null
    hello.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    hello.extend_from_slice(&sni);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Absolute-form, asterisk-form and authority-form targets, and odd methods.
fn target_cases() -> Vec<Case> {
    let request =
        |method: &str, target: &str| format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    vec![
        Case::new("target/absolute_form", request("GET", "http://x/"), Want::Ok(1)),
        Case::new("target/absolute_form_other_host", request("GET", "https://evil.example/"), Want::Ok(1)),
        Case::new("target/absolute_form_no_path", request("GET", "http://x"), Want::Either),
        Case::new("target/absolute_form_userinfo", request("GET", "http://user:pw@x/"), Want::Either),
        Case::new("target/absolute_form_bad_port", request("GET", "http://x:99999/"), Want::Either),
        Case::new("target/absolute_form_missing_path", request("GET", "http://x/nothing-here"), Want::Status(404)),
        Case::new("target/scheme_only", request("GET", "http:"), Want::Reject),
        Case::new("target/asterisk_get", request("GET", "*"), Want::Reject),
        Case::new("target/asterisk_options", request("OPTIONS", "*"), Want::Reject),
        Case::new("target/connect_authority", request("CONNECT", "x:443"), Want::Reject),
        Case::new("target/connect_loopback_ssh", request("CONNECT", "127.0.0.1:22"), Want::Reject),
        // Served by `/` (hyper takes a 2xx to CONNECT as the tunnel, then closes it).
        Case::new("target/connect_path", request("CONNECT", "/"), Want::Either),
        Case::new(
            "target/connect_path_then_smuggled",
            format!("CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}"),
            Want::Smuggle { good: 0 },
        ),
        Case::new("target/authority_form_get", request("GET", "x:443"), Want::Reject),
        Case::new("target/double_slash", request("GET", "//x/"), Want::Reject),
        Case::new("target/dot_segments", request("GET", "/../../etc/passwd"), Want::Reject),
        Case::new("target/relative", request("GET", "../"), Want::Reject),
        Case::new("target/percent_nul", request("GET", "/%00"), Want::Reject),
        Case::new("target/bad_percent", request("GET", "/%zz"), Want::Reject),
        Case::new("target/fragment", request("GET", "/#x"), Want::Either),
        Case::new("target/query_only", request("GET", "?x"), Want::Reject),
        Case::new("target/empty", "GET  HTTP/1.1\r\nHost: x\r\n\r\n", Want::Reject),
        Case::new("target/backslash", request("GET", "/\\"), Want::Reject),
        Case::new("target/empty_query", request("GET", "/?"), Want::Ok(1)),
        Case::new("method/head", request("HEAD", "/"), Want::Ok(1)),
        Case::new("method/lower_case", request("get", "/"), Want::Either),
        Case::new("method/unknown", request("FOO", "/"), Want::Either),
        Case::new("method/trace", request("TRACE", "/"), Want::Either),
        Case::new("method/bad_token", request("GE(T", "/"), Want::Reject),
    ]
}

/// `Expect` and `Upgrade` variants.
fn expect_and_upgrade_cases() -> Vec<Case> {
    let ws = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13";
    let h2c = "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA";
    let upgrade_get = |headers: &str| format!("GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n");
    let preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    vec![
        Case::new(
            "expect/100_continue_with_body",
            post(&["Expect: 100-continue", "Content-Length: 5", "Connection: close"], b"hello"),
            Want::Ok(1),
        ),
        Case::new(
            "expect/100_continue_no_body",
            post(&["Expect: 100-continue", "Content-Length: 5"], b""),
            Want::Reject,
        ),
        Case::new(
            "expect/100_continue_no_body_half_closed",
            post(&["Expect: 100-continue", "Content-Length: 5"], b""),
            Want::Reject,
        )
        .half_closed(),
        Case::new(
            "expect/100_continue_mixed_case",
            post(&["Expect: 100-Continue", "Content-Length: 5", "Connection: close"], b"hello"),
            Want::Ok(1),
        ),
        Case::new(
            "expect/100_continue_chunked",
            post(
                &["Expect: 100-continue", "Transfer-Encoding: chunked", "Connection: close"],
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
            Want::Ok(1),
        ),
        // 413 at once, without the `100 Continue` that would invite the upload.
        Case::new(
            "expect/100_continue_over_limit",
            post(&["Expect: 100-continue", "Content-Length: 20000000"], b""),
            Want::Status(413),
        ),
        Case::new(
            "expect/100_continue_get",
            "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            Want::Ok(1),
        ),
        // Unknown expectations: RFC 9110 §10.1.1 allows a 417, or serving the request.
        Case::new(
            "expect/unknown",
            post(&["Expect: foo", "Content-Length: 5", "Connection: close"], b"hello"),
            Want::Either,
        ),
        Case::new(
            "expect/100_continue_and_unknown",
            post(&["Expect: 100-continue, foo", "Content-Length: 5", "Connection: close"], b"hello"),
            Want::Either,
        ),
        Case::new("expect/empty", post(&["Expect:", "Content-Length: 5", "Connection: close"], b"hello"), Want::Either),
        Case::new(
            "expect/http_1_0",
            "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
            Want::Either,
        ),
        Case::new(
            "expect/100_continue_then_smuggled",
            post(
                &["Expect: 100-continue", "Content-Length: 5", "Connection: close"],
                format!("hello{SMUGGLED}").as_bytes(),
            ),
            Want::Smuggle { good: 1 },
        ),
        // Upgrades: none is supported, so the request is served as plain HTTP/1.1 (or refused).
        Case::new("upgrade/h2c", upgrade_get(h2c), Want::Either),
        Case::new("upgrade/h2c_post", post(&[h2c, "Content-Length: 5"], b"hello"), Want::Either),
        Case::new("upgrade/h2c_then_preface", format!("{}{preface}", upgrade_get(h2c)), Want::OkThenReject(1)),
        Case::new("upgrade/websocket", upgrade_get(ws), Want::Either),
        Case::new(
            "upgrade/websocket_then_frame",
            [upgrade_get(ws).as_bytes(), &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]].concat(),
            Want::OkThenReject(1),
        ),
        Case::new("upgrade/websocket_http_1_0", format!("GET / HTTP/1.0\r\n{ws}\r\n\r\n"), Want::Either),
        Case::new("upgrade/connection_upgrade_only", upgrade_get("Connection: Upgrade"), Want::Either),
        Case::new("upgrade/nul_protocol", upgrade_get("Upgrade: h\0c\r\nConnection: Upgrade"), Want::Reject),
        Case::new(
            "upgrade/connect_with_upgrade",
            "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            Want::Reject,
        ),
        Case::new(
            "upgrade/websocket_then_smuggled",
            format!("{}{SMUGGLED}", upgrade_get(&format!("{ws}\r\nContent-Length: {}", SMUGGLED.len()))),
            Want::Smuggle { good: 0 },
        ),
    ]
}

/// Long pipelines, pipelines with a bad or ambiguous request in the middle, and half-closed
/// and unfinished requests.
fn pipeline_and_half_closed_cases() -> Vec<Case> {
    let keep = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let pipeline = |n: usize| format!("{}{}", keep.repeat(n - 1), get("/"));
    let ambiguous = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}",
        5 + SMUGGLED.len()
    );
    let differing_lengths = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    let posts: String =
        (0..100).map(|_| "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").collect::<String>();
    // Sent in 3-byte writes.
    let trickled: Vec<Step> = pipeline(20).as_bytes().chunks(3).map(|c| Step::Send(c.to_vec())).collect();
    vec![
        Case::new("pipeline/1000_gets", pipeline(1000), Want::Ok(1000)),
        Case::new("pipeline/5000_gets_past_the_parking_cap", pipeline(5000), Want::Ok(5000)),
        Case::new("pipeline/100_posts", format!("{posts}{}", get("/")), Want::Ok(101)),
        Case::new("pipeline/trickled_in_3_byte_writes", "", Want::Ok(20)).with_steps(trickled),
        Case::new(
            "pipeline/nul_request_in_the_middle",
            format!("{}GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n{}", keep.repeat(50), pipeline(50)),
            Want::OkThenReject(50),
        ),
        Case::new(
            "pipeline/http_0_9_in_the_middle",
            format!("{}GET /\r\n\r\n{}", keep.repeat(10), pipeline(10)),
            Want::OkThenReject(10),
        ),
        Case::new(
            "pipeline/cl_te_smuggle_in_the_middle",
            format!("{}{ambiguous}{}", keep.repeat(10), pipeline(10)),
            Want::Smuggle { good: 10 },
        ),
        Case::new(
            "pipeline/differing_lengths_in_the_middle",
            format!("{}{differing_lengths}{}", keep.repeat(10), pipeline(10)),
            Want::Smuggle { good: 10 },
        ),
        Case::new("pipeline/after_connection_close", format!("{}{}", get("/"), pipeline(10)), Want::Ok(1)),
        Case::new("pipeline/http_1_0_without_keep_alive", "GET / HTTP/1.0\r\n\r\n".repeat(3), Want::Ok(1)),
        // Half-closed: the client shuts its write side after its request.
        Case::new("half_closed/complete_get", keep, Want::Either).half_closed(),
        Case::new("half_closed/complete_post", post(&["Content-Length: 5"], b"hello"), Want::Either).half_closed(),
        Case::new("half_closed/three_pipelined", keep.repeat(3), Want::Ok(3)).half_closed(),
        Case::new("half_closed/async_handler", "GET /sleep/50 HTTP/1.1\r\nHost: x\r\n\r\n", Want::Either).half_closed(),
        Case::new("half_closed/nothing", "", Want::Reject).half_closed(),
        Case::new("half_closed/partial_request_line", "GET / HT", Want::Reject).half_closed(),
        Case::new("half_closed/partial_head", "GET / HTTP/1.1\r\nHost: x\r\n", Want::Reject).half_closed(),
        Case::new("half_closed/partial_body", post(&["Content-Length: 10"], b"hello"), Want::Reject).half_closed(),
        Case::new("half_closed/empty_line", "\r\n", Want::Reject).half_closed(),
        // Unfinished, the client still there: 408 at the header timeout (or the body's rate).
        Case::new("unfinished/one_byte", "G", Want::Status(408)),
        Case::new("unfinished/request_line", "GET / HTTP/1.1\r\n", Want::Status(408)),
        Case::new("unfinished/head", "GET / HTTP/1.1\r\nHost: x\r\nX-A: b", Want::Status(408)),
        Case::new("unfinished/body", post(&["Content-Length: 10"], b"hello"), Want::Status(408)),
        Case::new("unfinished/large_body", post(&["Content-Length: 1000000"], b"hello"), Want::Reject),
    ]
}

impl Case {
    fn with_steps(mut self, steps: Vec<Step>) -> Case {
        self.steps = steps;
        self
    }
}

/// The built-in routes' own parameters: status page queries, `/sleep/`, `/block/`, `/leak/`.
fn route_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for query in [
        "json&auto",
        "auto&json",
        "json=1&json=2",
        "openmetrics&text",
        "text",
        "auto",
        "openmetrics",
        "refresh=-1",
        "refresh=0",
        "refresh=",
        "refresh",
        "refresh=abc",
        "refresh=1e9",
        "refresh=4294967296",
        "refresh=99999999999999999999999999999999",
        "&&&&",
        "=",
        "%00",
        "json%00",
    ] {
        cases.push(Case::new(format!("status/?{query}"), get(&format!("/server-status?{query}")), Want::Ok(1)));
    }
    cases.extend([
        Case::new("status/long_query", get(&format!("/server-status?{}", "a".repeat(8000))), Want::Ok(1)),
        Case::new("status/many_params", get(&format!("/server-status?{}", "refresh=1&".repeat(700))), Want::Ok(1)),
        Case::new("status/trailing_slash", get("/server-status/"), Want::Status(404)),
        Case::new("status/upper_case", get("/SERVER-STATUS"), Want::Status(404)),
        Case::new("status/encoded_query", get("/server-status%3Fjson"), Want::Status(404)),
        Case::new(
            "status/openmetrics_accept_garbage",
            "GET /server-status HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;\0\r\nConnection: close\r\n\r\n",
            Want::Reject,
        ),
        Case::new(
            "status/post_with_body",
            "POST /server-status?json HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            Want::Ok(1),
        ),
    ]);
    let bad = [
        ("negative", "-1"),
        ("non_numeric", "abc"),
        ("empty", ""),
        ("u64_max", "18446744073709551615"),
        ("u64_overflow", "18446744073709551616"),
        ("huge", "99999999999999999999999999999999"),
        ("fraction", "1.5"),
        ("hex", "0x10"),
        ("encoded_digit", "%31"),
        ("trailing_path", "1/2"),
        ("exponent", "1e3"),
        ("space_encoded", "%201"),
    ];
    for route in ["sleep", "block", "leak"] {
        for (name, value) in bad {
            cases.push(Case::new(format!("{route}/{name}"), get(&format!("/{route}/{value}")), Want::Status(400)));
        }
        cases.push(Case::new(format!("{route}/zero"), get(&format!("/{route}/0")), Want::Ok(1)));
        cases.push(Case::new(format!("{route}/plus_zero"), get(&format!("/{route}/+0")), Want::Ok(1)));
        cases.push(Case::new(
            format!("{route}/leading_zeros"),
            get(&format!("/{route}/0000000000000000000000000")),
            Want::Ok(1),
        ));
        cases.push(Case::new(format!("{route}/zero_with_query"), get(&format!("/{route}/0?x=1")), Want::Ok(1)));
        cases.push(Case::new(format!("{route}/no_slash"), get(&format!("/{route}")), Want::Status(404)));
    }
    cases.extend([
        Case::new("sleep/over_limit", get("/sleep/60001"), Want::Status(400)),
        Case::new("block/over_limit", get("/block/60001"), Want::Status(400)),
        Case::new("leak/over_limit", get("/leak/513"), Want::Status(400)),
    ]);
    cases
}

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
