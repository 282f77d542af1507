//! systemd's notify protocol (`Type=notify`): the supervisor tells its service manager when the
//! pool is ready, reloading and stopping, what it holds (`STATUS=`), and feeds the watchdog.
//!
//! Nothing is sent unless `NOTIFY_SOCKET` was set when the supervisor started, so a server run
//! by hand or by another manager pays nothing. Messages are datagrams sent from the
//! supervisor's own thread (the `sd-notify` crate: no thread, no runtime), which keeps the
//! parent single-threaded. A failed send is logged once and never stops the server: the
//! manager's timeouts are its own safety net.

use prefork_scoreboard::clock::monotonic_micros;
use sd_notify::NotifyState;

use crate::policy::Micros;

/// What the supervisor has told its service manager, and what it still owes it.
#[derive(Debug)]
pub(crate) struct ServiceManager {
    enabled: bool,
    /// Half of `WATCHDOG_USEC` (as `sd_watchdog_enabled(3)` advises), when the manager
    /// watches this process.
    watchdog_every: Option<Micros>,
    last_watchdog: Micros,
    last_status: String,
    last_status_at: Micros,
    /// `READY=1` was sent: the service started.
    started: bool,
    /// `RELOADING=1` was sent; `READY=1` is owed once the reload ends, either way.
    reloading: bool,
    /// `STOPPING=1` was sent: nothing but the watchdog from now on.
    stopping: bool,
    send_failed: bool,
}

/// The status line is sent at most this often: under load the counts change every round.
const STATUS_EVERY: Micros = 1_000_000;

impl ServiceManager {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC`/`WATCHDOG_PID` (for this process only). The
    /// variables stay set in the supervisor, so that each message finds the socket; each
    /// worker removes them as it starts (see `spawn.rs`).
    ///
    /// A binary upgrade's successor (`predecessor`) inherits its predecessor's variables, which
    /// name the predecessor's pid: the watchdog it will feed once it is the main process.
    pub(crate) fn from_env(predecessor: Option<u32>) -> ServiceManager {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|socket| !socket.is_empty());
        let mut usec = 0;
        let inherited = || -> Option<u64> {
            let named: u32 = std::env::var("WATCHDOG_PID").ok()?.parse().ok()?;
            (Some(named) == predecessor).then_some(())?;
            std::env::var("WATCHDOG_USEC").ok()?.parse().ok()
        };
        let watched = sd_notify::watchdog_enabled(false, &mut usec) || inherited().inspect(|u| usec = *u).is_some();
        let watchdog_every = (enabled && watched).then_some((usec / 2).max(1));
        ServiceManager {
            enabled,
            watchdog_every,
            last_watchdog: 0,
            last_status: String::new(),
            last_status_at: 0,
            started: false,
            reloading: false,
            stopping: false,
            send_failed: false,
        }
    }

    /// When the watchdog must be fed next, if it is watched: the supervisor wakes by then.
    pub(crate) fn next_watchdog(&self) -> Option<Micros> {
        self.watchdog_every.map(|every| self.last_watchdog + every)
    }

    /// The first generation is ready, or a reload is over: serving.
    pub(crate) fn ready(&mut self, status: String) {
        if self.stopping {
            return;
        }
        self.started = true;
        self.reloading = false;
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        self.last_status = status;
        self.last_status_at = monotonic_micros();
    }

    /// A reload (HUP) has begun: a new generation is being forked. Not before the service
    /// started (systemd sees it starting: `READY=1` still comes once), nor while it stops.
    pub(crate) fn reloading(&mut self) {
        if !self.started || self.stopping {
            return;
        }
        // systemd (253 and later) wants the monotonic clock with RELOADING=1, to tell this
        // reload's READY=1 from an earlier one.
        let now = NotifyState::monotonic_usec_now().unwrap_or(NotifyState::MonotonicUsec(0));
        self.send(&[NotifyState::Reloading, now, NotifyState::Status("reloading: forking a new generation")]);
        self.reloading = true;
    }

    /// Whether a reload is under way (see [`reload_over`](Self::reload_over)).
    pub(crate) fn is_reloading(&self) -> bool {
        self.reloading
    }

    /// The reload has ended, with the new generation ready or abandoned: serving again.
    pub(crate) fn reload_over(&mut self, status: String) {
        if self.reloading {
            self.ready(status);
        }
    }

    /// The server is stopping (its workers finish what they hold).
    pub(crate) fn stopping(&mut self) {
        if !std::mem::replace(&mut self.stopping, true) {
            self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
        }
    }

    /// A binary upgrade's successor is ready: it is the service's main process from now on
    /// (this one only finishes its workers).
    pub(crate) fn handed_over(&mut self, successor: u32) {
        let status = format!("handed over to pid {successor}");
        self.send(&[NotifyState::MainPid(successor), NotifyState::Status(&status)]);
        self.stopping = true;
    }

    /// The successor ended while this server handed over: this one is the main process again.
    pub(crate) fn handover_aborted(&mut self) {
        self.stopping = false;
        let status = "upgrade failed: serving on";
        self.send(&[NotifyState::MainPid(std::process::id()), NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// While workers finish (a graceful stop can outlast `WatchdogSec`): the watchdog only.
    pub(crate) fn feed_watchdog_if_due(&mut self) {
        let now = monotonic_micros();
        if self.next_watchdog().is_some_and(|due| now >= due) {
            self.send(&[NotifyState::Watchdog]);
            self.last_watchdog = now;
        }
    }

    /// Every maintenance round: the pool's counts (`status`, computed only when a status may be
    /// sent: at most once a second) when they changed, and the watchdog when due.
    pub(crate) fn round(&mut self, status: impl FnOnce() -> String) {
        if !self.enabled {
            return;
        }
        let now = monotonic_micros();
        let watchdog_due = self.next_watchdog().is_some_and(|due| now >= due);
        let status = (!self.stopping && now >= self.last_status_at + STATUS_EVERY)
            .then(status)
            .map(|status| if self.reloading { format!("reloading: {status}") } else { status })
            .filter(|status| *status != self.last_status);
        let status_due = status.is_some();
        let status = status.unwrap_or_default();
        match (watchdog_due, status_due) {
            (false, false) => {}
            (true, false) => self.send(&[NotifyState::Watchdog]),
            (false, true) => self.send(&[NotifyState::Status(&status)]),
            (true, true) => self.send(&[NotifyState::Watchdog, NotifyState::Status(&status)]),
        }
        if watchdog_due {
            self.last_watchdog = now;
        }
        if status_due {
            self.last_status = status;
            self.last_status_at = now;
        }
    }

    fn send(&mut self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(error) = sd_notify::notify(false, states)
            && !std::mem::replace(&mut self.send_failed, true)
        {
            tracing::warn!(%error, "cannot notify the service manager (NOTIFY_SOCKET); serving on");
        }
    }
}
