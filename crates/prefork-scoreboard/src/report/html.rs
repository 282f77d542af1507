//! The status page for people: summary figures, the scoreboard drawn as a grid of coloured
//! cells with its legend, and the per-worker table. Well-formed XHTML (tested with an XML
//! parser), no script, every client-supplied text escaped.

use std::fmt::Write as _;

use super::StatusReport;
use super::text::{human_bytes, human_duration};
use crate::WorkerState;

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px;font-weight:600}
header p{margin:4px 0 0;color:#b8c0cc;font-size:13px}
main{padding:16px 24px 32px}
h2{font-size:15px;margin:24px 0 8px;color:#3a4252;text-transform:uppercase;letter-spacing:.04em}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:10px 14px;min-width:118px}
.card b{display:block;font-size:22px;font-weight:600}
.card span{color:#667085;font-size:12px}
.card.warn{border-color:#f0b429;background:#fffbea}
.card.bad{border-color:#e12d39;background:#ffeeee}
.grid{display:flex;flex-wrap:wrap;gap:3px;background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:10px}
.cell{width:22px;height:22px;border-radius:4px;display:inline-flex;align-items:center;justify-content:center;font:600 12px ui-monospace,monospace;color:#1d2330}
.legend{display:flex;flex-wrap:wrap;gap:12px;margin-top:8px;color:#3a4252;font-size:12px}
.legend .cell{width:16px;height:16px;font-size:10px;margin-right:4px}
.s-dead{background:#eceef2;color:#a0a7b4}.s-starting{background:#cbd2e0}.s-idle{background:#a7e3b5}
.s-reading{background:#ffe08a}.s-writing{background:#ffb057}.s-keepalive{background:#8ec5ff}
.s-closing{background:#c7b3f5}.s-graceful{background:#ff9a9a}.s-idle_kill{background:#f7c6d9}
table{border-collapse:collapse;background:#fff;border:1px solid #e1e4ea;border-radius:8px;width:100%;font-size:13px}
th,td{padding:5px 8px;border-bottom:1px solid #eef0f4;text-align:left;white-space:nowrap}
th{background:#f0f2f5;font-weight:600;color:#3a4252}
td.n{text-align:right;font-variant-numeric:tabular-nums}
td.req{white-space:normal;word-break:break-all;font-family:ui-monospace,monospace;font-size:12px}
footer{margin-top:20px;color:#667085;font-size:12px}
.alert{background:#ffeeee;border:1px solid #e12d39;border-radius:8px;padding:10px 14px;color:#8a1c1c}
footer a{color:#2463eb}
";

impl StatusReport {
    /// The HTML page; with `refresh`, the page reloads itself every that many seconds.
    pub fn to_html(&self, refresh: Option<u32>) -> String {
        let mut out = String::with_capacity(8192 + 512 * self.workers.len());
        let s = &self.server;
        out.push_str("<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n");
        out.push_str(
            "<meta charset=\"utf-8\"/>\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n",
        );
        if let Some(seconds) = refresh {
            let _ = writeln!(out, "<meta http-equiv=\"refresh\" content=\"{seconds}\"/>");
        }
        let _ = writeln!(out, "<title>simplehttp-prefork status: pid {}</title>", s.parent_pid);
        let _ = writeln!(out, "<style>{STYLE}</style>\n</head>\n<body>");
        let _ = writeln!(
            out,
            "<header><h1>simplehttp-prefork status</h1><p>parent pid {} · generation {} · up {} · scoreboard {}</p></header>\n<main>",
            s.parent_pid,
            s.generation,
            human_duration(s.uptime_seconds),
            escape(&s.scoreboard)
        );
        if self.boot_failures > 0 || self.spawning_halted {
            let _ = writeln!(
                out,
                "<p class=\"alert\"><b>{} workers failed to boot in a row{}.</b> Last cause: {}</p>",
                self.boot_failures,
                if self.spawning_halted { "; forking is halted (one probe now and then)" } else { "" },
                escape(self.last_boot_error.as_deref().unwrap_or("unknown"))
            );
        }
        self.write_cards(&mut out);
        self.write_grid(&mut out);
        self.write_table(&mut out);
        let _ = writeln!(
            out,
            "<footer>Configuration: start {} · spare {}–{} · max clients {} · max requests per child {} · slow after {}.<br/>\
             Other formats: <a href=\"?json\">JSON</a> · <a href=\"?auto\">Apache auto</a> · <a href=\"?openmetrics\">OpenMetrics</a> · \
             auto-refresh: <a href=\"?refresh=2\">2 s</a> <a href=\"?refresh=10\">10 s</a> <a href=\"?\">off</a></footer>",
            self.config.start_servers,
            self.config.min_spare_servers,
            self.config.max_spare_servers,
            self.config.max_clients,
            self.config.max_requests_per_child.map_or("unlimited".to_owned(), |n| n.to_string()),
            self.config.slow_request_seconds.map_or("never".to_owned(), |s| format!("{s} s")),
        );
        out.push_str("</main>\n</body>\n</html>\n");
        out
    }

    fn write_cards(&self, out: &mut String) {
        out.push_str("<h2>Summary</h2>\n<div class=\"cards\">\n");
        let mut card = |value: String, label: &str, class: &str| {
            let _ = writeln!(
                out,
                "<div class=\"card{class}\"><b>{}</b><span>{}</span></div>",
                escape(&value),
                escape(label)
            );
        };
        card(self.processes.to_string(), "processes", "");
        card(
            self.idle.to_string(),
            "idle",
            if self.idle < self.config.min_spare_servers as usize { " warn" } else { "" },
        );
        card(self.busy.to_string(), "busy", "");
        card(self.starting.to_string(), "starting", "");
        card(self.stopping.to_string(), "stopping", "");
        card(self.total_accesses.to_string(), "requests", "");
        card(format!("{:.1}", self.requests_per_second), "requests/s (average)", "");
        card(human_bytes(self.total_bytes), "sent", "");
        card(self.total_connections.to_string(), "connections", "");
        card(self.parked.to_string(), "parked connections", "");
        card(
            format!("{} / {}", self.parked_timeouts, self.parked_evictions),
            "parked timed out / evicted",
            if self.parked_evictions > 0 { " warn" } else { "" },
        );
        card(self.slow_requests.to_string(), "slow requests", if self.slow_requests > 0 { " warn" } else { "" });
        card(format!("{} / {}", self.listen_queue, self.listen_queue_max), "listen queue now / max", "");
        card(
            self.max_clients_reached.to_string(),
            "max clients reached",
            if self.max_clients_reached > 0 { " warn" } else { "" },
        );
        card(self.stuck_kills.to_string(), "stuck workers killed", if self.stuck_kills > 0 { " warn" } else { "" });
        let boot_class = if self.spawning_halted {
            " bad"
        } else if self.boot_failures > 0 {
            " warn"
        } else {
            ""
        };
        let boot = if self.spawning_halted {
            format!("{} (halted)", self.boot_failures)
        } else {
            self.boot_failures.to_string()
        };
        card(boot, "boot failures in a row", boot_class);
        out.push_str("</div>\n");
    }

    fn write_grid(&self, out: &mut String) {
        out.push_str("<h2>Scoreboard</h2>\n<div class=\"grid\">");
        let mut workers = self.workers.iter().peekable();
        for slot in 0..self.scoreboard.chars().count() {
            let (state, title) = match workers.next_if(|w| w.slot == slot) {
                Some(w) => (w.state, format!("slot {slot}: pid {}, {}", w.pid, w.state.describe())),
                None => (WorkerState::Dead, format!("slot {slot}: {}", WorkerState::Dead.describe())),
            };
            let _ = write!(
                out,
                "<span class=\"cell s-{}\" title=\"{}\">{}</span>",
                state.name(),
                escape(&title),
                escape_char(state.letter())
            );
        }
        out.push_str("</div>\n<div class=\"legend\">");
        for state in WorkerState::ALL {
            let _ = write!(
                out,
                "<span><span class=\"cell s-{}\">{}</span>{}</span>",
                state.name(),
                escape_char(state.letter()),
                escape(state.describe())
            );
        }
        out.push_str("</div>\n");
    }

    fn write_table(&self, out: &mut String) {
        out.push_str("<h2>Workers</h2>\n<table>\n<thead><tr><th>Slot</th><th>PID</th><th>Gen</th><th>M</th>\
            <th title=\"accesses: this connection / this process / this slot\">Acc</th><th>Sent</th><th>CPU s</th><th>RSS</th>\
            <th title=\"seconds since the current or last request began\">SS</th><th title=\"duration of the last request\">Req ms</th>\
            <th>Client</th><th>Protocol</th><th>VHost</th><th>Request</th></tr></thead>\n<tbody>\n");
        for w in &self.workers {
            let request = w.request.as_ref();
            let line = if w.request_unreadable { "(being updated)" } else { request.map_or("", |r| r.line.as_str()) };
            let _ = writeln!(
                out,
                "<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td><span class=\"cell s-{}\">{}</span></td>\
                 <td class=\"n\">{}/{}/{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{:.1}</td><td class=\"n\">{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"req\">{}</td></tr>",
                w.slot,
                w.pid,
                w.generation,
                w.state.name(),
                escape_char(w.state.letter()),
                w.requests_connection,
                w.requests,
                w.requests_slot,
                human_bytes(w.bytes),
                w.cpu_seconds,
                human_bytes(w.rss_bytes),
                request.map_or(0.0, |r| r.seconds_since_start),
                w.last_request_micros as f64 / 1000.0,
                escape(request.map_or("", |r| r.client.as_str())),
                escape(request.map_or("", |r| r.protocol.as_str())),
                escape(request.map_or("", |r| r.vhost.as_str())),
                escape(line),
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
}

/// Escapes text for HTML element content and double-quoted attributes. Control characters
/// (which XML forbids even escaped) become U+FFFD.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn escape_char(c: char) -> String {
    escape(c.encode_utf8(&mut [0; 4]))
}
