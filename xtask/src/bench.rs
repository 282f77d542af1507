//! `cargo xtask bench`: throughput against a bare hyper server measured in the same run, the
//! accept calls each connection costs (the thundering-herd figure), how fast a burst is
//! answered with new spares, and the scoreboard's criterion benchmarks. With `--peers`, also
//! the side-by-side comparison with nginx, Apache prefork and the model's ceiling under wrk
//! (`peers`), written to `docs/BENCH.md`. With `--slow-clients`, only how fast a normal client
//! is answered while slowhttptest floods a classic pool (`slow_bench`).

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use prefork_scoreboard::{AttachedScoreboard, WorkerState};

use anyhow::{Context as _, Result, bail, ensure};
use prefork_tests::{ServerProcess, count, http_get, server_command, wait_for};

use crate::load::{self, LoadSpec};
use crate::{cargo_build, peers, target_dir};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Length of each measurement.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Alternating rounds (prefork, hyper, prefork, hyper, ...).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// New connections made to count accept calls.
    #[arg(long, default_value_t = 2000)]
    accept_connections: usize,
    /// Skip the scoreboard's criterion benchmarks.
    #[arg(long)]
    no_criterion: bool,
    /// Also compare with the ceiling, bare hyper, nginx and Apache prefork under wrk, and write
    /// docs/BENCH.md with its chart.
    #[arg(long)]
    peers: bool,
    /// Only the comparison of `--peers` (no accept count, burst or criterion benchmarks).
    #[arg(long)]
    peers_only: bool,
    /// Only the latency of a normal client while slowhttptest floods a classic pool with slow
    /// heads, then slow bodies (needs slowhttptest).
    #[arg(long)]
    slow_clients: bool,
    /// With --slow-clients: how long each flood lasts.
    #[arg(long, default_value_t = 30)]
    flood_seconds: u32,
    #[command(flatten)]
    peer: peers::PeerOptions,
}

/// Builds everything in release mode and runs the measurements from the release xtask.
pub fn run(options: &Options) -> Result<()> {
    let release = cargo_build(
        true,
        &["-p", "simplehttp-prefork", "--bin", "simplehttp-prefork", "-p", "xtask", "--bin", "xtask"],
    )?;
    // The same options, handed over as they were given (`xtask bench ARGS...`).
    let status = Command::new(release.join("xtask")).arg("bench-run").args(std::env::args_os().skip(2)).status()?;
    ensure!(status.success(), "bench failed: {status}");
    if !options.no_criterion && !options.peers_only && !options.slow_clients {
        // Transition cost (target ≤ 20 ns) and a 256-slot snapshot (target ≤ 10 µs).
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .current_dir(crate::project_root())
            .args(["bench", "-p", "prefork-scoreboard", "--bench", "scoreboard"])
            .status()?;
        ensure!(status.success(), "scoreboard benchmarks failed: {status}");
    }
    Ok(())
}

/// The measurements (run from the release build).
pub fn measure(options: &Options) -> Result<()> {
    let binary = target_dir().join("release").join("simplehttp-prefork");
    ensure!(binary.exists(), "{} not built; run `cargo xtask bench`", binary.display());
    if options.slow_clients {
        return crate::slow_bench::run(&binary, options.flood_seconds);
    }
    if !options.peers_only {
        against_bare_hyper(&binary, options)?;
    }
    if options.peers || options.peers_only {
        let common =
            peers::Common { duration: options.duration, connections: options.connections, rounds: options.rounds };
        peers::run(&common, &options.peer, &binary)?;
    }
    Ok(())
}

/// Throughput against bare hyper with the built-in load generator, accept calls, burst.
fn against_bare_hyper(binary: &Path, options: &Options) -> Result<()> {
    println!(
        "bench: {} connections, {:?} per measurement, {} rounds",
        options.connections, options.duration, options.rounds
    );
    let workers = (options.connections + 8).to_string();
    let prefork = start(
        binary,
        &[
            "--start-servers",
            &workers,
            "--min-spare-servers",
            "8",
            "--max-spare-servers",
            &workers,
            "--max-clients",
            "256",
        ],
    )?;
    let bare = start_bare_hyper()?;
    wait_for("prefork workers", Duration::from_secs(20), || {
        Ok((count(&prefork.status()?, "processes") >= options.connections as u64).then_some(()))
    })?;

    println!("{:<10} {:<11} {:>12} {:>8}", "server", "mode", "req/s", "errors");
    let mut table: Vec<(&str, bool, f64)> = Vec::new();
    for _ in 0..options.rounds {
        for keepalive in [true, false] {
            for (name, addr) in [("prefork", prefork.addr()), ("hyper", bare.addr())] {
                let spec = LoadSpec {
                    addr,
                    connections: options.connections,
                    duration: options.duration,
                    path: "/".into(),
                    keepalive,
                };
                let result = load::run(&spec)?;
                let mode = if keepalive { "keep-alive" } else { "close" };
                println!(
                    "{name:<10} {mode:<11} {:>12.0} {:>8}",
                    result.requests_per_second(),
                    result.failures.len() as u64 + result.bad_status
                );
                table.push((name, keepalive, result.requests_per_second()));
            }
        }
    }
    for keepalive in [true, false] {
        let mean = |server: &str| {
            let runs: Vec<f64> =
                table.iter().filter(|(n, k, _)| *n == server && *k == keepalive).map(|r| r.2).collect();
            runs.iter().sum::<f64>() / runs.len().max(1) as f64
        };
        let (ours, theirs) = (mean("prefork"), mean("hyper"));
        println!(
            "{}: prefork {ours:.0} req/s vs bare hyper {theirs:.0} req/s = {:.2}x",
            if keepalive { "keep-alive" } else { "close" },
            ours / theirs.max(1.0)
        );
    }
    drop(prefork);
    drop(bare);
    accept_calls(binary, options, 1)?;
    accept_calls(binary, options, 4)?;
    burst(binary)
}

/// 20 idle workers all taken at once: how long until 20 new spares are ready (target 50 ms).
fn burst(binary: &Path) -> Result<()> {
    const BURST: usize = 20;
    let mut times = Vec::new();
    for _ in 0..5 {
        let server = start(
            binary,
            &[
                "--start-servers",
                "20",
                "--min-spare-servers",
                "20",
                "--max-spare-servers",
                "60",
                "--max-clients",
                "100",
            ],
        )?;
        let scoreboard = AttachedScoreboard::open(&server.scoreboard_name())?;
        wait_for("20 idle workers", Duration::from_secs(20), || {
            let snapshot = scoreboard.snapshot();
            Ok((snapshot.idle() == BURST && snapshot.count(WorkerState::Starting) == 0).then_some(()))
        })?;
        let addr = server.addr();
        let barrier = Arc::new(Barrier::new(BURST + 1));
        let clients: Vec<_> = (0..BURST)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    barrier.wait();
                    http_get(addr, "/sleep/3000")
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let ready = loop {
            let snapshot = scoreboard.snapshot();
            if snapshot.busy() >= BURST && snapshot.idle() >= BURST {
                break started.elapsed();
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("no 20 new spares within 10 s: {}", snapshot.scoreboard_string());
            }
            thread::sleep(Duration::from_micros(200));
        };
        times.push(ready);
        drop(server);
        for client in clients {
            let _ = client.join();
        }
    }
    times.sort();
    println!(
        "burst: 20 idle workers taken at once; 20 new spares ready after {:.1} ms median, {:.1} ms worst of {} (target 50 ms)",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        times.len()
    );
    Ok(())
}

/// The release server, logging warnings only (the measurement should not pay for logs).
fn start(binary: &Path, args: &[&str]) -> Result<ServerProcess> {
    let mut command = server_command(binary, args);
    command.env("RUST_LOG", "warn");
    ServerProcess::spawn(command)
}

/// Sequential new connections against 16 idle workers: how many accept4 calls each costs.
fn accept_calls(binary: &Path, options: &Options, worker_connections: usize) -> Result<()> {
    let per_worker = worker_connections.to_string();
    let server = start(
        binary,
        &[
            "--start-servers",
            "16",
            "--min-spare-servers",
            "16",
            "--max-spare-servers",
            "32",
            "--worker-connections",
            &per_worker,
        ],
    )?;
    // At least 16: the status request itself keeps one worker busy, and the pool may fork a
    // 17th to keep 16 spares.
    wait_for("16 ready workers", Duration::from_secs(20), || {
        let status = server.status()?;
        let ready = count(&status, "idle") + count(&status, "busy");
        Ok((ready >= 16 && count(&status, "starting") == 0).then_some(()))
    })?;
    let before = server.status()?;
    for _ in 0..options.accept_connections {
        let response = http_get(server.addr(), "/")?;
        ensure!(response.status == 200, "GET / answered {}", response.status);
    }
    let after = server.status()?;
    let connections = count(&after, "total_connections") - count(&before, "total_connections");
    let calls = count(&after, "total_accept_calls") - count(&before, "total_accept_calls");
    println!(
        "accept: 16 idle workers ({worker_connections} connection(s) each), {connections} sequential connections, \
         {calls} accept4 calls = {:.3} per connection",
        calls as f64 / connections.max(1) as f64
    );
    Ok(())
}

/// The baseline server, run as `xtask bare-hyper` from the same release build.
fn start_bare_hyper() -> Result<ServerProcess> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["bare-hyper", "--port", "0"]);
    ServerProcess::spawn(command).context("starting the bare hyper server")
}
