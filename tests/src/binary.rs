//! The binaries under test: the server, built by cargo with the tests' profile, the workspace's
//! examples, and running either to its end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::DEADLINE;

/// Path of the server binary, built once per test process with the same profile as the tests
/// (or taken from `SIMPLEHTTP_PREFORK_BIN`).
pub fn server_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BINARY.get_or_init(|| build_server_binary().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!(e))
}

fn build_server_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SIMPLEHTTP_PREFORK_BIN") {
        return Ok(PathBuf::from(path));
    }
    // Test executables live in target/<profile>/deps/; the binary goes to target/<profile>/.
    let exe = std::env::current_exe()?;
    let profile_dir = exe.parent().and_then(Path::parent).context("test executable has no target/<profile> dir")?;
    let target_dir = profile_dir.parent().context("no target dir")?;
    let profile = profile_dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    // The same selection as `cargo test --workspace` (which builds this binary for the
    // facade's own tests): the same features, so after it this build has nothing to do. A
    // narrower `-p simplehttp-prefork` would resolve features differently and build the
    // server a second time.
    command.args(["build", "--quiet", "--workspace", "--tests", "--examples"]);
    command.arg("--target-dir").arg(target_dir);
    // Without the variables cargo sets for the test it runs: build scripts that watch one
    // (ring's watches CARGO_MANIFEST_DIR) would build again here, and again in the next
    // `cargo test`.
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        let set_by_cargo_test = name.starts_with("CARGO_PKG_")
            || ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE"]
                .contains(&&*name)
            || ["CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR", "CARGO_BIN_NAME", "OUT_DIR"].contains(&&*name);
        if set_by_cargo_test {
            command.env_remove(&key);
        }
    }
    if profile != "debug" {
        command.args(["--profile", profile]);
    }
    let status = command.status().context("running cargo build for the server binary")?;
    ensure!(status.success(), "cargo build of simplehttp-prefork failed: {status}");
    let binary = profile_dir.join("simplehttp-prefork");
    ensure!(binary.exists(), "{} missing after build", binary.display());
    Ok(binary)
}

/// Path of the workspace example `name` (such as `prefork-supervisor`'s `line_server`), built
/// with the server binary.
pub fn example_binary(name: &str) -> Result<PathBuf> {
    let server = server_binary()?;
    let examples = server.parent().context("server binary has no directory")?.join("examples");
    let binary = examples.join(name);
    ensure!(binary.exists(), "{} missing after build", binary.display());
    Ok(binary)
}

/// Runs `simplehttp-prefork args...` (a subcommand such as `status`) to completion, with a
/// generous deadline, and returns its output.
pub fn run_command(args: &[&str]) -> Result<std::process::Output> {
    let child = Command::new(server_binary()?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = Pid::from_raw(child.id() as i32);
    // Read the output while waiting (a full pipe would stall the command), on a thread, so
    // that the deadline holds.
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(DEADLINE) {
        Ok(output) => Ok(output?),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            bail!("simplehttp-prefork {args:?} did not finish within {DEADLINE:?}")
        }
    }
}

/// `binary --address 127.0.0.1 --port 0 --demo args...`: the tests use the demo routes
/// (`/sleep/`, `/block/`, `/leak/`) to keep workers busy.
pub fn server_command(binary: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command.args(["--address", "127.0.0.1", "--port", "0", "--demo"]).args(args);
    command
}

/// Runs `command` to its end (killed past `timeout`) and returns its output.
pub fn run_to_end(mut command: Command, timeout: Duration) -> Result<std::process::Output> {
    let child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(timeout) {
        Ok(output) => Ok(output?),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            bail!("{command:?} still running after {timeout:?}")
        }
    }
}
