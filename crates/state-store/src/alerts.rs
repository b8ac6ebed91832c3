//! Alert states: per activation and rule, `ok` or `firing`, and which runs had their alerts
//! evaluated. Transitions and the notifications they cause are recorded in one transaction
//! ([`StateStore::record_alerts`]), so a notification exists exactly when its transition does.

use std::fmt;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use crate::notifications::{insert_notification, NewNotification};
use crate::runs::RunSummary;
use crate::{now, Context, Error, StateStore};

/// Where an alert rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The rule's condition does not hold (or was never evaluated).
    Ok,
    /// The rule's condition holds.
    Firing,
}

impl AlertState {
    /// The text stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Ok => "ok",
            AlertState::Firing => "firing",
        }
    }

    /// Parses [`AlertState::as_str`]'s text.
    pub fn parse(text: &str) -> Option<AlertState> {
        match text {
            "ok" => Some(AlertState::Ok),
            "firing" => Some(AlertState::Firing),
            _ => None,
        }
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule's state, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertStateRow {
    /// The activation.
    pub activation: String,
    /// The rule's name (e.g. `run_failed`).
    pub rule: String,
    /// Ok or firing.
    pub state: AlertState,
    /// Since when it is in this state (RFC 3339, UTC).
    pub since: String,
    /// The run it was last evaluated on (`None` for rules evaluated on the clock).
    pub run_id: Option<i64>,
    /// Why it fires (or fired last), for people.
    pub message: Option<String>,
    /// When it was last evaluated.
    pub evaluated_at: String,
}

/// A rule's new state, with the state its evaluation started from: the change is refused if
/// another process moved the rule meanwhile (see [`StateStore::record_alerts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertUpdate {
    /// The rule.
    pub rule: String,
    /// The state read before evaluating (`None`: no row yet).
    pub previous: Option<AlertState>,
    /// The new state.
    pub state: AlertState,
    /// The run evaluated, if any.
    pub run_id: Option<i64>,
    /// Why it fires.
    pub message: Option<String>,
}

/// What one evaluation of an activation's alerts records, in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertBatch {
    /// Runs now evaluated (each at most once, ever).
    pub evaluated_runs: Vec<i64>,
    /// New states of rules (unchanged ones too: their `evaluated_at` and message move).
    pub updates: Vec<AlertUpdate>,
    /// Notifications to queue (lifecycle events and transitions).
    pub notifications: Vec<NewNotification>,
}

/// What [`StateStore::record_alerts`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertsRecorded {
    /// Recorded; the ids of the queued notifications.
    Recorded(Vec<i64>),
    /// Nothing recorded: another process evaluated one of these runs or moved one of these
    /// rules since they were read (its evaluation stands).
    Superseded,
}

impl StateStore {
    /// Every stored alert state, of one activation or of all, by activation and rule.
    pub fn alert_states(&self, activation: Option<&str>) -> Result<Vec<AlertStateRow>, Error> {
        const A: &str = "reading alert states";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT activation, rule, state, since, run_id, message, evaluated_at \
                 FROM alert_states WHERE ?1 IS NULL OR activation = ?1 \
                 ORDER BY activation, rule",
            )
            .ctx(A)?;
        let mut rows = stmt.query(params![activation]).ctx(A)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().ctx(A)? {
            let state: String = r.get(2).ctx(A)?;
            out.push(AlertStateRow {
                activation: r.get(0).ctx(A)?,
                rule: r.get(1).ctx(A)?,
                state: AlertState::parse(&state).ok_or(Error::Corrupt {
                    table: "alert_states",
                    column: "state",
                    value: state,
                })?,
                since: r.get(3).ctx(A)?,
                run_id: r.get(4).ctx(A)?,
                message: r.get(5).ctx(A)?,
                evaluated_at: r.get(6).ctx(A)?,
            });
        }
        Ok(out)
    }

    /// The activation's runs (kind `run`) that have finished (not `running`, not `pending`)
    /// but whose alerts were not evaluated yet, oldest first, at most `limit`.
    pub fn runs_to_evaluate(&self, activation: &str, limit: u64) -> Result<Vec<RunSummary>, Error> {
        const A: &str = "listing runs to evaluate";
        let ids: Vec<i64> = self
            .conn
            .prepare_cached(
                "SELECT r.id FROM runs AS r JOIN activations AS a ON a.id = r.activation_id \
                 WHERE a.name = ?1 AND r.kind = 'run' AND r.status NOT IN ('running', 'pending') \
                 AND NOT EXISTS (SELECT 1 FROM alert_evaluations AS e WHERE e.run_id = r.id) \
                 ORDER BY r.id LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(
                    params![activation, i64::try_from(limit).unwrap_or(i64::MAX)],
                    |r| r.get(0),
                )?
                .collect()
            })
            .ctx(A)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(run) = self.run(id)? {
                out.push(run);
            }
        }
        Ok(out)
    }

    /// Records an evaluation in one transaction: the runs evaluated, the rules' states
    /// (`since` moves only when a state changes) and the notifications to send. Refused as a
    /// whole ([`AlertsRecorded::Superseded`]) when a run was evaluated already or a rule's
    /// state is no longer its `previous`, so that two processes never both notify one
    /// transition.
    pub fn record_alerts(
        &mut self,
        activation: &str,
        batch: &AlertBatch,
    ) -> Result<AlertsRecorded, Error> {
        const A: &str = "recording alert states";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(A)?;
        let at = now();
        for run_id in &batch.evaluated_runs {
            let n = tx
                .prepare_cached(
                    "INSERT INTO alert_evaluations (run_id, evaluated_at) VALUES (?1, ?2) \
                     ON CONFLICT (run_id) DO NOTHING",
                )
                .and_then(|mut s| s.execute(params![run_id, at]))
                .ctx(A)?;
            if n == 0 {
                return Ok(AlertsRecorded::Superseded);
            }
        }
        for u in &batch.updates {
            let current: Option<String> = tx
                .prepare_cached(
                    "SELECT state FROM alert_states WHERE activation = ?1 AND rule = ?2",
                )
                .and_then(|mut s| {
                    s.query_row(params![activation, u.rule], |r| r.get(0))
                        .optional()
                })
                .ctx(A)?;
            if current.as_deref().and_then(AlertState::parse) != u.previous {
                return Ok(AlertsRecorded::Superseded);
            }
            tx.prepare_cached(
                "INSERT INTO alert_states (activation, rule, state, since, run_id, message, evaluated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?4) \
                 ON CONFLICT (activation, rule) DO UPDATE SET \
                   since = CASE WHEN state = excluded.state THEN since ELSE excluded.since END, \
                   state = excluded.state, run_id = excluded.run_id, \
                   message = excluded.message, evaluated_at = excluded.evaluated_at",
            )
            .and_then(|mut s| {
                s.execute(params![
                    activation,
                    u.rule,
                    u.state.as_str(),
                    at,
                    u.run_id,
                    u.message
                ])
            })
            .ctx(A)?;
        }
        let mut ids = Vec::with_capacity(batch.notifications.len());
        for n in &batch.notifications {
            ids.push(insert_notification(&tx, n, &at)?);
        }
        tx.commit().ctx(A)?;
        Ok(AlertsRecorded::Recorded(ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RunKind, RunStatus};

    fn update(rule: &str, previous: Option<AlertState>, state: AlertState) -> AlertUpdate {
        AlertUpdate {
            rule: rule.into(),
            previous,
            state,
            run_id: Some(1),
            message: Some("why".into()),
        }
    }

    #[test]
    fn a_run_is_evaluated_once_and_a_moved_rule_refuses_a_stale_update() {
        let mut s = StateStore::open_in_memory().unwrap();
        let run = s.begin_run("vip", RunKind::Run).unwrap();
        let pending = s.begin_run("vip", RunKind::Run).unwrap();
        s.finish_run(run, RunStatus::Failed, "{}", Some("boom"))
            .unwrap();
        s.finish_run(pending, RunStatus::Pending, "{}", None)
            .unwrap();
        let todo: Vec<i64> = s
            .runs_to_evaluate("vip", 10)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(todo, [run], "pending runs wait");
        let batch = AlertBatch {
            evaluated_runs: vec![run],
            updates: vec![update("run_failed", None, AlertState::Firing)],
            notifications: vec![NewNotification {
                activation: Some("vip".into()),
                event: "alert.firing".into(),
                run_id: Some(run),
                rule: Some("run_failed".into()),
                payload_json: "{}".into(),
                endpoints: vec!["ops".into()],
            }],
        };
        assert!(
            matches!(s.record_alerts("vip", &batch).unwrap(), AlertsRecorded::Recorded(ids) if ids.len() == 1)
        );
        // The same evaluation again (another process): refused, nothing queued twice.
        assert_eq!(
            s.record_alerts("vip", &batch).unwrap(),
            AlertsRecorded::Superseded
        );
        assert!(s.runs_to_evaluate("vip", 10).unwrap().is_empty());
        assert_eq!(s.deliveries(None, None, 10).unwrap().len(), 1);
        let firing = &s.alert_states(Some("vip")).unwrap()[0];
        assert_eq!(
            (firing.rule.as_str(), firing.state),
            ("run_failed", AlertState::Firing)
        );
        let since = firing.since.clone();
        // An update from a stale read of the rule is refused.
        let stale = AlertBatch {
            updates: vec![update("run_failed", None, AlertState::Ok)],
            ..AlertBatch::default()
        };
        assert_eq!(
            s.record_alerts("vip", &stale).unwrap(),
            AlertsRecorded::Superseded
        );
        // Staying in a state keeps its `since`; changing it moves it.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let same = AlertBatch {
            updates: vec![update(
                "run_failed",
                Some(AlertState::Firing),
                AlertState::Firing,
            )],
            ..AlertBatch::default()
        };
        s.record_alerts("vip", &same).unwrap();
        assert_eq!(s.alert_states(None).unwrap()[0].since, since);
        let resolved = AlertBatch {
            updates: vec![update(
                "run_failed",
                Some(AlertState::Firing),
                AlertState::Ok,
            )],
            ..AlertBatch::default()
        };
        s.record_alerts("vip", &resolved).unwrap();
        let now = &s.alert_states(None).unwrap()[0];
        assert_eq!(now.state, AlertState::Ok);
        assert_ne!(now.since, since);
    }
}
