//! What the machine offers a test: tools, root, cgroups, a shared fake clock; a test skips (or,
//! in CI, fails) without them.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;

use anyhow::{Context as _, Result, bail};

use crate::{DEADLINE, wait_for};

/// Whether an optional tool that a test drives (curl, Python's `prometheus_client`) is usable
/// here: `probe` is a command that succeeds only if it is (`["curl", "--version"]`), and
/// `install` says how to get it (`apt-get install curl`).
///
/// Absent, the test should return `Ok(())` at once: this prints why to stderr (uncaptured, so
/// it shows in `cargo test`'s output), so that `cargo test --workspace` passes on a fresh
/// machine. With `PREFORK_REQUIRE_TOOLS` set (CI sets it, and installs every tool), an absent
/// tool is an error instead, so that CI never skips a test silently.
pub fn require_tool(name: &str, probe: &[&str], install: &str) -> Result<bool> {
    let (program, args) = probe.split_first().context("require_tool: empty probe")?;
    let usable = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if usable {
        return Ok(true);
    }
    if std::env::var_os("PREFORK_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty() && v != "0") {
        bail!("{name} is not installed, and PREFORK_REQUIRE_TOOLS is set: `{install}`");
    }
    // libtest names its threads after the tests; a `harness = false` test runs on `main`.
    let test = match thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.file_stem()?.to_string_lossy().into_owned()))
            .unwrap_or_default(),
    };
    // Not eprintln!: libtest captures that, and a skipped test passes, so it would never show.
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {name} is not installed (CI installs it; `{install}`)");
    Ok(false)
}

/// Whether this process runs as root (effective uid 0, from `/proc/self/status`).
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:")).unwrap_or_default();
    uids.split_whitespace().nth(1) == Some("0")
}

/// As [`require_tool`], for what a test needs of the machine rather than a tool: root, a
/// private mount namespace, a writable memory cgroup. `usable` says whether it is there and
/// `how` how to get it. Absent, the test should return `Ok(())` at once (a `skipped:` line on
/// stderr), unless `PREFORK_REQUIRE_TOOLS` is set (CI runs as root and sets it): then it is an
/// error, so that CI never skips such a test silently.
pub fn require_machine(what: &str, usable: bool, how: &str) -> Result<bool> {
    if usable {
        return Ok(true);
    }
    if std::env::var_os("PREFORK_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty() && v != "0") {
        bail!("this test needs {what}, and PREFORK_REQUIRE_TOOLS is set: {how}");
    }
    let test = thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "{test}: skipped: needs {what} ({how})");
    Ok(false)
}

// Helpers of the hostile-machine tests (tests/tests/hostile.rs).

/// A memory cgroup (v1) of the server's own, removed on drop (once its processes are gone).
#[derive(Debug)]
pub struct MemoryCgroup(pub PathBuf);

impl MemoryCgroup {
    /// Under this process's own memory cgroup, if the v1 controller is mounted and writable.
    pub fn create(limit: u64) -> Option<MemoryCgroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = own.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_owned()))?;
        let dir = PathBuf::from(format!("/sys/fs/cgroup/memory{path}/prefork-test-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let cgroup = MemoryCgroup(dir);
        std::fs::write(cgroup.0.join("memory.limit_in_bytes"), limit.to_string()).ok()?;
        // Without swap accounting the file is absent; with it, swap must not save the leak.
        let _ = std::fs::write(cgroup.0.join("memory.memsw.limit_in_bytes"), limit.to_string());
        Some(cgroup)
    }

    pub fn oom_kills(&self) -> u64 {
        let control = std::fs::read_to_string(self.0.join("memory.oom_control")).unwrap_or_default();
        control.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = wait_for("the cgroup to empty", DEADLINE, || Ok(std::fs::remove_dir(&self.0).is_ok().then_some(())));
    }
}

/// Removes what libfaketime left in /dev/shm for the process `pid`.
#[derive(Debug)]
pub struct FaketimeShm(pub u32);

impl Drop for FaketimeShm {
    fn drop(&mut self) {
        for name in [format!("faketime_shm_{}", self.0), format!("sem.faketime_sem_{}", self.0)] {
            let _ = std::fs::remove_file(Path::new("/dev/shm").join(name));
        }
    }
}
