//! The status document and its renderings: JSON, Apache `?auto`, text, HTML, OpenMetrics.
//!
//! One [`StatusReport`] is built from a [`Snapshot`]; every format renders that same report, so
//! the formats cannot disagree. The JSON field names are a stable interface:
//!
//! | field | meaning |
//! |---|---|
//! | `server.parent_pid`, `server.generation`, `server.scoreboard` | supervisor pid, worker generation, segment name |
//! | `server.uptime_seconds`, `server.start_time_unix` | since the supervisor started |
//! | `config.start_servers`, `.min_spare_servers`, `.max_spare_servers`, `.max_clients`, `.max_requests_per_child`, `.slow_request_seconds` | configuration in force (`null`: no limit) |
//! | `max_clients` | slots in the scoreboard |
//! | `processes`, `idle`, `busy`, `starting`, `stopping` | live workers: `_`; `R W K C`; `S`; `G I` (they add up to `processes`) |
//! | `scoreboard` | one Apache status letter per slot |
//! | `total_accesses`, `total_bytes`, `total_connections`, `total_accept_calls`, `slow_requests` | all workers, past and present |
//! | `requests_per_second`, `bytes_per_second` | averages since start |
//! | `workers_forked`, `max_clients_reached`, `stuck_kills`, `reloads`, `reload_failures` | event counts |
//! | `listen_queue`, `listen_queue_max`, `listen_queue_len` | connections waiting to be accepted now, the most seen, the backlog limit |
//! | `boot_failures`, `spawning_halted`, `last_boot_error` | workers that failed to boot in a row; forking halted because of them; why the last one failed |
//! | `ready`, `draining`, `paused` | what a readiness probe answers (a generation has been ready, and the server neither drains, stops nor is paused); the server drains before it stops, or stops; the pool is paused (no new connection is taken) |
//! | `parked` | connections held by workers between requests (sending their request, or idle on keep-alive), not in a handler |
//! | `handed_off`, `parked_timeouts`, `parked_evictions` | parked connections passed to an idle worker with their request complete; closed because the request did not arrive in time (`408`); closed for lack of room |
//! | `parent_wakeups` | maintenance rounds the supervisor has run |
//! | `workers[]` | one per live worker, below |
//!
//! Per worker (`workers[]`): the fields of [`WorkerInfo`], each documented there; its plain
//! counts are one list in this module (`worker_info!`), read from the slot's fields, which are
//! one table in the crate (`slot_fields.rs`).

mod html;
mod openmetrics;
mod text;

pub use openmetrics::OPENMETRICS_CONTENT_TYPE;

use serde::Serialize;

use crate::{SlotSnapshot, Snapshot, WorkerState};

/// The status document.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    /// Server-wide facts.
    pub server: ServerInfo,
    /// The configuration in force.
    pub config: ConfigInfo,
    /// Slots in the scoreboard.
    pub max_clients: usize,
    /// Live worker processes.
    pub processes: usize,
    /// Workers waiting for a connection (`_`).
    pub idle: usize,
    /// Workers holding a connection (`R`, `W`, `K`, `C`).
    pub busy: usize,
    /// Workers forked but not accepting yet (`S`).
    pub starting: usize,
    /// Workers told to stop and finishing (`G`, `I`).
    pub stopping: usize,
    /// One Apache status letter per slot.
    pub scoreboard: String,
    /// Requests finished by all workers, past and present.
    pub total_accesses: u64,
    /// Response body bytes sent by all workers, past and present.
    pub total_bytes: u64,
    /// Connections accepted by all workers, past and present.
    pub total_connections: u64,
    /// `accept4` calls of all workers, past and present, `EAGAIN` included.
    pub total_accept_calls: u64,
    /// Requests longer than the slow-request threshold, all workers, past and present.
    pub slow_requests: u64,
    /// Requests per second, averaged since the server started.
    pub requests_per_second: f64,
    /// Response body bytes per second, averaged since the server started.
    pub bytes_per_second: f64,
    /// Workers forked since the server started.
    pub workers_forked: u64,
    /// Times a needed fork was refused because `max_clients` workers were running.
    pub max_clients_reached: u64,
    /// Workers killed because a request ran past `request_timeout`.
    pub stuck_kills: u64,
    /// Graceful reloads started.
    pub reloads: u64,
    /// Reloads that did not complete.
    pub reload_failures: u64,
    /// Connections waiting to be accepted, as last sampled.
    pub listen_queue: u64,
    /// The most connections seen waiting to be accepted.
    pub listen_queue_max: u64,
    /// The listen queue's limit (the backlog).
    pub listen_queue_len: u64,
    /// Workers that failed to boot, in a row (0 once one boots).
    pub boot_failures: u64,
    /// Forking is halted because workers keep failing to boot.
    pub spawning_halted: bool,
    /// What a readiness probe answers: a generation has been ready, and the server neither
    /// drains nor stops.
    pub ready: bool,
    /// The server drains before it stops (the drain delay), or stops.
    pub draining: bool,
    /// The pool is paused: no worker takes a new connection (they wait in the listen queue).
    pub paused: bool,
    /// Why the last worker failed to boot (`null` if none has).
    pub last_boot_error: Option<String>,
    /// Connections held by workers between requests (sending their request, or idle on
    /// keep-alive), not in a handler.
    pub parked: u64,
    /// Parked connections passed to an idle worker with their request complete.
    pub handed_off: u64,
    /// Parked connections closed because their request did not arrive in time (`408`).
    pub parked_timeouts: u64,
    /// Parked connections closed for lack of room.
    pub parked_evictions: u64,
    /// Maintenance rounds the supervisor has run.
    pub parent_wakeups: u64,
    /// One entry per live worker.
    pub workers: Vec<WorkerInfo>,
}

/// Server-wide facts.
#[derive(Clone, Debug, Serialize)]
pub struct ServerInfo {
    /// The supervisor's pid.
    pub parent_pid: u32,
    /// The current worker generation.
    pub generation: u64,
    /// The scoreboard segment's name.
    pub scoreboard: String,
    /// Seconds since the supervisor started.
    pub uptime_seconds: f64,
    /// When the supervisor started (Unix epoch seconds).
    pub start_time_unix: f64,
}

/// The configuration in force.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigInfo {
    /// Workers forked at start.
    pub start_servers: u64,
    /// Fewer idle workers than this: the supervisor forks more.
    pub min_spare_servers: u64,
    /// More idle workers than this: the supervisor retires some.
    pub max_spare_servers: u64,
    /// Most worker processes at once.
    pub max_clients: u64,
    /// Requests a worker answers before it is replaced (`null`: no limit).
    pub max_requests_per_child: Option<u64>,
    /// Requests longer than this count as slow, seconds (`null`: none are counted).
    pub slow_request_seconds: Option<f64>,
}

/// Defines [`WorkerInfo`], its plain counts from the list given (`json_name <- slot_field`),
/// and how it is made from a slot.
macro_rules! worker_info {
    ( $( $(#[doc = $doc:literal])* $json:ident <- $field:ident ; )* ) => {
        /// One live worker. Its JSON field names are a stable interface.
        #[derive(Clone, Debug, Serialize)]
        pub struct WorkerInfo {
            /// Its scoreboard slot.
            pub slot: usize,
            /// Its process id.
            pub pid: u32,
            /// The generation it was forked into.
            pub generation: u64,
            /// What it is doing (an Apache status letter in JSON).
            pub state: WorkerState,
            /// It has reached a recycling limit and asked to be replaced.
            pub retire_requested: bool,
            /// Its accept wait watches the listener (false once it has followed a pause).
            pub accepting: bool,
            /// When the process started (Unix epoch seconds).
            pub started_unix: f64,
            /// Seconds since `state` last changed.
            pub seconds_in_state: f64,
            $( $(#[doc = $doc])* pub $json: u64, )*
            /// How long the oldest request still running has run (`null`: none is running).
            pub running_seconds: Option<f64>,
            /// CPU time used by the process (user + system), seconds, as last sampled.
            pub cpu_seconds: f64,
            /// The current request while busy, the last one while idle (`null`: none, or
            /// unreadable).
            pub request: Option<RequestInfoReport>,
            /// The request record was being rewritten on every read attempt, or its writer died
            /// mid-update.
            pub request_unreadable: bool,
        }

        impl WorkerInfo {
            fn of(snapshot: &Snapshot, s: &SlotSnapshot) -> WorkerInfo {
                WorkerInfo {
                    slot: s.index,
                    pid: s.pid,
                    generation: s.generation,
                    state: s.state,
                    retire_requested: s.retire_requested(),
                    accepting: s.accepting(),
                    started_unix: round3(s.started_unix_micros as f64 / 1e6),
                    seconds_in_state: round3(snapshot.seconds_in_state(s)),
                    $( $json: s.$field, )*
                    running_seconds: (s.oldest_in_flight_micros != 0).then(|| {
                        round3(snapshot.taken_monotonic_micros.saturating_sub(s.oldest_in_flight_micros) as f64 / 1e6)
                    }),
                    cpu_seconds: round3(s.cpu_micros as f64 / 1e6),
                    request: s.request.map(|r| RequestInfoReport {
                        line: r.line().to_string_lossy().into_owned(),
                        client: r.client().to_string_lossy().into_owned(),
                        protocol: r.protocol().to_string_lossy().into_owned(),
                        vhost: r.vhost().to_string_lossy().into_owned(),
                        seconds_since_start: round3(snapshot.seconds_since_request(s).unwrap_or(0.0)),
                    }),
                    request_unreadable: s.request_unreadable,
                }
            }
        }
    };
}

// A slot's counts as the status document shows them (see `crate::slot_fields` for the slot's).
worker_info! {
    /// Requests finished by this process.
    requests <- requests_child;
    /// Requests finished by every process in this slot.
    requests_slot <- requests_slot;
    /// Requests finished on the current connection.
    requests_connection <- requests_connection;
    /// Response body bytes sent by this process.
    bytes <- bytes_child;
    /// Response body bytes sent by every process in this slot.
    bytes_slot <- bytes_slot;
    /// Connections accepted by this process.
    connections <- connections;
    /// `accept4` calls by this process, `EAGAIN` included.
    accept_calls <- accept_calls;
    /// Requests of this process longer than the slow-request threshold.
    slow_requests <- slow_requests;
    /// Duration of the last finished request, µs.
    last_request_micros <- last_duration_micros;
    /// Connections it holds between requests.
    parked <- parked;
    /// Resident memory of the process, bytes, as last sampled.
    rss_bytes <- rss_bytes;
}

/// A worker's current or last request.
#[derive(Clone, Debug, Serialize)]
pub struct RequestInfoReport {
    /// The request line (`METHOD target VERSION`), cut to
    /// [`REQUEST_LINE_BYTES`](crate::REQUEST_LINE_BYTES) bytes.
    pub line: String,
    /// The client's `address:port`.
    pub client: String,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: String,
    /// The `Host` the client asked for.
    pub vhost: String,
    /// Seconds since the request began.
    pub seconds_since_start: f64,
}

impl StatusReport {
    /// Builds the report of `snapshot`, naming the segment `scoreboard_name`.
    pub fn new(snapshot: &Snapshot, scoreboard_name: &str) -> StatusReport {
        let totals = snapshot.totals();
        let h = &snapshot.header;
        let uptime = snapshot.uptime_seconds();
        let per_second = |n: u64| round3(n as f64 / uptime.max(0.001));
        StatusReport {
            server: ServerInfo {
                parent_pid: h.parent_pid,
                generation: h.generation,
                scoreboard: scoreboard_name.to_owned(),
                uptime_seconds: round3(uptime),
                start_time_unix: round3(h.start_unix_micros as f64 / 1e6),
            },
            config: ConfigInfo {
                start_servers: h.config.start_servers,
                min_spare_servers: h.config.min_spare_servers,
                max_spare_servers: h.config.max_spare_servers,
                max_clients: h.config.max_clients,
                max_requests_per_child: (h.config.max_requests_per_child > 0)
                    .then_some(h.config.max_requests_per_child),
                slow_request_seconds: (h.config.slow_request_micros > 0)
                    .then(|| h.config.slow_request_micros as f64 / 1e6),
            },
            max_clients: h.slot_count,
            processes: snapshot.processes(),
            idle: snapshot.idle(),
            busy: snapshot.busy(),
            starting: snapshot.count(WorkerState::Starting),
            stopping: snapshot.stopping(),
            scoreboard: snapshot.scoreboard_string(),
            total_accesses: totals.requests,
            total_bytes: totals.bytes,
            total_connections: totals.connections,
            total_accept_calls: totals.accept_calls,
            slow_requests: totals.slow_requests,
            requests_per_second: per_second(totals.requests),
            bytes_per_second: per_second(totals.bytes),
            workers_forked: h.workers_forked,
            max_clients_reached: h.max_clients_reached,
            stuck_kills: h.stuck_kills,
            reloads: h.reloads,
            reload_failures: h.reload_failures,
            listen_queue: h.listen_queue,
            listen_queue_max: h.listen_queue_max,
            listen_queue_len: h.listen_backlog,
            boot_failures: h.boot_failures,
            spawning_halted: h.spawning_halted,
            ready: h.ready && !h.draining && !h.paused,
            draining: h.draining,
            paused: h.paused,
            last_boot_error: (!h.last_boot_error.is_empty()).then(|| h.last_boot_error.clone()),
            parked: snapshot.parked(),
            handed_off: totals.handed_off,
            parked_timeouts: totals.parked_timeouts,
            parked_evictions: totals.parked_evictions,
            parent_wakeups: h.parent_rounds,
            workers: snapshot.live().map(|s| WorkerInfo::of(snapshot, s)).collect(),
        }
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        // Serialising plain numbers and strings cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
pub(crate) mod tests;
