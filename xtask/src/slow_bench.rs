//! `cargo xtask bench --slow-clients`: how long a normal client waits for its answer while
//! `slowhttptest` floods a classic pool (issue 12's attack: 400 connections opened at 100/s,
//! each sending a header line, or 24 bytes of body, every 10 s; `--max-clients 32`), second by
//! second. The promise measured: an answer within 1 s at every moment of the attack.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use prefork_scoreboard::AttachedScoreboard;
use prefork_tests::{ServerProcess, http_get, server_command, wait_for};

/// The promise: every normal request answered within this, at every moment of the attack.
const PROMISE: Duration = Duration::from_secs(1);

/// One normal request during the flood: when it started (since the flood began), how long it
/// took, and whether it was answered 200.
struct Sample {
    at: Duration,
    took: Duration,
    ok: bool,
}

/// Runs the head flood (`-H`) and the body flood (`-B`) for `seconds` each and prints, for
/// each, the normal client's latency per second of the attack and in all.
pub fn run(binary: &Path, seconds: u32) -> Result<()> {
    let probe = Command::new("slowhttptest").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status();
    ensure!(probe.is_ok(), "slowhttptest is not installed: apt-get install slowhttptest");
    let mut kept = true;
    for (name, flag) in [("slow heads (slowloris, -H)", "-H"), ("slow bodies (-B)", "-B")] {
        let (samples, most_parked) = flood(binary, flag, seconds)?;
        kept &= report(name, &samples, most_parked, seconds);
    }
    ensure!(kept, "slow clients: the 1 s promise was broken, or a flood never built up (above)");
    println!("\nslow clients: every normal request answered within 1 s");
    Ok(())
}

/// Starts a classic pool, floods it with `slowhttptest <flag>` for `seconds`, and drives a
/// closed-loop normal client (a new connection per request, no pause) all along.
fn flood(binary: &Path, flag: &str, seconds: u32) -> Result<(Vec<Sample>, u64)> {
    let server = ServerProcess::spawn(server_command(
        binary,
        &["--start-servers", "8", "--min-spare-servers", "4", "--max-spare-servers", "16", "--max-clients", "32"],
    ))?;
    let url = format!("http://{}/", server.addr());
    let length = seconds.to_string();
    let args = ["-c", "400", flag, "-i", "10", "-r", "100", "-x", "24", "-p", "3", "-l", &length, "-u", &url];
    println!("\nflood: slowhttptest {}", args.join(" "));
    // slowhttptest ends once the server has closed all its connections (the header timeout and
    // the body's minimum rate do that within seconds): a new one starts then, so that the
    // flood lasts the whole measurement.
    let attack = || {
        Command::new("slowhttptest")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting slowhttptest")
    };
    let mut attacker = attack()?;
    let mut launches = 1;
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let normal = {
        let (done, addr) = (Arc::clone(&done), server.addr());
        thread::spawn(move || {
            let mut samples = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let at = started.elapsed();
                let ok = http_get(addr, "/").is_ok_and(|response| response.status == 200);
                samples.push(Sample { at, took: started.elapsed() - at, ok });
            }
            samples
        })
    };
    // The flood's size, from shared memory (HTTP would need a free worker).
    let board = AttachedScoreboard::open(&server.scoreboard_name())?;
    let mut most_parked = 0;
    let length = Duration::from_secs(u64::from(seconds));
    let flooded = wait_for("the flood to last its time", length + Duration::from_secs(60), || {
        most_parked = most_parked.max(board.snapshot().parked());
        if attacker.try_wait()?.is_some() {
            if started.elapsed() >= length {
                return Ok(Some(()));
            }
            attacker = attack()?;
            launches += 1;
        }
        Ok(None)
    });
    // Whatever happened, nothing is left running.
    let _ = attacker.kill();
    let _ = attacker.wait();
    done.store(true, Ordering::Relaxed);
    let samples = normal.join().map_err(|_| anyhow::anyhow!("the normal client panicked"))?;
    flooded?;
    println!("flood: slowhttptest started {launches} times in {seconds} s");
    Ok((samples, most_parked))
}

/// Prints one flood's figures; true if the promise held.
fn report(name: &str, samples: &[Sample], most_parked: u64, seconds: u32) -> bool {
    let mut took: Vec<Duration> = samples.iter().map(|s| s.took).collect();
    took.sort_unstable();
    let quantile = |q: f64| took.get(((took.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    let failed = samples.iter().filter(|s| !s.ok).count();
    println!("\n{name}: {} normal requests, {failed} failed, at most {most_parked} connections parked", samples.len());
    println!(
        "  latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(quantile(0.5)),
        ms(quantile(0.99)),
        ms(quantile(1.0))
    );
    println!("  {:>6} {:>9} {:>10}", "second", "requests", "slowest");
    let mut broken = 0;
    let measured = samples.last().map_or(0, |s| s.at.as_secs() as u32);
    for second in 0..seconds.min(measured) {
        let window = Duration::from_secs(u64::from(second))..Duration::from_secs(u64::from(second) + 1);
        let in_second: Vec<&Sample> = samples.iter().filter(|s| window.contains(&s.at)).collect();
        let slowest = in_second.iter().map(|s| s.took).max().unwrap_or_default();
        // A second with no request started at all means one request took all of it.
        if in_second.is_empty() || slowest > PROMISE || in_second.iter().any(|s| !s.ok) {
            broken += 1;
        }
        println!("  {:>6} {:>9} {:>8.2} ms", second, in_second.len(), ms(slowest));
    }
    println!("  {} second(s) of {seconds} broke the 1 s promise", broken);
    // A flood that never built up proves nothing.
    let flooded = most_parked >= 200;
    if !flooded {
        println!("  the flood never built up (at most {most_parked} parked): no verdict");
    }
    broken == 0 && failed == 0 && !samples.is_empty() && flooded
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
