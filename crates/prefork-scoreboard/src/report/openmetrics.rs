//! OpenMetrics (and Prometheus) exposition of the status report, encoded by `prometheus-client`
//! from a collector that reads the report's figures at scrape time.
//!
//! The metric names are a stable interface (see the CHANGELOG): a counter's family is named
//! without `_total`, which the encoder adds to its sample; HELP texts hold no `\` or newline
//! (the encoder writes them as they are).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::StatusReport;
use crate::WorkerState;

/// The content type of [`StatusReport::to_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl StatusReport {
    /// OpenMetrics text: counters end in `_total`, gauges per worker state, `# EOF` last.
    pub fn to_openmetrics(&self) -> String {
        let mut registry = Registry::with_prefix("simplehttp_prefork");
        registry.register_collector(Box::new(Figures::of(self)));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// A counter (its samples end in `_total`) or a gauge.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Counter,
    Gauge,
}

/// One unlabelled figure.
#[derive(Debug)]
struct Figure {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    value: u64,
}

/// What the exposition shows, in its order, copied out of the report for the scrape (a
/// collector is `'static`).
#[derive(Debug)]
struct Figures {
    start_time_unix: f64,
    /// Before the workers by state, and after.
    before: Vec<Figure>,
    per_state: Vec<(&'static str, u64)>,
    after: Vec<Figure>,
}

impl Figures {
    fn of(r: &StatusReport) -> Figures {
        use Kind::{Counter, Gauge};
        let figure = |name, kind, help, value| Figure { name, kind, help, value };
        Figures {
            start_time_unix: r.server.start_time_unix,
            before: vec![
                figure("up", Gauge, "1 while the server runs.", 1),
                figure("generation", Gauge, "Worker generation (bumped by each reload).", r.server.generation),
                figure("requests", Counter, "Requests answered by all workers, past and present.", r.total_accesses),
                figure("response_bytes", Counter, "Response body bytes sent.", r.total_bytes),
                figure("connections", Counter, "Connections accepted.", r.total_connections),
                figure(
                    "accept_calls",
                    Counter,
                    "accept4 calls made by workers, EAGAIN included.",
                    r.total_accept_calls,
                ),
                figure(
                    "slow_requests",
                    Counter,
                    "Requests that took longer than the slow-request threshold.",
                    r.slow_requests,
                ),
                figure(
                    "parked_connections",
                    Gauge,
                    "Connections held between requests (sending their request, or idle on keep-alive), not in a handler.",
                    r.parked,
                ),
                figure(
                    "handed_off",
                    Counter,
                    "Parked connections passed to an idle worker with their request complete.",
                    r.handed_off,
                ),
                figure(
                    "parked_timeouts",
                    Counter,
                    "Parked connections closed because their request did not arrive in time.",
                    r.parked_timeouts,
                ),
                figure(
                    "parked_evictions",
                    Counter,
                    "Parked connections closed to make room for newer ones.",
                    r.parked_evictions,
                ),
                figure("parent_wakeups", Counter, "Maintenance rounds the supervisor ran.", r.parent_wakeups),
                figure("workers_forked", Counter, "Worker processes forked.", r.workers_forked),
                figure(
                    "max_clients_reached",
                    Counter,
                    "Times a needed worker was not forked because max_clients were running.",
                    r.max_clients_reached,
                ),
                figure(
                    "stuck_kills",
                    Counter,
                    "Workers killed for running a request past request_timeout.",
                    r.stuck_kills,
                ),
                figure("reloads", Counter, "Graceful reloads started.", r.reloads),
                figure("reload_failures", Counter, "Graceful reloads that failed.", r.reload_failures),
                figure("processes", Gauge, "Worker processes.", r.processes as u64),
                figure("max_clients", Gauge, "Most worker processes allowed.", r.max_clients as u64),
                figure(
                    "min_spare_servers",
                    Gauge,
                    "Fewer idle workers than this: fork more.",
                    r.config.min_spare_servers,
                ),
                figure(
                    "max_spare_servers",
                    Gauge,
                    "More idle workers than this: retire some.",
                    r.config.max_spare_servers,
                ),
            ],
            per_state: WorkerState::ALL
                .into_iter()
                .filter(|state| *state != WorkerState::Dead)
                .map(|state| (state.name(), r.workers.iter().filter(|w| w.state == state).count() as u64))
                .collect(),
            after: vec![
                figure("listen_queue", Gauge, "Connections waiting to be accepted.", r.listen_queue),
                figure("listen_queue_max", Gauge, "Most connections seen waiting to be accepted.", r.listen_queue_max),
                figure("listen_queue_length", Gauge, "Listen backlog limit.", r.listen_queue_len),
                figure("boot_failures", Gauge, "Workers that failed to boot in a row.", r.boot_failures),
                figure(
                    "spawning_halted",
                    Gauge,
                    "1 while forking is halted after repeated boot failures.",
                    u64::from(r.spawning_halted),
                ),
            ],
        }
    }
}

/// One unlabelled gauge.
fn gauge(out: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: impl EncodeGaugeValue) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(out.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Figure {
    fn encode(&self, out: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        match self.kind {
            Kind::Gauge => gauge(out, self.name, self.help, self.value),
            // Named without `_total`: the encoder adds it to the sample.
            Kind::Counter => {
                let metric = ConstCounter::new(self.value);
                metric.encode(out.encode_descriptor(self.name, self.help, None, metric.metric_type())?)
            }
        }
    }
}

impl Collector for Figures {
    fn encode(&self, mut out: DescriptorEncoder<'_>) -> std::fmt::Result {
        let (up, rest) = self.before.split_first().expect("`up` comes first");
        up.encode(&mut out)?;
        gauge(&mut out, "start_time_seconds", "When the supervisor started (Unix time).", self.start_time_unix)?;
        for figure in rest {
            figure.encode(&mut out)?;
        }
        let mut family = out.encode_descriptor("workers", "Worker processes by state.", None, MetricType::Gauge)?;
        for &(state, n) in &self.per_state {
            ConstGauge::new(n).encode(family.encode_family(&[("state", state)])?)?;
        }
        for figure in &self.after {
            figure.encode(&mut out)?;
        }
        Ok(())
    }
}
