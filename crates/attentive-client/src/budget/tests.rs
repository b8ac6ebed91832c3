use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;

/// Grants of `tasks` concurrent takers over `secs` seconds of paused time, as offsets from
/// the start.
async fn grants(rate: f64, tasks: usize, secs: u64) -> Vec<Duration> {
    let budget = Arc::new(Budget::new("test", rate));
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let times = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let budget = Arc::clone(&budget);
        let times = Arc::clone(&times);
        handles.push(tokio::spawn(async move {
            loop {
                budget.acquire_token().await;
                let now = Instant::now();
                if now >= end {
                    break;
                }
                times.lock().unwrap().push(now - start);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let mut t = times.lock().unwrap().clone();
    t.sort();
    t
}

/// The most grants in any half-open window `[t, t + 1 s)`.
fn max_per_second(times: &[Duration]) -> usize {
    let mut best = 0;
    let mut j = 0;
    for i in 0..times.len() {
        while j < times.len() && times[j] < times[i] + Duration::from_secs(1) {
            j += 1;
        }
        best = best.max(j - i);
    }
    best
}

#[tokio::test(start_paused = true)]
async fn never_more_than_rate_in_any_second_and_at_least_95_percent() {
    for (rate, tasks) in [(150.0, 64), (150.0, 1), (10.0, 8), (1000.0, 32), (7.5, 3)] {
        let times = grants(rate, tasks, 10).await;
        let cap = rate.floor() as usize;
        assert!(
            max_per_second(&times) <= cap,
            "rate {rate}: {} in one second",
            max_per_second(&times)
        );
        let min = (rate.floor() * 10.0 * 0.95) as usize;
        assert!(
            times.len() >= min,
            "rate {rate}: only {} of {} in 10 s",
            times.len(),
            rate * 10.0
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_burst_after_idle_stays_under_the_rate() {
    let budget = Arc::new(Budget::new("test", 150.0));
    // Idle for a long time: the bucket must not have saved a second's worth of tokens.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let start = Instant::now();
    let mut n = 0;
    while Instant::now() < start + Duration::from_secs(1) {
        budget.acquire_token().await;
        if Instant::now() < start + Duration::from_secs(1) {
            n += 1;
        }
    }
    assert!((140..=150).contains(&n), "{n} in the first second");
}

#[tokio::test(start_paused = true)]
async fn low_remaining_pauses_until_the_next_second() {
    let budget = Budget::new("test", 150.0);
    budget.acquire_token().await;
    assert!(!budget.observe_rate_headers(Some(150), Some(100)));
    assert!(!budget.observe_rate_headers(Some(150), None));
    let waited = budget.acquire_token().await;
    assert!(waited < Duration::from_millis(10), "{waited:?}");
    assert!(budget.observe_rate_headers(Some(150), Some(2)));
    let waited = budget.acquire_token().await;
    assert!(
        waited > Duration::ZERO && waited <= Duration::from_millis(1010),
        "{waited:?}"
    );
    // Without a limit header, only 0 remaining is low.
    assert!(!budget.observe_rate_headers(None, Some(1)));
    assert!(budget.observe_rate_headers(None, Some(0)));
}

#[tokio::test(start_paused = true)]
async fn a_pause_holds_back_reservations_already_made() {
    let budget = Arc::new(Budget::new("test", 2.0));
    budget.acquire_token().await;
    budget.acquire_token().await;
    let start = Instant::now();
    let b = Arc::clone(&budget);
    // Reserved about 0.5 s ahead, then a pause of 3 s is announced.
    let waiter = tokio::spawn(async move { b.acquire_token().await });
    tokio::task::yield_now().await;
    budget.pause_until(start + Duration::from_secs(3));
    waiter.await.unwrap();
    assert!(Instant::now() >= start + Duration::from_secs(3));
}

#[test]
fn registry_shares_one_budget_per_key_and_the_lowest_rate_wins() {
    let key = ApiKey::new("registry-test-key".into());
    let a = Budget::shared(&key, 150.0);
    let b = Budget::shared(&ApiKey::new("registry-test-key".into()), 100.0);
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.rate(), 100.0);
    let c = Budget::shared(&key, 500.0);
    assert_eq!(c.rate(), 100.0);
    let other = Budget::shared(&ApiKey::new("another-key".into()), 150.0);
    assert!(!Arc::ptr_eq(&a, &other));
    assert_eq!(a.label(), key.fingerprint());
    // Once every holder is gone, a new budget starts with the new rate.
    drop((a, b, c));
    assert_eq!(Budget::shared(&key, 120.0).rate(), 120.0);
}

#[tokio::test(start_paused = true)]
async fn aimd_starts_from_rate_times_latency() {
    let budget = Arc::new(Budget::new("test", 150.0));
    assert_eq!(budget.concurrency_limit(), MIN_START_CONCURRENCY);
    let p = budget.permit().await;
    p.finish(Feedback::Answered {
        latency: Duration::from_millis(200),
    });
    assert_eq!(budget.concurrency_limit(), 30);
    // A fast first answer keeps the minimum.
    let budget = Arc::new(Budget::new("test", 150.0));
    budget.permit().await.finish(Feedback::Answered {
        latency: Duration::from_millis(5),
    });
    assert_eq!(budget.concurrency_limit(), MIN_START_CONCURRENCY);
}

#[tokio::test(start_paused = true)]
async fn aimd_halves_once_per_window_and_grows_only_when_saturated() {
    let budget = Arc::new(Budget::new("test", 1000.0));
    let latency = Duration::from_millis(16);
    budget.permit().await.finish(Feedback::Answered { latency });
    assert_eq!(budget.concurrency_limit(), 16);

    // 8 requests in flight, then they all fail: one halving, not eight.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(budget.permit().await);
    }
    for p in held {
        p.finish(Feedback::Overloaded);
    }
    assert_eq!(budget.concurrency_limit(), 8);

    // Unsaturated successes (one at a time) never grow the limit.
    for _ in 0..50 {
        budget.permit().await.finish(Feedback::Answered { latency });
    }
    assert_eq!(budget.concurrency_limit(), 8);

    // Saturated windows grow it by one each.
    for round in 1..=3 {
        let mut held = Vec::new();
        for _ in 0..budget.concurrency_limit() {
            held.push(budget.permit().await);
        }
        assert_eq!(budget.in_flight(), held.len());
        for p in held {
            p.finish(Feedback::Answered { latency });
        }
        assert_eq!(budget.concurrency_limit(), 8 + round);
    }

    // A failure after a decrease halves again; the floor is 1.
    for _ in 0..10 {
        budget.permit().await.finish(Feedback::Overloaded);
    }
    assert_eq!(budget.concurrency_limit(), 1);
    assert_eq!(budget.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn permits_wait_for_a_free_slot() {
    let budget = Arc::new(Budget::new("test", 1000.0));
    let mut held = Vec::new();
    for _ in 0..MIN_START_CONCURRENCY {
        held.push(budget.permit().await);
    }
    let b = Arc::clone(&budget);
    let mut waiter = tokio::spawn(async move { b.permit().await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished());
    drop(held.pop());
    let p = tokio::time::timeout(Duration::from_secs(1), &mut waiter)
        .await
        .expect("a released slot wakes a waiter")
        .unwrap();
    drop(p);
    drop(held);
    assert_eq!(budget.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_gives_its_slot_back() {
    let budget = Arc::new(Budget::new("test", 1.0));
    budget.permit().await.finish(Feedback::Neutral);
    // The next token is a second away: cancel the wait half-way.
    let r = tokio::time::timeout(Duration::from_millis(500), budget.permit()).await;
    assert!(r.is_err());
    assert_eq!(budget.in_flight(), 0);
}
