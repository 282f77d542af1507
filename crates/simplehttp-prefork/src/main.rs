//! The `simplehttp-prefork` command: runs a preforked demo server on built-in defaults, or
//! (`status`) shows a running server's scoreboard without going through HTTP.

mod config_file;
mod ctl_command;
mod demo;
mod status_command;

use std::ffi::OsString;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use bytesize::ByteSize;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use ipnet::IpNet;
use simplehttp_prefork::http_worker::WorkerConfig;
use simplehttp_prefork::log_file::LogFile;
use simplehttp_prefork::supervisor::{PoolConfig, SupervisorConfig};
use simplehttp_prefork::{AccessLogFormat, Reloaded, Server, SpawnRamp};

/// A preforking HTTP server: one listening socket, a pool of worker processes kept between
/// a minimum and a maximum of idle ones, a scoreboard in shared memory.
///
/// Built-in routes: `/` says hello and names the worker; with `--demo`, `/sleep/<ms>` keeps a
/// worker busy (async), `/block/<ms>` blocks it (at most 60000 ms) and `/leak/<MiB>` grows
/// it; `/server-status` shows the scoreboard (HTML, `?json`, `?auto`,
/// `?openmetrics`, `?text`). Signals: TERM/INT graceful stop, QUIT immediate stop, HUP reload
/// workers (reading the `--config` file again), TTIN/TTOU raise/lower the spare bounds, USR1 reopen the log file, USR2 upgrade to
/// the binary now on disk without downtime. Logs go to
/// stderr (or `--log-file`); set RUST_LOG (default `info`). Durations take units (`500ms`,
/// `30s`, `1h`), sizes too (`64MiB`).
#[derive(Debug, Parser)]
#[command(name = "simplehttp-prefork", version, args_conflicts_with_subcommands = true, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a running server's scoreboard (read-only, works even when every worker is busy).
    Status(status_command::StatusArgs),
    /// Control a running server by its pid file, and confirm from its scoreboard that it
    /// took effect: pause, resume, reload, stop, quit, ttin, ttou, upgrade.
    Ctl(ctl_command::CtlArgs),
    /// Check a `--config` file as the server would at start, and print every option's
    /// effective value and where it came from (the file or the default).
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Options from this TOML file (keys are the options' names in snake_case, values as
    /// written here: "5s", "64MiB"); the command line's win. See `check-config`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (IPv4 or IPv6, e.g. ::1).
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Listen on this unix domain socket instead of TCP.
    #[arg(long, value_name = "PATH")]
    unix_socket: Option<PathBuf>,
    /// Serve TLS with this private key (PEM); needs --ssl-cert.
    #[arg(long, value_name = "FILE", requires = "ssl_cert")]
    ssl_key: Option<PathBuf>,
    /// The certificate, optionally followed by its chain (PEM); needs --ssl-key.
    #[arg(long, value_name = "FILE", requires = "ssl_key")]
    ssl_cert: Option<PathBuf>,
    /// Intermediate CA certificates sent after the chain (PEM).
    #[arg(long, value_name = "FILE", requires = "ssl_key")]
    ssl_intermediate_ca: Option<PathBuf>,
    /// Accept HTTP/2 with prior knowledge on cleartext (over TLS it is negotiated anyway).
    #[arg(long)]
    http2: bool,
    /// Also serve the demo routes `/sleep/<ms>`, `/block/<ms>` and `/leak/<MiB>`, which let any
    /// client keep a worker busy or grow its memory: for trying the server out, never in
    /// production.
    #[arg(long)]
    demo: bool,
    /// Connections one worker serves at once (1: classic prefork).
    #[arg(long, default_value_t = worker().worker_connections)]
    worker_connections: usize,
    /// Host name for absolute request URIs (default: this machine's).
    #[arg(long)]
    hostname: Option<String>,
    /// Workers forked at start.
    #[arg(long, default_value_t = pool().start_servers)]
    start_servers: usize,
    /// Fork more workers when fewer than this are idle.
    #[arg(long, default_value_t = pool().min_spare_servers)]
    min_spare_servers: usize,
    /// Retire workers when more than this are idle.
    #[arg(long, default_value_t = pool().max_spare_servers)]
    max_spare_servers: usize,
    /// Never more worker processes than this.
    #[arg(long, default_value_t = pool().max_clients)]
    max_clients: usize,
    /// Replace a worker after it answered this many requests (default: never).
    #[arg(long)]
    max_requests_per_child: Option<u64>,
    /// Replace a worker after it accepted this many connections (default: never).
    #[arg(long)]
    max_connections_per_child: Option<u64>,
    /// Up to this many more requests/connections per worker, at random, so workers started
    /// together are not replaced together.
    #[arg(long, default_value_t = supervisor().recycle.max_requests_jitter)]
    max_requests_jitter: u64,
    /// Replace a worker after it has lived this long (e.g. 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_worker_lifetime: Option<Duration>,
    /// Up to this much longer per worker, at random.
    #[arg(long, default_value = duration_text(supervisor().recycle.max_worker_lifetime_jitter), value_parser = humantime::parse_duration)]
    max_worker_lifetime_jitter: Duration,
    /// Replace a worker once its resident memory reaches this (e.g. 256MiB).
    #[arg(long)]
    max_worker_rss: Option<ByteSize>,
    /// Up to this much more per worker, at random.
    #[arg(long, default_value = size_text(supervisor().recycle.max_worker_rss_jitter))]
    max_worker_rss_jitter: ByteSize,
    /// At most this many workers are being replaced at once.
    #[arg(long, default_value_t = pool().max_recycling)]
    max_recycling: usize,
    /// Most workers forked in one maintenance round.
    #[arg(long, default_value_t = pool().max_spawn_rate)]
    max_spawn_rate: usize,
    /// How the fork batch grows while spares are short: the whole deficit at once, or
    /// doubling each round like Apache (whole rate) or php-fpm (capped at the deficit).
    #[arg(long, value_enum, default_value_t = Ramp::from(pool().spawn_ramp))]
    spawn_ramp: Ramp,
    /// At most one excess idle worker is retired per interval, once the surplus lasted that
    /// long (e.g. 1s, 500ms).
    #[arg(long, default_value = duration_text(pool().idle_retire_interval), value_parser = humantime::parse_duration)]
    idle_retire_interval: Duration,
    /// A request running longer than this is ended: an async handler's at once (503, or the
    /// connection closed if its response had begun), a blocking handler's by killing its
    /// worker after --request-timeout-grace.
    #[arg(long, value_parser = humantime::parse_duration)]
    request_timeout: Option<Duration>,
    /// How long after --request-timeout a worker still running the request is SIGKILLed.
    #[arg(long, default_value = duration_text(pool().request_timeout_grace), value_parser = humantime::parse_duration)]
    request_timeout_grace: Duration,
    /// First delay before forking again after a worker failed to boot (doubles per failure).
    #[arg(long, alias = "boot-backoff", default_value = duration_text(pool().boot_backoff_initial), value_parser = humantime::parse_duration)]
    boot_backoff_initial: Duration,
    /// Longest such delay, and the interval between probes once forking is halted.
    #[arg(long, default_value = duration_text(pool().boot_backoff_max), value_parser = humantime::parse_duration)]
    boot_backoff_max: Duration,
    /// Halt forking after this many boot failures in a row (0: never).
    #[arg(long, default_value_t = pool().max_boot_failures)]
    max_boot_failures: u32,
    /// Abandon a reload (SIGHUP) after this many new workers fail to boot in a row: the old
    /// generation keeps serving.
    #[arg(long, default_value_t = pool().max_reload_boot_failures, value_parser = clap::value_parser!(u32).range(1..))]
    max_reload_boot_failures: u32,
    /// Keep HTTP/1.1 connections open between requests (the default).
    #[arg(long, overrides_with = "no_keepalive")]
    keepalive: bool,
    /// Close every connection after its response (SimpleHTTP's default).
    #[arg(long, overrides_with = "keepalive")]
    no_keepalive: bool,
    /// Idle keep-alive connections, clients slow to send headers (slowloris) and unfinished
    /// TLS handshakes are closed after this (one timer: --header-read-timeout is the same).
    #[arg(long, alias = "header-read-timeout", default_value = duration_text(worker().keepalive_timeout), value_parser = humantime::parse_duration)]
    keepalive_timeout: Duration,
    /// Longest request line; longer gets 414.
    #[arg(long, default_value = size_text(worker().max_request_line))]
    max_request_line: ByteSize,
    /// Largest request head; larger gets 431.
    #[arg(long, default_value = size_text(worker().max_header_size))]
    max_header_size: ByteSize,
    /// Most request headers; more gets 431.
    #[arg(long, default_value_t = worker().max_headers)]
    max_headers: usize,
    /// Largest request body; larger gets 413.
    #[arg(long, default_value = size_text(worker().max_body_size))]
    max_body_size: ByteSize,
    /// A request body not received within this gets 408.
    #[arg(long, default_value = duration_text(worker().body_read_timeout), value_parser = humantime::parse_duration)]
    body_read_timeout: Duration,
    /// A request body slower than this per second (after the keep-alive timeout's allowance)
    /// gets 408; 0B: no minimum.
    #[arg(long, default_value = size_text(worker().body_min_rate))]
    body_min_rate: ByteSize,
    /// Connections a classic worker holds between requests (sending their request, or idle on
    /// keep-alive) before it closes the one held longest.
    #[arg(long, default_value_t = worker().max_parked)]
    max_parked: usize,
    /// Wake workers for new connections at once, not when their first bytes arrive
    /// (TCP_DEFER_ACCEPT is on by default).
    #[arg(long)]
    no_defer_accept: bool,
    /// An async handler that has not answered within this gets 503.
    #[arg(long, value_parser = humantime::parse_duration)]
    handler_timeout: Option<Duration>,
    /// Log every request (tracing target `access`) in this format.
    #[arg(long, value_enum)]
    access_log: Option<AccessLog>,
    /// On TERM/INT, busy workers get this long to finish before they are killed.
    #[arg(long, default_value = duration_text(supervisor().graceful_timeout), value_parser = humantime::parse_duration)]
    graceful_timeout: Duration,
    /// Requests taking longer than this are counted and logged as slow (e.g. 2s).
    #[arg(long, value_parser = humantime::parse_duration)]
    slow_request_threshold: Option<Duration>,
    /// Path of the status page.
    #[arg(long, default_value = "/server-status")]
    status_path: String,
    /// Do not serve a status page.
    #[arg(long)]
    no_status: bool,
    /// Path of the liveness probe (200 while the supervisor can fork, 503 once forking has
    /// halted); "off" switches it off.
    #[arg(long, default_value = "/healthz")]
    health_path: String,
    /// Path of the readiness probe (200 once a generation is ready, 503 while starting or
    /// draining); "off" switches it off.
    #[arg(long, default_value = "/readyz")]
    ready_path: String,
    /// On TERM/INT, first drain for this long (the readiness probe fails, everything is still
    /// served) so that load balancers stop sending traffic; then stop gracefully.
    #[arg(long, default_value = duration_text(supervisor().drain_delay), value_parser = humantime::parse_duration)]
    drain_delay: Duration,
    /// Client networks allowed to read the status page (repeatable; default loopback only).
    #[arg(long = "status-allow", value_name = "CIDR")]
    status_allow: Vec<IpNet>,
    /// Write the supervisor's pid here while running (removed at exit).
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Append logs to this file instead of stderr; SIGUSR1 reopens it (after rotation).
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Log lines as text or as JSON objects (one per line); either way each says the process
    /// (supervisor or worker: pid, slot, generation).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Run the workers as this user (a name or a uid), as Apache's `User`: the supervisor,
    /// started as root, binds the port and keeps root to fork; each worker switches before it
    /// runs anything else.
    #[arg(long)]
    user: Option<String>,
    /// Run the workers with this group (a name or a gid; default: the user's group).
    #[arg(long)]
    group: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum AccessLog {
    Common,
    Combined,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Ramp {
    Deficit,
    Apache,
    PhpFpm,
}

impl From<SpawnRamp> for Ramp {
    fn from(ramp: SpawnRamp) -> Ramp {
        match ramp {
            SpawnRamp::Deficit => Ramp::Deficit,
            SpawnRamp::Doubling { cap_at_deficit: false } => Ramp::Apache,
            SpawnRamp::Doubling { cap_at_deficit: true } => Ramp::PhpFpm,
        }
    }
}

impl From<Ramp> for SpawnRamp {
    fn from(ramp: Ramp) -> SpawnRamp {
        match ramp {
            Ramp::Deficit => SpawnRamp::Deficit,
            Ramp::Apache => SpawnRamp::Doubling { cap_at_deficit: false },
            Ramp::PhpFpm => SpawnRamp::Doubling { cap_at_deficit: true },
        }
    }
}

// The options' defaults are the library's: written once, in its config structs. (The command
// differs from the library on purpose in a few places, each written here: it listens on port
// 8080, keeps connections alive, and serves the status page and the probes.)
fn pool() -> PoolConfig {
    PoolConfig::default()
}

fn supervisor() -> SupervisorConfig {
    SupervisorConfig::default()
}

fn worker() -> WorkerConfig {
    WorkerConfig::default()
}

/// A default duration as the command line writes it (`250ms`, `30s`).
fn duration_text(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// A default size as the command line writes it, exactly: in the largest binary unit that
/// divides it (`64KiB`, `8190B`).
fn size_text(bytes: impl TryInto<u64>) -> String {
    let bytes: u64 = bytes.try_into().unwrap_or(u64::MAX);
    let units = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    match units.iter().find(|(_, unit)| bytes != 0 && bytes.is_multiple_of(*unit)) {
        Some((name, unit)) => format!("{}{name}", bytes / unit),
        None => format!("{bytes}B"),
    }
}

fn main() -> ExitCode {
    let argv = match config_file::expand(std::env::args_os().collect(), &Cli::command()) {
        Ok(argv) => argv,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(argv);
    // HUP reads the file again from the same command line.
    let command_line: Vec<OsString> = std::env::args_os().collect();
    let format = cli.serve.log_format;
    let log_file = cli.serve.log_file.as_ref().map(|path| (path, LogFile::open(path)));
    match log_file {
        Some((_, Ok(file))) => init_logging(format, file, false),
        other => {
            init_logging(format, std::io::stderr, std::io::IsTerminal::is_terminal(&std::io::stderr()));
            if let Some((path, Err(error))) = other {
                tracing::error!(path = %path.display(), %error, "cannot open the log file");
                return ExitCode::FAILURE;
            }
        }
    }
    // The server's lines, its last ones and errors included, say which process logged them.
    let span = match cli.command {
        None => tracing::info_span!("supervisor", pid = std::process::id()),
        Some(_) => tracing::Span::none(),
    };
    let _entered = span.enter();
    let result = match cli.command {
        Some(Command::Status(args)) => status_command::run(&args),
        Some(Command::Ctl(args)) => ctl_command::run(&args),
        Some(Command::CheckConfig { file }) => check_config(&file),
        None => serve(cli.serve, command_line),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to `writer` at RUST_LOG's levels (default `info`), as text or one JSON object per line
/// (with the `supervisor` or `worker` span's pid, slot and generation in `span` and `spans`).
fn init_logging<W>(format: LogFormat, writer: W, ansi: bool)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).init(),
    }
}

/// `check-config FILE`: the options, then the settings together (as `build` checks them),
/// then the effective values.
fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let command = Cli::command();
    let matches = config_file::check(file, &command)?;
    let cli = Cli::from_arg_matches(&matches)?;
    build_server(cli.serve, None).with_context(|| format!("config file {}", file.display()))?;
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", config_file::describe(&matches, &command))?;
    writeln!(stdout, "# {}: ok", file.display())?;
    Ok(())
}

fn serve(args: ServeArgs, command_line: Vec<OsString>) -> anyhow::Result<()> {
    let reread = args.config.is_some().then_some(command_line);
    let server = build_server(args, reread)?;
    let bound = server.bind()?;
    // Printed once the scoreboard exists, just before the workers are forked: connections
    // made from now on queue in the listen backlog until the first worker takes them.
    let report = bound.run_with(|started| {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening on {}", started.url());
        let _ = stdout.flush();
    })?;
    tracing::info!(
        graceful = report.graceful,
        handed_over = report.handed_over,
        workers_forked = report.workers_forked,
        "server stopped"
    );
    Ok(())
}

/// The server the options describe, checked, not yet bound; given its command line, a server
/// that reads its `--config` file again on HUP.
fn build_server(args: ServeArgs, reread: Option<Vec<OsString>>) -> anyhow::Result<Server> {
    let config = args.config.clone();
    let logging = (args.log_file.clone(), args.log_format);
    // USR2 starts the binary at this path again (a new build installed over this one), with
    // these arguments: taken now, before anything could replace the file.
    let (program, program_args) = simplehttp_prefork::this_command()?;
    let size = |bytes: ByteSize| usize::try_from(bytes.as_u64()).unwrap_or(usize::MAX);
    let mut builder = Server::builder()
        .address(args.address)
        .port(args.port)
        .handlers(demo::routes(args.demo))
        .http2(args.http2)
        .worker_connections(args.worker_connections)
        .max_request_line(size(args.max_request_line))
        .max_header_size(size(args.max_header_size))
        .max_headers(args.max_headers)
        .max_body_size(size(args.max_body_size))
        .body_read_timeout(args.body_read_timeout)
        .body_min_rate(args.body_min_rate.as_u64())
        .max_parked(args.max_parked)
        .defer_accept(!args.no_defer_accept)
        .handler_timeout(args.handler_timeout)
        .access_log(args.access_log.map(|format| match format {
            AccessLog::Common => AccessLogFormat::Common,
            AccessLog::Combined => AccessLogFormat::Combined,
        }))
        .start_servers(args.start_servers)
        .min_spare_servers(args.min_spare_servers)
        .max_spare_servers(args.max_spare_servers)
        .max_clients(args.max_clients)
        .max_requests_per_child(args.max_requests_per_child)
        .max_connections_per_child(args.max_connections_per_child)
        .max_requests_jitter(args.max_requests_jitter)
        .max_worker_lifetime(args.max_worker_lifetime)
        .max_worker_lifetime_jitter(args.max_worker_lifetime_jitter)
        .max_worker_rss(args.max_worker_rss.map(|b| b.as_u64()))
        .max_worker_rss_jitter(args.max_worker_rss_jitter.as_u64())
        .max_recycling(args.max_recycling)
        .max_spawn_rate(args.max_spawn_rate)
        .spawn_ramp(args.spawn_ramp.into())
        .idle_retire_interval(args.idle_retire_interval)
        .request_timeout(args.request_timeout)
        .request_timeout_grace(args.request_timeout_grace)
        .boot_backoff_initial(args.boot_backoff_initial)
        .boot_backoff_max(args.boot_backoff_max)
        .max_boot_failures(args.max_boot_failures)
        .max_reload_boot_failures(args.max_reload_boot_failures)
        .keepalive(!args.no_keepalive)
        .keepalive_timeout(args.keepalive_timeout)
        .graceful_timeout(args.graceful_timeout)
        .slow_request_threshold(args.slow_request_threshold)
        .status_path((!args.no_status).then_some(args.status_path))
        .health_path((args.health_path != "off").then_some(args.health_path))
        .ready_path((args.ready_path != "off").then_some(args.ready_path))
        .drain_delay(args.drain_delay);
    if !args.status_allow.is_empty() {
        builder = builder.status_allow(args.status_allow);
    }
    builder = builder.binary_upgrade(program, program_args);
    if let Some(command_line) = reread {
        builder = builder
            .on_reload(move || reread_config(&command_line, &logging).map_err(|error| format!("{error:#}").into()));
    }
    if let Some(user) = args.user {
        builder = builder.user(user);
    }
    if let Some(group) = args.group {
        builder = builder.group(group);
    }
    if let Some(hostname) = args.hostname {
        builder = builder.hostname(hostname);
    }
    if let Some(pid_file) = args.pid_file {
        builder = builder.pid_file(pid_file);
    }
    if let Some(path) = args.unix_socket {
        builder = builder.unix_socket(path);
    }
    if let (Some(key), Some(cert)) = (args.ssl_key, args.ssl_cert) {
        builder = builder.ssl_key_cert(key, cert);
    }
    if let Some(path) = args.ssl_intermediate_ca {
        builder = builder.ssl_intermediate_ca(path);
    }
    let built = builder.build().context("invalid configuration");
    match config {
        Some(file) => built.with_context(|| format!("config file {} and the command line", file.display())),
        None => built,
    }
}

/// HUP with `--config`: the command line again with the file as it is now, built into the next
/// generation's server. A file that no longer reads, or settings that do not hold together,
/// abandon the reload (the running configuration stays, and the error is logged).
fn reread_config(command_line: &[OsString], logging: &(Option<PathBuf>, LogFormat)) -> anyhow::Result<Reloaded> {
    let argv = config_file::expand(command_line.to_vec(), &Cli::command())?;
    let cli = Cli::try_parse_from(argv).map_err(|error| {
        let said = error.render().to_string();
        anyhow::anyhow!("{}", said.lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned())
    })?;
    let args = cli.serve;
    if (&args.log_file, args.log_format) != (&logging.0, logging.1) {
        tracing::warn!(
            setting = "the log file and format",
            "reload: this setting changes only with a restart; the running value stays"
        );
    }
    let config = args.config.clone().unwrap_or_default();
    let server = build_server(args, None).with_context(|| format!("config file {}", config.display()))?;
    tracing::info!(file = %config.display(), "reload: the configuration file was read again");
    Ok(Reloaded::from_server(server))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_lines_defaults_are_the_librarys_but_for_the_commands_own() {
        let cli = Cli::try_parse_from(["simplehttp-prefork"]).unwrap();
        let server = build_server(cli.serve, None).unwrap();
        assert_eq!(server.supervisor_config(), &SupervisorConfig::default());
        let path = |p: &str| Some(p.to_owned());
        let expected = WorkerConfig {
            // The command's own choices, written once, in its definition.
            keepalive: true,
            status_path: path("/server-status"),
            health_path: path("/healthz"),
            ready_path: path("/readyz"),
            // This machine's name (the library's default when none is given).
            hostname: server.worker_config().hostname.clone(),
            ..WorkerConfig::default()
        };
        let json = |config: &WorkerConfig| serde_json::to_value(config).unwrap();
        assert_eq!(json(server.worker_config()), json(&expected));
    }

    #[test]
    fn the_librarys_config_structs_read_a_partial_document_over_their_defaults() {
        let config: SupervisorConfig =
            toml::from_str("graceful_timeout = \"5s\"\n[pool]\nmax_clients = 12\nspawn_ramp = \"deficit\"\n").unwrap();
        let expected = SupervisorConfig {
            graceful_timeout: Duration::from_secs(5),
            pool: PoolConfig { max_clients: 12, ..PoolConfig::default() },
            ..SupervisorConfig::default()
        };
        assert_eq!(config, expected);
        let worker: WorkerConfig = toml::from_str("keepalive_timeout = \"250ms\"\nmax_body_size = 1024\n").unwrap();
        assert_eq!((worker.keepalive_timeout, worker.max_body_size), (Duration::from_millis(250), 1024));
        let error = toml::from_str::<PoolConfig>("max_client = 3\n").unwrap_err().to_string();
        assert!(error.contains("unknown field `max_client`"), "{error}");
        // What is written reads back the same.
        let text = serde_json::to_string(&SupervisorConfig::default()).unwrap();
        assert!(text.contains("\"graceful_timeout\":\"30s\""), "{text}");
        assert_eq!(serde_json::from_str::<SupervisorConfig>(&text).unwrap(), SupervisorConfig::default());
    }

    #[test]
    fn default_sizes_are_written_exactly() {
        assert_eq!(size_text(8190_usize), "8190B");
        assert_eq!(size_text(64 * 1024_usize), "64KiB");
        assert_eq!(size_text(0_u64), "0B");
        assert_eq!(size_text(3_u64 << 30), "3GiB");
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        // clap checks conflicting names, bad defaults, aliases and requirements here, not
        // only when a user hits them.
        Cli::command().debug_assert();
    }
}
