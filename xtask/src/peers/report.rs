//! The report of `bench --peers`: `docs/BENCH.md` (machine and versions, the table of best
//! rounds, ratios within the run against the targets of issue 11, system calls per request,
//! parent wake-ups, idle worker memory, every round, and the exact command lines) and its
//! chart, overwritten by each run.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result};

use super::chart::{self, Panel, human};
use super::loadgen::{self, H2LOAD, WRK};
use super::probes::STRACE;
use super::servers::{APACHE, NGINX, Peer};
use super::{POLLS, Run, Scenario, USS_REQUESTS, mib};

/// The chart's file name, next to the report.
const CHART: &str = "bench.svg";

/// A ratio of two servers in the same scenario, with the issue's target where it set one.
struct Ratio {
    ours: Peer,
    theirs: Peer,
    targets: &'static [(Scenario, f64)],
}

const RATIOS: &[Ratio] = &[
    Ratio {
        ours: Peer::Classic,
        theirs: Peer::Ceiling,
        targets: &[(Scenario::KeepAlive, 0.90), (Scenario::Close, 0.95)],
    },
    Ratio { ours: Peer::WorkerConnections, theirs: Peer::Nginx, targets: &[(Scenario::KeepAlive, 1.0)] },
    Ratio {
        ours: Peer::WorkerConnections,
        theirs: Peer::BareHyper,
        targets: &[(Scenario::KeepAlive, 0.9), (Scenario::Close, 1.0)],
    },
    Ratio { ours: Peer::Classic, theirs: Peer::Apache, targets: &[(Scenario::KeepAlive, 2.0), (Scenario::Close, 2.0)] },
    Ratio {
        ours: Peer::WorkerConnections,
        theirs: Peer::Apache,
        targets: &[(Scenario::KeepAlive, 2.0), (Scenario::Close, 2.0)],
    },
    Ratio { ours: Peer::Classic, theirs: Peer::Nginx, targets: &[] },
    Ratio { ours: Peer::Classic, theirs: Peer::BareHyper, targets: &[] },
];

/// Writes the report to `path` and the chart next to it.
pub fn write(run: &Run, path: &Path) -> Result<()> {
    let dir = path.parent().context("report path has no directory")?;
    std::fs::create_dir_all(dir)?;
    let panels: Vec<Panel> = run
        .scenarios
        .iter()
        .map(|scenario| Panel {
            title: scenario.title(&run.options).replace('`', ""),
            bars: Peer::ALL
                .into_iter()
                .filter_map(|peer| Some((peer, run.cells.get(&(*scenario, peer))?.best()?)))
                .collect(),
        })
        .filter(|panel| !panel.bars.is_empty())
        .collect();
    chart::draw(
        &dir.join(CHART),
        &format!("simplehttp-prefork and its peers, best of {} rounds (higher is better)", run.common.rounds),
        &panels,
    )?;
    std::fs::write(path, markdown(run)?)?;
    Ok(())
}

fn markdown(run: &Run) -> Result<String> {
    let mut md = String::new();
    let when = humantime::format_rfc3339_seconds(run.started);
    writeln!(md, "# Benchmarks: simplehttp-prefork beside its peers\n")?;
    writeln!(
        md,
        "Written by `cargo xtask bench --peers` on {when}, and overwritten by each run. Every server ran \
         in the same run under the same load generator, in {} alternating rounds; each cell is the best \
         round. Absolute figures on this 2-core machine drift by about 30% from run to run (and more while \
         other builds run), so only ratios within one run mean anything. What was changed to get here, \
         step by step, and what each step did to these figures: [PERFORMANCE.md](PERFORMANCE.md).\n",
        run.common.rounds
    )?;
    writeln!(md, "![Requests per second of each server in each scenario]({CHART})\n")?;
    machine(&mut md)?;
    throughput(&mut md, run)?;
    ratios(&mut md, run)?;
    probes(&mut md, run)?;
    rounds(&mut md, run)?;
    commands(&mut md, run)?;
    if !run.notes.is_empty() {
        writeln!(md, "## Notes\n")?;
        for note in &run.notes {
            writeln!(md, "- {note}")?;
        }
        writeln!(md)?;
    }
    Ok(md)
}

fn machine(md: &mut String) -> Result<()> {
    let output = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_owned()))
    });
    let memory = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let kib: u64 = m.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.split_whitespace().next()?.parse().ok()?;
        Some(format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0))
    });
    let root = crate::project_root();
    let root = root.to_str().unwrap_or(".");
    let commit = output("git", &["-C", root, "rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = output("git", &["-C", root, "status", "--porcelain", "--", "crates"]).is_some();
    let unknown = || "unknown".to_owned();
    let missing = |program: &str| format!("not installed ({program})");
    let version = |program: &str, flag: &str| {
        if loadgen::installed(program) || Path::new(program).exists() {
            loadgen::version(program, flag).unwrap_or_else(unknown)
        } else {
            missing(program)
        }
    };
    writeln!(md, "## Machine and versions\n")?;
    writeln!(md, "| | |\n|---|---|")?;
    writeln!(
        md,
        "| machine | {} cores (`nproc`), Linux {} (`uname -r`), {}, {} |",
        output("nproc", &[]).unwrap_or_else(unknown),
        output("uname", &["-r"]).unwrap_or_else(unknown),
        cpu.unwrap_or_else(unknown),
        memory.unwrap_or_else(unknown)
    )?;
    writeln!(
        md,
        "| simplehttp-prefork | commit {commit}{}, release build (`target/release/simplehttp-prefork`) |",
        if dirty { " with uncommitted changes in `crates/`" } else { "" }
    )?;
    writeln!(
        md,
        "| hyper (bare hyper, and under simplehttp-prefork) | {} |",
        lock_version("hyper").unwrap_or_else(unknown)
    )?;
    writeln!(md, "| nginx | {} |", version(NGINX, "-v"))?;
    writeln!(md, "| Apache | {}, `mpm_prefork` |", version(APACHE, "-v"))?;
    writeln!(md, "| load: wrk | {} |", version(WRK, "-v").split(" Copyright").next().unwrap_or_default())?;
    writeln!(md, "| load: h2load | {} |", version(H2LOAD, "--version"))?;
    writeln!(md, "| counts: strace | {} |", version(STRACE, "-V"))?;
    writeln!(md, "| rustc | {} |\n", output("rustc", &["-V"]).unwrap_or_else(unknown))?;
    Ok(())
}

/// The version of `package` in the workspace's Cargo.lock.
fn lock_version(package: &str) -> Option<String> {
    let lock = std::fs::read_to_string(crate::project_root().join("Cargo.lock")).ok()?;
    let needle = format!("name = \"{package}\"\nversion = \"");
    let at = lock.find(&needle)? + needle.len();
    lock[at..].split('"').next().map(str::to_owned)
}

fn throughput(md: &mut String, run: &Run) -> Result<()> {
    writeln!(md, "## Throughput (best of {} rounds)\n", run.common.rounds)?;
    write!(md, "| server |")?;
    for scenario in &run.scenarios {
        write!(md, " {} |", scenario.title(&run.options))?;
    }
    write!(md, "\n|---|")?;
    for _ in &run.scenarios {
        write!(md, "---|")?;
    }
    writeln!(md)?;
    for peer in Peer::ALL {
        write!(md, "| {} |", peer.label())?;
        for scenario in &run.scenarios {
            let text = match run.cells.get(&(*scenario, peer)) {
                None => "not run".to_owned(),
                Some(cell) => match (cell.best(), &cell.not_applicable) {
                    (Some(best), _) => {
                        let errors: u64 = cell.rounds.iter().map(|m| m.errors).sum();
                        if errors > 0 { format!("{} ({errors} errors)", human(best)) } else { human(best) }
                    }
                    (None, Some(reason)) => format!("n/a: {reason}"),
                    (None, None) if !cell.failures.is_empty() => "failed (see notes)".to_owned(),
                    (None, None) => "not run".to_owned(),
                },
            };
            write!(md, " {text} |")?;
        }
        writeln!(md)?;
    }
    writeln!(
        md,
        "\nThe static peers serve a 12-byte file, the ceiling a canned 12-byte reply; bare hyper and \
         simplehttp-prefork answer `/` with a greeting of about 70 bytes. Errors are wrk's socket errors and \
         timeouts plus non-2xx answers, summed over the rounds. The blocking scenario waits up to 10 s for a \
         response; classic simplehttp-prefork may grow to `--max-clients 64` there, the ceiling keeps 40. \
         TLS: every request is a new connection and a full handshake (TLS 1.3, ECDSA P-256): wrk resumes a \
         session whenever the server lets it, so nginx runs with `ssl_session_tickets off` and \
         `ssl_session_cache off`; simplehttp-prefork keeps rustls' default per-process session cache, \
         which a reconnection rarely hits (it lands on another worker). wrk's side of a handshake costs \
         about as much CPU as the server's, on the same 2 cores.\n"
    )?;
    Ok(())
}

fn ratios(md: &mut String, run: &Run) -> Result<()> {
    writeln!(md, "## Ratios within this run, and the targets of issue 11\n")?;
    write!(md, "| ratio |")?;
    for scenario in &run.scenarios {
        write!(md, " {} |", scenario.short())?;
    }
    write!(md, "\n|---|")?;
    for _ in &run.scenarios {
        write!(md, "---|")?;
    }
    writeln!(md)?;
    let best = |scenario: Scenario, peer: Peer| run.cells.get(&(scenario, peer)).and_then(|c| c.best());
    for ratio in RATIOS {
        write!(md, "| {} / {} |", ratio.ours.short(), ratio.theirs.short())?;
        for scenario in &run.scenarios {
            let target = ratio.targets.iter().find(|(s, _)| s == scenario).map(|(_, t)| *t);
            let text = match (best(*scenario, ratio.ours), best(*scenario, ratio.theirs)) {
                (Some(ours), Some(theirs)) if theirs > 0.0 => {
                    let value = ours / theirs;
                    match target {
                        Some(t) => format!("{value:.2}× (target ≥ {t:.2}×{})", if value >= t { " ✓" } else { " ✗" }),
                        None => format!("{value:.2}×"),
                    }
                }
                _ => match target {
                    Some(t) => format!("– (target ≥ {t:.2}×)"),
                    None => "–".to_owned(),
                },
            };
            write!(md, " {text} |")?;
        }
        writeln!(md)?;
    }
    writeln!(md)?;
    Ok(())
}

fn probes(md: &mut String, run: &Run) -> Result<()> {
    writeln!(md, "## Per-request system calls, parent wake-ups, idle worker memory\n")?;
    if let Some(why) = &run.probes {
        writeln!(md, "{why}.\n")?;
        return Ok(());
    }
    let peers = [Peer::Classic, Peer::WorkerConnections, Peer::Ceiling];
    writeln!(
        md,
        "`strace -c -f` attached to every worker (every thread) during a {}-second wrk run with {} connections \
         (right after a two-second keep-alive run that grows the pool to its size under load; a count during \
         which a worker was forked, and so not traced, is made again), calls divided by the requests \
         wrk completed; the parent's `poll` calls counted with `strace -c` on the supervisor alone during a \
         {}-second run. strace slows the traced processes: these are counts, not timings.\n",
        run.options.probe_duration.as_secs(),
        run.common.connections,
        run.common.duration.as_secs()
    )?;
    write!(md, "| measure |")?;
    for peer in peers {
        write!(md, " {} |", peer.short())?;
    }
    writeln!(md, " target (classic) |\n|---|---|---|---|---|")?;
    let rows: [(&str, Scenario, bool, &str); 4] = [
        ("system calls per keep-alive request (workers)", Scenario::KeepAlive, false, "≤ 3"),
        ("system calls per `Connection: close` request (workers)", Scenario::Close, false, "≤ 8"),
        ("parent wake-ups per second (`poll`), keep-alive load", Scenario::KeepAlive, true, "≤ 10"),
        ("parent wake-ups per second (`poll`), `Connection: close` load", Scenario::Close, true, "≤ 10"),
    ];
    for (name, scenario, parent, target) in rows {
        write!(md, "| {name} |")?;
        for peer in peers {
            let counts = if parent { &run.parent_syscalls } else { &run.worker_syscalls };
            let text = match counts.get(&(peer, scenario)) {
                Some(Ok(counted)) if parent => format!("{:.1}", counted.per_second(&POLLS)),
                Some(Ok(counted)) => format!("{:.2}", counted.per_request()),
                Some(Err(_)) => "failed (see below)".to_owned(),
                None if parent && peer == Peer::Ceiling => "n/a (its parent only reaps)".to_owned(),
                None => "–".to_owned(),
            };
            write!(md, " {text} |")?;
        }
        writeln!(md, " {target} |")?;
    }
    writeln!(md, "\nWhich calls, per request (workers) or in all (parent):\n")?;
    for (peer, scenario) in peers.iter().flat_map(|p| [(*p, Scenario::KeepAlive), (*p, Scenario::Close)]) {
        for (whose, counts) in [("workers", &run.worker_syscalls), ("parent", &run.parent_syscalls)] {
            match counts.get(&(peer, scenario)) {
                Some(Ok(counted)) if whose == "workers" => {
                    let untraced = if counted.untraced > 0 {
                        format!(
                            " (**{} workers forked during the count were not traced: undercounted**)",
                            counted.untraced
                        )
                    } else {
                        String::new()
                    };
                    writeln!(
                        md,
                        "- {} {}, {whose}, {} requests: {}{untraced}; `{}`",
                        peer.short(),
                        scenario.short(),
                        counted.load.requests,
                        counted.breakdown(),
                        counted.command
                    )?
                }
                Some(Ok(counted)) => {
                    let calls: Vec<String> = counted
                        .calls
                        .iter()
                        .map(|(name, (n, _))| format!("`{name}` {:.1}/s", *n as f64 / counted.elapsed.as_secs_f64()))
                        .collect();
                    writeln!(
                        md,
                        "- {} {}, {whose}: {}; `{}`",
                        peer.short(),
                        scenario.short(),
                        calls.join(", "),
                        counted.command
                    )?
                }
                Some(Err(error)) => writeln!(md, "- {} {}, {whose}: failed: {error}", peer.short(), scenario.short())?,
                None => {}
            }
        }
    }
    writeln!(
        md,
        "\nIdle worker memory (USS: `Private_Clean` + `Private_Dirty` of `/proc/<pid>/smaps_rollup`) after one \
         keep-alive connection made {USS_REQUESTS} requests and closed (so one worker served them all); target \
         for simplehttp-prefork ≤ 1 MiB:\n"
    )?;
    writeln!(
        md,
        "| server | worker that served the connection (largest) | median worker | workers |\n|---|---|---|---|"
    )?;
    for peer in Peer::ALL {
        match run.uss.get(&peer) {
            Some(Ok(uss)) => writeln!(
                md,
                "| {} | {:.2} MiB | {:.2} MiB | {}{} |",
                peer.short(),
                mib(uss.busiest),
                mib(uss.median),
                uss.workers,
                if uss.requests < USS_REQUESTS { format!(" (only {} requests)", uss.requests) } else { String::new() }
            )?,
            Some(Err(error)) => writeln!(md, "| {} | failed: {error} | | |", peer.short())?,
            None => writeln!(md, "| {} | not measured | | |", peer.short())?,
        }
    }
    if let Some(command) = run.uss.values().find_map(|u| u.as_ref().ok().map(|u| u.command.clone())) {
        writeln!(
            md,
            "
The connection: `{command}` (the script stops wrk after {USS_REQUESTS} responses)."
        )?;
    }
    writeln!(md)?;
    Ok(())
}

fn rounds(md: &mut String, run: &Run) -> Result<()> {
    writeln!(md, "## Every round\n")?;
    writeln!(md, "| scenario | server | req/s by round | requests | errors | mean latency | p99 latency |")?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    for ((scenario, peer), cell) in &run.cells {
        if cell.rounds.is_empty() && cell.failures.is_empty() {
            continue;
        }
        let rates: Vec<String> = cell.rounds.iter().map(|m| format!("{:.0}", m.requests_per_second)).collect();
        let requests: u64 = cell.rounds.iter().map(|m| m.requests).sum();
        let errors: u64 = cell.rounds.iter().map(|m| m.errors).sum();
        let latency = |f: fn(&loadgen::Measured) -> Option<std::time::Duration>| {
            let all: Vec<String> =
                cell.rounds.iter().filter_map(f).map(|d| format!("{:.2} ms", d.as_secs_f64() * 1e3)).collect();
            if all.is_empty() { "–".to_owned() } else { all.join(", ") }
        };
        let failed =
            if cell.failures.is_empty() { String::new() } else { format!(" ({} failed)", cell.failures.len()) };
        writeln!(
            md,
            "| {} | {} | {}{failed} | {requests} | {errors} | {} | {} |",
            scenario.short(),
            peer.short(),
            rates.join(", "),
            latency(|m| m.latency_mean),
            latency(|m| m.latency_p99)
        )?;
    }
    for ((scenario, peer), cell) in &run.cells {
        for failure in &cell.failures {
            writeln!(md, "\n{}, {}: {failure}", scenario.short(), peer.short())?;
        }
    }
    writeln!(md)?;
    Ok(())
}

fn commands(md: &mut String, run: &Run) -> Result<()> {
    writeln!(md, "## How it was run\n")?;
    writeln!(
        md,
        "`cargo xtask bench --peers` (`--duration {}s --connections {} --rounds {}`; `--scenarios`, \
         `--wrk-threads`, `--block-connections`, `--block-time`, `--h2-streams`, `--probe-duration` and \
         `--no-probes` change the rest). Ports are picked at each run.\n",
        run.common.duration.as_secs(),
        run.common.connections,
        run.common.rounds
    )?;
    writeln!(md, "Load, per scenario and server:\n")?;
    for ((scenario, peer), line) in &run.loads {
        writeln!(md, "- {}, {}: `{line}`", scenario.short(), peer.short())?;
    }
    writeln!(md, "\nServers:\n")?;
    let names = |scenarios: &[Scenario]| scenarios.iter().map(|s| s.short()).collect::<Vec<_>>().join(", ");
    for started in &run.servers {
        writeln!(md, "- {}, {}: `{}`", names(&started.scenarios), started.peer.short(), started.command)?;
    }
    writeln!(
        md,
        "\nThe configuration files, written to a temporary directory for each start (for TLS, nginx's \
         `listen` has `ssl` and the `ssl_certificate`/`ssl_certificate_key` of the same self-signed ECDSA \
         P-256 certificate simplehttp-prefork gets; for HTTP/2, `listen` has `http2`):\n"
    )?;
    let mut shown = Vec::new();
    for started in run.servers.iter().filter(|s| s.config.is_some()) {
        if shown.contains(&started.peer) {
            continue;
        }
        shown.push(started.peer);
        writeln!(
            md,
            "<details><summary>{} configuration ({})</summary>\n\n```\n{}```\n</details>\n",
            started.peer.short(),
            names(&started.scenarios),
            started.config.as_deref().unwrap_or_default()
        )?;
    }
    Ok(())
}
