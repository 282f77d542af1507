//! FORKHANDLERS through the library: they run in each worker after fork and before it
//! accepts; a failing one makes workers boot-fail with backoff instead of a fork storm, halts
//! forking after too many failures in a row (and resumes once a worker boots again), and makes
//! a reload fail while the old generation keeps serving.
//!
//! `harness = false`: `main` either runs the scenarios, or (with `FORK_HANDLER_TEST_SERVER`
//! set) is one of the servers they start, a fresh single-threaded process that may fork.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use bytes::Bytes;
use prefork_tests::{DEADLINE, ServerProcess, Sig, TempPath, wait_for};
use simplehttp_prefork::scoreboard::{AttachedScoreboard, Snapshot};
use simplehttp_prefork::{Handler, Response, Server};

const ROLE: &str = "FORK_HANDLER_TEST_SERVER";
/// While this file exists, the fork handler fails ("database unreachable").
const MARKER: &str = "FORK_HANDLER_TEST_MARKER";

thread_local! {
    /// Set by the fork handler: the pid of the process it ran in.
    static INITIALISED_IN: Cell<Option<u32>> = const { Cell::new(None) };
}

fn main() -> Result<()> {
    prefork_tests::serve_or_run(
        ROLE,
        serve,
        &[
            ("fork_handlers_run_in_each_worker_before_it_serves", fork_handlers_run_in_each_worker_before_it_serves),
            ("a_failing_fork_handler_backs_off_instead_of_forking_in_a_loop", a_failing_fork_handler_backs_off),
            ("repeated_boot_failures_halt_forking_until_a_worker_boots_again", repeated_boot_failures_halt_forking),
            (
                "a_reload_whose_workers_cannot_boot_fails_and_the_old_generation_serves_on",
                a_failed_reload_keeps_the_old_generation,
            ),
            ("the_liveness_probe_fails_while_forking_is_halted_and_readiness_holds", liveness_follows_forking),
            ("readiness_waits_for_the_first_generation_to_be_ready", readiness_waits_for_the_first_generation),
        ],
    )
}

/// The server side: a fork handler that fails while the marker exists, and `/init`
/// reporting where it ran.
fn serve(role: &str) -> Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).init();
    let marker = std::env::var_os(MARKER).map(PathBuf::from);
    let mut builder = Server::builder().start_servers(2).min_spare_servers(1).max_spare_servers(3).max_clients(8);
    if role == "halting" {
        builder = builder
            .boot_backoff_initial(Duration::from_millis(50))
            .boot_backoff_max(Duration::from_secs(1))
            .max_boot_failures(3);
    }
    if role == "failing" {
        // One worker at a time: each one is forked after the previous one failed.
        builder = builder.start_servers(1);
    }
    let held = role == "held";
    if held {
        builder = builder.start_servers(3).min_spare_servers(3).max_spare_servers(4);
    }
    let server = builder
        .health_path(Some("/healthz".into()))
        .ready_path(Some("/readyz".into()))
        .fork_handler(move |_worker| {
            if held {
                // The first worker boots; the others wait (a slow fork handler) until the test
                // releases its exclusive lock on the marker (or ends: the kernel drops it then).
                let is_first = marker.as_deref().is_some_and(|m| std::fs::File::create_new(first_of(m)).is_ok());
                if let (false, Some(Ok(held))) = (is_first, marker.as_deref().map(std::fs::File::open)) {
                    // SAFETY: flock on a file this process holds open.
                    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_SH) };
                }
            } else if marker.as_deref().is_some_and(Path::exists) {
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
    bound.run_with(|started| println!("listening on {}", started.url()))?;
    Ok(())
}

fn start(role: &str, marker: &TempPath) -> Result<ServerProcess> {
    let mut command = Command::new(std::env::current_exe()?);
    command.env(ROLE, role).env(MARKER, marker.path());
    ServerProcess::spawn(command)
}

fn snapshot(server: &ServerProcess) -> Result<Snapshot> {
    Ok(AttachedScoreboard::open(&server.scoreboard_name())?.snapshot())
}

fn serves_init(server: &ServerProcess) -> Result<()> {
    let body = server.get("/init")?.body;
    let fields: Vec<&str> = body.split_whitespace().collect();
    ensure!(fields.len() == 4, "unexpected body {body:?}");
    ensure!(fields[1] == fields[3], "fork handler ran in {} but request served in {}", fields[1], fields[3]);
    ensure!(fields[1] != server.pid().to_string(), "fork handler ran in the parent");
    Ok(())
}

fn fork_handlers_run_in_each_worker_before_it_serves() -> Result<()> {
    let marker = TempPath::new("never");
    let server = start("working", &marker)?;
    for _ in 0..4 {
        serves_init(&server)?;
    }
    Ok(())
}

fn a_failing_fork_handler_backs_off() -> Result<()> {
    let marker = TempPath::new("failing");
    std::fs::write(marker.path(), "")?;
    let server = start("failing", &marker)?;
    // The supervisor's account of each failure: when, how many in a row, and how long it
    // waits before it forks again. Four: the first worker, then three retries.
    let failures = wait_for("four boot failures to be logged", DEADLINE, || {
        let failures: Vec<BootFailure> = server.stderr().lines().filter_map(BootFailure::parse).collect();
        Ok((failures.len() >= 4).then_some(failures))
    })?;
    let log = server.stderr();
    ensure!(log.contains("database unreachable"), "the cause is not logged:\n{log}");
    for (n, failure) in failures.iter().enumerate() {
        ensure!(failure.in_a_row == n as u64 + 1, "failures not counted in a row:\n{log}");
    }
    // Each retry waits longer (the backoff doubles from 250 ms, plus up to 25% jitter)...
    for pair in failures[..4].windows(2) {
        ensure!(pair[1].retry_ms > pair[0].retry_ms, "the backoff does not grow:\n{log}");
    }
    // ...and the next worker was forked only once it had passed: no fork storm. A slow
    // machine only spreads the failures further apart.
    for pair in failures[..4].windows(2) {
        let gap_ms = pair[1].at_micros.saturating_sub(pair[0].at_micros) as f64 / 1000.0;
        ensure!(
            gap_ms + 5.0 >= pair[0].retry_ms as f64,
            "forked {gap_ms} ms after a failure, not after the backoff:\n{log}"
        );
    }
    let board = snapshot(&server)?;
    ensure!(board.header.boot_failures >= 4, "{:?}", board.header);
    ensure!(board.header.last_boot_error.contains("database unreachable"), "{:?}", board.header.last_boot_error);
    // The supervisor itself keeps running and stops cleanly.
    server.signal(Sig::SIGTERM)?;
    let mut server = server;
    ensure!(server.wait_exit(DEADLINE)?.success());
    Ok(())
}

/// One `worker failed to boot` line of the supervisor's log.
#[derive(Debug)]
struct BootFailure {
    /// The line's timestamp, in microseconds since the Unix epoch.
    at_micros: u64,
    in_a_row: u64,
    retry_ms: u64,
}

impl BootFailure {
    /// `2026-01-31T12:00:00.123456Z ERROR ...: worker failed to boot ... failures_in_a_row=2
    /// retry_in_ms=533`.
    fn parse(line: &str) -> Option<BootFailure> {
        if !line.contains("worker failed to boot") {
            return None;
        }
        let field = |name: &str| -> Option<u64> {
            let rest = line.split_once(&format!(" {name}="))?.1;
            rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        };
        let at_micros = rfc3339_micros(line.split_whitespace().next()?)?;
        Some(BootFailure { at_micros, in_a_row: field("failures_in_a_row")?, retry_ms: field("retry_in_ms")? })
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (tracing's UTC timestamps) in microseconds since the epoch.
fn rfc3339_micros(stamp: &str) -> Option<u64> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (hms.next()??, hms.next()??, hms.next()??);
    let micros: i64 = format!("{fraction:0<6}").get(..6)?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    u64::try_from(((days * 24 + h) * 60 + min) * 60 + s).ok().map(|secs| secs * 1_000_000 + micros as u64)
}

fn repeated_boot_failures_halt_forking() -> Result<()> {
    let marker = TempPath::new("halting");
    std::fs::write(marker.path(), "")?;
    let server = start("halting", &marker)?;
    wait_for("forking to halt", DEADLINE, || Ok(server.stderr().contains("forking halted").then_some(())))?;
    let board = snapshot(&server)?;
    ensure!(board.header.spawning_halted && board.header.boot_failures >= 3, "{:?}", board.header);
    ensure!(board.processes() == 0, "nothing boots while the database is down");
    // The database comes back: the next probe boots, forking resumes, requests are served.
    std::fs::remove_file(marker.path())?;
    wait_for("forking to resume", DEADLINE, || Ok(server.stderr().contains("forking resumes").then_some(())))?;
    wait_for("a worker to serve", DEADLINE, || Ok(serves_init(&server).is_ok().then_some(())))?;
    let board = snapshot(&server)?;
    ensure!(!board.header.spawning_halted && board.header.boot_failures == 0, "{:?}", board.header);
    Ok(())
}

/// Workers serve while new ones cannot boot: once forking halts, the liveness probe answered
/// by a running worker says so (`503`), while the readiness probe still says it serves; once
/// a worker boots again, liveness is back.
fn liveness_follows_forking() -> Result<()> {
    let marker = TempPath::new("liveness");
    let server = start("halting", &marker)?;
    wait_for("ready", DEADLINE, || Ok((server.get("/readyz")?.status == 200).then_some(())))?;
    ensure!(server.get("/healthz")?.status == 200);
    // The database goes down, and the pool wants more workers than it has.
    std::fs::write(marker.path(), "")?;
    // One at a time: signals of one kind that arrive together count once.
    for min_spare in 2..=3 {
        server.signal(Sig::SIGTTIN)?;
        server.wait_logged(&format!("min_spare_servers={min_spare}"))?;
    }
    let health = wait_for("forking to halt, and liveness to say so", DEADLINE, || {
        let health = server.get("/healthz")?;
        Ok((health.status == 503).then_some(health))
    })?;
    ensure!(health.body == "spawning halted\n", "{:?}", health.body);
    ensure!(server.stderr().contains("forking halted"), "{}", server.stderr());
    ensure!(server.get("/readyz")?.status == 200, "the running workers still serve");
    std::fs::remove_file(marker.path())?;
    wait_for("forking to resume", DEADLINE, || Ok(server.stderr().contains("forking resumes").then_some(())))?;
    wait_for("liveness back", DEADLINE, || Ok((server.get("/healthz")?.status == 200).then_some(())))?;
    Ok(())
}

/// The file the first held worker creates (see `serve`).
fn first_of(marker: &Path) -> PathBuf {
    marker.with_extension("first")
}

/// One worker of three ready (the others still in their fork handlers): the readiness probe
/// says `starting` until as many as `min_spare_servers` are; then `ready`.
fn readiness_waits_for_the_first_generation() -> Result<()> {
    struct Removed(PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let marker = TempPath::new("held");
    let _first = Removed(first_of(marker.path()));
    std::fs::write(marker.path(), "")?;
    // Held until the probe has been seen saying `starting`: the workers but the first wait on it.
    let lock = std::fs::File::open(marker.path())?;
    // SAFETY: flock on a file this process holds open.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    ensure!(locked == 0, "cannot lock the marker");
    let server = start("held", &marker)?;
    let probe = server.get("/readyz")?;
    ensure!(probe.status == 503 && probe.body == "starting\n", "{} {:?}", probe.status, probe.body);
    ensure!(server.get("/healthz")?.status == 200, "alive while starting");
    drop(lock);
    wait_for("ready", DEADLINE, || Ok((server.get("/readyz")?.status == 200).then_some(())))?;
    Ok(())
}

fn a_failed_reload_keeps_the_old_generation() -> Result<()> {
    let marker = TempPath::new("reload");
    let server = start("reload", &marker)?;
    serves_init(&server)?;
    // The old generation, both ready: one still starting would run its fork handler after the
    // marker below is written, and fail to boot as a worker of the old generation.
    let old = wait_for("both first workers to be ready", DEADLINE, || {
        let (board, children) = (snapshot(&server)?, server.children());
        Ok((board.processes() == 2 && board.idle() == 2 && children.len() == 2).then_some(children))
    })?;
    // A reload while the database is down: the new workers cannot boot.
    std::fs::write(marker.path(), "")?;
    server.signal(Sig::SIGHUP)?;
    wait_for("the reload to fail", DEADLINE, || Ok(server.stderr().contains("reload failed").then_some(())))?;
    let board = snapshot(&server)?;
    ensure!(board.header.generation == 1 && board.header.reload_failures == 1, "{:?}", board.header);
    let now = server.children();
    ensure!(
        old.iter().all(|pid| now.contains(pid)),
        "the old workers {old:?} were stopped: {now:?}\n{}",
        server.stderr()
    );
    serves_init(&server)?;
    // Once it is back, a reload goes through.
    std::fs::remove_file(marker.path())?;
    server.signal(Sig::SIGHUP)?;
    wait_for("only new workers", DEADLINE, || {
        let children = server.children();
        Ok((!children.is_empty() && children.iter().all(|pid| !old.contains(pid))).then_some(()))
    })?;
    serves_init(&server)?;
    Ok(())
}
