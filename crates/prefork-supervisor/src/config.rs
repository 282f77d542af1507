//! Pool and supervisor settings, and the checks that make impossible settings an error.

use std::time::Duration;

use prefork_scoreboard::MAX_SLOTS;

/// How the spawn batch grows while idle workers stay short (in a config file: `"deficit"`, or
/// `{ doubling = { cap_at_deficit = true } }`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpawnRamp {
    /// Fork the whole deficit (up to `max_spawn_rate`) in one round: the default.
    #[default]
    Deficit,
    /// Start at one fork per round and double each round the deficit lasts, up to
    /// `max_spawn_rate`; back to one when it ends. `cap_at_deficit: false` is Apache prefork
    /// (it forks the whole rate), `true` is php-fpm (never more than the deficit).
    Doubling {
        /// Never fork more in one round than the deficit (php-fpm), rather than the whole
        /// doubled batch (Apache prefork).
        cap_at_deficit: bool,
    },
}

/// How many workers to keep, and how fast to change that.
///
/// With serde, a missing field takes its default, durations are written `"250ms"`, `"30s"`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Workers forked at start.
    pub start_servers: usize,
    /// Fewer idle workers than this: fork more.
    pub min_spare_servers: usize,
    /// More idle workers than this: retire some.
    pub max_spare_servers: usize,
    /// Never more worker processes than this (also the scoreboard's slot count).
    pub max_clients: usize,
    /// At most this many forks in one maintenance round (php-fpm's `pm.max_spawn_rate`).
    pub max_spawn_rate: usize,
    /// How the batch grows while the deficit lasts.
    pub spawn_ramp: SpawnRamp,
    /// At most one idle worker is retired per interval, and only one that has been idle at
    /// least this long, so an oscillating load does not cause fork/kill storms.
    #[serde(with = "humantime_serde")]
    pub idle_retire_interval: Duration,
    /// First delay before respawning after a worker failed to boot; doubles per failure in a
    /// row (with jitter).
    #[serde(with = "humantime_serde")]
    pub boot_backoff_initial: Duration,
    /// Longest delay between respawns of workers that keep failing to boot.
    #[serde(with = "humantime_serde")]
    pub boot_backoff_max: Duration,
    /// After this many boot failures in a row, stop forking (but for one probe every
    /// `boot_backoff_max`) and keep serving with the workers that run. 0: never stop.
    pub max_boot_failures: u32,
    /// After this many new-generation workers fail to boot in a row, a reload is abandoned and
    /// the old generation stays current.
    pub max_reload_boot_failures: u32,
    /// At most this many workers are being replaced (recycled) at once.
    pub max_recycling: usize,
    /// A request running longer than this is ended: the worker drops an async handler's
    /// request itself at this time (503); a worker whose request still runs
    /// `request_timeout_grace` later (a blocking handler, which only a signal can stop) is
    /// SIGKILLed and replaced. `None`: no limit.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    /// How long after `request_timeout` a worker still running the request is killed.
    #[serde(with = "humantime_serde")]
    pub request_timeout_grace: Duration,
}

impl Default for PoolConfig {
    /// SimpleHTTP::PreFork's defaults (start 10, spare 5..10, max 256) and php-fpm's spawn rate.
    fn default() -> Self {
        PoolConfig {
            start_servers: 10,
            min_spare_servers: 5,
            max_spare_servers: 10,
            max_clients: 256,
            max_spawn_rate: 32,
            spawn_ramp: SpawnRamp::Deficit,
            idle_retire_interval: Duration::from_secs(1),
            boot_backoff_initial: Duration::from_millis(250),
            boot_backoff_max: Duration::from_secs(30),
            max_boot_failures: 10,
            max_reload_boot_failures: 3,
            max_recycling: 2,
            request_timeout: None,
            request_timeout_grace: Duration::from_secs(1),
        }
    }
}

/// The longest duration any setting may have (ten years): longer ones are refused rather than
/// left to overflow a clock's arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Refuses a duration past [`MAX_DURATION`].
pub fn check_duration(name: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value > MAX_DURATION { Err(ConfigError::TooLong(name)) } else { Ok(()) }
}

/// Settings that cannot work together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting is below its minimum.
    #[error("{name} must be at least {min}, got {value}")]
    TooSmall {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: usize,
        /// The smallest value allowed.
        min: usize,
    },
    /// A setting is above the value of another setting (or of a fixed limit).
    #[error("{name} ({value}) cannot exceed {limit_name} ({limit})")]
    Exceeds {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: usize,
        /// The setting or limit it may not exceed.
        limit_name: &'static str,
        /// That limit's value.
        limit: usize,
    },
    /// The named duration is zero.
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
    /// The named duration is longer than [`MAX_DURATION`].
    #[error("{0} cannot be longer than ten years")]
    TooLong(&'static str),
    /// Two durations are in the wrong order.
    #[error("{shorter} cannot be longer than {longer}")]
    Order {
        /// The setting that must be the shorter.
        shorter: &'static str,
        /// The setting that must be the longer.
        longer: &'static str,
    },
}

impl PoolConfig {
    /// Checks the settings; the pool is only ever run with settings that pass.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least =
            |name, value, min| if value < min { Err(ConfigError::TooSmall { name, value, min }) } else { Ok(()) };
        at_least("start_servers", self.start_servers, 1)?;
        at_least("min_spare_servers", self.min_spare_servers, 1)?;
        at_least("max_clients", self.max_clients, 1)?;
        at_least("max_spawn_rate", self.max_spawn_rate, 1)?;
        at_least("max_recycling", self.max_recycling, 1)?;
        at_least("max_reload_boot_failures", self.max_reload_boot_failures as usize, 1)?;
        let at_most = |name, value, limit_name, limit| {
            if value > limit { Err(ConfigError::Exceeds { name, value, limit_name, limit }) } else { Ok(()) }
        };
        at_most("max_clients", self.max_clients, "the scoreboard limit", MAX_SLOTS)?;
        at_most("start_servers", self.start_servers, "max_clients", self.max_clients)?;
        at_most("min_spare_servers", self.min_spare_servers, "max_clients", self.max_clients)?;
        if self.max_spare_servers < self.min_spare_servers {
            return Err(ConfigError::TooSmall {
                name: "max_spare_servers",
                value: self.max_spare_servers,
                min: self.min_spare_servers,
            });
        }
        if self.idle_retire_interval.is_zero() {
            return Err(ConfigError::ZeroDuration("idle_retire_interval"));
        }
        if self.boot_backoff_initial.is_zero() {
            return Err(ConfigError::ZeroDuration("boot_backoff_initial"));
        }
        if self.boot_backoff_max < self.boot_backoff_initial {
            return Err(ConfigError::Order { shorter: "boot_backoff_initial", longer: "boot_backoff_max" });
        }
        if self.request_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::ZeroDuration("request_timeout"));
        }
        check_duration("idle_retire_interval", self.idle_retire_interval)?;
        check_duration("boot_backoff_max", self.boot_backoff_max)?;
        check_duration("request_timeout", self.request_timeout.unwrap_or_default())?;
        check_duration("request_timeout_grace", self.request_timeout_grace)?;
        Ok(())
    }

    /// TTIN: one more spare at each bound, never above `max_clients`.
    pub fn raise_spares(&mut self) {
        self.min_spare_servers = (self.min_spare_servers + 1).min(self.max_clients);
        self.max_spare_servers = (self.max_spare_servers + 1).min(self.max_clients).max(self.min_spare_servers);
    }

    /// TTOU: one spare fewer at each bound, never below 1.
    pub fn lower_spares(&mut self) {
        self.min_spare_servers = self.min_spare_servers.saturating_sub(1).max(1);
        self.max_spare_servers = self.max_spare_servers.saturating_sub(1).max(self.min_spare_servers);
    }
}

/// Recycling limits, and the jitter that keeps workers started together from retiring together.
/// Each worker gets its own limits: the value plus a random amount up to the jitter. Sizes are
/// in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecycleConfig {
    /// Requests answered (SimpleHTTP's MAXREQUESTPERCHILD).
    pub max_requests_per_child: Option<u64>,
    /// Connections accepted (Apache's MaxConnectionsPerChild).
    pub max_connections_per_child: Option<u64>,
    /// Added to both counts above: up to this many more, per worker.
    pub max_requests_jitter: u64,
    /// Time since the worker was forked.
    #[serde(with = "humantime_serde")]
    pub max_worker_lifetime: Option<Duration>,
    /// Added to the lifetime: up to this much longer, per worker (to the millisecond).
    #[serde(with = "humantime_serde")]
    pub max_worker_lifetime_jitter: Duration,
    /// Resident memory.
    pub max_worker_rss: Option<u64>,
    /// Added to the memory limit: up to this many more bytes, per worker.
    pub max_worker_rss_jitter: u64,
}

impl RecycleConfig {
    /// One worker's limits, with `random` (uniform in 0..=u64::MAX) choosing the jitter.
    pub fn limits_for_worker(&self, mut random: impl FnMut() -> u64) -> prefork_scoreboard::RecycleLimits {
        // Uniform in 0..=max; saturating, so that no setting can overflow a limit.
        let mut jitter = |max: u64| match max.checked_add(1) {
            _ if max == 0 => 0,
            Some(span) => random() % span,
            None => random(),
        };
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        prefork_scoreboard::RecycleLimits {
            max_requests: self.max_requests_per_child.map(|n| n.saturating_add(jitter(self.max_requests_jitter))),
            max_connections: self.max_connections_per_child.map(|n| n.saturating_add(jitter(self.max_requests_jitter))),
            max_lifetime: self
                .max_worker_lifetime
                .map(|t| t.saturating_add(Duration::from_millis(jitter(millis(self.max_worker_lifetime_jitter))))),
            max_rss_bytes: self.max_worker_rss.map(|n| n.saturating_add(jitter(self.max_worker_rss_jitter))),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("max_requests_per_child", self.max_requests_per_child),
            ("max_connections_per_child", self.max_connections_per_child),
            ("max_worker_rss", self.max_worker_rss),
        ] {
            if value == Some(0) {
                return Err(ConfigError::TooSmall { name, value: 0, min: 1 });
            }
        }
        if self.max_worker_lifetime.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::ZeroDuration("max_worker_lifetime"));
        }
        check_duration("max_worker_lifetime", self.max_worker_lifetime.unwrap_or_default())?;
        check_duration("max_worker_lifetime_jitter", self.max_worker_lifetime_jitter)?;
        Ok(())
    }
}

/// Everything the supervisor needs besides the worker itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// How many workers to keep, and how fast to change that.
    pub pool: PoolConfig,
    /// On SIGTERM/SIGINT, workers get this long to finish their requests before SIGKILL.
    #[serde(with = "humantime_serde")]
    pub graceful_timeout: Duration,
    /// On SIGTERM/SIGINT, the server first drains for this long: readiness probes fail (so a
    /// load balancer takes it out of rotation) while it serves everything as before; only
    /// then does the graceful stop begin (Kubernetes' preStop pattern). Zero: stop at once.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// The pool is re-examined at least this often, even when no signal arrives.
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
    /// The scoreboard segment is `/dev/shm/<prefix>.<parent pid>`.
    pub scoreboard_prefix: String,
    /// When workers ask to be replaced, before jitter.
    pub recycle: RecycleConfig,
    /// Requests longer than this are counted (and logged) as slow; workers read it from the
    /// scoreboard header.
    #[serde(with = "humantime_serde")]
    pub slow_request_threshold: Option<Duration>,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            pool: PoolConfig::default(),
            graceful_timeout: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            maintenance_interval: Duration::from_secs(1),
            scoreboard_prefix: prefork_scoreboard::DEFAULT_PREFIX.to_owned(),
            recycle: RecycleConfig::default(),
            slow_request_threshold: None,
        }
    }
}

impl SupervisorConfig {
    /// Checks the pool and the timings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.pool.validate()?;
        self.recycle.validate()?;
        if self.maintenance_interval.is_zero() {
            return Err(ConfigError::ZeroDuration("maintenance_interval"));
        }
        if self.slow_request_threshold.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::ZeroDuration("slow_request_threshold"));
        }
        check_duration("graceful_timeout", self.graceful_timeout)?;
        check_duration("drain_delay", self.drain_delay)?;
        check_duration("maintenance_interval", self.maintenance_interval)?;
        check_duration("slow_request_threshold", self.slow_request_threshold.unwrap_or_default())?;
        Ok(())
    }

    /// The configuration in force, as status readers see it in the scoreboard header.
    pub fn board_config(&self) -> prefork_scoreboard::BoardConfig {
        prefork_scoreboard::BoardConfig {
            start_servers: self.pool.start_servers as u64,
            min_spare_servers: self.pool.min_spare_servers as u64,
            max_spare_servers: self.pool.max_spare_servers as u64,
            max_clients: self.pool.max_clients as u64,
            max_requests_per_child: self.recycle.max_requests_per_child.unwrap_or(0),
            slow_request_micros: self.slow_request_threshold.map_or(0, |t| t.as_micros().max(1) as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        SupervisorConfig::default().validate().unwrap();
    }

    #[test]
    fn impossible_pools_are_refused_with_the_setting_named() {
        let base = PoolConfig {
            start_servers: 2,
            min_spare_servers: 1,
            max_spare_servers: 3,
            max_clients: 4,
            ..Default::default()
        };
        let cases = [
            (PoolConfig { start_servers: 0, ..base.clone() }, "start_servers"),
            (PoolConfig { min_spare_servers: 0, ..base.clone() }, "min_spare_servers"),
            (PoolConfig { start_servers: 5, ..base.clone() }, "start_servers (5) cannot exceed max_clients (4)"),
            (PoolConfig { min_spare_servers: 5, max_spare_servers: 6, ..base.clone() }, "min_spare_servers (5)"),
            (PoolConfig { max_spare_servers: 0, ..base.clone() }, "max_spare_servers"),
            (PoolConfig { max_clients: 0, start_servers: 0, ..base.clone() }, "start_servers"),
            (PoolConfig { max_clients: MAX_SLOTS + 1, ..base.clone() }, "scoreboard limit"),
            (PoolConfig { idle_retire_interval: Duration::ZERO, ..base.clone() }, "idle_retire_interval"),
            (PoolConfig { max_recycling: 0, ..base.clone() }, "max_recycling"),
            (PoolConfig { request_timeout: Some(Duration::ZERO), ..base.clone() }, "request_timeout"),
            (
                PoolConfig { boot_backoff_max: Duration::from_millis(1), ..base.clone() },
                "boot_backoff_initial cannot be longer",
            ),
        ];
        for (config, expected) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} does not mention {expected:?}");
        }
        base.validate().unwrap();
    }

    #[test]
    fn recycling_limits_get_their_jitter_per_worker_and_zero_limits_are_refused() {
        let config = RecycleConfig {
            max_requests_per_child: Some(50),
            max_connections_per_child: Some(10),
            max_requests_jitter: 5,
            max_worker_lifetime: Some(Duration::from_secs(60)),
            max_worker_lifetime_jitter: Duration::from_secs(6),
            max_worker_rss: Some(1000),
            max_worker_rss_jitter: 0,
        };
        let mut seen = std::collections::BTreeSet::new();
        let mut state = 1u64;
        for _ in 0..200 {
            let limits = config.limits_for_worker(|| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                state >> 11
            });
            let requests = limits.max_requests.unwrap();
            assert!((50..=55).contains(&requests), "{requests}");
            assert!((10..=15).contains(&limits.max_connections.unwrap()));
            assert!((60..=66).contains(&limits.max_lifetime.unwrap().as_secs()));
            assert_eq!(limits.max_rss_bytes, Some(1000));
            seen.insert(requests);
        }
        assert_eq!(seen.len(), 6, "every jitter value occurs");
        assert_eq!(RecycleConfig::default().limits_for_worker(|| 7), prefork_scoreboard::RecycleLimits::default());
        let zero = SupervisorConfig {
            recycle: RecycleConfig { max_requests_per_child: Some(0), ..config },
            ..Default::default()
        };
        assert!(zero.validate().unwrap_err().to_string().contains("max_requests_per_child"));
    }

    #[test]
    fn ttin_and_ttou_move_both_bounds_within_limits() {
        let mut pool = PoolConfig {
            start_servers: 1,
            min_spare_servers: 1,
            max_spare_servers: 2,
            max_clients: 3,
            ..Default::default()
        };
        pool.raise_spares();
        assert_eq!((pool.min_spare_servers, pool.max_spare_servers), (2, 3));
        pool.raise_spares();
        assert_eq!((pool.min_spare_servers, pool.max_spare_servers), (3, 3));
        for _ in 0..5 {
            pool.lower_spares();
        }
        assert_eq!((pool.min_spare_servers, pool.max_spare_servers), (1, 1));
        pool.validate().unwrap();
    }
}
