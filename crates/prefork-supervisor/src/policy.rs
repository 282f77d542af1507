//! The pool policy: a pure function from (pool view, config, clock, memory) to actions.
//!
//! Nothing here forks, signals or reads a clock: the supervisor loop builds a [`PoolView`] from
//! the scoreboard and its own table of children, calls [`decide`], and carries out the
//! [`Decision`]. That keeps the policy testable in simulated time.
//!
//! Rules, in order:
//! 1. **Counting.** Workers the supervisor has already told to stop (`retiring`) count for
//!    `max_clients` (they still hold a process and a slot) but not as capacity, and one that
//!    still holds a client will hand it to an idle worker: that idle worker is spoken for. A
//!    worker that is `Starting` counts as idle, as in Apache, so a slow boot does not cause
//!    over-forking. Up to `max_recycling` workers that asked to be replaced are *recycling*:
//!    not capacity.
//! 2. **Spawn** up to `min_spare - idle` workers of the current generation, capped by
//!    `max_spawn_rate` and `max_clients`: by default the whole deficit in one round (php-fpm
//!    caps by the deficit too; Apache ramps 1, 2, 4 … per round, see [`SpawnRamp`]). Not while
//!    boot failures are backing off; after `max_boot_failures` in a row, only one probe per
//!    `boot_backoff_max` until a worker boots again.
//! 3. **Reload.** Workers of another generation than the current one are not capacity. Once the current generation
//!    has `min_spare` workers ready (idle, not merely starting), every old worker is retired
//!    (busy ones finish their request first). If old workers fill `max_clients` so that the new
//!    generation cannot be forked, old *idle* workers are retired to make room. If the new
//!    generation fails to boot `max_reload_boot_failures` times in a row (its own workers:
//!    failures from before the reload do not count), the reload is
//!    abandoned: the old generation becomes current again, and the abandoned generation's
//!    stragglers (forked before the revert, booting late) are retired.
//! 4. **Recycle** a worker that asked to be replaced once the pool keeps `min_spare` ready idle
//!    workers after it has gone and its client has moved (rule 2 forks that replacement first,
//!    counting a busy recycling worker as a spare already spent), so capacity never dips; or,
//!    when `max_clients` leaves no room for a replacement, once it is idle.
//! 5. **Retire** the worker idle longest when more than `max_spare` are idle, once that
//!    surplus has lasted a whole `idle_retire_interval`, and at most one per interval
//!    (hysteresis: a dip in load shorter than the interval retires nobody, and any
//!    oscillation costs at most one worker per interval).
//! 6. **Stuck workers.** A request running past `request_timeout` plus `request_timeout_grace`
//!    (the oldest one running, in a worker serving several): SIGKILL. The worker itself ends an
//!    async request at `request_timeout` (503); what is still running after the grace is a
//!    blocking handler, which only a kill can stop.

use prefork_scoreboard::WorkerState;

use crate::config::{PoolConfig, SpawnRamp};

/// Microseconds on the monotonic clock.
pub type Micros = u64;

/// One worker as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerView {
    /// Its scoreboard slot.
    pub slot: usize,
    /// The generation it was forked into.
    pub generation: u64,
    /// Its state on the scoreboard.
    pub state: WorkerState,
    /// When `state` last changed.
    pub state_since: Micros,
    /// When the supervisor forked it.
    pub forked_at: Micros,
    /// The supervisor has already told it to stop.
    pub retiring: bool,
    /// It reached a recycling limit and asks to be replaced.
    pub retire_requested: bool,
    /// When the oldest request it is running began (`None`: none is running).
    pub request_started: Option<Micros>,
    /// When it was killed for a request past `request_timeout` (it is being reaped).
    pub stuck_since: Option<Micros>,
}

impl WorkerView {
    /// A worker in `state` since `since`, forked at 0, generation 1, nothing else going on.
    pub fn new(slot: usize, state: WorkerState, since: Micros) -> WorkerView {
        WorkerView {
            slot,
            generation: 1,
            state,
            state_since: since,
            forked_at: 0,
            retiring: false,
            retire_requested: false,
            request_started: None,
            stuck_since: None,
        }
    }
}

/// The pool at one moment.
#[derive(Clone, Debug)]
pub struct PoolView<'a> {
    /// The time of this view.
    pub now: Micros,
    /// The current worker generation (bumped by a reload).
    pub generation: u64,
    /// Every worker process the supervisor has, retiring ones included.
    pub workers: &'a [WorkerView],
}

/// What the policy remembers between rounds. Owned by the supervisor, changed only through
/// [`decide`] and [`PolicyMemory::worker_exited`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyMemory {
    /// When the last surplus idle worker was retired (rule 5).
    pub last_retire: Option<Micros>,
    /// Since when more than `max_spare` workers have been idle.
    pub surplus_since: Option<Micros>,
    /// Boot failures in a row (any generation): the backoff and halting go by these.
    pub boot_failures: u32,
    /// The generation of the last worker that failed to boot, and how many of that
    /// generation failed in a row: a reload is judged by its own workers only, not by
    /// failures from before it.
    pub failing_generation: u64,
    /// Boot failures in a row of `failing_generation`.
    pub generation_failures: u32,
    /// When the last worker failed to boot.
    pub last_boot_failure: Option<Micros>,
    /// No spawn before this time (boot-failure backoff).
    pub spawn_not_before: Micros,
    /// Forking is halted after `max_boot_failures` (probes only).
    pub halted: bool,
    /// `max_clients` stopped a needed spawn in the previous round (to report it once).
    pub at_max_clients: bool,
    /// The current batch size of [`SpawnRamp::Doubling`].
    pub spawn_rate: usize,
    /// When [`SpawnRamp::Doubling`] last forked a batch: its batches are [`RAMP_ROUND`] apart.
    pub last_ramp_round: Option<Micros>,
}

/// Time between two batches of [`SpawnRamp::Doubling`]: Apache's one-second maintenance
/// round, whatever wakes the supervisor in between.
pub const RAMP_ROUND: Micros = 1_000_000;

impl Default for PolicyMemory {
    fn default() -> Self {
        PolicyMemory {
            last_retire: None,
            surplus_since: None,
            boot_failures: 0,
            failing_generation: 0,
            generation_failures: 0,
            last_boot_failure: None,
            spawn_not_before: 0,
            halted: false,
            at_max_clients: false,
            spawn_rate: 1,
            last_ramp_round: None,
        }
    }
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
    MaxClientsReached {
        /// Worker processes running.
        processes: usize,
        /// Idle or starting workers of the current generation.
        idle: usize,
    },
    /// Spawning waits for the boot-failure backoff.
    BootBackoff {
        /// Boot failures in a row.
        failures: u32,
        /// Time left before the next fork, µs.
        wait_micros: Micros,
    },
    /// Too many boot failures in a row: forking stops but for probes.
    SpawningHalted {
        /// Boot failures in a row.
        failures: u32,
    },
    /// A worker booted again after forking was halted.
    SpawningResumed,
    /// The new generation could not boot: the reload is abandoned.
    ReloadFailed {
        /// The generation given up.
        abandoned: u64,
        /// The generation current again.
        current: u64,
        /// Boot failures in a row of the abandoned generation.
        failures: u32,
    },
    /// A worker's request ran past `request_timeout`.
    Stuck {
        /// The worker's slot.
        slot: usize,
        /// How long its oldest request has been running, µs.
        running_micros: Micros,
    },
}

/// What the supervisor should do now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Fork this many workers of the current generation.
    pub spawn: usize,
    /// Tell the workers in these slots to finish and exit (SIGTERM), and why.
    pub retire: Vec<(usize, RetireReason)>,
    /// SIGKILL these workers: a request has run past `request_timeout` and its grace.
    pub stuck_kill: Vec<usize>,
    /// Go back to this generation (a failed reload).
    pub revert_generation: Option<u64>,
    /// What to tell the operator.
    pub notices: Vec<Notice>,
    /// Look again at this time even if nothing happens before.
    pub recheck_at: Option<Micros>,
}

/// Why the policy retires a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetireReason {
    /// Rule 3: a reload's new generation is ready (or needs the room).
    OldGeneration,
    /// Rule 3: the reload was abandoned; this worker belongs to the generation given up.
    AbandonedReload,
    /// Rule 4: it asked to be replaced, and its replacement is ready.
    Recycled,
    /// Rule 4: it asked to be replaced, and `max_clients` leaves no room for a replacement.
    RecycledWithoutReplacement,
    /// Rule 5: more than `max_spare` idle for a whole interval.
    Surplus,
}

impl RetireReason {
    /// For the log.
    pub fn describe(self) -> &'static str {
        match self {
            RetireReason::OldGeneration => "old generation",
            RetireReason::AbandonedReload => "abandoned reload",
            RetireReason::Recycled => "recycled: its replacement is ready",
            RetireReason::RecycledWithoutReplacement => "recycled: max_clients leaves no room for a replacement",
            RetireReason::Surplus => "surplus idle worker",
        }
    }
}

impl Decision {
    /// The slots retired, in order.
    pub fn retired_slots(&self) -> Vec<usize> {
        self.retire.iter().map(|(slot, _)| *slot).collect()
    }

    fn retires(&self, slot: usize) -> bool {
        self.retire.iter().any(|(s, _)| *s == slot)
    }
}

impl PolicyMemory {
    /// Records the exit of a worker of `generation`; boot failures start or extend the
    /// backoff. `jitter` (0..=1) spreads the retry so that many failing servers do not retry
    /// in step.
    pub fn worker_exited(&mut self, kind: ExitKind, generation: u64, now: Micros, config: &PoolConfig, jitter: f64) {
        if kind == ExitKind::BootFailure {
            self.boot_failures = self.boot_failures.saturating_add(1);
            if generation == self.failing_generation {
                self.generation_failures = self.generation_failures.saturating_add(1);
            } else {
                (self.failing_generation, self.generation_failures) = (generation, 1);
            }
            self.last_boot_failure = Some(now);
            let delay = backoff(self.boot_failures, config);
            self.spawn_not_before = now + delay + (delay as f64 * 0.25 * jitter.clamp(0.0, 1.0)) as Micros;
        }
    }
}

/// Delay after `failures` boot failures in a row: initial × 2^(failures-1), capped (before
/// jitter).
pub fn backoff(failures: u32, config: &PoolConfig) -> Micros {
    if failures == 0 {
        return 0;
    }
    let initial = config.boot_backoff_initial.as_micros() as u64;
    let max = config.boot_backoff_max.as_micros() as u64;
    initial.saturating_mul(1u64 << (failures - 1).min(40)).min(max)
}

/// Whether the current generation is ready to take traffic: as many of its workers ready
/// (past `Starting`, not told to go) as the pool keeps spare at least, or all of
/// `start_servers` if that is fewer. What the server's readiness probe waits for at start.
pub fn generation_ready(view: &PoolView<'_>, config: &PoolConfig) -> bool {
    let needed = config.min_spare_servers.min(config.start_servers).max(1);
    let ready = view
        .workers
        .iter()
        .filter(|w| w.generation == view.generation && !w.retiring)
        .filter(|w| w.state != WorkerState::Starting && w.state != WorkerState::Dead)
        .count();
    ready >= needed
}

/// The policy. Pure: the same inputs always give the same outputs. One step per rule of the
/// module documentation, in its order.
pub fn decide(view: &PoolView<'_>, config: &PoolConfig, memory: &PolicyMemory) -> (Decision, PolicyMemory) {
    let mut round = Round { view, config, now: view.now, memory: memory.clone(), decision: Decision::default() };
    round.resume_or_halt_spawning();
    let counts = Counts::of(view, config);
    let needed = round.spawn(&counts);
    if round.abandon_failed_reload() {
        return round.finish();
    }
    round.make_room_and_retire_old_generation(&counts, needed);
    round.note_max_clients(&counts, needed);
    round.recycle(&counts);
    round.retire_surplus(&counts);
    round.kill_stuck();
    round.finish()
}

/// One call of [`decide`]: its inputs, and the decision and memory it builds.
struct Round<'r, 'v> {
    view: &'r PoolView<'v>,
    config: &'r PoolConfig,
    now: Micros,
    memory: PolicyMemory,
    decision: Decision,
}

/// Rule 1, counting: what the pool holds this round.
struct Counts<'r> {
    /// Worker processes, retiring ones included (they still hold a process and a slot).
    processes: usize,
    /// Free places under `max_clients`.
    room: usize,
    /// Current-generation workers that asked to be replaced, oldest first.
    requesting: Vec<&'r WorkerView>,
    /// The first `max_recycling` of them: being replaced now, not capacity.
    recycling: Vec<usize>,
    /// Current workers idle and ready.
    ready_idle: usize,
    /// Current workers idle or starting (a slow boot does not cause over-forking).
    capacity: usize,
    /// Workers that asked to be replaced while holding a client: the client will move to an
    /// idle worker, so that worker is spoken for.
    recycling_busy: usize,
    /// Workers already told to go while holding a client, which hand it over the same way.
    handing_over: usize,
}

impl<'r> Counts<'r> {
    fn of(view: &'r PoolView<'_>, config: &PoolConfig) -> Counts<'r> {
        let active = || view.workers.iter().filter(|w| !w.retiring);
        let mut requesting: Vec<&WorkerView> =
            active().filter(|w| w.generation == view.generation && w.retire_requested).collect();
        requesting.sort_by_key(|w| (w.forked_at, w.slot));
        let recycling: Vec<usize> = requesting.iter().take(config.max_recycling).map(|w| w.slot).collect();
        let current = || active().filter(|w| w.generation == view.generation && !recycling.contains(&w.slot));
        let ready_idle = current().filter(|w| w.state == WorkerState::Idle).count();
        let capacity = current().filter(|w| w.state == WorkerState::Idle || w.state == WorkerState::Starting).count();
        // A busy worker that asked to be replaced closes its client's connection after the
        // response in hand, and the client reconnects to an idle worker: count that in
        // advance, so the replacement is forked first. (Every such worker drains, not only
        // the `max_recycling` being retired now.)
        let recycling_busy = requesting.iter().filter(|w| !w.state.is_idle()).count();
        let handing_over = view
            .workers
            .iter()
            .filter(|w| w.retiring && (w.state.is_busy() || w.state == WorkerState::Graceful))
            .count();
        let processes = view.workers.len();
        Counts {
            processes,
            room: config.max_clients.saturating_sub(processes),
            requesting,
            recycling,
            ready_idle,
            capacity,
            recycling_busy,
            handing_over,
        }
    }
}

impl Round<'_, '_> {
    fn micros(duration: std::time::Duration) -> Micros {
        duration.as_micros() as Micros
    }

    /// Workers not yet told to stop.
    fn active(&self) -> impl Iterator<Item = &WorkerView> + '_ {
        self.view.workers.iter().filter(|w| !w.retiring)
    }

    /// Active workers of another generation than the current one.
    fn old(&self) -> impl Iterator<Item = &WorkerView> + '_ {
        let generation = self.view.generation;
        self.active().filter(move |w| w.generation != generation)
    }

    /// Before the rules: a worker forked after the last boot failure has become ready, so
    /// booting works again; or too many failures in a row halt spawning (rule 2's probe).
    fn resume_or_halt_spawning(&mut self) {
        let memory = &mut self.memory;
        if memory.boot_failures > 0
            && self.view.workers.iter().any(|w| {
                !w.retiring
                    && w.state != WorkerState::Starting
                    && w.state != WorkerState::Dead
                    && memory.last_boot_failure.is_none_or(|t| w.forked_at >= t)
            })
        {
            if memory.halted {
                self.decision.notices.push(Notice::SpawningResumed);
            }
            memory.boot_failures = 0;
            memory.generation_failures = 0;
            memory.spawn_not_before = 0;
            memory.halted = false;
        }
        if self.config.max_boot_failures > 0 && memory.boot_failures >= self.config.max_boot_failures && !memory.halted
        {
            memory.halted = true;
            self.decision.notices.push(Notice::SpawningHalted { failures: memory.boot_failures });
        }
    }

    /// Rule 2, spawn: sets the batch to fork, and returns what the pool needs this round (a
    /// ramp may want a bigger batch than the deficit).
    fn spawn(&mut self, counts: &Counts<'_>) -> usize {
        let (config, now) = (self.config, self.now);
        let memory = &mut self.memory;
        let decision = &mut self.decision;
        let deficit =
            (config.min_spare_servers + counts.recycling_busy + counts.handing_over).saturating_sub(counts.capacity);
        let rate = match config.spawn_ramp {
            SpawnRamp::Deficit => deficit.min(config.max_spawn_rate),
            SpawnRamp::Doubling { .. }
                if deficit > 0 && memory.last_ramp_round.is_some_and(|t| now < t + RAMP_ROUND) =>
            {
                // Between two rounds: the batch already forked this round is booting.
                let next = memory.last_ramp_round.map_or(now, |t| t + RAMP_ROUND);
                decision.recheck_at = earliest(decision.recheck_at, next);
                0
            }
            SpawnRamp::Doubling { cap_at_deficit } => {
                let rate = memory.spawn_rate.clamp(1, config.max_spawn_rate);
                match (deficit, cap_at_deficit) {
                    (0, _) => 0,
                    (_, true) => deficit.min(rate),
                    (_, false) => rate,
                }
            }
        };
        let in_ramp_pause = matches!(config.spawn_ramp, SpawnRamp::Doubling { .. }) && deficit > 0 && rate == 0;
        let mut wanted = rate;
        if wanted > 0 && now < memory.spawn_not_before {
            decision.notices.push(Notice::BootBackoff {
                failures: memory.boot_failures,
                wait_micros: memory.spawn_not_before - now,
            });
            decision.recheck_at = earliest(decision.recheck_at, memory.spawn_not_before);
            wanted = 0;
        } else if wanted > 0 && memory.halted {
            // One probe, then wait the longest backoff for the next.
            wanted = 1;
            memory.spawn_not_before = now + Self::micros(config.boot_backoff_max);
        }
        decision.spawn = wanted.min(counts.room);
        if let SpawnRamp::Doubling { .. } = config.spawn_ramp {
            if decision.spawn > 0 {
                memory.spawn_rate = (memory.spawn_rate * 2).min(config.max_spawn_rate);
                memory.last_ramp_round = Some(now);
            } else if !in_ramp_pause {
                memory.spawn_rate = 1;
                memory.last_ramp_round = None;
            }
        }
        wanted.min(deficit)
    }

    /// Rule 3, a reload whose new generation keeps failing to boot: abandoned, the old
    /// generation current again, the new one's stragglers retired. True if so (the round
    /// ends there).
    fn abandon_failed_reload(&mut self) -> bool {
        let view = self.view;
        let memory = &mut self.memory;
        let reload_failed = memory.failing_generation == view.generation
            && memory.generation_failures >= self.config.max_reload_boot_failures;
        let old_generation =
            view.workers.iter().filter(|w| !w.retiring && w.generation != view.generation).map(|w| w.generation).max();
        let Some(old_generation) = old_generation.filter(|_| reload_failed) else { return false };
        self.decision.notices.push(Notice::ReloadFailed {
            abandoned: view.generation,
            current: old_generation,
            failures: memory.generation_failures,
        });
        self.decision.revert_generation = Some(old_generation);
        // Workers of the abandoned generation forked before now and still booting (or booted
        // late) would otherwise serve with the configuration that was just rejected.
        let stragglers = view.workers.iter().filter(|w| !w.retiring && w.generation == view.generation);
        self.decision.retire.extend(stragglers.map(|w| (w.slot, RetireReason::AbandonedReload)));
        memory.boot_failures = 0;
        memory.generation_failures = 0;
        memory.spawn_not_before = 0;
        memory.halted = false;
        self.decision.spawn = 0;
        true
    }

    /// Rule 3, old generation: make room for the new one, then retire the rest once it is
    /// ready.
    fn make_room_and_retire_old_generation(&mut self, counts: &Counts<'_>, needed: usize) {
        let mut old_idle: Vec<&WorkerView> =
            self.old().filter(|w| w.state.is_idle() || w.state == WorkerState::Starting).collect();
        old_idle.sort_by_key(|w| (w.state_since, w.slot));
        // Old workers already told to go will free their slots; do not retire more for the
        // same room.
        let pending_exits = self.view.workers.iter().filter(|w| w.retiring).count();
        let short = needed.saturating_sub(self.decision.spawn).saturating_sub(pending_exits);
        let mut retire: Vec<usize> = old_idle.iter().take(short).map(|w| w.slot).collect();
        if counts.ready_idle >= self.config.min_spare_servers {
            for w in self.old() {
                if !retire.contains(&w.slot) {
                    retire.push(w.slot);
                }
            }
        }
        self.decision.retire.extend(retire.into_iter().map(|slot| (slot, RetireReason::OldGeneration)));
    }

    /// Says once when a needed worker cannot be forked because `max_clients` are running (and
    /// no old worker is leaving to make room).
    fn note_max_clients(&mut self, counts: &Counts<'_>, needed: usize) {
        let blocked = self.decision.spawn < needed && self.decision.retire.is_empty();
        if blocked && !self.memory.at_max_clients {
            self.decision
                .notices
                .push(Notice::MaxClientsReached { processes: counts.processes, idle: counts.capacity });
        }
        self.memory.at_max_clients = blocked;
    }

    /// Rule 4, recycling without a dip in spare capacity: a worker goes once the pool keeps
    /// `min_spare` ready idle workers after it has gone (and its load has moved).
    fn recycle(&mut self, counts: &Counts<'_>) {
        let mut spare_after = counts.ready_idle.saturating_sub(counts.handing_over);
        for w in counts.requesting.iter().filter(|w| counts.recycling.contains(&w.slot)) {
            let takes = usize::from(!w.state.is_idle());
            if spare_after >= self.config.min_spare_servers + takes {
                spare_after -= takes;
                self.decision.retire.push((w.slot, RetireReason::Recycled));
            } else if counts.room == 0 && w.state.is_idle() {
                self.decision.retire.push((w.slot, RetireReason::RecycledWithoutReplacement));
            }
        }
    }

    /// Rule 5: one excess idle worker per interval, the one idle longest, once the surplus has
    /// lasted a whole interval.
    fn retire_surplus(&mut self, counts: &Counts<'_>) {
        let (config, now) = (self.config, self.now);
        if counts.ready_idle <= config.max_spare_servers {
            self.memory.surplus_since = None;
            return;
        }
        let interval = Self::micros(config.idle_retire_interval);
        let surplus_since = *self.memory.surplus_since.get_or_insert(now);
        let due = self.memory.last_retire.map_or(now, |t| t + interval).max(surplus_since + interval);
        let generation = self.view.generation;
        let longest = self
            .active()
            .filter(|w| w.generation == generation && !counts.recycling.contains(&w.slot))
            .filter(|w| w.state == WorkerState::Idle && !self.decision.retires(w.slot))
            .min_by_key(|w| (w.state_since, w.slot))
            .map(|w| w.slot);
        match longest {
            Some(slot) if now >= due => {
                self.decision.retire.push((slot, RetireReason::Surplus));
                self.memory.last_retire = Some(now);
                if counts.ready_idle - 1 > config.max_spare_servers {
                    self.decision.recheck_at = earliest(self.decision.recheck_at, now + interval);
                }
            }
            Some(_) => self.decision.recheck_at = earliest(self.decision.recheck_at, due),
            None => {}
        }
    }

    /// Rule 6, stuck workers: a request running past `request_timeout` plus its grace.
    fn kill_stuck(&mut self) {
        let Some(timeout) = self.config.request_timeout.map(Self::micros) else { return };
        let limit = timeout + Self::micros(self.config.request_timeout_grace);
        let now = self.now;
        for w in self.view.workers.iter().filter(|w| w.stuck_since.is_none()) {
            match w.request_started {
                Some(started) if now >= started + limit => {
                    self.decision.notices.push(Notice::Stuck { slot: w.slot, running_micros: now - started });
                    self.decision.stuck_kill.push(w.slot);
                }
                Some(started) => self.decision.recheck_at = earliest(self.decision.recheck_at, started + limit),
                None => {}
            }
        }
    }

    fn finish(mut self) -> (Decision, PolicyMemory) {
        // Only a time still to come: one already past would have the loop spin.
        if self.memory.halted && self.memory.spawn_not_before > self.now {
            self.decision.recheck_at = earliest(self.decision.recheck_at, self.memory.spawn_not_before);
        }
        (self.decision, self.memory)
    }
}

fn earliest(a: Option<Micros>, b: Micros) -> Option<Micros> {
    Some(a.map_or(b, |a| a.min(b)))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod traces;
