//! Harness for black-box tests of the built `simplehttp-prefork` binary (also used by xtask).
//!
//! A test starts the real binary as a subprocess on `127.0.0.1` port 0, reads the port from
//! its `listening on` line, talks HTTP to it, reads `/proc` for its children and `/dev/shm`
//! for its scoreboard, and stops it. Nothing here forks the test process itself: tests run on
//! libtest's threads, and a fork of a multi-threaded process is not a safe copy.

mod binary;
mod http;
mod machine;
mod procfs;
mod scenario;
mod server;
mod status;

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

pub use binary::*;
pub use http::*;
pub use machine::*;
pub use nix::sys::signal::Signal as Sig;
pub use procfs::*;
pub use scenario::*;
pub use server::*;
pub use status::*;

/// Generous deadline for conditions that normally hold within milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `condition` every 25 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match condition() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(match last_error {
                Some(e) => e.context(format!("timed out waiting for {what}")),
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        thread::sleep(Duration::from_millis(25));
    }
}
