//! A regression guard on the classic worker's hot paths, in system calls per request (counted
//! by `strace -c` on the workers), at the budgets the performance issue set: at most 8 for a
//! request on its own connection (`Connection: close`; it takes 6), at most 3 for a keep-alive
//! request (it takes 2, `recvfrom` and `sendmsg`, as the process model's ceiling; a client
//! slower than 100 ms between requests costs the reactor's `epoll_wait` too, which a loaded
//! machine may cause). Counts, not timings.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::thread;

use anyhow::{Context as _, Result, bail, ensure};
use prefork_tests::{DEADLINE, ServerProcess, TempPath, http_get, require_tool, wait_for};

const REQUESTS: u64 = 1000;

/// `strace -f -c` attached to every worker of `server`, its summary going to a file.
struct Strace {
    child: Child,
    summary: TempPath,
}

impl Strace {
    fn attach(server: &ServerProcess) -> Result<Strace> {
        let workers = wait_for("the workers", DEADLINE, || {
            let children = server.children();
            Ok((children.len() >= 2).then_some(children))
        })?;
        let summary = TempPath::new("strace");
        let mut command = Command::new("strace");
        command.args(["-f", "-c", "-o", summary.as_str()]);
        for pid in &workers {
            command.args(["-p", &pid.to_string()]);
        }
        let mut child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
        // strace says "Process N attached" for each process once it traces it.
        let mut stderr = child.stderr.take().context("strace's stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut seen = String::new();
            let mut buf = [0u8; 1024];
            while seen.matches(" attached").count() < workers.len() {
                match stderr.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
            let _ = tx.send(seen);
            // Keep draining, so that strace never blocks on a full pipe.
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        });
        let seen = rx.recv_timeout(DEADLINE).context("strace did not attach")?;
        ensure!(seen.contains(" attached"), "strace could not attach: {seen}");
        Ok(Strace { child, summary })
    }

    /// Detaches and returns the system calls counted, by name.
    fn finish(mut self) -> Result<Vec<(String, u64)>> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGINT)?;
        let status = self.child.wait()?;
        ensure!(status.success() || status.code() == Some(0) || status.code().is_none(), "strace: {status}");
        let summary = std::fs::read_to_string(self.summary.path())?;
        let mut calls = Vec::new();
        // "% time seconds usecs/call calls [errors] syscall" rows between the dashed lines.
        for line in summary.lines().skip_while(|l| !l.starts_with("------")).skip(1) {
            if line.starts_with("------") {
                break;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(name), Some(count)) = (fields.last(), fields.get(3)) else { continue };
            calls.push((name.to_string(), count.parse()?));
        }
        if calls.is_empty() {
            bail!("no system calls counted:\n{summary}");
        }
        Ok(calls)
    }
}

/// Calls per request, all counted (the once-a-second usage sampling included) but the
/// `fcntl(F_GETFD)` a debug build's standard library makes before closing a descriptor (a
/// debug assertion; a release build makes none).
fn per_request(calls: &[(String, u64)], requests: u64) -> (f64, String) {
    let counted: u64 = calls.iter().filter(|(name, _)| name != "fcntl").map(|(_, n)| n).sum();
    let table = calls.iter().map(|(name, n)| format!("{name} {n}")).collect::<Vec<_>>().join(", ");
    (counted as f64 / requests as f64, table)
}

fn strace_available() -> Result<bool> {
    require_tool("strace", &["strace", "-V"], "apt-get install strace")
}

#[test]
fn a_request_on_its_own_connection_costs_at_most_8_system_calls() -> Result<()> {
    if !strace_available()? {
        return Ok(());
    }
    let server = ServerProcess::start_pool(2, 1, 2, &[])?;
    // Warm up: the first request of a worker sets up what it keeps.
    for _ in 0..4 {
        ensure!(http_get(server.addr(), "/")?.status == 200);
    }
    let strace = Strace::attach(&server)?;
    for _ in 0..REQUESTS {
        ensure!(http_get(server.addr(), "/")?.status == 200);
    }
    let calls = strace.finish()?;
    let (per, table) = per_request(&calls, REQUESTS);
    ensure!(per <= 8.0, "{per:.2} system calls per request on its own connection: {table}");
    Ok(())
}

#[test]
fn a_keep_alive_request_costs_at_most_3_system_calls() -> Result<()> {
    if !strace_available()? {
        return Ok(());
    }
    let server = ServerProcess::start_pool(2, 1, 2, &[])?;
    let mut connection = server.connect()?;
    for _ in 0..4 {
        ensure!(connection.get("/")?.status == 200);
    }
    let strace = Strace::attach(&server)?;
    for _ in 0..REQUESTS {
        ensure!(connection.get("/")?.status == 200);
    }
    let calls = strace.finish()?;
    let (per, table) = per_request(&calls, REQUESTS);
    ensure!(per <= 3.0, "{per:.3} system calls per keep-alive request: {table}");
    Ok(())
}
