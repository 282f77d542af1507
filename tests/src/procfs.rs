//! What `/proc` says of a server's processes: children, parents, states, CPU time, descriptors,
//! limits.

use std::time::Instant;

use anyhow::{Context as _, Result, ensure};

/// Pids of the processes whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect();
    pids.sort_unstable();
    pids
}

/// The parent pid of `pid` from `/proc/<pid>/stat`, if it is alive (zombies count as dead).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields resume after the last ')'.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.next()?.parse().ok()
}

/// CPU time (user + system) `pid` has used, in clock ticks (1/100 s), from `/proc/<pid>/stat`;
/// still readable while the process is an unreaped zombie.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name: state(3) ppid(4) ... utime(14) stime(15).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Whether `pid` is a live (non-zombie) process.
pub fn is_alive(pid: u32) -> bool {
    parent_of(pid).is_some()
}

/// The state letter of `pid` from `/proc/<pid>/stat` (`R`, `S`, `T` stopped, `Z` zombie...),
/// if the process exists.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().next()?.chars().next()
}

/// How many file descriptors `pid` has open, from `/proc/<pid>/fd` (needs the right to read
/// it: the same user, or root).
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The parent's CPU time over a stretch: a busy loop would use most of it.
#[derive(Debug)]
pub struct CpuWatch {
    pid: u32,
    ticks: u64,
    since: Instant,
}

impl CpuWatch {
    pub fn start(pid: u32) -> Result<CpuWatch> {
        Ok(CpuWatch { pid, ticks: cpu_ticks(pid).context("reading the CPU time")?, since: Instant::now() })
    }

    /// At most a fifth of the elapsed time (ticks are 10 ms), and a few ticks of slack: a
    /// busy loop uses all of it, even on a loaded machine a good part.
    pub fn ensure_quiet(&self, what: &str) -> Result<()> {
        let used = cpu_ticks(self.pid).context("reading the CPU time")?.saturating_sub(self.ticks);
        let elapsed = self.since.elapsed();
        let allowed = 10 + elapsed.as_millis() as u64 / 10 / 5;
        ensure!(
            used <= allowed,
            "{what}: pid {} used {used} ticks of CPU in {elapsed:?} (at most {allowed}): a busy loop",
            self.pid
        );
        Ok(())
    }
}

/// The soft limit named `name` ("Max processes", "Max open files") of `pid`.
pub fn soft_limit(pid: u32, name: &str) -> Result<String> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in limits"))?;
    line[name.len()..].split_whitespace().next().map(str::to_owned).context("no soft limit")
}

/// Tasks (threads included) of the real uid `uid`, as `RLIMIT_NPROC` counts them.
pub fn tasks_of_uid(uid: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|status| {
            let uid_line = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap_or_default();
            uid_line.split_whitespace().next() == Some(uid)
        })
        .filter_map(|status| status.lines().find_map(|l| l.strip_prefix("Threads:"))?.trim().parse::<usize>().ok())
        .sum()
}

/// The `RLIMIT_NOFILE` that leaves `pid` exactly `free` more descriptors: new ones take the
/// lowest free numbers, and the limit bounds the number (descriptors it already has above
/// the limit stay open, such as a build tool's inherited jobserver pipe).
pub fn fd_limit_leaving(pid: u32, free: usize) -> Result<String> {
    let open: std::collections::BTreeSet<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect();
    let mut left = free;
    let mut number = 0;
    loop {
        if !open.contains(&number) {
            if left == 0 {
                return Ok(number.to_string());
            }
            left -= 1;
        }
        number += 1;
    }
}
