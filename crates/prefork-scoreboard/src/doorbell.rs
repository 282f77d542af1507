//! A wake-up line from workers to the parent: an eventfd created before the first fork.
//!
//! A worker rings it when it stops being idle (it has accepted a connection), so the parent
//! re-examines the pool within milliseconds of a burst instead of at its next timer tick.
//! Ringing is one `write(2)` that never blocks; the parent coalesces rings (see the
//! supervisor), so a flood of connections does not become a flood of parent wake-ups.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

/// The shared eventfd.
#[derive(Debug)]
pub struct Doorbell {
    fd: EventFd,
}

impl Doorbell {
    /// A new doorbell (non-blocking, close-on-exec). Create it in the parent before forking.
    pub fn new() -> io::Result<Doorbell> {
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Doorbell { fd })
    }

    /// Worker side: wake the parent. Never blocks; a full counter (2^64 - 2 rings nobody
    /// read) is as good as a ring.
    pub fn ring(&self) {
        match self.fd.write(1) {
            Ok(_) | Err(Errno::EAGAIN) => {}
            Err(errno) => tracing::debug!(%errno, "doorbell ring failed"),
        }
    }

    /// Parent side: consume every ring so far. True if there was at least one.
    pub fn drain(&self) -> bool {
        matches!(self.fd.read(), Ok(n) if n > 0)
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_are_coalesced_and_drained_once() {
        let bell = Doorbell::new().unwrap();
        assert!(!bell.drain());
        bell.ring();
        bell.ring();
        bell.ring();
        assert!(bell.drain());
        assert!(!bell.drain());
    }
}
