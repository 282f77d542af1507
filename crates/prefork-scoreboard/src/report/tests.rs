//! Tests of the status report and its renderings, on a hand-made snapshot.

use super::*;
use crate::record::{RecordRead, RequestInfo};
use crate::{BoardConfig, HeaderSnapshot, SlotSnapshot};

/// A request record made the way a worker publishes one.
fn record(line: &str, client: &str) -> crate::RequestRecord {
    // SAFETY: a Slot is only atomics, for which all-zero bytes are valid.
    let slot: Box<crate::layout::Slot> = Box::new(unsafe { std::mem::zeroed() });
    let info =
        RequestInfo { line: line.as_bytes(), client: client.as_bytes(), protocol: b"HTTP/1.1", vhost: b"example.org" };
    crate::record::publish(&slot, 8_000_000, &info);
    match crate::record::read(&slot) {
        (RecordRead::Copied, Some(record)) => record,
        other => panic!("{other:?}"),
    }
}

fn slot(index: usize, pid: u32, state: WorkerState, requests: u64) -> SlotSnapshot {
    SlotSnapshot {
        index,
        pid,
        state,
        flags: 0,
        generation: 1,
        started_unix_micros: 1_700_000_000_000_000,
        last_change_micros: 9_000_000,
        requests_child: requests,
        requests_slot: requests + 1,
        requests_connection: 1,
        bytes_child: requests * 10,
        bytes_slot: requests * 10,
        connections: requests,
        accept_calls: requests,
        last_duration_micros: 1500,
        cpu_micros: 250_000,
        rss_bytes: 8 << 20,
        usage_sampled_micros: 9_000_000,
        connections_slot: requests,
        accept_calls_slot: requests,
        ..SlotSnapshot::EMPTY
    }
}

pub(crate) fn snapshot() -> Snapshot {
    let mut writing = slot(1, 102, WorkerState::Writing, 2);
    writing.request = Some(record("GET /<script>alert(\"x\")</script>&q=1 HTTP/1.1", "127.0.0.1:40000"));
    let mut keepalive = slot(3, 104, WorkerState::KeepAlive, 3);
    keepalive.request_unreadable = true;
    // A slot whose worker has exited: its work still counts in the totals.
    let mut dead = slot(2, 0, WorkerState::Dead, 9);
    dead.slow_requests_slot = 1;
    Snapshot {
        taken_unix_micros: 1_700_000_010_000_000,
        taken_monotonic_micros: 10_000_000,
        header: HeaderSnapshot {
            parent_pid: 100,
            generation: 1,
            slot_count: 4,
            start_unix_micros: 1_700_000_000_000_000,
            start_monotonic_micros: 0,
            config: BoardConfig {
                start_servers: 2,
                min_spare_servers: 1,
                max_spare_servers: 3,
                max_clients: 4,
                max_requests_per_child: 0,
                slow_request_micros: 1_000_000,
            },
            workers_forked: 6,
            max_clients_reached: 2,
            listen_queue: 3,
            listen_queue_max: 9,
            listen_backlog: 511,
            stuck_kills: 0,
            boot_failures: 0,
            spawning_halted: false,
            reloads: 0,
            reload_failures: 0,
            last_boot_error: String::new(),
            idle_workers: 1,
            ring_below: 1,
            parent_rounds: 42,
            server_stopping: false,
            ready: true,
            draining: false,
            paused: false,
        },
        slots: vec![slot(0, 101, WorkerState::Idle, 1), writing, dead, keepalive],
    }
}

/// The keys of a JSON object, sorted.
fn keys(value: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

fn sorted(mut names: Vec<&str>) -> Vec<&str> {
    names.sort_unstable();
    names
}

#[test]
fn json_has_exactly_the_fields_the_module_documents_and_the_counts_add_up() {
    let report = StatusReport::new(&snapshot(), "/x.100");
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    let top = "server config max_clients processes idle busy starting stopping scoreboard total_accesses \
        total_bytes total_connections total_accept_calls slow_requests requests_per_second bytes_per_second \
        workers_forked max_clients_reached stuck_kills reloads reload_failures listen_queue listen_queue_max \
        listen_queue_len boot_failures spawning_halted ready draining paused last_boot_error parked handed_off parked_timeouts \
        parked_evictions parent_wakeups workers";
    assert_eq!(keys(&v), sorted(top.split_whitespace().collect()));
    assert_eq!(
        keys(&v["server"]),
        sorted(vec!["parent_pid", "generation", "scoreboard", "uptime_seconds", "start_time_unix"])
    );
    let config =
        "start_servers min_spare_servers max_spare_servers max_clients max_requests_per_child slow_request_seconds";
    assert_eq!(keys(&v["config"]), sorted(config.split_whitespace().collect()));
    let worker = "slot pid generation state retire_requested accepting started_unix seconds_in_state requests requests_slot \
        requests_connection bytes bytes_slot connections accept_calls slow_requests last_request_micros parked \
        running_seconds cpu_seconds rss_bytes request request_unreadable";
    for w in v["workers"].as_array().unwrap() {
        assert_eq!(keys(w), sorted(worker.split_whitespace().collect()));
    }
    let request = &v["workers"][1]["request"];
    assert_eq!(keys(request), sorted(vec!["line", "client", "protocol", "vhost", "seconds_since_start"]));
    let count = |field: &str| v[field].as_u64().unwrap();
    assert_eq!(count("idle") + count("busy") + count("starting") + count("stopping"), count("processes"));
}

#[test]
fn json_has_the_documented_fields_and_counts() {
    let report = StatusReport::new(&snapshot(), "/x.100");
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!((v["processes"].as_u64(), v["idle"].as_u64(), v["busy"].as_u64()), (Some(3), Some(1), Some(2)));
    assert_eq!(v["scoreboard"], "_W.K");
    // Dead slot 2 is not counted as a worker, but its work is: totals add the per-slot counts.
    assert_eq!(v["total_accesses"], 2 + 3 + 10 + 4);
    assert_eq!(v["slow_requests"], 1);
    assert_eq!(v["server"]["scoreboard"], "/x.100");
    assert_eq!(v["server"]["uptime_seconds"], 10.0);
    assert_eq!(v["requests_per_second"], 1.9);
    assert_eq!(v["config"]["max_requests_per_child"], serde_json::Value::Null);
    assert_eq!(v["config"]["slow_request_seconds"], 1.0);
    assert_eq!(
        (v["listen_queue"].as_u64(), v["listen_queue_max"].as_u64(), v["listen_queue_len"].as_u64()),
        (Some(3), Some(9), Some(511))
    );
    assert_eq!(v["max_clients_reached"], 2);
    let workers = v["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 3);
    let w = &workers[1];
    assert_eq!((w["slot"].as_u64(), w["pid"].as_u64(), w["state"].as_str()), (Some(1), Some(102), Some("W")));
    assert_eq!(
        (w["requests"].as_u64(), w["requests_slot"].as_u64(), w["requests_connection"].as_u64()),
        (Some(2), Some(3), Some(1))
    );
    assert_eq!(w["seconds_in_state"], 1.0);
    assert_eq!(w["cpu_seconds"], 0.25);
    assert_eq!(w["rss_bytes"], 8 << 20);
    assert_eq!(w["request"]["client"], "127.0.0.1:40000");
    assert_eq!(w["request"]["vhost"], "example.org");
    assert_eq!(w["request"]["seconds_since_start"], 2.0);
    assert_eq!(workers[0]["request"], serde_json::Value::Null);
    assert_eq!(workers[2]["request_unreadable"], true);
    assert_eq!(v["last_boot_error"], serde_json::Value::Null);
}

#[test]
fn boot_failures_are_shown_with_their_cause_in_every_format() {
    let mut failing = snapshot();
    failing.header.boot_failures = 4;
    failing.header.spawning_halted = true;
    failing.header.last_boot_error = "fork handler 0 failed: <db> unreachable".into();
    let report = StatusReport::new(&failing, "/x.100");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["last_boot_error"], "fork handler 0 failed: <db> unreachable");
    assert!(
        report.to_text().contains("4 workers failed to boot in a row; forking is halted; last cause: fork handler 0")
    );
    let html = report.to_html(None);
    assert!(html.contains("class=\"alert\"") && html.contains("&lt;db&gt; unreachable"), "{html}");
    assert!(report.to_openmetrics().contains("simplehttp_prefork_spawning_halted 1\n"));
}

#[test]
fn apache_auto_lines_parse_as_key_value() {
    let text = StatusReport::new(&snapshot(), "/x.100").to_apache_auto();
    let map: std::collections::HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once(": ")).collect();
    assert_eq!(map.len(), text.lines().count(), "every line is `Key: value`");
    assert_eq!(map["Total Accesses"], "19");
    assert_eq!(map["BusyWorkers"], "2");
    assert_eq!(map["IdleWorkers"], "1");
    assert_eq!(map["Processes"], "3");
    assert_eq!(map["Scoreboard"], "_W.K");
    assert_eq!(map["Uptime"], "10");
    assert!(map["ReqPerSec"].parse::<f64>().is_ok());
}

#[test]
fn text_lists_every_live_worker_with_its_request() {
    let text = StatusReport::new(&snapshot(), "/x.100").to_text();
    assert!(text.contains("3 processes: 1 idle, 2 busy"), "{text}");
    for pid in ["101", "102", "104"] {
        assert_eq!(text.lines().filter(|l| l.split_whitespace().nth(1) == Some(pid)).count(), 1, "{pid}: {text}");
    }
    assert!(text.contains("127.0.0.1:40000") && text.contains("GET /<script>"), "{text}");
    assert!(text.contains("(being updated)"), "{text}");
}

#[test]
fn html_is_well_formed_xml_and_escapes_what_clients_sent() {
    let html = StatusReport::new(&snapshot(), "/x.100").to_html(Some(5));
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let document = roxmltree::Document::parse_with_options(&html, options)
        .unwrap_or_else(|e| panic!("not well-formed: {e}\n{html}"));
    let count = |class: &str| {
        document
            .descendants()
            .filter(|n| n.attribute("class").is_some_and(|c| c.split(' ').any(|c| c == class)))
            .count()
    };
    assert_eq!(count("grid"), 1);
    // One cell per slot in the grid, plus the legend's and the table's.
    let grid = document.descendants().find(|n| n.attribute("class") == Some("grid")).unwrap();
    assert_eq!(grid.children().filter(|n| n.is_element()).count(), 4);
    assert_eq!(document.descendants().filter(|n| n.has_tag_name("tr")).count(), 1 + 3);
    assert!(!html.contains("<script>"), "client text must be escaped");
    let request_cell = document
        .descendants()
        .find(|n| n.attribute("class") == Some("req") && n.text().is_some_and(|t| t.contains("alert")))
        .unwrap();
    assert_eq!(request_cell.text().unwrap(), "GET /<script>alert(\"x\")</script>&q=1 HTTP/1.1");
    let refresh = document.descendants().find(|n| n.attribute("http-equiv") == Some("refresh")).unwrap();
    assert_eq!(refresh.attribute("content"), Some("5"));
    let no_refresh = StatusReport::new(&snapshot(), "/x.100").to_html(None);
    assert!(!no_refresh.contains("http-equiv"));
}

#[test]
fn openmetrics_has_types_help_counters_and_eof() {
    let text = StatusReport::new(&snapshot(), "/x.100").to_openmetrics();
    assert!(text.ends_with("# EOF\n"));
    assert!(text.contains("# TYPE simplehttp_prefork_requests counter\n"));
    assert!(text.contains("simplehttp_prefork_requests_total 19\n"));
    assert!(text.contains("simplehttp_prefork_workers{state=\"idle\"} 1\n"));
    assert!(text.contains("simplehttp_prefork_workers{state=\"keepalive\"} 1\n"));
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("simplehttp_prefork_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    // Every sample belongs to a family declared by # TYPE just before it.
    let families: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(families.len(), text.lines().filter(|l| l.starts_with("# HELP ")).count());
}

#[test]
fn control_characters_and_quotes_are_escaped() {
    assert_eq!(html::escape("a<b>&\"c'\u{1}"), "a&lt;b&gt;&amp;&quot;c&#39;\u{FFFD}");
}

#[test]
fn durations_and_sizes_read_like_a_person_wrote_them() {
    assert_eq!(text::human_duration(5.0), "5s");
    assert_eq!(text::human_duration(3723.0), "1h 02m 03s");
    assert_eq!(text::human_duration(90_000.0), "1d 01h 00m");
    assert_eq!(text::human_bytes(512), "512 B");
    assert_eq!(text::human_bytes(1536), "1.5 KiB");
}

#[test]
fn openmetrics_is_exactly_as_recorded() {
    // The whole exposition of a fixed report: an upgrade of the encoder that renames, retypes
    // or reformats anything fails here (the names are a stable interface).
    let text = StatusReport::new(&snapshot(), "/x.100").to_openmetrics();
    if std::env::var_os("PRINT_OPENMETRICS").is_some() {
        print!("{text}");
    }
    assert_eq!(text, include_str!("openmetrics.golden"));
}
