//! The real load generators of `bench --peers`: wrk for HTTP/1.1 (plain and TLS) and h2load for
//! HTTP/2, run as commands, their command lines kept for the report and their output parsed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};

/// Where wrk is expected (Debian's package).
pub const WRK: &str = "wrk";
/// Where h2load is expected (Debian's nghttp2-client).
pub const H2LOAD: &str = "h2load";

/// One load run to make.
#[derive(Debug, Clone)]
pub struct Load {
    pub tool: Tool,
    pub threads: usize,
    pub connections: usize,
    pub duration: Duration,
    /// `http://127.0.0.1:PORT/path` or `https://…`.
    pub url: String,
    /// Send `Connection: close`: every request on its own connection (and TLS handshake).
    pub close: bool,
    /// HTTP/2 streams in flight on each connection (h2load only).
    pub streams: usize,
    /// wrk's timeout for one response.
    pub timeout: Option<Duration>,
    /// A wrk Lua script.
    pub script: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Wrk,
    H2load,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub requests_per_second: f64,
    /// Completed requests.
    pub requests: u64,
    /// Socket errors, timeouts, failed streams and non-2xx/3xx answers together.
    pub errors: u64,
    /// Mean latency (wrk only).
    pub latency_mean: Option<Duration>,
    /// 99th percentile latency (wrk only).
    pub latency_p99: Option<Duration>,
}

impl Load {
    /// The command line, as a user would type it.
    pub fn command_line(&self) -> String {
        let args = self.args();
        let quoted: Vec<String> =
            args.iter().map(|a| if a.contains(' ') { format!("'{a}'") } else { a.clone() }).collect();
        format!("{} {}", self.program(), quoted.join(" "))
    }

    fn program(&self) -> &'static str {
        match self.tool {
            Tool::Wrk => WRK,
            Tool::H2load => H2LOAD,
        }
    }

    fn args(&self) -> Vec<String> {
        let seconds = self.duration.as_secs().max(1);
        let mut args = match self.tool {
            Tool::Wrk => {
                let mut args = vec![
                    format!("-t{}", self.threads),
                    format!("-c{}", self.connections),
                    format!("-d{seconds}s"),
                    "--latency".to_owned(),
                ];
                if let Some(timeout) = self.timeout {
                    args.push(format!("--timeout={}s", timeout.as_secs().max(1)));
                }
                if self.close {
                    args.extend(["-H".to_owned(), "Connection: close".to_owned()]);
                }
                if let Some(script) = &self.script {
                    args.extend(["-s".to_owned(), script.clone()]);
                }
                args
            }
            Tool::H2load => vec![
                format!("-t{}", self.threads),
                format!("-c{}", self.connections),
                format!("-m{}", self.streams),
                format!("-D{seconds}"),
            ],
        };
        args.push(self.url.clone());
        args
    }

    /// Runs the load to its end and parses what it printed.
    pub fn run(&self) -> Result<Measured> {
        let output = Command::new(self.program())
            .args(self.args())
            .output()
            .with_context(|| format!("running {}", self.command_line()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        ensure!(
            output.status.success(),
            "{} failed ({}): {}{}",
            self.command_line(),
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
        match self.tool {
            Tool::Wrk => parse_wrk(&stdout),
            Tool::H2load => parse_h2load(&stdout),
        }
        .with_context(|| format!("reading the output of {}:\n{stdout}", self.command_line()))
    }
}

/// Whether `program` runs at all (`program --version` or `-v` may exit non-zero, as wrk's does).
pub fn installed(program: &str) -> bool {
    Command::new(program).arg("-v").output().is_ok()
}

/// The first line a version flag prints, on stdout or stderr.
pub fn version(program: impl AsRef<Path>, flag: &str) -> Option<String> {
    let output = Command::new(program.as_ref()).arg(flag).output().ok()?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned)
}

fn parse_wrk(out: &str) -> Result<Measured> {
    let mut measured = Measured::default();
    let mut in_distribution = false;
    let mut seen_rate = false;
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            measured.requests_per_second = rate.trim().parse()?;
            seen_rate = true;
        } else if line.contains(" requests in ") {
            measured.requests = words[0].parse()?;
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            measured.errors += errors
                .split(',')
                .filter_map(|e| e.split_whitespace().nth(1))
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(bad) = line.strip_prefix("Non-2xx or 3xx responses:") {
            measured.errors += bad.trim().parse::<u64>()?;
        } else if line == "Latency Distribution" {
            in_distribution = true;
        } else if words.first() == Some(&"Latency") && words.len() > 1 && !in_distribution {
            measured.latency_mean = parse_duration(words[1]);
        } else if in_distribution && words.first() == Some(&"99%") && words.len() > 1 {
            measured.latency_p99 = parse_duration(words[1]);
        }
    }
    if !seen_rate {
        bail!("no Requests/sec line");
    }
    Ok(measured)
}

/// wrk's `12.34us`, `1.20ms`, `2.00s`, `1.00m`.
fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let value: f64 = text[..split].parse().ok()?;
    let seconds = match &text[split..] {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

fn parse_h2load(out: &str) -> Result<Measured> {
    let mut measured = Measured::default();
    let mut seen_rate = false;
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // "finished in 5.00s, 123456.78 req/s, 4.56MB/s"
            let rate = rest.split(',').nth(1).and_then(|r| r.trim().strip_suffix(" req/s")).context("req/s")?;
            measured.requests_per_second = rate.trim().parse()?;
            seen_rate = true;
        } else if let Some(rest) = line.strip_prefix("requests:") {
            // "N total, N started, N done, N succeeded, N failed, N errored, N timeout"
            for part in rest.split(',') {
                let mut words = part.split_whitespace();
                let (Some(n), Some(what)) = (words.next(), words.next()) else { continue };
                let n: u64 = n.parse().unwrap_or(0);
                match what {
                    "succeeded" => measured.requests = n,
                    "failed" | "errored" | "timeout" => measured.errors += n,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("status codes:") {
            // "N 2xx, N 3xx, N 4xx, N 5xx": answers that are errors count as errors.
            for part in rest.split(',') {
                let mut words = part.split_whitespace();
                if let (Some(n), Some("4xx" | "5xx")) = (words.next(), words.next()) {
                    measured.errors += n.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    if !seen_rate {
        bail!("no `finished in` line");
    }
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk() {
        let out = "Running 5s test @ http://127.0.0.1:1/\n  1 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   314.19us   64.19us 816.00us   71.20%\n    Req/Sec     2.73k    72.57     2.79k    66.67%\n  Latency Distribution\n     50%  300.00us\n     75%  350.00us\n     90%  400.00us\n     99%    1.50ms\n  1000 requests in 5.00s, 0.88MB read\n  Socket errors: connect 0, read 2, write 0, timeout 3\n  Non-2xx or 3xx responses: 5\nRequests/sec:    200.00\nTransfer/sec:    179.29KB\n";
        let m = parse_wrk(out).unwrap();
        assert_eq!(m.requests, 1000);
        assert_eq!(m.errors, 10);
        assert_eq!(m.requests_per_second, 200.0);
        assert_eq!(m.latency_mean, Some(Duration::from_secs_f64(314.19e-6)));
        assert_eq!(m.latency_p99, Some(Duration::from_secs_f64(1.5e-3)));
    }

    #[test]
    fn parses_h2load() {
        let out = "finished in 5.00s, 123456.78 req/s, 4.56MB/s\nrequests: 617283 total, 617315 started, 617283 done, 617280 succeeded, 3 failed, 0 errored, 0 timeout\n\
                   status codes: 617270 2xx, 0 3xx, 10 4xx, 0 5xx\n";
        let m = parse_h2load(out).unwrap();
        assert_eq!(m.requests, 617280);
        assert_eq!(m.errors, 13);
        assert_eq!(m.requests_per_second, 123456.78);
    }
}
