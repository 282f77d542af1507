//! `simplehttp-prefork status`: attaches read-only to a running server's scoreboard and prints
//! the same summary and table as the status page, or its JSON, once or every second.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use simplehttp_prefork::read_pid_file;
use simplehttp_prefork::scoreboard::{AttachedScoreboard, DEFAULT_PREFIX, StatusReport, segment_name};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The server's pid file (as given to `--pid-file`).
    #[arg(long, conflicts_with = "scoreboard", required_unless_present = "scoreboard")]
    pid_file: Option<PathBuf>,
    /// The scoreboard segment's name (`/simplehttp-prefork.<pid>`, see `/dev/shm`).
    #[arg(long)]
    scoreboard: Option<String>,
    /// The scoreboard name prefix the server was started with.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    scoreboard_prefix: String,
    /// Print the JSON document instead of the table.
    #[arg(long)]
    json: bool,
    /// Redraw every second until the server stops (or Ctrl-C).
    #[arg(long)]
    watch: bool,
}

pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let name = match (&args.scoreboard, &args.pid_file) {
        (Some(name), _) => name.clone(),
        (None, Some(path)) => {
            let pid = read_pid_file(path)
                .with_context(|| format!("reading pid file {}", path.display()))?
                .with_context(|| format!("pid file {} holds no pid", path.display()))?;
            segment_name(&args.scoreboard_prefix, pid)
        }
        (None, None) => bail!("give --pid-file or --scoreboard"),
    };
    let scoreboard = AttachedScoreboard::open(&name).with_context(|| {
        format!("cannot attach to scoreboard {name}: is the server running (and started by this user)?")
    })?;
    if !scoreboard.is_live().unwrap_or(false) {
        tracing::warn!(%name, "no running server holds this scoreboard: it is what a dead server left behind");
    }
    let mut stdout = std::io::stdout().lock();
    loop {
        let report = StatusReport::new(&scoreboard.snapshot(), scoreboard.name());
        let text = if args.json { report.to_json() + "\n" } else { report.to_text() };
        if args.watch {
            // Home the cursor and clear the screen, then draw.
            write!(stdout, "\x1b[H\x1b[2J{text}")?;
        } else {
            write!(stdout, "{text}")?;
        }
        stdout.flush()?;
        if !args.watch {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
        if !scoreboard.is_live().unwrap_or(false) {
            writeln!(stdout, "the server has stopped")?;
            return Ok(());
        }
    }
}
