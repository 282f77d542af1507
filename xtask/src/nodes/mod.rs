//! `cargo xtask test-cluster --nodes N`: beyond one machine. N nodes, each a whole server (its
//! own supervisor and pool) in its own network namespace with its own address, behind HAProxy
//! with active readiness checks (`deploy/haproxy/haproxy.cfg`); load from the host through the
//! balancer, keep-alive and `Connection: close` at once; and the ways nodes come and go:
//!
//! - **rolling-restart**: each node in turn gets SIGTERM (it drains: `/readyz` fails, the
//!   balancer takes it out, then it stops gracefully) and is started again once gone;
//! - **rolling-reload**: HUP node by node, each waited for until only its new generation runs;
//! - **rolling-upgrade**: the USR2 binary upgrade, once the server has one (it has not yet);
//! - **node-crash**: a whole node's process group SIGKILLed: the balancer routes around it
//!   within its checks, and the requests that fail are at most those in flight there;
//! - **scale-up**: one more node starts and takes traffic once ready.
//!
//! Rolling restarts and reloads and the scale-up fail no request. The report has a row per
//! invariant, with the requests answered, failed, and answered per node. Nothing is left
//! behind (see `net.rs`).

mod balancer;
mod net;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use prefork_tests::{ServerProcess, TempPath, only_generation, wait_for};

use crate::cluster::{Options, Report};
use crate::load::{BackgroundLoad, LoadResult, LoadSpec};
use crate::{project_root, secs};
use balancer::{Balancer, SERVERS, ServerStat};
use net::Network;

/// Every node listens here, on its own address.
const PORT: u16 = 8080;
/// Longer than the balancer takes to see a node not ready (2 checks 200 ms apart, each within
/// its 1 s timeout). `tests/tests/deploy.rs` checks it against the config.
const DRAIN_DELAY: &str = "3s";
/// How soon the balancer must mark a crashed node down: its checks (as above) and some slack.
const ROUTE_AROUND: Duration = Duration::from_secs(2);
/// How long anything the scenarios wait for may take on a slow machine.
const SETTLE: Duration = Duration::from_secs(40);
const LOAD_LIMIT: Duration = Duration::from_secs(180);

/// One node: its address, its pid file, and its server while it runs.
struct Node {
    address: SocketAddr,
    namespace: String,
    pid_file: TempPath,
    server: Option<ServerProcess>,
}

/// The network, the nodes and the balancer of one run.
struct Cluster<'b> {
    binary: &'b Path,
    nodes: Vec<Node>,
    balancer: Balancer,
    // Dropped last: the servers and the balancer go before their network.
    _network: Network,
    _haproxy_files: [TempPath; 2],
}

pub fn run(binary: &Path, options: &Options, count: usize) -> Result<()> {
    let config = project_root().join("deploy/haproxy/haproxy.cfg");
    ensure!(config.exists(), "{} is missing", config.display());
    let (haproxy_pid, stats_socket) = (TempPath::new("haproxy.pid"), TempPath::new("haproxy.sock"));
    let network = Network::create(
        SERVERS,
        &format!(
            "[ -f {pid} ] && kill -9 $(cat {pid}); rm -f {pid} {socket};",
            pid = haproxy_pid.as_str(),
            socket = stats_socket.as_str()
        ),
    )?;
    let nodes: Vec<Node> = (0..SERVERS)
        .map(|i| {
            let net = network.node(i);
            Node {
                address: SocketAddr::new(net.address.into(), PORT),
                namespace: net.namespace.clone(),
                pid_file: TempPath::new(&format!("node{}.pid", i + 1)),
                server: None,
            }
        })
        .collect();
    let addresses: [String; SERVERS] = std::array::from_fn(|i| nodes[i].address.to_string());
    let balancer = Balancer::start(&config, stats_socket.path(), haproxy_pid.path(), &addresses)?;
    let mut cluster =
        Cluster { binary, nodes, balancer, _network: network, _haproxy_files: [haproxy_pid, stats_socket] };
    for index in 0..count {
        cluster.start_node(index)?;
    }
    for index in 0..count {
        cluster.balancer.wait_node(index, true, SETTLE)?;
    }
    let mut report = Report::new();
    type Scenario = fn(&mut Cluster<'_>, &Options, usize, &mut Report) -> Result<()>;
    let scenarios: [(&'static str, Scenario); 5] = [
        ("rolling-restart", rolling_restart),
        ("rolling-reload", rolling_reload),
        ("rolling-upgrade", rolling_upgrade),
        ("node-crash", node_crash),
        ("scale-up", scale_up),
    ];
    for (name, scenario) in scenarios {
        if let Err(error) = scenario(&mut cluster, options, count, &mut report) {
            report.check(name, "scenario ran", false, format!("{error:#}"));
        }
    }
    let title = format!(
        "test-cluster --nodes {count}: HAProxy (deploy/haproxy/haproxy.cfg) in front; {} keep-alive and {} close \
         clients through it for at least {} per scenario; nodes drain {DRAIN_DELAY} before they stop",
        options.clients,
        close_clients(options),
        secs(options.duration)
    );
    report.conclude(&title)
}

fn close_clients(options: &Options) -> usize {
    (options.clients / 3).max(1)
}

impl Cluster<'_> {
    /// Starts node `index` in its namespace, in a process group of its own (so that a crash
    /// can take the whole node at once).
    fn start_node(&mut self, index: usize) -> Result<()> {
        let node = &mut self.nodes[index];
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &node.namespace]).arg(self.binary);
        let address = node.address.ip().to_string();
        command.args(["--address", &address, "--port", &PORT.to_string()]);
        command.args(["--start-servers", "3", "--min-spare-servers", "2", "--max-spare-servers", "5"]);
        command.args(["--drain-delay", DRAIN_DELAY, "--pid-file", node.pid_file.as_str()]);
        command.process_group(0);
        let server = ServerProcess::spawn(command).with_context(|| format!("starting node{}", index + 1))?;
        node.server = Some(server);
        Ok(())
    }

    fn server(&mut self, index: usize) -> Result<&mut ServerProcess> {
        self.nodes[index].server.as_mut().with_context(|| format!("node{} is not running", index + 1))
    }

    /// Node `index`'s status document, from the `status` command (its status page answers
    /// loopback clients only, and the host is not one for the node).
    fn status(&self, index: usize) -> Result<serde_json::Value> {
        let pid_file = self.nodes[index].pid_file.as_str();
        let output = Command::new(self.binary).args(["status", "--pid-file", pid_file, "--json"]).output()?;
        ensure!(output.status.success(), "status of node{}: {}", index + 1, String::from_utf8_lossy(&output.stderr));
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// Each node's 2xx responses so far, as the balancer counted them.
    fn answered(&self) -> Result<Vec<ServerStat>> {
        self.balancer.servers()
    }
}

/// Keep-alive and close clients through the balancer.
struct Loads {
    keepalive: BackgroundLoad,
    close: BackgroundLoad,
}

impl Loads {
    fn start(cluster: &Cluster<'_>, options: &Options) -> Loads {
        let spec = |connections, keepalive| LoadSpec {
            addr: cluster.balancer.address,
            connections,
            duration: options.duration,
            path: "/".to_owned(),
            keepalive,
        };
        Loads {
            keepalive: BackgroundLoad::start(spec(options.clients, true), LOAD_LIMIT),
            close: BackgroundLoad::start(spec(close_clients(options), false), LOAD_LIMIT),
        }
    }

    /// Both loads are answered a few more times from now: the cluster serves.
    fn wait_served(&self, options: &Options) -> Result<()> {
        self.keepalive.wait_served(options.clients as u64 * 10, SETTLE)?;
        self.close.wait_served(close_clients(options) as u64 * 10, SETTLE)
    }

    fn finish(self) -> Result<LoadResult> {
        let (mut total, close) = (self.keepalive.finish()?, self.close.finish()?);
        total.ok += close.ok;
        total.bad_status += close.bad_status;
        total.failures.extend(close.failures);
        total.elapsed = total.elapsed.max(close.elapsed);
        Ok(total)
    }
}

/// The rows every scenario has: requests answered, failed (at most `allowed`), retried by the
/// balancer (none if `no_retries`: its retries would hide a node's failures), and per node.
fn load_rows(
    scenario: &'static str,
    result: &LoadResult,
    (allowed, no_retries): (u64, bool),
    before: &[ServerStat],
    after: &[ServerStat],
    report: &mut Report,
) {
    let failed = result.failures.len() as u64 + result.bad_status;
    let first = result.failures.first().map(|f| format!(", first: {}", f.error)).unwrap_or_default();
    report.check(scenario, "failed requests", failed <= allowed, format!("{failed} (allowed {allowed}){first}"));
    let per_node: Vec<String> = before
        .iter()
        .zip(after)
        .enumerate()
        .map(|(i, (b, a))| format!("node{} {}", i + 1, a.responses_2xx.saturating_sub(b.responses_2xx)))
        .collect();
    let retried: u64 =
        after.iter().zip(before).map(|(a, b)| a.retries + a.redispatches - b.retries - b.redispatches).sum();
    report.check(
        scenario,
        "requests answered",
        result.ok > 0,
        format!("{} ok, {:.0} req/s; per node: {}", result.ok, result.requests_per_second(), per_node.join(", ")),
    );
    let expected = if no_retries { "none allowed" } else { "allowed: requests to the crashed node" };
    report.check(scenario, "retried by the balancer", !no_retries || retried == 0, format!("{retried} ({expected})"));
}

fn rolling_restart(cluster: &mut Cluster<'_>, options: &Options, count: usize, report: &mut Report) -> Result<()> {
    let before = cluster.answered()?;
    let loads = Loads::start(cluster, options);
    loads.wait_served(options)?;
    let mut drained = 0;
    for index in 0..count {
        let server = cluster.server(index)?;
        server.signal(Signal::SIGTERM)?;
        // It drains first: the balancer sees it not ready and takes it out while it serves.
        cluster.balancer.wait_node(index, false, SETTLE)?;
        drained += usize::from(cluster.server(index)?.wait_exit(Duration::ZERO).is_err());
        let exit = cluster.server(index)?.wait_exit(SETTLE)?;
        ensure!(exit.success(), "node{} exited with {exit:?}", index + 1);
        cluster.start_node(index)?;
        cluster.balancer.wait_node(index, true, SETTLE)?;
        loads.wait_served(options)?;
    }
    let result = loads.finish()?;
    load_rows("rolling-restart", &result, (0, true), &before, &cluster.answered()?, report);
    report.check(
        "rolling-restart",
        "out of rotation before it quit",
        drained == count,
        format!("{drained} of {count} nodes still running (draining) when the balancer took them out"),
    );
    Ok(())
}

fn rolling_reload(cluster: &mut Cluster<'_>, options: &Options, count: usize, report: &mut Report) -> Result<()> {
    let before = cluster.answered()?;
    let loads = Loads::start(cluster, options);
    loads.wait_served(options)?;
    for index in 0..count {
        let generation = cluster.status(index)?["server"]["generation"].as_u64().unwrap_or(0);
        cluster.server(index)?.signal(Signal::SIGHUP)?;
        wait_for(&format!("node{} to run generation {} only", index + 1, generation + 1), SETTLE, || {
            Ok(only_generation(&cluster.status(index)?, generation + 1).then_some(()))
        })?;
        loads.wait_served(options)?;
    }
    let result = loads.finish()?;
    load_rows("rolling-reload", &result, (0, true), &before, &cluster.answered()?, report);
    Ok(())
}

fn rolling_upgrade(_: &mut Cluster<'_>, _: &Options, _: usize, report: &mut Report) -> Result<()> {
    // Needs the binary upgrade (USR2: the running parent starts the binary now on disk with
    // the listening socket), which the server does not have yet.
    report.check("rolling-upgrade", "skipped", true, "the server has no binary upgrade (USR2) yet".to_owned());
    Ok(())
}

/// SIGKILL of the last node's whole process group under load: the balancer marks it down
/// within its checks; what fails is at most what was in flight there (at most one request per
/// worker of that node: classic workers); the others serve on. The node is then started again.
fn node_crash(cluster: &mut Cluster<'_>, options: &Options, count: usize, report: &mut Report) -> Result<()> {
    let index = count - 1;
    let before = cluster.answered()?;
    let loads = Loads::start(cluster, options);
    loads.wait_served(options)?;
    let workers = cluster.status(index)?["processes"].as_u64().unwrap_or(0);
    let group = cluster.server(index)?.pid();
    kill(Pid::from_raw(-(group as i32)), Signal::SIGKILL).context("killing the node's process group")?;
    let killed_at = Instant::now();
    cluster.balancer.wait_node(index, false, SETTLE)?;
    let routed_around = killed_at.elapsed();
    loads.wait_served(options)?;
    let result = loads.finish()?;
    // (A pool can grow between the count and the kill, by a spare or two: counted in.)
    let in_flight = workers + 2;
    load_rows("node-crash", &result, (in_flight, false), &before, &cluster.answered()?, report);
    report.check(
        "node-crash",
        "balancer routed around it",
        routed_around < ROUTE_AROUND,
        format!("node{} marked down {} after the kill (within {})", index + 1, secs(routed_around), secs(ROUTE_AROUND)),
    );
    // Reap the killed parent, then bring the node back for the next scenario.
    let _ = cluster.server(index)?.wait_exit(SETTLE);
    cluster.nodes[index].server = None;
    cluster.start_node(index)?;
    cluster.balancer.wait_node(index, true, SETTLE)?;
    Ok(())
}

/// One more node joins under load, and takes traffic once the balancer sees it ready.
fn scale_up(cluster: &mut Cluster<'_>, options: &Options, count: usize, report: &mut Report) -> Result<()> {
    let index = count;
    if index >= SERVERS {
        bail!("no spare server line in the balancer's config for a node {}", index + 1);
    }
    let before = cluster.answered()?;
    let loads = Loads::start(cluster, options);
    loads.wait_served(options)?;
    cluster.start_node(index)?;
    cluster.balancer.wait_node(index, true, SETTLE)?;
    let start = cluster.answered()?[index].responses_2xx;
    wait_for(&format!("node{} to take traffic", index + 1), SETTLE, || {
        Ok((cluster.answered()?[index].responses_2xx > start).then_some(()))
    })?;
    loads.wait_served(options)?;
    let result = loads.finish()?;
    load_rows("scale-up", &result, (0, true), &before, &cluster.answered()?, report);
    Ok(())
}
