//! Supervisor of a preforked worker pool: fork, reap, spare balancing, signals.
//!
//! The parent process is single-threaded and never creates a tokio runtime or any thread:
//! it forks at any moment, and a fork copies only the calling thread. It receives signals
//! through a signalfd, reaps with `waitpid(WNOHANG)`, and keeps between `min_spare_servers`
//! and `max_spare_servers` idle workers, never more than `max_clients` processes, by asking
//! the pure [`policy::decide`] what to do and carrying it out.
//!
//! | signal | effect |
//! |---|---|
//! | `TERM`, `INT` | graceful stop: workers finish their request; SIGKILL after `graceful_timeout` |
//! | `QUIT` (or a second `TERM`/`INT`) | immediate stop: SIGKILL |
//! | `HUP` | reload: a new generation is forked; the old one finishes once it is ready |
//! | `TTIN` / `TTOU` | one more / one fewer spare at both bounds |
//! | `CHLD` | reap, clear the slot, replace as the policy says |
//!
//! Each worker is forked with the parent's original signal mask restored, `PR_SET_PDEATHSIG`
//! set to SIGKILL (and `getppid` re-checked), its scoreboard slot claimed, and then runs the
//! worker function given to [`Supervisor::new`]. It never returns into the parent's code: the
//! process ends with `std::process::exit`.
//!
//! ```no_run
//! use prefork_supervisor::{Supervisor, SupervisorConfig, WorkerExit};
//! use prefork_scoreboard::WorkerState;
//!
//! let report = Supervisor::new(SupervisorConfig::default(), |ctx| {
//!     ctx.slot.set_state(WorkerState::Idle);
//!     // ... accept and serve until told to stop ...
//!     WorkerExit::Finished
//! })?
//! .run()?;
//! # Ok::<(), prefork_supervisor::SupervisorError>(())
//! ```

mod children;
pub mod config;
pub mod policy;
mod pool;
mod probes;
mod signals;
mod spawn;
mod supervisor;
mod worker;

pub use config::{ConfigError, MAX_DURATION, PoolConfig, RecycleConfig, SpawnRamp, SupervisorConfig, check_duration};
pub use supervisor::{StopReport, Supervisor};
pub use worker::{WorkerContext, WorkerExit, exit_code};

/// Why the supervisor could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("invalid pool configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Scoreboard(#[from] prefork_scoreboard::ScoreboardError),
    #[error(
        "the supervisor must run in a single-threaded process (it forks), but this one has {0} threads; \
         start the server before any runtime or thread"
    )]
    Threaded(usize),
    #[error("{what}: {errno}")]
    Sys { what: &'static str, errno: nix::errno::Errno },
}
