//! SimpleHTTP's test suite (bingos/poe-component-server-simplehttp t/), ported to our server,
//! plus the wire behaviour SimpleHTTP got wrong: HEAD, pipelining, malformed requests,
//! limits, double answers, panics, hooks and the connection's fields.
//!
//! `harness = false`: `main` either runs the scenarios, or (with `COMPAT_TEST_SERVER` set) is
//! the server, a fresh single-threaded process that may fork.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use bytes::Bytes;
use prefork_tests::{
    DEADLINE, HttpConnection, ServerProcess, TempPath, Trial, parse_response, require_tool, run_trials, wait_for,
};
use simplehttp_prefork::{Handler, Reply, Request, RequestContext, Response, Server};

const ROLE: &str = "COMPAT_TEST_SERVER";
/// A file the server's handlers and hooks append their observations to.
const JOURNAL: &str = "COMPAT_TEST_JOURNAL";

type Scenario = fn(&ServerProcess, &TempPath) -> Result<()>;

fn main() -> Result<()> {
    if let Ok(role) = std::env::var(ROLE) {
        return serve(&role);
    }
    // Each scenario a test of its own, with its own server and journal, so that one failure
    // hides nothing.
    let tests: [(&str, Scenario); 14] = [
        ("get_root_is_200_with_simplehttp_defaults", get_root),
        ("an_unmatched_path_is_a_parsable_404", unmatched_404),
        ("a_lower_case_method_still_dispatches", lower_case_method),
        ("four_requests_on_separate_connections_first_match_wins", four_separate),
        ("the_same_four_on_one_keep_alive_connection_closed_after_the_404", four_keep_alive),
        ("a_post_body_reaches_the_handler", post_body),
        ("three_chunks_then_close_runs_the_close_handler", stream_then_close),
        ("head_has_no_body_and_the_requests_protocol_version", head_and_versions),
        ("pipelined_requests_are_all_answered_in_order", pipelined),
        ("malformed_requests_get_400_and_the_worker_serves_on", malformed),
        ("limits_answer_414_431_413_408", limits),
        ("a_panic_is_a_500_and_a_second_answer_is_an_error_value", panics_and_double_answers),
        ("handlers_see_the_absolute_uri_and_the_right_connection_fields", uri_and_connection),
        ("log_log2_error_hooks_and_the_access_log_run", hooks),
    ];
    let mut trials: Vec<(String, Trial)> = tests
        .into_iter()
        .map(|(name, test)| {
            let trial: Trial = Box::new(move || {
                let journal = TempPath::new("journal");
                test(&start("compat", &journal)?, &journal)
            });
            (name.to_owned(), trial)
        })
        .collect();
    trials.push((
        "proxy_mode_matches_the_full_uri_and_adds_no_content_length".to_owned(),
        Box::new(|| proxy_mode(&start("proxy", &TempPath::new("proxy-journal"))?)),
    ));
    run_trials(trials)
}

// ----- The server side -----

fn journal(line: &str) {
    if let Some(path) = std::env::var_os(JOURNAL) {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("journal");
        let _ = writeln!(file, "{line}");
    }
}

fn text(status: u16, body: impl Into<Bytes>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
    response
}

fn serve(role: &str) -> Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).init();
    let builder = Server::builder()
        .start_servers(2)
        .min_spare_servers(1)
        .max_spare_servers(3)
        .max_clients(8)
        .keepalive(true)
        .hostname("compat.test")
        .header("X-Default", "1")
        .max_request_line(200)
        .max_headers(20)
        .max_body_size(1000)
        .body_read_timeout(Duration::from_millis(500));
    let builder = if role == "proxy" {
        builder
            .proxy_mode(true)
            .handler("^http://compat.test", Handler::new(|request: Request, _| text(200, request.uri().to_string())))
    } else {
        builder
            .log_handler(|request, ip| journal(&format!("log {} {} {ip}", request.method, request.uri)))
            .log2_handler(|request, response| journal(&format!("log2 {} {}", request.uri, response.status.as_u16())))
            .error_handler(|connection, error| journal(&format!("error {} {error}", connection.remote_ip)))
            .access_log(Some(simplehttp_prefork::AccessLogFormat::Combined))
            .handler("^/$", Handler::new(|_, _| text(200, "Hello, world!")))
            .handler(
                "^/honk/",
                Handler::new(|_, context: RequestContext| {
                    context.on_close(|| journal("honk connection closed"));
                    text(200, "honk")
                }),
            )
            .handler(
                "^/bonk/zip",
                Handler::new(|_, _| {
                    let mut response = text(200, "<html>zip</html>");
                    response.headers_mut().insert(http::header::CONTENT_TYPE, "text/html".parse().expect("header"));
                    response
                }),
            )
            .handler("^/bonk/", Handler::new(|_, _| -> Response { panic!("^/bonk/ must never win over ^/bonk/zip") }))
            .handler(
                "^/post",
                Handler::new(|request: Request, _| {
                    text(
                        200,
                        format!("got {} bytes: {}", request.body().len(), String::from_utf8_lossy(request.body())),
                    )
                }),
            )
            .handler("^/stream", Handler::new(stream))
            .handler("^/panic", Handler::new(|_, _| -> Response { panic!("a handler bug") }))
            .handler("^/twice", Handler::new(twice))
            .handler(
                "^/slow",
                Handler::new_async(|_, _| async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    text(200, "slow")
                }),
            )
            .handler(
                "^/whoami",
                Handler::new(|request: Request, context: RequestContext| {
                    let c = &context.connection;
                    text(
                        200,
                        format!(
                            "uri={} dir={} remote={}:{} local={}:{} ssl={} id={} pid={}",
                            request.uri(),
                            context.dir,
                            c.remote_ip,
                            c.remote_port,
                            c.local_ip,
                            c.local_port,
                            c.ssl,
                            c.id,
                            std::process::id()
                        ),
                    )
                }),
            )
    };
    let bound = builder.build()?.bind()?;
    bound.run_with(|started| println!("listening on {}", started.url()))?;
    Ok(())
}

/// Three chunks, 20 ms apart, then CLOSE (SimpleHTTP's 06_stream.t), with a close handler.
fn stream(_: Request, context: RequestContext) -> Reply {
    context.on_close(|| journal("stream connection closed"));
    let head = http::Response::new(()).into_parts().0;
    let (reply, responder) = Reply::later();
    tokio::task::spawn_local(async move {
        let Ok(sender) = responder.stream(head) else { return };
        for i in 1..=3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if sender.send(format!("chunk {i}\n")).await.is_err() {
                return;
            }
        }
        let _ = sender.close().await;
    });
    reply
}

/// DONE twice on the same request: the second is an error value, not a crash.
fn twice(_: Request, _: RequestContext) -> Reply {
    let (reply, responder) = Reply::later();
    let first = responder.done(text(200, "first answer"));
    let second = responder.done(text(200, "second answer"));
    journal(&format!(
        "twice first={} second={}",
        first.is_ok(),
        second.map_or_else(|e| e.to_string(), |()| "ok".into())
    ));
    reply
}

// ----- The client side -----

fn start(role: &str, journal: &TempPath) -> Result<ServerProcess> {
    let mut command = Command::new(std::env::current_exe()?);
    command.env(ROLE, role).env(JOURNAL, journal.path());
    ServerProcess::spawn(command)
}

fn journal_of(path: &TempPath) -> String {
    std::fs::read_to_string(path.path()).unwrap_or_default()
}

/// Sends raw bytes on a new connection and reads until the server closes it.
fn raw(server: &ServerProcess, request: &[u8]) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server.addr())?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.write_all(request)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(answer)
}

fn get_root(server: &ServerProcess, _: &TempPath) -> Result<()> {
    let response = parse_response(&raw(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?)?;
    ensure!(response.status == 200 && response.body == "Hello, world!", "{response:?}");
    ensure!(response.header("content-type") == Some("text/plain"), "{:?}", response.headers);
    ensure!(response.header("content-length") == Some("13"), "{:?}", response.headers);
    ensure!(response.header("date").is_some() && response.header("x-default") == Some("1"), "{:?}", response.headers);
    Ok(())
}

fn unmatched_404(server: &ServerProcess, _: &TempPath) -> Result<()> {
    let response =
        parse_response(&raw(server, b"GET /wedonthaveone HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?)?;
    ensure!(response.status == 404 && response.body == "404 Not Found", "{response:?}");
    Ok(())
}

fn lower_case_method(server: &ServerProcess, _: &TempPath) -> Result<()> {
    let response = parse_response(&raw(server, b"GEt / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?)?;
    ensure!(response.status == 200 && response.body == "Hello, world!", "{response:?}");
    Ok(())
}

const FOUR: [(&str, u16, &str); 4] = [
    ("/", 200, "text/plain"),
    ("/honk/", 200, "text/plain"),
    ("/bonk/zip.html", 200, "text/html"),
    ("/wedonthaveone", 404, "text/plain"),
];

fn four_separate(server: &ServerProcess, journal: &TempPath) -> Result<()> {
    let closed_before = journal_of(journal).matches("honk connection closed").count();
    for (path, status, content_type) in FOUR {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let response = parse_response(&raw(server, request.as_bytes())?)?;
        ensure!(
            response.status == status && response.header("content-type") == Some(content_type),
            "{path}: {response:?}"
        );
    }
    wait_for("the /honk/ close handler", DEADLINE, || {
        Ok((journal_of(journal).matches("honk connection closed").count() > closed_before).then_some(()))
    })?;
    Ok(())
}

fn four_keep_alive(server: &ServerProcess, _: &TempPath) -> Result<()> {
    let mut connection = HttpConnection::open(server.addr())?;
    for (path, status, content_type) in FOUR {
        let response = connection.get(path)?;
        ensure!(
            response.status == status && response.header("content-type") == Some(content_type),
            "{path}: {response:?}"
        );
        let closes = response.header("connection") == Some("close");
        ensure!(
            closes == (status == 404),
            "{path}: open through the 200s, closed after the 404: {:?}",
            response.headers
        );
    }
    ensure!(connection.closed_by_server_within(DEADLINE)?, "not closed after the 404");
    Ok(())
}

fn post_body(server: &ServerProcess, _: &TempPath) -> Result<()> {
    let request = b"POST /post HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 11\r\n\r\nhello world";
    let response = parse_response(&raw(server, request)?)?;
    ensure!(response.body == "got 11 bytes: hello world", "{response:?}");
    Ok(())
}

fn stream_then_close(server: &ServerProcess, journal: &TempPath) -> Result<()> {
    let answer = raw(server, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let text = String::from_utf8_lossy(&answer);
    ensure!(text.contains("transfer-encoding: chunked"), "{text}");
    ensure!(!text.contains("content-length"), "a stream has no Content-Length: {text}");
    for i in 1..=3 {
        ensure!(text.contains(&format!("chunk {i}\n")), "{text}");
    }
    // CLOSE ends it without the terminating chunk.
    ensure!(!text.ends_with("0\r\n\r\n"), "the stream was ended, not closed: {text:?}");
    wait_for("the stream's close handler", DEADLINE, || {
        Ok(journal_of(journal).contains("stream connection closed").then_some(()))
    })?;
    Ok(())
}

fn head_and_versions(server: &ServerProcess, _: &TempPath) -> Result<()> {
    let answer = raw(server, b"HEAD / HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let text = String::from_utf8_lossy(&answer);
    ensure!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    ensure!(text.ends_with("\r\n\r\n"), "HEAD has no body: {text:?}");
    ensure!(text.contains("content-length: 13"), "{text}");
    Ok(())
}

/// Whether python3 is here to be the client (its standard library only); if not, the
/// scenario is skipped (see `require_tool`).
fn have_python() -> Result<bool> {
    require_tool("python3", &["python3", "--version"], "apt-get install python3")
}

/// Python's http.client cannot pipeline: a Python socket does, as a real client would.
fn python(script: &str) -> Result<String> {
    let output =
        Command::new("python3").args(["-c", script]).stdin(Stdio::null()).output().context("running python3")?;
    ensure!(output.status.success(), "python failed:\n{}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn pipelined(server: &ServerProcess, _: &TempPath) -> Result<()> {
    if !have_python()? {
        return Ok(());
    }
    let port = server.addr().port();
    let out = python(&format!(
        r#"
import socket
s = socket.create_connection(("127.0.0.1", {port}))
s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /honk/ HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
f = s.makefile("rb")
for _ in range(3):
    status = int(f.readline().split()[1])
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, value = line.split(b":", 1)
        if name.strip().lower() == b"content-length":
            length = int(value)
    print(status, f.read(length).decode())
"#
    ))?;
    ensure!(out == "200 slow\n200 honk\n200 Hello, world!\n", "in order, all answered:\n{out}");
    Ok(())
}

fn malformed(server: &ServerProcess, _: &TempPath) -> Result<()> {
    if !have_python()? {
        return get_root(server, &TempPath::new("unused"));
    }
    let port = server.addr().port();
    let out = python(&format!(
        r#"
import socket
for garbage in [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n", b"\x00\xff\x13\x37\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n"]:
    s = socket.create_connection(("127.0.0.1", {port}))
    s.settimeout(20)
    s.sendall(garbage)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n")[0].decode("latin-1").lower()
    print(head.splitlines()[0] if head else "closed", "close" if "connection: close" in head else "keep")
"#
    ))?;
    for line in out.lines() {
        ensure!(
            line.starts_with("http/1.1 400") && line.ends_with("close"),
            "malformed requests get 400 + close:\n{out}"
        );
    }
    ensure!(out.lines().count() == 4);
    get_root(server, &TempPath::new("unused"))
}

fn limits(server: &ServerProcess, _: &TempPath) -> Result<()> {
    let status_of = |request: &[u8]| -> Result<u16> { Ok(parse_response(&raw(server, request)?)?.status) };
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "a".repeat(300));
    ensure!(status_of(long_uri.as_bytes())? == 414, "request line over max_request_line");
    let many =
        format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", (0..30).map(|i| format!("X-{i}: y\r\n")).collect::<String>());
    ensure!(status_of(many.as_bytes())? == 431, "more headers than max_headers");
    let big = format!(
        "POST /post HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5000\r\n\r\n{}",
        "b".repeat(5000)
    );
    ensure!(status_of(big.as_bytes())? == 413, "body over max_body_size");
    // Headers announce a body that never comes: 408 after body_read_timeout.
    let mut stream = TcpStream::connect(server.addr())?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.write_all(b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    ensure!(parse_response(&answer)?.status == 408, "{}", String::from_utf8_lossy(&answer));
    Ok(())
}

fn panics_and_double_answers(server: &ServerProcess, journal: &TempPath) -> Result<()> {
    let mut connection = HttpConnection::open(server.addr())?;
    let hello = connection.get("/whoami")?;
    let pid = hello.body.rsplit("pid=").next().unwrap_or_default().to_owned();
    let panicked = connection.get("/panic")?;
    ensure!(panicked.status == 500, "{panicked:?}");
    // The worker lives on.
    ensure!(prefork_tests::is_alive(pid.parse()?), "worker {pid} died of a handler panic");
    ensure!(server.get("/whoami")?.status == 200);
    let twice = server.get("/twice")?;
    ensure!(twice.status == 200 && twice.body == "first answer", "{twice:?}");
    wait_for("the double answer to be refused", DEADLINE, || {
        Ok(journal_of(journal).contains("twice first=true second=this request was already answered").then_some(()))
    })?;
    Ok(())
}

fn uri_and_connection(server: &ServerProcess, _: &TempPath) -> Result<()> {
    let mut stream = TcpStream::connect(server.addr())?;
    let client_port = stream.local_addr()?.port();
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.write_all(b"GET /whoami?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let body = parse_response(&answer)?.body;
    let port = server.addr().port();
    ensure!(body.contains(&format!("uri=http://compat.test:{port}/whoami?x=1 ")), "{body}");
    ensure!(body.contains("dir=^/whoami "), "{body}");
    // Not swapped, unlike SimpleHTTP 2.28's remote_port/remote_addr.
    ensure!(body.contains(&format!("remote=127.0.0.1:{client_port} ")), "{body}");
    ensure!(body.contains(&format!("local=127.0.0.1:{port} ")), "{body}");
    ensure!(body.contains("ssl=false"), "{body}");
    Ok(())
}

fn hooks(server: &ServerProcess, journal: &TempPath) -> Result<()> {
    server.get("/honk/?hooks")?;
    raw(server, b"NONSENSE\r\n\r\n")?;
    wait_for("the hooks to run", DEADLINE, || {
        let seen = journal_of(journal);
        Ok((seen.contains("log GET /honk/?hooks 127.0.0.1")
            && seen.contains("log2 /honk/?hooks 200")
            && seen.contains("error 127.0.0.1"))
        .then_some(()))
    })?;
    wait_for("the access log line", DEADLINE, || {
        Ok(server
            .stderr()
            .lines()
            .any(|l| l.contains("access:") && l.contains("\"GET /honk/?hooks HTTP/1.1\" 200 4 \"-\" \"-\""))
            .then_some(()))
    })?;
    Ok(())
}

fn proxy_mode(server: &ServerProcess) -> Result<()> {
    let request = b"GET http://compat.test/some/where HTTP/1.1\r\nHost: compat.test\r\nConnection: close\r\n\r\n";
    let answer = raw(server, request)?;
    let text = String::from_utf8_lossy(&answer);
    ensure!(text.starts_with("HTTP/1.1 200"), "{text}");
    ensure!(text.contains("http://compat.test/some/where"), "the URI is left as it came: {text}");
    ensure!(!text.contains("content-length"), "PROXYMODE adds no Content-Length: {text}");
    let relative = parse_response(&raw(server, b"GET /some/where HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?)?;
    ensure!(relative.status == 404, "DIR is matched against the full URI");
    Ok(())
}
