//! The probes load balancers and orchestrators use: liveness (`/healthz`) and readiness
//! (`/readyz`), answered by workers from the scoreboard and left out of the counts, and the
//! drain delay, during which a stopping server fails its readiness probe but serves every
//! request.

use anyhow::{Result, ensure};
use prefork_tests::{
    DEADLINE, ServerProcess, Sig, TempPath, count, http_get, only_generation, run_command, status_json, status_pids,
    wait_for,
};

#[test]
fn the_probes_answer_from_the_scoreboard_and_cost_no_request_count() -> Result<()> {
    let pid_file = TempPath::new("probes.pid");
    let limits = ["--max-requests-per-child", "5", "--max-connections-per-child", "5", "--access-log", "common"];
    let server = ServerProcess::start_pool(2, 1, 2, &[&["--pid-file", pid_file.as_str()][..], &limits].concat())?;
    let ready = wait_for("the readiness probe to answer 200", DEADLINE, || {
        let response = server.get("/readyz")?;
        Ok((response.status == 200).then_some(response))
    })?;
    ensure!(ready.body == "ready\n", "{:?}", ready.body);
    ensure!(ready.header("cache-control") == Some("no-store"), "{:?}", ready.headers);
    let health = server.get("/healthz")?;
    ensure!(health.status == 200 && health.body == "ok\n", "{} {:?}", health.status, health.body);
    let before = status_json(&pid_file)?;
    // Far more probes than a worker's request and connection limits, each on a connection of
    // its own (as balancers probe): none is counted, so no worker recycles.
    for path in ["/healthz", "/readyz"].iter().cycle().take(40) {
        ensure!(server.get(path)?.status == 200, "{path}");
    }
    let after = status_json(&pid_file)?;
    ensure!(count(&after, "total_accesses") == count(&before, "total_accesses"), "probes were counted: {after}");
    // (The pool may fork a spare meanwhile: a probe takes a worker out of idle for a moment.)
    let survived = status_pids(&before).iter().all(|pid| status_pids(&after).contains(pid));
    let retiring = after["workers"].as_array().into_iter().flatten().any(|w| w["retire_requested"] == true);
    ensure!(survived && !retiring, "probes recycled workers: {before}\n{after}");
    ensure!(!server.stderr().contains("recycled"), "{}", server.stderr());
    ensure!(after["ready"] == true && after["draining"] == false, "{after}");
    // An ordinary request still counts.
    ensure!(server.get("/")?.status == 200);
    let counted = wait_for("the request counted", DEADLINE, || {
        let status = status_json(&pid_file)?;
        Ok((count(&status, "total_accesses") == count(&before, "total_accesses") + 1).then_some(()))
    });
    counted?;
    // The access log has the request, and none of the probes.
    server.wait_logged("\"GET / HTTP/1.1\"")?;
    let log = server.stderr();
    ensure!(!log.contains("/healthz") && !log.contains("/readyz"), "probes in the access log:\n{log}");
    Ok(())
}

#[test]
fn the_probes_paths_can_be_moved_or_switched_off_and_bad_paths_are_refused() -> Result<()> {
    let server = ServerProcess::start(&["--health-path", "/alive", "--ready-path", "off"])?;
    ensure!(server.get("/alive")?.status == 200);
    ensure!(server.get("/healthz")?.status == 404, "the old path still answers");
    ensure!(server.get("/readyz")?.status == 404, "the switched-off probe answers");
    for (args, says) in [
        (["--health-path", "healthz"], "health_path must start with '/'"),
        (["--ready-path", "/server-status"], "ready_path and status_path are both"),
    ] {
        let output = run_command(&[&["--address", "127.0.0.1", "--port", "0"][..], &args[..]].concat())?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(!output.status.success() && stderr.contains(says), "{args:?}: {stderr}");
    }
    Ok(())
}

/// On SIGTERM with `--drain-delay`, the readiness probe fails at once while a closed-loop
/// client's requests are all still answered; a second SIGTERM cuts the drain short, and the
/// server stops gracefully. (The delay is long, so that no machine is too slow to see the
/// drain; the test never waits for it to pass.)
#[test]
fn a_draining_server_fails_readiness_but_serves_everything_until_it_stops() -> Result<()> {
    let mut server = ServerProcess::start_pool(2, 1, 3, &["--drain-delay", "10m"])?;
    wait_for("ready", DEADLINE, || Ok((server.get("/readyz")?.status == 200).then_some(())))?;
    server.signal(Sig::SIGTERM)?;
    server.wait_logged("draining")?;
    let probe = server.get("/readyz")?;
    ensure!(probe.status == 503 && probe.body == "draining\n", "{} {:?}", probe.status, probe.body);
    ensure!(server.get("/healthz")?.status == 200, "liveness fails while draining");
    for _ in 0..100 {
        let response = http_get(server.addr(), "/")?;
        ensure!(response.status == 200, "a request failed while draining: {}", response.status);
    }
    let status = server.status()?;
    ensure!(status["draining"] == true && status["ready"] == false, "{status}");
    // A reload while draining goes through, and the new generation drains too.
    server.signal(Sig::SIGHUP)?;
    wait_for("generation 2 only", DEADLINE, || Ok(only_generation(&server.status()?, 2).then_some(())))?;
    ensure!(server.get("/readyz")?.status == 503, "the new generation is ready while the server drains");
    ensure!(http_get(server.addr(), "/")?.status == 200);
    server.signal(Sig::SIGTERM)?;
    let exit = server.wait_exit(DEADLINE)?;
    ensure!(exit.success(), "{exit:?}\n{}", server.stderr());
    ensure!(server.stderr().contains("all workers stopped graceful=true"), "{}", server.stderr());
    Ok(())
}

/// Left alone, the drain ends by itself and the server stops gracefully.
#[test]
fn a_drain_delay_ends_by_itself_in_a_graceful_stop() -> Result<()> {
    let mut server = ServerProcess::start_pool(1, 1, 2, &["--drain-delay", "1s"])?;
    wait_for("ready", DEADLINE, || Ok((server.get("/readyz")?.status == 200).then_some(())))?;
    server.signal(Sig::SIGTERM)?;
    server.wait_logged("draining")?;
    let exit = server.wait_exit(DEADLINE)?;
    ensure!(exit.success(), "{exit:?}\n{}", server.stderr());
    let log = server.stderr();
    ensure!(log.contains("drain delay over: graceful stop") && log.contains("graceful=true"), "{log}");
    Ok(())
}
