//! Black-box tests of the status page's formats and access rules, and of the `status` command.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use prefork_tests::{
    DEADLINE, HttpConnection, ServerProcess, Sig, TempPath, count, http_get, parse_response, require_tool, run_command,
    status_json, wait_for,
};

#[test]
fn the_status_command_answers_while_every_worker_is_busy_and_shows_the_queue() -> Result<()> {
    let pid_file = TempPath::new("busy.pid");
    let mut server = ServerProcess::start_pool(2, 1, 2, &["--max-clients", "2", "--pid-file", pid_file.as_str()])?;
    ensure!(std::fs::read_to_string(pid_file.path())?.trim() == server.pid().to_string(), "pid file content");
    let addr = server.addr();
    // Busy until the SIGQUIT below, however long the checks take.
    let sleepers: Vec<_> = (0..2).map(|_| thread::spawn(move || http_get(addr, "/sleep/60000"))).collect();
    // Every worker is busy: only the shared memory can tell.
    let status = wait_for("both workers busy", DEADLINE, || {
        let status = status_json(&pid_file)?;
        Ok((count(&status, "busy") == 2).then_some(status))
    })?;
    for worker in status["workers"].as_array().context("workers")? {
        ensure!(worker["state"] == "W", "{worker}");
        ensure!(worker["request"]["line"] == "GET /sleep/60000 HTTP/1.1", "{worker}");
        ensure!(worker["request"]["protocol"] == "HTTP/1.1", "{worker}");
        ensure!(worker["request"]["client"].as_str().is_some_and(|c| c.starts_with("127.0.0.1:")), "{worker}");
        ensure!(worker["request"]["vhost"] == addr.to_string(), "{worker}");
    }
    // Clients that arrive now wait in the listen queue, and the policy cannot fork.
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr)?;
        write!(stream, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        waiting.push(stream);
    }
    let status = wait_for("the queued clients to show", DEADLINE, || {
        let status = status_json(&pid_file)?;
        Ok((count(&status, "listen_queue_max") >= 3).then_some(status))
    })?;
    ensure!(count(&status, "max_clients_reached") >= 1, "{status}");
    ensure!(count(&status, "listen_queue_len") > 0, "{status}");
    let text = run_command(&["status", "--pid-file", pid_file.as_str()])?;
    let text = String::from_utf8(text.stdout)?;
    ensure!(text.contains("2 processes: 0 idle, 2 busy") && text.contains("GET /sleep/60000"), "{text}");

    server.signal(Sig::SIGQUIT)?;
    ensure!(server.wait_exit(DEADLINE)?.success());
    drop(sleepers);
    ensure!(!pid_file.path().exists(), "pid file left behind");
    Ok(())
}

#[test]
fn a_second_server_with_the_same_pid_file_is_refused_while_the_first_runs() -> Result<()> {
    let pid_file = TempPath::new("twice.pid");
    let first =
        ServerProcess::start(&["--start-servers", "1", "--min-spare-servers", "1", "--pid-file", pid_file.as_str()])?;
    let second = Command::new(prefork_tests::server_binary()?)
        .args(["--port", "0", "--start-servers", "1", "--min-spare-servers", "1", "--pid-file", pid_file.as_str()])
        .stdout(Stdio::null())
        .output()?;
    ensure!(!second.status.success(), "the second server started");
    let stderr = String::from_utf8_lossy(&second.stderr);
    ensure!(stderr.contains("still running"), "{stderr}");
    ensure!(
        std::fs::read_to_string(pid_file.path())?.trim() == first.pid().to_string(),
        "the pid file was overwritten"
    );
    Ok(())
}

#[test]
fn the_status_command_explains_a_missing_server() -> Result<()> {
    let output = run_command(&["status", "--scoreboard", "/simplehttp-prefork.4194999"])?;
    ensure!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(stderr.contains("is the server running"), "{stderr}");
    Ok(())
}

#[test]
fn openmetrics_parses_with_the_prometheus_client_parser() -> Result<()> {
    // The reference parser: `pip install prometheus_client` (CI installs it).
    let probe = ["python3", "-c", "import prometheus_client.openmetrics.parser"];
    if !require_tool("Python's prometheus_client", &probe, "python3 -m pip install prometheus_client")? {
        return Ok(());
    }
    let server = ServerProcess::start_pool(2, 1, 3, &[])?;
    server.get("/")?;
    wait_for("both workers to be up", DEADLINE, || Ok((count(&server.status()?, "processes") >= 2).then_some(())))?;
    let metrics = server.get("/server-status?openmetrics")?;
    ensure!(
        metrics.header("content-type").is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        metrics.headers
    );
    let by_accept = {
        let mut connection = HttpConnection::open(server.addr())?;
        connection.send(b"GET /server-status HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n")?;
        connection.read_response()?
    };
    ensure!(by_accept.body.ends_with("# EOF\n"), "Accept: application/openmetrics-text was not honoured");
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
requests = families["simplehttp_prefork_requests"]
assert requests.type == "counter", requests.type
assert requests.samples[0].name == "simplehttp_prefork_requests_total"
assert requests.samples[0].value >= 1, requests.samples
states = {s.labels["state"]: s.value for s in families["simplehttp_prefork_workers"].samples}
assert states["writing"] >= 1 and sum(states.values()) >= 2, states
print(len(families))
"#;
    let mut python = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running python3")?;
    python.stdin.take().context("stdin")?.write_all(metrics.body.as_bytes())?;
    let output = python.wait_with_output()?;
    ensure!(
        output.status.success(),
        "prometheus_client rejected the exposition:\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        metrics.body
    );
    let families: usize = String::from_utf8_lossy(&output.stdout).trim().parse()?;
    ensure!(families >= 20, "only {families} metric families");
    Ok(())
}

#[test]
fn the_html_page_is_well_formed_and_draws_every_slot_and_worker() -> Result<()> {
    let server = ServerProcess::start_pool(3, 1, 4, &["--max-clients", "16"])?;
    wait_for("3 workers", DEADLINE, || Ok((count(&server.status()?, "processes") == 3).then_some(())))?;
    let page = server.get("/server-status?refresh=3")?;
    ensure!(page.header("content-type") == Some("text/html; charset=utf-8"), "{:?}", page.headers);
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let document =
        roxmltree::Document::parse_with_options(&page.body, options).context("status page is not well-formed")?;
    let grid = document.descendants().find(|n| n.attribute("class") == Some("grid")).context("no grid")?;
    ensure!(grid.children().filter(|n| n.is_element()).count() == 16, "one cell per slot");
    let rows = document
        .descendants()
        .filter(|n| n.has_tag_name("tbody"))
        .flat_map(|b| b.children())
        .filter(|n| n.has_tag_name("tr"))
        .count();
    ensure!(rows == 3, "{rows} worker rows");
    let refresh =
        document.descendants().find(|n| n.attribute("http-equiv") == Some("refresh")).context("no refresh")?;
    ensure!(refresh.attribute("content") == Some("3"));
    Ok(())
}

#[test]
fn the_status_page_is_refused_outside_the_allowed_networks() -> Result<()> {
    let closed =
        ServerProcess::start(&["--start-servers", "1", "--min-spare-servers", "1", "--status-allow", "10.0.0.0/8"])?;
    ensure!(closed.get("/server-status?json")?.status == 403);
    let open =
        ServerProcess::start(&["--start-servers", "1", "--min-spare-servers", "1", "--status-allow", "127.0.0.1/32"])?;
    ensure!(open.get("/server-status?json")?.status == 200);
    let off = ServerProcess::start(&["--start-servers", "1", "--min-spare-servers", "1", "--no-status"])?;
    ensure!(off.get("/server-status")?.status == 404);
    Ok(())
}

#[test]
fn slow_requests_are_counted_and_logged_with_their_request_line() -> Result<()> {
    let server = ServerProcess::start(&[
        "--start-servers",
        "2",
        "--min-spare-servers",
        "1",
        "--slow-request-threshold",
        "200ms",
    ])?;
    ensure!(server.get("/sleep/10")?.status == 200);
    ensure!(server.get("/sleep/300")?.status == 200);
    // A request is counted once its response has gone, so the client may ask before.
    let status = wait_for("the slow request to be counted", DEADLINE, || {
        let status = server.status()?;
        // At least the one sleeping (a very slow machine may make another request slow too).
        Ok((1..u64::MAX).contains(&count(&status, "slow_requests")).then_some(status))
    })?;
    ensure!(status["config"]["slow_request_seconds"] == 0.2, "{status}");
    wait_for("the slow request to be logged", DEADLINE, || {
        Ok(server.stderr().lines().any(|l| l.contains("slow request") && l.contains("GET /sleep/300")).then_some(()))
    })?;
    Ok(())
}

#[test]
fn a_slow_request_is_logged_by_its_own_line_when_a_worker_runs_several() -> Result<()> {
    // One worker, two connections: the scoreboard's record shows the request begun last,
    // which is not the slow one. The fast request must run while the slow one does: it is
    // sent once the record shows the slow one running, and the slow one must not have
    // answered yet once the fast one has. A machine too slow for that gets a longer one.
    for slow_ms in [2_000u64, 8_000, 30_000] {
        let pid_file = TempPath::new("own-line.pid");
        let server = ServerProcess::start_pool(
            1,
            1,
            1,
            &["--worker-connections", "2", "--slow-request-threshold", "200ms", "--pid-file", pid_file.as_str()],
        )?;
        let slow_line = format!("GET /sleep/{slow_ms} HTTP/1.1");
        let mut slow = TcpStream::connect(server.addr())?;
        write!(slow, "{slow_line}\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        // The `status` command, not the page: the worker's two places are for the clients.
        wait_for("the slow request to run", DEADLINE, || {
            let status = status_json(&pid_file)?;
            Ok((status["workers"][0]["request"]["line"] == slow_line.as_str()).then_some(()))
        })?;
        let mut fast = HttpConnection::open(server.addr())?;
        ensure!(fast.get("/sleep/1")?.status == 200);
        // Nothing of the slow response has come yet: it still runs (loopback delivers at once).
        slow.set_nonblocking(true)?;
        let overlapped = matches!(slow.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        slow.set_nonblocking(false)?;
        slow.set_read_timeout(Some(Duration::from_secs(90)))?;
        let mut answer = Vec::new();
        slow.read_to_end(&mut answer)?;
        ensure!(parse_response(&answer)?.status == 200);
        if !overlapped {
            continue;
        }
        // The slow request's line: the one that took as long as it (the fast one may be slow
        // too on a slow machine, and is logged by its own line then).
        let logged = wait_for("the slow request to be logged", DEADLINE, || {
            Ok(server
                .stderr()
                .lines()
                .find(|l| l.contains("slow request") && logged_ms(l) >= slow_ms)
                .map(str::to_owned))
        })?;
        ensure!(logged.contains(&slow_line), "the log names another request: {logged}");
        return Ok(());
    }
    bail!("the fast request never ran while the slow one did")
}

/// The `duration_ms=` field of a log line (0 if none).
fn logged_ms(line: &str) -> u64 {
    let digits = line.split_once("duration_ms=").map_or("", |(_, rest)| rest);
    digits.split(|c: char| !c.is_ascii_digit()).next().and_then(|d| d.parse().ok()).unwrap_or(0)
}

#[test]
fn per_worker_counters_follow_connections_processes_and_slots() -> Result<()> {
    let server = ServerProcess::start_pool(1, 1, 1, &["--max-clients", "1"])?;
    let mut connection = server.connect()?;
    for _ in 0..3 {
        ensure!(connection.get("/")?.status == 200);
    }
    let status = {
        let response = connection.get("/server-status?json")?;
        serde_json::from_str::<serde_json::Value>(&response.body)?
    };
    let worker = &status["workers"][0];
    // The status request itself is the fourth on this connection, not yet finished.
    ensure!(worker["requests_connection"] == 3 && worker["requests"] == 3, "{worker}");
    ensure!(worker["request"]["line"] == "GET /server-status?json HTTP/1.1", "{worker}");
    ensure!(worker["rss_bytes"].as_u64() > Some(1 << 20), "{worker}");
    ensure!(status["config"]["max_clients"] == 1 && status["max_clients"] == 1, "{status}");
    Ok(())
}

#[test]
fn status_watch_redraws_until_the_server_stops() -> Result<()> {
    use std::io::Read as _;
    let pid_file = TempPath::new("watch.pid");
    let mut server =
        ServerProcess::start(&["--start-servers", "1", "--min-spare-servers", "1", "--pid-file", pid_file.as_str()])?;
    let mut watch = Command::new(prefork_tests::server_binary()?)
        .args(["status", "--pid-file", pid_file.as_str(), "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = watch.stdout.take().context("stdout")?;
    let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = std::sync::Arc::clone(&output);
    thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buffer) {
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    let redraws = || output.lock().unwrap().matches("\x1b[H\x1b[2J").count();
    wait_for("two redraws", DEADLINE, || Ok((redraws() >= 2).then_some(())))?;
    // Stop the server: the watch must notice and end.
    server.signal(Sig::SIGTERM)?;
    ensure!(server.wait_exit(DEADLINE)?.success());
    let ended = wait_for("status --watch to end", DEADLINE, || Ok(watch.try_wait()?))?;
    ensure!(ended.success(), "watch exited with {ended}");
    wait_for("the last words", DEADLINE, || {
        Ok(output.lock().unwrap().ends_with("the server has stopped\n").then_some(()))
    })?;
    ensure!(output.lock().unwrap().contains("processes"));
    Ok(())
}
