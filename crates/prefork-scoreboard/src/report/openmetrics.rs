//! OpenMetrics (and Prometheus) exposition of the status report.

use std::fmt::Write as _;

use super::StatusReport;
use crate::WorkerState;

/// The content type of [`StatusReport::to_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl StatusReport {
    /// OpenMetrics text: counters end in `_total`, gauges per worker state, `# EOF` last.
    pub fn to_openmetrics(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(out, "# TYPE simplehttp_prefork_{name} {kind}");
            let _ = writeln!(out, "# HELP simplehttp_prefork_{name} {help}");
            for (suffix_and_labels, value) in samples {
                let _ = writeln!(out, "simplehttp_prefork_{name}{suffix_and_labels} {value}");
            }
        };
        let counter = |value: u64| [("_total", value as f64)];
        metric("up", "gauge", "1 while the server runs.", &[("", 1.0)]);
        metric(
            "start_time_seconds",
            "gauge",
            "When the supervisor started (Unix time).",
            &[("", self.server.start_time_unix)],
        );
        metric(
            "generation",
            "gauge",
            "Worker generation (bumped by each reload).",
            &[("", self.server.generation as f64)],
        );
        metric(
            "requests",
            "counter",
            "Requests answered by all workers, past and present.",
            &counter(self.total_accesses),
        );
        metric("response_bytes", "counter", "Response body bytes sent.", &counter(self.total_bytes));
        metric("connections", "counter", "Connections accepted.", &counter(self.total_connections));
        metric(
            "accept_calls",
            "counter",
            "accept4 calls made by workers, EAGAIN included.",
            &counter(self.total_accept_calls),
        );
        metric(
            "slow_requests",
            "counter",
            "Requests that took longer than the slow-request threshold.",
            &counter(self.slow_requests),
        );
        metric(
            "parked_connections",
            "gauge",
            "Connections held between requests (sending their request, or idle on keep-alive), not in a handler.",
            &[("", self.parked as f64)],
        );
        metric(
            "handed_off",
            "counter",
            "Parked connections passed to an idle worker with their request complete.",
            &counter(self.handed_off),
        );
        metric(
            "parked_timeouts",
            "counter",
            "Parked connections closed because their request did not arrive in time.",
            &counter(self.parked_timeouts),
        );
        metric(
            "parked_evictions",
            "counter",
            "Parked connections closed to make room for newer ones.",
            &counter(self.parked_evictions),
        );
        metric("parent_wakeups", "counter", "Maintenance rounds the supervisor ran.", &counter(self.parent_wakeups));
        metric("workers_forked", "counter", "Worker processes forked.", &counter(self.workers_forked));
        metric(
            "max_clients_reached",
            "counter",
            "Times a needed worker was not forked because max_clients were running.",
            &counter(self.max_clients_reached),
        );
        metric(
            "stuck_kills",
            "counter",
            "Workers killed for running a request past request_timeout.",
            &counter(self.stuck_kills),
        );
        metric("reloads", "counter", "Graceful reloads started.", &counter(self.reloads));
        metric("reload_failures", "counter", "Graceful reloads that failed.", &counter(self.reload_failures));
        metric("processes", "gauge", "Worker processes.", &[("", self.processes as f64)]);
        metric("max_clients", "gauge", "Most worker processes allowed.", &[("", self.max_clients as f64)]);
        metric(
            "min_spare_servers",
            "gauge",
            "Fewer idle workers than this: fork more.",
            &[("", self.config.min_spare_servers as f64)],
        );
        metric(
            "max_spare_servers",
            "gauge",
            "More idle workers than this: retire some.",
            &[("", self.config.max_spare_servers as f64)],
        );
        let states: Vec<(String, f64)> = WorkerState::ALL
            .iter()
            .filter(|s| **s != WorkerState::Dead)
            .map(|state| {
                let n = self.workers.iter().filter(|w| w.state == *state).count();
                (format!("{{state=\"{}\"}}", state.name()), n as f64)
            })
            .collect();
        let states: Vec<(&str, f64)> = states.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric("workers", "gauge", "Worker processes by state.", &states);
        metric("listen_queue", "gauge", "Connections waiting to be accepted.", &[("", self.listen_queue as f64)]);
        metric(
            "listen_queue_max",
            "gauge",
            "Most connections seen waiting to be accepted.",
            &[("", self.listen_queue_max as f64)],
        );
        metric("listen_queue_length", "gauge", "Listen backlog limit.", &[("", self.listen_queue_len as f64)]);
        metric("boot_failures", "gauge", "Workers that failed to boot in a row.", &[("", self.boot_failures as f64)]);
        metric(
            "spawning_halted",
            "gauge",
            "1 while forking is halted after repeated boot failures.",
            &[("", f64::from(u8::from(self.spawning_halted)))],
        );
        out.push_str("# EOF\n");
        out
    }
}
