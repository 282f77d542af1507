//! A binary upgrade without downtime (USR2, `ctl upgrade`): the binary now on disk takes over
//! the listening socket under a closed-loop keep-alive load with no failed request, the pid
//! file names the new server (the old one's is `.oldbin` only while both run), and the old
//! one exits; a new binary that cannot start leaves the old server serving, its pid file back.
//! The server runs from a copy of the built binary, which each test replaces as an
//! installation would (a new file renamed over the old).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context as _, Result, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use prefork_tests::{
    DEADLINE, HttpConnection, HttpResponse, ServerProcess, TempPath, hello_pid, is_alive, parent_of, run_command,
    server_binary, server_command, wait_for,
};

/// The pid a pid file names.
fn read_pid_file(path: &Path) -> Result<Option<u32>> {
    Ok(std::fs::read_to_string(path).ok().and_then(|text| text.trim().parse().ok()))
}

/// Where the old server's pid file is while its successor starts.
fn oldbin(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.oldbin", path.display()))
}

/// Installs `source` at `target` as `install` does: a new file renamed over the old one, so
/// that the running binary is not written to.
fn install(source: &Path, target: &Path) -> Result<()> {
    let fresh = target.with_extension("new");
    std::fs::copy(source, &fresh)?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&fresh, target)?;
    Ok(())
}

/// Stops whatever server the pid file names when the test ends, the new one included (it is
/// no child of the test's).
struct StopByPidFile<'a>(&'a TempPath);

impl Drop for StopByPidFile<'_> {
    fn drop(&mut self) {
        if let Ok(Some(pid)) = read_pid_file(self.0.path()) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            let _ = wait_for("the server to stop", DEADLINE, || Ok((!is_alive(pid)).then_some(())));
        }
    }
}

fn ctl_upgrade(pid_file: &TempPath) -> Result<(bool, String)> {
    let output = run_command(&["ctl", "--pid-file", pid_file.as_str(), "--timeout", "60s", "upgrade"])?;
    let said = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    Ok((output.status.success(), said))
}

/// One test, its scenarios in turn: a test thread that forks while another writes a binary
/// would hold the file open for writing until its exec, and running that binary would fail
/// with `ETXTBSY` (the scenarios install binaries; nothing else in this process forks).
#[test]
fn binary_upgrades() -> Result<()> {
    an_upgrade_under_keep_alive_load_fails_no_request_and_hands_over_to_the_new_binary()
        .context("an upgrade under keep-alive load")?;
    a_new_binary_that_cannot_start_leaves_the_old_server_serving_then_a_good_one_takes_over()
        .context("a broken new binary, then a good one")
}

fn an_upgrade_under_keep_alive_load_fails_no_request_and_hands_over_to_the_new_binary() -> Result<()> {
    let binary = TempPath::new("upgradable-server");
    install(&server_binary()?, binary.path())?;
    let pid_file = TempPath::new("upgrade.pid");
    let args = ["--pid-file", pid_file.as_str(), "--keepalive", "--start-servers", "4", "--min-spare-servers", "2"];
    let server = ServerProcess::spawn(server_command(binary.path(), &args))?;
    let _stop = StopByPidFile(&pid_file);
    let old = server.pid();
    wait_for("the pid file", DEADLINE, || Ok(read_pid_file(pid_file.path()).ok().flatten().filter(|p| *p == old)))?;

    // Closed-loop keep-alive clients: a connection is reopened only when the server says
    // `Connection: close`; any error is a failed request.
    let (stop, answered, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, answered, failed, addr) =
                (Arc::clone(&stop), Arc::clone(&answered), Arc::clone(&failed), server.addr());
            std::thread::spawn(move || -> Vec<String> {
                let mut errors = Vec::new();
                let mut connection: Option<HttpConnection> = None;
                while !stop.load(Ordering::Relaxed) {
                    let result = (|| -> Result<HttpResponse> {
                        if connection.is_none() {
                            connection = Some(HttpConnection::open(addr)?);
                        }
                        connection.as_mut().context("no connection")?.get("/")
                    })();
                    match result {
                        Ok(response) if response.status == 200 => {
                            answered.fetch_add(1, Ordering::Relaxed);
                            if response.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                                connection = None;
                            }
                        }
                        Ok(response) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("status {}", response.status));
                        }
                        Err(error) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("{error:#}"));
                            connection = None;
                        }
                    }
                }
                errors
            })
        })
        .collect();
    wait_for("load", DEADLINE, || Ok((answered.load(Ordering::Relaxed) > 200).then_some(())))?;
    // A keep-alive connection left idle across the upgrade: an old worker passes it on, and
    // the new server's worker answers its next request.
    let mut kept = HttpConnection::open(server.addr())?;
    let first = kept.get("/")?;
    ensure!(parent_of(hello_pid(&first.body)?) == Some(old), "{}", first.body);

    // The new binary: the same build here, but it is the file now on disk that starts.
    install(&server_binary()?, binary.path())?;
    let (upgraded, said) = ctl_upgrade(&pid_file)?;
    ensure!(upgraded, "ctl upgrade: {said}\n{}", server.stderr());
    let new = read_pid_file(pid_file.path())?.context("no pid")?;
    ensure!(new != old && !is_alive(old), "the pid file names {new}, the old server {old} is alive: {}", is_alive(old));
    ensure!(!oldbin(pid_file.path()).exists(), "the .oldbin pid file is left over");
    // The load goes on, served by the new server's workers.
    let before = answered.load(Ordering::Relaxed);
    wait_for("load on the new server", DEADLINE, || {
        Ok((answered.load(Ordering::Relaxed) > before + 200).then_some(()))
    })?;
    let fresh = prefork_tests::http_get(server.addr(), "/")?;
    ensure!(parent_of(hello_pid(&fresh.body)?) == Some(new), "{} is not the new server's worker", fresh.body);
    let moved = kept.get("/").context("the idle keep-alive connection did not survive the upgrade")?;
    ensure!(parent_of(hello_pid(&moved.body)?) == Some(new), "the kept connection: {}", moved.body);
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap_or_default()).collect();
    ensure!(
        failed.load(Ordering::Relaxed) == 0,
        "{} of {} requests failed: {errors:?}\n{}",
        failed.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed),
        server.stderr()
    );
    let log = server.stderr();
    ensure!(log.contains("upgrade: the new server is ready; handing over"), "{log}");
    Ok(())
}

fn a_new_binary_that_cannot_start_leaves_the_old_server_serving_then_a_good_one_takes_over() -> Result<()> {
    let binary = TempPath::new("upgradable-broken");
    install(&server_binary()?, binary.path())?;
    let pid_file = TempPath::new("upgrade-broken.pid");
    let server = ServerProcess::spawn(server_command(binary.path(), &["--pid-file", pid_file.as_str()]))?;
    let _stop = StopByPidFile(&pid_file);
    let old = server.pid();
    wait_for("the pid file", DEADLINE, || Ok(read_pid_file(pid_file.path()).ok().flatten().filter(|p| *p == old)))?;

    let broken = TempPath::new("broken-binary");
    std::fs::write(broken.path(), "#!/bin/sh\necho 'cannot start' >&2\nexit 3\n")?;
    install(broken.path(), binary.path())?;
    let (upgraded, said) = ctl_upgrade(&pid_file)?;
    ensure!(!upgraded && said.contains("the upgrade failed"), "ctl upgrade: {said}");
    server.wait_logged("upgrade failed: the new binary ended before it was ready")?;
    ensure!(read_pid_file(pid_file.path())? == Some(old), "the pid file does not name the old server again");
    ensure!(!oldbin(pid_file.path()).exists(), "the .oldbin pid file is left over");
    ensure!(server.get("/")?.status == 200, "the old server does not serve");

    install(&server_binary()?, binary.path())?;
    let (upgraded, said) = ctl_upgrade(&pid_file)?;
    ensure!(upgraded, "ctl upgrade: {said}\n{}", server.stderr());
    ensure!(read_pid_file(pid_file.path())? != Some(old));
    ensure!(server.get("/")?.status == 200);
    Ok(())
}
