//! Retry policy: exponential backoff with full jitter (a [`backon`] backoff), and the retry
//! budget of a client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::RetryBudget;

/// Exponential backoff with full jitter: retry `n` (0-based) waits a uniformly random time in
/// `[0, min(max, base × 2ⁿ)]`, at most `max_retries` times. Full jitter spreads the retries
/// of many concurrent requests, which is what a per-second rate limit needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullJitter {
    pub base: Duration,
    pub max: Duration,
    pub max_retries: u32,
}

impl backon::BackoffBuilder for FullJitter {
    type Backoff = FullJitterBackoff;

    fn build(self) -> FullJitterBackoff {
        FullJitterBackoff {
            policy: self,
            attempt: 0,
        }
    }
}

/// The iterator of delays built from [`FullJitter`].
#[derive(Debug, Clone)]
pub struct FullJitterBackoff {
    policy: FullJitter,
    attempt: u32,
}

impl FullJitterBackoff {
    /// The upper bound of retry `attempt`'s delay.
    pub fn ceiling(policy: &FullJitter, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        policy.base.saturating_mul(factor).min(policy.max)
    }
}

impl Iterator for FullJitterBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.attempt >= self.policy.max_retries {
            return None;
        }
        let cap = Self::ceiling(&self.policy, self.attempt);
        self.attempt += 1;
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Some(Duration::from_nanos(rand::random_range(0..=nanos)))
    }
}

/// The retries a client may still make ([`RetryBudget`]), shared by its clones.
#[derive(Debug)]
pub(crate) struct RetryTokens {
    policy: RetryBudget,
    first_attempts: AtomicU64,
    retries: AtomicU64,
}

impl RetryTokens {
    pub(crate) fn new(policy: RetryBudget) -> RetryTokens {
        RetryTokens {
            policy,
            first_attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    /// Counts a request's first attempt (which earns `ratio` retries).
    pub(crate) fn deposit(&self) {
        self.first_attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry if the budget allows it.
    pub(crate) fn try_withdraw(&self) -> bool {
        let allowed = match self.policy {
            RetryBudget::Unlimited => return true,
            RetryBudget::Count(n) => n,
            RetryBudget::Ratio { ratio, min } => {
                let earned = self.first_attempts.load(Ordering::Relaxed) as f64 * ratio.max(0.0);
                u64::from(min).saturating_add(earned as u64)
            }
        };
        self.retries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                (r < allowed).then_some(r + 1)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn full_jitter_stays_under_its_ceiling(base_ms in 1u64..2_000, max_ms in 1u64..60_000, n in 0u32..12) {
            let p = FullJitter { base: Duration::from_millis(base_ms), max: Duration::from_millis(max_ms), max_retries: n };
            let delays: Vec<Duration> = p.build().collect();
            prop_assert_eq!(delays.len(), n as usize);
            for (i, d) in delays.iter().enumerate() {
                let ceiling = Duration::from_millis(base_ms).saturating_mul(1 << i).min(Duration::from_millis(max_ms));
                prop_assert!(*d <= ceiling);
            }
        }
    }

    #[test]
    fn full_jitter_spreads() {
        let p = FullJitter {
            base: Duration::from_secs(1),
            max: Duration::from_secs(1),
            max_retries: 200,
        };
        let delays: Vec<Duration> = p.build().collect();
        let low = delays.iter().filter(|d| d.as_millis() < 500).count();
        assert!((40..160).contains(&low), "{low} of 200 below half");
    }

    #[test]
    fn ratio_budget_earns_retries_from_first_attempts() {
        let t = RetryTokens::new(RetryBudget::Ratio { ratio: 0.5, min: 2 });
        assert!(t.try_withdraw());
        assert!(t.try_withdraw());
        assert!(!t.try_withdraw());
        for _ in 0..4 {
            t.deposit();
        }
        assert!(t.try_withdraw());
        assert!(t.try_withdraw());
        assert!(!t.try_withdraw());
    }

    #[test]
    fn count_and_unlimited_budgets() {
        let t = RetryTokens::new(RetryBudget::Count(1));
        assert!(t.try_withdraw());
        assert!(!t.try_withdraw());
        let t = RetryTokens::new(RetryBudget::Unlimited);
        assert!((0..1000).all(|_| t.try_withdraw()));
    }
}
