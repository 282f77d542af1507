//! Pool and supervisor settings, and the checks that make impossible settings an error.

use std::time::Duration;

use prefork_scoreboard::MAX_SLOTS;

/// How many workers to keep, and how fast to change that.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// At most one idle worker is retired per interval, so a dip in load does not cause a
    /// fork/kill storm.
    pub idle_retire_interval: Duration,
    /// First delay before respawning after a worker failed to boot; doubles per failure in a row.
    pub boot_backoff_initial: Duration,
    /// Longest delay between respawns of workers that keep failing to boot.
    pub boot_backoff_max: Duration,
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
            idle_retire_interval: Duration::from_secs(1),
            boot_backoff_initial: Duration::from_millis(250),
            boot_backoff_max: Duration::from_secs(30),
        }
    }
}

/// Settings that cannot work together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} must be at least {min}, got {value}")]
    TooSmall { name: &'static str, value: usize, min: usize },
    #[error("{name} ({value}) cannot exceed {limit_name} ({limit})")]
    Exceeds { name: &'static str, value: usize, limit_name: &'static str, limit: usize },
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
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

/// Everything the supervisor needs besides the worker itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisorConfig {
    pub pool: PoolConfig,
    /// On SIGTERM/SIGINT, workers get this long to finish their requests before SIGKILL.
    pub graceful_timeout: Duration,
    /// The pool is re-examined at least this often, even when no signal arrives.
    pub maintenance_interval: Duration,
    /// The scoreboard segment is `/dev/shm/<prefix>.<parent pid>`.
    pub scoreboard_prefix: String,
    /// Workers recycle after this many requests (published in the scoreboard).
    pub max_requests_per_child: Option<u64>,
    /// Requests longer than this are counted (and logged) as slow; workers read it from the
    /// scoreboard header.
    pub slow_request_threshold: Option<Duration>,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            pool: PoolConfig::default(),
            graceful_timeout: Duration::from_secs(30),
            maintenance_interval: Duration::from_secs(1),
            scoreboard_prefix: prefork_scoreboard::DEFAULT_PREFIX.to_owned(),
            max_requests_per_child: None,
            slow_request_threshold: None,
        }
    }
}

impl SupervisorConfig {
    /// Checks the pool and the timings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.pool.validate()?;
        if self.maintenance_interval.is_zero() {
            return Err(ConfigError::ZeroDuration("maintenance_interval"));
        }
        if self.slow_request_threshold.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::ZeroDuration("slow_request_threshold"));
        }
        Ok(())
    }

    /// The configuration in force, as status readers see it in the scoreboard header.
    pub fn board_config(&self) -> prefork_scoreboard::BoardConfig {
        prefork_scoreboard::BoardConfig {
            start_servers: self.pool.start_servers as u64,
            min_spare_servers: self.pool.min_spare_servers as u64,
            max_spare_servers: self.pool.max_spare_servers as u64,
            max_clients: self.pool.max_clients as u64,
            max_requests_per_child: self.max_requests_per_child.unwrap_or(0),
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
        ];
        for (config, expected) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} does not mention {expected:?}");
        }
        base.validate().unwrap();
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
