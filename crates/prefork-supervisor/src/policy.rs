//! The spare-balancing policy: a pure function from (pool view, config, clock, memory) to actions.
//!
//! Nothing here forks, signals or reads a clock: the supervisor loop builds a [`PoolView`] from
//! the scoreboard and its own table of children, calls [`decide`], and carries out the
//! [`Decision`]. That keeps the policy testable in simulated time.
//!
//! Rules, in order:
//! 1. **Counting.** Workers the supervisor has already told to stop (`retiring`) count for
//!    `max_clients` (they still hold a process and a slot) but not as capacity. A worker that
//!    is `Starting` counts as idle, as in Apache, so a slow boot does not cause over-forking.
//! 2. **Spawn** `min(min_spare - idle, max_clients - processes, max_spawn_rate)` workers of
//!    the current generation, at once: a deficit is refilled in one round (php-fpm caps by the
//!    deficit too; Apache ramps 1, 2, 4 … per second). Not while boot failures are backing off.
//! 3. **Reload.** Workers of an older generation are not capacity. Once the current generation
//!    has `min_spare` workers ready (idle, not merely starting), every old worker is retired
//!    (busy ones finish their request first). If old workers fill `max_clients` so that the new
//!    generation cannot be forked, old *idle* workers are retired to make room.
//! 4. **Retire** the worker idle longest when more than `max_spare` are idle, at most one per
//!    `idle_retire_interval` (hysteresis: a dip in load costs at most one worker per interval).
//! 5. **Boot failures** (a worker exiting before it ever became ready) delay the next spawn by
//!    an exponential backoff; a worker that becomes ready resets it.

use prefork_scoreboard::WorkerState;

use crate::config::PoolConfig;

/// Microseconds on the monotonic clock.
pub type Micros = u64;

/// One worker as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerView {
    pub slot: usize,
    pub generation: u64,
    pub state: WorkerState,
    /// When `state` last changed.
    pub state_since: Micros,
    /// When the supervisor forked it.
    pub forked_at: Micros,
    /// The supervisor has already told it to stop.
    pub retiring: bool,
}

/// The pool at one moment.
#[derive(Clone, Debug)]
pub struct PoolView<'a> {
    pub now: Micros,
    /// The current worker generation (bumped by a reload).
    pub generation: u64,
    pub workers: &'a [WorkerView],
}

/// What the policy remembers between rounds. Owned by the supervisor, changed only through
/// [`decide`] and [`PolicyMemory::worker_exited`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyMemory {
    pub last_retire: Option<Micros>,
    /// Boot failures in a row.
    pub boot_failures: u32,
    pub last_boot_failure: Option<Micros>,
    /// No spawn before this time (boot-failure backoff).
    pub spawn_not_before: Micros,
    /// `max_clients` stopped a needed spawn in the previous round (to report it once).
    pub at_max_clients: bool,
}

/// How a worker ended, as far as the policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// It exited before it ever became ready, and nobody asked it to.
    BootFailure,
    /// Anything else: recycled, retired, crashed after serving.
    AfterReady,
}

/// Something an operator should hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// More workers were needed but `max_clients` are running.
    MaxClientsReached { processes: usize, idle: usize },
    /// Spawning waits for the boot-failure backoff.
    BootBackoff { failures: u32, wait_micros: Micros },
}

/// What the supervisor should do now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Fork this many workers of the current generation.
    pub spawn: usize,
    /// Tell the workers in these slots to finish and exit.
    pub retire: Vec<usize>,
    pub notices: Vec<Notice>,
    /// Look again at this time even if nothing happens before.
    pub recheck_at: Option<Micros>,
}

impl PolicyMemory {
    /// Records a worker's exit; boot failures start or extend the backoff.
    pub fn worker_exited(&mut self, kind: ExitKind, now: Micros, config: &PoolConfig) {
        if kind == ExitKind::BootFailure {
            self.boot_failures = self.boot_failures.saturating_add(1);
            self.last_boot_failure = Some(now);
            self.spawn_not_before = now + backoff(self.boot_failures, config);
        }
    }
}

/// Delay after `failures` boot failures in a row: initial × 2^(failures-1), capped.
pub fn backoff(failures: u32, config: &PoolConfig) -> Micros {
    if failures == 0 {
        return 0;
    }
    let initial = config.boot_backoff_initial.as_micros() as u64;
    let max = config.boot_backoff_max.as_micros() as u64;
    initial.saturating_mul(1u64 << (failures - 1).min(40)).min(max)
}

/// The policy. Pure: the same inputs always give the same outputs.
pub fn decide(view: &PoolView<'_>, config: &PoolConfig, memory: &PolicyMemory) -> (Decision, PolicyMemory) {
    let mut memory = memory.clone();
    let mut decision = Decision::default();
    let now = view.now;

    // A worker forked after the last boot failure has become ready: booting works again.
    if memory.boot_failures > 0
        && view.workers.iter().any(|w| {
            !w.retiring
                && w.state != WorkerState::Starting
                && w.state != WorkerState::Dead
                && memory.last_boot_failure.is_none_or(|t| w.forked_at >= t)
        })
    {
        memory.boot_failures = 0;
        memory.spawn_not_before = 0;
    }

    let processes = view.workers.len();
    let active = || view.workers.iter().filter(|w| !w.retiring);
    let current = || active().filter(|w| w.generation >= view.generation);
    let old = || active().filter(|w| w.generation < view.generation);
    let ready_idle = current().filter(|w| w.state == WorkerState::Idle).count();
    let capacity = current().filter(|w| w.state == WorkerState::Idle || w.state == WorkerState::Starting).count();

    // Rule 2: spawn up to the deficit.
    let deficit = config.min_spare_servers.saturating_sub(capacity);
    let room = config.max_clients.saturating_sub(processes);
    let mut wanted = deficit.min(config.max_spawn_rate);
    if wanted > 0 && now < memory.spawn_not_before {
        decision
            .notices
            .push(Notice::BootBackoff { failures: memory.boot_failures, wait_micros: memory.spawn_not_before - now });
        decision.recheck_at = Some(memory.spawn_not_before);
        wanted = 0;
    }
    decision.spawn = wanted.min(room);

    // Rule 3: old generation. Make room for the new one, then retire the rest once it is ready.
    let mut old_idle: Vec<&WorkerView> =
        old().filter(|w| w.state.is_idle() || w.state == WorkerState::Starting).collect();
    old_idle.sort_by_key(|w| (w.state_since, w.slot));
    // Old workers already told to go will free their slots; do not retire more for the same room.
    let pending_exits = view.workers.iter().filter(|w| w.retiring).count();
    let short = (wanted - decision.spawn).saturating_sub(pending_exits);
    for w in old_idle.iter().take(short) {
        decision.retire.push(w.slot);
    }
    if ready_idle >= config.min_spare_servers.min(config.max_clients) {
        for w in old() {
            if !decision.retire.contains(&w.slot) {
                decision.retire.push(w.slot);
            }
        }
    }

    let blocked_by_max_clients = decision.spawn < wanted && decision.retire.is_empty();
    if blocked_by_max_clients && !memory.at_max_clients {
        decision.notices.push(Notice::MaxClientsReached { processes, idle: capacity });
    }
    memory.at_max_clients = blocked_by_max_clients;

    // Rule 4: one excess idle worker per interval, the one idle longest.
    if ready_idle > config.max_spare_servers {
        let interval = config.idle_retire_interval.as_micros() as u64;
        let due = memory.last_retire.map_or(now, |t| t + interval);
        if now >= due {
            let longest = current()
                .filter(|w| w.state == WorkerState::Idle && !decision.retire.contains(&w.slot))
                .min_by_key(|w| (w.state_since, w.slot));
            if let Some(w) = longest {
                decision.retire.push(w.slot);
                memory.last_retire = Some(now);
            }
            if ready_idle - 1 > config.max_spare_servers {
                decision.recheck_at = earliest(decision.recheck_at, now + interval);
            }
        } else {
            decision.recheck_at = earliest(decision.recheck_at, due);
        }
    }

    (decision, memory)
}

fn earliest(a: Option<Micros>, b: Micros) -> Option<Micros> {
    Some(a.map_or(b, |a| a.min(b)))
}

#[cfg(test)]
mod tests;
