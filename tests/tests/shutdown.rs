//! Black-box tests of stopping: in-flight work finishes, then nothing is left behind.

use std::thread;

use anyhow::{Result, ensure};
use prefork_scoreboard::{AttachedScoreboard, WorkerState};
use prefork_tests::{DEADLINE, ServerProcess, Sig, count, cpu_ticks, http_get, is_alive, status_pids, wait_for};

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_leaves_nothing_behind() -> Result<()> {
    let mut server = ServerProcess::start_pool(3, 1, 4, &[])?;
    let status = server.status()?;
    let segment = server.segment_path();
    ensure!(segment.exists(), "no scoreboard segment at {}", segment.display());
    ensure!(status["server"]["scoreboard"].as_str() == Some(&*server.scoreboard_name()));

    let addr = server.addr();
    let in_flight = thread::spawn(move || http_get(addr, "/sleep/1500"));
    wait_for("the sleep request to be in a worker", DEADLINE, || Ok(sleeper_running(&server.status()?).then_some(())))?;
    let workers = server.children();
    let cpu_before = cpu_ticks(server.pid()).unwrap_or(0);
    server.signal(Sig::SIGTERM)?;

    let response = in_flight.join().expect("request thread")?;
    // The parent waited about a second and a half for the worker: asleep, not spinning.
    let cpu_used = cpu_ticks(server.pid()).unwrap_or(0) - cpu_before;
    ensure!(cpu_used < 50, "the parent used {cpu_used} ticks of CPU while waiting for one request");
    ensure!(response.status == 200, "in-flight request answered {}", response.status);
    ensure!(response.body.starts_with("slept 1500 ms"), "{:?}", response.body);

    let exit = server.wait_exit(DEADLINE)?;
    ensure!(exit.success(), "server exited with {exit}; stderr:\n{}", server.stderr());
    wait_for("every worker to be gone", DEADLINE, || Ok(workers.iter().all(|pid| !is_alive(*pid)).then_some(())))?;
    ensure!(!segment.exists(), "scoreboard segment {} left behind", segment.display());
    server.wait_logged("all workers stopped")?;
    Ok(())
}

/// A worker other than the one answering the status request is running a handler.
fn sleeper_running(status: &serde_json::Value) -> bool {
    status["scoreboard"].as_str().is_some_and(|board| board.matches('W').count() >= 2)
}

#[test]
fn a_request_still_running_at_graceful_timeout_is_cut_off_and_the_server_still_exits() -> Result<()> {
    let mut server = ServerProcess::start_pool(2, 1, 4, &["--graceful-timeout", "1s"])?;
    let addr = server.addr();
    let in_flight = thread::spawn(move || http_get(addr, "/sleep/20000"));
    wait_for("the sleep request to be in a worker", DEADLINE, || Ok(sleeper_running(&server.status()?).then_some(())))?;
    let workers = server.children();
    let segment = server.segment_path();
    server.signal(Sig::SIGTERM)?;
    let exit = server.wait_exit(DEADLINE)?;
    ensure!(exit.success(), "server exited with {exit}");
    ensure!(in_flight.join().expect("request thread").is_err(), "a 20 s request cannot finish within a 1 s grace");
    ensure!(workers.iter().all(|pid| !is_alive(*pid)), "workers survived");
    ensure!(!segment.exists(), "scoreboard segment left behind");
    server.wait_logged("graceful_timeout passed")?;
    Ok(())
}

#[test]
fn sigquit_stops_at_once_even_with_a_long_request_in_flight() -> Result<()> {
    let mut server = ServerProcess::start_pool(2, 1, 4, &[])?;
    let addr = server.addr();
    // A request far longer than the deadline below: only an immediate stop ends it in time.
    let _in_flight = thread::spawn(move || http_get(addr, "/sleep/60000"));
    wait_for("the sleep request to be in a worker", DEADLINE, || Ok(sleeper_running(&server.status()?).then_some(())))?;
    let workers = server.children();
    let segment = server.segment_path();
    server.signal(Sig::SIGQUIT)?;
    let exit = server.wait_exit(DEADLINE)?;
    ensure!(exit.success(), "server exited with {exit}");
    ensure!(workers.iter().all(|pid| !is_alive(*pid)), "workers survived an immediate stop");
    ensure!(!segment.exists(), "scoreboard segment left behind");
    Ok(())
}

#[test]
fn sigint_stops_gracefully_like_sigterm_and_a_second_signal_stops_at_once() -> Result<()> {
    let mut server = ServerProcess::start_pool(2, 1, 4, &[])?;
    // A terminal sends SIGINT, SIGHUP and SIGQUIT to the whole process group: workers leave
    // them to the supervisor.
    let worker = wait_for("a ready worker", DEADLINE, || {
        let status = server.status()?;
        Ok((count(&status, "starting") == 0).then(|| status_pids(&status)).and_then(|pids| pids.first().copied()))
    })?;
    for signal in [Sig::SIGHUP, Sig::SIGINT, Sig::SIGQUIT] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker as i32), signal)?;
    }
    ensure!(server.get("/")?.status == 200);
    ensure!(is_alive(worker) && server.children().contains(&worker), "a worker died of a terminal's signal");
    let addr = server.addr();
    // Far longer than the deadlines below: only the second signal ends it in time.
    let in_flight = thread::spawn(move || http_get(addr, "/sleep/60000"));
    wait_for("the sleep request to be in a worker", DEADLINE, || Ok(sleeper_running(&server.status()?).then_some(())))?;
    let workers = server.children();
    server.signal(Sig::SIGINT)?;
    server.wait_logged("graceful stop requested")?;
    // Graceful: the idle workers leave, the busy one finishes its request.
    wait_for("only the busy worker to be left", DEADLINE, || Ok((server.children().len() == 1).then_some(())))?;
    server.signal(Sig::SIGTERM)?;
    let exit = server.wait_exit(DEADLINE)?;
    ensure!(exit.success(), "server exited with {exit}");
    ensure!(in_flight.join().expect("request thread").is_err(), "the request was cut by the second signal");
    server.wait_logged("second stop signal: stopping immediately")?;
    ensure!(workers.iter().all(|pid| !is_alive(*pid)), "workers survived");
    Ok(())
}

#[test]
fn a_stale_segment_from_a_killed_server_is_removed_by_the_next_start() -> Result<()> {
    let mut first = ServerProcess::start_pool(2, 1, 4, &[])?;
    let stale = first.segment_path();
    let workers = first.children();
    first.signal(Sig::SIGKILL)?;
    first.wait_exit(DEADLINE)?;
    // Workers die with their parent (PR_SET_PDEATHSIG).
    wait_for("orphaned workers to die", DEADLINE, || Ok(workers.iter().all(|pid| !is_alive(*pid)).then_some(())))?;
    ensure!(stale.exists(), "a SIGKILLed parent cannot clean up; the segment should be there");
    let second = ServerProcess::start_pool(1, 1, 2, &[])?;
    ensure!(!stale.exists(), "stale segment {} survived the next start:\n{}", stale.display(), second.stderr());
    wait_for("the removal to be logged", DEADLINE, || {
        Ok(second.stderr().contains("removed stale scoreboard segment").then_some(()))
    })?;
    Ok(())
}

#[test]
fn a_graceful_stop_answers_a_request_already_handed_off_while_the_worker_was_busy() -> Result<()> {
    // One worker in all, so that nobody else can take the waiting request.
    let mut server = ServerProcess::start_pool(1, 1, 1, &["--max-clients", "1", "--keepalive-timeout", "30s"])?;
    let board = AttachedScoreboard::open(&server.scoreboard_name())?;
    // A client sends half a head: it waits parked.
    let mut waiting = server.connect()?;
    waiting.send(b"GET / HTTP/1.1\r\nHost: x\r\n")?;
    wait_for("the half head to be parked", DEADLINE, || Ok((board.snapshot().parked() == 1).then_some(())))?;
    // The worker's only thread is taken by a blocking handler (read from shared memory: no
    // worker is free to answer a status request).
    let addr = server.addr();
    // Ten seconds: far longer than the few state changes awaited below take even on a loaded
    // machine (`handler_running` is checked again before the stop, so a lost race fails
    // loudly rather than passing untested).
    let blocking = thread::spawn(move || http_get(addr, "/block/10000"));
    let handler_running = || board.snapshot().live().any(|slot| slot.state == WorkerState::Writing);
    wait_for("the blocking handler to run", DEADLINE, || Ok(handler_running().then_some(())))?;
    // The head is completed: the parking thread hands the request over to the busy worker.
    waiting.send(b"\r\n")?;
    wait_for("the request to be handed off", DEADLINE, || {
        Ok((board.snapshot().totals().handed_off >= 1).then_some(()))
    })?;
    ensure!(handler_running(), "the handler ended before the stop: this test tests nothing");
    server.signal(Sig::SIGTERM)?;
    // Graceful: the handler finishes, and so does the request that was waiting its turn.
    let blocked = blocking.join().expect("request thread")?;
    ensure!(blocked.status == 200, "the blocking request was answered {blocked:?}");
    let answer = waiting.read_response()?;
    ensure!(answer.status == 200, "the handed-off request was answered {answer:?}");
    ensure!(
        answer.header("connection") == Some("close"),
        "a stopping server keeps no connection: {:?}",
        answer.headers
    );
    let exit = server.wait_exit(DEADLINE)?;
    ensure!(exit.success(), "server exited with {exit}; stderr:\n{}", server.stderr());
    Ok(())
}

#[test]
fn a_graceful_stop_does_not_wait_for_idle_keep_alive_clients() -> Result<()> {
    // Timeouts far past the deadline below: only closing the idle connections at once stops
    // the server in time. Classic workers park an idle connection after 100 ms (a stop closes
    // it there); with `--worker-connections 2` it stays in the worker, which closes it itself.
    for extra in [&[][..], &["--worker-connections", "2"][..]] {
        let args = [&["--keepalive-timeout", "60s", "--graceful-timeout", "60s"][..], extra].concat();
        let mut server = ServerProcess::start_pool(2, 1, 4, &args)?;
        let mut idle: Vec<_> = (0..3).map(|_| server.connect()).collect::<Result<_>>()?;
        for connection in &mut idle {
            ensure!(connection.get("/")?.status == 200);
        }
        let workers = server.children();
        server.signal(Sig::SIGTERM)?;
        let exit = server.wait_exit(DEADLINE)?;
        ensure!(exit.success(), "{extra:?}: server exited with {exit}; stderr:\n{}", server.stderr());
        for connection in &mut idle {
            ensure!(connection.closed_by_server_within(DEADLINE)?, "{extra:?}: an idle connection was left open");
        }
        ensure!(workers.iter().all(|pid| !is_alive(*pid)), "{extra:?}: workers survived");
    }
    Ok(())
}

#[test]
fn a_keep_alive_connection_outlives_its_workers_recycling_and_closes_when_asked() -> Result<()> {
    // No room for a replacement beforehand (max-clients 1): each worker goes past its limit
    // to the margin (4 + 1), then leaves on its own. Its idle connection is not cut: it waits
    // in the hand-off queue for the replacement, which answers it.
    let server = ServerProcess::start_pool(
        1,
        1,
        1,
        &["--max-clients", "1", "--max-requests-per-child", "4", "--keepalive-timeout", "60s"],
    )?;
    // The first worker's margin request asks to close: it is answered and the connection
    // closed at once (a closing response never parks), not at the keep-alive timeout.
    let mut first = server.connect()?;
    let mut first_pids = Vec::new();
    for _ in 0..4 {
        let answer = first.get("/")?;
        ensure!(answer.status == 200 && answer.header("connection") != Some("close"), "{answer:?}");
        first_pids.push(prefork_tests::hello_pid(&answer.body)?);
    }
    first.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let last = first.read_response()?;
    ensure!(last.status == 200 && last.header("connection") == Some("close"), "{last:?}");
    first_pids.push(prefork_tests::hello_pid(&last.body)?);
    ensure!(first_pids.windows(2).all(|w| w[0] == w[1]), "one worker answers a fresh pool: {first_pids:?}");
    ensure!(first.closed_by_server_within(DEADLINE)?, "left open after Connection: close");
    // Then a keep-alive client across several recyclings.
    let mut connection = server.connect()?;
    let mut per_worker = std::collections::BTreeMap::new();
    for _ in 0..12 {
        let answer = connection.get("/")?;
        ensure!(answer.status == 200, "{answer:?}");
        ensure!(answer.header("connection") != Some("close"), "a recycling closed the connection: {answer:?}");
        *per_worker.entry(prefork_tests::hello_pid(&answer.body)?).or_insert(0) += 1;
    }
    ensure!(per_worker.len() >= 3, "12 answers with a limit of 4 from only {per_worker:?}");
    ensure!(per_worker.values().all(|&n| n <= 5), "a worker went past its limit and margin: {per_worker:?}");
    ensure!(!per_worker.contains_key(&first_pids[0]), "the first worker served on past its margin");
    Ok(())
}
