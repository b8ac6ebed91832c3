//! The notification outbox: each notification (a lifecycle event or an alert transition, as
//! the JSON a receiver gets) and one delivery per endpoint that subscribes to it, with its
//! attempts. Deliveries are claimed before they are attempted (a lease), so two processes
//! sharing the state file never send one at the same time. Endpoints are kept by name: their
//! URLs and secrets live in the config and the environment, never here.

use std::fmt;
use std::time::Duration;

use rusqlite::{params, Row, Transaction, TransactionBehavior};

use crate::{now, Context, Error, StateStore};

/// A notification to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// The activation it is about, if any.
    pub activation: Option<String>,
    /// The event, e.g. `run.failed` or `alert.firing`.
    pub event: String,
    /// The run it is about, if any.
    pub run_id: Option<i64>,
    /// The alert rule, for `alert.*` events.
    pub rule: Option<String>,
    /// The event as JSON (what a generic webhook receives).
    pub payload_json: String,
    /// The endpoints (by name) to deliver it to; none: recorded, delivered nowhere.
    pub endpoints: Vec<String>,
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet; attempted (again) at `next_attempt_at`.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Given up: out of attempts, or an answer that retrying cannot change.
    Failed,
}

impl DeliveryState {
    /// Every state.
    pub const ALL: &'static [DeliveryState] = &[
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Failed,
    ];

    /// The text stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    /// Parses [`DeliveryState::as_str`]'s text.
    pub fn parse(text: &str) -> Option<DeliveryState> {
        DeliveryState::ALL
            .iter()
            .copied()
            .find(|s| s.as_str() == text)
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One delivery of one notification to one endpoint, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The delivery's id.
    pub id: i64,
    /// The notification's id (the `id` of the event a receiver gets).
    pub notification_id: i64,
    /// The event.
    pub event: String,
    /// The activation it is about.
    pub activation: Option<String>,
    /// The run it is about.
    pub run_id: Option<i64>,
    /// The alert rule, for `alert.*` events.
    pub rule: Option<String>,
    /// The endpoint's name in the config.
    pub endpoint: String,
    /// Where it is.
    pub state: DeliveryState,
    /// Attempts made (or started) so far.
    pub attempts: u32,
    /// When the notification was queued.
    pub created_at: String,
    /// When it was last attempted.
    pub last_attempt_at: Option<String>,
    /// When it is attempted next (pending ones).
    pub next_attempt_at: String,
    /// The HTTP status of the last answer, if one came.
    pub http_status: Option<u16>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// When the endpoint acknowledged it.
    pub delivered_at: Option<String>,
}

/// A delivery claimed for an attempt ([`StateStore::claim_deliveries`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    /// The delivery's id.
    pub id: i64,
    /// The notification's id.
    pub notification_id: i64,
    /// The endpoint's name.
    pub endpoint: String,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    /// The event.
    pub event: String,
    /// The event as JSON.
    pub payload_json: String,
}

/// The result of one attempt ([`StateStore::record_attempt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The endpoint answered 2xx.
    Delivered {
        /// Its status.
        http_status: u16,
    },
    /// It failed; `retry_in` is when to try again (`None`: give up, the delivery fails).
    Failed {
        /// The status, when an answer came.
        http_status: Option<u16>,
        /// What went wrong (never a URL or a secret).
        error: String,
        /// When to attempt again.
        retry_in: Option<Duration>,
    },
}

const SELECT_DELIVERY: &str = "\
SELECT d.id, d.notification_id, n.event, n.activation, n.run_id, n.rule, d.endpoint, d.state,
       d.attempts, n.created_at, d.last_attempt_at, d.next_attempt_at, d.http_status, d.error,
       d.delivered_at
FROM notification_deliveries AS d JOIN notifications AS n ON n.id = d.notification_id";

fn delivery(r: &Row<'_>) -> Result<Delivery, Error> {
    const A: &str = "reading notification deliveries";
    let state: String = r.get(7).ctx(A)?;
    let status: Option<i64> = r.get(12).ctx(A)?;
    Ok(Delivery {
        id: r.get(0).ctx(A)?,
        notification_id: r.get(1).ctx(A)?,
        event: r.get(2).ctx(A)?,
        activation: r.get(3).ctx(A)?,
        run_id: r.get(4).ctx(A)?,
        rule: r.get(5).ctx(A)?,
        endpoint: r.get(6).ctx(A)?,
        state: DeliveryState::parse(&state).ok_or(Error::Corrupt {
            table: "notification_deliveries",
            column: "state",
            value: state,
        })?,
        attempts: u32::try_from(r.get::<_, i64>(8).ctx(A)?).unwrap_or(u32::MAX),
        created_at: r.get(9).ctx(A)?,
        last_attempt_at: r.get(10).ctx(A)?,
        next_attempt_at: r.get(11).ctx(A)?,
        http_status: status.and_then(|s| u16::try_from(s).ok()),
        error: r.get(13).ctx(A)?,
        delivered_at: r.get(14).ctx(A)?,
    })
}

/// Inserts a notification and its deliveries (due now) into an open transaction.
pub(crate) fn insert_notification(
    tx: &Transaction<'_>,
    n: &NewNotification,
    at: &str,
) -> Result<i64, Error> {
    const A: &str = "queueing a notification";
    tx.prepare_cached(
        "INSERT INTO notifications (activation, event, run_id, rule, payload_json, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            n.activation,
            n.event,
            n.run_id,
            n.rule,
            n.payload_json,
            at
        ])
    })
    .ctx(A)?;
    let id = tx.last_insert_rowid();
    for endpoint in &n.endpoints {
        tx.prepare_cached(
            "INSERT INTO notification_deliveries (notification_id, endpoint, state, next_attempt_at) \
             VALUES (?1, ?2, 'pending', ?3)",
        )
        .and_then(|mut s| s.execute(params![id, endpoint, at]))
        .ctx(A)?;
    }
    Ok(id)
}

/// `now + d` in the store's time format.
fn later(d: Duration) -> String {
    let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(365));
    (chrono::Utc::now() + d).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl StateStore {
    /// Queues a notification (and its deliveries) on its own; returns its id.
    pub fn queue_notification(&mut self, n: &NewNotification) -> Result<i64, Error> {
        const A: &str = "queueing a notification";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(A)?;
        let id = insert_notification(&tx, n, &now())?;
        tx.commit().ctx(A)?;
        Ok(id)
    }

    /// The latest deliveries, newest first: of one activation (or all), optionally in one
    /// state.
    pub fn deliveries(
        &self,
        activation: Option<&str>,
        state: Option<DeliveryState>,
        limit: u64,
    ) -> Result<Vec<Delivery>, Error> {
        const A: &str = "listing notification deliveries";
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "{SELECT_DELIVERY} WHERE (?1 IS NULL OR n.activation = ?1) \
                 AND (?2 IS NULL OR d.state = ?2) ORDER BY d.id DESC LIMIT ?3"
            ))
            .ctx(A)?;
        let mut rows = stmt
            .query(params![
                activation,
                state.map(DeliveryState::as_str),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ])
            .ctx(A)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().ctx(A)? {
            out.push(delivery(r)?);
        }
        Ok(out)
    }

    /// How many deliveries there are per endpoint and state (for metrics), with the total of
    /// attempts they took.
    pub fn delivery_totals(&self) -> Result<Vec<(String, DeliveryState, u64, u64)>, Error> {
        const A: &str = "counting notification deliveries";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT endpoint, state, count(*), sum(attempts) FROM notification_deliveries \
                 GROUP BY endpoint, state ORDER BY endpoint, state",
            )
            .ctx(A)?;
        let mut rows = stmt.query([]).ctx(A)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().ctx(A)? {
            let state: String = r.get(1).ctx(A)?;
            let state = DeliveryState::parse(&state).ok_or(Error::Corrupt {
                table: "notification_deliveries",
                column: "state",
                value: state,
            })?;
            let count: i64 = r.get(2).ctx(A)?;
            let attempts: Option<i64> = r.get(3).ctx(A)?;
            out.push((
                r.get(0).ctx(A)?,
                state,
                u64::try_from(count).unwrap_or(0),
                u64::try_from(attempts.unwrap_or(0)).unwrap_or(0),
            ));
        }
        Ok(out)
    }

    /// The pending deliveries to `endpoints` due now, oldest first, at most `limit`, claimed in one
    /// transaction: each one's attempt count goes up and its next attempt moves `lease`
    /// ahead, so no other process attempts it meanwhile (a process killed mid-attempt leaves
    /// it to be attempted again after the lease).
    pub fn claim_deliveries(
        &mut self,
        endpoints: &[String],
        lease: Duration,
        limit: u64,
    ) -> Result<Vec<ClaimedDelivery>, Error> {
        const A: &str = "claiming notification deliveries";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(A)?;
        let at = now();
        let claimed: Vec<ClaimedDelivery> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT d.id, d.notification_id, d.endpoint, d.attempts, n.event, n.payload_json \
                     FROM notification_deliveries AS d JOIN notifications AS n ON n.id = d.notification_id \
                     WHERE d.state = 'pending' AND d.next_attempt_at <= ?1 \
                     AND d.endpoint IN (SELECT value FROM json_each(?3)) \
                     ORDER BY d.next_attempt_at, d.id LIMIT ?2",
                )
                .ctx(A)?;
            let rows = stmt
                .query_map(
                    params![
                        at,
                        i64::try_from(limit).unwrap_or(i64::MAX),
                        serde_json::to_string(endpoints).unwrap_or_else(|_| "[]".into())
                    ],
                    |r| {
                        Ok(ClaimedDelivery {
                            id: r.get(0)?,
                            notification_id: r.get(1)?,
                            endpoint: r.get(2)?,
                            attempt: u32::try_from(r.get::<_, i64>(3)?)
                                .unwrap_or(u32::MAX - 1)
                                .saturating_add(1),
                            event: r.get(4)?,
                            payload_json: r.get(5)?,
                        })
                    },
                )
                .ctx(A)?;
            rows.collect::<Result<_, _>>().ctx(A)?
        };
        let until = later(lease);
        for c in &claimed {
            tx.prepare_cached(
                "UPDATE notification_deliveries SET attempts = ?2, last_attempt_at = ?3, \
                 next_attempt_at = ?4 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![c.id, c.attempt, at, until]))
            .ctx(A)?;
        }
        tx.commit().ctx(A)?;
        Ok(claimed)
    }

    /// Records the result of an attempt of a claimed delivery.
    pub fn record_attempt(&mut self, id: i64, result: &AttemptResult) -> Result<(), Error> {
        const A: &str = "recording a notification attempt";
        let at = now();
        let n = match result {
            AttemptResult::Delivered { http_status } => self
                .conn
                .prepare_cached(
                    "UPDATE notification_deliveries SET state = 'delivered', http_status = ?2, \
                     error = NULL, delivered_at = ?3 WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![id, http_status, at])),
            AttemptResult::Failed {
                http_status,
                error,
                retry_in,
            } => {
                let (state, next) = match retry_in {
                    Some(d) => ("pending", later(*d)),
                    None => ("failed", at.clone()),
                };
                self.conn
                    .prepare_cached(
                        "UPDATE notification_deliveries SET state = ?2, http_status = ?3, \
                         error = ?4, next_attempt_at = ?5 WHERE id = ?1",
                    )
                    .and_then(|mut s| s.execute(params![id, state, http_status, error, next]))
            }
        }
        .ctx(A)?;
        if n == 0 {
            return Err(Error::UnknownDelivery { id });
        }
        Ok(())
    }

    /// Deletes the notifications queued before `older_than` ago whose deliveries are all done
    /// (delivered or given up), with their deliveries; returns how many. Pending ones stay,
    /// whatever their age.
    pub fn prune_notifications(&mut self, older_than: Duration) -> Result<u64, Error> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::days(36_500));
        let cutoff = cutoff.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM notifications WHERE created_at < ?1 AND NOT EXISTS \
                 (SELECT 1 FROM notification_deliveries AS d \
                  WHERE d.notification_id = notifications.id AND d.state = 'pending')",
            )
            .and_then(|mut s| s.execute([cutoff]))
            .ctx("pruning old notifications")?;
        Ok(n as u64)
    }

    /// How many deliveries are pending (due now or later).
    pub fn pending_deliveries(&self) -> Result<u64, Error> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM notification_deliveries WHERE state = 'pending'")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .ctx("counting pending notifications")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// When the next pending delivery to one of `endpoints` is due (RFC 3339), if any is
    /// pending.
    pub fn next_delivery_due(&self, endpoints: &[String]) -> Result<Option<String>, Error> {
        let endpoints = serde_json::to_string(endpoints).unwrap_or_else(|_| "[]".into());
        self.conn
            .prepare_cached(
                "SELECT min(next_attempt_at) FROM notification_deliveries WHERE state = 'pending' \
                 AND endpoint IN (SELECT value FROM json_each(?1))",
            )
            .and_then(|mut s| s.query_row([endpoints], |r| r.get(0)))
            .ctx("reading when the next notification is due")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(s: &mut StateStore, endpoints: &[&str]) -> i64 {
        s.queue_notification(&NewNotification {
            activation: Some("vip".into()),
            event: "run.started".into(),
            run_id: Some(1),
            rule: None,
            payload_json: r#"{"event":"run.started"}"#.into(),
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn claimed_deliveries_are_leased_and_their_outcomes_recorded() {
        let mut s = StateStore::open_in_memory().unwrap();
        let id = queue(&mut s, &["ops", "slack"]);
        let ops = ["ops".to_owned()];
        let lease = Duration::from_secs(60);
        let claimed = s.claim_deliveries(&ops, lease, 10).unwrap();
        assert_eq!(claimed.len(), 1, "only the endpoints asked for");
        assert_eq!((claimed[0].notification_id, claimed[0].attempt), (id, 1));
        // Leased: nobody claims it again meanwhile.
        assert!(s.claim_deliveries(&ops, lease, 10).unwrap().is_empty());
        s.record_attempt(
            claimed[0].id,
            &AttemptResult::Failed {
                http_status: Some(500),
                error: "the endpoint answered 500".into(),
                retry_in: Some(Duration::ZERO),
            },
        )
        .unwrap();
        let again = s.claim_deliveries(&ops, lease, 10).unwrap();
        assert_eq!(again[0].attempt, 2);
        s.record_attempt(again[0].id, &AttemptResult::Delivered { http_status: 200 })
            .unwrap();
        let d = s
            .deliveries(Some("vip"), Some(DeliveryState::Delivered), 10)
            .unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].attempts, d[0].http_status, d[0].error.as_deref()),
            (2, Some(200), None)
        );
        assert_eq!(s.pending_deliveries().unwrap(), 1);
        assert!(s.next_delivery_due(&ops).unwrap().is_none());
        assert!(s
            .next_delivery_due(&["slack".to_owned()])
            .unwrap()
            .is_some());
        let totals = s.delivery_totals().unwrap();
        assert_eq!(
            totals,
            [
                ("ops".to_owned(), DeliveryState::Delivered, 1, 2),
                ("slack".to_owned(), DeliveryState::Pending, 1, 0)
            ]
        );
        assert!(matches!(
            s.record_attempt(999, &AttemptResult::Delivered { http_status: 200 }),
            Err(Error::UnknownDelivery { id: 999 })
        ));
        // Pruning keeps what is recent or still pending.
        assert_eq!(s.prune_notifications(Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(
            s.prune_notifications(Duration::ZERO).unwrap(),
            0,
            "slack's is pending"
        );
        let done = queue(&mut s, &[]);
        assert!(done > id);
        std::thread::sleep(Duration::from_millis(5)); // older than now, to the millisecond
        assert_eq!(s.prune_notifications(Duration::ZERO).unwrap(), 1);
        assert_eq!(s.deliveries(None, None, 10).unwrap().len(), 2);
    }
}
