//! Black-box tests of the built-in routes and SimpleHTTP's dispatch rules over the wire.

use anyhow::{Result, ensure};

use prefork_tests::{DEADLINE, ServerProcess, hello_pid, wait_for};

#[test]
fn root_says_hello_from_a_worker_and_unknown_paths_are_404() -> Result<()> {
    let server = ServerProcess::start_pool(2, 1, 4, &[])?;
    let hello = server.get("/")?;
    ensure!(hello.status == 200, "GET / answered {}", hello.status);
    ensure!(hello.body.starts_with("Hello from simplehttp-prefork worker"), "body {:?}", hello.body);
    let worker_pid = hello_pid(&hello.body)?;
    ensure!(server.children().contains(&worker_pid), "answered by {worker_pid}, not a child");
    ensure!(hello.header("content-type") == Some("text/plain"), "{:?}", hello.headers);
    ensure!(hello.header("date").is_some(), "no Date header");

    let missing = server.get("/nope")?;
    ensure!(missing.status == 404, "GET /nope answered {}", missing.status);
    ensure!(missing.body == "404 Not Found", "body {:?}", missing.body);
    ensure!(missing.header("connection") == Some("close"), "error responses close the connection");
    Ok(())
}

#[test]
fn status_page_answers_json_apache_auto_text_and_html() -> Result<()> {
    let server = ServerProcess::start_pool(2, 1, 4, &[])?;
    let json = server.get("/server-status?json")?;
    ensure!(json.header("content-type") == Some("application/json"));
    let status: serde_json::Value = serde_json::from_str(&json.body)?;
    for field in ["processes", "idle", "busy", "scoreboard", "workers"] {
        ensure!(!status[field].is_null(), "no {field} in {status}");
    }
    let auto = server.get("/server-status?auto")?;
    ensure!(auto.body.lines().any(|l| l.starts_with("Scoreboard: ")), "{}", auto.body);
    ensure!(auto.body.lines().any(|l| l.starts_with("Total Accesses: ")), "{}", auto.body);
    let text = server.get("/server-status?text")?;
    ensure!(text.header("content-type") == Some("text/plain; charset=utf-8"), "{:?}", text.headers);
    ensure!(
        text.body.starts_with("simplehttp-prefork: parent ") && text.body.contains(" processes: "),
        "{}",
        text.body
    );
    let html = server.get("/server-status")?;
    ensure!(html.header("content-type") == Some("text/html; charset=utf-8"), "{:?}", html.headers);
    ensure!(html.body.contains("<h2>Scoreboard</h2>") && html.body.contains("<table>"), "{}", html.body);
    Ok(())
}

#[test]
fn bad_sleep_arguments_are_rejected_not_obeyed() -> Result<()> {
    let server = ServerProcess::start_pool(1, 1, 2, &[])?;
    ensure!(server.get("/sleep/60001")?.status == 400);
    ensure!(server.get("/sleep/abc")?.status == 400);
    ensure!(server.get("/sleep/1")?.status == 200);
    Ok(())
}

#[test]
fn keep_alive_connections_are_reused_visible_while_idle_and_closed_after_the_timeout() -> Result<()> {
    // One worker in all and a timeout longer than any check: an idle keep-alive connection that
    // held the worker would starve every other client for as long as the test lasts.
    let server = ServerProcess::start_pool(1, 1, 1, &["--max-clients", "1", "--keepalive-timeout", "60s"])?;
    let mut connection = server.connect()?;
    ensure!(connection.get("/")?.status == 200 && connection.get("/")?.status == 200);
    // Idle between requests the connection is always visible: K on its worker at first, then
    // parked off it (however fast or slow this poll is, it sees one or the other)...
    wait_for("the idle connection to show as K or parked", DEADLINE, || {
        let status = server.status()?;
        let on_worker = status["workers"].as_array().into_iter().flatten().any(|w| w["state"] == "K");
        let parked = prefork_tests::count(&status, "parked") == 1;
        Ok((on_worker || parked).then_some(()))
    })?;
    // ...and it ends parked, holding no worker: the status request above was served by the
    // only worker, and so is another client now.
    wait_for("the idle connection to be parked", DEADLINE, || {
        Ok((prefork_tests::count(&server.status()?, "parked") == 1).then_some(()))
    })?;
    ensure!(server.get("/")?.status == 200, "the only worker serves others meanwhile");
    ensure!(connection.get("/")?.status == 200, "the parked connection was cut");
    ensure!(connection.get("/")?.status == 200, "the connection is reused after coming back");
    // A short timeout closes an idle connection by itself.
    let short = ServerProcess::start_pool(2, 1, 4, &["--keepalive-timeout", "1s"])?;
    let mut connection = short.connect()?;
    ensure!(connection.get("/")?.status == 200);
    ensure!(connection.closed_by_server_within(DEADLINE)?, "idle connection outlived the timeout");
    Ok(())
}

#[test]
fn a_client_that_never_finishes_its_headers_holds_no_worker_and_gets_408() -> Result<()> {
    // One worker in all: if the half-sent request held it, nobody else would be served.
    let server = ServerProcess::start_pool(1, 1, 1, &["--max-clients", "1", "--keepalive-timeout", "1s"])?;
    let mut slowloris = server.connect()?;
    slowloris.send(b"GET / HTTP/1.1\r\nHost: x\r\n")?;
    wait_for("the half-sent request to be parked", DEADLINE, || {
        Ok((prefork_tests::count(&server.status()?, "parked") == 1).then_some(()))
    })?;
    ensure!(server.get("/")?.status == 200, "the only worker serves others meanwhile");
    // At the header timeout the request is answered 408 (as mod_reqtimeout does) and closed.
    let timed_out = slowloris.read_response()?;
    ensure!(timed_out.status == 408, "{timed_out:?}");
    ensure!(slowloris.closed_by_server_within(DEADLINE)?, "left open after the 408");
    ensure!(prefork_tests::count(&server.status()?, "parked_timeouts") == 1);
    Ok(())
}

/// Sends `raw` on a fresh connection and reads one response.
fn exchange(server: &ServerProcess, raw: &[u8]) -> Result<prefork_tests::HttpResponse> {
    let mut connection = server.connect()?;
    connection.send(raw)?;
    connection.read_response()
}

#[test]
fn the_limit_and_logging_flags_take_effect() -> Result<()> {
    let server = ServerProcess::start_pool(
        1,
        1,
        2,
        &[
            "--max-request-line",
            "64",
            "--max-headers",
            "8",
            "--max-body-size",
            "10",
            "--handler-timeout",
            "300ms",
            "--status-path",
            "/st",
            "--access-log",
            "common",
            "--no-keepalive",
        ],
    )?;
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(80));
    ensure!(exchange(&server, long.as_bytes())?.status == 414, "--max-request-line");
    let many: String = (0..12).map(|i| format!("X-H{i}: v\r\n")).collect();
    let crowded = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    ensure!(exchange(&server, crowded.as_bytes())?.status == 431, "--max-headers");
    let big = b"POST /sleep/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n01234567890123456789";
    ensure!(exchange(&server, big)?.status == 413, "--max-body-size");
    ensure!(server.get("/sleep/5000")?.status == 503, "--handler-timeout");
    let hello = server.get("/")?;
    ensure!(hello.status == 200 && hello.header("connection") == Some("close"), "--no-keepalive: {:?}", hello.headers);
    ensure!(server.get("/st?json")?.status == 200, "--status-path");
    ensure!(server.get("/server-status")?.status == 404, "the status page moved");
    server.wait_logged("\"GET /st?json HTTP/1.1\" 200")?;
    Ok(())
}

#[test]
fn the_demo_routes_are_served_only_with_demo() -> Result<()> {
    // Without --demo: `/sleep/`, `/block/` and `/leak/` would let any client tie up or bloat
    // a worker, so they do not exist; `/` and the status page stay.
    let binary = prefork_tests::server_binary()?;
    let mut command = std::process::Command::new(binary);
    command.args(["--address", "127.0.0.1", "--port", "0", "--start-servers", "1", "--min-spare-servers", "1"]);
    let plain = ServerProcess::spawn(command)?;
    for path in ["/sleep/1", "/block/1", "/leak/0"] {
        let response = plain.get(path)?;
        ensure!(response.status == 404, "{path} without --demo answered {}", response.status);
    }
    ensure!(plain.get("/")?.status == 200);
    ensure!(plain.get("/server-status?json")?.status == 200);
    // With it (the harness passes --demo), each answers, and names its worker.
    let demo = ServerProcess::start_pool(1, 1, 2, &[])?;
    for (path, said) in [("/sleep/1", "slept 1 ms"), ("/block/1", "blocked 1 ms"), ("/leak/0", "leaked 0 MiB")] {
        let response = demo.get(path)?;
        ensure!(response.status == 200 && response.body.starts_with(said), "{path}: {response:?}");
    }
    Ok(())
}
