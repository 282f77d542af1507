//! The scoreboard's hot paths: a worker's state transition, a request's publication, and a
//! reader's full snapshot of 256 busy slots. Targets: ≤ 20 ns and ≤ 10 µs.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use prefork_scoreboard::{RequestInfo, Scoreboard, Snapshot, WorkerState};

fn benches(c: &mut Criterion) {
    let prefix = format!("prefork-scoreboard-bench-{}", std::process::id());
    let scoreboard = Scoreboard::create(&prefix, 256).expect("scoreboard");
    let board = scoreboard.board();
    let writers: Vec<_> = (0..256).map(|slot| board.claim_slot(slot, 1000 + slot as u32, 1)).collect();
    let info = RequestInfo {
        line: b"GET /some/fairly/typical/path?with=query&and=more HTTP/1.1",
        client: b"192.168.100.200:54321",
        protocol: b"HTTP/1.1",
        vhost: b"www.example.org",
    };
    for writer in &writers {
        writer.set_state(WorkerState::Writing);
        let _running = writer.begin_request(&info);
    }

    let writer = &writers[0];
    let states = [WorkerState::Writing, WorkerState::KeepAlive];
    let mut turn = 0usize;
    c.bench_function("one state transition", |b| {
        b.iter(|| {
            turn ^= 1;
            writer.set_state(black_box(states[turn]));
        })
    });
    c.bench_function("request published and finished", |b| {
        b.iter(|| {
            let start = writer.begin_request(black_box(&info));
            writer.finish_request(start, black_box(1234));
        })
    });
    let mut snapshot = Snapshot::empty();
    c.bench_function("snapshot of 256 busy slots", |b| {
        b.iter(|| {
            board.snapshot_into(&mut snapshot);
            black_box(&snapshot);
        })
    });
    c.bench_function("status JSON of 256 busy slots", |b| {
        b.iter(|| black_box(prefork_scoreboard::StatusReport::new(&board.snapshot(), "/bench").to_json()))
    });
}

criterion_group!(scoreboard, benches);
criterion_main!(scoreboard);
