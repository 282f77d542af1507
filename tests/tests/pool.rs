//! Black-box tests of pool control: start size, replacement of a killed worker, spare balancing.

use std::thread;

use anyhow::{Result, ensure};
use prefork_tests::{DEADLINE, ServerProcess, Sig, count, hello_pid, http_get, is_alive, status_pids, wait_for};

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
    let addr = server.addr();
    let requests: Vec<_> = (0..4).map(|_| thread::spawn(move || http_get(addr, "/sleep/2000"))).collect();
    // While the four requests run, the pool grows until two workers are idle again.
    let during = wait_for("4 busy and 2 idle workers at once", DEADLINE, || {
        let status = server.status()?;
        // The status request itself occupies one worker.
        Ok((count(&status, "busy") >= 5 && count(&status, "idle") >= 2).then_some(status))
    })?;
    let mut served_by = Vec::new();
    for request in requests {
        let response = request.join().expect("request thread")?;
        ensure!(response.status == 200, "sleep answered {}", response.status);
        served_by.push(response.body);
    }
    served_by.sort();
    served_by.dedup();
    ensure!(served_by.len() == 4, "four concurrent requests need four workers: {served_by:?}");
    ensure!(count(&during, "processes") >= 6, "status while busy: {during}");
    // Afterwards the surplus is retired (one per second) down to max_spare_servers.
    let after = wait_for("the pool to shrink to max_spare_servers", DEADLINE, || {
        let status = server.status()?;
        Ok((count(&status, "idle") <= 3 && count(&status, "processes") <= 4).then_some(status))
    })?;
    ensure!(count(&after, "idle") >= 2, "shrank below min_spare_servers: {after}");
    Ok(())
}

#[test]
fn a_busy_worker_does_not_accept_so_an_idle_sibling_serves_the_next_client() -> Result<()> {
    let server = ServerProcess::start_pool(3, 1, 5, &[])?;
    let addr = server.addr();
    let sleeping = thread::spawn(move || http_get(addr, "/sleep/3000"));
    let busy_pid = wait_for("the sleep request to run", DEADLINE, || {
        let status = server.status()?;
        // Two workers write: the sleeper, and the one answering this status request.
        let writers: Vec<u64> = status["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w["state"] == "W" && w["seconds_in_state"].as_f64() > Some(0.05))
            .filter_map(|w| w["pid"].as_u64())
            .collect();
        Ok((writers.len() == 1).then(|| writers[0] as u32))
    })?;
    for _ in 0..5 {
        let hello = server.get("/")?;
        let pid = hello_pid(&hello.body)?;
        ensure!(pid != busy_pid, "worker {busy_pid} accepted a connection while busy");
    }
    ensure!(sleeping.join().expect("request thread")?.status == 200);
    Ok(())
}

#[test]
fn a_worker_that_reaches_max_requests_per_child_is_replaced_without_a_failed_request() -> Result<()> {
    let server = ServerProcess::start_pool(1, 1, 2, &["--max-requests-per-child", "3"])?;
    // On one keep-alive connection: the worker asks for its replacement near the limit, and
    // once that is ready it is told to go, so a response soon says the connection will close.
    // It drains: no idle keep-alive connection is cut.
    let mut connection = server.connect()?;
    let first = connection.get("/")?;
    ensure!(first.status == 200 && first.header("connection").is_none(), "{:?}", first.headers);
    let pid = hello_pid(&first.body)?;
    let mut answered = 1;
    loop {
        let response = connection.get("/")?;
        answered += 1;
        ensure!(response.status == 200 && response.body.contains(&pid.to_string()), "one connection, one worker");
        if response.header("connection") == Some("close") {
            break;
        }
        // Past its limit plus the margin it closes regardless (3 + 1).
        ensure!(answered < 4, "no Connection: close after {answered} requests");
        // Give the supervisor a moment to fork the replacement and retire the worker.
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ensure!(connection.closed_by_server_within(DEADLINE)?, "connection left open after the last request");
    // The supervisor forks the replacement first, then lets the old worker go.
    wait_for("the worker to be replaced", DEADLINE, || Ok((!server.children().contains(&pid)).then_some(())))?;
    ensure!(!is_alive(pid), "recycled worker {pid} still alive");
    // Every request keeps being answered, by ever new workers.
    let mut answered_by = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let response = server.get("/")?;
        ensure!(response.status == 200, "answered {}", response.status);
        answered_by.insert(hello_pid(&response.body)?);
    }
    ensure!(answered_by.len() >= 2 && !answered_by.contains(&pid), "{answered_by:?}");
    let log = server.stderr();
    ensure!(
        log.contains("asking the supervisor for a replacement") && log.contains("recycled: its replacement is ready"),
        "{log}"
    );
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
        let workers = status["workers"].as_array().cloned().unwrap_or_default();
        let all_new = !workers.is_empty() && workers.iter().all(|w| w["generation"] == 2);
        Ok((all_new && status_pids(&status) == server.children()).then_some(status))
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
fn a_keep_alive_client_between_requests_is_drained_not_cut_by_a_reload() -> Result<()> {
    let server = ServerProcess::start_pool(2, 1, 3, &[])?;
    let mut connection = server.connect()?;
    let before = connection.get("/")?;
    let old = hello_pid(&before.body)?;
    server.signal(Sig::SIGHUP)?;
    // The new generation is ready and the old worker is told to stop while its client idles.
    wait_for("the old worker to be told to stop", DEADLINE, || {
        let status = server.status()?;
        let told = status["workers"].as_array().into_iter().flatten().any(|w| w["pid"] == old && w["state"] == "G");
        Ok(told.then_some(()))
    })?;
    // The client's next request is answered, by the old worker, and closes the connection.
    let after = connection.get("/")?;
    ensure!(after.status == 200 && after.body.contains(&old.to_string()), "{after:?}");
    ensure!(after.header("connection") == Some("close"), "{:?}", after.headers);
    wait_for("the old worker to exit", DEADLINE, || Ok((!is_alive(old)).then_some(())))?;
    Ok(())
}
