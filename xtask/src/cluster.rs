//! `cargo xtask test-cluster`: real clusters under load, disturbed in the ways production
//! disturbs them, checked from outside. Each scenario reports its failed-request count; the
//! task fails on any violated invariant.
//!
//! - **kill**: one busy worker SIGKILLed mid-load: at most its one in-flight request fails.
//! - **reload**: SIGHUP mid-load: a new generation takes over with no failed request.
//! - **recycle**: `--max-requests-per-child 50` under constant load: workers are replaced all
//!   along (over a hundred a second), no request fails, and no worker answers past its limit
//!   and margin.
//! - **chaos**: a busy worker SIGKILLed every 250 ms: only the requests those workers held fail.
//! - **upgrade**: USR2 mid-load: the binary on disk starts, takes the socket over, and the old
//!   server hands over and exits; no request fails, and the pid file names the new server.
//!
//! No scenario goes by the clock: each disturbs the cluster once the load is being served
//! (so many responses answered), and the load runs on (at least `--duration`) until what the
//! scenario waits for has happened and the load has been served again after it, however long
//! a slow or busy machine takes for that.

use std::path::Path;

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use prefork_scoreboard::AttachedScoreboard;
use prefork_tests::{ServerProcess, count, is_alive, only_generation, server_command, status_pids, wait_for};

use crate::load::{BackgroundLoad, LoadResult, LoadSpec};
use crate::{cargo_build, secs};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Build and test the release binary.
    #[arg(long)]
    release: bool,
    /// How long the load runs in each scenario.
    #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Concurrent keep-alive client connections.
    #[arg(long, default_value_t = 12)]
    pub(crate) clients: usize,
    /// Instead: this many nodes (2 or 3; 3 if no number is given), each a server in its own network namespace, behind
    /// HAProxy with readiness checks (`deploy/haproxy/haproxy.cfg`), through rolling restarts
    /// and reloads, a node crash and a scale-up. Needs root (namespaces) and haproxy.
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=3), num_args = 0..=1, default_missing_value = "3")]
    nodes: Option<u8>,
}

const MIN_SPARE: u64 = 2;
const MAX_SPARE: u64 = 6;
const SETTLE: Duration = Duration::from_secs(40);
/// The longest a scenario's load may run, whatever it waits for.
const LOAD_LIMIT: Duration = Duration::from_secs(180);
/// Workers the recycle scenario sees replaced, and workers the chaos scenario kills, at least.
const RECYCLED: u64 = 10;
const CHAOS_KILLS: usize = 8;

type Scenario = fn(&Path, &Options, &mut Report) -> Result<()>;

/// One line of the report.
struct Check {
    scenario: &'static str,
    name: &'static str,
    value: String,
    ok: bool,
}

/// The invariants checked, scenario by scenario.
pub(crate) struct Report(Vec<Check>);

impl Report {
    pub(crate) fn new() -> Report {
        Report(Vec::new())
    }

    pub(crate) fn check(&mut self, scenario: &'static str, name: &'static str, ok: bool, value: String) {
        self.0.push(Check { scenario, name, value, ok });
    }

    /// Prints the table under `title`, and fails if any invariant does not hold.
    pub(crate) fn conclude(&self, title: &str) -> Result<()> {
        println!();
        println!("{title}");
        println!("{:<12} {:<30} {:<6} detail", "scenario", "invariant", "result");
        for check in &self.0 {
            let result = if check.ok { "ok" } else { "FAIL" };
            println!("{:<12} {:<30} {:<6} {}", check.scenario, check.name, result, check.value);
        }
        println!();
        let failed: Vec<String> =
            self.0.iter().filter(|c| !c.ok).map(|c| format!("{}/{}", c.scenario, c.name)).collect();
        if !failed.is_empty() {
            bail!("violated: {}", failed.join(", "));
        }
        println!("test-cluster: all invariants hold");
        Ok(())
    }
}

pub fn run(options: &Options) -> Result<()> {
    let binary = cargo_build(options.release, &["-p", "simplehttp-prefork", "--bin", "simplehttp-prefork"])?
        .join("simplehttp-prefork");
    if let Some(nodes) = options.nodes {
        return crate::nodes::run(&binary, options, usize::from(nodes));
    }
    let mut report = Report::new();
    let scenarios: [(&str, Scenario); 6] = [
        ("kill", kill_one),
        ("reload", reload),
        ("recycle", recycle),
        ("chaos", chaos),
        ("reload-wc4", reload_with_several_connections_per_worker),
        ("upgrade", upgrade),
    ];
    let mut errors = Vec::new();
    for (name, scenario) in scenarios {
        if let Err(error) = scenario(&binary, options, &mut report) {
            report.check("-", "scenario ran", false, format!("{name}: {error:#}"));
            errors.push(name);
        }
    }
    let title = format!(
        "test-cluster: {} keep-alive clients for {} per scenario; pool start 4, spare {MIN_SPARE}..{MAX_SPARE}, max clients 32",
        options.clients,
        secs(options.duration)
    );
    report.conclude(&title)
}

fn start(binary: &Path, extra: &[&str]) -> Result<ServerProcess> {
    let (min, max) = (MIN_SPARE.to_string(), MAX_SPARE.to_string());
    let mut args =
        vec!["--start-servers", "4", "--min-spare-servers", &min, "--max-spare-servers", &max, "--max-clients", "32"];
    args.extend_from_slice(extra);
    ServerProcess::spawn(server_command(binary, &args))
}

fn start_load(server: &ServerProcess, options: &Options) -> Load {
    let spec = LoadSpec {
        addr: server.addr(),
        connections: options.clients,
        duration: options.duration,
        path: "/".to_owned(),
        keepalive: true,
    };
    Load(BackgroundLoad::start(spec, LOAD_LIMIT))
}

/// The scenarios' load: waits for progress within [`SETTLE`].
struct Load(BackgroundLoad);

impl Load {
    fn wait_served(&self, more: u64) -> Result<()> {
        self.0.wait_served(more, SETTLE)
    }

    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    fn finish(self) -> Result<LoadResult> {
        self.0.finish()
    }
}

/// Responses that show the load is being served: a few per client.
fn progress(options: &Options) -> u64 {
    options.clients as u64 * 20
}

/// A busy worker holding a client connection, from the status page.
fn busy_worker(server: &ServerProcess) -> Result<u32> {
    let status = server.status()?;
    status["workers"]
        .as_array()
        .and_then(|ws| {
            ws.iter()
                .filter(|w| matches!(w["state"].as_str(), Some("K" | "R" | "W")) && w["requests"].as_u64() > Some(1))
                // Not the worker answering this very status request.
                .filter(|w| !w["request"]["line"].as_str().unwrap_or_default().contains("/server-status"))
                .find_map(|w| w["pid"].as_u64())
        })
        .map(|pid| pid as u32)
        .context("no busy worker under load")
}

/// No request of the load failed (the first failure named if one did).
fn no_failed_requests(scenario: &'static str, result: &LoadResult, report: &mut Report) {
    let first = result.failures.first().map(|f| format!(", first: {}", f.error)).unwrap_or_default();
    report.check(scenario, "failed requests", result.failures.is_empty(), format!("{}{first}", result.failures.len()));
}

/// The shared checks after a scenario's load: answers, scoreboard = ps, bounds, clean stop.
fn after_load(
    scenario: &'static str,
    mut server: ServerProcess,
    result: &LoadResult,
    report: &mut Report,
) -> Result<()> {
    report.check(
        scenario,
        "requests answered",
        result.ok > 0 && result.bad_status == 0,
        format!("{} ok, {:.0} req/s, {} non-2xx", result.ok, result.requests_per_second(), result.bad_status),
    );
    let consistent = wait_for("scoreboard processes to equal the real children", SETTLE, || {
        let status = server.status()?;
        Ok((status_pids(&status) == server.children()).then_some(status))
    });
    match &consistent {
        Ok(status) => {
            report.check(scenario, "scoreboard = ps", true, format!("{} processes", count(status, "processes")));
            let accesses = count(status, "total_accesses");
            report.check(
                scenario,
                "scoreboard counted the work",
                accesses >= result.ok,
                format!("{accesses} accesses for {} client responses", result.ok),
            );
        }
        Err(e) => report.check(scenario, "scoreboard = ps", false, format!("{e:#}")),
    }
    let settled_from = Instant::now();
    let bounds = wait_for("idle workers back within the spare bounds", SETTLE, || {
        let status = server.status()?;
        // The status request itself occupies one worker (which still shows idle when it
        // serves several connections).
        let idle = count(&status, "idle");
        Ok((count(&status, "busy") <= 1 && (MIN_SPARE..=MAX_SPARE).contains(&idle)).then_some(status))
    });
    match &bounds {
        Ok(status) => report.check(
            scenario,
            "pool back within bounds",
            true,
            format!(
                "{} idle in {MIN_SPARE}..={MAX_SPARE} after {}",
                count(status, "idle"),
                secs(settled_from.elapsed())
            ),
        ),
        Err(e) => report.check(scenario, "pool back within bounds", false, format!("{e:#}")),
    }
    let workers = server.children();
    let segment = server.segment_path();
    let stop_from = Instant::now();
    server.signal(Signal::SIGTERM)?;
    let exit = server.wait_exit(SETTLE)?;
    let gone = wait_for("every worker to exit", SETTLE, || Ok(workers.iter().all(|p| !is_alive(*p)).then_some(())));
    report.check(
        scenario,
        "graceful stop, nothing left",
        exit.success() && gone.is_ok() && !segment.exists(),
        format!(
            "{exit} after {}, segment {}",
            secs(stop_from.elapsed()),
            if segment.exists() { "LEFT" } else { "removed" }
        ),
    );
    Ok(())
}

fn kill_one(binary: &Path, options: &Options, report: &mut Report) -> Result<()> {
    let server = start(binary, &[])?;
    let load = start_load(&server, options);
    load.wait_served(progress(options))?;
    let victim = wait_for("a busy worker under load", SETTLE, || busy_worker(&server).map(Some))?;
    let killed_at = Instant::now();
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL)?;
    let reaped = wait_for("the killed worker to be reaped", SETTLE, || {
        let status = server.status()?;
        Ok((!status_pids(&status).contains(&victim) && !server.children().contains(&victim))
            .then(|| killed_at.elapsed()))
    })?;
    load.wait_served(progress(options))?;
    let result = load.finish()?;
    let elsewhere = result.failures.iter().filter(|f| f.worker_pid != Some(victim)).count();
    report.check(
        "kill",
        "failed requests",
        elsewhere == 0 && result.failures.len() <= 1,
        format!(
            "{} (on the killed worker: {}, elsewhere: {elsewhere}); reaped after {}",
            result.failures.len(),
            result.failures.len() - elsewhere,
            secs(reaped)
        ),
    );
    after_load("kill", server, &result, report)
}

fn reload(binary: &Path, options: &Options, report: &mut Report) -> Result<()> {
    reload_scenario("reload", &[], binary, options, report)
}

/// The same with four connections per worker: each old worker stops accepting, serves what
/// its accept thread already took, and drains its connections.
fn reload_with_several_connections_per_worker(binary: &Path, options: &Options, report: &mut Report) -> Result<()> {
    reload_scenario("reload-wc4", &["--worker-connections", "4"], binary, options, report)
}

fn reload_scenario(
    scenario: &'static str,
    extra: &[&str],
    binary: &Path,
    options: &Options,
    report: &mut Report,
) -> Result<()> {
    let server = start(binary, extra)?;
    let old = wait_for("the first generation", SETTLE, || {
        let children = server.children();
        Ok((children.len() >= 4).then_some(children))
    })?;
    let load = start_load(&server, options);
    load.wait_served(progress(options))?;
    server.signal(Signal::SIGHUP)?;
    // Under the load: the new generation takes over, and serves it.
    let taken_over = wait_for("only generation-2 workers", SETTLE, || {
        let all_new = only_generation(&server.status()?, 2);
        Ok((all_new && server.children().iter().all(|pid| !old.contains(pid))).then_some(()))
    })
    .and_then(|()| load.wait_served(progress(options)));
    let result = load.finish()?;
    no_failed_requests(scenario, &result, report);
    report.check(
        scenario,
        "new generation took over",
        taken_over.is_ok(),
        match &taken_over {
            Ok(()) => format!("{} old workers replaced", old.len()),
            Err(e) => format!("{e:#}"),
        },
    );
    after_load(scenario, server, &result, report)
}

/// A binary upgrade under keep-alive load: USR2 to the server; the new one (the binary on
/// disk: the same build here) takes over, the old one hands its idle connections over and
/// exits. Then the new server stops gracefully, leaving nothing behind.
fn upgrade(binary: &Path, options: &Options, report: &mut Report) -> Result<()> {
    let pid_file = prefork_tests::TempPath::new("cluster-upgrade.pid");
    let server = start(binary, &["--pid-file", pid_file.as_str(), "--keepalive"])?;
    let old = server.pid();
    let named = || std::fs::read_to_string(pid_file.path()).ok().and_then(|t| t.trim().parse::<u32>().ok());
    wait_for("the pid file", SETTLE, || Ok((named() == Some(old)).then_some(())))?;
    let load = start_load(&server, options);
    load.wait_served(progress(options))?;
    server.signal(Signal::SIGUSR2)?;
    let taken_over = wait_for("the new server in the pid file, the old one gone", SETTLE, || {
        Ok(named().filter(|new| *new != old && !is_alive(old)))
    });
    let served =
        taken_over.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|_| load.wait_served(progress(options)));
    let result = load.finish()?;
    no_failed_requests("upgrade", &result, report);
    report.check(
        "upgrade",
        "new server took over",
        served.is_ok(),
        match (&taken_over, &served) {
            (Ok(new), Ok(())) => format!("parent {old} -> {new}, {} responses", result.ok),
            (Err(e), _) | (_, Err(e)) => format!("{e:#}"),
        },
    );
    let Ok(new) = taken_over else { return Ok(()) };
    let workers = prefork_tests::children_of(new);
    let segment = std::path::Path::new("/dev/shm").join(format!("simplehttp-prefork.{new}"));
    kill(Pid::from_raw(new as i32), Signal::SIGTERM)?;
    let gone = wait_for("the new server and its workers to exit", SETTLE, || {
        Ok((!is_alive(new) && workers.iter().all(|p| !is_alive(*p))).then_some(()))
    });
    report.check(
        "upgrade",
        "graceful stop, nothing left",
        gone.is_ok() && !segment.exists() && named().is_none(),
        format!(
            "segment {}, pid file {}",
            if segment.exists() { "LEFT" } else { "removed" },
            if named().is_some() { "LEFT" } else { "removed" }
        ),
    );
    Ok(())
}

fn recycle(binary: &Path, options: &Options, report: &mut Report) -> Result<()> {
    let server = start(binary, &["--max-requests-per-child", "50", "--max-requests-jitter", "10"])?;
    let forked_before = count(&server.status()?, "workers_forked");
    let scoreboard = AttachedScoreboard::open(&server.scoreboard_name())?;
    let load = start_load(&server, options);
    // Watch the pool through shared memory all along (the status page needs a worker).
    let (mut min_spare, mut min_capacity, mut most_requests, mut samples) = (u64::MAX, u64::MAX, 0u64, 0u64);
    // The pool grows to the load first: a worker for each client, and the spares besides.
    let capacity = |snapshot: &prefork_scoreboard::Snapshot| (snapshot.idle() + snapshot.busy()) as u64;
    wait_for("the pool to grow to the load and its spares", SETTLE, || {
        Ok((capacity(&scoreboard.snapshot()) >= options.clients as u64 + MIN_SPARE).then_some(()))
    })?;
    // Until enough workers have been recycled (and at least `--duration`).
    while !load.is_finished() {
        let snapshot = scoreboard.snapshot();
        // Workers able to take work: idle or holding a client, not starting, not stopping.
        min_capacity = min_capacity.min(capacity(&snapshot));
        min_spare = min_spare.min(snapshot.idle() as u64);
        most_requests = snapshot.live().map(|slot| slot.requests_child).fold(most_requests, u64::max);
        samples += 1;
        if snapshot.header.workers_forked.saturating_sub(forked_before) >= RECYCLED {
            load.0.stop();
        }
        thread::sleep(Duration::from_millis(5));
    }
    let result = load.finish()?;
    let forked = count(&server.status()?, "workers_forked").saturating_sub(forked_before);
    no_failed_requests("recycle", &result, report);
    report.check(
        "recycle",
        "workers recycled",
        forked >= RECYCLED,
        format!("{forked} forked for {} requests", result.ok),
    );
    // The limit holds whatever the load: a worker whose replacement is not ready by its limit
    // plus a tenth leaves on its own (its clients wait a moment in the listen queue, or move
    // with their connection to a sibling: no request fails, checked above). Limits are 50 to
    // 60 with the jitter, so no worker answers more than 66.
    report.check(
        "recycle",
        "no worker past its limit and margin",
        most_requests <= 66,
        format!(
            "most requests by one worker: {most_requests}; fewest workers able to serve: {min_capacity} for {} \
             clients, fewest idle: {min_spare}; {samples} samples",
            options.clients
        ),
    );
    drop(scoreboard);
    after_load("recycle", server, &result, report)
}

fn chaos(binary: &Path, options: &Options, report: &mut Report) -> Result<()> {
    let server = start(binary, &[])?;
    let load = start_load(&server, options);
    load.wait_served(progress(options))?;
    let mut killed = Vec::new();
    // Until enough workers have been killed (and at least `--duration`); every 250 ms is the
    // pace of the disturbance, not a wait for anything.
    while !load.is_finished() {
        if let Ok(victim) = busy_worker(&server)
            && kill(Pid::from_raw(victim as i32), Signal::SIGKILL).is_ok()
        {
            killed.push(victim);
        }
        if killed.len() >= CHAOS_KILLS {
            load.0.stop();
        }
        thread::sleep(Duration::from_millis(250));
    }
    let result = load.finish()?;
    report.check("chaos", "workers killed", killed.len() >= CHAOS_KILLS, format!("{}", killed.len()));
    let unexplained = result.failures.iter().filter(|f| f.worker_pid.is_some_and(|pid| !killed.contains(&pid))).count();
    report.check(
        "chaos",
        "failed requests",
        unexplained == 0 && result.failures.len() <= killed.len(),
        format!("{} for {} workers killed ({unexplained} on workers not killed)", result.failures.len(), killed.len()),
    );
    after_load("chaos", server, &result, report)
}
