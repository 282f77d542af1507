//! `cargo xtask soak --duration 10m`: a chaos soak. One cluster, under keep-alive and
//! `Connection: close` load at once, recycling its workers every 50 requests, is disturbed at
//! random (seeded: the seed is printed, `--seed` replays the same sequence of disturbances)
//! by: a worker SIGKILLed, HUP, TTIN and TTOU, a slow client (half a head, then waiting past
//! the header timeout; or a body dribbled below the minimum rate), a malformed request.
//!
//! Invariants, checked every second from samples taken all along:
//! - scoreboard = ps: no pid is for long (5 s: a fork or a reap is a moment) in the live slots
//!   and not among the parent's children in `/proc`, or the other way round;
//! - the pool within its bounds: never more than `max_clients` processes; never for long more
//!   idle workers than `max_spare_servers`, nor fewer than `min_spare_servers` while it could
//!   fork, with the bounds read from the scoreboard as TTIN and TTOU move them (and checked to
//!   move as signalled); no worker past its recycling limit and margin;
//! - no descriptor leaked: the parent's count from `/proc/<pid>/fd` never stays above its
//!   count once the pool was up, and is back to it at the end; no segment left in `/dev/shm`
//!   after the stop;
//! - no failed request but on a killed worker: each victim is stopped (SIGSTOP) before it is
//!   killed, and the client ports of every TCP connection it holds (serving or parked) are read
//!   from `/proc`; a failed request must be on one of them (or follow a response of a killed
//!   worker on its connection).
//!
//! The report: a table of counts per disturbance with what each came to, the invariants, and
//! the failed requests (how many, on which killed workers). Exits non-zero if an invariant
//! breaks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use prefork_scoreboard::AttachedScoreboard;
use prefork_tests::{ServerProcess, is_alive, open_fds, server_command, wait_for};

use crate::load::{BackgroundLoad, LoadResult, LoadSpec, Outcome, malformed, side_client, slow_body, slow_head};
use crate::{cargo_build, secs};

mod report;

use report::{Load, client_ports};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Build and soak the release binary.
    #[arg(long)]
    release: bool,
    /// How long the load and the disturbances run.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed of the random disturbances (printed; a run is replayed with the same seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent keep-alive client connections.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Concurrent `Connection: close` clients.
    #[arg(long, default_value_t = 4)]
    close_clients: usize,
    /// Time between two disturbances.
    #[arg(long, default_value = "400ms", value_parser = humantime::parse_duration)]
    pace: Duration,
}

const MIN_SPARE: u64 = 2;
const MAX_SPARE: u64 = 6;
const MAX_CLIENTS: u64 = 32;
const MAX_REQUESTS: u64 = 50;
/// The header timeout, and the body's allowance before its minimum rate applies.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a difference between the scoreboard and `ps` may last (a fork, a reap).
const PS_GRACE: Duration = Duration::from_secs(5);
/// How long the pool may be outside its spare bounds (one surplus worker retired per second).
const BOUNDS_GRACE: Duration = Duration::from_secs(10);
/// How long the parent may hold more descriptors than at the start.
const FD_GRACE: Duration = Duration::from_secs(5);
/// Settling after the load, and the stop.
const SETTLE: Duration = Duration::from_secs(40);
/// The most slow or malformed clients running at once.
const MAX_SIDE_CLIENTS: usize = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Disturbance {
    Kill,
    Hup,
    Ttin,
    Ttou,
    SlowHead,
    SlowBody,
    Malformed,
}

impl Disturbance {
    const ALL: [Disturbance; 7] = [
        Disturbance::Kill,
        Disturbance::Hup,
        Disturbance::Ttin,
        Disturbance::Ttou,
        Disturbance::SlowHead,
        Disturbance::SlowBody,
        Disturbance::Malformed,
    ];

    fn name(self) -> &'static str {
        match self {
            Disturbance::Kill => "SIGKILL a worker",
            Disturbance::Hup => "HUP (reload)",
            Disturbance::Ttin => "TTIN (one more spare)",
            Disturbance::Ttou => "TTOU (one spare fewer)",
            Disturbance::SlowHead => "slow client: half a head",
            Disturbance::SlowBody => "slow client: slow body",
            Disturbance::Malformed => "malformed request",
        }
    }
}

/// Requests that must not be served: each gets a 4xx/5xx or a close.
const MALFORMED: [&[u8]; 9] = [
    b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n Folded: yes\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x00\x01\x02\x03\x04\x05\x06\x07\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: yes\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
];

/// A slow or malformed client's thread: what it came to, and its connection's client port.
type SideClient = thread::JoinHandle<(Outcome, Option<u16>)>;

/// A worker killed, and the client ports of the TCP connections it held.
#[derive(Debug)]
struct Victim {
    pid: u32,
    busy: bool,
    ports: BTreeSet<u16>,
}

/// Whether an invariant held, episode by episode.
#[derive(Debug, Default)]
struct Invariant {
    violations: Vec<String>,
    checks: u64,
}

impl Invariant {
    fn fail(&mut self, at: Duration, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(format!("at {}: {what}", secs(at)));
        } else if self.violations.len() == 20 {
            self.violations.push("(more not shown)".to_owned());
        }
    }
}

/// Everything the soak watches and counts.
struct Soak {
    started: Instant,
    server: ServerProcess,
    scoreboard: AttachedScoreboard,
    rng: fastrand::Rng,
    /// (min_spare, max_spare) as signalled, and since when the scoreboard shows otherwise.
    bounds: (u64, u64),
    bounds_off_since: Option<Instant>,
    fd_baseline: usize,
    /// A pid in one of scoreboard and ps but not the other: since when.
    mismatched: HashMap<u32, Instant>,
    surplus_since: Option<Instant>,
    shortage_since: Option<Instant>,
    fds_above_since: Option<Instant>,
    most_requests: u64,
    max_processes: usize,
    samples: u64,
    victims: Vec<Victim>,
    counts: BTreeMap<Disturbance, u64>,
    side: Vec<(Disturbance, SideClient)>,
    invariants: BTreeMap<&'static str, Invariant>,
}

pub fn run(options: &Options) -> Result<()> {
    let binary = cargo_build(options.release, &["-p", "simplehttp-prefork", "--bin", "simplehttp-prefork"])?
        .join("simplehttp-prefork");
    let seed = options.seed.unwrap_or_else(|| fastrand::u64(..));
    println!(
        "soak: seed {seed} (replay: cargo xtask soak --duration {} --seed {seed}); {} keep-alive and {} close \
         clients; a disturbance every {}",
        humantime::format_duration(options.duration),
        options.clients,
        options.close_clients,
        secs(options.pace)
    );
    let wall = Instant::now();
    let mut soak = Soak::start(&binary, seed)?;
    let result = soak.run(options);
    let report = soak.finish(result);
    println!("soak: {} in all", secs(wall.elapsed()));
    report
}

impl Soak {
    fn start(binary: &Path, seed: u64) -> Result<Soak> {
        let (min, max, clients, requests) =
            (MIN_SPARE.to_string(), MAX_SPARE.to_string(), MAX_CLIENTS.to_string(), MAX_REQUESTS.to_string());
        let header_timeout = format!("{}s", HEADER_TIMEOUT.as_secs());
        let args = [
            "--start-servers",
            "4",
            "--min-spare-servers",
            &min,
            "--max-spare-servers",
            &max,
            "--max-clients",
            &clients,
            "--max-requests-per-child",
            &requests,
            "--keepalive-timeout",
            &header_timeout,
        ];
        let server = ServerProcess::spawn(server_command(binary, &args))?;
        let scoreboard = AttachedScoreboard::open(&server.scoreboard_name())?;
        wait_for("the pool to start", SETTLE, || {
            let snapshot = scoreboard.snapshot();
            Ok((snapshot.idle() as u64 >= MIN_SPARE && snapshot.processes() == server.children().len()).then_some(()))
        })?;
        let fd_baseline = open_fds(server.pid()).context("reading the parent's descriptors")?;
        let invariants =
            ["scoreboard = ps", "pool within bounds", "bounds as signalled", "recycling limit", "no fd leaked"]
                .into_iter()
                .map(|name| (name, Invariant::default()))
                .collect();
        Ok(Soak {
            started: Instant::now(),
            server,
            scoreboard,
            rng: fastrand::Rng::with_seed(seed),
            bounds: (MIN_SPARE, MAX_SPARE),
            bounds_off_since: None,
            fd_baseline,
            mismatched: HashMap::new(),
            surplus_since: None,
            shortage_since: None,
            fds_above_since: None,
            most_requests: 0,
            max_processes: 0,
            samples: 0,
            victims: Vec::new(),
            counts: Disturbance::ALL.iter().map(|d| (*d, 0)).collect(),
            side: Vec::new(),
            invariants,
        })
    }

    /// The load and the disturbances, with the invariants sampled all along.
    fn run(&mut self, options: &Options) -> Result<(LoadResult, LoadResult)> {
        let keepalive = Load::start(self.server.addr(), options.clients, true, options.duration);
        let close = Load::start(self.server.addr(), options.close_clients, false, options.duration);
        keepalive.wait_served(100)?;
        close.wait_served(20)?;
        let until = Instant::now() + options.duration;
        let mut next_disturbance = Instant::now();
        let mut next_check = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if keepalive.is_finished() || close.is_finished() {
                bail!("a load ended early");
            }
            self.sample();
            if Instant::now() >= next_disturbance {
                self.disturb()?;
                // The disturbances' pace is an input of the soak, not a wait for anything.
                next_disturbance += options.pace;
            }
            if Instant::now() >= next_check {
                self.check();
                next_check += Duration::from_secs(1);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let keepalive = keepalive.finish()?;
        let close = close.finish()?;
        Ok((keepalive, close))
    }

    fn at(&self) -> Duration {
        self.started.elapsed()
    }

    /// One sample of the scoreboard, `/proc` and the parent's descriptors.
    fn sample(&mut self) {
        let snapshot = self.scoreboard.snapshot();
        let children: BTreeSet<u32> = self.server.children().into_iter().collect();
        let live: BTreeSet<u32> = snapshot.live().map(|s| s.pid).collect();
        let now = Instant::now();
        self.samples += 1;
        // Scoreboard = ps: a pid only on one side is a moment's transition, or a leak.
        let different: BTreeSet<u32> = live.symmetric_difference(&children).copied().collect();
        self.mismatched.retain(|pid, _| different.contains(pid));
        for pid in different {
            self.mismatched.entry(pid).or_insert(now);
        }
        // The bounds the parent works to, as it published them.
        let config = snapshot.header.config;
        let (min, max) = (config.min_spare_servers, config.max_spare_servers);
        if (min, max) == self.bounds {
            self.bounds_off_since = None;
        } else {
            self.bounds_off_since.get_or_insert(now);
        }
        let idle = snapshot.idle() as u64;
        let processes = snapshot.processes();
        self.max_processes = self.max_processes.max(processes);
        if processes as u64 > MAX_CLIENTS {
            let at = self.at();
            self.invariant("pool within bounds").fail(at, format!("{processes} processes > max_clients"));
        }
        if idle > max {
            self.surplus_since.get_or_insert(now);
        } else {
            self.surplus_since = None;
        }
        if idle < min && (processes as u64) < MAX_CLIENTS {
            self.shortage_since.get_or_insert(now);
        } else {
            self.shortage_since = None;
        }
        // The limit holds whatever the load: a tenth of margin past it, at most.
        let most = snapshot.live().map(|s| s.requests_child).max().unwrap_or(0);
        self.most_requests = self.most_requests.max(most);
        if let Some(fds) = open_fds(self.server.pid()) {
            if fds > self.fd_baseline {
                self.fds_above_since.get_or_insert(now);
            } else {
                self.fds_above_since = None;
            }
        }
    }

    fn invariant(&mut self, name: &'static str) -> &mut Invariant {
        self.invariants.entry(name).or_default()
    }

    /// Once a second: has anything been off for too long?
    fn check(&mut self) {
        let (now, at) = (Instant::now(), self.at());
        for invariant in self.invariants.values_mut() {
            invariant.checks += 1;
        }
        let stale: Vec<u32> =
            self.mismatched.iter().filter(|(_, since)| now - **since > PS_GRACE).map(|(pid, _)| *pid).collect();
        if !stale.is_empty() {
            let snapshot = self.scoreboard.snapshot();
            let live: Vec<u32> = snapshot.live().map(|s| s.pid).collect();
            let children = self.server.children();
            // Where each one is (or was, at the last sample), to tell a leak from a lag.
            let sides: Vec<String> = stale
                .iter()
                .map(|pid| {
                    let slot = snapshot.live().find(|s| s.pid == *pid).map(|s| s.state.letter());
                    let process = prefork_tests::process_state(*pid);
                    format!("{pid}: slot {slot:?}, process {process:?}, child {}", children.contains(pid))
                })
                .collect();
            let detail = format!(
                "pids {stale:?} for over {} ({}): scoreboard {live:?}, ps {children:?}",
                secs(PS_GRACE),
                sides.join("; ")
            );
            self.invariant("scoreboard = ps").fail(at, detail);
            for pid in stale {
                self.mismatched.insert(pid, now); // once per episode
            }
        }
        let snapshot = self.scoreboard.snapshot();
        let config = snapshot.header.config;
        let idle = snapshot.idle();
        if self.surplus_since.is_some_and(|since| now - since > BOUNDS_GRACE) {
            let detail =
                format!("{idle} idle > max_spare_servers {} for over {}", config.max_spare_servers, secs(BOUNDS_GRACE));
            self.invariant("pool within bounds").fail(at, detail);
            self.surplus_since = Some(now);
        }
        if self.shortage_since.is_some_and(|since| now - since > BOUNDS_GRACE) {
            let detail = format!(
                "{idle} idle < min_spare_servers {} with {} processes, for over {}",
                config.min_spare_servers,
                snapshot.processes(),
                secs(BOUNDS_GRACE)
            );
            self.invariant("pool within bounds").fail(at, detail);
            self.shortage_since = Some(now);
        }
        if self.bounds_off_since.is_some_and(|since| now - since > BOUNDS_GRACE) {
            let detail = format!(
                "signalled {:?}, scoreboard says ({}, {})",
                self.bounds, config.min_spare_servers, config.max_spare_servers
            );
            self.invariant("bounds as signalled").fail(at, detail);
            self.bounds_off_since = Some(now);
        }
        let limit = MAX_REQUESTS + (MAX_REQUESTS / 10).max(1);
        if self.most_requests > limit {
            let detail =
                format!("a worker answered {} requests (limit {MAX_REQUESTS}, margin to {limit})", self.most_requests);
            self.invariant("recycling limit").fail(at, detail);
            self.most_requests = 0;
        }
        if self.fds_above_since.is_some_and(|since| now - since > FD_GRACE) {
            let fds = open_fds(self.server.pid()).unwrap_or(0);
            let detail = format!("the parent holds {fds} descriptors, {} at the start", self.fd_baseline);
            self.invariant("no fd leaked").fail(at, detail);
            self.fds_above_since = Some(now);
        }
    }

    /// One disturbance, chosen at random.
    fn disturb(&mut self) -> Result<()> {
        let mut kind = Disturbance::ALL[self.rng.usize(..Disturbance::ALL.len())];
        // One bounds change at a time (signals do not queue), within 1..=10.
        let pending = self.bounds_off_since.is_some();
        if matches!(kind, Disturbance::Ttin | Disturbance::Ttou) && pending {
            return Ok(());
        }
        if kind == Disturbance::Ttin && self.bounds.1 >= 10 {
            kind = Disturbance::Ttou;
        } else if kind == Disturbance::Ttou && self.bounds.0 <= 1 {
            kind = Disturbance::Ttin;
        }
        let running = self.side.iter().filter(|(_, h)| !h.is_finished()).count();
        if matches!(kind, Disturbance::SlowHead | Disturbance::SlowBody | Disturbance::Malformed)
            && running >= MAX_SIDE_CLIENTS
        {
            return Ok(());
        }
        let addr = self.server.addr();
        match kind {
            Disturbance::Kill => {
                let Some(victim) = self.kill_one()? else { return Ok(()) };
                self.victims.push(victim);
            }
            Disturbance::Hup => self.server.signal(Signal::SIGHUP)?,
            Disturbance::Ttin => {
                self.server.signal(Signal::SIGTTIN)?;
                // As the supervisor does it (max_clients caps both).
                let min = (self.bounds.0 + 1).min(MAX_CLIENTS);
                self.bounds = (min, (self.bounds.1 + 1).min(MAX_CLIENTS).max(min));
                self.bounds_off_since = Some(Instant::now());
            }
            Disturbance::Ttou => {
                self.server.signal(Signal::SIGTTOU)?;
                let min = self.bounds.0.saturating_sub(1).max(1);
                self.bounds = (min, self.bounds.1.saturating_sub(1).max(min));
                self.bounds_off_since = Some(Instant::now());
            }
            Disturbance::SlowHead => self.side.push((kind, thread::spawn(move || side_client(addr, slow_head)))),
            Disturbance::SlowBody => self.side.push((kind, thread::spawn(move || side_client(addr, slow_body)))),
            Disturbance::Malformed => {
                let request = MALFORMED[self.rng.usize(..MALFORMED.len())];
                self.side.push((kind, thread::spawn(move || side_client(addr, |s| malformed(s, request)))));
            }
        }
        *self.counts.entry(kind).or_default() += 1;
        Ok(())
    }

    /// Stops a worker (a busy one if any), notes the client ports of every TCP connection it
    /// holds, and kills it.
    fn kill_one(&mut self) -> Result<Option<Victim>> {
        let snapshot = self.scoreboard.snapshot();
        let children = self.server.children();
        let candidates: Vec<(u32, bool)> = snapshot
            .live()
            .filter(|s| children.contains(&s.pid) && !s.state.is_stopping())
            .map(|s| (s.pid, s.state.is_busy()))
            .collect();
        let busy: Vec<(u32, bool)> = candidates.iter().copied().filter(|(_, busy)| *busy).collect();
        let pool = if busy.is_empty() { &candidates } else { &busy };
        if pool.is_empty() {
            return Ok(None);
        }
        let (pid, was_busy) = pool[self.rng.usize(..pool.len())];
        let target = Pid::from_raw(pid as i32);
        if kill(target, Signal::SIGSTOP).is_err() {
            return Ok(None); // gone meanwhile
        }
        // Stopped, it takes no connection: what it holds now is what the kill costs. (A worker
        // leaving on its own may be exiting already: a zombie, or gone.)
        let _ = wait_for("the victim to stop", Duration::from_secs(5), || {
            let state = prefork_tests::process_state(pid);
            Ok(state.is_none_or(|s| matches!(s, 'T' | 't' | 'Z' | 'X')).then_some(()))
        });
        let ports = client_ports(pid, self.server.addr().port());
        // ESRCH: it had exited on its own meanwhile; its connections count as its anyway.
        let _ = kill(target, Signal::SIGKILL);
        Ok(Some(Victim { pid, busy: was_busy, ports }))
    }
}
