//! The request budget of one API key: a smooth rate limiter plus an AIMD concurrency limit,
//! shared by every client of the process that uses the key.
//!
//! **Rate.** Attentive counts requests per key per second and answers 429 beyond the limit.
//! The limiter is a GCRA (a token bucket refilled continuously) that paces requests at 97 % of
//! the configured rate (rounded down to whole requests) with a burst tolerance of about 29 ms:
//! the extra a burst can add is smaller than the 3 % headroom, so **no window of one second
//! ever holds more than `rate` requests**, while the long-run throughput is 97 % of `rate`.
//! (A bucket holding one second of tokens could send `2 × rate` in one second: a full bucket,
//! then its refill.)
//!
//! **Proactive slow-down.** Every response's `x-ratelimit-limit` / `x-ratelimit-remaining`
//! are read: when fewer than 2 % of the limit remain (another program may share the key), new
//! requests wait for the next wall-clock second (Attentive's window is assumed to start on
//! whole seconds). A 429 pauses the same way, or for its `Retry-After`.
//!
//! **Concurrency.** An AIMD controller bounds the requests in flight: it starts at 4, moves
//! to `rate × latency` of the first answer (Little's law: what the rate needs), adds one per
//! window of successes in which the limit was reached, and halves on a 429, a 5xx, a timeout
//! or a dropped connection (once per window: answers to requests sent before the last
//! decrease do not halve it again).
//!
//! **Sharing.** [`Budget::shared`] keeps one budget per key (by its hash) in a process-global
//! registry of weak references: clients of one key share it while any of them lives. When
//! clients of one key ask for different rates, **the lowest wins** (the budget is lowered,
//! never raised), since a lower rate is what someone configured to leave room for others.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::key::ApiKey;

/// Share of the rate kept unused, which pays for the burst tolerance.
const HEADROOM: f64 = 0.03;
/// Slack kept out of the burst tolerance for timer granularity (sleeps end on a millisecond).
const TIMER_SLACK: f64 = 0.002;
/// Below this share of `x-ratelimit-limit` remaining, requests wait for the next second.
const LOW_REMAINING: f64 = 0.02;
/// Waiting for "the next second" waits this much past it (clock skew, latency).
const BOUNDARY_MARGIN: Duration = Duration::from_millis(5);
/// The concurrency limit before any answer was seen.
pub const MIN_START_CONCURRENCY: usize = 4;
/// The concurrency limit never goes above this.
pub const MAX_CONCURRENCY: usize = 512;

/// One key's budget. See the module documentation.
#[derive(Debug)]
pub struct Budget {
    label: String,
    pacer: Mutex<Pacer>,
    aimd: Mutex<Aimd>,
    released: Notify,
}

/// How an answer should move the concurrency limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Answered (2xx, or a 4xx about the request itself), with its latency.
    Answered { latency: Duration },
    /// 429, 5xx, timeout or dropped connection: the limit halves.
    Overloaded,
    /// Says nothing about load (401, 403, a request never sent).
    Neutral,
}

/// The right to send one request now: a concurrency slot plus a rate token. Dropping it
/// without [`Permit::finish`] releases the slot with [`Feedback::Neutral`].
#[derive(Debug)]
pub struct Permit {
    budget: Arc<Budget>,
    generation: u64,
    on_wire: bool,
    throttled: Duration,
    finished: bool,
}

impl Permit {
    /// How long this permit waited for a rate token (not for the concurrency slot).
    pub fn throttled(&self) -> Duration {
        self.throttled
    }

    /// Releases the slot, feeding the answer to the concurrency controller.
    pub fn finish(mut self, feedback: Feedback) {
        self.finished = true;
        self.budget.release(self.generation, self.on_wire, feedback);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.finished {
            self.budget
                .release(self.generation, self.on_wire, Feedback::Neutral);
        }
    }
}

/// A concurrency slot taken but no rate token yet; released if the wait is cancelled.
struct Slot<'a> {
    budget: &'a Arc<Budget>,
    generation: u64,
    armed: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.budget
                .release(self.generation, false, Feedback::Neutral);
        }
    }
}

impl Budget {
    /// A budget of its own, not shared (tests, or a caller that manages sharing itself).
    pub fn new(label: impl Into<String>, requests_per_second: f64) -> Budget {
        Budget {
            label: label.into(),
            pacer: Mutex::new(Pacer::new(requests_per_second)),
            aimd: Mutex::new(Aimd::new(requests_per_second)),
            released: Notify::new(),
        }
    }

    /// The budget of `key`, shared by every caller with the same key while one of them holds
    /// it. A lower `requests_per_second` than the budget's lowers it; a higher one is ignored.
    pub fn shared(key: &ApiKey, requests_per_second: f64) -> Arc<Budget> {
        Budget::shared_for(key, "", requests_per_second)
    }

    /// The budget of one endpoint of `key` (`scope`, e.g. `POST /v2/user/attributes`), shared
    /// like [`Budget::shared`]; the empty scope is the key's own budget.
    pub fn shared_for(key: &ApiKey, scope: &str, requests_per_second: f64) -> Arc<Budget> {
        type Registry = Mutex<HashMap<(u128, String), Weak<Budget>>>;
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        let mut map = lock(REGISTRY.get_or_init(Default::default));
        map.retain(|_, b| b.strong_count() > 0);
        let id = (key.digest(), scope.to_owned());
        if let Some(b) = map.get(&id).and_then(Weak::upgrade) {
            b.lower_rate(requests_per_second);
            return b;
        }
        let label = match scope {
            "" => key.fingerprint(),
            scope => format!("{} {scope}", key.fingerprint()),
        };
        let b = Arc::new(Budget::new(label, requests_per_second));
        map.insert(id, Arc::downgrade(&b));
        b
    }

    /// The key's fingerprint, for logs.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The configured rate (requests per second) in force.
    pub fn rate(&self) -> f64 {
        lock(&self.pacer).rate
    }

    /// Lowers the rate to `requests_per_second` if that is lower.
    pub fn lower_rate(&self, requests_per_second: f64) {
        let mut p = lock(&self.pacer);
        if requests_per_second < p.rate {
            p.set_rate(requests_per_second);
            lock(&self.aimd).rate = requests_per_second;
        }
    }

    /// The current concurrency limit.
    pub fn concurrency_limit(&self) -> usize {
        lock(&self.aimd).limit
    }

    /// Requests holding a permit now.
    pub fn in_flight(&self) -> usize {
        lock(&self.aimd).in_flight
    }

    /// Waits for a concurrency slot, then for a rate token.
    pub async fn permit(self: &Arc<Self>) -> Permit {
        let generation = self.acquire_slot().await;
        let mut slot = Slot {
            budget: self,
            generation,
            armed: true,
        };
        let throttled = self.acquire_token().await;
        slot.armed = false;
        {
            let mut a = lock(&self.aimd);
            a.on_wire += 1;
            if a.on_wire >= a.limit {
                a.saturated = true;
            }
        }
        Permit {
            budget: Arc::clone(self),
            generation,
            on_wire: true,
            throttled,
            finished: false,
        }
    }

    /// Waits for a rate token only (no concurrency slot). Returns the time waited.
    pub async fn acquire_token(&self) -> Duration {
        let begin = Instant::now();
        loop {
            let at = lock(&self.pacer).reserve(Instant::now());
            tokio::time::sleep_until(at).await;
            // A pause set while this reservation slept sends it to the back of the line.
            let now = Instant::now();
            let paused = lock(&self.pacer).paused_until.is_some_and(|p| p > now);
            if !paused {
                return now.saturating_duration_since(begin);
            }
        }
    }

    /// No new request starts before `until`.
    pub fn pause_until(&self, until: Instant) {
        let mut p = lock(&self.pacer);
        p.paused_until = Some(p.paused_until.map_or(until, |u| u.max(until)));
    }

    /// No new request starts before the next wall-clock second (plus a few ms).
    pub fn pause_until_next_second(&self) {
        self.pause_until(Instant::now() + until_next_second());
    }

    /// Reads a response's `x-ratelimit-*` values. Returns true when they were low enough to
    /// pause new requests until the next second.
    pub fn observe_rate_headers(&self, limit: Option<u64>, remaining: Option<u64>) -> bool {
        let Some(remaining) = remaining else {
            return false;
        };
        let threshold = limit.map_or(1.0, |l| (l as f64 * LOW_REMAINING).max(1.0));
        let low = (remaining as f64) < threshold;
        if low {
            self.pause_until_next_second();
        }
        low
    }

    async fn acquire_slot(&self) -> u64 {
        loop {
            let mut notified = pin!(self.released.notified());
            notified.as_mut().enable();
            {
                let mut a = lock(&self.aimd);
                if a.in_flight < a.limit {
                    a.in_flight += 1;
                    return a.generation;
                }
            }
            notified.await;
        }
    }

    fn release(&self, generation: u64, on_wire: bool, feedback: Feedback) {
        let free = {
            let mut a = lock(&self.aimd);
            a.in_flight = a.in_flight.saturating_sub(1);
            if on_wire {
                a.on_wire = a.on_wire.saturating_sub(1);
            }
            a.feedback(generation, feedback);
            a.limit.saturating_sub(a.in_flight)
        };
        // Wake as many waiters as there are free slots (the limit may have grown).
        for _ in 0..free.min(2) {
            self.released.notify_one();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn until_next_second() -> Duration {
    let sub = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Duration::from_nanos(1_000_000_000 - u64::from(sub)) + BOUNDARY_MARGIN
}

/// GCRA state: a request may go at `tat - tolerance`; each one moves `tat` by `interval`.
#[derive(Debug)]
struct Pacer {
    rate: f64,
    interval: Duration,
    tolerance: Duration,
    /// Theoretical arrival time of the next request; `None` before the first.
    tat: Option<Instant>,
    paused_until: Option<Instant>,
}

impl Pacer {
    fn new(rate: f64) -> Pacer {
        let mut p = Pacer {
            rate: 0.0,
            interval: Duration::ZERO,
            tolerance: Duration::ZERO,
            tat: None,
            paused_until: None,
        };
        p.set_rate(rate);
        p
    }

    /// Requests are counted in whole numbers per second, so a rate of 7.5 allows 7: the
    /// limiter works with `R = floor(rate)` (or `rate` itself below 1). With pace
    /// `r' = (1 - HEADROOM) × R` and tolerance `τ`, any half-open window of 1 s holds at most
    /// `ceil((1 + τ) × r')` grants, so `τ = R / r' - 1` keeps it at `R`; [`TIMER_SLACK`] is
    /// kept out of `τ` for sleeps that end late.
    fn set_rate(&mut self, rate: f64) {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        let (pace, tolerance) = if rate >= 1.0 {
            let whole = rate.floor();
            let pace = whole * (1.0 - HEADROOM);
            (pace, (whole / pace - 1.0 - TIMER_SLACK).max(0.0))
        } else {
            (rate, 0.0)
        };
        self.rate = rate;
        // Rounded up by a nanosecond so that rounding never adds a request.
        self.interval = Duration::from_secs_f64(1.0 / pace) + Duration::from_nanos(1);
        self.tolerance = Duration::from_secs_f64(tolerance);
    }

    /// Reserves the next slot at or after `now` and returns when it may be used.
    fn reserve(&mut self, now: Instant) -> Instant {
        let start = match self.paused_until {
            Some(p) if p > now => p,
            _ => now,
        };
        let tat = self.tat.map_or(start, |t| t.max(start));
        let at = tat
            .checked_sub(self.tolerance)
            .map_or(start, |t| t.max(start));
        self.tat = Some(tat + self.interval);
        at
    }
}

/// The AIMD concurrency controller's state.
#[derive(Debug)]
struct Aimd {
    rate: f64,
    limit: usize,
    /// Holding a slot (waiting for a token or on the wire).
    in_flight: usize,
    /// Holding a slot and a token: sent.
    on_wire: usize,
    /// Answers since the window started.
    successes: usize,
    /// Whether `on_wire` reached `limit` in this window: only then may the limit grow.
    saturated: bool,
    /// Bumped at each decrease; a request carries the generation it started in.
    generation: u64,
    /// Whether the limit was set from an observed latency yet.
    calibrated: bool,
}

impl Aimd {
    fn new(rate: f64) -> Aimd {
        Aimd {
            rate,
            limit: MIN_START_CONCURRENCY,
            in_flight: 0,
            on_wire: 0,
            successes: 0,
            saturated: false,
            generation: 0,
            calibrated: false,
        }
    }

    fn feedback(&mut self, generation: u64, feedback: Feedback) {
        match feedback {
            Feedback::Neutral => {}
            Feedback::Answered { latency } => {
                if !self.calibrated {
                    self.calibrated = true;
                    let needed = (self.rate * latency.as_secs_f64()).ceil();
                    let needed = if needed.is_finite() {
                        needed as usize
                    } else {
                        MAX_CONCURRENCY
                    };
                    self.limit = self.limit.max(needed).min(MAX_CONCURRENCY);
                }
                self.successes += 1;
                if self.successes >= self.limit {
                    if self.saturated {
                        self.limit = (self.limit + 1).min(MAX_CONCURRENCY);
                    }
                    self.successes = 0;
                    self.saturated = false;
                }
            }
            Feedback::Overloaded => {
                // Requests sent before the last decrease saw the old limit: ignore them.
                if generation == self.generation {
                    self.calibrated = true;
                    self.limit = (self.limit / 2).max(1);
                    self.generation += 1;
                    self.successes = 0;
                    self.saturated = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
