//! Black-box tests of supervision: recycling triggers, stuck workers, log reopening.

use anyhow::{Result, ensure};
use prefork_tests::{DEADLINE, ServerProcess, Sig, TempPath, count, hello_pid, is_alive, status_json, wait_for};

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
    // (Waited for: the log comes through a pipe that the test reads on another thread.)
    server.wait_logged("asking the supervisor for a replacement")?;
    server.wait_logged("accepted 1 connections")?;
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
    server.wait_logged("asking the supervisor for a replacement")?;
    server.wait_logged("lived")?;
    Ok(())
}

#[test]
fn a_worker_that_grows_past_max_worker_rss_is_replaced() -> Result<()> {
    let server = ServerProcess::start_pool(2, 1, 3, &["--max-worker-rss", "96MiB"])?;
    let leaked = server.get("/leak/128")?;
    ensure!(leaked.status == 200, "{}", leaked.body);
    let leaker: u32 = leaked.body.split_whitespace().last().unwrap_or_default().parse()?;
    wait_for("the leaking worker to be replaced", DEADLINE, || Ok((!is_alive(leaker)).then_some(())))?;
    server.wait_logged("of resident memory")?;
    // The pool, at min_spare_servers without it, serves on.
    ensure!(server.get("/")?.status == 200);
    Ok(())
}

#[test]
fn a_request_its_client_abandoned_ends_with_it_and_is_never_taken_for_stuck() -> Result<()> {
    // With several connections per worker the slot shows `_` while requests run, so the
    // watchdog goes by the running requests a worker publishes: one left behind by a client
    // that went away would get an innocent worker killed.
    for connections in ["1", "4"] {
        let pid_file = TempPath::new("abandoned.pid");
        let server = ServerProcess::start_pool(
            2,
            1,
            3,
            &[
                "--worker-connections",
                connections,
                "--request-timeout",
                "3s",
                "--request-timeout-grace",
                "300ms",
                "--pid-file",
                pid_file.as_str(),
            ],
        )?;
        let workers = |pid_file: &TempPath| -> Result<Vec<serde_json::Value>> {
            // The `status` command: no request of its own runs while it reads.
            Ok(status_json(pid_file)?["workers"].as_array().cloned().unwrap_or_default())
        };
        // The client goes once its request is running (shorter than the timeout: a request
        // that ends, by its client or by itself, is never stuck).
        let mut abandoned = server.connect()?;
        abandoned.send(b"GET /sleep/2000 HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let left = wait_for("the request to run", DEADLINE, || {
            let running = workers(&pid_file)?
                .into_iter()
                .find(|w| w["request"]["line"] == "GET /sleep/2000 HTTP/1.1" && !w["running_seconds"].is_null());
            Ok(running.and_then(|w| w["pid"].as_u64()))
        })?;
        drop(abandoned);
        wait_for("the abandoned request to end", DEADLINE, || {
            Ok(workers(&pid_file)?.iter().all(|w| w["running_seconds"].is_null()).then_some(()))
        })?;
        // A request that does run too long, begun after that one ended, on another worker:
        // once the watchdog has taken it, the abandoned one's time would have passed too.
        let mut held = Vec::new();
        let mut probe = loop {
            ensure!(held.len() < 8, "no worker but {left} takes connections");
            let mut connection = server.connect()?;
            if hello_pid(&connection.get("/")?.body)? != left as u32 {
                break connection;
            }
            held.push(connection);
        };
        probe.send(b"GET /block/30000 HTTP/1.1\r\nHost: x\r\n\r\n")?;
        wait_for("the probe to be taken for stuck", DEADLINE, || {
            let log = server.stderr();
            Ok(log
                .lines()
                .any(|l| l.contains("request ran past request_timeout") && l.contains("GET /block/30000"))
                .then_some(()))
        })?;
        // The supervisor handles a signal between two rounds: once it has logged this one,
        // everything it logged in the probe's round is in the log.
        server.signal(Sig::SIGTTIN)?;
        server.wait_logged("min_spare_servers=2 max_spare_servers=4")?;
        let log = server.stderr();
        let taken: Vec<&str> = log.lines().filter(|l| l.contains("request ran past request_timeout")).collect();
        ensure!(
            taken.len() == 1 && taken[0].contains("GET /block/30000") && !taken[0].contains(&format!("pid={left} ")),
            "worker_connections {connections}: taken for stuck:\n{}",
            taken.join("\n")
        );
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
