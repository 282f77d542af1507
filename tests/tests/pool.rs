//! Black-box tests of pool control: start size, replacement of a killed worker, spare balancing.

use std::thread;

use anyhow::{Result, ensure};
use prefork_tests::{DEADLINE, ServerProcess, Sig, count, http_get, is_alive, status_pids, wait_for};

#[test]
fn the_parent_has_exactly_start_servers_children_and_the_status_page_agrees() -> Result<()> {
    let server =
        ServerProcess::start(&["--start-servers", "3", "--min-spare-servers", "1", "--max-spare-servers", "5"])?;
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
    let server =
        ServerProcess::start(&["--start-servers", "3", "--min-spare-servers", "3", "--max-spare-servers", "5"])?;
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
    wait_for("the death to be logged", DEADLINE, || Ok(server.stderr().contains("worker died").then_some(())))?;
    drop(after);
    Ok(())
}

#[test]
fn spares_are_forked_while_workers_are_busy_and_retired_after() -> Result<()> {
    let server = ServerProcess::start(&[
        "--start-servers",
        "2",
        "--min-spare-servers",
        "2",
        "--max-spare-servers",
        "3",
        "--max-clients",
        "16",
    ])?;
    wait_for("2 ready workers", DEADLINE, || Ok((count(&server.status()?, "processes") >= 2).then_some(())))?;
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
    ensure!(count(&during, "processes") >= 6, "status while busy: {during}");
    // Afterwards the surplus is retired (one per second) down to max_spare_servers.
    let after = wait_for("the pool to shrink to max_spare_servers", DEADLINE, || {
        let status = server.status()?;
        Ok((count(&status, "idle") <= 3 && count(&status, "processes") <= 4).then_some(status))
    })?;
    ensure!(count(&after, "idle") >= 2, "shrank below min_spare_servers: {after}");
    Ok(())
}
