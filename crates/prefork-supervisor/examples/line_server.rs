//! A preforked server for a protocol that is not HTTP, built on `prefork-supervisor` and
//! `prefork-scoreboard` alone: one command per line, one answer per line.
//!
//! ```text
//! PING            -> PONG
//! ECHO <text>     -> <text>
//! WHO             -> pid <pid> slot <slot> generation <generation>
//! SLEEP <ms>      -> SLEPT <ms>      (blocks this worker, as a slow request would)
//! QUIT            -> BYE             (and the connection closes)
//! anything else   -> ERR <why>
//! ```
//!
//! Everything a preforked server needs comes from the two crates: spare workers kept between
//! bounds, recycling after `--max-requests-per-child` commands (jittered, with a replacement
//! asked for early), graceful stop on SIGTERM (the command in hand is answered), HUP reload (a
//! new generation), TTIN/TTOU, and every worker's state in the scoreboard, which
//! `simplehttp-prefork status --pid-file F --scoreboard-prefix line-prefork` shows like any
//! other. The worker is classic prefork: one connection at a time per process.
//!
//! ```text
//! cargo run -p prefork-supervisor --example line_server -- --listen 127.0.0.1:7000
//! printf 'PING\nWHO\nQUIT\n' | nc 127.0.0.1 7000
//! ```

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use prefork_scoreboard::{RecycleLimits, RequestInfo, SlotWriter, WorkerState};
use prefork_supervisor::{
    PoolConfig, RecycleConfig, StopSignal, Supervisor, SupervisorConfig, WorkerContext, WorkerExit, stop_requested,
};

/// A command line longer than this is refused (and its connection closed).
const MAX_LINE_BYTES: usize = 4096;
/// An open connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(about = "A preforked line-protocol server on prefork-supervisor alone")]
struct Args {
    /// Address to listen on (port 0: any free port; the one chosen is printed).
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 2)]
    start_servers: usize,
    #[arg(long, default_value_t = 1)]
    min_spare_servers: usize,
    #[arg(long, default_value_t = 4)]
    max_spare_servers: usize,
    #[arg(long, default_value_t = 16)]
    max_clients: usize,
    /// A worker is replaced after this many commands (none: never).
    #[arg(long)]
    max_requests_per_child: Option<u64>,
    /// How long workers get to finish on a graceful stop, e.g. "5s".
    #[arg(long, default_value = "10s")]
    graceful_timeout: humantime::Duration,
    /// Write the parent's pid here (for `simplehttp-prefork status --pid-file`).
    #[arg(long)]
    pid_file: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    // Bound once, by the parent, before any fork: every worker accepts on this one socket.
    let listener = TcpListener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    // Non-blocking: when several idle workers wake for one connection, the losers get
    // WouldBlock instead of sleeping in accept(2), deaf to SIGTERM.
    listener.set_nonblocking(true)?;
    println!("listening on tcp://{}", listener.local_addr()?);
    if let Some(path) = &args.pid_file {
        std::fs::write(path, format!("{}\n", std::process::id())).with_context(|| format!("{}", path.display()))?;
    }
    let config = SupervisorConfig {
        pool: PoolConfig {
            start_servers: args.start_servers,
            min_spare_servers: args.min_spare_servers,
            max_spare_servers: args.max_spare_servers,
            max_clients: args.max_clients,
            ..PoolConfig::default()
        },
        recycle: RecycleConfig { max_requests_per_child: args.max_requests_per_child, ..RecycleConfig::default() },
        graceful_timeout: args.graceful_timeout.into(),
        scoreboard_prefix: "line-prefork".to_owned(),
        ..SupervisorConfig::default()
    };
    let supervisor = Supervisor::new(config, |ctx| run_worker(ctx, &listener))?;
    let report = supervisor.watch_listen_queue(listener.as_fd()).run();
    if let Some(path) = &args.pid_file {
        let _ = std::fs::remove_file(path);
    }
    let report = report?;
    println!("stopped: {} workers forked, graceful: {}", report.workers_forked, report.graceful);
    Ok(())
}

/// One worker process, from after the fork to its exit.
fn run_worker(ctx: WorkerContext, listener: &TcpListener) -> WorkerExit {
    let stop = match StopSignal::install() {
        Ok(stop) => stop,
        Err(error) => return WorkerExit::BootFailed(format!("installing the SIGTERM handler: {error}")),
    };
    let mut worker = LineWorker::new(&ctx);
    ctx.slot.set_state(WorkerState::Idle);
    loop {
        if stop_requested() || worker.must_leave() {
            ctx.slot.set_state(WorkerState::IdleKill);
            return WorkerExit::Finished;
        }
        // Wait for a connection or the stop request; wake each second to check the lifetime.
        let mut ready =
            [PollFd::new(listener.as_fd(), PollFlags::POLLIN), PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
        match poll(&mut ready, PollTimeout::from(1000u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return WorkerExit::Failed(format!("poll: {errno}")),
        }
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            // A sibling took it, or the client left while queued.
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionAborted => continue,
            Err(error) => {
                tracing::warn!(%error, "accept failed; pausing 100 ms");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // Leaving idle: ring the parent if the pool just ran short of spares.
        if ctx.slot.set_state(WorkerState::KeepAlive) {
            ctx.doorbell.ring();
        }
        ctx.slot.record_connection();
        worker.connections += 1;
        if let Err(error) = worker.serve(stream, peer, &stop) {
            tracing::debug!(%error, %peer, "connection ended with an error");
        }
        ctx.slot.set_state(WorkerState::Idle);
    }
}

/// A worker's own counts, checked against its recycling limits.
struct LineWorker<'c> {
    slot: &'c SlotWriter<'static>,
    ctx: &'c WorkerContext,
    /// Where to ask for a replacement, and where to leave whether or not it has come.
    early: RecycleLimits,
    hard: RecycleLimits,
    born: Instant,
    requests: u64,
    connections: u64,
    replacement_asked: bool,
}

impl<'c> LineWorker<'c> {
    fn new(ctx: &'c WorkerContext) -> LineWorker<'c> {
        LineWorker {
            slot: &ctx.slot,
            ctx,
            early: ctx.limits.early(),
            hard: ctx.limits.hard(),
            born: Instant::now(),
            requests: 0,
            connections: 0,
            replacement_asked: false,
        }
    }

    /// Past the hard limit: leave now (the supervisor's replacement, asked for at the early
    /// limit, takes over; until it is ready, connections wait in the backlog).
    fn must_leave(&mut self) -> bool {
        let (age, rss) = (self.born.elapsed(), self.slot.rss_bytes());
        if !self.replacement_asked && self.early.reached(self.requests, self.connections, age, rss).is_some() {
            self.slot.request_retirement();
            self.replacement_asked = true;
        }
        self.hard.reached(self.requests, self.connections, age, rss).is_some()
    }

    /// Answers the connection's commands until it closes, quits, or the worker must go.
    fn serve(&mut self, stream: TcpStream, peer: SocketAddr, stop: &StopSignal) -> std::io::Result<()> {
        stream.set_nonblocking(false)?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        let client = peer.ip().to_string();
        let mut line = Vec::new();
        loop {
            // Between commands: wait for the next one, the stop request, or the idle timeout.
            self.slot.set_state(WorkerState::KeepAlive);
            if reader.buffer().is_empty() && !wait_readable(&writer, stop)? {
                break;
            }
            self.slot.set_state(WorkerState::Reading);
            line.clear();
            let read = (&mut reader).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut line)?;
            if read == 0 {
                break; // the client closed
            }
            if !line.ends_with(b"\n") {
                writer.write_all(b"ERR line too long\n")?;
                break;
            }
            let command = String::from_utf8_lossy(&line).trim_end().to_owned();
            self.slot.set_state(if stop_requested() { WorkerState::Graceful } else { WorkerState::Writing });
            let info =
                RequestInfo { line: command.as_bytes(), client: client.as_bytes(), protocol: b"LINE", vhost: b"" };
            let start = self.slot.begin_request(&info);
            self.slot.set_oldest_in_flight(Some(start));
            let (answer, close) = self.answer(&command);
            let sent = writer.write_all(answer.as_bytes());
            self.slot.set_oldest_in_flight(None);
            self.slot.finish_request(start, answer.len() as u64);
            self.requests += 1;
            sent?;
            if close || stop_requested() || self.must_leave() {
                break;
            }
        }
        self.slot.set_state(WorkerState::Closing);
        Ok(())
    }

    fn answer(&self, command: &str) -> (String, bool) {
        let (verb, rest) = command.split_once(' ').unwrap_or((command, ""));
        match verb.to_ascii_uppercase().as_str() {
            "PING" => ("PONG\n".to_owned(), false),
            "ECHO" => (format!("{rest}\n"), false),
            "WHO" => {
                let slot = self.ctx.slot_index;
                (format!("pid {} slot {slot} generation {}\n", std::process::id(), self.ctx.generation), false)
            }
            "SLEEP" => match rest.trim().parse::<u64>() {
                Ok(millis) if millis <= 60_000 => {
                    std::thread::sleep(Duration::from_millis(millis));
                    (format!("SLEPT {millis}\n"), false)
                }
                _ => ("ERR SLEEP takes milliseconds, at most 60000\n".to_owned(), false),
            },
            "QUIT" => ("BYE\n".to_owned(), true),
            _ => (format!("ERR unknown command {verb:?}\n"), false),
        }
    }
}

/// Waits until the connection has bytes (true), or it is idle too long or the worker is told
/// to stop (false).
fn wait_readable(stream: &TcpStream, stop: &StopSignal) -> std::io::Result<bool> {
    let deadline = Instant::now() + IDLE_TIMEOUT;
    loop {
        if stop_requested() {
            return Ok(false);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut ready = [PollFd::new(stream.as_fd(), PollFlags::POLLIN), PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut ready, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(errno.into()),
        }
        if ready[0].any().unwrap_or(false) {
            return Ok(true);
        }
    }
}
