//! Unit tests of the spare policy, including runs of a simulated pool in simulated time.

use std::time::Duration;

use super::*;

const SEC: Micros = 1_000_000;

fn config(min: usize, max: usize, clients: usize) -> PoolConfig {
    PoolConfig {
        start_servers: min,
        min_spare_servers: min,
        max_spare_servers: max,
        max_clients: clients,
        ..Default::default()
    }
}

fn worker(slot: usize, state: WorkerState, since: Micros) -> WorkerView {
    WorkerView { slot, generation: 1, state, state_since: since, forked_at: 0, retiring: false }
}

fn idle(n: usize) -> Vec<WorkerView> {
    (0..n).map(|i| worker(i, WorkerState::Idle, 0)).collect()
}

fn run(workers: &[WorkerView], config: &PoolConfig, now: Micros, memory: &PolicyMemory) -> (Decision, PolicyMemory) {
    decide(&PoolView { now, generation: 1, workers }, config, memory)
}

#[test]
fn a_pool_within_bounds_is_left_alone() {
    let (d, _) = run(&idle(5), &config(2, 6, 10), 10 * SEC, &PolicyMemory::default());
    assert_eq!(d, Decision::default());
}

#[test]
fn a_deficit_is_refilled_in_one_round() {
    let mut workers = idle(2);
    workers.extend((2..8).map(|i| worker(i, WorkerState::Writing, 0)));
    let (d, _) = run(&workers, &config(5, 10, 20), SEC, &PolicyMemory::default());
    assert_eq!(d.spawn, 3);
    assert!(d.retire.is_empty());
}

#[test]
fn starting_workers_count_as_idle_so_a_slow_boot_does_not_over_fork() {
    let mut workers = idle(1);
    workers.push(worker(1, WorkerState::Starting, 0));
    let (d, _) = run(&workers, &config(2, 4, 10), SEC, &PolicyMemory::default());
    assert_eq!(d.spawn, 0);
}

#[test]
fn the_spawn_batch_is_capped_by_max_spawn_rate_and_max_clients() {
    let busy: Vec<_> = (0..4).map(|i| worker(i, WorkerState::Writing, 0)).collect();
    let (d, _) = run(&busy, &PoolConfig { max_spawn_rate: 2, ..config(10, 20, 100) }, SEC, &PolicyMemory::default());
    assert_eq!(d.spawn, 2);
    let (d, _) = run(&busy, &config(10, 20, 7), SEC, &PolicyMemory::default());
    assert_eq!(d.spawn, 3);
}

#[test]
fn reaching_max_clients_is_reported_once_until_it_clears() {
    let cfg = config(2, 4, 3);
    let busy: Vec<_> = (0..3).map(|i| worker(i, WorkerState::Writing, 0)).collect();
    let (d, m) = run(&busy, &cfg, SEC, &PolicyMemory::default());
    assert_eq!((d.spawn, d.notices.len()), (0, 1));
    assert!(matches!(d.notices[0], Notice::MaxClientsReached { processes: 3, idle: 0 }));
    let (d, m) = run(&busy, &cfg, 2 * SEC, &m);
    assert!(d.notices.is_empty(), "reported twice: {d:?}");
    let (_, m) = run(&idle(3), &cfg, 3 * SEC, &m);
    assert!(!m.at_max_clients);
    let (d, _) = run(&busy, &cfg, 4 * SEC, &m);
    assert_eq!(d.notices.len(), 1);
}

#[test]
fn excess_idle_workers_go_one_per_interval_longest_idle_first() {
    let cfg = config(1, 2, 10);
    let mut workers: Vec<_> = (0..5).map(|i| worker(i, WorkerState::Idle, 100 - i as Micros)).collect();
    let (d, m) = run(&workers, &cfg, 10 * SEC, &PolicyMemory::default());
    assert_eq!(d.retire, vec![4], "slot 4 has been idle longest");
    assert_eq!(d.recheck_at, Some(11 * SEC));
    workers[4].retiring = true;
    let (d, m2) = run(&workers, &cfg, 10 * SEC + SEC / 2, &m);
    assert!(d.retire.is_empty(), "a second retirement within the interval: {d:?}");
    assert_eq!(d.recheck_at, Some(11 * SEC));
    let (d, _) = run(&workers, &cfg, 11 * SEC, &m2);
    assert_eq!(d.retire, vec![3]);
}

#[test]
fn busy_workers_are_never_retired_for_excess() {
    let cfg = config(1, 1, 10);
    let workers: Vec<_> =
        (0..4).map(|i| worker(i, if i == 0 { WorkerState::Idle } else { WorkerState::KeepAlive }, 0)).collect();
    let (d, _) = run(&workers, &cfg, SEC, &PolicyMemory::default());
    assert!(d.retire.is_empty());
}

#[test]
fn boot_failures_back_off_exponentially_and_reset_once_a_worker_boots() {
    let cfg = PoolConfig {
        boot_backoff_initial: Duration::from_millis(100),
        boot_backoff_max: Duration::from_millis(1000),
        ..config(2, 4, 10)
    };
    assert_eq!((1..=6).map(|n| backoff(n, &cfg) / 1000).collect::<Vec<_>>(), vec![100, 200, 400, 800, 1000, 1000]);
    let mut m = PolicyMemory::default();
    m.worker_exited(ExitKind::BootFailure, 5 * SEC, &cfg);
    m.worker_exited(ExitKind::BootFailure, 5 * SEC, &cfg);
    let (d, m) = run(&[], &cfg, 5 * SEC + 100_000, &m);
    assert_eq!(d.spawn, 0);
    assert_eq!(d.recheck_at, Some(5 * SEC + 200_000));
    assert!(matches!(d.notices[0], Notice::BootBackoff { failures: 2, .. }));
    let (d, m) = run(&[], &cfg, 5 * SEC + 200_000, &m);
    assert_eq!(d.spawn, 2);
    // A worker forked after the failures became ready: backoff is over.
    let booted = WorkerView { forked_at: 5 * SEC + 200_000, ..worker(0, WorkerState::Idle, 0) };
    let (_, m) = run(&[booted], &cfg, 6 * SEC, &m);
    assert_eq!((m.boot_failures, m.spawn_not_before), (0, 0));
}

#[test]
fn a_worker_that_was_ready_before_the_failures_does_not_end_the_backoff() {
    let cfg = config(2, 4, 10);
    let mut m = PolicyMemory::default();
    m.worker_exited(ExitKind::BootFailure, 5 * SEC, &cfg);
    let old_timer = WorkerView { forked_at: SEC, ..worker(0, WorkerState::Idle, 0) };
    let (_, m) = run(&[old_timer], &cfg, 5 * SEC + 1, &m);
    assert_eq!(m.boot_failures, 1);
}

#[test]
fn recycling_exits_do_not_back_off() {
    let cfg = config(2, 4, 10);
    let mut m = PolicyMemory::default();
    m.worker_exited(ExitKind::AfterReady, SEC, &cfg);
    let (d, _) = run(&idle(1), &cfg, SEC, &m);
    assert_eq!(d.spawn, 1);
}

fn generation(mut w: WorkerView, generation: u64) -> WorkerView {
    w.generation = generation;
    w
}

#[test]
fn a_reload_forks_the_new_generation_and_retires_the_old_once_it_is_ready() {
    let cfg = config(2, 4, 10);
    let old: Vec<_> =
        vec![generation(worker(0, WorkerState::Idle, 0), 1), generation(worker(1, WorkerState::Writing, 0), 1)];
    let view = |workers: &[WorkerView]| -> Decision {
        decide(&PoolView { now: SEC, generation: 2, workers }, &cfg, &PolicyMemory::default()).0
    };
    let d = view(&old);
    assert_eq!(d.spawn, 2, "old workers are not capacity for the new generation");
    assert!(d.retire.is_empty(), "old workers keep serving until the new ones are ready");

    let mut starting = old.clone();
    starting.push(generation(worker(2, WorkerState::Starting, 0), 2));
    starting.push(generation(worker(3, WorkerState::Starting, 0), 2));
    let d = view(&starting);
    assert_eq!((d.spawn, d.retire.len()), (0, 0));

    let mut ready = old.clone();
    ready.push(generation(worker(2, WorkerState::Idle, 0), 2));
    ready.push(generation(worker(3, WorkerState::Idle, 0), 2));
    let mut d = view(&ready);
    d.retire.sort();
    assert_eq!(d.retire, vec![0, 1], "idle and busy old workers are all told to finish");
}

#[test]
fn a_reload_with_a_full_pool_retires_old_idle_workers_to_make_room() {
    let cfg = config(2, 4, 3);
    let workers = vec![
        generation(worker(0, WorkerState::Idle, 5), 1),
        generation(worker(1, WorkerState::Idle, 3), 1),
        generation(worker(2, WorkerState::Writing, 0), 1),
    ];
    let (d, _) = decide(&PoolView { now: SEC, generation: 2, workers: &workers }, &cfg, &PolicyMemory::default());
    assert_eq!(d.spawn, 0);
    assert_eq!(d.retire, vec![1, 0], "longest idle first, as many as the new generation needs");
    assert!(d.notices.is_empty());
    // Next round, while those two are still exiting: no further retirements.
    let mut exiting = workers.clone();
    exiting[0].retiring = true;
    exiting[1].retiring = true;
    let (d, _) = decide(&PoolView { now: SEC, generation: 2, workers: &exiting }, &cfg, &PolicyMemory::default());
    assert_eq!((d.spawn, d.retire.len()), (0, 0));
}

#[test]
fn a_new_generation_that_cannot_boot_leaves_the_old_one_serving() {
    let cfg = config(1, 2, 10);
    let workers = vec![generation(worker(0, WorkerState::Idle, 0), 1)];
    let mut m = PolicyMemory::default();
    for _ in 0..5 {
        m.worker_exited(ExitKind::BootFailure, SEC, &cfg);
    }
    let (d, _) = decide(&PoolView { now: SEC + 1, generation: 2, workers: &workers }, &cfg, &m);
    assert_eq!((d.spawn, d.retire.len()), (0, 0));
}

/// A pool simulated in discrete time: forks become idle after `boot` ticks, retired workers
/// leave after one tick, and `load(t)` workers are busy at tick t.
struct Sim {
    config: PoolConfig,
    workers: Vec<(WorkerView, u32)>, // view, ticks since fork
    memory: PolicyMemory,
    forks: usize,
    retirements: usize,
    max_processes: usize,
}

const TICK: Micros = 100_000; // 100 ms

impl Sim {
    fn new(config: PoolConfig) -> Sim {
        let start = config.start_servers;
        let mut sim = Sim {
            config,
            workers: vec![],
            memory: PolicyMemory::default(),
            forks: 0,
            retirements: 0,
            max_processes: 0,
        };
        for _ in 0..start {
            sim.fork(0);
        }
        sim
    }

    fn fork(&mut self, now: Micros) {
        let slot = (0..).find(|s| self.workers.iter().all(|(w, _)| w.slot != *s)).unwrap();
        self.workers.push((WorkerView { forked_at: now, ..worker(slot, WorkerState::Starting, now) }, 0));
        self.forks += 1;
    }

    /// One tick: apply the load, then run the policy and carry out its decision.
    fn step(&mut self, tick: u64, load: usize) {
        let now = tick * TICK;
        self.workers.retain(|(w, _)| !w.retiring);
        for (w, age) in &mut self.workers {
            *age += 1;
            if w.state == WorkerState::Starting && *age >= 2 {
                w.state = WorkerState::Idle;
                w.state_since = now;
            }
        }
        // Busy workers stay busy while the load lasts; idle ones pick up the rest.
        let mut remaining = load;
        for (w, _) in self.workers.iter_mut().filter(|(w, _)| w.state == WorkerState::Writing) {
            if remaining > 0 {
                remaining -= 1;
            } else {
                w.state = WorkerState::Idle;
                w.state_since = now;
            }
        }
        for (w, _) in self.workers.iter_mut().filter(|(w, _)| w.state == WorkerState::Idle) {
            if remaining == 0 {
                break;
            }
            remaining -= 1;
            w.state = WorkerState::Writing;
            w.state_since = now;
        }
        let views: Vec<WorkerView> = self.workers.iter().map(|(w, _)| w.clone()).collect();
        let (d, m) = decide(&PoolView { now, generation: 1, workers: &views }, &self.config, &self.memory);
        self.memory = m;
        for slot in &d.retire {
            let (w, _) = self.workers.iter_mut().find(|(w, _)| w.slot == *slot).unwrap();
            assert!(!w.retiring);
            w.retiring = true;
            self.retirements += 1;
        }
        for _ in 0..d.spawn {
            self.fork(now);
        }
        self.max_processes = self.max_processes.max(self.workers.len());
    }

    fn idle(&self) -> usize {
        self.workers.iter().filter(|(w, _)| !w.retiring && w.state == WorkerState::Idle).count()
    }
}

#[test]
fn simulated_burst_is_absorbed_and_the_pool_shrinks_back_within_max_spare() {
    let mut sim = Sim::new(config(2, 4, 32));
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
    let states: String = sim.workers.iter().map(|(w, _)| w.state.letter()).collect();
    assert!(sim.idle() >= 2, "idle {} after the burst settled: {states}", sim.idle());
    // Load ends: the pool shrinks one per second (10 ticks) to max_spare.
    for t in 50..400 {
        sim.step(t, 0);
    }
    assert_eq!(sim.idle(), 4);
    assert!(sim.max_processes <= 32);
}

#[test]
fn simulated_square_wave_load_does_not_cause_a_fork_kill_storm() {
    // Load alternates 0 and 10 busy workers every 500 ms for 60 s.
    let mut sim = Sim::new(config(2, 4, 64));
    let ticks = 600;
    for t in 0..ticks {
        let load = if (t / 5) % 2 == 0 { 10 } else { 0 };
        sim.step(t, load);
    }
    // Retirements are bounded by one per idle_retire_interval (1 s): at most 60 in 60 s, and
    // each retirement can cause at most one later fork, beyond the initial ramp-up.
    assert!(sim.retirements <= 60, "{} retirements", sim.retirements);
    assert!(sim.forks <= 2 + 12 + sim.retirements, "{} forks", sim.forks);
    assert!(sim.max_processes <= 64);
}

#[test]
fn simulated_pool_never_exceeds_max_clients_under_overload() {
    let mut sim = Sim::new(config(3, 6, 8));
    for t in 0..100 {
        sim.step(t, 50);
        assert!(sim.workers.len() <= 8, "{} processes at tick {t}", sim.workers.len());
    }
}
