//! Runs each activation that has a `schedule` when it is due (in its `timezone`), plus a small
//! random jitter. A run still going on when the next one is due is not overlapped: that
//! occurrence is skipped, logged and counted (`attentive_sync_runs_skipped_total`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use runner::schedule::Schedule;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::SkipReason;
use crate::runs::{self, StartError, Trigger};
use crate::state::App;

/// Starts one task per scheduled activation; they end when `shutdown` turns true.
pub fn spawn(app: &Arc<App>, shutdown: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    app.project
        .activations
        .values()
        .filter_map(|a| a.cron.clone().map(|c| (a.name.clone(), c)))
        .map(|(name, schedule)| {
            tracing::info!(
                activation = %name,
                schedule = schedule.expression(),
                timezone = schedule.timezone().name(),
                "scheduled"
            );
            tokio::spawn(schedule_loop(app.clone(), name, schedule, shutdown.clone()))
        })
        .collect()
}

/// How often `serve` asks about the bulk jobs of runs that did not wait for them.
pub const SETTLE_EVERY: Duration = Duration::from_secs(60);

/// Settles bulk jobs in the background: every [`SETTLE_EVERY`] (the first time soon after
/// start), each activation's open jobs are asked about once and those processed are settled,
/// under the activation's lock (an activation that is running is skipped: its run settles
/// them first). Failures are logged and tried again next time.
pub fn spawn_settler(app: &Arc<App>, shutdown: &watch::Receiver<bool>) -> JoinHandle<()> {
    let app = app.clone();
    let mut shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut every = Duration::from_secs(5);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(every) => {}
            }
            every = SETTLE_EVERY;
            for name in app.project.activations.keys() {
                if *shutdown.borrow() {
                    return;
                }
                let client = match runner::run::client_for(&app.project, name) {
                    Ok(c) => c,
                    Err(_) => continue, // reported when its runs start
                };
                match runner::run::settle_activation(&app.project.state_path, name, &client).await {
                    Ok(Some(s)) if s.jobs > 0 => tracing::info!(
                        activation = %name,
                        settled = s.jobs,
                        open = s.open,
                        "bulk jobs settled"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        activation = %name,
                        error = %runner::error_chain(&e),
                        "settling bulk jobs failed; tried again later"
                    ),
                }
            }
        }
    })
}

/// A random delay in `0..=max`, at millisecond precision.
pub fn jitter(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::random_range(0..=ms))
}

/// The occurrence to wait for after `last` (the previous due time, or the start), never one
/// in the past: after a pause (a suspended machine, a long stall) missed occurrences are not
/// caught up one by one.
pub fn next_due(
    schedule: &Schedule,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    schedule.next_after(last.max(now))
}

async fn schedule_loop(
    app: Arc<App>,
    name: String,
    schedule: Schedule,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = Utc::now();
    loop {
        let Some(due) = next_due(&schedule, last, Utc::now()) else {
            tracing::warn!(activation = %name, "the schedule never matches again");
            app.set_next_due(&name, None);
            return;
        };
        app.set_next_due(&name, Some(due));
        let wait =
            (due - Utc::now()).to_std().unwrap_or(Duration::ZERO) + jitter(app.settings.jitter);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        last = due;
        if app.is_shutting_down() {
            return;
        }
        match runs::start(&app, &name, Trigger::Schedule).await {
            Ok(run_id) => {
                tracing::info!(activation = %name, run_id, due = %due.to_rfc3339(), "scheduled run started");
            }
            Err(StartError::InProgress { run_id, .. }) => {
                tracing::warn!(
                    activation = %name,
                    due = %due.to_rfc3339(),
                    running = ?run_id,
                    "scheduled run skipped: the previous run is still going on"
                );
                app.metrics.skipped(&name, SkipReason::StillRunning);
            }
            Err(StartError::Locked(message)) => {
                tracing::warn!(activation = %name, due = %due.to_rfc3339(), "scheduled run skipped: {message}");
                app.metrics.skipped(&name, SkipReason::Locked);
            }
            Err(StartError::ShuttingDown) => return,
            Err(e) => {
                tracing::error!(activation = %name, due = %due.to_rfc3339(), error = %e, "scheduled run did not start");
                app.metrics.skipped(&name, SkipReason::Error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use chrono::TimeZone;

    fn utc(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 7, 1, h, m, s).unwrap()
    }

    #[test]
    fn next_due_never_lies_in_the_past() {
        let s = Schedule::parse("*/2 * * * * *", chrono_tz::Tz::UTC).unwrap();
        // On time: the occurrence after the last one.
        assert_eq!(
            next_due(&s, utc(12, 0, 2), utc(12, 0, 2)),
            Some(utc(12, 0, 4))
        );
        // Woken a little early by the clock: still the next one, not the same again.
        assert_eq!(
            next_due(&s, utc(12, 0, 2), utc(12, 0, 1)),
            Some(utc(12, 0, 4))
        );
        // After a long stall: the next one from now, no catching up.
        assert_eq!(
            next_due(&s, utc(12, 0, 2), utc(13, 0, 3)),
            Some(utc(13, 0, 4))
        );
    }

    #[test]
    fn time_zone_aware_due_times() {
        let tz = Schedule::parse_time_zone("America/New_York").unwrap();
        let s = Schedule::parse("30 6 * * *", tz).unwrap();
        // 6:30 EDT is 10:30 UTC in July.
        assert_eq!(
            next_due(&s, utc(0, 0, 0), utc(0, 0, 0)),
            Some(utc(10, 30, 0))
        );
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(300)) <= Duration::from_millis(300));
        }
    }
}
