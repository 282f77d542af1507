//! How the hostile cases are provoked: servers run as `nobody` or in a private mount
//! namespace, resource limits set with `prlimit`, and the checks that each of these works here.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Result, ensure};
use prefork_tests::{
    DEADLINE, HttpConnection, ServerProcess, TempPath, count, is_root, require_machine, require_tool, server_binary,
    soft_limit, status_json, tasks_of_uid, wait_for,
};

/// `nobody`/`nogroup` on Debian: an unprivileged uid with no other process here.
pub(crate) const NOBODY: &str = "65534";

/// The arguments every server here gets before its own: as `server_command`.
pub(crate) fn base_args(binary: &Path) -> Vec<String> {
    let mut args = vec![binary.display().to_string()];
    args.extend(["--address", "127.0.0.1", "--port", "0", "--demo"].map(String::from));
    args
}

/// `program prefix... BINARY --address 127.0.0.1 --port 0 --demo args...`
pub(crate) fn wrapped(program: &str, prefix: &[&str], args: &[&str]) -> Result<Command> {
    let mut command = Command::new(program);
    command.args(prefix).args(base_args(&server_binary()?)).args(args);
    Ok(command)
}

/// `sh -c 'SETUP && exec "$0" "$@"' BINARY ...` in a private mount namespace: SETUP mounts
/// what the case needs, which only this server sees.
pub(crate) fn in_mount_namespace(setup: &str, args: &[&str]) -> Result<Command> {
    let script = format!("{setup} && exec \"$0\" \"$@\"");
    wrapped("unshare", &["-m", "--propagation", "private", "sh", "-c", &script], args)
}

pub(crate) fn can_run_as_nobody() -> Result<bool> {
    if !require_machine("root (to run the server as nobody)", is_root(), "run the tests as root, as CI does")? {
        return Ok(false);
    }
    require_tool(
        "setpriv and prlimit",
        &["sh", "-c", "command -v setpriv && command -v prlimit"],
        "apt-get install util-linux",
    )
}

pub(crate) fn can_unshare_mounts() -> Result<bool> {
    let usable = is_root()
        && Command::new("unshare")
            .args(["-m", "--propagation", "private", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    require_machine("root and a private mount namespace (unshare -m)", usable, "run the tests as root, as CI does")
}

/// `prlimit --pid PID --RESOURCE=SOFT:` run as `nobody` (the server's user): lowers or raises
/// the soft limit within the hard one, which needs no privilege.
pub(crate) fn set_soft_limit_as_nobody(pid: u32, resource: &str, soft: &str) -> Result<()> {
    let status = Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "prlimit", "--pid", &pid.to_string()])
        .arg(format!("--{resource}={soft}:"))
        .status()?;
    ensure!(status.success(), "prlimit --{resource}={soft}: on {pid} failed: {status}");
    Ok(())
}

/// `prlimit --pid PID --nofile=SOFT:` as this user (the server is ours).
pub(crate) fn set_fd_limit(pid: u32, soft: &str) -> Result<()> {
    let status = Command::new("prlimit").args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")]).status()?;
    ensure!(status.success(), "prlimit --nofile={soft}: on {pid} failed: {status}");
    Ok(())
}

/// The threads of `pid` (0 if it is gone).
pub(crate) fn threads_of(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| status.lines().find_map(|l| l.strip_prefix("Threads:"))?.trim().parse().ok())
        .unwrap_or(0)
}

/// Held by a test whose server runs as `nobody`: `RLIMIT_NPROC` counts every task of the uid,
/// so two such servers at once (libtest runs tests in parallel) would spoil each other's count.
pub(crate) static NOBODY_SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The right to run a server as `nobody` until dropped.
pub(crate) fn nobody_turn() -> std::sync::MutexGuard<'static, ()> {
    NOBODY_SERVER.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A pool of `start` workers run as `nobody`, with fast boot backoff and halting after 4
/// failures in a row, and the `RLIMIT_NPROC` soft limit it had at start.
pub(crate) fn nobody_pool(pid_file: &TempPath, start: &str) -> Result<(ServerProcess, String)> {
    let args = [
        "--start-servers",
        start,
        "--min-spare-servers",
        "2",
        "--max-spare-servers",
        "4",
        "--boot-backoff-initial",
        "100ms",
        "--boot-backoff-max",
        "1s",
        "--max-boot-failures",
        "4",
        "--pid-file",
        pid_file.as_str(),
    ];
    let server =
        ServerProcess::spawn(wrapped("setpriv", &["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"], &args)?)?;
    let workers: u64 = start.parse()?;
    wait_for("the workers to be ready", DEADLINE, || {
        let status = status_json(pid_file)?;
        Ok((count(&status, "idle") == workers && count(&status, "starting") == 0).then_some(()))
    })?;
    // The uid's task count is what the tests set the limit from: wait until every task of it
    // is this server's (a server of a test before may still be dying).
    wait_for("nobody's only tasks to be this server's", DEADLINE, || {
        let own: usize = std::iter::once(server.pid()).chain(server.children()).map(threads_of).sum();
        Ok((tasks_of_uid(NOBODY) == own).then_some(()))
    })?;
    let original = soft_limit(server.pid(), "Max processes")?;
    Ok((server, original))
}

/// Two connections each holding a worker with `GET /sleep/60000`, until dropped.
pub(crate) fn occupy_two(server: &ServerProcess, pid_file: &TempPath) -> Result<Vec<HttpConnection>> {
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut connection = server.connect()?;
        connection.send(b"GET /sleep/60000 HTTP/1.1\r\nHost: x\r\n\r\n")?;
        held.push(connection);
    }
    wait_for("two sleeping workers", DEADLINE, || Ok((count(&status_json(pid_file)?, "busy") >= 2).then_some(())))?;
    Ok(held)
}
