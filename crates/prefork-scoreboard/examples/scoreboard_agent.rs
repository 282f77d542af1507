//! A monitoring agent outside the pool: it attaches read-only to a running server's scoreboard,
//! found by the server's pid file, and prints what it reads, once or every interval.
//!
//! It cannot harm the pool: [`AttachedScoreboard`] maps the segment with `PROT_READ` only (a
//! write would fault in this process, not corrupt the server) and offers no writing method at
//! all, and it takes no lock a worker could wait on. Any server built on these crates can be
//! watched: `simplehttp-prefork` (prefix `simplehttp-prefork`), or `prefork-supervisor`'s
//! `line_server` example (prefix `line-prefork`).
//!
//! ```text
//! cargo run -p prefork-scoreboard --example scoreboard_agent -- --pid-file /run/server.pid
//! idle 3 busy 1 starting 0 stopping 0 requests 1520 scoreboard __K_............
//! cargo run -p prefork-scoreboard --example scoreboard_agent -- --pid-file F --format openmetrics --count 1
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use prefork_scoreboard::{AttachedScoreboard, DEFAULT_PREFIX, StatusReport, WorkerState, segment_name};

#[derive(Debug, Parser)]
#[command(about = "Reads a running preforked server's scoreboard, read-only")]
struct Args {
    /// The server's pid file.
    #[arg(long)]
    pid_file: PathBuf,
    /// The scoreboard name prefix the server was started with.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
    /// Time between two readings, e.g. "1s".
    #[arg(long, default_value = "1s")]
    interval: humantime::Duration,
    /// Stop after this many readings (none: until the server stops).
    #[arg(long)]
    count: Option<u64>,
    #[arg(long, value_enum, default_value_t = Format::Line)]
    format: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// One summary line per reading.
    Line,
    /// The OpenMetrics exposition, as a Prometheus exporter sidecar would serve it.
    Openmetrics,
    /// The status document as JSON.
    Json,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.pid_file).with_context(|| format!("{}", args.pid_file.display()))?;
    let pid: u32 = text.trim().parse().with_context(|| format!("{} holds no pid", args.pid_file.display()))?;
    let name = segment_name(&args.prefix, pid);
    let scoreboard = AttachedScoreboard::open(&name).with_context(|| format!("attaching to {name}"))?;
    let mut readings = 0;
    loop {
        let snapshot = scoreboard.snapshot();
        let report = StatusReport::new(&snapshot, scoreboard.name());
        match args.format {
            Format::Line => {
                println!(
                    "idle {} busy {} starting {} stopping {} requests {} scoreboard {}",
                    snapshot.idle(),
                    snapshot.busy(),
                    snapshot.count(WorkerState::Starting),
                    snapshot.stopping(),
                    snapshot.totals().requests,
                    snapshot.scoreboard_string()
                );
            }
            Format::Openmetrics => print!("{}", report.to_openmetrics()),
            Format::Json => println!("{}", report.to_json()),
        }
        readings += 1;
        if args.count.is_some_and(|count| readings >= count) || !scoreboard.is_live().unwrap_or(false) {
            return Ok(());
        }
        std::thread::sleep(Duration::from(args.interval));
    }
}
