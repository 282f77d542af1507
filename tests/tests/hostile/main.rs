//! Black-box tests of a hostile machine: fork failing (`RLIMIT_NPROC`), descriptors running
//! out (`RLIMIT_NOFILE`) in the workers and in the parent, `/dev/shm` read-only or full at
//! start, the log file's disk full, a worker OOM-killed, the parent stopped for 10 s, the wall
//! clock stepped backwards.
//!
//! Each case must end in a clear log line and a server that keeps serving, or in a clear error
//! at start: never a crash, a busy loop (the parent's CPU time is watched) or a wedged pool.
//!
//! How each is provoked, without disturbing the rest of the machine:
//! - limits with util-linux's `prlimit`, on the server's own processes only. `RLIMIT_NPROC`
//!   counts every task (threads too) of a real uid, and is ignored for root (and for a process
//!   with `CAP_SYS_RESOURCE` or `CAP_SYS_ADMIN`): that server runs as `nobody` (`setpriv
//!   --reuid`), the only processes of that uid, so the count is known exactly. Raising its
//!   limit again is done as `nobody` too (up to the hard limit, which is left alone): root may
//!   lack `CAP_SYS_RESOURCE` in a sandbox, which `prlimit` on another user's process needs;
//! - `/dev/shm` and the log's disk: a tmpfs mounted in a private mount namespace (`unshare
//!   -m`, root), seen by the server only; the binary has no option for the scoreboard's prefix
//!   or directory (`Server::builder().scoreboard_prefix` exists only in the library);
//! - the OOM killer: a memory cgroup (v1) of the server's own;
//! - the clock: `libfaketime` steps the wall clock of the server's processes only, leaving
//!   `CLOCK_MONOTONIC` alone. A time namespace (`unshare --time`) cannot: it offsets only the
//!   monotonic and boot clocks, so `date -s` in one steps the whole machine's clock (and every
//!   other test's TLS certificates and build timestamps with it).

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use prefork_tests::{
    CpuWatch, DEADLINE, FaketimeShm, MemoryCgroup, ServerProcess, Sig, TempPath, count, fd_limit_leaving, hello_pid,
    http_get, is_alive, is_root, lines_with, only_generation, process_state, require_machine, require_tool, run_to_end,
    soft_limit, status_json, status_pids, tasks_of_uid, wait_for,
};

mod provoke;

use provoke::*;

#[test]
fn fork_failing_with_eagain_is_logged_and_backed_off_the_workers_serve_on_and_forking_resumes() -> Result<()> {
    if !can_run_as_nobody()? {
        return Ok(());
    }
    let _turn = nobody_turn();
    let pid_file = TempPath::new("nproc.pid");
    let (server, original) = nobody_pool(&pid_file, "3")?;
    // Exactly the tasks nobody has now: the next fork is refused with EAGAIN.
    set_soft_limit_as_nobody(server.pid(), "nproc", &tasks_of_uid(NOBODY).to_string())?;
    let cpu = CpuWatch::start(server.pid())?;
    // One idle worker left for two spares: the pool wants one more.
    let _held = occupy_two(&server, &pid_file)?;
    server.wait_logged("fork failed")?;
    server.wait_logged("forking halted")?;
    cpu.ensure_quiet("forking refused")?;
    let log = server.stderr();
    ensure!(log.lines().any(|l| l.contains("fork failed") && l.contains("EAGAIN")), "{log}");
    // Backed off: a handful of attempts (4 to halt, then a probe per second), not a flood.
    ensure!(lines_with(&log, "fork failed") <= 8, "{} fork attempts:\n{log}", lines_with(&log, "fork failed"));
    let status = status_json(&pid_file)?;
    ensure!(status["spawning_halted"] == true, "{status}");
    ensure!(status["last_boot_error"].as_str().is_some_and(|e| e.contains("fork failed")), "{status}");
    // The workers that run serve on.
    for _ in 0..5 {
        let response = server.get("/")?;
        ensure!(response.status == 200, "{response:?}");
    }
    // The limit allows forking again: the next probe forks, and the pool is made whole.
    set_soft_limit_as_nobody(server.pid(), "nproc", &original)?;
    server.wait_logged("forking resumes")?;
    wait_for("two idle workers again", DEADLINE, || {
        let status = status_json(&pid_file)?;
        Ok((count(&status, "idle") >= 2 && status_pids(&status) == server.children()).then_some(()))
    })?;
    let log = server.stderr();
    ensure!(!log.contains("worker died") && !log.contains("panicked"), "{log}");
    Ok(())
}

/// A worker that cannot start its parking thread (`RLIMIT_NPROC` counts threads: the fork
/// succeeds, the thread is refused) is not ready yet, so its exit is a boot failure: backed
/// off and halted, not re-forked in a loop.
#[test]
fn a_new_worker_that_cannot_start_its_thread_is_backed_off_like_a_boot_failure() -> Result<()> {
    if !can_run_as_nobody()? {
        return Ok(());
    }
    let _turn = nobody_turn();
    let pid_file = TempPath::new("nproc-thread.pid");
    let (server, original) = nobody_pool(&pid_file, "3")?;
    // One task more than nobody has now: a fork succeeds, the new worker's thread does not.
    set_soft_limit_as_nobody(server.pid(), "nproc", &(tasks_of_uid(NOBODY) + 1).to_string())?;
    let forked_before = count(&status_json(&pid_file)?, "workers_forked");
    let cpu = CpuWatch::start(server.pid())?;
    let _held = occupy_two(&server, &pid_file)?;
    // As for a refused fork: backed off, and halted after 4 failures in a row. A loop is seen
    // by its count of forks long before the deadline.
    let outcome = wait_for("forking to halt, or to run away", DEADLINE, || {
        let forked = count(&status_json(&pid_file)?, "workers_forked").saturating_sub(forked_before);
        let halted = server.stderr().contains("forking halted");
        Ok((halted || forked > 50).then_some(forked))
    });
    let log = server.stderr();
    let excerpt: String =
        log.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).take(6).collect::<Vec<_>>().join("\n");
    let forked = outcome?;
    ensure!(forked <= 8, "{forked} workers forked while the limit refused their thread (a fork loop):\n{excerpt}");
    cpu.ensure_quiet("new workers failing")?;
    set_soft_limit_as_nobody(server.pid(), "nproc", &original)?;
    Ok(())
}

#[test]
fn too_few_descriptors_to_start_is_a_clear_error_at_start() -> Result<()> {
    if !require_tool("prlimit", &["prlimit", "--version"], "apt-get install util-linux")? {
        return Ok(());
    }
    // Three are stdin, stdout and stderr: the listening socket, the signalfd or the scoreboard
    // cannot be opened.
    for limit in [4, 5, 6] {
        let nofile = format!("--nofile={limit}:{limit}");
        let output = run_to_end(wrapped("prlimit", &[&nofile, "--"], &["--start-servers", "1"])?, DEADLINE)?;
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        ensure!(!output.status.success(), "started with {limit} descriptors: {stdout}{stderr}");
        ensure!(!stdout.contains("listening on"), "{limit} descriptors: {stdout}");
        ensure!(
            stderr.contains("ERROR") && (stderr.contains("Too many open files") || stderr.contains("EMFILE")),
            "{limit} descriptors, no clear error: {stderr}"
        );
    }
    Ok(())
}

#[test]
fn workers_out_of_descriptors_pause_accepting_and_serve_again_once_connections_close() -> Result<()> {
    if !require_tool("prlimit", &["prlimit", "--version"], "apt-get install util-linux")? {
        return Ok(());
    }
    let pid_file = TempPath::new("emfile.pid");
    // Two workers and no more (none forked later with a fresh limit); the header timeout long
    // enough that only the clients' closing frees the descriptors.
    let server = ServerProcess::start_pool(
        2,
        1,
        2,
        &["--max-clients", "2", "--keepalive-timeout", "60s", "--pid-file", pid_file.as_str()],
    )?;
    let workers = wait_for("two ready workers", DEADLINE, || {
        let status = status_json(&pid_file)?;
        Ok((count(&status, "idle") == 2).then(|| status_pids(&status)))
    })?;
    let forked = count(&status_json(&pid_file)?, "workers_forked");
    // Room for three more descriptors in each worker.
    for pid in &workers {
        set_fd_limit(*pid, &fd_limit_leaving(*pid, 3)?)?;
    }
    let watches = workers.iter().map(|pid| CpuWatch::start(*pid)).collect::<Result<Vec<_>>>()?;
    let parent = CpuWatch::start(server.pid())?;
    // Heads that never end: each connection is accepted and parked, holding a descriptor.
    let mut flood = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(server.addr())?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")?;
        flood.push(stream);
    }
    server.wait_logged("accept failed; pausing 100 ms").with_context(|| server.stderr())?;
    ensure!(server.stderr().contains("EMFILE"), "{}", server.stderr());
    // A normal client meanwhile waits in the listen queue.
    let addr = server.addr();
    let normal = thread::spawn(move || http_get(addr, "/"));
    wait_for("the client to wait in the listen queue", DEADLINE, || {
        Ok((count(&status_json(&pid_file)?, "listen_queue") >= 1).then_some(()))
    })?;
    for (watch, pid) in watches.iter().zip(&workers) {
        watch.ensure_quiet(&format!("worker {pid} out of descriptors"))?;
    }
    parent.ensure_quiet("workers out of descriptors")?;
    drop(flood);
    let answered = normal.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    ensure!(answered.status == 200, "{answered:?}");
    for _ in 0..5 {
        ensure!(server.get("/")?.status == 200);
    }
    let status = status_json(&pid_file)?;
    ensure!(status_pids(&status) == workers && count(&status, "workers_forked") == forked, "a worker died: {status}");
    Ok(())
}

#[test]
fn a_parent_out_of_descriptors_supervises_on_and_its_new_workers_back_off() -> Result<()> {
    if !require_tool("prlimit", &["prlimit", "--version"], "apt-get install util-linux")? {
        return Ok(());
    }
    let pid_file = TempPath::new("parent-emfile.pid");
    let server = ServerProcess::start_pool(
        2,
        2,
        3,
        &[
            "--boot-backoff-initial",
            "100ms",
            "--boot-backoff-max",
            "1s",
            "--max-boot-failures",
            "4",
            "--pid-file",
            pid_file.as_str(),
        ],
    )?;
    let workers = wait_for("two ready workers", DEADLINE, || {
        let status = status_json(&pid_file)?;
        Ok((count(&status, "idle") == 2).then(|| status_pids(&status)))
    })?;
    let original = soft_limit(server.pid(), "Max open files")?;
    // Not one descriptor more for the parent, nor for the workers it forks from now on.
    set_fd_limit(server.pid(), &fd_limit_leaving(server.pid(), 0)?)?;
    let cpu = CpuWatch::start(server.pid())?;
    // The parent reaps a dead worker, and forks its replacement, which cannot boot.
    nix_kill(workers[0], Sig::SIGKILL)?;
    server.wait_logged("killed by SIGKILL")?;
    server.wait_logged("forking halted").with_context(|| server.stderr())?;
    cpu.ensure_quiet("new workers out of descriptors")?;
    let log = server.stderr();
    ensure!(log.lines().any(|l| l.contains("worker failed to boot")), "{log}");
    ensure!(log.lines().any(|l| l.contains("Too many open files") || l.contains("EMFILE")), "{log}");
    // The other worker serves on.
    for _ in 0..3 {
        let response = server.get("/")?;
        ensure!(response.status == 200 && hello_pid(&response.body)? == workers[1], "{response:?}");
    }
    set_fd_limit(server.pid(), &original)?;
    server.wait_logged("forking resumes")?;
    wait_for("the pool whole again", DEADLINE, || {
        let status = status_json(&pid_file)?;
        Ok((count(&status, "idle") >= 1 && status_pids(&status) == server.children() && server.children().len() >= 2)
            .then_some(()))
    })?;
    Ok(())
}

/// A log reopen (SIGUSR1) that fails (here: the parent is out of descriptors) says so, in the
/// file it goes on writing to and on stderr.
#[test]
fn a_log_reopen_that_fails_says_so() -> Result<()> {
    if !require_tool("prlimit", &["prlimit", "--version"], "apt-get install util-linux")? {
        return Ok(());
    }
    let log = TempPath::new("reopen.log");
    let rotated = TempPath::new("reopen.log.1");
    let server = ServerProcess::start_pool(1, 1, 2, &["--log-file", log.as_str()])?;
    wait_for("the log file to fill", DEADLINE, || {
        Ok(std::fs::read_to_string(log.path())?.contains("supervisor started").then_some(()))
    })?;
    set_fd_limit(server.pid(), &fd_limit_leaving(server.pid(), 0)?)?;
    std::fs::rename(log.path(), rotated.path())?;
    server.signal(Sig::SIGUSR1)?;
    wait_for("the USR1 to be handled", DEADLINE, || {
        Ok(std::fs::read_to_string(rotated.path())?.contains("USR1").then_some(()))
    })?;
    let written = std::fs::read_to_string(rotated.path())? + &std::fs::read_to_string(log.path()).unwrap_or_default();
    let said = written.lines().chain(server.stderr().lines()).any(|l| {
        l.contains("reopen") && (l.contains("Too many open files") || l.contains("EMFILE") || l.contains("cannot"))
    });
    ensure!(said, "the failed reopen went unmentioned:\n{written}{}", server.stderr());
    Ok(())
}

/// Every `RLIMIT_NOFILE` from too few to start up to comfortable ends in a clear error at
/// start, a worker that backs off and halts, or a pool that serves: never a fork loop (a worker
/// running out while it sets up is a boot failure) nor a wedged pool (a worker out of
/// descriptors while holding none gives up after a second, and is backed off).
#[test]
fn every_descriptor_limit_ends_in_an_error_a_backoff_or_a_serving_pool() -> Result<()> {
    if !require_tool("prlimit", &["prlimit", "--version"], "apt-get install util-linux")? {
        return Ok(());
    }
    let mut bad = Vec::new();
    for limit in 6..=24 {
        let nofile = format!("--nofile={limit}:{limit}");
        let args = ["--start-servers", "1", "--min-spare-servers", "1", "--boot-backoff-initial", "100ms"];
        let command = wrapped(
            "prlimit",
            &[&nofile, "--"],
            &[&args[..], &["--boot-backoff-max", "1s", "--max-boot-failures", "4"]].concat(),
        )?;
        let Ok(server) = ServerProcess::spawn(command) else {
            continue; // refused to start: the test above checks that it says why
        };
        let what = format!("RLIMIT_NOFILE {limit}: a halt, a served request, a fork loop or a wedge");
        let outcome = wait_for(&what, DEADLINE, || {
            let log = server.stderr();
            let exits = lines_with(&log, "worker exited with an error") + lines_with(&log, "failed to boot");
            if exits > 50 {
                let line = log.lines().find(|l| l.contains("ended with an error")).unwrap_or("").to_owned();
                return Ok(Some(Some(format!("a fork loop: {exits}+ exits in a row, e.g. {line}"))));
            }
            if log.contains("forking halted") || serves_now(&server) {
                return Ok(Some(None));
            }
            // A wedge: one worker refusing accepts on and on, never giving up (a worker that
            // holds no connection fails after a second of them, and is backed off).
            let since_last_exit = log.rsplit_once("failed to boot").map_or(log.as_str(), |(_, after)| after);
            let refused = lines_with(since_last_exit, "accept failed");
            Ok((refused > 30)
                .then(|| Some(format!("a wedged pool: {refused} refused accepts in a row, nothing served"))))
        })?;
        if let Some(outcome) = outcome {
            bad.push(format!("RLIMIT_NOFILE {limit}: {outcome}"));
        }
    }
    ensure!(bad.is_empty(), "\n{}", bad.join("\n"));
    Ok(())
}

#[test]
fn dev_shm_read_only_or_out_of_inodes_at_start_is_a_clear_error_naming_the_segment() -> Result<()> {
    if !can_unshare_mounts()? {
        return Ok(());
    }
    for (what, options) in [("read-only", "ro"), ("out of inodes", "size=1m,nr_inodes=1")] {
        let setup = format!("mount -t tmpfs -o {options} tmpfs /dev/shm");
        let output = run_to_end(in_mount_namespace(&setup, &["--start-servers", "1"])?, DEADLINE)?;
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        ensure!(output.status.code() == Some(1), "/dev/shm {what}: {:?}\n{stdout}{stderr}", output.status);
        ensure!(!stdout.contains("listening on"), "/dev/shm {what}: {stdout}");
        ensure!(
            stderr.contains("ERROR") && stderr.contains("/simplehttp-prefork."),
            "/dev/shm {what}: the error does not name the segment: {stderr}"
        );
    }
    Ok(())
}

/// The error names the segment and the reason in words ("Read-only file system (os error
/// 30)"), not a bare number.
#[test]
fn dev_shm_errors_at_start_say_why_in_words() -> Result<()> {
    if !can_unshare_mounts()? {
        return Ok(());
    }
    for (options, why) in [("ro", "Read-only file system"), ("size=1m,nr_inodes=1", "No space left on device")] {
        let setup = format!("mount -t tmpfs -o {options} tmpfs /dev/shm");
        let output = run_to_end(in_mount_namespace(&setup, &["--start-servers", "1"])?, DEADLINE)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(stderr.contains(why), "/dev/shm {options}: no {why:?} in {stderr}");
    }
    Ok(())
}

/// A `/dev/shm` with room for the segment's file but not for its pages (tmpfs allocates on
/// first touch: `ftruncate` succeeds, and a write to a missing page would be SIGBUS): the pages
/// are reserved at creation, so it is ENOSPC, a clear error at start.
#[test]
fn dev_shm_full_at_start_is_a_clear_error_not_a_crash() -> Result<()> {
    if !can_unshare_mounts()? {
        return Ok(());
    }
    for size in ["4k", "64k"] {
        let setup = format!("mount -t tmpfs -o size={size} tmpfs /dev/shm");
        let output = run_to_end(in_mount_namespace(&setup, &["--start-servers", "1"])?, DEADLINE)?;
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        ensure!(
            output.status.code() == Some(1) && !stdout.contains("listening on"),
            "/dev/shm of {size}: {:?} (a signal is a crash)\nstdout: {stdout}stderr: {stderr}",
            output.status
        );
        ensure!(
            stderr.contains("/simplehttp-prefork."),
            "/dev/shm of {size}: the error does not name the segment: {stderr}"
        );
    }
    Ok(())
}

/// The pids of the first `n` workers, once they are ready.
fn ready_workers(pid_file: &TempPath, n: u64) -> Result<Vec<u32>> {
    wait_for("the first workers to be ready", DEADLINE, || {
        let status = status_json(pid_file)?;
        Ok((count(&status, "idle") >= n && count(&status, "starting") == 0).then(|| status_pids(&status)))
    })
}

/// Serves `n` requests, each logged (`--access-log`), and checks none failed.
fn serve_logged_requests(server: &ServerProcess, n: usize) -> Result<()> {
    for _ in 0..n {
        let response = server.get("/")?;
        ensure!(response.status == 200, "{response:?}");
    }
    Ok(())
}

#[test]
fn a_full_log_disk_is_reported_on_stderr_and_the_server_serves_on() -> Result<()> {
    // /dev/full refuses every write with ENOSPC; a tiny tmpfs fills up, then has room again.
    let pid_file = TempPath::new("full-log.pid");
    let args = [
        "--start-servers",
        "2",
        "--min-spare-servers",
        "1",
        "--max-spare-servers",
        "3",
        "--access-log",
        "common",
        "--pid-file",
        pid_file.as_str(),
    ];
    let server = ServerProcess::start(&[&args[..], &["--log-file", "/dev/full"]].concat())?;
    let workers = ready_workers(&pid_file, 2)?;
    let cpu = CpuWatch::start(server.pid())?;
    serve_logged_requests(&server, 100)?;
    server.wait_logged("No space left on device")?;
    cpu.ensure_quiet("log writes failing")?;
    // Its log lost, a death would show only here: every first worker is still there.
    ensure!(workers.iter().all(|pid| is_alive(*pid)), "/dev/full: a worker died: {}", status_json(&pid_file)?);
    drop(server);

    if !can_unshare_mounts()? {
        return Ok(());
    }
    let pid_file = TempPath::new("full-log-tmpfs.pid");
    let args = [&args[..args.len() - 1], &[pid_file.as_str()]].concat();
    let dir = TempPath::new("logdisk");
    std::fs::create_dir_all(dir.path())?;
    let log = dir.path().join("server.log");
    let setup = format!("mount -t tmpfs -o size=16k tmpfs {}", dir.as_str());
    let args = [&args[..], &["--log-file", log.to_str().context("path")?]].concat();
    let server = ServerProcess::spawn(in_mount_namespace(&setup, &args)?)?;
    // The file as the server sees it, in its own mount namespace.
    let seen = PathBuf::from(format!("/proc/{}/root{}", server.pid(), log.display()));
    let workers = ready_workers(&pid_file, 2)?;
    let cpu = CpuWatch::start(server.pid())?;
    serve_logged_requests(&server, 300)?;
    server.wait_logged("No space left on device")?;
    cpu.ensure_quiet("log disk full")?;
    ensure!(workers.iter().all(|pid| is_alive(*pid)), "log disk full: a worker died: {}", status_json(&pid_file)?);
    // Room again (the file emptied, as a log rotation would): logging resumes.
    std::fs::File::create(&seen)?;
    serve_logged_requests(&server, 5)?;
    wait_for("access lines in the emptied log", DEADLINE, || {
        Ok(std::fs::read_to_string(&seen)?.contains("\"GET / HTTP/1.1\" 200").then_some(()))
    })?;
    drop(server);
    let _ = std::fs::remove_dir(dir.path());
    Ok(())
}

#[test]
fn a_worker_killed_by_the_oom_killer_is_logged_and_replaced() -> Result<()> {
    let cgroup = if is_root() { MemoryCgroup::create(256 << 20) } else { None };
    if !require_machine("a writable v1 memory cgroup (root)", cgroup.is_some(), "run the tests as root, as CI does")? {
        return Ok(());
    }
    let cgroup = cgroup.context("cgroup")?;
    let pid_file = TempPath::new("oom.pid");
    // The whole server in the cgroup, as a container or a systemd MemoryMax would have it.
    let procs = cgroup.0.join("cgroup.procs");
    let setup = format!("echo $$ > {}", procs.display());
    let args = ["--start-servers", "2", "--min-spare-servers", "2", "--max-spare-servers", "3"];
    let script = format!("{setup} && exec \"$0\" \"$@\"");
    let mut command = wrapped("sh", &["-c", &script], &args)?;
    command.args(["--pid-file", pid_file.as_str()]);
    let server = ServerProcess::spawn(command)?;
    let workers = wait_for("two ready workers", DEADLINE, || {
        let status = status_json(&pid_file)?;
        Ok((count(&status, "idle") == 2).then(|| status_pids(&status)))
    })?;
    // 512 MiB touched in a cgroup of 256: the kernel kills the biggest process, the leaker.
    let leaked = http_get(server.addr(), "/leak/512");
    ensure!(leaked.is_err(), "the leak was answered: {leaked:?}");
    server.wait_logged("killed by SIGKILL")?;
    ensure!(cgroup.oom_kills() >= 1, "no OOM kill counted by the cgroup");
    let log = server.stderr();
    let died: Vec<&str> = log.lines().filter(|l| l.contains("worker died")).collect();
    ensure!(died.len() == 1 && died[0].contains("killed by SIGKILL"), "{log}");
    let victim = workers.iter().find(|pid| died[0].contains(&format!("pid={pid} "))).copied();
    let victim = victim.with_context(|| format!("the dead worker is not one of {workers:?}: {}", died[0]))?;
    ensure!(!is_alive(victim), "worker {victim} still alive");
    wait_for("the pool whole again", DEADLINE, || {
        let status = status_json(&pid_file)?;
        let pids = status_pids(&status);
        Ok((count(&status, "idle") >= 1 && pids.len() >= 2 && !pids.contains(&victim) && pids == server.children())
            .then_some(()))
    })?;
    ensure!(server.get("/")?.status == 200);
    drop(server);
    Ok(())
}

#[test]
fn a_worker_sigkilled_while_growing_is_logged_and_replaced() -> Result<()> {
    let pid_file = TempPath::new("grown.pid");
    let server = ServerProcess::start_pool(2, 1, 3, &["--pid-file", pid_file.as_str()])?;
    let leaked = server.get("/leak/64")?;
    ensure!(leaked.status == 200, "{leaked:?}");
    let victim: u32 = leaked.body.split_whitespace().last().unwrap_or_default().parse()?;
    nix_kill(victim, Sig::SIGKILL)?;
    server.wait_logged("killed by SIGKILL")?;
    let log = server.stderr();
    ensure!(
        log.lines().any(|l| l.contains("worker died") && l.contains(&format!("pid={victim} "))),
        "no `worker died` line for {victim}:\n{log}"
    );
    wait_for("the killed worker replaced", DEADLINE, || {
        let status = status_json(&pid_file)?;
        let pids = status_pids(&status);
        Ok((count(&status, "idle") >= 1 && !pids.contains(&victim) && pids == server.children()).then_some(()))
    })?;
    ensure!(server.get("/")?.status == 200);
    Ok(())
}

#[test]
fn the_parent_stopped_for_10_s_leaves_the_workers_serving_and_catches_up_when_continued() -> Result<()> {
    let pid_file = TempPath::new("sigstop.pid");
    let server = ServerProcess::start_pool(3, 2, 4, &["--pid-file", pid_file.as_str()])?;
    let workers = wait_for("three ready workers", DEADLINE, || {
        let status = status_json(&pid_file)?;
        Ok((count(&status, "idle") == 3).then(|| status_pids(&status)))
    })?;
    let before = server.stderr().lines().count();
    server.signal(Sig::SIGSTOP)?;
    let stopped_at = wait_for("the parent to be stopped", DEADLINE, || {
        Ok((process_state(server.pid()) == Some('T')).then(Instant::now))
    })?;
    // While it is stopped: the workers answer, the status page too.
    let mut answered_by = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let response = server.get("/")?;
        ensure!(response.status == 200, "{response:?}");
        answered_by.insert(hello_pid(&response.body)?);
    }
    ensure!(answered_by.iter().all(|pid| workers.contains(pid)), "{answered_by:?} not of {workers:?}");
    ensure!(server.status()?["processes"] == 3, "the status page while the parent is stopped");
    // Work for the parent when it comes back: a worker dies, unreaped meanwhile.
    let victim = workers[0];
    nix_kill(victim, Sig::SIGKILL)?;
    wait_for("the killed worker to be a zombie", DEADLINE, || Ok((process_state(victim) == Some('Z')).then_some(())))?;
    ensure!(server.get("/")?.status == 200, "the others serve on");
    // The case's input: stopped for 10 s, by a stopwatch of the parent's state.
    wait_for("the parent stopped for 10 s", Duration::from_secs(60), || {
        ensure!(process_state(server.pid()) == Some('T'), "the parent is no longer stopped");
        Ok((stopped_at.elapsed() >= Duration::from_secs(10)).then_some(()))
    })?;
    server.signal(Sig::SIGCONT)?;
    wait_for("the parent to run again", DEADLINE, || Ok((process_state(server.pid()) != Some('T')).then_some(())))?;
    let cpu = CpuWatch::start(server.pid())?;
    // It reaps the zombie, replaces it, and keeps the pool within its bounds.
    wait_for("the zombie reaped and the pool within bounds", DEADLINE, || {
        let status = status_json(&pid_file)?;
        let idle = count(&status, "idle");
        Ok((process_state(victim).is_none()
            && (2..=4).contains(&idle)
            && count(&status, "busy") == 0
            && status_pids(&status) == server.children())
        .then_some(()))
    })?;
    ensure!(server.get("/")?.status == 200);
    cpu.ensure_quiet("catching up")?;
    // Nothing alarming: the death it found, and nothing else above info.
    let log = server.stderr();
    let since: Vec<&str> = log.lines().skip(before).collect();
    let alarming: Vec<&&str> = since
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .filter(|l| !(l.contains("worker died") && l.contains(&format!("pid={victim} "))))
        .collect();
    ensure!(alarming.is_empty(), "alarming lines after the stop:\n{}", since.join("\n"));
    ensure!(since.iter().any(|l| l.contains("worker died") && l.contains("killed by SIGKILL")), "{log}");
    Ok(())
}

/// Where Debian (and most distributions) put the thread-safe libfaketime.
fn libfaketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime",
        "/usr/lib/aarch64-linux-gnu/faketime",
        "/usr/lib/faketime",
        "/usr/local/lib/faketime",
    ]
    .iter()
    .map(|dir| Path::new(dir).join("libfaketimeMT.so.1"))
    .find(|path| path.exists())
}

#[test]
fn the_wall_clock_stepped_back_a_day_wedges_neither_the_pool_nor_the_status_page() -> Result<()> {
    let probe = [
        "sh",
        "-c",
        "ls /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1 2>/dev/null | grep -q .",
    ];
    if !require_tool("libfaketime", &probe, "apt-get install faketime")? {
        return Ok(());
    }
    let library = libfaketime().context("libfaketimeMT.so.1 not found")?;
    let offset = TempPath::new("faketime");
    std::fs::write(offset.path(), "+0\n")?;
    let pid_file = TempPath::new("clock.pid");
    // Workers recycled every second of their life: the lifetime limit must keep acting on
    // CLOCK_MONOTONIC across the step, and the status page keep its uptime.
    let args = ["--start-servers", "2", "--min-spare-servers", "1", "--max-spare-servers", "3"];
    let mut command = wrapped("env", &[], &args)?;
    command
        .args(["--max-worker-lifetime", "1s", "--pid-file", pid_file.as_str()])
        .env("LD_PRELOAD", &library)
        .env("FAKETIME_TIMESTAMP_FILE", offset.path())
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let mut server = ServerProcess::spawn(command)?;
    // libfaketime keeps its state in /dev/shm, named by the first process; it removes it when
    // that process exits normally, and this guard when it does not.
    let _shm = FaketimeShm(server.pid());
    let first = status_json(&pid_file)?;
    let started = first["server"]["start_time_unix"].as_f64().context("start time")?;
    std::fs::write(offset.path(), "-1d\n")?;
    let cpu = CpuWatch::start(server.pid())?;
    // The step took: workers forked from now on started "a day before" the server.
    let stepped = wait_for("a worker forked after the step", DEADLINE, || {
        let status = status_json(&pid_file)?;
        let workers = status["workers"].as_array().cloned().unwrap_or_default();
        let after: Vec<u32> = workers
            .iter()
            .filter(|w| w["started_unix"].as_f64().is_some_and(|t| t < started - 3600.0))
            .filter_map(|w| w["pid"].as_u64().map(|p| p as u32))
            .collect();
        Ok((!after.is_empty()).then_some(after))
    })?;
    // Recycling by lifetime goes on: the workers forked after the step are replaced too.
    wait_for("the workers forked after the step to be recycled", DEADLINE, || {
        let children = server.children();
        Ok((stepped.iter().all(|pid| !children.contains(pid)) && !children.is_empty()).then_some(()))
    })?;
    // The status page (served by a worker) and the status command: an uptime that went on.
    let page = server.status()?;
    let uptime = page["server"]["uptime_seconds"].as_f64().context("uptime")?;
    let first_uptime = first["server"]["uptime_seconds"].as_f64().context("uptime")?;
    ensure!(uptime > first_uptime && uptime < 600.0, "uptime {uptime} s after {first_uptime} s");
    let command_view = status_json(&pid_file)?;
    ensure!(command_view["server"]["uptime_seconds"].as_f64().is_some_and(|u| u >= uptime), "{command_view}");
    // Reload and TTIN still work.
    server.signal(Sig::SIGTTIN)?;
    server.wait_logged("min_spare_servers=2 max_spare_servers=4")?;
    server.signal(Sig::SIGHUP)?;
    wait_for("generation 2 serving", DEADLINE, || Ok(only_generation(&status_json(&pid_file)?, 2).then_some(())))?;
    ensure!(server.get("/")?.status == 200);
    cpu.ensure_quiet("after the clock step")?;
    let log = server.stderr();
    ensure!(!log.contains("ERROR") && !log.contains("worker died") && !log.contains("panicked"), "{log}");
    // The log's own timestamps show the step (the line for TTIN is dated a day back).
    let ttin = log.lines().find(|l| l.contains("spare bounds changed")).unwrap_or_default();
    let first_line = log.lines().next().unwrap_or_default();
    ensure!(ttin < first_line, "the log does not show the step:\n{first_line}\n{ttin}");
    server.signal(Sig::SIGTERM)?;
    ensure!(server.wait_exit(DEADLINE)?.success(), "{}", server.stderr());
    Ok(())
}

fn nix_kill(pid: u32, signal: Sig) -> Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)?;
    Ok(())
}

/// Whether `GET /` on a fresh connection is answered 200 within 2 s (a probe in a loop that
/// waits for a state: a pool that does not serve yet must not hold it for long).
fn serves_now(server: &ServerProcess) -> bool {
    let attempt = || -> Result<bool> {
        let mut stream = TcpStream::connect_timeout(&server.addr(), Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 12];
        std::io::Read::read_exact(&mut stream, &mut head)?;
        Ok(head.starts_with(b"HTTP/1.1 200"))
    };
    attempt().unwrap_or(false)
}
