//! FORKHANDLERS through the library: they run in each worker after fork and before it
//! accepts, and a failing one makes workers boot-fail with backoff instead of a fork storm.
//!
//! `harness = false`: `main` either runs the scenarios, or (with `FORK_HANDLER_TEST_SERVER`
//! set) is one of the servers they start, a fresh single-threaded process that may fork.

use std::cell::Cell;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use bytes::Bytes;
use prefork_tests::{DEADLINE, ServerProcess, Sig, wait_for};
use simplehttp_prefork::{Handler, Response, Server};

const ROLE: &str = "FORK_HANDLER_TEST_SERVER";

thread_local! {
    /// Set by the fork handler: the pid of the process it ran in.
    static INITIALISED_IN: Cell<Option<u32>> = const { Cell::new(None) };
}

fn main() -> Result<()> {
    match std::env::var(ROLE).as_deref() {
        Ok("working") => return serve(false),
        Ok("failing") => return serve(true),
        _ => {}
    }
    fork_handlers_run_in_each_worker_before_it_serves()?;
    println!("test fork_handlers_run_in_each_worker_before_it_serves ... ok");
    a_failing_fork_handler_backs_off_instead_of_forking_in_a_loop()?;
    println!("test a_failing_fork_handler_backs_off_instead_of_forking_in_a_loop ... ok");
    Ok(())
}

/// The server side: two workers, a fork handler, and `/init` reporting what it did.
fn serve(failing: bool) -> Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).init();
    let server = Server::builder()
        .start_servers(2)
        .min_spare_servers(1)
        .max_spare_servers(3)
        .max_clients(8)
        .fork_handler(move || {
            if failing {
                return Err("database unreachable".into());
            }
            INITIALISED_IN.with(|cell| cell.set(Some(std::process::id())));
            Ok(())
        })
        .handler(
            "^/init",
            Handler::new(|_, _| {
                let init = INITIALISED_IN.with(Cell::get).map_or("never".to_owned(), |pid| pid.to_string());
                Response::new(Bytes::from(format!("initialised-in {init} serving-in {}", std::process::id())))
            }),
        )
        .build()?;
    let bound = server.bind()?;
    bound.run_with(|started| println!("listening on http://{}", started.local_addr))?;
    Ok(())
}

fn start(role: &str) -> Result<ServerProcess> {
    let mut command = Command::new(std::env::current_exe()?);
    command.env(ROLE, role);
    ServerProcess::spawn(command)
}

fn fork_handlers_run_in_each_worker_before_it_serves() -> Result<()> {
    let server = start("working")?;
    for _ in 0..4 {
        let body = server.get("/init")?.body;
        let fields: Vec<&str> = body.split_whitespace().collect();
        ensure!(fields.len() == 4, "unexpected body {body:?}");
        ensure!(fields[1] == fields[3], "fork handler ran in {} but request served in {}", fields[1], fields[3]);
        ensure!(fields[1] != server.pid().to_string(), "fork handler ran in the parent");
    }
    Ok(())
}

fn a_failing_fork_handler_backs_off_instead_of_forking_in_a_loop() -> Result<()> {
    let server = start("failing")?;
    let failures = |server: &ServerProcess| server.stderr().matches("worker failed to boot").count();
    wait_for("boot failures to be logged", DEADLINE, || Ok((failures(&server) >= 2).then_some(())))?;
    let log = server.stderr();
    ensure!(log.contains("database unreachable"), "the cause is not logged:\n{log}");
    let counted_from = Instant::now();
    let at_start = failures(&server);
    std::thread::sleep(Duration::from_secs(2));
    // Backoff doubles from 250 ms: a couple of attempts in two seconds, not hundreds.
    let attempts = failures(&server) - at_start;
    ensure!(attempts <= 6, "{attempts} boot failures in {:?}: a fork storm", counted_from.elapsed());
    // The supervisor itself keeps running and stops cleanly.
    server.signal(Sig::SIGTERM).context("stopping")?;
    let mut server = server;
    ensure!(server.wait_exit(DEADLINE)?.success());
    Ok(())
}
