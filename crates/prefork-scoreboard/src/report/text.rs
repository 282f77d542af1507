//! Plain-text renderings: Apache mod_status's machine-readable `?auto`, and a terminal table.

use std::fmt::Write as _;

use super::StatusReport;
use crate::WorkerState;

impl StatusReport {
    /// Apache mod_status `?auto` lines, so scripts written against Apache read them unchanged.
    pub fn to_apache_auto(&self) -> String {
        let uptime = self.server.uptime_seconds.max(0.001);
        let cpu: f64 = self.workers.iter().map(|w| w.cpu_seconds).sum();
        let mut out = String::new();
        let mut line = |key: &str, value: &dyn std::fmt::Display| {
            let _ = writeln!(out, "{key}: {value}");
        };
        line("ServerVersion", &concat!("simplehttp-prefork/", env!("CARGO_PKG_VERSION")));
        line("ServerMPM", &"prefork");
        line("ServerUptimeSeconds", &(self.server.uptime_seconds as u64));
        line("Uptime", &(self.server.uptime_seconds as u64));
        line("Total Accesses", &self.total_accesses);
        line("Total kBytes", &(self.total_bytes / 1024));
        line("CPULoad", &format!("{:.6}", 100.0 * cpu / uptime));
        line("ReqPerSec", &format!("{:.6}", self.total_accesses as f64 / uptime));
        line("BytesPerSec", &format!("{:.6}", self.total_bytes as f64 / uptime));
        let per_request =
            if self.total_accesses > 0 { self.total_bytes as f64 / self.total_accesses as f64 } else { 0.0 };
        line("BytesPerReq", &format!("{per_request:.6}"));
        line("BusyWorkers", &self.busy);
        line("GracefulWorkers", &self.stopping);
        line("IdleWorkers", &self.idle);
        line("Processes", &self.processes);
        line("Stopping", &self.stopping);
        // Apache event's own names: connections in total, those waiting between requests.
        line("ConnsTotal", &(self.busy as u64).saturating_add(self.parked));
        line("ConnsAsyncKeepAlive", &self.parked);
        line("Scoreboard", &self.scoreboard);
        out
    }

    /// A summary and per-worker table for terminals (`simplehttp-prefork status`).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let s = &self.server;
        let c = &self.config;
        let _ = writeln!(
            out,
            "simplehttp-prefork: parent {} generation {} up {} scoreboard {}{}",
            s.parent_pid,
            s.generation,
            human_duration(s.uptime_seconds),
            s.scoreboard,
            match (self.paused, self.draining) {
                (_, true) => " (draining: not ready)",
                (true, _) => " (paused: no new connection taken)",
                _ => "",
            }
        );
        let _ = writeln!(
            out,
            "config: start {} spare {}..{} max clients {} max requests/child {} slow after {}",
            c.start_servers,
            c.min_spare_servers,
            c.max_spare_servers,
            c.max_clients,
            c.max_requests_per_child.map_or("-".to_owned(), |n| n.to_string()),
            c.slow_request_seconds.map_or("-".to_owned(), |s| format!("{s}s"))
        );
        let _ = writeln!(
            out,
            "{} processes: {} idle, {} busy, {} starting, {} stopping; {} connections parked between requests \
             ({} handed off, {} timed out, {} evicted)",
            self.processes,
            self.idle,
            self.busy,
            self.starting,
            self.stopping,
            self.parked,
            self.handed_off,
            self.parked_timeouts,
            self.parked_evictions
        );
        let _ = writeln!(
            out,
            "{} requests ({:.1}/s), {} ({}/s), {} connections, {} slow",
            self.total_accesses,
            self.requests_per_second,
            human_bytes(self.total_bytes),
            human_bytes(self.bytes_per_second as u64),
            self.total_connections,
            self.slow_requests
        );
        let _ = writeln!(
            out,
            "listen queue {} (max {}, limit {}); forked {}; max clients reached {}; stuck kills {}; reloads {} ({} failed)",
            self.listen_queue,
            self.listen_queue_max,
            self.listen_queue_len,
            self.workers_forked,
            self.max_clients_reached,
            self.stuck_kills,
            self.reloads,
            self.reload_failures
        );
        if self.boot_failures > 0 || self.spawning_halted {
            let _ = writeln!(
                out,
                "WARNING: {} workers failed to boot in a row{}; last cause: {}",
                self.boot_failures,
                if self.spawning_halted { "; forking is halted" } else { "" },
                self.last_boot_error.as_deref().unwrap_or("unknown")
            );
        }
        let _ = writeln!(out, "Scoreboard: {}", self.scoreboard);
        let _ = writeln!(
            out,
            "{:>4} {:>7} {:>3} {:1} {:>15} {:>9} {:>7} {:>8} {:>7} {:>8} {:<22} {:<8} {:<16} request",
            "slot",
            "pid",
            "gen",
            "M",
            "acc conn/ch/slot",
            "bytes",
            "cpu s",
            "rss",
            "ss",
            "req ms",
            "client",
            "protocol",
            "vhost"
        );
        for w in &self.workers {
            let request = w.request.as_ref();
            let _ = writeln!(
                out,
                "{:>4} {:>7} {:>3} {:1} {:>15} {:>9} {:>7.2} {:>8} {:>7.1} {:>8.1} {:<22} {:<8} {:<16} {}",
                w.slot,
                w.pid,
                w.generation,
                w.state.letter(),
                format!("{}/{}/{}", w.requests_connection, w.requests, w.requests_slot),
                human_bytes(w.bytes),
                w.cpu_seconds,
                human_bytes(w.rss_bytes),
                request.map_or(0.0, |r| r.seconds_since_start),
                w.last_request_micros as f64 / 1000.0,
                request.map_or("", |r| r.client.as_str()),
                request.map_or("", |r| r.protocol.as_str()),
                request.map_or("", |r| r.vhost.as_str()),
                if w.request_unreadable { "(being updated)" } else { request.map_or("", |r| r.line.as_str()) }
            );
        }
        let legend: Vec<String> =
            WorkerState::ALL.iter().map(|st| format!("\"{}\" {}", st.letter(), st.describe())).collect();
        let _ = writeln!(out, "Legend: {}", legend.join(", "));
        out
    }
}

/// `1h 02m 03s`.
pub(crate) fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60) {
        (0, 0, 0, sec) => format!("{sec}s"),
        (0, 0, m, sec) => format!("{m}m {sec:02}s"),
        (0, h, m, sec) => format!("{h}h {m:02}m {sec:02}s"),
        (d, h, m, _) => format!("{d}d {h:02}h {m:02}m"),
    }
}

/// `512 B`, `1.5 KiB`, `2.0 MiB`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize(bytes).to_string()
}
