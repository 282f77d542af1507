//! A binary upgrade without downtime, as unicorn and nginx do it on USR2: this supervisor
//! starts its successor (a new binary, handed the listening socket by whoever set the upgrade
//! hook), which forks its own pool on the same socket; once the successor's first generation is
//! ready it sends the handover signal, and this supervisor retires its workers (their idle
//! connections move to the successor's workers through the shared hand-off queue) and exits.
//! If the successor exits first, the upgrade failed: this supervisor serves on and says why.

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::pool::Pool;
use crate::worker::{WorkerContext, WorkerExit};

/// The two sides of an upgrade, as this supervisor plays them.
#[derive(Debug, Default)]
pub(crate) struct UpgradeState {
    /// The successor started on USR2, until it hands over or exits.
    pub(crate) successor: Option<Pid>,
    /// The supervisor that started this one, told once this one is ready.
    pub(crate) predecessor: Option<Pid>,
}

impl UpgradeState {
    /// Once this supervisor's first generation is ready: tell the one that started it.
    pub(crate) fn tell_predecessor(&mut self) {
        let Some(predecessor) = self.predecessor.take() else { return };
        // SAFETY: kill(2) with a pid and a signal number; no memory is involved.
        let sent = unsafe { libc::kill(predecessor.as_raw(), prefork_scoreboard::handover_signal()) } == 0;
        if sent {
            tracing::info!(predecessor = predecessor.as_raw(), "upgrade: ready; the previous server hands over");
        } else {
            let error = std::io::Error::last_os_error();
            tracing::warn!(predecessor = predecessor.as_raw(), %error, "upgrade: cannot tell the previous server");
        }
    }
}

impl<W: FnMut(WorkerContext) -> WorkerExit> Pool<'_, W> {
    /// USR2: starts the successor (at most one at a time).
    pub(crate) fn start_upgrade(&mut self) {
        let Some(hooks) = self.upgrade_hooks.as_mut() else {
            tracing::info!("USR2: no upgrade is set up for this server; ignored");
            return;
        };
        if let Some(successor) = self.upgrade.successor {
            tracing::warn!(successor = successor.as_raw(), "USR2: an upgrade is already under way; ignored");
            return;
        }
        match (hooks.start)() {
            Ok(pid) => {
                self.upgrade.successor = Some(Pid::from_raw(pid as i32));
                tracing::info!(
                    successor = pid,
                    "upgrade: started the new binary; serving until it is ready, then handing over"
                );
            }
            Err(error) => tracing::error!(%error, "upgrade: cannot start the new binary; serving on"),
        }
    }

    /// Whether `pid` was the successor; if so, it exited before handing over.
    pub(crate) fn successor_exited(&mut self, pid: Pid, code: Option<i32>, signal: Option<Signal>) -> bool {
        if self.upgrade.successor != Some(pid) {
            return false;
        }
        self.upgrade.successor = None;
        let how = match (code, signal) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("was killed by {signal}"),
            (None, None) => "ended".to_owned(),
        };
        tracing::error!(
            successor = pid.as_raw(),
            how,
            "upgrade failed: the new binary ended before it was ready; this server serves on"
        );
        if let Some(hooks) = self.upgrade_hooks.as_mut() {
            (hooks.failed)(&how);
        }
        true
    }
}
