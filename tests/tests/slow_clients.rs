//! Black-box tests of slow clients against a classic pool: a slowloris flood (slow heads) and
//! a slow-body flood, driven by `slowhttptest`, while a normal client keeps asking.
//!
//! What must hold: the flood's connections wait parked, holding no worker; the normal client
//! is answered throughout (never refused, never failing), and so is `slowhttptest`'s own
//! probe; the flood's connections are closed by the header or body timeout; memory stays
//! bounded. How fast the normal client is answered under the flood is measured by
//! `cargo xtask bench --slow-clients` (timing is a benchmark's business, not a test's).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use prefork_scoreboard::{AttachedScoreboard, WorkerState};
use prefork_tests::{DEADLINE, ServerProcess, TempPath, count, http_get, require_tool, status_json, wait_for};

/// What a flood did to the pool, seen from outside.
struct FloodReport {
    normal_requests: u64,
    most_parked: u64,
    /// The longest any worker was seen reading a request (`R`), seconds: a worker held by a
    /// slow client would read it until the header timeout.
    longest_reading: f64,
    /// slowhttptest's own probe, one verdict per second: whether a normal request was
    /// answered within its probe timeout (its CSV writes 0 for "no").
    probe: Vec<bool>,
}

/// Runs `slowhttptest` with `attack` against a classic pool of at most 32 workers for
/// `seconds`, with a normal client asking all along and the scoreboard watched.
fn flood(attack: &[&str], seconds: u32) -> Result<Option<(ServerProcess, FloodReport, TempPath)>> {
    if !require_tool("slowhttptest", &["sh", "-c", "command -v slowhttptest"], "apt-get install slowhttptest")? {
        return Ok(None);
    }
    let pid_file = TempPath::new("slow.pid");
    let server = ServerProcess::start_pool(8, 4, 16, &["--max-clients", "32", "--pid-file", pid_file.as_str()])?;
    let csv = TempPath::new("slowhttptest");
    let url = format!("http://{}/", server.addr());
    let length = seconds.to_string();
    let mut args = vec!["-c", "400", "-i", "10", "-r", "100", "-x", "24", "-p", "3", "-l", &length, "-u", &url];
    args.extend_from_slice(attack);
    args.extend_from_slice(&["-g", "-o", csv.as_str()]);
    let mut attacker = Command::new("slowhttptest")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting slowhttptest")?;
    let done = Arc::new(AtomicBool::new(false));
    let normal = {
        let (done, addr) = (Arc::clone(&done), server.addr());
        thread::spawn(move || -> Result<u64> {
            let mut answered = 0;
            while !done.load(Ordering::Relaxed) {
                let response = http_get(addr, "/")?;
                ensure!(response.status == 200, "a normal request was answered {}", response.status);
                answered += 1;
            }
            Ok(answered)
        })
    };
    // Watched from shared memory, not HTTP (which needs a free worker), every few
    // milliseconds until the attack ends.
    let board = AttachedScoreboard::open(&server.scoreboard_name())?;
    let (mut most_parked, mut longest_reading) = (0, 0f64);
    wait_for("slowhttptest to finish", Duration::from_secs(u64::from(seconds) + 60), || {
        let snapshot = board.snapshot();
        most_parked = most_parked.max(snapshot.parked());
        for slot in snapshot.live().filter(|slot| slot.state == WorkerState::Reading) {
            longest_reading = longest_reading.max(snapshot.seconds_in_state(slot));
        }
        Ok(attacker.try_wait()?.map(drop))
    })?;
    done.store(true, Ordering::Relaxed);
    let normal_requests = normal.join().expect("normal client")?;
    let probe = std::fs::read_to_string(format!("{}.csv", csv.as_str()))
        .context("slowhttptest's statistics")?
        .lines()
        .skip(1)
        .filter_map(|line| line.rsplit(',').next().map(|s| s.trim() != "0"))
        .collect();
    let _ = std::fs::remove_file(format!("{}.html", csv.as_str()));
    let _ = std::fs::remove_file(format!("{}.csv", csv.as_str()));
    Ok(Some((server, FloodReport { normal_requests, most_parked, longest_reading, probe }, pid_file)))
}

/// The flood's connections are all closed in the end (by the server's timeouts).
fn flood_cleared(server: &ServerProcess, pid_file: &TempPath) -> Result<serde_json::Value> {
    wait_for("the flood's connections to be closed", DEADLINE, || {
        let status = status_json(pid_file)?;
        Ok((count(&status, "parked") == 0).then_some(status))
    })
    .and_then(|status| {
        // Bounded memory: no worker grew for holding hundreds of slow connections.
        for worker in status["workers"].as_array().into_iter().flatten() {
            let rss = worker["rss_bytes"].as_u64().unwrap_or(0);
            ensure!(rss < 64 << 20, "worker {} holds {} MiB", worker["pid"], rss >> 20);
        }
        ensure!(server.get("/")?.status == 200);
        Ok(status)
    })
}

#[test]
fn a_slowloris_flood_takes_no_worker_and_the_pool_answers_throughout() -> Result<()> {
    let Some((server, report, pid_file)) = flood(&["-H"], 12)? else { return Ok(()) };
    ensure!(report.most_parked >= 200, "the flood never built up: at most {} parked", report.most_parked);
    ensure!(report.longest_reading < 2.0, "a worker was held reading for {} s", report.longest_reading);
    ensure!(report.normal_requests > 0, "no normal request was made");
    ensure!(
        !report.probe.is_empty() && report.probe.iter().all(|available| *available),
        "slowhttptest found the service unavailable: {:?}",
        report.probe
    );
    let status = flood_cleared(&server, &pid_file)?;
    // Each slow head was answered 408 at the header timeout and closed.
    ensure!(count(&status, "parked_timeouts") >= 300, "{status}");
    ensure!(count(&status, "total_connections") >= report.normal_requests, "{status}");
    Ok(())
}

#[test]
fn a_slow_body_flood_takes_no_worker_and_the_pool_answers_throughout() -> Result<()> {
    let Some((server, report, pid_file)) = flood(&["-B"], 12)? else { return Ok(()) };
    ensure!(report.most_parked >= 200, "the flood never built up: at most {} parked", report.most_parked);
    ensure!(report.longest_reading < 2.0, "a worker was held reading for {} s", report.longest_reading);
    ensure!(
        !report.probe.is_empty() && report.probe.iter().all(|available| *available),
        "slowhttptest found the service unavailable: {:?}",
        report.probe
    );
    let status = flood_cleared(&server, &pid_file)?;
    // Each slow body was cut by the minimum rate and answered 408.
    ensure!(count(&status, "parked_timeouts") >= 300, "{status}");
    Ok(())
}

#[test]
fn a_keep_alive_clients_next_request_with_a_slow_body_holds_no_worker() -> Result<()> {
    // One worker in all. A keep-alive client's first request is answered; its second, sent in
    // the same packet, has half its body: the worker must not wait for the rest.
    let server = ServerProcess::start_pool(1, 1, 1, &["--max-clients", "1", "--keepalive-timeout", "10s"])?;
    let mut slow = server.connect()?;
    slow.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")?;
    ensure!(slow.read_response()?.status == 200, "the first request");
    wait_for("the half-sent request to be parked", DEADLINE, || {
        Ok((count(&server.status()?, "parked") == 1).then_some(()))
    })?;
    // The only worker serves another client meanwhile.
    ensure!(server.get("/")?.status == 200);
    slow.send(b"world")?;
    let second = slow.read_response()?;
    ensure!(second.status == 200, "{second:?}");
    Ok(())
}

#[test]
fn a_keep_alive_clients_next_head_trickled_a_byte_at_a_time_holds_no_worker() -> Result<()> {
    // One worker in all. After its first answer, a keep-alive client sends its next head a
    // byte every few milliseconds, for as long as this test needs (each byte comes well within
    // the worker's 100 ms wait in `recv`): the worker must not keep waiting byte after byte,
    // but let the connection go to be parked, and serve another client meanwhile.
    let server = ServerProcess::start_pool(1, 1, 1, &["--max-clients", "1", "--keepalive-timeout", "30s"])?;
    let mut slow = server.connect()?;
    ensure!(slow.get("/")?.status == 200, "the first request");
    let stop_trickling = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = Arc::clone(&stop_trickling);
        thread::spawn(move || -> Result<prefork_tests::HttpConnection> {
            slow.send(b"GET /nope HTTP/1.1\r\nHost: x\r\n")?;
            // Whole header lines, so that the head can be ended after any of them.
            while !stop.load(Ordering::Relaxed) {
                for byte in b"X-Trickle: 0123456789\r\n" {
                    slow.send(std::slice::from_ref(byte))?;
                    // A client's pace, not an ordering of events: each byte within the 100 ms.
                    thread::park_timeout(Duration::from_millis(5));
                }
            }
            Ok(slow)
        })
    };
    // Read from shared memory: the only worker answers HTTP only if it was let go.
    let board = AttachedScoreboard::open(&server.scoreboard_name())?;
    let parked = wait_for("the trickled head to be parked", DEADLINE, || {
        Ok((board.snapshot().parked() == 1 || trickler.is_finished()).then(|| board.snapshot().parked()))
    });
    let served = parked.as_ref().ok().map(|_| server.get("/"));
    stop_trickling.store(true, Ordering::Relaxed);
    let mut slow = trickler.join().expect("trickling thread")?;
    ensure!(parked? == 1, "the trickled head was never parked");
    ensure!(served.transpose()?.is_some_and(|r| r.status == 200), "another client was not served meanwhile");
    // The head ends; the request is answered (404: /nope), none of it lost.
    slow.send(b"\r\n")?;
    let answer = slow.read_response()?;
    ensure!(answer.status == 404, "the trickled request was answered {answer:?}");
    Ok(())
}
