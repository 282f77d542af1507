//! Black-box tests of pool control: start size, replacement of a killed worker, spare balancing.

use anyhow::{Result, ensure};
use prefork_tests::{DEADLINE, ServerProcess, Sig, count, hello_pid, is_alive, only_generation, status_pids, wait_for};

#[test]
fn the_parent_has_exactly_start_servers_children_and_the_status_page_agrees() -> Result<()> {
    let server = ServerProcess::start_pool(3, 1, 5, &[])?;
    // The status request itself keeps one worker busy: ready means 2 idle + that one.
    let status = wait_for("3 ready workers", DEADLINE, || {
        let status = server.status()?;
        Ok((count(&status, "idle") == 2 && count(&status, "busy") == 1).then_some(status))
    })?;
    let children = server.children();
    ensure!(children.len() == 3, "ps shows {children:?}");
    ensure!(count(&status, "processes") == 3, "status: {status}");
    ensure!(status_pids(&status) == children, "status pids {:?} != ps {children:?}", status_pids(&status));
    ensure!(status["server"]["parent_pid"].as_u64() == Some(u64::from(server.pid())));
    let scoreboard = status["scoreboard"].as_str().unwrap_or_default();
    ensure!(scoreboard.len() == 256 && scoreboard.matches('_').count() == 2, "scoreboard {scoreboard:?}");
    Ok(())
}

#[test]
fn a_worker_killed_with_sigkill_is_replaced() -> Result<()> {
    let server = ServerProcess::start_pool(3, 3, 5, &[])?;
    let before = wait_for("3 workers", DEADLINE, || {
        let children = server.children();
        Ok((children.len() == 3).then_some(children))
    })?;
    let victim = before[1];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Sig::SIGKILL)?;
    let after = wait_for("a replacement worker", DEADLINE, || {
        let children = server.children();
        Ok((children.len() == 3 && !children.contains(&victim)).then_some(children))
    })?;
    ensure!(!is_alive(victim), "killed worker {victim} still alive");
    // The scoreboard forgets the dead worker and shows the new one.
    wait_for("status to agree with ps", DEADLINE, || {
        let status = server.status()?;
        Ok((status_pids(&status) == server.children() && !status_pids(&status).contains(&victim)).then_some(()))
    })?;
    server.wait_logged("worker died")?;
    ensure!(after.len() == 3);
    ensure!(!server.stderr().contains("failed to boot"), "a killed ready worker is not a boot failure");
    Ok(())
}

#[test]
fn spares_are_forked_while_workers_are_busy_and_retired_after() -> Result<()> {
    let server = ServerProcess::start_pool(2, 2, 3, &["--max-clients", "16"])?;
    // (The status request takes a worker too, so the pool may already grow here.)
    wait_for("2 ready workers", DEADLINE, || {
        let status = server.status()?;
        Ok((count(&status, "idle") >= 1 && count(&status, "starting") == 0).then_some(()))
    })?;
    // Four requests that run until their clients go (a request ends with its client).
    let mut requests = Vec::new();
    for _ in 0..4 {
        let mut connection = server.connect()?;
        connection.send(b"GET /sleep/60000 HTTP/1.1\r\nHost: x\r\n\r\n")?;
        requests.push(connection);
    }
    // While the four requests run, the pool grows until two workers are idle again.
    let during = wait_for("4 busy and 2 idle workers at once", DEADLINE, || {
        let status = server.status()?;
        // The status request itself occupies one worker.
        Ok((sleepers(&status).len() == 4 && count(&status, "busy") >= 5 && count(&status, "idle") >= 2)
            .then_some(status))
    })?;
    ensure!(count(&during, "processes") >= 6, "status while busy: {during}");
    drop(requests);
    // Afterwards the surplus is retired (one per second) down to max_spare_servers.
    let after = wait_for("the pool to shrink to max_spare_servers", DEADLINE, || {
        let status = server.status()?;
        Ok((sleepers(&status).is_empty() && count(&status, "idle") <= 3 && count(&status, "processes") <= 4)
            .then_some(status))
    })?;
    ensure!(count(&after, "idle") >= 2, "shrank below min_spare_servers: {after}");
    Ok(())
}

/// The workers running `GET /sleep/60000` (one connection each: four sleepers, four pids).
fn sleepers(status: &serde_json::Value) -> std::collections::BTreeSet<u64> {
    let workers = status["workers"].as_array().into_iter().flatten();
    workers
        .filter(|w| w["state"] == "W" && w["request"]["line"] == "GET /sleep/60000 HTTP/1.1")
        .filter_map(|w| w["pid"].as_u64())
        .collect()
}

#[test]
fn a_busy_worker_does_not_accept_so_an_idle_sibling_serves_the_next_client() -> Result<()> {
    let server = ServerProcess::start_pool(3, 1, 5, &[])?;
    // Busy until this test ends and drops the connection, however long the checks take.
    let mut sleeping = server.connect()?;
    sleeping.send(b"GET /sleep/60000 HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let busy_pid = wait_for("the sleep request to run", DEADLINE, || {
        let pids = sleepers(&server.status()?);
        Ok(pids.first().map(|pid| *pid as u32))
    })?;
    for _ in 0..5 {
        let hello = server.get("/")?;
        let pid = hello_pid(&hello.body)?;
        ensure!(pid != busy_pid, "worker {busy_pid} accepted a connection while busy");
    }
    ensure!(sleepers(&server.status()?).contains(&u64::from(busy_pid)), "the sleeper stopped being busy");
    Ok(())
}

#[test]
fn a_worker_that_reaches_max_requests_per_child_is_replaced_without_a_failed_request() -> Result<()> {
    let server = ServerProcess::start_pool(1, 1, 2, &["--max-requests-per-child", "3"])?;
    // On keep-alive connections, back to back: the worker asks for its replacement near the
    // limit (at 2), and is either let go once the replacement is ready (its idle connection
    // then moves to the replacement) or, past the limit's margin (3 + 1), closes its
    // connection and leaves on its own. Either way every request is answered.
    let mut connection = server.connect()?;
    let first = connection.get("/")?;
    ensure!(first.status == 200, "{first:?}");
    let old = hello_pid(&first.body)?;
    let mut answered_by_old = 1;
    for _ in 0..11 {
        let response = connection.get("/")?;
        ensure!(response.status == 200, "answered {response:?}");
        if hello_pid(&response.body)? == old {
            answered_by_old += 1;
        }
        if response.header("connection") == Some("close") {
            ensure!(connection.closed_by_server_within(DEADLINE)?, "connection left open after Connection: close");
            connection = server.connect()?;
        }
    }
    ensure!(answered_by_old <= 4, "worker {old} answered {answered_by_old} requests, past 3 and its margin");
    wait_for("the worker to be replaced", DEADLINE, || Ok((!server.children().contains(&old)).then_some(())))?;
    ensure!(!is_alive(old), "recycled worker {old} still alive");
    // Every request keeps being answered, by ever new workers.
    let mut answered_by = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let response = server.get("/")?;
        ensure!(response.status == 200, "answered {}", response.status);
        answered_by.insert(hello_pid(&response.body)?);
    }
    ensure!(answered_by.len() >= 3 && !answered_by.contains(&old), "{answered_by:?}");
    let log = server.stderr();
    ensure!(log.contains("asking the supervisor for a replacement"), "{log}");
    ensure!(log.contains("recycled: its replacement is ready") || log.contains("leaving on its own"), "{log}");
    ensure!(!log.contains("failed to boot") && !log.contains("worker died"), "{log}");
    Ok(())
}

#[test]
fn sighup_replaces_every_worker_with_a_new_generation() -> Result<()> {
    let server = ServerProcess::start_pool(3, 2, 4, &[])?;
    let old = wait_for("3 ready workers", DEADLINE, || {
        let status = server.status()?;
        Ok((count(&status, "starting") == 0 && count(&status, "processes") == 3).then(|| status_pids(&status)))
    })?;
    server.signal(Sig::SIGHUP)?;
    let status = wait_for("only generation-2 workers", DEADLINE, || {
        let status = server.status()?;
        Ok((only_generation(&status, 2) && status_pids(&status) == server.children()).then_some(status))
    })?;
    ensure!(status["server"]["generation"] == 2, "{status}");
    ensure!(status_pids(&status).iter().all(|pid| !old.contains(pid)), "old workers {old:?} survived: {status}");
    ensure!(server.get("/")?.status == 200, "the new generation serves");
    Ok(())
}

#[test]
fn ttin_and_ttou_move_the_spare_bounds() -> Result<()> {
    let server = ServerProcess::start_pool(2, 1, 2, &[])?;
    // Standard signals do not queue: send the second only once the first has been handled.
    server.signal(Sig::SIGTTIN)?;
    server.wait_logged("min_spare_servers=2 max_spare_servers=3")?;
    server.signal(Sig::SIGTTIN)?;
    server.wait_logged("min_spare_servers=3 max_spare_servers=4")?;
    // min_spare_servers is now 3: three idle besides the worker answering the status page.
    wait_for("3 idle workers", DEADLINE, || Ok((count(&server.status()?, "idle") >= 3).then_some(())))?;
    server.signal(Sig::SIGTTOU)?;
    wait_for("the change to be logged", DEADLINE, || {
        Ok((server.stderr().matches("min_spare_servers=2 max_spare_servers=3").count() == 2).then_some(()))
    })?;
    Ok(())
}

#[test]
fn a_keep_alive_client_between_requests_moves_to_the_new_generation_on_a_reload() -> Result<()> {
    let server = ServerProcess::start_pool(2, 1, 3, &[])?;
    let mut connection = server.connect()?;
    let before = connection.get("/")?;
    let old = hello_pid(&before.body)?;
    // Idle between requests, the connection leaves its worker and waits parked.
    wait_for("the idle connection to be parked", DEADLINE, || {
        let status = server.status()?;
        Ok((count(&status, "parked") == 1).then_some(()))
    })?;
    server.signal(Sig::SIGHUP)?;
    // The new generation is ready, the old workers go, and the connection they held between
    // requests goes to a new worker instead of being closed.
    wait_for("the old worker to exit", DEADLINE, || Ok((!is_alive(old)).then_some(())))?;
    let after = connection.get("/")?;
    ensure!(after.status == 200, "{after:?}");
    let new = hello_pid(&after.body)?;
    ensure!(new != old, "answered by the old worker {old}");
    ensure!(after.header("connection").is_none(), "the connection was not kept: {:?}", after.headers);
    let status = server.status()?;
    let generation =
        status["workers"].as_array().into_iter().flatten().find(|w| w["pid"] == new).map(|w| w["generation"].clone());
    ensure!(generation == Some(serde_json::json!(2)), "answered by {new} of generation {generation:?}");
    ensure!(count(&status, "handed_off") >= 1, "{status}");
    Ok(())
}
