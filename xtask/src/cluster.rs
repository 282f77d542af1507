//! `cargo xtask test-cluster`: a real cluster under load, a worker killed in the middle, and
//! the invariants checked from outside. Prints a report; fails on any violation.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use prefork_tests::{ServerProcess, count, is_alive, server_command, status_pids, wait_for};

use crate::load::{self, LoadSpec};
use crate::{cargo_build, secs};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Build and test the release binary.
    #[arg(long)]
    release: bool,
    /// How long the load runs.
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent keep-alive client connections.
    #[arg(long, default_value_t = 12)]
    clients: usize,
}

const MIN_SPARE: u64 = 2;
const MAX_SPARE: u64 = 6;
const MAX_CLIENTS: u64 = 24;
const SETTLE: Duration = Duration::from_secs(40);

/// One line of the report.
struct Check {
    name: &'static str,
    value: String,
    ok: bool,
}

pub fn run(options: &Options) -> Result<()> {
    let profile = cargo_build(options.release, &["-p", "simplehttp-prefork", "--bin", "simplehttp-prefork"])?;
    let mut checks = Vec::new();
    let outcome = exercise(&profile.join("simplehttp-prefork"), options, &mut checks);
    print_report(options, &checks);
    outcome?;
    let failed: Vec<_> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    if !failed.is_empty() {
        bail!("violated: {}", failed.join(", "));
    }
    println!("test-cluster: all invariants hold");
    Ok(())
}

fn exercise(binary: &Path, options: &Options, checks: &mut Vec<Check>) -> Result<()> {
    let (min, max, clients) = (MIN_SPARE.to_string(), MAX_SPARE.to_string(), MAX_CLIENTS.to_string());
    let mut server = ServerProcess::spawn(server_command(
        binary,
        &["--start-servers", "4", "--min-spare-servers", &min, "--max-spare-servers", &max, "--max-clients", &clients],
    ))?;
    let spec = LoadSpec {
        addr: server.addr(),
        connections: options.clients,
        duration: options.duration,
        path: "/".to_owned(),
        keepalive: true,
    };
    let load_thread = thread::spawn(move || load::run(&spec));

    // Halfway through, SIGKILL a worker that holds a client connection.
    thread::sleep(options.duration / 2);
    let status = server.status()?;
    let victim = status["workers"]
        .as_array()
        .and_then(|ws| {
            ws.iter().find(|w| matches!(w["state"].as_str(), Some("K" | "R" | "W")) && w["requests"].as_u64() > Some(0))
        })
        .and_then(|w| w["pid"].as_u64())
        .context("no busy worker to kill under load")? as u32;
    let killed_at = Instant::now();
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL)?;
    let replaced = wait_for("the killed worker to be reaped", SETTLE, || {
        let status = server.status()?;
        Ok((!status_pids(&status).contains(&victim) && !server.children().contains(&victim))
            .then(|| killed_at.elapsed()))
    })?;

    let result = load_thread.join().map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    let unexpected: Vec<_> = result.failures.iter().filter(|f| f.worker_pid != Some(victim)).collect();
    checks.push(Check {
        name: "requests answered",
        value: format!("{} ok, {:.0} req/s, {} non-2xx", result.ok, result.requests_per_second(), result.bad_status),
        ok: result.ok > 0 && result.bad_status == 0,
    });
    checks.push(Check {
        name: "failed requests",
        value: format!(
            "{} (on the killed worker {victim}: {}; elsewhere: {}{})",
            result.failures.len(),
            result.failures.len() - unexpected.len(),
            unexpected.len(),
            unexpected.first().map(|f| format!(", first: {}", f.error)).unwrap_or_default()
        ),
        // A worker serves one connection at a time: at most its one in-flight request is lost.
        ok: unexpected.is_empty() && result.failures.len() <= 1,
    });
    checks.push(Check {
        name: "killed worker reaped",
        value: format!("pid {victim} after {}", secs(replaced)),
        ok: !is_alive(victim),
    });

    let consistent = wait_for("scoreboard processes to equal the real children", SETTLE, || {
        let status = server.status()?;
        let children = server.children();
        Ok((status_pids(&status) == children).then_some((count(&status, "processes"), children.len(), status)))
    });
    match &consistent {
        Ok((processes, children, _)) => checks.push(Check {
            name: "scoreboard = ps",
            value: format!("{processes} processes, {children} children"),
            ok: true,
        }),
        Err(e) => checks.push(Check { name: "scoreboard = ps", value: format!("{e:#}"), ok: false }),
    }
    if let Ok((_, _, status)) = &consistent {
        let accesses = count(status, "total_accesses");
        checks.push(Check {
            name: "scoreboard counted the work",
            value: format!("{accesses} accesses for {} client responses", result.ok),
            ok: accesses >= result.ok,
        });
    }

    let settled_from = Instant::now();
    let bounds = wait_for("idle workers back within the spare bounds", SETTLE, || {
        let status = server.status()?;
        // The status request itself occupies one worker.
        let idle = count(&status, "idle");
        Ok((count(&status, "busy") == 1 && (MIN_SPARE..=MAX_SPARE).contains(&idle)).then_some(status))
    });
    checks.push(match &bounds {
        Ok(status) => Check {
            name: "pool back within bounds",
            value: format!(
                "{} idle in {MIN_SPARE}..={MAX_SPARE}, {} processes, after {}",
                count(status, "idle"),
                count(status, "processes"),
                secs(settled_from.elapsed())
            ),
            ok: true,
        },
        Err(e) => Check { name: "pool back within bounds", value: format!("{e:#}"), ok: false },
    });

    let workers = server.children();
    let segment = server.segment_path();
    let stop_from = Instant::now();
    server.signal(Signal::SIGTERM)?;
    let exit = server.wait_exit(SETTLE)?;
    let gone = wait_for("every worker to exit", SETTLE, || Ok(workers.iter().all(|p| !is_alive(*p)).then_some(())));
    checks.push(Check {
        name: "graceful stop",
        value: format!("exit {exit} after {}, {} workers gone", secs(stop_from.elapsed()), workers.len()),
        ok: exit.success() && gone.is_ok(),
    });
    checks.push(Check {
        name: "nothing left behind",
        value: if segment.exists() {
            format!("{} still exists", segment.display())
        } else {
            "no segment, no process".into()
        },
        ok: !segment.exists() && gone.is_ok(),
    });
    Ok(())
}

fn print_report(options: &Options, checks: &[Check]) {
    println!();
    println!(
        "test-cluster: {} keep-alive clients for {}, pool start 4, spare {MIN_SPARE}..{MAX_SPARE}, max clients {MAX_CLIENTS}",
        options.clients,
        secs(options.duration)
    );
    println!("{:<30} {:<6} detail", "invariant", "result");
    for check in checks {
        println!("{:<30} {:<6} {}", check.name, if check.ok { "ok" } else { "FAIL" }, check.value);
    }
    println!();
}
