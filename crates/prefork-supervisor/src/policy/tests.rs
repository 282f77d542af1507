//! Unit tests of the spare policy, including runs of a simulated pool in simulated time.

use std::time::Duration;

use super::*;

pub(super) const SEC: Micros = 1_000_000;

/// A pool of `min` workers at start, spare bounds `min..max`, at most `clients`.
pub(super) fn config(min: usize, max: usize, clients: usize) -> PoolConfig {
    PoolConfig {
        start_servers: min,
        min_spare_servers: min,
        max_spare_servers: max,
        max_clients: clients,
        ..Default::default()
    }
}

fn worker(slot: usize, state: WorkerState, since: Micros) -> WorkerView {
    WorkerView::new(slot, state, since)
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
    let surplus = PolicyMemory { surplus_since: Some(0), ..PolicyMemory::default() };
    let (d, m) = run(&workers, &cfg, 10 * SEC, &surplus);
    assert_eq!(d.retire, vec![(4, RetireReason::Surplus)], "slot 4 has been idle longest");
    assert_eq!(d.recheck_at, Some(11 * SEC));
    workers[4].retiring = true;
    let (d, m2) = run(&workers, &cfg, 10 * SEC + SEC / 2, &m);
    assert!(d.retire.is_empty(), "a second retirement within the interval: {d:?}");
    assert_eq!(d.recheck_at, Some(11 * SEC));
    let (d, _) = run(&workers, &cfg, 11 * SEC, &m2);
    assert_eq!(d.retired_slots(), vec![3]);
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
    m.worker_exited(ExitKind::BootFailure, 1, 5 * SEC, &cfg, 0.0);
    m.worker_exited(ExitKind::BootFailure, 1, 5 * SEC, &cfg, 0.0);
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
    m.worker_exited(ExitKind::BootFailure, 1, 5 * SEC, &cfg, 0.0);
    let old_timer = WorkerView { forked_at: SEC, ..worker(0, WorkerState::Idle, 0) };
    let (_, m) = run(&[old_timer], &cfg, 5 * SEC + 1, &m);
    assert_eq!(m.boot_failures, 1);
}

#[test]
fn recycling_exits_do_not_back_off() {
    let cfg = config(2, 4, 10);
    let mut m = PolicyMemory::default();
    m.worker_exited(ExitKind::AfterReady, 1, SEC, &cfg, 0.0);
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
    let d = view(&ready);
    let mut retired = d.retire.clone();
    retired.sort_by_key(|(slot, _)| *slot);
    assert_eq!(
        retired,
        vec![(0, RetireReason::OldGeneration), (1, RetireReason::OldGeneration)],
        "idle and busy old workers are all told to finish"
    );
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
    assert_eq!(d.retired_slots(), vec![1, 0], "longest idle first, as many as the new generation needs");
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
    for _ in 0..2 {
        m.worker_exited(ExitKind::BootFailure, 2, SEC, &cfg, 0.0);
    }
    let (d, _) = decide(&PoolView { now: SEC + 1, generation: 2, workers: &workers }, &cfg, &m);
    assert_eq!((d.spawn, d.retire.len()), (0, 0));
}

#[test]
fn a_reload_whose_new_generation_cannot_boot_is_abandoned() {
    let cfg = PoolConfig { max_reload_boot_failures: 3, ..config(1, 2, 10) };
    let workers = vec![generation(worker(0, WorkerState::Idle, 0), 1)];
    let mut m = PolicyMemory::default();
    for _ in 0..3 {
        m.worker_exited(ExitKind::BootFailure, 2, SEC, &cfg, 0.0);
    }
    let (d, m) = decide(&PoolView { now: 100 * SEC, generation: 2, workers: &workers }, &cfg, &m);
    assert_eq!(d.revert_generation, Some(1));
    assert!(matches!(d.notices[..], [Notice::ReloadFailed { abandoned: 2, current: 1, failures: 3 }]), "{d:?}");
    assert_eq!((d.spawn, d.retire.len()), (0, 0));
    assert_eq!(m.boot_failures, 0, "the old generation starts with a clean slate");
}

#[test]
fn boot_failures_from_before_a_reload_do_not_abandon_it() {
    // Forking was halted (say the database was down); the operator fixed it and reloads.
    let cfg = PoolConfig { max_reload_boot_failures: 3, max_boot_failures: 10, ..config(1, 2, 10) };
    let workers = vec![generation(worker(0, WorkerState::Idle, 0), 1)];
    let mut m = PolicyMemory::default();
    for _ in 0..10 {
        m.worker_exited(ExitKind::BootFailure, 1, SEC, &cfg, 0.0);
    }
    let (_, m) = run(&workers, &cfg, 2 * SEC, &m);
    assert!(m.halted);
    let (d, m) = decide(&PoolView { now: 100 * SEC, generation: 2, workers: &workers }, &cfg, &m);
    assert_eq!((d.revert_generation, d.spawn), (None, 1), "the new generation gets its chance: {d:?}");
    // Its own failures do count.
    let mut m = m;
    for _ in 0..3 {
        m.worker_exited(ExitKind::BootFailure, 2, 101 * SEC, &cfg, 0.0);
    }
    let (d, _) = decide(&PoolView { now: 200 * SEC, generation: 2, workers: &workers }, &cfg, &m);
    assert_eq!(d.revert_generation, Some(1));
}

#[test]
fn an_abandoned_reload_retires_the_stragglers_of_the_abandoned_generation() {
    let cfg = PoolConfig { max_reload_boot_failures: 3, ..config(1, 2, 10) };
    let workers =
        vec![generation(worker(0, WorkerState::Idle, 0), 1), generation(worker(1, WorkerState::Starting, 0), 2)];
    let mut m = PolicyMemory::default();
    for _ in 0..3 {
        m.worker_exited(ExitKind::BootFailure, 2, SEC, &cfg, 0.0);
    }
    let (d, _) = decide(&PoolView { now: 100 * SEC, generation: 2, workers: &workers }, &cfg, &m);
    assert_eq!((d.revert_generation, d.retire), (Some(1), vec![(1, RetireReason::AbandonedReload)]));
}

#[test]
fn a_worker_of_a_newer_abandoned_generation_is_not_current() {
    // Generation 2 was abandoned (back to 1), then a reload started generation 3: a worker of
    // 2 that booted late is neither capacity nor kept once generation 3 is ready.
    let cfg = config(1, 2, 10);
    let workers = vec![generation(worker(0, WorkerState::Idle, 0), 2), generation(worker(1, WorkerState::Idle, 0), 3)];
    let (d, _) = decide(&PoolView { now: SEC, generation: 3, workers: &workers }, &cfg, &PolicyMemory::default());
    assert_eq!((d.spawn, d.retired_slots()), (0, vec![0]));
    let (d, _) = decide(&PoolView { now: SEC, generation: 1, workers: &workers }, &cfg, &PolicyMemory::default());
    assert_eq!(d.spawn, 1, "generations 2 and 3 are not generation 1's capacity");
}

#[test]
fn a_halted_pool_never_asks_to_be_woken_in_the_past() {
    let cfg = PoolConfig { max_boot_failures: 1, ..config(1, 2, 10) };
    let m = PolicyMemory { halted: true, boot_failures: 5, spawn_not_before: SEC, ..PolicyMemory::default() };
    let (d, _) = run(&[worker(0, WorkerState::Writing, 0)], &PoolConfig { min_spare_servers: 0, ..cfg }, 5 * SEC, &m);
    assert!(d.recheck_at.is_none_or(|t| t > 5 * SEC), "{d:?}");
}

#[test]
fn too_many_boot_failures_halt_forking_but_for_a_probe_and_a_boot_resumes_it() {
    let cfg = PoolConfig {
        max_boot_failures: 3,
        boot_backoff_initial: Duration::from_millis(100),
        boot_backoff_max: Duration::from_secs(10),
        ..config(2, 4, 10)
    };
    let mut m = PolicyMemory::default();
    for _ in 0..3 {
        m.worker_exited(ExitKind::BootFailure, 1, SEC, &cfg, 0.0);
    }
    // Backoff after 3 failures is 400 ms; then forking is halted: one probe, then 10 s apart.
    let (d, m) = run(&[], &cfg, SEC + 500_000, &m);
    assert!(m.halted && d.notices.contains(&Notice::SpawningHalted { failures: 3 }), "{d:?}");
    assert_eq!(d.spawn, 1, "one probe, not the whole deficit of 2");
    assert_eq!(m.spawn_not_before, 11 * SEC + 500_000);
    let (d, m) = run(&[], &cfg, 5 * SEC, &m);
    assert_eq!(d.spawn, 0, "no second probe before boot_backoff_max");
    assert_eq!(d.recheck_at, Some(11 * SEC + 500_000));
    // The probe boots: forking resumes for the whole deficit.
    let probe = WorkerView { forked_at: 11 * SEC + 500_000, ..worker(0, WorkerState::Idle, 0) };
    let (d, m) = run(&[probe], &cfg, 12 * SEC, &m);
    assert!(d.notices.contains(&Notice::SpawningResumed), "{d:?}");
    assert!(!m.halted && m.boot_failures == 0);
    assert_eq!(d.spawn, 1);
}

#[test]
fn boot_backoff_jitter_only_ever_lengthens_the_wait_by_a_quarter_at_most() {
    let cfg = config(1, 2, 4);
    for jitter in [0.0, 0.5, 1.0, 7.0] {
        let mut m = PolicyMemory::default();
        m.worker_exited(ExitKind::BootFailure, 1, 0, &cfg, jitter);
        let wait = m.spawn_not_before;
        assert!((250_000..=312_500).contains(&wait), "jitter {jitter}: {wait}");
    }
}

fn recycling(mut w: WorkerView) -> WorkerView {
    w.retire_requested = true;
    w
}

#[test]
fn a_worker_asking_to_be_recycled_is_replaced_first_and_let_go_once_the_replacement_is_ready() {
    let cfg = config(2, 4, 10);
    // Three idle, one busy worker that reached its limit: when it goes, its client takes an
    // idle worker, and two stay idle: let it go.
    let workers = vec![
        worker(0, WorkerState::Idle, 0),
        worker(1, WorkerState::Idle, 0),
        worker(4, WorkerState::Idle, 0),
        recycling(worker(2, WorkerState::Writing, 0)),
    ];
    let (d, _) = run(&workers, &cfg, SEC, &PolicyMemory::default());
    assert_eq!((d.spawn, d.retired_slots()), (0, vec![2]));
    // Two idle besides it: its client would leave one. Fork the replacement first.
    let workers = vec![
        worker(0, WorkerState::Idle, 0),
        worker(1, WorkerState::Idle, 0),
        recycling(worker(2, WorkerState::Writing, 0)),
    ];
    let (d, _) = run(&workers, &cfg, SEC, &PolicyMemory::default());
    assert_eq!((d.spawn, d.retire.len()), (1, 0));
    let mut with_replacement = workers.clone();
    with_replacement.push(worker(3, WorkerState::Starting, SEC));
    let (d, _) = run(&with_replacement, &cfg, SEC, &PolicyMemory::default());
    assert_eq!((d.spawn, d.retire.len()), (0, 0), "the replacement is not ready yet");
    with_replacement[3].state = WorkerState::Idle;
    let (d, _) = run(&with_replacement, &cfg, SEC, &PolicyMemory::default());
    assert_eq!((d.spawn, d.retire), (0, vec![(2, RetireReason::Recycled)]));
}

#[test]
fn at_most_max_recycling_workers_are_replaced_at_once() {
    let cfg = PoolConfig { max_recycling: 2, ..config(1, 10, 20) };
    let workers: Vec<_> = (0..5)
        .map(|i| recycling(WorkerView { forked_at: i as Micros, ..worker(i, WorkerState::Writing, 0) }))
        .collect();
    let (d, _) = run(&workers, &cfg, SEC, &PolicyMemory::default());
    // Every one of them will hand its client over: replacements for all, besides the spare.
    assert_eq!(d.spawn, 6, "min_spare 1 plus five replacements");
    let mut ready = workers.clone();
    ready.extend((9..12).map(|i| worker(i, WorkerState::Idle, 0)));
    let (d, _) = run(&ready, &cfg, SEC, &PolicyMemory::default());
    assert_eq!(d.retired_slots(), vec![0, 1], "only two at once");
}

#[test]
fn with_no_room_for_a_replacement_a_recycling_worker_goes_when_idle() {
    let cfg = config(2, 4, 2);
    let busy = vec![worker(0, WorkerState::Writing, 0), recycling(worker(1, WorkerState::Writing, 0))];
    let (d, _) = run(&busy, &cfg, SEC, &PolicyMemory::default());
    assert!(d.retire.is_empty());
    let idle = vec![worker(0, WorkerState::Writing, 0), recycling(worker(1, WorkerState::Idle, 0))];
    let (d, _) = run(&idle, &cfg, SEC, &PolicyMemory::default());
    assert_eq!(d.retired_slots(), vec![1]);
}

#[test]
fn a_surplus_must_last_a_whole_interval_before_anyone_is_retired() {
    let cfg = config(1, 1, 10);
    let workers = idle(3);
    let (d, m) = run(&workers, &cfg, 10 * SEC, &PolicyMemory::default());
    assert!(d.retire.is_empty(), "{d:?}");
    assert_eq!(d.recheck_at, Some(11 * SEC));
    // The surplus goes away for a moment: the clock starts again.
    let (_, m2) = run(&idle(1), &cfg, 10 * SEC + SEC / 2, &m);
    let (d, m2) = run(&workers, &cfg, 11 * SEC, &m2);
    assert!(d.retire.is_empty(), "a surplus interrupted is a new surplus: {d:?}");
    let (d, _) = run(&workers, &cfg, 12 * SEC, &m2);
    assert_eq!(d.retire.len(), 1);
    // Uninterrupted, it is retired at 11 s.
    let (d, _) = run(&workers, &cfg, 11 * SEC, &m);
    assert_eq!(d.retire.len(), 1);
}

fn running(mut w: WorkerView, since: Micros) -> WorkerView {
    w.request_started = Some(since);
    w
}

#[test]
fn the_watchdog_looks_at_running_requests_whatever_the_letter() {
    // A worker serving several connections shows `_` while it can take more, and a stopping
    // one shows `G`: a request running past the timeout is stuck all the same.
    let cfg = PoolConfig {
        request_timeout: Some(Duration::from_secs(30)),
        request_timeout_grace: Duration::from_secs(1),
        ..config(0, 4, 10)
    };
    let workers = vec![running(worker(0, WorkerState::Idle, 0), 0), running(worker(1, WorkerState::Graceful, 0), 0)];
    let (d, _) = run(&workers, &cfg, 31 * SEC, &PolicyMemory::default());
    assert_eq!(d.stuck_kill, vec![0, 1]);
    // Nothing running: nothing stuck, however long the worker has been busy.
    let (d, _) = run(&[worker(0, WorkerState::Writing, 0)], &cfg, 100 * SEC, &PolicyMemory::default());
    assert!(d.stuck_kill.is_empty());
}

#[test]
fn a_request_past_request_timeout_and_its_grace_gets_its_worker_killed_once() {
    let cfg = PoolConfig {
        request_timeout: Some(Duration::from_secs(30)),
        request_timeout_grace: Duration::from_secs(1),
        ..config(1, 4, 10)
    };
    let workers = vec![worker(0, WorkerState::Idle, 0), running(worker(1, WorkerState::Writing, 0), 0)];
    let (d, _) = run(&workers, &cfg, 10 * SEC, &PolicyMemory::default());
    assert!(d.stuck_kill.is_empty());
    assert_eq!(d.recheck_at, Some(31 * SEC), "look again exactly when its grace is over");
    // At the timeout the worker answers an async request itself: no kill yet.
    let (d, _) = run(&workers, &cfg, 30 * SEC, &PolicyMemory::default());
    assert!(d.stuck_kill.is_empty());
    let (d, _) = run(&workers, &cfg, 31 * SEC, &PolicyMemory::default());
    assert_eq!(d.stuck_kill, vec![1]);
    assert!(matches!(d.notices[..], [Notice::Stuck { slot: 1, running_micros }] if running_micros == 31 * SEC));
    // Killed, not reaped yet: not killed again.
    let mut killed = workers.clone();
    killed[1].stuck_since = Some(31 * SEC);
    killed[1].retiring = true;
    let (d, _) = run(&killed, &cfg, 40 * SEC, &PolicyMemory::default());
    assert!(d.stuck_kill.is_empty());
}

#[test]
fn without_request_timeout_nothing_is_ever_stuck() {
    let cfg = config(1, 4, 10);
    let workers = vec![running(worker(0, WorkerState::Writing, 0), 0)];
    let (d, _) = run(&workers, &cfg, 1_000_000 * SEC, &PolicyMemory::default());
    assert!(d.stuck_kill.is_empty());
}

#[test]
fn a_retiring_worker_that_still_holds_a_client_has_an_idle_worker_spoken_for() {
    let cfg = config(2, 4, 10);
    let mut leaving = recycling(worker(2, WorkerState::Graceful, 0));
    leaving.retiring = true;
    // Two idle workers, but the leaving worker's client will take one of them.
    let workers = vec![worker(0, WorkerState::Idle, 0), worker(1, WorkerState::Idle, 0), leaving.clone()];
    let (d, _) = run(&workers, &cfg, SEC, &PolicyMemory::default());
    assert_eq!(d.spawn, 1);
    // And another worker asking to be recycled must wait for that spare, not take it.
    let mut more = workers.clone();
    more.push(worker(3, WorkerState::Idle, 0));
    more.push(recycling(worker(4, WorkerState::KeepAlive, 0)));
    let (d, _) = run(&more, &cfg, SEC, &PolicyMemory::default());
    assert!(d.retire.is_empty(), "3 idle, 1 spoken for, 1 needed for the recycled client: {d:?}");
    assert_eq!(d.spawn, 1);
}

#[test]
fn a_generation_is_ready_once_min_spare_of_its_workers_are_past_starting() {
    let config = config(3, 6, 10);
    let view =
        |workers: &[WorkerView], generation| generation_ready(&PoolView { now: SEC, generation, workers }, &config);
    let starting: Vec<WorkerView> = (0..3).map(|i| worker(i, WorkerState::Starting, 0)).collect();
    assert!(!view(&starting, 1), "nothing has booted");
    let mut booting = starting.clone();
    booting[0].state = WorkerState::Idle;
    booting[1].state = WorkerState::KeepAlive;
    assert!(!view(&booting, 1), "two of three");
    booting[2].state = WorkerState::Writing;
    assert!(view(&booting, 1), "three ready, busy or not");
    assert!(!view(&booting, 2), "they belong to the old generation");
    let mut retiring = idle(3);
    retiring[0].retiring = true;
    assert!(!view(&retiring, 1), "a worker told to go does not count");
    // With fewer start_servers than min_spare, all of them are enough.
    let few = PoolConfig { start_servers: 1, ..config.clone() };
    assert!(generation_ready(&PoolView { now: SEC, generation: 1, workers: &idle(1) }, &few));
}
