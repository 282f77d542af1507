//! `simplehttp-prefork ctl`: controls a running server by its pid file (pause, resume, reload,
//! upgrade, stop, quit, one more or one fewer spare) and confirms that the change took effect
//! (from its scoreboard, its process, its pid file), or says why not.

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use simplehttp_prefork::read_pid_file;
use simplehttp_prefork::scoreboard::{AttachedScoreboard, DEFAULT_PREFIX, Snapshot, WorkerState, segment_name};

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The server's pid file (as given to `--pid-file`).
    #[arg(long)]
    pid_file: PathBuf,
    /// The scoreboard name prefix the server was started with.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    scoreboard_prefix: String,
    /// How long to wait for the change to show (a graceful stop waits for busy workers).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    action: Action,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Action {
    /// Stop taking new connections (they wait in the listen queue): the pause signal
    /// (SIGRTMIN+4).
    Pause,
    /// Take connections again: the resume signal (SIGRTMIN+5).
    Resume,
    /// A new generation of workers, the old one finishing: HUP.
    Reload,
    /// Graceful stop: TERM.
    Stop,
    /// Immediate stop: QUIT.
    Quit,
    /// One more spare at both bounds: TTIN.
    Ttin,
    /// One fewer spare at both bounds: TTOU.
    Ttou,
    /// Put the binary now on disk in service without dropping a connection: USR2 (the new
    /// server takes over once it is ready, and the pid file names it).
    Upgrade,
}

impl Action {
    fn signal(self) -> libc::c_int {
        match self {
            Action::Pause => simplehttp_prefork::scoreboard::pause_signal(),
            Action::Resume => simplehttp_prefork::scoreboard::resume_signal(),
            Action::Reload => Signal::SIGHUP as libc::c_int,
            Action::Stop => Signal::SIGTERM as libc::c_int,
            Action::Quit => Signal::SIGQUIT as libc::c_int,
            Action::Ttin => Signal::SIGTTIN as libc::c_int,
            Action::Ttou => Signal::SIGTTOU as libc::c_int,
            Action::Upgrade => Signal::SIGUSR2 as libc::c_int,
        }
    }
}

/// The process exists and has not exited (a zombie, not yet reaped by its parent, has).
fn alive(pid: u32) -> bool {
    if matches!(kill(Pid::from_raw(pid as i32), None), Err(Errno::ESRCH)) {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X"))
}

pub fn run(args: &CtlArgs) -> anyhow::Result<()> {
    let path = args.pid_file.display();
    let pid = read_pid_file(&args.pid_file)
        .with_context(|| format!("reading pid file {path}"))?
        .with_context(|| format!("pid file {path} holds no pid"))?;
    if !alive(pid) {
        bail!("no server runs under pid file {path}: process {pid} does not exist");
    }
    let name = segment_name(&args.scoreboard_prefix, pid);
    let scoreboard = AttachedScoreboard::open(&name).with_context(|| {
        format!("process {pid} (pid file {path}) has no scoreboard {name}: is it a simplehttp-prefork server?")
    })?;
    let before = scoreboard.snapshot();
    let changed_at_before = changed_at(&args.pid_file);
    // SAFETY: kill(2) with a pid and a signal number; no memory is involved.
    if unsafe { libc::kill(pid as libc::pid_t, args.action.signal()) } != 0 {
        let error = std::io::Error::last_os_error();
        bail!("signalling process {pid}: {error}");
    }
    let deadline = Instant::now() + args.timeout;
    if let Action::Upgrade = args.action {
        return wait_for_upgrade(args, pid, changed_at_before, deadline);
    }
    loop {
        let now = scoreboard.snapshot();
        if let Some(done) = took_effect(args.action, &before, &now, alive(pid)) {
            let said = done?;
            println!("{said}");
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{:?} sent to process {pid}, but it did not show within {:?}", args.action, args.timeout);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// When a file's inode last changed (a rename counts), to the nanosecond.
fn changed_at(path: &std::path::Path) -> Option<(i64, i64)> {
    std::fs::metadata(path).ok().map(|meta| (meta.ctime(), meta.ctime_nsec()))
}

/// An upgrade is done once the pid file names another live server and the old one has gone;
/// it failed once the old one took its pid file back (from `NAME.oldbin`, which it may do
/// before this looks: the file's inode change time says it moved).
fn wait_for_upgrade(
    args: &CtlArgs,
    old: u32,
    changed_at_before: Option<(i64, i64)>,
    deadline: Instant,
) -> anyhow::Result<()> {
    let oldbin = simplehttp_prefork::oldbin_path(&args.pid_file);
    let mut moved_aside = false;
    loop {
        let named = read_pid_file(&args.pid_file).ok().flatten();
        moved_aside |= oldbin.exists() || changed_at(&args.pid_file) != changed_at_before;
        match named {
            Some(new) if new != old && !alive(old) => {
                let name = segment_name(&args.scoreboard_prefix, new);
                AttachedScoreboard::open(&name)
                    .with_context(|| format!("the pid file names process {new}, which has no scoreboard {name}"))?;
                println!("upgraded: process {new} serves, {old} has handed over and exited");
                return Ok(());
            }
            Some(same) if same == old && moved_aside && !oldbin.exists() => {
                bail!("the upgrade failed: process {old} serves on (the server's log says why)");
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            bail!(
                "USR2 sent to process {old}, but no new server took over within {:?} (the server's log says why)",
                args.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the scoreboard (or the process's end) shows the action done: what to say, or why
/// it failed; `None` while it does not show yet.
fn took_effect(action: Action, before: &Snapshot, now: &Snapshot, alive: bool) -> Option<anyhow::Result<String>> {
    let spares = |s: &Snapshot| (s.header.config.min_spare_servers, s.header.config.max_spare_servers);
    // Workers past their fork handlers (a starting one reads the pause as it starts).
    let serving = || now.live().filter(|slot| slot.state != WorkerState::Starting);
    let failed = now.header.reload_failures > before.header.reload_failures;
    match action {
        Action::Pause => (now.header.paused && serving().all(|slot| !slot.accepting()))
            .then(|| Ok("paused: no worker takes a new connection (they wait in the listen queue)".into())),
        Action::Resume => (!now.header.paused && serving().all(|slot| slot.accepting()))
            .then(|| Ok("resumed: connections are taken".into())),
        Action::Reload if failed => {
            Some(Err(anyhow::anyhow!("the reload failed; the old generation serves on (the server's log says why)")))
        }
        // Done once only workers of the new generation are left (a reload whose workers
        // cannot boot goes back to the old one, and counts a failure).
        Action::Reload => {
            let new = now.header.generation > before.header.generation;
            let only_new = now.live().all(|slot| slot.generation == now.header.generation);
            (new && only_new).then(|| Ok(format!("reloaded: generation {} serves", now.header.generation)))
        }
        Action::Stop | Action::Quit => (!alive).then(|| Ok("stopped".into())),
        Action::Ttin if spares(before).0 >= before.header.config.max_clients => {
            Some(Err(anyhow::anyhow!("the spare bounds are at max_clients already: TTIN changes nothing")))
        }
        Action::Ttou if spares(before) == (1, 1) => {
            Some(Err(anyhow::anyhow!("the spare bounds are 1..1 already: TTOU changes nothing")))
        }
        Action::Ttin | Action::Ttou => (spares(now) != spares(before)).then(|| {
            let (min, max) = spares(now);
            Ok(format!("spare bounds now {min}..{max}"))
        }),
        Action::Upgrade => None, // see wait_for_upgrade
    }
}
