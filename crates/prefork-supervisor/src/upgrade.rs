//! A binary upgrade without downtime, as unicorn and nginx do it on USR2: this supervisor
//! starts its successor (a new binary, handed the listening socket by whoever set the upgrade
//! hook), which forks its own pool on the same socket; once the successor's first generation is
//! ready it sends the handover signal, and this supervisor retires its workers (their idle
//! connections move to the successor's workers through the shared hand-off queue) and exits.
//! If the successor exits first, the upgrade failed: this supervisor serves on and says why;
//! if it exits while this one hands over, the handover stops and this one forks its pool
//! again; if it is not ready within [`UPGRADE_TIMEOUT`], it is told to stop (SIGTERM), which
//! ends the same way.

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::policy::Micros;
use crate::pool::Pool;
use crate::worker::{WorkerContext, WorkerExit};

/// The longest a successor may take to be ready before it is told to stop (a successor whose
/// workers fail to boot gives up by itself, sooner).
pub(crate) const UPGRADE_TIMEOUT: Micros = 120_000_000;

/// The two sides of an upgrade, as this supervisor plays them.
#[derive(Debug, Default)]
pub(crate) struct UpgradeState {
    /// The successor started on USR2, until it exits (or this supervisor does).
    pub(crate) successor: Option<Pid>,
    /// When it was started.
    pub(crate) started_at: Micros,
    /// It was told to stop for taking too long.
    pub(crate) timed_out: bool,
    /// It is ready, and this supervisor retires its workers for it.
    pub(crate) handing_over: bool,
    /// The supervisor that started this one, told once this one is ready.
    pub(crate) predecessor: Option<Pid>,
}

impl UpgradeState {
    /// Once as many of this supervisor's workers are ready as it starts with (the capacity the
    /// predecessor's pool had at its start, with the same settings): tell the one that started
    /// it, if it still is this process's parent (a pid, once its process is gone, may name
    /// another).
    pub(crate) fn tell_predecessor(&mut self) {
        let Some(predecessor) = self.predecessor.take() else { return };
        if nix::unistd::getppid() != predecessor {
            tracing::warn!(predecessor = predecessor.as_raw(), "upgrade: the previous server is gone; serving alone");
            return;
        }
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
                self.upgrade.started_at = prefork_scoreboard::clock::monotonic_micros();
                self.upgrade.timed_out = false;
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
        if std::mem::take(&mut self.upgrade.handing_over) {
            tracing::error!(
                successor = pid.as_raw(),
                "upgrade failed: the new server ended while this one handed over; forking this server's pool again"
            );
            self.service_manager.handover_aborted();
        }
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

    /// Every maintenance round: a successor not ready in time is told to stop.
    pub(crate) fn check_upgrade_deadline(&mut self, now: Micros) {
        let Some(successor) = self.upgrade.successor else { return };
        if self.upgrade.handing_over || self.upgrade.timed_out || now < self.upgrade.started_at + UPGRADE_TIMEOUT {
            return;
        }
        self.upgrade.timed_out = true;
        tracing::error!(
            successor = successor.as_raw(),
            timeout_s = UPGRADE_TIMEOUT / 1_000_000,
            "upgrade: the new server is not ready in time; telling it to stop"
        );
        crate::pool::signal_child(successor, Signal::SIGTERM);
    }
}
