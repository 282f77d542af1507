#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod children;
pub mod config;
pub mod policy;
mod pool;
mod probes;
mod service_manager;
mod signals;
mod spawn;
mod supervisor;
mod upgrade;
mod worker;

pub use config::{ConfigError, MAX_DURATION, PoolConfig, RecycleConfig, SpawnRamp, SupervisorConfig, check_duration};
/// What a worker function installs to learn that the supervisor asks it to finish (SIGTERM).
pub use prefork_scoreboard::{StopSignal, stop_requested};
pub use supervisor::{StopReport, Supervisor};
pub use worker::{Recycling, WorkerContext, WorkerExit, exit_code};

/// Why the supervisor could not start or keep running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The settings cannot work together.
    #[error("invalid pool configuration: {0}")]
    Config(#[from] ConfigError),
    /// The scoreboard could not be created or read.
    #[error(transparent)]
    Scoreboard(#[from] prefork_scoreboard::ScoreboardError),
    /// The process already has this many threads: it cannot fork safely.
    #[error(
        "the supervisor must run in a single-threaded process (it forks), but this one has {0} threads; \
         start the server before any runtime or thread"
    )]
    Threaded(usize),
    /// This supervisor was started by a binary upgrade and its workers failed to boot this
    /// many times in a row before any was ready: the server it was to succeed serves on.
    #[error("the upgraded server's workers cannot boot ({0} failures in a row); the previous server serves on")]
    SuccessorCannotBoot(u32),
    /// A system call failed.
    #[error("{what}: {errno}")]
    Sys {
        /// What the supervisor was doing.
        what: &'static str,
        /// The error the system call returned.
        errno: nix::errno::Errno,
    },
}
