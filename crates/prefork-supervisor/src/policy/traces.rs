//! The policy run over time: a simulated pool in simulated time, and reference traces
//! (Apache's and php-fpm's spawn ramps, our one-round refill, bursts, square waves, recycling).

use super::tests::{SEC, config};
use super::*;
use crate::config::SpawnRamp;

const MS: Micros = 1_000;

/// A pool simulated in discrete time. Forks become ready after `BOOT_TICKS`, retired workers
/// leave after one tick, `load(t)` workers are busy at tick t, and each busy worker answers
/// one request per tick (asking to be recycled at `request_limit`).
struct Sim {
    config: PoolConfig,
    tick: Micros,
    workers: Vec<SimWorker>,
    memory: PolicyMemory,
    request_limit: Option<u64>,
    forks: Vec<usize>,
    retirements: usize,
    max_processes: usize,
}

struct SimWorker {
    view: WorkerView,
    age: u32,
    served: u64,
}

const BOOT_TICKS: u32 = 2;

impl Sim {
    fn new(config: PoolConfig, tick: Micros) -> Sim {
        let start = config.start_servers;
        let mut sim = Sim {
            config,
            tick,
            workers: vec![],
            memory: PolicyMemory::default(),
            request_limit: None,
            forks: vec![],
            retirements: 0,
            max_processes: 0,
        };
        for _ in 0..start {
            sim.fork(0);
        }
        sim
    }

    fn fork(&mut self, now: Micros) {
        let slot = (0..).find(|s| self.workers.iter().all(|w| w.view.slot != *s)).unwrap();
        let view = WorkerView { forked_at: now, ..WorkerView::new(slot, WorkerState::Starting, now) };
        self.workers.push(SimWorker { view, age: 0, served: 0 });
    }

    /// One tick: workers boot, serve and leave; the load is applied; then the policy runs and
    /// its decision is carried out. Returns the number forked.
    fn step(&mut self, tick: u64, load: usize) -> usize {
        let now = tick * self.tick;
        self.workers.retain(|w| !w.view.retiring);
        for w in &mut self.workers {
            w.age += 1;
            if w.view.state == WorkerState::Starting && w.age >= BOOT_TICKS {
                w.view.state = WorkerState::Idle;
                w.view.state_since = now;
            }
            if w.view.state == WorkerState::Writing {
                w.served += 1;
                if self.request_limit.is_some_and(|limit| w.served >= limit) {
                    w.view.retire_requested = true;
                }
            }
        }
        // Busy workers stay busy while the load lasts; idle ones pick up the rest.
        let mut remaining = load;
        for w in self.workers.iter_mut().filter(|w| w.view.state == WorkerState::Writing) {
            if remaining > 0 {
                remaining -= 1;
            } else {
                w.view.state = WorkerState::Idle;
                w.view.state_since = now;
            }
        }
        for w in self.workers.iter_mut().filter(|w| w.view.state == WorkerState::Idle) {
            if remaining == 0 {
                break;
            }
            remaining -= 1;
            w.view.state = WorkerState::Writing;
            w.view.state_since = now;
        }
        let views: Vec<WorkerView> = self.workers.iter().map(|w| w.view.clone()).collect();
        let (d, m) = decide(&PoolView { now, generation: 1, workers: &views }, &self.config, &self.memory);
        self.memory = m;
        for (slot, _) in &d.retire {
            let w = self.workers.iter_mut().find(|w| w.view.slot == *slot).unwrap();
            assert!(!w.view.retiring, "slot {slot} retired twice");
            w.view.retiring = true;
            self.retirements += 1;
        }
        for _ in 0..d.spawn {
            self.fork(now);
        }
        self.forks.push(d.spawn);
        self.max_processes = self.max_processes.max(self.workers.len());
        d.spawn
    }

    fn idle(&self) -> usize {
        self.workers.iter().filter(|w| !w.view.retiring && w.view.state == WorkerState::Idle).count()
    }

    fn serving(&self) -> usize {
        self.workers.iter().filter(|w| !w.view.retiring && w.view.state != WorkerState::Starting).count()
    }
}

#[test]
fn configured_like_apache_the_pool_forks_1_2_4_up_to_32_per_second() {
    // A deficit larger than what each round forks (forks still starting count as idle).
    let apache = PoolConfig {
        start_servers: 5,
        max_spawn_rate: 32,
        spawn_ramp: SpawnRamp::Doubling { cap_at_deficit: false },
        ..config(100, 200, 256)
    };
    let mut sim = Sim::new(apache, SEC);
    // A load that takes every worker as soon as it is ready: the deficit never closes.
    let forks: Vec<usize> = (1..=8).map(|t| sim.step(t, 10_000)).collect();
    assert_eq!(forks, vec![1, 2, 4, 8, 16, 32, 32, 32]);
}

#[test]
fn the_doubling_ramp_forks_one_batch_per_second_however_often_the_supervisor_wakes() {
    // The doorbell wakes the supervisor every 10 ms: the ramp must still be 1, 2, 4 per
    // second (Apache's maintenance round), not per wake-up.
    let apache = PoolConfig {
        start_servers: 1,
        max_spawn_rate: 32,
        spawn_ramp: SpawnRamp::Doubling { cap_at_deficit: false },
        ..config(100, 200, 256)
    };
    let mut sim = Sim::new(apache, 10 * MS);
    let per_second: Vec<usize> = (0..3).map(|s| (1..=100).map(|t| sim.step(s * 100 + t, 10_000)).sum()).collect();
    assert_eq!(per_second, vec![1, 2, 4]);
}

#[test]
fn apache_forks_the_whole_rate_where_php_fpm_caps_it_at_the_deficit() {
    let memory = PolicyMemory { spawn_rate: 8, ..PolicyMemory::default() };
    let workers: Vec<_> = (0..3).map(|i| WorkerView::new(i, WorkerState::Writing, 0)).collect();
    let view = PoolView { now: SEC, generation: 1, workers: &workers };
    let run = |cap_at_deficit| {
        let cfg = PoolConfig { spawn_ramp: SpawnRamp::Doubling { cap_at_deficit }, ..config(3, 6, 64) };
        decide(&view, &cfg, &memory).0.spawn
    };
    assert_eq!(run(false), 8, "Apache");
    assert_eq!(run(true), 3, "php-fpm");
}

#[test]
fn configured_like_php_fpm_the_ramp_doubles_but_never_passes_the_deficit() {
    let fpm = PoolConfig {
        max_spawn_rate: 32,
        spawn_ramp: SpawnRamp::Doubling { cap_at_deficit: true },
        ..config(20, 30, 256)
    };
    let mut sim = Sim::new(PoolConfig { start_servers: 1, ..fpm }, SEC);
    let forks: Vec<usize> = (1..=6).map(|t| sim.step(t, 10_000)).collect();
    // Doubling: 1, 2, 4, 8; then 16 would pass the deficit (20 minus the 8 still starting).
    assert_eq!(forks, vec![1, 2, 4, 8, 12, 8]);
}

#[test]
fn our_default_refills_a_deficit_in_one_round() {
    let mut sim = Sim::new(config(20, 40, 256), 10 * MS);
    for t in 1..=3 {
        sim.step(t, 0);
    }
    assert_eq!(sim.idle(), 20);
    // 20 workers go busy at once: 20 forks in the very next round.
    assert_eq!(sim.step(4, 20), 20);
}

#[test]
fn the_default_batch_respects_max_spawn_rate() {
    let mut sim = Sim::new(PoolConfig { max_spawn_rate: 8, ..config(20, 40, 256) }, 10 * MS);
    for t in 1..=3 {
        sim.step(t, 0);
    }
    assert_eq!(sim.step(4, 20), 8);
}

#[test]
fn a_burst_is_absorbed_and_the_pool_shrinks_back_within_max_spare() {
    let mut sim = Sim::new(config(2, 4, 32), 100 * MS);
    for t in 0..10 {
        sim.step(t, 0);
    }
    assert_eq!(sim.idle(), 2);
    // Demand for 20 busy workers arrives at once; every worker that becomes idle is taken at
    // once, so the pool grows by min_spare per boot time until the demand is met.
    for t in 10..50 {
        sim.step(t, 20);
        assert!(sim.workers.len() <= 32);
    }
    assert!(sim.idle() >= 2, "idle {} after the burst settled", sim.idle());
    // Load ends: the pool shrinks one per second (10 ticks) to max_spare.
    for t in 50..400 {
        sim.step(t, 0);
    }
    assert_eq!(sim.idle(), 4);
    assert!(sim.max_processes <= 32);
}

#[test]
fn a_square_wave_load_does_not_cause_a_fork_kill_storm() {
    // Load alternates 0 and 10 busy workers every 500 ms for 60 s.
    let mut sim = Sim::new(config(2, 4, 64), 100 * MS);
    for t in 0..600 {
        let load = if (t / 5) % 2 == 0 { 10 } else { 0 };
        sim.step(t, load);
    }
    // The bound: at most one retirement per idle_retire_interval (1 s), and none of a worker
    // idle less than that, so the 500 ms troughs retire nobody; forks only replace those.
    let forks: usize = sim.forks.iter().sum();
    assert!(sim.retirements <= 60, "{} retirements in 60 s", sim.retirements);
    assert_eq!(sim.retirements, 0, "troughs shorter than idle_retire_interval retire nobody");
    assert!(forks <= 2 + 12 + sim.retirements, "{forks} forks");
    assert!(sim.max_processes <= 14);
}

#[test]
fn a_square_wave_slower_than_the_interval_retires_at_most_one_per_interval() {
    // 3 s of 10 busy, 3 s of none, for 60 s: each trough retires at most 3 workers.
    let mut sim = Sim::new(config(2, 4, 64), 100 * MS);
    for t in 0..600 {
        let load = if (t / 30) % 2 == 0 { 10 } else { 0 };
        sim.step(t, load);
    }
    assert!(sim.retirements <= 10 * 3, "{} retirements", sim.retirements);
    let forks: usize = sim.forks.iter().sum();
    assert!(forks <= 2 + 12 + sim.retirements, "{forks} forks");
}

#[test]
fn the_pool_never_exceeds_max_clients_under_overload() {
    let mut sim = Sim::new(config(3, 6, 8), 100 * MS);
    for t in 0..100 {
        sim.step(t, 50);
        assert!(sim.workers.len() <= 8, "{} processes at tick {t}", sim.workers.len());
    }
}

#[test]
fn recycling_under_constant_load_never_takes_capacity_away() {
    let mut sim = Sim::new(config(2, 4, 32), 10 * MS);
    sim.request_limit = Some(50);
    let load = 6;
    for t in 0..20 {
        sim.step(t, load);
    }
    let mut recycled = 0;
    for t in 20..2000 {
        let before = sim.retirements;
        sim.step(t, load);
        recycled += sim.retirements - before;
        // Every busy worker keeps serving until its replacement is ready, so the load always
        // has its workers and the spare pool never drops below min_spare.
        assert!(sim.serving() >= load + 2, "tick {t}: {} serving for a load of {load}", sim.serving());
        assert!(sim.idle() >= 2, "tick {t}: idle {}", sim.idle());
    }
    assert!(recycled >= 100, "only {recycled} workers recycled");
    // Replacements are forked ahead for every worker about to leave, but nothing runs away.
    assert!(sim.max_processes <= 2 * (load + 2), "{} processes", sim.max_processes);
}
