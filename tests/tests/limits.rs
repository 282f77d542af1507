//! Black-box tests of the limits that bound a worker whatever the clients do: requests and
//! connections per worker under a burst, and the request timeout for async and blocking
//! handlers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use prefork_scoreboard::AttachedScoreboard;
use prefork_tests::{DEADLINE, ServerProcess, count, hello_pid, http_get, is_alive, wait_for};

/// How far a worker may go past a request or connection limit before it leaves on its own:
/// a tenth, at least one (the documented rule, written out here rather than taken from the
/// code under test).
fn hard_limit(limit: u64) -> u64 {
    limit + (limit / 10).max(1)
}

/// Runs `clients` closed-loop clients, each making `requests` requests to `/` on new
/// connections with no pause, while a monitor reads the scoreboard every millisecond (a
/// worker's counts only grow until it exits, and the answers are the authority). Returns
/// the answers per worker pid, and the most requests and connections any slot showed.
fn burst(server: &ServerProcess, clients: usize, requests: usize) -> Result<(BTreeMap<u32, u64>, u64, u64)> {
    let name = server.scoreboard_name();
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let done = Arc::clone(&done);
        thread::spawn(move || -> Result<(u64, u64)> {
            let board = AttachedScoreboard::open(&name)?;
            let (mut most_requests, mut most_connections) = (0, 0);
            while !done.load(Ordering::Relaxed) {
                for slot in board.snapshot().live() {
                    most_requests = most_requests.max(slot.requests_child);
                    most_connections = most_connections.max(slot.connections);
                }
                // Paced, not spinning: a spinning monitor would take one of two cores.
                thread::park_timeout(Duration::from_millis(1));
            }
            Ok((most_requests, most_connections))
        })
    };
    let addr = server.addr();
    let clients: Vec<_> = (0..clients)
        .map(|_| {
            thread::spawn(move || -> Result<Vec<u32>> {
                let mut pids = Vec::with_capacity(requests);
                for _ in 0..requests {
                    let response = http_get(addr, "/")?;
                    ensure!(response.status == 200, "a request failed: {response:?}");
                    pids.push(hello_pid(&response.body)?);
                }
                Ok(pids)
            })
        })
        .collect();
    let mut per_worker = BTreeMap::new();
    let mut failure = None;
    for client in clients {
        match client.join().expect("client thread") {
            Ok(pids) => pids.into_iter().for_each(|pid| *per_worker.entry(pid).or_insert(0) += 1),
            Err(error) => failure = Some(error),
        }
    }
    done.store(true, Ordering::Relaxed);
    let (most_requests, most_connections) = monitor.join().expect("monitor thread")?;
    if let Some(error) = failure {
        return Err(error);
    }
    Ok((per_worker, most_requests, most_connections))
}

#[test]
fn no_worker_serves_more_than_its_request_limit_and_margin_under_a_burst_of_new_connections() -> Result<()> {
    // A replacement takes a while to boot in a debug build; a burst of new connections at full
    // speed must not let the old worker run past its limit meanwhile.
    let limit = 20;
    let server = ServerProcess::start_pool(2, 1, 3, &["--max-requests-per-child", "20"])?;
    let (per_worker, most_requests, _) = burst(&server, 4, 150)?;
    let total: u64 = per_worker.values().sum();
    ensure!(total == 600, "{total} answers");
    let busiest = per_worker.values().copied().max().unwrap_or(0);
    ensure!(busiest <= hard_limit(limit), "a worker answered {busiest} requests: {per_worker:?}");
    ensure!(most_requests <= hard_limit(limit), "the scoreboard showed a worker at {most_requests} requests");
    ensure!(per_worker.len() as u64 >= total / hard_limit(limit), "only {} workers served", per_worker.len());
    ensure!(!server.stderr().contains("worker died"), "{}", server.stderr());
    Ok(())
}

#[test]
fn no_worker_accepts_more_than_its_connection_limit_and_margin_under_a_burst() -> Result<()> {
    let limit = 10;
    let server = ServerProcess::start_pool(2, 1, 3, &["--max-connections-per-child", "10"])?;
    let (per_worker, _, most_connections) = burst(&server, 4, 100)?;
    let busiest = per_worker.values().copied().max().unwrap_or(0);
    ensure!(busiest <= hard_limit(limit), "a worker served {busiest} connections: {per_worker:?}");
    ensure!(most_connections <= hard_limit(limit), "the scoreboard showed {most_connections} connections");
    Ok(())
}

/// The request that a client sends, how long until the server answered or closed, and the
/// outcome.
fn timed_get(server: &ServerProcess, path: &str) -> (Duration, Result<prefork_tests::HttpResponse>) {
    let started = Instant::now();
    let outcome = http_get(server.addr(), path);
    (started.elapsed(), outcome)
}

#[test]
fn an_async_request_past_request_timeout_is_cut_at_the_timeout_with_a_503() -> Result<()> {
    let server = ServerProcess::start_pool(2, 1, 3, &["--request-timeout", "1s"])?;
    let before = server.children();
    // The handler would run ten times the timeout.
    let (took, outcome) = timed_get(&server, "/sleep/10000");
    let response = outcome?;
    ensure!(response.status == 503, "answered {response:?}");
    // Cut at the timeout (1 s), not at the handler's end (10 s) nor after a kill grace: a
    // bound with room for a loaded machine, far below either.
    ensure!(took < Duration::from_secs(4), "answered after {took:?}");
    server.wait_logged("request ran past its time budget")?;
    let log = server.stderr();
    ensure!(log.lines().any(|l| l.contains("time budget") && l.contains("GET /sleep/10000")), "{log}");
    // The worker drops the request and serves on: nobody is killed.
    ensure!(server.get("/")?.status == 200);
    ensure!(count(&server.status()?, "stuck_kills") == 0);
    ensure!(before.iter().all(|pid| is_alive(*pid)), "a worker was killed: {before:?}");
    Ok(())
}

#[test]
fn a_blocking_request_past_request_timeout_gets_its_worker_killed_after_a_short_grace() -> Result<()> {
    let server = ServerProcess::start_pool(2, 1, 3, &["--request-timeout", "1s"])?;
    wait_for("2 workers", DEADLINE, || Ok((server.children().len() == 2).then_some(())))?;
    // The handler blocks its worker's only thread for ten times the timeout: only a signal
    // stops it, after the timeout and its grace (1 s by default).
    let (took, outcome) = timed_get(&server, "/block/10000");
    ensure!(outcome.is_err(), "a request killed with its worker gets no response: {outcome:?}");
    ensure!(took < Duration::from_secs(4), "closed after {took:?}");
    wait_for("the stuck request to be named in the log", DEADLINE, || {
        let log = server.stderr();
        Ok(log
            .lines()
            .any(|l| l.contains("request ran past request_timeout") && l.contains("GET /block/10000"))
            .then_some(()))
    })?;
    let status = wait_for("the kill to be counted", DEADLINE, || {
        let status = server.status()?;
        Ok((count(&status, "stuck_kills") >= 1).then_some(status))
    })?;
    ensure!(count(&status, "stuck_kills") == 1, "{status}");
    // Replaced: the pool is back to its spares and serves.
    wait_for("the pool to refill", DEADLINE, || {
        let status = server.status()?;
        Ok((count(&status, "idle") >= 1 && count(&status, "starting") == 0).then_some(()))
    })?;
    ensure!(server.get("/")?.status == 200, "the pool serves on");
    Ok(())
}
