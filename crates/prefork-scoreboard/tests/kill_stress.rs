//! Writers SIGKILLed at any instant leave the board readable and consistent for everyone else.
//!
//! Forked writer processes publish request records whose line, client and virtual host all
//! name the same (slot, counter) pair, as fast as they can, while this process reads snapshots
//! in a loop, validates every record it sees, and SIGKILLs a writer every few milliseconds
//! (leaving its slot uncleared for a while, as a parent that has not reaped it yet would).
//! A torn record (fields from two different updates) fails it; a read that blocked on a dead
//! writer would never finish (the slowest snapshot is printed for the record).
//!
//! `harness = false`: the test binary is single-threaded, so it may fork.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use prefork_scoreboard::{RequestInfo, Scoreboard, WorkerState};

const WRITERS: usize = 4;
/// The stress runs at least this long, and until it has done at least this much...
const RUN_FOR: Duration = Duration::from_secs(3);
const ENOUGH_KILLS: u64 = 50;
const ENOUGH_RECORDS: u64 = 1000;
/// ...which a slow or busy machine may take longer to reach, but not this long.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);
const KILL_EVERY: Duration = Duration::from_millis(3);

fn main() {
    let prefix = format!("prefork-scoreboard-stress-{}", std::process::id());
    let mut scoreboard = Scoreboard::create(&prefix, WRITERS).expect("create scoreboard");
    let mut writers: Vec<Pid> = (0..WRITERS).map(|slot| spawn_writer(&mut scoreboard, slot)).collect();

    let (mut snapshots, mut records, mut unreadable, mut kills) = (0u64, 0u64, 0u64, 0u64);
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    let mut next_kill = started + KILL_EVERY;
    let mut victim = 0;
    let mut dead: Option<(usize, Instant)> = None;
    let enough = |kills, records| kills >= ENOUGH_KILLS && records >= ENOUGH_RECORDS;
    while (started.elapsed() < RUN_FOR || !enough(kills, records)) && started.elapsed() < GIVE_UP_AFTER {
        let before = Instant::now();
        let snapshot = scoreboard.board().snapshot();
        slowest = slowest.max(before.elapsed());
        snapshots += 1;
        for slot in &snapshot.slots {
            if slot.request_unreadable {
                unreadable += 1;
            }
            if let Some(record) = slot.request {
                let (line, client, vhost) = (
                    record.line().to_string_lossy(),
                    record.client().to_string_lossy(),
                    record.vhost().to_string_lossy(),
                );
                let expected = parse_line(&line).unwrap_or_else(|| panic!("malformed line {line:?}"));
                assert_eq!(expected.0, slot.index, "slot {} shows another slot's record: {line}", slot.index);
                assert_eq!(client, format!("w{}:k{}", expected.0, expected.1), "torn record: {line} / {client}");
                assert_eq!(vhost, format!("k{}.w{}.test", expected.1, expected.0), "torn record: {line} / {vhost}");
                records += 1;
            }
        }
        // A killed writer stays unreaped and uncleared for 1 ms, as between death and waitpid.
        if let Some((slot, at)) = dead {
            if at.elapsed() > Duration::from_millis(1) {
                scoreboard.board().clear_slot(slot);
                writers[slot] = spawn_writer(&mut scoreboard, slot);
                dead = None;
            }
        } else if Instant::now() >= next_kill {
            kill(writers[victim], Signal::SIGKILL).expect("kill writer");
            waitpid(writers[victim], None).expect("reap writer");
            kills += 1;
            dead = Some((victim, Instant::now()));
            victim = (victim + 1) % WRITERS;
            next_kill = Instant::now() + KILL_EVERY;
        }
    }
    for pid in &writers {
        let _ = kill(*pid, Signal::SIGKILL);
        let _ = waitpid(*pid, None);
    }
    println!(
        "kill_stress: {kills} writers killed, {snapshots} snapshots, {records} records validated, \
         {unreadable} reads of a record mid-update, slowest snapshot {slowest:?}"
    );
    let elapsed = started.elapsed();
    assert!(kills >= ENOUGH_KILLS, "only {kills} kills in {elapsed:?}: the test did not stress anything");
    assert!(records >= ENOUGH_RECORDS, "only {records} records seen in {elapsed:?}: writers did not write");
    println!("test writers_killed_at_any_instant_never_leave_a_torn_or_blocking_board ... ok");
}

/// `GET /w{slot}/k{counter}/{padding} HTTP/1.1` → (slot, counter).
fn parse_line(line: &str) -> Option<(usize, u64)> {
    let mut parts = line.strip_prefix("GET /w")?.split('/');
    let slot = parts.next()?.parse().ok()?;
    let counter = parts.next()?.strip_prefix('k')?.parse().ok()?;
    Some((slot, counter))
}

fn spawn_writer(scoreboard: &mut Scoreboard, slot: usize) -> Pid {
    // SAFETY: this test binary runs no other thread (harness = false).
    match unsafe { fork() }.expect("fork") {
        ForkResult::Parent { child } => child,
        ForkResult::Child => {
            // SAFETY: this process ends with std::process::exit (never, in fact: it is killed).
            let board = unsafe { scoreboard.worker_board() };
            let writer = board.claim_slot(slot, std::process::id(), 1);
            let padding = "x".repeat(100);
            for counter in 0u64.. {
                // Lengths vary with the counter, so a torn copy also shows in the lengths.
                let pad = &padding[..(counter % 90) as usize];
                let line = format!("GET /w{slot}/k{counter}/{pad} HTTP/1.1");
                let client = format!("w{slot}:k{counter}");
                let vhost = format!("k{counter}.w{slot}.test");
                writer.set_state(WorkerState::Writing);
                let start = writer.begin_request(&RequestInfo {
                    line: line.as_bytes(),
                    client: client.as_bytes(),
                    protocol: b"HTTP/1.1",
                    vhost: vhost.as_bytes(),
                });
                writer.finish_request(start, line.len() as u64);
                writer.set_state(WorkerState::KeepAlive);
            }
            std::process::exit(0)
        }
    }
}
