//! When a worker should ask to be replaced: the limits the parent hands each worker (with
//! jitter already applied) and the worker checks.

use std::time::Duration;

/// A worker's recycling limits. `None`: no limit of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecycleLimits {
    /// Requests answered (as SimpleHTTP's MAXREQUESTPERCHILD counts them).
    pub max_requests: Option<u64>,
    /// Connections accepted (as Apache's MaxConnectionsPerChild counts them).
    pub max_connections: Option<u64>,
    /// Time since the worker was forked.
    pub max_lifetime: Option<Duration>,
    /// Resident memory, as last sampled.
    pub max_rss_bytes: Option<u64>,
}

fn margin(n: u64) -> u64 {
    (n / 10).max(1)
}

fn time_margin(t: Duration) -> Duration {
    (t / 10).min(Duration::from_secs(10))
}

/// Which limit a worker reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecycleReason {
    /// The request limit: requests answered so far.
    Requests(u64),
    /// The connection limit: connections accepted so far.
    Connections(u64),
    /// The lifetime limit: time since the worker was forked.
    Lifetime(Duration),
    /// The memory limit: resident memory, bytes.
    Rss(u64),
}

impl std::fmt::Display for RecycleReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecycleReason::Requests(n) => write!(f, "answered {n} requests"),
            RecycleReason::Connections(n) => write!(f, "accepted {n} connections"),
            RecycleReason::Lifetime(age) => write!(f, "lived {}s", age.as_secs()),
            RecycleReason::Rss(bytes) => write!(f, "uses {} MiB of resident memory", bytes / (1 << 20)),
        }
    }
}

impl RecycleLimits {
    /// Where a worker should already ask for its replacement, so that it is ready by the time
    /// the limit itself is reached: a tenth of the way before each limit (at least one request
    /// or connection, at most ten seconds). Memory cannot be foreseen: at the limit.
    pub fn early(&self) -> RecycleLimits {
        let lead = |n: u64| n.saturating_sub(margin(n)).max(1);
        RecycleLimits {
            max_requests: self.max_requests.map(lead),
            max_connections: self.max_connections.map(lead),
            max_lifetime: self.max_lifetime.map(|t| t.saturating_sub(time_margin(t))),
            max_rss_bytes: self.max_rss_bytes,
        }
    }

    /// Where a worker that has still not been replaced (the pool is at `max_clients`, say)
    /// starts closing its connections regardless, so that it can go: as far past each limit
    /// as [`early`](Self::early) is before it. Memory: at the limit.
    pub fn hard(&self) -> RecycleLimits {
        RecycleLimits {
            max_requests: self.max_requests.map(|n| n.saturating_add(margin(n))),
            max_connections: self.max_connections.map(|n| n.saturating_add(margin(n))),
            max_lifetime: self.max_lifetime.map(|t| t.saturating_add(time_margin(t))),
            max_rss_bytes: self.max_rss_bytes,
        }
    }

    /// No limit at all.
    pub fn is_unlimited(&self) -> bool {
        *self == RecycleLimits::default()
    }

    /// The first limit reached by a worker with these counts, if any.
    pub fn reached(&self, requests: u64, connections: u64, age: Duration, rss_bytes: u64) -> Option<RecycleReason> {
        if self.max_requests.is_some_and(|max| requests >= max) {
            return Some(RecycleReason::Requests(requests));
        }
        if self.max_connections.is_some_and(|max| connections >= max) {
            return Some(RecycleReason::Connections(connections));
        }
        if self.max_lifetime.is_some_and(|max| age >= max) {
            return Some(RecycleReason::Lifetime(age));
        }
        if self.max_rss_bytes.is_some_and(|max| rss_bytes >= max) {
            return Some(RecycleReason::Rss(rss_bytes));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_is_reached_at_its_threshold_and_not_before() {
        let limits = RecycleLimits {
            max_requests: Some(10),
            max_connections: Some(5),
            max_lifetime: Some(Duration::from_secs(60)),
            max_rss_bytes: Some(100),
        };
        assert_eq!(limits.reached(9, 4, Duration::from_secs(59), 99), None);
        assert_eq!(limits.reached(10, 0, Duration::ZERO, 0), Some(RecycleReason::Requests(10)));
        assert_eq!(limits.reached(0, 5, Duration::ZERO, 0), Some(RecycleReason::Connections(5)));
        assert_eq!(
            limits.reached(0, 0, Duration::from_secs(60), 0),
            Some(RecycleReason::Lifetime(Duration::from_secs(60)))
        );
        assert_eq!(limits.reached(0, 0, Duration::ZERO, 100), Some(RecycleReason::Rss(100)));
        assert!(RecycleLimits::default().is_unlimited());
        let early = limits.early();
        assert_eq!((early.max_requests, early.max_connections), (Some(9), Some(4)));
        assert_eq!(early.max_lifetime, Some(Duration::from_secs(54)));
        assert_eq!(early.max_rss_bytes, Some(100));
        assert_eq!(RecycleLimits { max_requests: Some(1), ..Default::default() }.early().max_requests, Some(1));
        let hard = limits.hard();
        assert_eq!((hard.max_requests, hard.max_connections), (Some(11), Some(6)));
        assert_eq!(hard.max_lifetime, Some(Duration::from_secs(66)));
        assert_eq!(hard.max_rss_bytes, Some(100));
        assert_eq!(
            RecycleLimits { max_lifetime: Some(Duration::from_secs(3600)), ..Default::default() }.early().max_lifetime,
            Some(Duration::from_secs(3590))
        );
        assert_eq!(RecycleLimits::default().reached(u64::MAX, u64::MAX, Duration::MAX, u64::MAX), None);
    }
}
