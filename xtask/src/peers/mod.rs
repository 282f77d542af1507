//! `cargo xtask bench --peers`: simplehttp-prefork beside the ceiling of its own process model,
//! bare hyper, nginx and Apache prefork, under one real load generator (wrk; h2load for
//! HTTP/2) in one run, alternating rounds; then system calls per request, parent wake-ups and
//! idle worker memory; written to `docs/BENCH.md` with a bar chart, `docs/bench.svg`.
//!
//! Nothing is installed here: without wrk the bench stops and says how to install it, and a
//! peer that is not installed is skipped with a note in the report, never faked.

mod ceiling;
mod chart;
mod loadgen;
mod probes;
mod report;
mod servers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};

pub use ceiling::{Options as CeilingOptions, serve as serve_ceiling};
use loadgen::{H2LOAD, Load, Measured, Tool, WRK};
use probes::{Counted, STRACE, Uss};
use servers::{Env, Flavor, Peer, Running, TempDir};

/// The options of `bench` that `--peers` shares with the rest.
#[derive(Debug, Clone)]
pub struct Common {
    pub duration: Duration,
    pub connections: usize,
    pub rounds: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PeerOptions {
    /// With --peers: wrk's threads (`-t`).
    #[arg(long, default_value_t = 1)]
    wrk_threads: usize,
    /// With --peers: client connections in the blocking-handler scenario.
    #[arg(long, default_value_t = 200)]
    block_connections: usize,
    /// With --peers: how long the blocking handler blocks.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    block_time: Duration,
    /// With --peers: HTTP/2 streams in flight on each connection (`h2load -m`).
    #[arg(long, default_value_t = 10)]
    h2_streams: usize,
    /// With --peers: the scenarios to run, comma-separated (all when none is given).
    #[arg(long, value_delimiter = ',', value_enum)]
    scenarios: Vec<Scenario>,
    /// With --peers: no strace counts and no memory figures.
    #[arg(long)]
    no_probes: bool,
    /// With --peers: how long each strace count runs.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    probe_duration: Duration,
    /// With --peers: the Markdown report (the chart goes next to it, as bench.svg).
    #[arg(long, default_value = "docs/BENCH.md")]
    report: PathBuf,
}

/// A load scenario, one column of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Scenario {
    KeepAlive,
    Close,
    Block,
    Tls,
    H2,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [Scenario::KeepAlive, Scenario::Close, Scenario::Block, Scenario::Tls, Scenario::H2];

    /// The column title.
    pub fn title(self, options: &PeerOptions) -> String {
        match self {
            Scenario::KeepAlive => "keep-alive req/s".to_owned(),
            Scenario::Close => "`Connection: close` req/s".to_owned(),
            Scenario::Block => format!(
                "{} ms blocking handler, {} connections, req/s",
                options.block_time.as_millis(),
                options.block_connections
            ),
            Scenario::Tls => "TLS handshakes/s (`Connection: close`)".to_owned(),
            Scenario::H2 => format!("HTTP/2 req/s (h2load, {} streams)", options.h2_streams),
        }
    }

    /// The short name, for the ratio table.
    pub fn short(self) -> &'static str {
        match self {
            Scenario::KeepAlive => "keep-alive",
            Scenario::Close => "close",
            Scenario::Block => "blocking handler",
            Scenario::Tls => "TLS handshakes",
            Scenario::H2 => "HTTP/2",
        }
    }

    fn flavor(self, options: &PeerOptions) -> Flavor {
        match self {
            Scenario::KeepAlive | Scenario::Close => Flavor::Plain,
            Scenario::Block => Flavor::Block(options.block_time),
            Scenario::Tls => Flavor::Tls,
            Scenario::H2 => Flavor::H2c,
        }
    }

    /// The load this scenario puts on `running`.
    fn load(self, running: &Running, common: &Common, options: &PeerOptions) -> Load {
        let mut load = Load {
            tool: Tool::Wrk,
            threads: options.wrk_threads,
            connections: common.connections,
            duration: common.duration,
            url: running.url.clone(),
            close: false,
            streams: 1,
            timeout: None,
            script: None,
        };
        match self {
            Scenario::KeepAlive => {}
            Scenario::Close | Scenario::Tls => load.close = true,
            Scenario::Block => {
                load.close = true;
                load.connections = options.block_connections;
                load.timeout = Some(Duration::from_secs(10));
            }
            Scenario::H2 => {
                load.tool = Tool::H2load;
                load.streams = options.h2_streams;
            }
        }
        load
    }
}

/// One cell of the table: every round's measurement, or why there is none.
#[derive(Debug, Clone, Default)]
pub struct Cell {
    pub rounds: Vec<Measured>,
    pub failures: Vec<String>,
    pub not_applicable: Option<String>,
}

impl Cell {
    /// The best round's requests per second.
    pub fn best(&self) -> Option<f64> {
        self.rounds.iter().map(|m| m.requests_per_second).reduce(f64::max)
    }
}

/// A server as it was started for one group of scenarios.
#[derive(Debug, Clone)]
pub struct Started {
    pub scenarios: Vec<Scenario>,
    pub peer: Peer,
    pub command: String,
    pub config: Option<String>,
}

/// Everything one run found, for the report.
#[derive(Debug)]
pub struct Run {
    pub started: SystemTime,
    pub common: Common,
    pub options: PeerOptions,
    pub scenarios: Vec<Scenario>,
    pub cells: BTreeMap<(Scenario, Peer), Cell>,
    /// The load command line of each cell.
    pub loads: BTreeMap<(Scenario, Peer), String>,
    pub servers: Vec<Started>,
    pub worker_syscalls: BTreeMap<(Peer, Scenario), std::result::Result<Counted, String>>,
    pub parent_syscalls: BTreeMap<(Peer, Scenario), std::result::Result<Counted, String>>,
    pub uss: BTreeMap<Peer, std::result::Result<Uss, String>>,
    pub notes: Vec<String>,
    pub probes: Option<String>,
}

/// Requests one connection makes before the idle workers' memory is read.
pub const USS_REQUESTS: u64 = 10_000;

/// Runs every scenario and probe and writes the report; `binary` is the release server.
pub fn run(common: &Common, options: &PeerOptions, binary: &Path) -> Result<()> {
    if !loadgen::installed(WRK) {
        bail!(
            "wrk is not installed: `apt-get install wrk` (Debian's package), then run `cargo xtask bench --peers` again"
        );
    }
    let scenarios: Vec<Scenario> = if options.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        Scenario::ALL.into_iter().filter(|s| options.scenarios.contains(s)).collect()
    };
    let mut run = Run {
        started: SystemTime::now(),
        common: common.clone(),
        options: options.clone(),
        scenarios: scenarios.clone(),
        cells: BTreeMap::new(),
        loads: BTreeMap::new(),
        servers: Vec::new(),
        worker_syscalls: BTreeMap::new(),
        parent_syscalls: BTreeMap::new(),
        uss: BTreeMap::new(),
        notes: Vec::new(),
        probes: None,
    };
    for peer in Peer::ALL {
        if let Some(program) = peer.missing() {
            run.notes.push(format!("{} skipped: {program} is not installed.", peer.short()));
        }
    }
    let tls = TempDir::new("tls")?;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let env = Env {
        binary: binary.to_path_buf(),
        xtask: std::env::current_exe()?,
        cert: tls.write("cert.pem", &certified.cert.pem())?,
        key: tls.write("key.pem", &certified.signing_key.serialize_pem())?,
    };
    println!(
        "bench --peers: wrk -t{} -c{} -d{}s, {} rounds, scenarios {:?}",
        options.wrk_threads,
        common.connections,
        common.duration.as_secs(),
        common.rounds,
        scenarios
    );
    // Scenarios that share a server set-up run on the same servers, alternating.
    let groups: [&[Scenario]; 4] =
        [&[Scenario::KeepAlive, Scenario::Close], &[Scenario::Block], &[Scenario::Tls], &[Scenario::H2]];
    for group in groups {
        let group: Vec<Scenario> = group.iter().copied().filter(|s| scenarios.contains(s)).collect();
        if group.is_empty() {
            continue;
        }
        if group.contains(&Scenario::H2) && !loadgen::installed(H2LOAD) {
            run.notes.push(
                "HTTP/2 skipped: h2load is not installed (`apt-get install nghttp2-client`, Debian's package).".into(),
            );
            for peer in Peer::ALL {
                run.cells.entry((Scenario::H2, peer)).or_default().not_applicable = Some("h2load not installed".into());
            }
            continue;
        }
        run_group(&mut run, &group, &env)?;
    }
    if options.no_probes {
        run.probes = Some("not measured (`--no-probes`)".into());
    } else if !loadgen::installed(STRACE) {
        run.probes = Some("not measured: strace is not installed (`apt-get install strace`)".into());
    } else {
        run_probes(&mut run, &env)?;
    }
    drop(tls);
    let report = crate::project_root().join(&options.report);
    report::write(&run, &report)?;
    println!("bench --peers: report written to {}", report.display());
    Ok(())
}

/// Starts every peer that can run `group`, then measures them in alternating rounds.
fn run_group(run: &mut Run, group: &[Scenario], env: &Env) -> Result<()> {
    let flavor = group[0].flavor(&run.options);
    let mut running = Vec::new();
    for peer in Peer::ALL {
        if let Some(reason) = peer.unsupported(flavor) {
            for scenario in group {
                run.cells.entry((*scenario, peer)).or_default().not_applicable = Some(reason.to_owned());
            }
            continue;
        }
        if let Some(program) = peer.missing() {
            for scenario in group {
                run.cells.entry((*scenario, peer)).or_default().not_applicable =
                    Some(format!("{program} not installed"));
            }
            continue;
        }
        match servers::start(peer, flavor, env) {
            Ok(server) => {
                run.servers.push(Started {
                    scenarios: group.to_vec(),
                    peer,
                    command: server.command.clone(),
                    config: server.config.clone(),
                });
                running.push(server);
            }
            Err(error) => {
                println!("{}: {error:#}", peer.short());
                run.notes.push(format!("{} did not start for {group:?}: {error:#}", peer.short()));
                for scenario in group {
                    run.cells.entry((*scenario, peer)).or_default().failures.push(format!("did not start: {error:#}"));
                }
            }
        }
    }
    for round in 1..=run.common.rounds {
        for scenario in group {
            for server in &running {
                let load = scenario.load(server, &run.common, &run.options);
                run.loads.insert((*scenario, server.peer), load.command_line());
                let cell = run.cells.entry((*scenario, server.peer)).or_default();
                match load.run() {
                    Ok(measured) => {
                        println!(
                            "{:<10} {:<22} round {round}: {:>10.0} req/s {:>6} errors",
                            format!("{scenario:?}"),
                            server.peer.short(),
                            measured.requests_per_second,
                            measured.errors
                        );
                        cell.rounds.push(measured);
                    }
                    Err(error) => {
                        println!("{scenario:?} {}: {error:#}", server.peer.short());
                        cell.failures.push(format!("{error:#}"));
                    }
                }
            }
        }
    }
    drop(running);
    Ok(())
}

/// System calls per request, parent wake-ups and idle memory, each server on its own.
fn run_probes(run: &mut Run, env: &Env) -> Result<()> {
    for peer in Peer::ALL {
        if peer.missing().is_some() {
            continue;
        }
        let server = match servers::start(peer, Flavor::Plain, env) {
            Ok(server) => server,
            Err(error) => {
                run.uss.insert(peer, Err(format!("did not start: {error:#}")));
                continue;
            }
        };
        let uss = probes::idle_uss(&server, USS_REQUESTS).map_err(|e| format!("{e:#}"));
        if let Ok(uss) = &uss {
            println!(
                "memory {:<22} idle worker USS after {} requests: busiest {:.2} MiB, median {:.2} MiB",
                peer.short(),
                uss.requests,
                mib(uss.busiest),
                mib(uss.median)
            );
        }
        run.uss.insert(peer, uss);
        if !matches!(peer, Peer::Ceiling | Peer::Classic | Peer::WorkerConnections) {
            continue;
        }
        for scenario in [Scenario::KeepAlive, Scenario::Close] {
            let counted = count_worker_syscalls(&server, scenario, &run.common, &run.options);
            if let Ok(counted) = &counted {
                println!(
                    "syscalls {:<22} {scenario:?}: {:.2} per request ({})",
                    peer.short(),
                    counted.per_request(),
                    counted.breakdown()
                );
            }
            run.worker_syscalls.insert((peer, scenario), counted);
        }
        if peer == Peer::Ceiling {
            continue;
        }
        for scenario in [Scenario::KeepAlive, Scenario::Close] {
            let load = scenario.load(&server, &run.common, &run.options);
            let counted = probes::parent_syscalls(&server, &load).map_err(|e| format!("{e:#}"));
            if let Ok(counted) = &counted {
                println!(
                    "parent   {:<22} {scenario:?}: {:.1} poll calls per second ({:.1} system calls)",
                    peer.short(),
                    counted.per_second(&POLLS),
                    counted.total() as f64 / counted.elapsed.as_secs_f64()
                );
            }
            run.parent_syscalls.insert((peer, scenario), counted);
        }
    }
    Ok(())
}

/// How long keep-alive load runs before system calls are counted.
const WARM_UP: Duration = Duration::from_secs(2);

/// Tries at a count in which no worker was forked (and so left untraced) meanwhile.
const COUNT_TRIES: usize = 3;

/// System calls per request of `server`'s workers under `scenario`'s load.
///
/// A worker forked during the count is not traced, and at full speed beside traced (slowed)
/// ones it would serve most of the requests: the pool is first grown to its size under load by
/// `connections` keep-alive clients (up to `--max-clients`, where it cannot fork), the count
/// starts at once, and a count during which a worker appeared anyway is made again.
fn count_worker_syscalls(
    server: &Running,
    scenario: Scenario,
    common: &Common,
    options: &PeerOptions,
) -> std::result::Result<Counted, String> {
    let mut counted = Err("not counted".to_owned());
    for _ in 0..COUNT_TRIES {
        let mut warm_up = Scenario::KeepAlive.load(server, common, options);
        warm_up.duration = WARM_UP;
        warm_up.run().map_err(|e| format!("{e:#}"))?;
        let mut load = scenario.load(server, common, options);
        load.duration = options.probe_duration;
        counted = probes::worker_syscalls(server, &load).map_err(|e| format!("{e:#}"));
        if counted.as_ref().is_ok_and(|c| c.untraced == 0) {
            break;
        }
    }
    counted
}

/// The calls a wake-up of the supervisor begins with.
pub const POLLS: [&str; 3] = ["poll", "ppoll", "epoll_wait"];

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Whether `pid` is still running (and not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}
