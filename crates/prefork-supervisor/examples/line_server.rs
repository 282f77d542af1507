//! A preforked server for a protocol that is not HTTP, built on `prefork-supervisor` and
//! `prefork-scoreboard` alone: one command per line, one answer per line.
//!
//! ```text
//! PING            -> PONG
//! ECHO <text>     -> <text>
//! WHO             -> pid <pid> slot <slot> generation <generation>
//! SLEEP <ms>      -> SLEPT <ms>      (blocks this worker, as a slow request would)
//! HOLD <path>     -> RELEASED        (blocks this worker until the file <path> exists)
//! QUIT            -> BYE             (and the connection closes)
//! anything else   -> ERR <why>
//! ```
//!
//! Everything a preforked server needs comes from the two crates: spare workers kept between
//! bounds, recycling after `--max-requests-per-child` commands (a replacement asked for early,
//! the worker gone at the limit and its margin), graceful stop on SIGTERM (the command in hand
//! is answered), HUP reload (a new generation), TTIN/TTOU, and every worker's state in the
//! scoreboard, which `simplehttp-prefork status --pid-file F --scoreboard-prefix line-prefork`
//! shows like any other. The worker is classic prefork: one connection at a time per process.
//! A connection closes when its worker stops or recycles, between two answers; the protocol
//! has no way to say so beforehand, so a client reconnects then (as HTTP keep-alive clients
//! do when a server closes an idle connection).
//!
//! ```text
//! cargo run -p prefork-supervisor --example line_server -- --listen 127.0.0.1:7000
//! printf 'PING\nWHO\nQUIT\n' | nc 127.0.0.1 7000
//! ```

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use prefork_scoreboard::{RequestInfo, WorkerState};
use prefork_supervisor::{
    PoolConfig, RecycleConfig, Recycling, StopSignal, Supervisor, SupervisorConfig, WorkerContext, WorkerExit,
    stop_requested,
};

/// A command line longer than this is refused (and its connection closed).
const MAX_LINE_BYTES: usize = 4096;

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
    /// A connection that sends nothing (or stalls within a command, or reads no answer) for
    /// this long is closed, e.g. "10s".
    #[arg(long, default_value = "10s")]
    idle_timeout: humantime::Duration,
    /// How long workers get to finish on a graceful stop, e.g. "5s".
    #[arg(long, default_value = "10s")]
    graceful_timeout: humantime::Duration,
    /// Write the parent's pid here once the scoreboard exists (for `simplehttp-prefork status
    /// --pid-file`); removed at exit.
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
    let address = listener.local_addr()?;
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
    let idle_timeout: Duration = args.idle_timeout.into();
    let pid_file = args.pid_file.as_deref();
    let supervisor = Supervisor::new(config, |ctx| run_worker(ctx, &listener, idle_timeout))?
        .watch_listen_queue(listener.as_fd())
        .on_started(|scoreboard, _board| {
            // Once the scoreboard exists, so that whoever reads the pid file finds it.
            if let Some(path) = pid_file
                && let Err(error) = write_pid_file(path)
            {
                tracing::error!(%error, path = %path.display(), "could not write the pid file");
            }
            tracing::info!(scoreboard, "scoreboard ready");
            println!("listening on tcp://{address}");
        });
    let report = supervisor.run();
    if let Some(path) = pid_file {
        remove_pid_file(path);
    }
    let report = report?;
    tracing::info!(workers_forked = report.workers_forked, graceful = report.graceful, "stopped");
    Ok(())
}

/// Written whole or not at all (a reader never sees half a pid).
fn write_pid_file(path: &Path) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, format!("{}\n", std::process::id()))?;
    std::fs::rename(&partial, path)
}

/// Removed only if it still names this process (another server may have taken it over).
fn remove_pid_file(path: &Path) {
    let ours = std::fs::read_to_string(path).is_ok_and(|text| text.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

/// One worker process, from after the fork to its exit.
fn run_worker(ctx: WorkerContext, listener: &TcpListener, idle_timeout: Duration) -> WorkerExit {
    let stop = match StopSignal::install() {
        Ok(stop) => stop,
        Err(error) => return WorkerExit::BootFailed(format!("installing the SIGTERM handler: {error}")),
    };
    let mut worker = LineWorker { ctx: &ctx, stop: &stop, idle_timeout, requests: 0, connections: 0 };
    ctx.become_ready();
    loop {
        if stop_requested() || worker.must_leave() {
            ctx.set_state(WorkerState::IdleKill);
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
        // Leaving idle (the doorbell rings if the pool just ran short of spares).
        ctx.set_state(WorkerState::KeepAlive);
        ctx.slot.record_connection();
        worker.connections += 1;
        if let Err(error) = worker.serve(stream, peer) {
            tracing::debug!(%error, %peer, "connection ended with an error");
        }
        ctx.set_state(WorkerState::Idle);
    }
}

/// A worker's own counts, checked against its recycling limits.
struct LineWorker<'w> {
    ctx: &'w WorkerContext,
    stop: &'w StopSignal,
    idle_timeout: Duration,
    requests: u64,
    connections: u64,
}

impl LineWorker<'_> {
    /// Past the hard limit: leave (the replacement asked for at the early limit takes over;
    /// until it is ready, connections wait in the backlog).
    fn must_leave(&self) -> bool {
        matches!(self.ctx.recycling(self.requests, self.connections), Recycling::Leave(_))
    }

    /// Answers the connection's commands until it closes, quits, or the worker must go.
    fn serve(&mut self, stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
        stream.set_nonblocking(false)?;
        // A client that stalls within a command, or reads no answer, cannot hold the worker
        // longer than this (SIGTERM does not interrupt a blocking read: SA_RESTART).
        stream.set_read_timeout(Some(self.idle_timeout))?;
        stream.set_write_timeout(Some(self.idle_timeout))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        let client = peer.to_string();
        let mut line = Vec::new();
        let slot = &self.ctx.slot;
        for first in std::iter::once(true).chain(std::iter::repeat(false)) {
            // Between commands: wait for the next one, the stop request, or the idle timeout.
            // A connection just taken gets its first command answered even if the stop came
            // meanwhile: nobody else will answer it.
            self.ctx.set_state(WorkerState::KeepAlive);
            if reader.buffer().is_empty() && !self.wait_readable(&writer, first)? {
                break;
            }
            self.ctx.set_state(WorkerState::Reading);
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
            self.ctx.set_state(if stop_requested() { WorkerState::Graceful } else { WorkerState::Writing });
            let info =
                RequestInfo { line: command.as_bytes(), client: client.as_bytes(), protocol: b"LINE", vhost: b"" };
            let start = slot.begin_request(&info);
            slot.set_oldest_in_flight(Some(start));
            let (answer, close) = self.answer(&command);
            let sent = writer.write_all(answer.as_bytes());
            slot.set_oldest_in_flight(None);
            slot.finish_request(start, answer.len() as u64);
            self.requests += 1;
            sent?;
            if close || stop_requested() || self.must_leave() {
                break;
            }
        }
        self.ctx.set_state(WorkerState::Closing);
        Ok(())
    }

    fn answer(&self, command: &str) -> (String, bool) {
        let (verb, rest) = command.split_once(' ').unwrap_or((command, ""));
        match verb.to_ascii_uppercase().as_str() {
            "PING" => ("PONG\n".to_owned(), false),
            "ECHO" => (format!("{rest}\n"), false),
            "WHO" => {
                let (slot, generation) = (self.ctx.slot_index, self.ctx.generation);
                (format!("pid {} slot {slot} generation {generation}\n", std::process::id()), false)
            }
            "SLEEP" => match rest.trim().parse::<u64>() {
                Ok(millis) if millis <= 60_000 => {
                    std::thread::sleep(Duration::from_millis(millis));
                    (format!("SLEPT {millis}\n"), false)
                }
                _ => ("ERR SLEEP takes milliseconds, at most 60000\n".to_owned(), false),
            },
            "HOLD" if !rest.is_empty() => {
                self.hold_until_exists(Path::new(rest.trim()));
                ("RELEASED\n".to_owned(), false)
            }
            "QUIT" => ("BYE\n".to_owned(), true),
            _ => (format!("ERR unknown command {verb:?}\n"), false),
        }
    }

    /// A command that runs until someone else says (the file appears), at most a minute: a
    /// request in hand for as long as a test needs. Shows `G` once the stop request came.
    fn hold_until_exists(&self, path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !path.exists() && Instant::now() < deadline {
            if stop_requested() {
                self.ctx.set_state(WorkerState::Graceful);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the connection has bytes (true), or it is idle too long, or (but for its
    /// first command) the worker is told to stop (false).
    fn wait_readable(&self, stream: &TcpStream, first: bool) -> std::io::Result<bool> {
        let deadline = Instant::now() + self.idle_timeout;
        loop {
            if stop_requested() && !first {
                return Ok(false);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let mut ready = vec![PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
            if !first {
                ready.push(PollFd::new(self.stop.as_fd(), PollFlags::POLLIN));
            }
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
}
