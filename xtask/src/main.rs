//! Project automation, run as `cargo xtask <task>` (see matklad's cargo-xtask).
//!
//! - `test-cluster`: start a real cluster, load it, kill a worker under load, check the
//!   pool's invariants, stop it, and report. Exits non-zero on any violated invariant. With
//!   `--nodes N`: N nodes in network namespaces behind HAProxy, through rolling restarts and
//!   reloads, a node crash and a scale-up.
//! - `bench`: release-build the server, compare it with a bare hyper server under the same
//!   load generator in one run, measure accept calls per connection, and run the scoreboard's
//!   criterion benchmarks. `bench --peers` adds the comparison with the ceiling of classic
//!   prefork, bare hyper, nginx and Apache prefork under wrk, written to `docs/BENCH.md`;
//!   `bench --slow-clients` a normal client's latency under slowhttptest floods.
//! - `soak`: a chaos soak: one cluster under keep-alive and close load, recycling every 50
//!   requests, disturbed at random (seeded) by SIGKILLed workers, HUP, TTIN/TTOU, slow clients
//!   and malformed requests, its invariants checked every second. Exits non-zero on any.
//! - `status-screenshot`: render the HTML status page of a busy server in headless Chromium.

mod bare;
mod bench;
mod cluster;
mod load;
mod nodes;
mod peers;
mod screenshot;
mod slow_bench;
mod soak;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Start a cluster, load it, kill a worker under load, check invariants, stop it.
    TestCluster(cluster::Options),
    /// Compare keep-alive and close throughput with a bare hyper server; count accepts;
    /// with `--peers`, also with nginx, Apache prefork and the ceiling under wrk.
    Bench(bench::Options),
    /// A chaos soak: load, recycling and random disturbances, invariants checked every second.
    Soak(soak::Options),
    /// Render the HTML status page of a busy server in headless Chromium to a PNG.
    StatusScreenshot(screenshot::Options),
    /// (internal) The measuring half of `bench`, run from a release build.
    #[command(hide = true)]
    BenchRun(bench::Options),
    /// (internal) A bare multi-threaded hyper server, the baseline of `bench`.
    #[command(hide = true)]
    BareHyper {
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// (internal) The ceiling of classic prefork for `bench --peers`: forked processes in
    /// blocking accept/read/write with a canned reply.
    #[command(hide = true)]
    Ceiling(peers::CeilingOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::TestCluster(options) => cluster::run(&options),
        Task::Bench(options) => bench::run(&options),
        Task::BenchRun(options) => bench::measure(&options),
        Task::Soak(options) => soak::run(&options),
        Task::StatusScreenshot(options) => screenshot::run(&options),
        Task::BareHyper { port } => bare::serve(port),
        Task::Ceiling(options) => peers::serve_ceiling(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            println!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// The cargo target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| project_root().join("target"))
}

/// Runs `cargo build` with `args` in the workspace and returns `target/<profile>`.
fn cargo_build(release: bool, args: &[&str]) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command.current_dir(project_root()).arg("build").args(args);
    if release {
        command.arg("--release");
    }
    let status = command.status().context("running cargo build")?;
    ensure!(status.success(), "cargo build {args:?} failed: {status}");
    Ok(target_dir().join(if release { "release" } else { "debug" }))
}

/// Formats a duration in seconds with millisecond precision.
fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
