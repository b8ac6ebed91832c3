//! Counters of one client: cheap to update from any task, cheap to snapshot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Live counters (atomics). Read them with [`ClientStats::snapshot`].
#[derive(Debug)]
pub struct ClientStats {
    requests: AtomicU64,
    /// Index `status - 100` for 100..=599.
    by_status: Box<[AtomicU64]>,
    other_status: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
    throttled_nanos: AtomicU64,
    timeouts: AtomicU64,
    dropped_connections: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Every attempt sent, retries included.
    pub requests_sent: u64,
    /// Responses per status class.
    pub by_class: StatusClasses,
    /// Responses per exact status.
    pub by_status: BTreeMap<u16, u64>,
    /// Attempts made after a first one (429, 5xx, timeout, dropped connection).
    pub retries: u64,
    /// 429 responses.
    pub rate_limited: u64,
    /// Time requests waited for the key's budget or in backoff, summed over requests.
    pub throttled: Duration,
    pub timeouts: u64,
    /// Connections refused, reset or closed before a response.
    pub dropped_connections: u64,
}

/// Responses per status class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusClasses {
    pub informational: u64,
    pub success: u64,
    pub redirection: u64,
    pub client_error: u64,
    pub server_error: u64,
    /// Outside 100..=599.
    pub other: u64,
}

impl Default for ClientStats {
    fn default() -> Self {
        ClientStats {
            requests: AtomicU64::new(0),
            by_status: (100..600).map(|_| AtomicU64::new(0)).collect(),
            other_status: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            throttled_nanos: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            dropped_connections: AtomicU64::new(0),
        }
    }
}

impl ClientStats {
    pub(crate) fn request_sent(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn response(&self, status: u16) {
        match status
            .checked_sub(100)
            .and_then(|i| self.by_status.get(usize::from(i)))
        {
            Some(c) => c.fetch_add(1, Ordering::Relaxed),
            None => self.other_status.fetch_add(1, Ordering::Relaxed),
        };
        if status == 429 {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn throttled(&self, d: Duration) {
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.throttled_nanos.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dropped_connection(&self) {
        self.dropped_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now. Each counter is read atomically; they are not read as one.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut by_status = BTreeMap::new();
        let mut by_class = StatusClasses {
            other: self.other_status.load(Ordering::Relaxed),
            ..StatusClasses::default()
        };
        for (status, c) in (100u16..).zip(self.by_status.iter()) {
            let n = c.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            by_status.insert(status, n);
            match status / 100 {
                1 => by_class.informational += n,
                2 => by_class.success += n,
                3 => by_class.redirection += n,
                4 => by_class.client_error += n,
                _ => by_class.server_error += n,
            }
        }
        StatsSnapshot {
            requests_sent: self.requests.load(Ordering::Relaxed),
            by_class,
            by_status,
            retries: self.retries.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            throttled: Duration::from_nanos(self.throttled_nanos.load(Ordering::Relaxed)),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            dropped_connections: self.dropped_connections.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_groups_statuses() {
        let s = ClientStats::default();
        for st in [202, 202, 429, 503, 400, 99, 700] {
            s.request_sent();
            s.response(st);
        }
        s.retry();
        s.throttled(Duration::from_millis(1500));
        let snap = s.snapshot();
        assert_eq!(snap.requests_sent, 7);
        assert_eq!(snap.by_status.get(&202), Some(&2));
        assert_eq!(snap.by_class.success, 2);
        assert_eq!(snap.by_class.client_error, 2);
        assert_eq!(snap.by_class.server_error, 1);
        assert_eq!(snap.by_class.other, 2);
        assert_eq!(snap.rate_limited, 1);
        assert_eq!(snap.retries, 1);
        assert_eq!(snap.throttled, Duration::from_millis(1500));
    }
}
