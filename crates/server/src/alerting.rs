//! Alerts and notifications in the server: what the API answers about them ([`AlertView`],
//! [`DeliveryView`], the contact lookup [`ContactLookup`]) and the background task that
//! evaluates the clock's rules and delivers the outbox ([`spawn_notifier`]).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use state_store::{AlertState, Delivery, DeliveryState, StateStore};
use sync_core::mapping::IdentifierKind;
use sync_core::ports::{ContactRef, Existence};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::App;
use crate::views::ContactView;

/// One alert rule of one activation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertView {
    pub activation: String,
    /// `run_failed`, `rows_rejected`, `rows_not_found`, `slow_run`, `changed_deviation`,
    /// `mapping_backfill` or `schedule_missed`.
    pub rule: String,
    /// Whether the rule is on in the config.
    pub enabled: bool,
    /// `ok` or `firing` (`ok` for a rule never evaluated).
    pub state: String,
    /// Since when (RFC 3339, UTC); `null` for a rule never evaluated.
    pub since: Option<String>,
    /// The run it was last evaluated on (`null` for the clock's rules).
    pub run_id: Option<i64>,
    /// What was measured, against what.
    pub message: Option<String>,
    pub evaluated_at: Option<String>,
}

/// Every rule of every activation, in the config's order.
pub fn alerts(app: &App, store: &StateStore) -> Result<Vec<AlertView>, ApiError> {
    let states = store.alert_states(None)?;
    let mut out = Vec::new();
    for name in &app.project.activation_order {
        let Some(a) = app.project.activations.get(name) else {
            continue;
        };
        for rule in runner::alerts::Rule::ALL {
            let stored = states
                .iter()
                .find(|s| s.activation == *name && s.rule == rule.as_str());
            out.push(AlertView {
                activation: name.clone(),
                rule: rule.as_str().to_owned(),
                enabled: a.alerts.enabled(*rule),
                state: stored
                    .map_or(AlertState::Ok, |s| s.state)
                    .as_str()
                    .to_owned(),
                since: stored.map(|s| s.since.clone()),
                run_id: stored.and_then(|s| s.run_id),
                message: stored.and_then(|s| s.message.clone()),
                evaluated_at: stored.map(|s| s.evaluated_at.clone()),
            });
        }
    }
    Ok(out)
}

/// One delivery of a notification to an endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    pub delivery_id: i64,
    /// The event's `id` (what receivers see; the same on every attempt).
    pub notification_id: i64,
    /// `run.started`, `run.succeeded`, `run.partial`, `run.failed`, `alert.firing` or
    /// `alert.resolved`.
    pub event: String,
    pub activation: Option<String>,
    pub run_id: Option<i64>,
    /// The alert rule (`alert.*` events).
    pub rule: Option<String>,
    /// The endpoint's name in the config (its URL is never shown).
    pub endpoint: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    pub attempts: u32,
    pub created_at: String,
    pub last_attempt_at: Option<String>,
    /// When a pending delivery is attempted next.
    pub next_attempt_at: Option<String>,
    /// The HTTP status of the last answer.
    pub http_status: Option<u16>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    pub delivered_at: Option<String>,
}

impl DeliveryView {
    pub fn of(d: &Delivery) -> DeliveryView {
        DeliveryView {
            delivery_id: d.id,
            notification_id: d.notification_id,
            event: d.event.clone(),
            activation: d.activation.clone(),
            run_id: d.run_id,
            rule: d.rule.clone(),
            endpoint: d.endpoint.clone(),
            state: d.state.as_str().to_owned(),
            attempts: d.attempts,
            created_at: d.created_at.clone(),
            last_attempt_at: d.last_attempt_at.clone(),
            next_attempt_at: (d.state == DeliveryState::Pending).then(|| d.next_attempt_at.clone()),
            http_status: d.http_status,
            error: d.error.clone(),
            delivered_at: d.delivered_at.clone(),
        }
    }
}

/// A delivery state filter.
pub fn parse_delivery_state(s: Option<&str>) -> Result<Option<DeliveryState>, ApiError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(t) => DeliveryState::parse(t).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown delivery state {t:?}; expected one of: pending, delivered, failed"
            ))
        }),
    }
}

/// A contact, looked up: per activation of the config, what its snapshot holds (each
/// attribute's value and fingerprint, and when and by which run it was set) and what the
/// existence cache of its destination knows.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContactLookup {
    /// The normalized identifier.
    pub contact: String,
    /// `email` or `phone`.
    pub kind: String,
    pub activations: Vec<ContactInActivation>,
}

/// One activation's view of a contact.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContactInActivation {
    pub activation: String,
    pub destination: String,
    /// `exists`, `not_found` or `unknown` (never checked in this destination).
    pub existence: String,
    /// When the existence was last checked.
    pub existence_checked_at: Option<String>,
    /// Whether the activation's snapshot has the contact.
    pub in_snapshot: bool,
    /// The run that last settled the contact.
    pub updated_run: Option<i64>,
    pub updated_at: Option<String>,
    pub attributes: Vec<AttributeSet>,
    /// Attributes sent without a recorded answer (sent again by the next run).
    pub in_doubt: Vec<String>,
}

/// One attribute of a contact in an activation's snapshot.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttributeSet {
    /// `std:<field>` or `custom:<name>`.
    pub key: String,
    /// As Attentive acknowledged it.
    #[schema(value_type = Value)]
    pub value: serde_json::Value,
    /// Hex.
    pub fingerprint: String,
    /// The run whose acknowledged write set it.
    pub run_id: Option<i64>,
    /// When that run ended (RFC 3339, UTC), if it is still in the history.
    pub set_at: Option<String>,
}

/// Looks a contact up through the state store's public API (its snapshot per activation,
/// and the existence cache), never its tables.
pub fn contact_lookup(app: &App, store: &StateStore, key: &str) -> Result<ContactLookup, ApiError> {
    let kind = if key.starts_with('+') {
        IdentifierKind::Phone
    } else {
        IdentifierKind::Email
    };
    let view = ContactView::of(key, &store.contact(key)?);
    let contact = ContactRef {
        kind,
        key: key.to_owned(),
    };
    let mut run_end: std::collections::HashMap<i64, Option<String>> = Default::default();
    let mut ended = |id: i64| -> Result<Option<String>, ApiError> {
        if let Some(t) = run_end.get(&id) {
            return Ok(t.clone());
        }
        let t = store.run(id)?.and_then(|r| r.finished_at);
        run_end.insert(id, t.clone());
        Ok(t)
    };
    let mut activations = Vec::new();
    for name in &app.project.activation_order {
        let Some(a) = app.project.activations.get(name) else {
            continue;
        };
        let (existence, checked_at) = match store.existence(&a.destination, &contact)? {
            Some((Existence::Exists, at)) => ("exists", Some(at)),
            Some((Existence::NotFound, at)) => ("not_found", Some(at)),
            None => ("unknown", None),
        };
        let snapshot = view.activations.iter().find(|s| s.activation == *name);
        let mut attributes = Vec::new();
        if let Some(s) = snapshot {
            for attr in &s.attributes {
                attributes.push(AttributeSet {
                    key: attr.key.clone(),
                    value: attr.value.clone(),
                    fingerprint: attr.fingerprint.clone(),
                    run_id: attr.run_id,
                    set_at: match attr.run_id {
                        Some(id) => ended(id)?,
                        None => None,
                    },
                });
            }
        }
        activations.push(ContactInActivation {
            activation: name.clone(),
            destination: a.destination.clone(),
            existence: existence.to_owned(),
            existence_checked_at: checked_at,
            in_snapshot: snapshot.is_some(),
            updated_run: snapshot.and_then(|s| s.updated_run),
            updated_at: snapshot
                .map(|s| s.updated_at.clone())
                .filter(|t| !t.is_empty()),
            attributes,
            in_doubt: snapshot
                .map(|s| s.in_doubt.iter().map(|d| d.key.clone()).collect())
                .unwrap_or_default(),
        });
    }
    Ok(ContactLookup {
        contact: key.to_owned(),
        kind: kind.as_str().to_owned(),
        activations,
    })
}

/// How often the notifier delivers what is due.
pub const DELIVER_EVERY: Duration = Duration::from_secs(1);
/// How often it evaluates the clock's rules (a missed schedule) and the runs that finished
/// since (bulk runs whose jobs settled in the background).
pub const EVALUATE_EVERY: Duration = Duration::from_secs(60);

/// Delivers the outbox in the background (every [`DELIVER_EVERY`]) and evaluates alerts on
/// the clock (every [`EVALUATE_EVERY`]); failures are logged and tried again.
pub fn spawn_notifier(app: &Arc<App>, shutdown: &watch::Receiver<bool>) -> JoinHandle<()> {
    let app = app.clone();
    let mut shutdown = shutdown.clone();
    tokio::spawn(async move {
        let sender = match notifications::Sender::new(Duration::from_secs(10)) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("notifications are off: {}", runner::error_chain(&e));
                return;
            }
        };
        for p in app.project.notification_problems() {
            tracing::warn!("{p}");
        }
        let mut store: Option<StateStore> = None;
        let mut last_evaluation: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(DELIVER_EVERY) => {}
            }
            if store.is_none() {
                match StateStore::open(&app.project.state_path) {
                    Ok(s) => store = Some(s),
                    Err(e) => {
                        tracing::warn!(
                            "notifications: opening the state failed: {}",
                            runner::error_chain(&e)
                        );
                        continue;
                    }
                }
            }
            let Some(s) = store.as_mut() else { continue };
            if last_evaluation.is_none_or(|t| t.elapsed() >= EVALUATE_EVERY) {
                last_evaluation = Some(std::time::Instant::now());
                for a in app.project.activations.values() {
                    if let Err(e) = runner::notify::evaluate_activation(&app.project, s, a) {
                        tracing::warn!(activation = %a.name, "evaluating alerts failed: {}", runner::error_chain(&e));
                    }
                }
                if let Err(e) =
                    runner::notify::evaluate_schedules(&app.project, s, chrono::Utc::now())
                {
                    tracing::warn!(
                        "evaluating missed schedules failed: {}",
                        runner::error_chain(&e)
                    );
                }
            }
            if let Err(e) = runner::notify::deliver_once(&app.project, s, &sender).await {
                tracing::warn!(
                    "delivering notifications failed: {}",
                    runner::error_chain(&e)
                );
                store = None; // reopen next time
            }
        }
    })
}
