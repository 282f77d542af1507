//! Renders a snapshot for people and programs: JSON, Apache `?auto` lines, and a text table.
//!
//! The JSON field names are a stable interface (monitoring scripts parse them):
//!
//! | field | meaning |
//! |---|---|
//! | `server.parent_pid`, `server.generation` | supervisor pid, current worker generation |
//! | `server.scoreboard` | the shared-memory segment's name (for `simplehttp-prefork status`) |
//! | `server.uptime_seconds`, `server.start_time_unix` | since the supervisor started |
//! | `max_clients` | slots in the scoreboard |
//! | `processes`, `idle`, `busy`, `starting`, `stopping` | live workers; `idle` is `_`, `busy` is `R W K C`, `starting` is `S`, `stopping` is `G I` (the four add up to `processes`) |
//! | `scoreboard` | one Apache status letter per slot |
//! | `total_accesses`, `total_bytes`, `total_connections`, `total_accept_calls` | past and present workers |
//! | `workers[]` | `slot`, `pid`, `generation`, `state` (letter), `requests`, `bytes`, `connections`, `accept_calls`, `seconds_in_state`, `started_unix` |

use std::fmt::Write as _;

use serde::Serialize;

use crate::{Snapshot, WorkerState};

/// The status document, as served by `?json`.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    pub server: ServerInfo,
    pub max_clients: usize,
    pub processes: usize,
    pub idle: usize,
    pub busy: usize,
    pub starting: usize,
    pub stopping: usize,
    pub scoreboard: String,
    pub total_accesses: u64,
    pub total_bytes: u64,
    pub total_connections: u64,
    pub total_accept_calls: u64,
    pub workers: Vec<WorkerInfo>,
}

/// Server-wide facts.
#[derive(Clone, Debug, Serialize)]
pub struct ServerInfo {
    pub parent_pid: u32,
    pub generation: u64,
    pub scoreboard: String,
    pub uptime_seconds: f64,
    pub start_time_unix: f64,
}

/// One live worker.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerInfo {
    pub slot: usize,
    pub pid: u32,
    pub generation: u64,
    pub state: WorkerState,
    pub requests: u64,
    pub bytes: u64,
    pub connections: u64,
    pub accept_calls: u64,
    pub seconds_in_state: f64,
    pub started_unix: f64,
}

impl StatusReport {
    /// Builds the report of `snapshot`, naming the segment `scoreboard_name`.
    pub fn new(snapshot: &Snapshot, scoreboard_name: &str) -> StatusReport {
        let totals = snapshot.totals();
        StatusReport {
            server: ServerInfo {
                parent_pid: snapshot.header.parent_pid,
                generation: snapshot.header.generation,
                scoreboard: scoreboard_name.to_owned(),
                uptime_seconds: round3(snapshot.uptime_seconds()),
                start_time_unix: round3(snapshot.header.start_unix_micros as f64 / 1e6),
            },
            max_clients: snapshot.header.slot_count,
            processes: snapshot.processes(),
            idle: snapshot.idle(),
            busy: snapshot.busy(),
            starting: snapshot.count(WorkerState::Starting),
            stopping: snapshot.live().filter(|s| s.state.is_stopping()).count(),
            scoreboard: snapshot.scoreboard_string(),
            total_accesses: totals.requests,
            total_bytes: totals.bytes,
            total_connections: totals.connections,
            total_accept_calls: totals.accept_calls,
            workers: snapshot
                .live()
                .map(|s| WorkerInfo {
                    slot: s.index,
                    pid: s.pid,
                    generation: s.generation,
                    state: s.state,
                    requests: s.requests,
                    bytes: s.bytes,
                    connections: s.connections,
                    accept_calls: s.accept_calls,
                    seconds_in_state: round3(snapshot.seconds_in_state(s)),
                    started_unix: round3(s.started_unix_micros as f64 / 1e6),
                })
                .collect(),
        }
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        // Serialising plain numbers and strings cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Apache mod_status `?auto` lines, for scripts written against Apache.
    pub fn to_apache_auto(&self) -> String {
        let uptime = self.server.uptime_seconds.max(0.001);
        let mut out = String::new();
        let _ = writeln!(out, "ServerUptimeSeconds: {}", self.server.uptime_seconds as u64);
        let _ = writeln!(out, "Uptime: {}", self.server.uptime_seconds as u64);
        let _ = writeln!(out, "Total Accesses: {}", self.total_accesses);
        let _ = writeln!(out, "Total kBytes: {}", self.total_bytes / 1024);
        let _ = writeln!(out, "ReqPerSec: {:.6}", self.total_accesses as f64 / uptime);
        let _ = writeln!(out, "BytesPerSec: {:.6}", self.total_bytes as f64 / uptime);
        let per_req = if self.total_accesses > 0 { self.total_bytes as f64 / self.total_accesses as f64 } else { 0.0 };
        let _ = writeln!(out, "BytesPerReq: {per_req:.6}");
        let _ = writeln!(out, "BusyWorkers: {}", self.busy);
        let _ = writeln!(out, "GracefulWorkers: {}", self.stopping);
        let _ = writeln!(out, "IdleWorkers: {}", self.idle);
        let _ = writeln!(out, "Processes: {}", self.processes);
        let _ = writeln!(out, "Scoreboard: {}", self.scoreboard);
        out
    }

    /// A plain-text summary and per-worker table, for terminals.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let s = &self.server;
        let _ = writeln!(
            out,
            "simplehttp-prefork: parent {} generation {} up {:.0}s scoreboard {}",
            s.parent_pid, s.generation, s.uptime_seconds, s.scoreboard
        );
        let _ = writeln!(
            out,
            "{} processes: {} idle, {} busy, {} starting, {} stopping; max clients {}",
            self.processes, self.idle, self.busy, self.starting, self.stopping, self.max_clients
        );
        let _ = writeln!(
            out,
            "{} requests, {} bytes, {} connections",
            self.total_accesses, self.total_bytes, self.total_connections
        );
        let _ = writeln!(out, "Scoreboard: {}", self.scoreboard);
        let _ = writeln!(
            out,
            "{:>5} {:>8} {:>4} {:>2} {:>9} {:>12} {:>8} {:>9}",
            "slot", "pid", "gen", "M", "requests", "bytes", "conns", "in-state"
        );
        for w in &self.workers {
            let _ = writeln!(
                out,
                "{:>5} {:>8} {:>4} {:>2} {:>9} {:>12} {:>8} {:>8.1}s",
                w.slot,
                w.pid,
                w.generation,
                w.state.letter(),
                w.requests,
                w.bytes,
                w.connections,
                w.seconds_in_state
            );
        }
        let legend: Vec<String> =
            WorkerState::ALL.iter().map(|st| format!("\"{}\" {}", st.letter(), st.describe())).collect();
        let _ = writeln!(out, "Legend: {}", legend.join(", "));
        out
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HeaderSnapshot, SlotSnapshot};

    fn slot(index: usize, pid: u32, state: WorkerState, requests: u64) -> SlotSnapshot {
        SlotSnapshot {
            index,
            pid,
            state,
            generation: 1,
            requests,
            bytes: requests * 10,
            connections: requests,
            accept_calls: requests,
            started_unix_micros: 1_700_000_000_000_000,
            last_change_micros: 9_000_000,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            taken_unix_micros: 1_700_000_010_000_000,
            taken_monotonic_micros: 10_000_000,
            header: HeaderSnapshot {
                parent_pid: 100,
                generation: 1,
                slot_count: 4,
                start_unix_micros: 1_700_000_000_000_000,
                start_monotonic_micros: 0,
                retired_requests: 5,
                retired_bytes: 50,
                retired_connections: 5,
                retired_accept_calls: 7,
            },
            slots: vec![
                slot(0, 101, WorkerState::Idle, 1),
                slot(1, 102, WorkerState::Writing, 2),
                slot(2, 0, WorkerState::Dead, 9),
                slot(3, 104, WorkerState::KeepAlive, 3),
            ],
        }
    }

    #[test]
    fn json_has_the_documented_fields_and_counts() {
        let report = StatusReport::new(&snapshot(), "/x.100");
        let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(v["processes"], 3);
        assert_eq!(v["idle"], 1);
        assert_eq!(v["busy"], 2);
        assert_eq!(v["scoreboard"], "_W.K");
        // Dead slot 2 is not counted; the header's retired work is.
        assert_eq!(v["total_accesses"], 5 + 1 + 2 + 3);
        assert_eq!(v["server"]["scoreboard"], "/x.100");
        assert_eq!(v["server"]["uptime_seconds"], 10.0);
        let workers = v["workers"].as_array().unwrap();
        assert_eq!(workers.len(), 3);
        assert_eq!(workers[1]["slot"], 1);
        assert_eq!(workers[1]["pid"], 102);
        assert_eq!(workers[1]["state"], "W");
        assert_eq!(workers[1]["requests"], 2);
        assert_eq!(workers[1]["seconds_in_state"], 1.0);
    }

    #[test]
    fn apache_auto_lines_parse_as_key_value() {
        let text = StatusReport::new(&snapshot(), "/x.100").to_apache_auto();
        let map: std::collections::HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once(": ")).collect();
        assert_eq!(map["Total Accesses"], "11");
        assert_eq!(map["BusyWorkers"], "2");
        assert_eq!(map["IdleWorkers"], "1");
        assert_eq!(map["Processes"], "3");
        assert_eq!(map["Scoreboard"], "_W.K");
        assert_eq!(map["Uptime"], "10");
    }

    #[test]
    fn text_lists_every_live_worker() {
        let text = StatusReport::new(&snapshot(), "/x.100").to_text();
        assert!(text.contains("3 processes: 1 idle, 2 busy"), "{text}");
        for pid in ["101", "102", "104"] {
            assert_eq!(text.lines().filter(|l| l.split_whitespace().nth(1) == Some(pid)).count(), 1, "{pid}: {text}");
        }
        assert!(!text.lines().any(|l| l.split_whitespace().nth(1) == Some("0")), "dead slot listed: {text}");
    }
}
