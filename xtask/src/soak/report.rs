//! The soak's end: the load stopped, the server stopped gracefully and checked for leftovers,
//! and the report of what was done and what failed.

use super::*;

impl Soak {
    /// After the load: outcomes, settled checks, the stop, and the report.
    pub(super) fn finish(mut self, result: Result<(LoadResult, LoadResult)>) -> Result<()> {
        let ran = self.at();
        let mut errors = Vec::new();
        let (keepalive, close) = match result {
            Ok(loads) => loads,
            Err(error) => {
                errors.push(format!("the soak stopped: {error:#}"));
                (LoadResult::default(), LoadResult::default())
            }
        };
        let mut outcomes: BTreeMap<Disturbance, BTreeMap<Outcome, u64>> = BTreeMap::new();
        for (kind, handle) in std::mem::take(&mut self.side) {
            let (mut outcome, port) = handle.join().unwrap_or((Outcome::NoAnswer, None));
            let killed = port.is_some_and(|port| self.victims.iter().any(|v| v.ports.contains(&port)));
            if killed && matches!(outcome, Outcome::Closed | Outcome::Reset) {
                outcome = Outcome::Killed;
            }
            *outcomes.entry(kind).or_default().entry(outcome).or_default() += 1;
        }
        // Settled, with no load: scoreboard = ps, spares within bounds, descriptors as at first.
        let (min, max) = self.bounds;
        let settled = wait_for("the pool to settle", SETTLE, || {
            let snapshot = self.scoreboard.snapshot();
            let live: Vec<u32> = {
                let mut pids: Vec<u32> = snapshot.live().map(|s| s.pid).collect();
                pids.sort_unstable();
                pids
            };
            let idle = snapshot.idle() as u64;
            let fds = open_fds(self.server.pid()).unwrap_or(usize::MAX);
            Ok((live == self.server.children() && (min..=max).contains(&idle) && fds == self.fd_baseline)
                .then(|| format!("{} processes, {idle} idle in {min}..={max}, {fds} descriptors", live.len())))
        });
        let settled_detail = match &settled {
            Ok(detail) => detail.clone(),
            Err(error) => {
                let snapshot = self.scoreboard.snapshot();
                let detail = format!(
                    "{error:#}: scoreboard {:?}, ps {:?}, {} idle, {:?} descriptors (at first {})",
                    snapshot.live().map(|s| s.pid).collect::<Vec<_>>(),
                    self.server.children(),
                    snapshot.idle(),
                    open_fds(self.server.pid()),
                    self.fd_baseline
                );
                errors.push(format!("after the load: {detail}"));
                detail
            }
        };
        let log = self.server.stderr();
        let asked = log.matches("asking the supervisor for a replacement").count();
        let left = log.matches("leaving on its own").count();
        let forked = self.scoreboard.snapshot().header.workers_forked;
        let generation = self.scoreboard.snapshot().header.generation;
        // The stop: graceful, every worker gone, the segment removed.
        let workers = self.server.children();
        let segment = self.server.segment_path();
        drop(self.scoreboard);
        let stopped = self.server.signal(Signal::SIGTERM).and_then(|()| self.server.wait_exit(SETTLE));
        let gone = wait_for("every worker to exit", SETTLE, || Ok(workers.iter().all(|p| !is_alive(*p)).then_some(())));
        let stop_detail = match &stopped {
            Ok(status) if status.success() && gone.is_ok() && !segment.exists() => {
                format!("{status}, every worker gone, {} removed", segment.display())
            }
            other => {
                let detail = format!(
                    "{other:?}, workers {}, segment {}",
                    if gone.is_ok() { "gone" } else { "LEFT" },
                    if segment.exists() { "LEFT" } else { "removed" }
                );
                errors.push(format!("the stop: {detail}"));
                detail
            }
        };
        // Failed requests: on a connection a killed worker held, or after its response.
        let killed: BTreeSet<u32> = self.victims.iter().map(|v| v.pid).collect();
        let mut on_victim: BTreeMap<u32, u64> = BTreeMap::new();
        let mut unexplained = Vec::new();
        let failures =
            keepalive.failures.iter().map(|f| ("keep-alive", f)).chain(close.failures.iter().map(|f| ("close", f)));
        for (load, failure) in failures {
            let by_port = failure.local_port.and_then(|port| self.victims.iter().find(|v| v.ports.contains(&port)));
            let by_pid = failure.worker_pid.filter(|pid| killed.contains(pid));
            match by_port.map(|v| v.pid).or(by_pid) {
                Some(pid) => *on_victim.entry(pid).or_default() += 1,
                None => unexplained.push(format!(
                    "{load} at {}: {} (port {:?}, after a response of {:?})",
                    secs(failure.at),
                    failure.error,
                    failure.local_port,
                    failure.worker_pid
                )),
            }
        }
        let failed = keepalive.failures.len() + close.failures.len();
        if !unexplained.is_empty() {
            errors.push(format!("{} failed requests on no killed worker", unexplained.len()));
        }
        let no_answer: u64 =
            outcomes.values().flat_map(|o| o.iter()).filter(|(o, _)| **o == Outcome::NoAnswer).map(|(_, n)| n).sum();
        if no_answer > 0 {
            errors.push(format!("{no_answer} slow or malformed clients never answered nor closed"));
        }
        let served_malformed: u64 = outcomes
            .get(&Disturbance::Malformed)
            .into_iter()
            .flat_map(|o| o.iter())
            .filter(|(o, _)| matches!(o, Outcome::Status(code) if *code < 400))
            .map(|(_, n)| n)
            .sum();
        if served_malformed > 0 {
            errors.push(format!("{served_malformed} malformed requests were served"));
        }
        for (name, invariant) in &self.invariants {
            if !invariant.violations.is_empty() {
                errors.push(format!("{name}: {}", invariant.violations.len()));
            }
        }

        // The report.
        println!();
        println!(
            "soak: {} of load and disturbances ({} samples); pool start 4, spare {MIN_SPARE}..{MAX_SPARE} \
             (now {min}..{max}), max clients {MAX_CLIENTS}, recycling every {MAX_REQUESTS} requests",
            secs(ran),
            self.samples
        );
        println!(
            "load: keep-alive {} ok ({:.0}/s), close {} ok ({:.0}/s), {} non-2xx",
            keepalive.ok,
            keepalive.requests_per_second(),
            close.ok,
            close.requests_per_second(),
            keepalive.bad_status + close.bad_status
        );
        println!();
        println!("{:<30} {:>6}  what it came to", "disturbance", "count");
        for (kind, count) in &self.counts {
            let detail = match kind {
                Disturbance::Kill => {
                    let busy = self.victims.iter().filter(|v| v.busy).count();
                    let held: usize = self.victims.iter().map(|v| v.ports.len()).sum();
                    format!("{busy} busy, {} idle; {held} client connections held by them", self.victims.len() - busy)
                }
                Disturbance::Hup => format!("generation {generation} at the end"),
                Disturbance::Ttin | Disturbance::Ttou => format!("spare bounds {min}..{max} at the end"),
                _ => outcomes
                    .get(kind)
                    .map(|o| o.iter().map(|(outcome, n)| format!("{outcome}: {n}")).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default(),
            };
            println!("{:<30} {count:>6}  {detail}", kind.name());
        }
        println!(
            "{:<30} {asked:>6}  asked for their replacement near the limit ({left} left on their own at its margin); \
             {forked} forked in all; most requests by one worker: {}",
            format!("recycling ({MAX_REQUESTS} requests)"),
            self.most_requests
        );
        println!();
        println!("{:<24} {:<6} detail", "invariant", "result");
        for (name, invariant) in &self.invariants {
            let ok = invariant.violations.is_empty();
            let detail = if ok {
                match *name {
                    "pool within bounds" => {
                        format!("{} checks; at most {} processes", invariant.checks, self.max_processes)
                    }
                    "no fd leaked" => {
                        format!("{} checks; the parent's descriptors stayed at {}", invariant.checks, self.fd_baseline)
                    }
                    _ => format!("{} checks", invariant.checks),
                }
            } else {
                invariant.violations.join("; ")
            };
            println!("{name:<24} {:<6} {detail}", if ok { "ok" } else { "FAIL" });
        }
        println!(
            "{:<24} {:<6} {settled_detail}",
            "settled after the load",
            if settled.is_ok() { "ok" } else { "FAIL" }
        );
        println!(
            "{:<24} {:<6} {stop_detail}",
            "graceful stop, clean shm",
            if stopped.is_ok() && gone.is_ok() && !segment.exists() { "ok" } else { "FAIL" }
        );
        println!();
        let by_victim: Vec<String> = on_victim.iter().map(|(pid, n)| format!("{n} on {pid}")).collect();
        println!(
            "failed requests: {failed} ({} on killed workers{}{}; {} elsewhere)",
            failed - unexplained.len(),
            if by_victim.is_empty() { "" } else { ": " },
            by_victim.join(", "),
            unexplained.len()
        );
        for line in unexplained.iter().take(20) {
            println!("  UNEXPLAINED {line}");
        }
        println!();
        if !errors.is_empty() {
            bail!("soak: invariants broken: {}", errors.join("; "));
        }
        println!("soak: all invariants hold");
        Ok(())
    }
}

/// The client ports of the TCP connections `pid` holds to `server_port` (its descriptors'
/// socket inodes, looked up in `/proc/net/tcp` and `tcp6`).
pub(super) fn client_ports(pid: u32, server_port: u16) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[").and_then(|rest| rest.strip_suffix(']')).map(str::to_owned)
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(inode)) = (fields.get(1), fields.get(2), fields.get(9)) else {
                continue;
            };
            let port = |address: &str| address.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if inodes.contains(*inode) && port(local) == Some(server_port) {
                ports.extend(port(remote));
            }
        }
    }
    ports
}

/// A load on its own thread until told to stop (or dropped), waiting for progress within
/// [`SETTLE`].
pub(super) struct Load(BackgroundLoad);

impl Load {
    pub(super) fn start(addr: SocketAddr, connections: usize, keepalive: bool, duration: Duration) -> Load {
        let spec = LoadSpec { addr, connections, duration, path: "/".to_owned(), keepalive };
        // The soak stops it once its time is up; the limit only bounds a soak gone wrong.
        Load(BackgroundLoad::start(spec, duration + SETTLE * 2))
    }

    pub(super) fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    pub(super) fn wait_served(&self, more: u64) -> Result<()> {
        self.0.wait_served(more, SETTLE)
    }

    pub(super) fn finish(self) -> Result<LoadResult> {
        self.0.finish()
    }
}
