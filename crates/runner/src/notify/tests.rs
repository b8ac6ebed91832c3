//! Alert evaluation and delivery against an in-memory state store and a loopback receiver.

use std::path::Path;
use std::sync::{Arc, Mutex};

use state_store::{DeliveryState, RunKind};

use super::*;

fn project(extra: &str) -> Project {
    let text = format!(
        r#"
[destinations.attentive]
api_key = "k"
base_url = "http://127.0.0.1:1"

[models.customers]
source = "csv"
path = "customers.csv"

[activations.vip]
model = "customers"
destination = "attentive"
identifier = {{ column = "email", kind = "email" }}
[activations.vip.custom]
"Tier" = "tier"
{extra}
"#
    );
    let env = |name: &str| (name == "HOOK_SECRET").then(|| "s3cr3t".to_owned());
    Project::parse(Path::new("/proj/attentive-sync.toml"), &text, &env).unwrap()
}

/// Records a finished run with a report of these counts.
fn finished_run(store: &mut StateStore, status: RunStatus, rows: u64, rejected: u64) -> i64 {
    let id = store.begin_run("vip", RunKind::Run).unwrap();
    let mut report = RunReport {
        run_id: id,
        activation: "vip".into(),
        status,
        counts: crate::run::RunCounts {
            updated: rows - rejected,
            rejected,
            ..Default::default()
        },
        plan: Default::default(),
        delivery: Default::default(),
        existence_checks: 0,
        delivery_mode: "realtime".into(),
        bulk_jobs: 0,
        jobs_settled: 0,
        duration_ms: 10,
        error: (status == RunStatus::Failed).then(|| "the model cannot be read".to_owned()),
        mapping_added: Vec::new(),
    };
    report.plan.rows = rows;
    report.plan.changed = rows;
    if status != RunStatus::Pending {
        let json = serde_json::to_string(&report).unwrap();
        store
            .finish_run(id, status, &json, report.error.as_deref())
            .unwrap();
    } else {
        store.finish_run(id, status, "{}", None).unwrap();
    }
    id
}

fn events(store: &StateStore) -> Vec<(String, Option<String>)> {
    let mut d = store.deliveries(None, None, 100).unwrap();
    d.reverse();
    d.into_iter().map(|d| (d.event, d.rule)).collect()
}

#[test]
fn a_transition_notifies_once_and_recovery_once() {
    let project = project(
        r#"
[notifications.ops]
url = "http://127.0.0.1:9/hook"
"#,
    );
    let vip = &project.activations["vip"];
    let mut store = StateStore::open_in_memory().unwrap();

    finished_run(&mut store, RunStatus::Failed, 0, 0);
    let e = evaluate_activation(&project, &mut store, vip).unwrap();
    assert_eq!((e.runs, e.transitions, e.notifications), (1, 1, 2));
    // Evaluating again records nothing: each run is evaluated once.
    assert_eq!(
        evaluate_activation(&project, &mut store, vip).unwrap(),
        Evaluated::default()
    );
    finished_run(&mut store, RunStatus::Failed, 0, 0);
    evaluate_activation(&project, &mut store, vip).unwrap();
    let ok = finished_run(&mut store, RunStatus::Succeeded, 100, 0);
    evaluate_activation(&project, &mut store, vip).unwrap();
    finished_run(&mut store, RunStatus::Succeeded, 100, 0);
    evaluate_activation(&project, &mut store, vip).unwrap();
    let s = |e: &str, r: Option<&str>| (e.to_owned(), r.map(str::to_owned));
    assert_eq!(
        events(&store),
        [
            s("run.failed", None),
            s("alert.firing", Some("run_failed")),
            s("run.failed", None), // still failing: no second alert
            s("run.succeeded", None),
            s("alert.resolved", Some("run_failed")),
            s("run.succeeded", None),
        ]
    );
    let states = store.alert_states(Some("vip")).unwrap();
    let failed = states.iter().find(|s| s.rule == "run_failed").unwrap();
    assert_eq!(failed.state, AlertState::Ok);
    assert_eq!(failed.run_id, Some(ok + 1));
    // The events a receiver gets say what happened.
    let all = store.deliveries(None, None, 100).unwrap();
    let firing = all.iter().find(|d| d.event == "alert.firing").unwrap();
    assert_eq!(firing.endpoint, "ops");
    assert_eq!(firing.state, DeliveryState::Pending);
}

#[test]
fn a_pending_run_is_evaluated_once_it_settles() {
    let project = project(
        r#"
[notifications.ops]
url = "http://127.0.0.1:9/hook"
"#,
    );
    let vip = &project.activations["vip"];
    let mut store = StateStore::open_in_memory().unwrap();
    let id = finished_run(&mut store, RunStatus::Pending, 100, 0);
    assert_eq!(
        evaluate_activation(&project, &mut store, vip).unwrap().runs,
        0
    );
    assert!(events(&store).is_empty());
    // Its jobs settle: 50 of 100 rows rejected.
    let mut report = RunReport::from_json(
        &serde_json::json!({ "run_id": id, "activation": "vip", "status": "partial" }).to_string(),
    )
    .unwrap();
    report.plan.rows = 100;
    report.counts.rejected = 50;
    store
        .finish_run(
            id,
            RunStatus::Partial,
            &serde_json::to_string(&report).unwrap(),
            None,
        )
        .unwrap();
    let e = evaluate_activation(&project, &mut store, vip).unwrap();
    assert_eq!(e.runs, 1);
    assert_eq!(
        events(&store),
        [
            ("run.partial".to_owned(), None),
            ("alert.firing".to_owned(), Some("rows_rejected".to_owned()))
        ]
    );
}

#[test]
fn endpoints_get_only_the_events_and_activations_they_subscribe_to() {
    let project = project(
        r#"
[notifications.alerts_only]
url = "http://127.0.0.1:9/a"
events = ["alert.firing", "alert.resolved"]

[notifications.other]
url = "http://127.0.0.1:9/b"
activations = ["vip"]
events = ["run.succeeded"]
"#,
    );
    let vip = &project.activations["vip"];
    let mut store = StateStore::open_in_memory().unwrap();
    finished_run(&mut store, RunStatus::Failed, 0, 0);
    evaluate_activation(&project, &mut store, vip).unwrap();
    let d = store.deliveries(None, None, 100).unwrap();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (d[0].endpoint.as_str(), d[0].event.as_str()),
        ("alerts_only", "alert.firing")
    );
}

#[test]
fn a_plan_says_what_it_would_fire() {
    let project = project("");
    let vip = &project.activations["vip"];
    let mut store = StateStore::open_in_memory().unwrap();
    store
        .set_activation_mapping("vip", r#"{"attributes":["custom:Tier"]}"#)
        .unwrap();
    let mut counts = sync_core::plan::PlanCounts {
        rows: 10,
        changed: 10,
        rejected: 3,
        ..Default::default()
    };
    counts.attributes_to_send.insert("custom:Tier".into(), 2);
    counts.attributes_to_send.insert("std:city".into(), 8);
    let report = crate::plan::PlanReport {
        activation: "vip".into(),
        model: "customers".into(),
        counts,
        snapshot_contacts: 0,
        sample_changes: Vec::new(),
        sample_rejections: Vec::new(),
        segment: None,
        delivery: crate::plan::DeliveryView::of(&vip.delivery, 10),
        duration_ms: 1,
        alerts: Vec::new(),
    };
    let alerts = plan_alerts(&store, vip, &report).unwrap();
    let firing: Vec<&str> = alerts
        .iter()
        .filter(|a| a.firing)
        .map(|a| a.rule.as_str())
        .collect();
    assert_eq!(firing, ["rows_rejected", "mapping_backfill"]);
    let backfill = alerts
        .iter()
        .find(|a| a.rule == "mapping_backfill")
        .unwrap();
    assert_eq!(
        backfill.message,
        "a mapping change backfills std:city for 8 contacts"
    );
    let _ = &mut store;
}

#[test]
fn the_schedule_rule_fires_and_recovers_on_the_clock() {
    let project = project(
        r#"
[activations.vip.alerts]
schedule_missed = { within_hours = 1, grace_minutes = 0 }

[notifications.ops]
url = "http://127.0.0.1:9/hook"
events = ["alert.firing", "alert.resolved"]
"#,
    );
    let mut store = StateStore::open_in_memory().unwrap();
    // Never succeeded: nothing to judge.
    assert_eq!(
        evaluate_schedules(&project, &mut store, Utc::now()).unwrap(),
        0
    );
    finished_run(&mut store, RunStatus::Succeeded, 1, 0);
    assert_eq!(
        evaluate_schedules(&project, &mut store, Utc::now()).unwrap(),
        0
    );
    let later = Utc::now() + chrono::Duration::hours(2);
    assert_eq!(evaluate_schedules(&project, &mut store, later).unwrap(), 1);
    assert_eq!(evaluate_schedules(&project, &mut store, later).unwrap(), 0);
    assert_eq!(
        evaluate_schedules(&project, &mut store, Utc::now()).unwrap(),
        1
    );
    assert_eq!(
        events(&store),
        [
            (
                "alert.firing".to_owned(),
                Some("schedule_missed".to_owned())
            ),
            (
                "alert.resolved".to_owned(),
                Some("schedule_missed".to_owned())
            )
        ]
    );
}

#[tokio::test]
async fn deliveries_are_signed_retried_with_backoff_and_recorded() {
    type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let seen: Seen = Arc::default();
    let app = {
        let seen = seen.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |h: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let sig = h
                        .get(notifications::SIGNATURE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let mut seen = seen.lock().unwrap();
                    seen.push((sig, body.to_vec()));
                    // The first attempt fails.
                    if seen.len() == 1 {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::NO_CONTENT
                    }
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let project = project(&format!(
        r#"
[notifications.ops]
url = "http://{addr}/hook"
secret_env = "HOOK_SECRET"
retry_initial_secs = 0.2
max_attempts = 3
"#
    ));
    let mut store = StateStore::open_in_memory().unwrap();
    run_started(&project, &mut store, "vip", 1).unwrap();
    let sender = notifications::Sender::new(Duration::from_secs(5)).unwrap();
    let first = deliver_once(&project, &mut store, &sender).await.unwrap();
    assert_eq!((first.attempted, first.delivered), (1, 0));
    // Not due again before the backoff.
    assert_eq!(
        deliver_once(&project, &mut store, &sender)
            .await
            .unwrap()
            .attempted,
        0
    );
    let left = deliver_for(&project, &mut store, &sender, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(left, 0);
    let d = &store.deliveries(None, None, 10).unwrap()[0];
    assert_eq!(d.state, DeliveryState::Delivered);
    assert_eq!((d.attempts, d.http_status), (2, Some(204)));
    assert!(d.delivered_at.is_some());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for (sig, body) in seen.iter() {
        let t: i64 = sig
            .strip_prefix("t=")
            .and_then(|s| s.split(',').next())
            .and_then(|t| t.parse().ok())
            .unwrap();
        assert_eq!(
            *sig,
            notifications::signature(&notifications::Secret::new("s3cr3t"), t, body)
        );
        let event: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["event"], "run.started");
        assert_eq!(event["id"], d.notification_id);
    }
    // The same body both times: a receiver can drop the duplicate by its id.
    assert_eq!(seen[0].1, seen[1].1);
}

#[tokio::test]
async fn a_delivery_is_given_up_after_its_attempts_and_unusable_endpoints_wait() {
    let project = project(
        r#"
[notifications.down]
url = "http://127.0.0.1:1/hook"
retry_initial_secs = 0.1
max_attempts = 2

[notifications.unsigned]
url = "http://127.0.0.1:1/hook"
secret_env = "NOT_SET"
"#,
    );
    assert_eq!(project.notification_problems().len(), 1);
    let mut store = StateStore::open_in_memory().unwrap();
    run_started(&project, &mut store, "vip", 1).unwrap();
    let sender = notifications::Sender::new(Duration::from_secs(2)).unwrap();
    let left = deliver_for(&project, &mut store, &sender, Duration::from_secs(5))
        .await
        .unwrap();
    // The unusable endpoint's delivery waits; the other was given up after 2 attempts.
    assert_eq!(left, 1);
    let d = store.deliveries(None, None, 10).unwrap();
    let down = d.iter().find(|d| d.endpoint == "down").unwrap();
    assert_eq!((down.state, down.attempts), (DeliveryState::Failed, 2));
    assert!(
        down.error
            .as_deref()
            .unwrap_or("")
            .contains("could not connect"),
        "{down:?}"
    );
    let unsigned = d.iter().find(|d| d.endpoint == "unsigned").unwrap();
    assert_eq!(
        (unsigned.state, unsigned.attempts),
        (DeliveryState::Pending, 0)
    );
}
