//! Workers that run as another user (`user`/`group`, Apache's `User` and `Group`): the parent
//! stays root and binds, each worker switches before its fork handlers run (so no user code
//! runs as root), a root-only file is out of a handler's reach, the scoreboard still shows
//! every worker, a handler can still stop or pause the server (through the scoreboard: an
//! unprivileged worker may not signal its root parent), and a worker reopens the log file
//! after rotation. An unknown user is an error at start. Needs root (CI runs as root);
//! skipped with a note otherwise.
//!
//! `harness = false`: `main` either runs the scenarios, or (with `PRIVILEGES_TEST_SERVER`
//! set) is the server they start, a fresh single-threaded process that may fork.

use std::cell::Cell;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use bytes::Bytes;
use prefork_tests::{DEADLINE, HttpConnection, ServerProcess, Sig, TempPath, wait_for};
use simplehttp_prefork::scoreboard::{AttachedScoreboard, WorkerState};
use simplehttp_prefork::{Handler, Response, Server, Shutdown, pause_server, resume_server, shutdown_server};

const ROLE: &str = "PRIVILEGES_TEST_SERVER";
const SECRET: &str = "PRIVILEGES_TEST_SECRET";
const LOG: &str = "PRIVILEGES_TEST_LOG";
/// The user the workers run as: Debian's `nobody` (65534), there on every machine.
const USER: &str = "nobody";
const NOBODY: u32 = 65534;

thread_local! {
    /// The effective uid the fork handler ran with, in this worker.
    static FORK_HANDLER_UID: Cell<Option<u32>> = const { Cell::new(None) };
}

fn main() -> Result<()> {
    if std::env::var(ROLE).is_err() && !nix::unistd::geteuid().is_root() {
        println!("skipped: running workers as another user needs root (CI runs as root)");
        return Ok(());
    }
    prefork_tests::serve_or_run(
        ROLE,
        serve,
        &[
            ("workers_run_as_the_user_from_their_fork_handlers_on_and_cannot_read_roots_files", identity),
            ("an_unprivileged_handler_still_pauses_resumes_and_stops_the_server", control),
            ("workers_reopen_the_log_file_after_rotation", log_rotation),
            ("an_unknown_user_is_an_error_at_start", unknown_user),
        ],
    )
}

fn text(body: String) -> Response {
    Response::new(Bytes::from(body))
}

/// The server side.
fn serve(role: &str) -> Result<()> {
    let log = std::env::var_os(LOG).map(simplehttp_prefork::log_file::LogFile::open).transpose()?;
    match log {
        Some(file) => tracing_subscriber::fmt().with_writer(file).with_ansi(false).init(),
        None => tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).init(),
    }
    let user = if role == "unknown" { "no-such-user-anywhere" } else { USER };
    let secret = std::env::var(SECRET).unwrap_or_default();
    let server = Server::builder()
        .start_servers(2)
        .min_spare_servers(1)
        .max_spare_servers(3)
        .max_clients(8)
        .keepalive(true)
        .user(user)
        .fork_handler(|_| {
            FORK_HANDLER_UID.with(|uid| uid.set(Some(nix::unistd::geteuid().as_raw())));
            Ok(())
        })
        .handler(
            "^/who$",
            Handler::new(|_, _| {
                let forked_as = FORK_HANDLER_UID.with(Cell::get);
                let ids = nix::unistd::getresuid().map(|r| format!("{} {} {}", r.real, r.effective, r.saved));
                text(format!("{} {forked_as:?}\n", ids.unwrap_or_default()))
            }),
        )
        .handler(
            "^/secret$",
            Handler::new(move |_, _| match std::fs::read_to_string(&secret) {
                Ok(_) => text("read it\n".into()),
                Err(error) => text(format!("{:?}\n", error.kind())),
            }),
        )
        .handler(
            "^/log$",
            Handler::new(|_, _| {
                tracing::info!("a worker's line");
                text("logged\n".into())
            }),
        )
        .handler("^/pause$", Handler::new(|_, _| text(format!("{:?}\n", pause_server().map_err(|e| e.to_string())))))
        .handler("^/resume$", Handler::new(|_, _| text(format!("{:?}\n", resume_server().map_err(|e| e.to_string())))))
        .handler(
            "^/shutdown$",
            Handler::new(|_, _| {
                text(format!("{:?}\n", shutdown_server(Shutdown::Graceful).map_err(|e| e.to_string())))
            }),
        )
        .ready_path(Some("/readyz".into()))
        .build()?;
    server.bind()?.run_with(|started| {
        println!("listening on {}", started.url());
    })?;
    Ok(())
}

fn start(role: &str, env: &[(&str, &str)]) -> Result<ServerProcess> {
    let mut command = Command::new(std::env::current_exe()?);
    command.env(ROLE, role).envs(env.iter().copied());
    ServerProcess::spawn(command)
}

/// A `/proc/PID/status` line's numbers (`Uid:`, `Gid:`: real, effective, saved, filesystem;
/// `Groups:` the supplementary groups).
fn ids_of(pid: u32, key: &str) -> Result<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(key)).with_context(|| format!("no {key} line"))?;
    Ok(line.split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect())
}

fn uid_of(pid: u32) -> Result<Vec<u32>> {
    ids_of(pid, "Uid:")
}

/// The workers past their fork handlers (so past the switch), as the scoreboard says.
fn serving_workers(server: &ServerProcess, at_least: usize) -> Result<Vec<u32>> {
    let scoreboard = AttachedScoreboard::open(&server.scoreboard_name())?;
    wait_for("workers past their fork handlers", DEADLINE, || {
        let snapshot = scoreboard.snapshot();
        let pids: Vec<u32> = snapshot.live().filter(|s| s.state != WorkerState::Starting).map(|s| s.pid).collect();
        Ok((pids.len() >= at_least).then_some(pids))
    })
}

fn identity() -> Result<()> {
    let secret = TempPath::new("root-only-secret");
    std::fs::write(secret.path(), "root only\n")?;
    std::fs::set_permissions(secret.path(), std::fs::Permissions::from_mode(0o600))?;
    let server = start("serve", &[(SECRET, secret.as_str())])?;
    ensure!(uid_of(server.pid())? == [0, 0, 0, 0], "the parent must stay root");
    let workers = serving_workers(&server, 2)?;
    for &pid in &workers {
        ensure!(uid_of(pid)? == [NOBODY; 4], "worker {pid} runs as {:?}", uid_of(pid)?);
        // nobody's group (nogroup, 65534), and none of root's supplementary groups.
        ensure!(ids_of(pid, "Gid:")? == [NOBODY; 4], "worker {pid}: {:?}", ids_of(pid, "Gid:")?);
        ensure!(ids_of(pid, "Groups:")?.iter().all(|&g| g == NOBODY), "worker {pid}: {:?}", ids_of(pid, "Groups:"));
    }
    for _ in 0..4 {
        let who = server.get("/who")?.body;
        ensure!(
            who == format!("{NOBODY} {NOBODY} {NOBODY} Some({NOBODY})\n"),
            "real, effective, saved, fork handler: {who:?}"
        );
        let secret = server.get("/secret")?.body;
        ensure!(secret == "PermissionDenied\n", "a worker read a root-only file: {secret:?}");
    }
    // Switching user made the kernel forget the parent-death signal: set again, the workers
    // still die with a SIGKILLed supervisor.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid() as i32), Sig::SIGKILL)?;
    wait_for("the workers gone with their supervisor", DEADLINE, || {
        Ok(workers.iter().all(|&pid| !prefork_tests::is_alive(pid)).then_some(()))
    })?;
    Ok(())
}

fn control() -> Result<()> {
    let mut server = start("serve", &[])?;
    let scoreboard = AttachedScoreboard::open(&server.scoreboard_name())?;
    wait_for("ready", DEADLINE, || Ok((server.get("/readyz")?.status == 200).then_some(())))?;
    // Kept open: while paused, only connections already taken are served.
    let mut kept = HttpConnection::open(server.addr())?;
    ensure!(kept.get("/pause")?.body == "Ok(())\n");
    wait_for("paused", DEADLINE, || Ok(scoreboard.snapshot().header.paused.then_some(())))?;
    ensure!(kept.get("/resume")?.body == "Ok(())\n");
    wait_for("resumed", DEADLINE, || Ok((!scoreboard.snapshot().header.paused).then_some(())))?;
    // Asked through the scoreboard (a signal from the worker would have been refused).
    server.wait_logged("a worker asked the supervisor request=Pause")?;
    server.wait_logged("a worker asked the supervisor request=Resume")?;
    let answer = server.get("/shutdown")?;
    ensure!(answer.body == "Ok(())\n", "the request in hand: {:?}", answer.body);
    ensure!(server.wait_exit(DEADLINE)?.success(), "{}", server.stderr());
    ensure!(server.stderr().contains("graceful stop requested"), "{}", server.stderr());
    Ok(())
}

fn log_rotation() -> Result<()> {
    // A directory only root may write to, as /var/log is: a worker could not create the new
    // file there itself.
    let dir = TempPath::new("privileges-logs");
    std::fs::create_dir_all(dir.path())?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let log = dir.path().join("server.log");
    let rotated = dir.path().join("server.log.1");
    let server = start("serve", &[(LOG, log.to_str().context("path")?)])?;
    ensure!(std::fs::metadata(&log)?.uid() == NOBODY, "the log file is not the workers'");
    ensure!(server.get("/log")?.status == 200);
    std::fs::rename(&log, &rotated)?;
    server.signal(Sig::SIGUSR1)?;
    wait_for("a worker's line in the new file", DEADLINE, || {
        ensure!(server.get("/log")?.status == 200);
        Ok(std::fs::read_to_string(&log).unwrap_or_default().contains("a worker's line").then_some(()))
    })?;
    // (A worker that had a reopen pending from its start, and logs between the rename and the
    // supervisor's USR1, cannot create the file in this directory: it says so, writes on to
    // the rotated file, and moves with the USR1 that follows.)
    ensure!(std::fs::metadata(&log)?.uid() == NOBODY, "the new log file is not the workers'");
    std::fs::remove_dir_all(dir.path())?;
    Ok(())
}

fn unknown_user() -> Result<()> {
    let mut command = Command::new(std::env::current_exe()?);
    command.env(ROLE, "unknown");
    let output = prefork_tests::run_to_end(command, DEADLINE)?;
    let said = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    ensure!(!output.status.success(), "started with an unknown user: {said}");
    ensure!(said.contains("no-such-user-anywhere") && said.contains("no such user"), "{said}");
    ensure!(!said.contains("listening on"), "{said}");
    Ok(())
}
