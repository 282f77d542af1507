//! What `bench --peers` measures besides throughput: system calls per request on a server's
//! workers (`strace -c -f` attached during a bounded wrk run, divided by the requests wrk
//! counted), the supervisor's wake-ups per second under steady load (its `poll` calls), and
//! the private memory (USS) of idle workers once one of them has served 10k requests.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::loadgen::{Load, Measured};
use super::servers::{Running, TempDir};

pub const STRACE: &str = "strace";

/// System calls counted on some processes while a load ran.
#[derive(Debug, Clone)]
pub struct Counted {
    /// Calls (and failed calls) by system call name.
    pub calls: BTreeMap<String, (u64, u64)>,
    /// What the load generator measured meanwhile.
    pub load: Measured,
    /// The load's command line.
    pub command: String,
    /// How long the trace ran.
    pub elapsed: Duration,
    /// Workers that appeared during the count (forked meanwhile, not traced).
    pub untraced: usize,
}

impl Counted {
    pub fn total(&self) -> u64 {
        self.calls.values().map(|(calls, _)| calls).sum()
    }

    /// Calls per request wrk completed.
    pub fn per_request(&self) -> f64 {
        self.total() as f64 / self.load.requests.max(1) as f64
    }

    /// Calls of `names` per second of tracing.
    pub fn per_second(&self, names: &[&str]) -> f64 {
        let calls: u64 = names.iter().filter_map(|n| self.calls.get(*n)).map(|(c, _)| c).sum();
        calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// `name ×calls-per-request` for the most frequent calls, most frequent first.
    pub fn breakdown(&self) -> String {
        let requests = self.load.requests.max(1) as f64;
        let mut calls: Vec<(&String, &(u64, u64))> = self.calls.iter().collect();
        calls.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        calls
            .iter()
            .filter(|(_, (n, _))| *n as f64 / requests >= 0.005)
            .map(|(name, (n, errors))| {
                let failed =
                    if *errors > 0 { format!(" ({:.2} failed)", *errors as f64 / requests) } else { String::new() };
                format!("`{name}` {:.2}{failed}", *n as f64 / requests)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An `strace -c` attached to some processes until [`Strace::finish`].
struct Strace {
    child: Child,
    _dir: TempDir,
    out: PathBuf,
}

impl Strace {
    /// Attaches to `pids` (with every thread and any child when `follow`) and returns once
    /// strace says it is attached to each.
    fn attach(pids: &[u32], follow: bool) -> Result<Strace> {
        let dir = TempDir::new("strace")?;
        let out = dir.path().join("strace.txt");
        let mut command = Command::new(STRACE);
        command.args(["-c", "-U", "name,calls,errors", "-o"]).arg(&out);
        if follow {
            command.arg("-f");
        }
        for pid in pids {
            command.args(["-p", &pid.to_string()]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running strace")?;
        let stderr = child.stderr.take().context("strace stderr")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut strace = Strace { child, _dir: dir, out };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut attached = 0;
        while attached < pids.len() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains(" attached") => attached += 1,
                Ok(_) => {}
                Err(_) => {
                    strace.stop();
                    bail!("strace attached to {attached} of {} processes", pids.len());
                }
            }
        }
        Ok(strace)
    }

    fn stop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let _ = self.child.wait();
    }

    /// Detaches and returns calls and errors by system call.
    fn finish(mut self) -> Result<BTreeMap<String, (u64, u64)>> {
        self.stop();
        let text = std::fs::read_to_string(&self.out).context("reading strace's summary")?;
        Ok(parse_summary(&text))
    }
}

/// strace `-c -U name,calls,errors` output: a header, a rule, one row per call, a rule, `total`.
fn parse_summary(text: &str) -> BTreeMap<String, (u64, u64)> {
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [name, count, rest @ ..] = words.as_slice() else { continue };
        let (Ok(count), errors) = (count.parse::<u64>(), rest.first().and_then(|e| e.parse::<u64>().ok())) else {
            continue;
        };
        if *name != "total" {
            calls.insert((*name).to_owned(), (count, errors.unwrap_or(0)));
        }
    }
    calls
}

/// Counts the system calls of `running`'s workers (every thread) while `load` runs.
pub fn worker_syscalls(running: &Running, load: &Load) -> Result<Counted> {
    let workers = running.workers();
    let strace = Strace::attach(&workers, true)?;
    let started = Instant::now();
    let measured = load.run();
    let elapsed = started.elapsed();
    let calls = strace.finish()?;
    let untraced = running.workers().iter().filter(|pid| !workers.contains(pid)).count();
    Ok(Counted { calls, load: measured?, command: load.command_line(), elapsed, untraced })
}

/// Counts the system calls of `running`'s own process (the supervisor) while `load` runs.
pub fn parent_syscalls(running: &Running, load: &Load) -> Result<Counted> {
    let strace = Strace::attach(&[running.pid()], false)?;
    let started = Instant::now();
    let measured = load.run();
    let elapsed = started.elapsed();
    let calls = strace.finish()?;
    Ok(Counted { calls, load: measured?, command: load.command_line(), elapsed, untraced: 0 })
}

/// Private memory of idle workers after one connection made `requests` keep-alive requests.
#[derive(Debug, Clone)]
pub struct Uss {
    /// The worker with the most private memory (the one that served the connection).
    pub busiest: u64,
    /// The median worker.
    pub median: u64,
    pub workers: usize,
    /// Requests the connection completed.
    pub requests: u64,
    pub command: String,
}

/// Makes `requests` keep-alive requests on one connection, lets the workers go idle, and reads
/// their USS (`Private_Clean` + `Private_Dirty` of `/proc/<pid>/smaps_rollup`).
pub fn idle_uss(running: &Running, requests: u64) -> Result<Uss> {
    let dir = TempDir::new("wrk-script")?;
    let script = dir.write(
        "stop.lua",
        &format!(
            "local done = 0\nresponse = function(status, headers, body)\n  done = done + 1\n  \
             if done >= {requests} then wrk.thread:stop() end\nend\n"
        ),
    )?;
    let load = Load {
        tool: super::loadgen::Tool::Wrk,
        threads: 1,
        connections: 1,
        duration: Duration::from_secs(5),
        url: running.url.clone(),
        close: false,
        streams: 1,
        timeout: None,
        script: Some(script.to_string_lossy().into_owned()),
    };
    let measured = load.run()?;
    thread::sleep(Duration::from_secs(1));
    let mut sizes: Vec<u64> = running.workers().into_iter().filter_map(uss).collect();
    sizes.sort_unstable();
    if sizes.is_empty() {
        bail!("no worker's smaps_rollup could be read");
    }
    Ok(Uss {
        busiest: sizes[sizes.len() - 1],
        median: sizes[sizes.len() / 2],
        workers: sizes.len(),
        requests: measured.requests,
        command: load.command_line(),
    })
}

/// A process's private memory in bytes.
fn uss(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kib: u64 = rollup
        .lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strace_summary() {
        let text = "syscall              calls    errors\n---------------- --------- ---------\n\
                    epoll_wait            100          \nrecvfrom              100         3\n\
                    ---------------- --------- ---------\ntotal                 200         3\n";
        let calls = parse_summary(text);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls["epoll_wait"], (100, 0));
        assert_eq!(calls["recvfrom"], (100, 3));
    }
}
