//! Black-box tests of supervision: recycling triggers, stuck workers, log reopening.

use std::thread;

use anyhow::{Result, ensure};
use prefork_tests::{DEADLINE, ServerProcess, Sig, TempPath, count, hello_pid, http_get, is_alive, wait_for};

#[test]
fn a_worker_is_replaced_after_max_connections_per_child() -> Result<()> {
    let server = ServerProcess::start_pool(1, 1, 2, &["--max-connections-per-child", "2"])?;
    let first = hello_pid(&server.get("/")?.body)?;
    // After its first connection it asks for a replacement, which takes over: connections go
    // on being answered, by other workers.
    wait_for("the worker to be replaced", DEADLINE, || Ok((!server.children().contains(&first)).then_some(())))?;
    for _ in 0..5 {
        let response = server.get("/")?;
        ensure!(response.status == 200 && hello_pid(&response.body)? != first);
    }
    let log = server.stderr();
    ensure!(log.contains("asking the supervisor for a replacement") && log.contains("accepted 1 connections"), "{log}");
    Ok(())
}

#[test]
fn a_worker_is_replaced_after_max_worker_lifetime() -> Result<()> {
    let server = ServerProcess::start_pool(2, 2, 3, &["--max-worker-lifetime", "1s"])?;
    let originals = wait_for("2 workers", DEADLINE, || {
        let children = server.children();
        Ok((children.len() == 2).then_some(children))
    })?;
    wait_for("both original workers replaced", DEADLINE, || {
        let now = server.children();
        Ok((originals.iter().all(|pid| !now.contains(pid)) && now.len() >= 2).then_some(()))
    })?;
    ensure!(server.get("/")?.status == 200);
    let log = server.stderr();
    ensure!(log.contains("asking the supervisor for a replacement") && log.contains("lived"), "{log}");
    Ok(())
}

#[test]
fn a_worker_that_grows_past_max_worker_rss_is_replaced() -> Result<()> {
    let server = ServerProcess::start_pool(2, 1, 3, &["--max-worker-rss", "96MiB"])?;
    let leaked = server.get("/leak/128")?;
    ensure!(leaked.status == 200, "{}", leaked.body);
    let leaker: u32 = leaked.body.split_whitespace().last().unwrap_or_default().parse()?;
    wait_for("the leaking worker to be replaced", DEADLINE, || Ok((!is_alive(leaker)).then_some(())))?;
    ensure!(server.stderr().contains("of resident memory"), "{}", server.stderr());
    // The pool, at min_spare_servers without it, serves on.
    ensure!(server.get("/")?.status == 200);
    Ok(())
}

#[test]
fn a_request_past_request_timeout_is_logged_and_its_worker_killed_and_replaced() -> Result<()> {
    let server = ServerProcess::start_pool(2, 1, 3, &["--request-timeout", "1s", "--request-timeout-grace", "500ms"])?;
    let addr = server.addr();
    let stuck = thread::spawn(move || http_get(addr, "/sleep/30000"));
    let outcome = stuck.join().expect("request thread");
    ensure!(outcome.is_err(), "a request killed with its worker gets no response: {outcome:?}");
    let log = server.stderr();
    ensure!(
        log.lines().any(|l| l.contains("request ran past request_timeout") && l.contains("GET /sleep/30000")),
        "the stuck request is not named in the log:\n{log}"
    );
    let status = server.status()?;
    ensure!(count(&status, "stuck_kills") == 1, "{status}");
    ensure!(server.get("/")?.status == 200, "the pool serves on");
    Ok(())
}

#[test]
fn a_request_its_client_abandoned_ends_with_it_and_is_never_taken_for_stuck() -> Result<()> {
    // With several connections per worker the slot shows `_` while requests run, so the
    // watchdog goes by the running requests a worker publishes: one left behind by a client
    // that went away would get an innocent worker killed.
    for connections in ["1", "4"] {
        let server = ServerProcess::start_pool(
            2,
            1,
            3,
            &["--worker-connections", connections, "--request-timeout", "1s", "--request-timeout-grace", "300ms"],
        )?;
        // The client goes once its request is running (the status page shows it running; a
        // worker serving several connections shows the status request as its latest).
        let mut abandoned = server.connect()?;
        abandoned.send(b"GET /sleep/800 HTTP/1.1\r\nHost: x\r\n\r\n")?;
        wait_for("the request to run", DEADLINE, || {
            let status = server.status()?;
            let workers = status["workers"].as_array().cloned().unwrap_or_default();
            // The status request itself has run for a moment only.
            Ok(workers.iter().any(|w| w["running_seconds"].as_f64().is_some_and(|s| s >= 0.1)).then_some(()))
        })?;
        drop(abandoned);
        // Nothing runs any more but the status request asking (which has run for a moment).
        wait_for("the abandoned requests to end", DEADLINE, || {
            let status = server.status()?;
            let running = status["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|w| w["running_seconds"].as_f64().is_some_and(|s| s >= 0.15));
            Ok((!running).then_some(()))
        })?;
        // Past the timeout and its grace: no worker was taken for stuck.
        thread::sleep(std::time::Duration::from_millis(1500));
        let status = server.status()?;
        ensure!(count(&status, "stuck_kills") == 0, "worker_connections {connections}: {status}");
        let log = server.stderr();
        ensure!(!log.contains("request ran past request_timeout"), "worker_connections {connections}:\n{log}");
    }
    Ok(())
}

#[test]
fn sigusr1_reopens_the_log_file_in_the_supervisor_and_its_workers() -> Result<()> {
    let log = TempPath::new("server.log");
    let rotated = TempPath::new("server.log.1");
    let mut server =
        ServerProcess::start_pool(2, 1, 3, &["--slow-request-threshold", "10ms", "--log-file", log.as_str()])?;
    wait_for("the log file to fill", DEADLINE, || {
        Ok(std::fs::read_to_string(log.path())?.contains("supervisor started").then_some(()))
    })?;
    std::fs::rename(log.path(), rotated.path())?;
    server.signal(Sig::SIGUSR1)?;
    wait_for("the supervisor to write to the new file", DEADLINE, || {
        Ok(std::fs::read_to_string(log.path()).is_ok_and(|l| l.contains("log files reopened")).then_some(()))
    })?;
    // A worker logs too (a slow request): into the new file, not the rotated one.
    ensure!(server.get("/sleep/50")?.status == 200);
    wait_for("the worker to write to the new file", DEADLINE, || {
        Ok(std::fs::read_to_string(log.path())?.contains("slow request").then_some(()))
    })?;
    ensure!(!std::fs::read_to_string(rotated.path())?.contains("slow request"));
    ensure!(server.children().len() >= 2, "a worker died of SIGUSR1");
    server.signal(Sig::SIGTERM)?;
    ensure!(server.wait_exit(DEADLINE)?.success());
    Ok(())
}

#[test]
fn the_apache_and_php_fpm_spawn_ramps_can_be_chosen() -> Result<()> {
    for (ramp, logged) in [
        ("apache", "spawn_ramp=Doubling { cap_at_deficit: false }"),
        ("php-fpm", "spawn_ramp=Doubling { cap_at_deficit: true }"),
        ("deficit", "spawn_ramp=Deficit"),
    ] {
        let server = ServerProcess::start(&["--start-servers", "1", "--min-spare-servers", "2", "--spawn-ramp", ramp])?;
        server.wait_logged(logged)?;
        wait_for(
            "the pool to reach min_spare",
            DEADLINE,
            || Ok((count(&server.status()?, "idle") >= 2).then_some(())),
        )?;
    }
    Ok(())
}
