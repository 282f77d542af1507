//! The facade's examples (`crates/simplehttp-prefork/examples/`: the Perl distribution's
//! server, prefork, stream and proxy, the runtime controls, and an axum app), each started as its own
//! program on an ephemeral port and used over the wire as its documentation says.

use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use prefork_tests::{DEADLINE, HttpConnection, ServerProcess, Sig, TempPath, example_binary, wait_for};

fn start(example: &str, extra: &[&str]) -> Result<ServerProcess> {
    let mut command = Command::new(example_binary(example)?);
    command.arg("127.0.0.1:0").args(extra);
    ServerProcess::spawn(command)
}

#[test]
fn server_routes_in_order_and_answers_404_for_no_match() -> Result<()> {
    let server = start("server", &[])?;
    ensure!(server.get("/")?.body == "Hello, world!\n");
    let honk = server.get("/honk/")?;
    ensure!(honk.status == 200 && honk.body.contains("matched ^/honk/"), "{:?}", honk.body);
    ensure!(server.get("/nothing")?.status == 404);
    Ok(())
}

#[test]
fn prefork_runs_its_fork_handler_in_each_worker_and_recycles_them() -> Result<()> {
    let server = start("prefork", &[])?;
    let mut served_by = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..12 {
        let body = server.get("/")?.body;
        let words: Vec<&str> = body.split_whitespace().collect();
        // "served by PID: prepared in worker PID (slot N)"
        ensure!(words.len() >= 7 && words[2].trim_end_matches(':') == words[6], "{body:?}");
        *served_by.entry(words[6].to_owned()).or_default() += 1;
    }
    // MAXREQUESTPERCHILD 3, which jitter may stretch a little: never one worker for all.
    ensure!(served_by.len() >= 3 && served_by.values().all(|&n| n <= 4), "12 requests: {served_by:?}");
    Ok(())
}

#[test]
fn stream_sends_its_chunks_then_closes_and_runs_the_close_handler() -> Result<()> {
    let server = start("stream", &[])?;
    let response = server.get("/stream")?;
    ensure!(response.status == 200, "{}", response.status);
    // It ends by closing the connection (CLOSE), not with a last chunk.
    ensure!(response.truncated, "the stream ended with a last chunk: {response:?}");
    for i in 1..=5 {
        ensure!(response.body.contains(&format!("chunk {i}\n")), "chunk {i} missing: {:?}", response.body);
    }
    server.wait_logged("the streamed connection closed")
}

#[test]
fn proxy_fetches_the_absolute_uri_it_is_asked_for() -> Result<()> {
    let upstream = start("server", &[])?;
    let proxy = start("proxy", &[])?;
    let mut connection = HttpConnection::open(proxy.addr())?;
    let target = format!("http://{}/", upstream.addr());
    connection.send(format!("GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n", upstream.addr()).as_bytes())?;
    let answer = connection.read_response()?;
    ensure!(answer.status == 200 && answer.body == "Hello, world!\n", "{} {:?}", answer.status, answer.body);
    let mut connection = HttpConnection::open(proxy.addr())?;
    connection.send(format!("POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes())?;
    ensure!(connection.read_response()?.status == 501);
    Ok(())
}

#[test]
fn controls_answer_who_retire_pause_and_shutdown() -> Result<()> {
    let mut server = start("controls", &[])?;
    let who = server.get("/who")?.body;
    ensure!(who.contains("is_child true") && who.contains(&format!("parent {}", server.pid())), "{who:?}");
    ensure!(server.get("/retire")?.body == "Ok(())\n");
    let mut kept = server.connect()?;
    ensure!(kept.get("/pause")?.body == "Ok(())\n");
    server.wait_logged("paused: no new connection is taken")?;
    ensure!(kept.get("/resume")?.body == "Ok(())\n", "a kept connection is served while paused");
    server.wait_logged("resumed: connections are taken again")?;
    ensure!(server.get("/shutdown")?.body == "Ok(())\n");
    ensure!(server.wait_exit(DEADLINE)?.success());
    Ok(())
}

#[test]
fn reload_handlers_serves_what_the_file_says_after_each_hup() -> Result<()> {
    let greeting = TempPath::new("greeting");
    std::fs::write(greeting.path(), "first\n")?;
    let server = start("reload_handlers", &[greeting.as_str()])?;
    server.wait_logged("GETHANDLERS")?;
    ensure!(server.stderr().contains("[\"^/\"]"), "{}", server.stderr());
    ensure!(server.get("/")?.body == "first\n");
    std::fs::write(greeting.path(), "second\n")?;
    server.signal(Sig::SIGHUP)?;
    wait_for("the new greeting", DEADLINE, || Ok((server.get("/")?.body == "second\n").then_some(())))?;
    std::fs::remove_file(greeting.path())?;
    server.signal(Sig::SIGHUP)?;
    server.wait_logged("reload abandoned")?;
    ensure!(server.get("/")?.body == "second\n");
    Ok(())
}

/// A raw exchange on a new connection, read to its end (the harness's client reads no chunked
/// or compressed bodies): the response's head and body as text.
fn exchange(addr: std::net::SocketAddr, request: &str) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

#[test]
fn axum_runs_preforked_with_its_state_layers_and_streaming_and_the_scoreboard_sees_it() -> Result<()> {
    use std::io::{Read as _, Write as _};
    let server = start("axum", &[])?;
    let before = prefork_tests::count(&server.status()?, "total_accesses");
    // Path parameters, and state a fork handler built in this very worker.
    let user = server.get("/users/42")?;
    let pid = user.body.split_whitespace().nth(6).unwrap_or_default().to_owned();
    ensure!(
        user.status == 200
            && user.body.starts_with("user 42, looked up by worker")
            && user.body.ends_with(&format!("of worker {pid}\n")),
        "{:?}",
        user.body
    );
    // A request body reaches the service (under the server's body limit).
    let mut connection = HttpConnection::open(server.addr())?;
    connection.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello axum!")?;
    let echoed = connection.read_response()?;
    ensure!(echoed.status == 200 && echoed.body == "hello axum!", "{:?}", echoed.body);
    // A streamed body goes out chunk by chunk.
    let streamed = exchange(server.addr(), "GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    ensure!(streamed.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{streamed}");
    ensure!((0..5).all(|n| streamed.contains(&format!("chunk {n}\n"))), "{streamed}");
    // A request body streams to the service, and its response streams back, as they come: the
    // first chunk comes back before the second is sent.
    let mut echo = std::net::TcpStream::connect(server.addr())?;
    echo.set_read_timeout(Some(DEADLINE))?;
    echo.write_all(b"POST /echo-stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\nfirst\n\r\n")?;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("first\n") {
        let mut buffer = [0; 4096];
        let n = echo.read(&mut buffer)?;
        ensure!(n > 0, "closed before the first chunk came back: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..n]);
    }
    echo.write_all(b"7\r\nsecond\n\r\n0\r\n\r\n")?;
    echo.read_to_end(&mut seen).context("the streamed echo's end")?;
    let seen = String::from_utf8_lossy(&seen);
    ensure!(seen.starts_with("HTTP/1.1 200") && seen.contains("second\n"), "{seen}");
    // The body limit holds for a streamed body (64 KiB here), declared or not. (The clients
    // send no more than the server reads: what it leaves unread would reset the connection.)
    let declared = exchange(
        server.addr(),
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 102400\r\nConnection: close\r\n\r\n",
    )
    .context("a declared body past the limit")?;
    ensure!(declared.starts_with("HTTP/1.1 413"), "{}", &declared[..declared.len().min(200)]);
    let chunked = exchange(
        server.addr(),
        &format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{}",
            100 * 1024,
            "x".repeat(64 * 1024 + 1)
        ),
    )
    .context("a chunked body past the limit")?;
    ensure!(chunked.starts_with("HTTP/1.1 413"), "{}", &chunked[..chunked.len().min(200)]);
    // A large body of a size known up front is streamed with its Content-Length.
    let large = exchange(server.addr(), "GET /large HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .context("a large body")?;
    let (head, body) = large.split_once("\r\n\r\n").unwrap_or_default();
    ensure!(head.to_ascii_lowercase().contains("content-length: 1048576"), "{head}");
    ensure!(!head.to_ascii_lowercase().contains("chunked") && body.len() == 1 << 20, "{head} ({} bytes)", body.len());
    // tower-http's layers: compression, the timeout.
    let big =
        exchange(server.addr(), "GET /big HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n")?;
    ensure!(big.to_ascii_lowercase().contains("content-encoding: gzip"), "{}", &big[..big.len().min(400)]);
    ensure!(server.get("/slow?ms=5000")?.status == 408, "the timeout layer did not cut the request");
    // A SimpleHTTP handler next to the app, and the app's own 404.
    ensure!(server.get("/hello")?.body == "hello from a SimpleHTTP handler\n");
    ensure!(server.get("/nothing")?.status == 404);
    // The scoreboard counted every one of them (and the status request itself).
    let after = prefork_tests::count(&server.status()?, "total_accesses");
    ensure!(after >= before + 8, "{before} -> {after} accesses");
    Ok(())
}
