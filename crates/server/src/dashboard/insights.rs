//! Dashboard pages that look back: an activation's page (its alert states and a chart of its
//! last runs, server-rendered SVG), the contact lookup, and the notifications sent.
//!
//! Stable hooks for browser tests: `#run-chart` (`data-runs`), `.chart-run`
//! (`data-run-id`), `#alerts`, `.alert-{rule}` (`data-state`), `#contact-form`,
//! `#contact-query`, `#lookup`, `#contact-result`, `.contact-activation`
//! (`data-activation`), `.existence` (`data-existence`), `.attribute` (`data-key`),
//! `#deliveries`.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;
use state_store::{Outcome, RunKind};

use super::{attribute_name, duration, error_page, page, runs_table, short_time, LoggedIn};
use crate::alerting::{self, AlertView, ContactLookup, DeliveryView};
use crate::error::ApiError;
use crate::state::App;
use crate::views::{self, RunView};

/// Runs the chart shows at most.
pub(super) const CHART_RUNS: u64 = 30;

/// The pages' routes.
pub(super) fn routes(router: Router<Arc<App>>) -> Router<Arc<App>> {
    router
        .route("/activations/{name}", get(activation_page))
        .route("/contacts", get(contacts_page))
        .route("/notifications", get(notifications_page))
}

/// The alert cell of an activation on the activations page: the rules firing, or `ok`.
pub(super) fn alert_cell(alerts: &[AlertView], activation: &str) -> Markup {
    let firing: Vec<&AlertView> = alerts
        .iter()
        .filter(|a| a.activation == activation && a.state == "firing")
        .collect();
    html! {
        td.alerts data-firing=(firing.len()) {
            @if firing.is_empty() {
                span.badge.alert-ok { "ok" }
            } @else {
                @for a in &firing {
                    span.badge.alert-firing title=[a.message.as_deref()] { (a.rule) } " "
                }
            }
        }
    }
}

// --- an activation ----------------------------------------------------------------------------

async fn activation_page(
    State(app): State<Arc<App>>,
    LoggedIn(session): LoggedIn,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    let name = match super::known_activation(&app, name, &session) {
        Ok(name) => name,
        Err(page) => return *page,
    };
    let a = app.clone();
    let n = name.clone();
    let data = app
        .db
        .read(move |s| {
            let runs: Vec<RunView> = s
                .runs(Some(&n), CHART_RUNS * 2)?
                .iter()
                .filter(|r| r.kind == RunKind::Run)
                .take(CHART_RUNS as usize)
                .map(|r| views::run_view(&a, r))
                .collect();
            let alerts: Vec<AlertView> = alerting::alerts(&a, s)?
                .into_iter()
                .filter(|x| x.activation == n)
                .collect();
            let deliveries: Vec<DeliveryView> = s
                .deliveries(Some(&n), None, 10)?
                .iter()
                .map(DeliveryView::of)
                .collect();
            Ok((runs, alerts, deliveries))
        })
        .await;
    let (runs, alerts, deliveries) = match data {
        Ok(d) => d,
        Err(e) => return error_page(&e, Some(&session)),
    };
    let activation = app.project.activations.get(&name);
    let body = html! {
        section.card {
            div.card-head {
                h1 { "Activation " (name) }
                @if let Some(a) = activation {
                    span.muted.small { (a.model) " → " (a.destination) }
                }
            }
            h2 { "Last " (runs.len()) " runs" }
            (run_chart(&runs))
        }
        section.card {
            h2 { "Alerts" }
            (alerts_table(&alerts))
        }
        section.card {
            h2 { "Notifications" }
            (deliveries_table(&deliveries))
            p.small { a href="/notifications" { "All notifications" } }
        }
        section.card {
            h2 { "Runs" }
            (runs_table(&runs))
        }
    };
    page(&format!("Activation {name}"), Some(&session), None, body).into_response()
}

fn alerts_table(alerts: &[AlertView]) -> Markup {
    html! {
        table.grid #alerts {
            thead { tr { th { "Rule" } th { "State" } th { "Since" } th { "Run" } th { "Last evaluation" } } }
            tbody {
                @for a in alerts {
                    tr.{"alert-" (a.rule)} data-state=(a.state) {
                        td { code { (a.rule) } @if !a.enabled { " " span.muted.small { "(off)" } } }
                        td { span.badge.{"alert-" (a.state)} { (a.state) } }
                        td.nowrap { @if let Some(s) = &a.since { (short_time(s)) } @else { span.muted { "never evaluated" } } }
                        td { @if let Some(id) = a.run_id { a href={"/runs/" (id)} { "#" (id) } } }
                        td.reason { @if let Some(m) = &a.message { (m) } }
                    }
                }
            }
        }
    }
}

fn deliveries_table(deliveries: &[DeliveryView]) -> Markup {
    html! {
        @if deliveries.is_empty() {
            p.muted { "No notifications yet." }
        } @else {
            table.grid #deliveries {
                thead { tr {
                    th { "Event" } th { "Activation" } th { "Rule" } th { "Endpoint" } th { "State" }
                    th.num { "Attempts" } th.num { "HTTP" } th { "Delivered / error" }
                } }
                tbody {
                    @for d in deliveries {
                        tr.delivery data-state=(d.state) {
                            td { code { (d.event) } @if let Some(r) = d.run_id { " " a href={"/runs/" (r)} { "#" (r) } } }
                            td { (d.activation.as_deref().unwrap_or("-")) }
                            td { @if let Some(r) = &d.rule { code { (r) } } }
                            td { (d.endpoint) }
                            td { span.badge.{"delivery-" (d.state)} { (d.state) } }
                            td.num { (d.attempts) }
                            td.num { @if let Some(h) = d.http_status { (h) } }
                            td.reason.small {
                                @if let Some(t) = &d.delivered_at { (short_time(t)) }
                                @else if let Some(e) = &d.error {
                                    (e)
                                    @if let Some(n) = &d.next_attempt_at { span.muted { " · next attempt " (short_time(n)) } }
                                }
                                @else if let Some(n) = &d.next_attempt_at { span.muted { "due " (short_time(n)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The series of the chart, bottom to top, with their colors.
const SERIES: &[(Outcome, &str, &str)] = &[
    (Outcome::Updated, "#1f8a4c", "updated"),
    (Outcome::NotFound, "#d08a12", "not found"),
    (Outcome::Rejected, "#c62f2f", "rejected"),
    (Outcome::Failed, "#6d1a36", "failed"),
];

/// A round upper bound for an axis (1, 2 or 5 × a power of ten).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 1.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn compact(n: f64) -> String {
    if n >= 1_000_000.0 {
        format!("{:.1}M", n / 1_000_000.0)
    } else if n >= 10_000.0 {
        format!("{:.0}k", n / 1000.0)
    } else if n >= 1000.0 {
        format!("{:.1}k", n / 1000.0)
    } else {
        format!("{n:.0}")
    }
}

/// The last runs (newest first, as listed) as an SVG chart, oldest on the left: per run a
/// stacked bar of its rows updated, not found, rejected and failed, and below it a bar of its
/// duration. Each run links to its page and has a tooltip with its numbers (`<title>`, no
/// script).
pub(super) fn run_chart(runs: &[RunView]) -> Markup {
    if runs.is_empty() {
        return html! { p.muted #run-chart-empty { "No runs yet: the chart appears after the first run." } };
    }
    let runs: Vec<&RunView> = runs.iter().rev().collect();
    let (w, left, right) = (880.0_f64, 58.0_f64, 12.0_f64);
    let (top, counts_h, gap, dur_h, bottom) = (30.0_f64, 150.0_f64, 34.0_f64, 56.0_f64, 22.0_f64);
    let height = top + counts_h + gap + dur_h + bottom;
    let plot_w = w - left - right;
    let slot = plot_w / runs.len() as f64;
    let bar_w = (slot * 0.68).clamp(3.0, 26.0);
    let total = |r: &RunView| -> u64 {
        SERIES
            .iter()
            .map(|(o, _, _)| r.count(*o).unwrap_or(0))
            .sum()
    };
    let max_count = nice_ceiling(runs.iter().map(|r| total(r)).max().unwrap_or(0) as f64);
    let max_ms = runs
        .iter()
        .filter_map(|r| r.duration_ms)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let max_secs = nice_ceiling(max_ms / 1000.0);
    let dur_top = top + counts_h + gap;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="run-chart" data-runs="{n}" viewBox="0 0 {w} {height}" width="100%" role="img" aria-labelledby="run-chart-title" xmlns="http://www.w3.org/2000/svg" font-family="-apple-system,BlinkMacSystemFont,Segoe UI,Roboto,Helvetica,Arial,sans-serif" font-size="11">"#,
        n = runs.len()
    );
    let _ = write!(
        svg,
        r#"<title id="run-chart-title">Rows per outcome and duration of the last {} runs, oldest first</title>"#,
        runs.len()
    );
    // Legend.
    let mut x = left;
    for (_, color, label) in SERIES {
        let _ = write!(
            svg,
            r##"<rect x="{x}" y="6" width="10" height="10" rx="2" fill="{color}"/><text x="{}" y="15" fill="#1d2330">{label}</text>"##,
            x + 14.0
        );
        x += 24.0 + label.len() as f64 * 6.2;
    }
    let _ = write!(
        svg,
        r##"<rect x="{x}" y="6" width="10" height="10" rx="2" fill="#2f5bea"/><text x="{}" y="15" fill="#1d2330">duration</text>"##,
        x + 14.0
    );
    // Grid and axes.
    for i in 0..=2 {
        let v = max_count * f64::from(i) / 2.0;
        let y = top + counts_h - counts_h * f64::from(i) / 2.0;
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#e3e6ec"/><text x="{}" y="{}" text-anchor="end" fill="#6b7385">{}</text>"##,
            w - right,
            left - 6.0,
            y + 4.0,
            compact(v)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="12" y="{}" fill="#6b7385" transform="rotate(-90 12 {})" text-anchor="middle">rows</text>"##,
        top + counts_h / 2.0,
        top + counts_h / 2.0
    );
    for i in 0..=1 {
        let v = max_secs * f64::from(i);
        let y = dur_top + dur_h - dur_h * f64::from(i);
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#e3e6ec"/><text x="{}" y="{}" text-anchor="end" fill="#6b7385">{}</text>"##,
            w - right,
            left - 6.0,
            y + 4.0,
            duration((v * 1000.0) as u64)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="12" y="{}" fill="#6b7385" transform="rotate(-90 12 {})" text-anchor="middle">time</text>"##,
        dur_top + dur_h / 2.0,
        dur_top + dur_h / 2.0
    );
    let label_every = (runs.len() as f64 / 15.0).ceil().max(1.0) as usize;
    for (i, r) in runs.iter().enumerate() {
        let cx = left + slot * (i as f64 + 0.5);
        let x = cx - bar_w / 2.0;
        let mut tip = format!(
            "Run #{} · {} · {}",
            r.id,
            r.status,
            short_time(&r.started_at)
        );
        for (o, _, label) in SERIES {
            if let Some(n) = r.count(*o) {
                let _ = write!(tip, "\n{label}: {n}");
            }
        }
        if let Some(ms) = r.duration_ms {
            let _ = write!(tip, "\nduration: {}", duration(ms));
        }
        if let Some(e) = &r.error {
            let _ = write!(tip, "\n{}", e.chars().take(160).collect::<String>());
        }
        let _ = write!(
            svg,
            r#"<a href="/runs/{id}"><g class="chart-run" data-run-id="{id}" data-status="{status}"><title>{tip}</title>"#,
            id = r.id,
            status = r.status,
            tip = html! { (tip) }.into_string(),
        );
        // An invisible hit area, so thin bars are easy to point at.
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{top}" width="{slot}" height="{}" fill="transparent"/>"#,
            cx - slot / 2.0,
            counts_h + gap + dur_h
        );
        let mut y = top + counts_h;
        let t = total(r);
        if t == 0 {
            let color = if r.status == "failed" {
                "#c62f2f"
            } else {
                "#b9bfcc"
            };
            let _ = write!(
                svg,
                r#"<rect x="{x}" y="{}" width="{bar_w}" height="3" rx="1" fill="{color}"/>"#,
                y - 3.0
            );
        }
        for (o, color, _) in SERIES {
            let n = r.count(*o).unwrap_or(0);
            if n == 0 {
                continue;
            }
            // At least 2 px: a handful of rejected rows next to thousands updated stays visible.
            let h = (n as f64 / max_count * counts_h).max(2.0);
            y -= h;
            let _ = write!(
                svg,
                r#"<rect x="{x}" y="{y}" width="{bar_w}" height="{h}" fill="{color}"/>"#
            );
        }
        if r.status == "failed" || r.status == "interrupted" {
            let _ = write!(
                svg,
                r##"<text x="{cx}" y="{}" text-anchor="middle" fill="#c62f2f" font-weight="700">{}</text>"##,
                y - 5.0,
                if r.status == "failed" { "✕" } else { "‖" }
            );
        }
        if let Some(ms) = r.duration_ms {
            let h = (ms as f64 / (max_secs * 1000.0) * dur_h).max(1.0);
            let _ = write!(
                svg,
                r##"<rect x="{x}" y="{}" width="{bar_w}" height="{h}" rx="1" fill="#2f5bea" opacity="0.85"/>"##,
                dur_top + dur_h - h
            );
        }
        if i % label_every == 0 || i + 1 == runs.len() {
            let _ = write!(
                svg,
                r##"<text x="{cx}" y="{}" text-anchor="middle" fill="#6b7385">#{}</text>"##,
                height - 6.0,
                r.id
            );
        }
        svg.push_str("</g></a>");
    }
    svg.push_str("</svg>");
    html! { div.chart { (PreEscaped(svg)) } }
}

// --- contacts ---------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ContactQuery {
    q: Option<String>,
}

async fn contacts_page(
    State(app): State<Arc<App>>,
    LoggedIn(session): LoggedIn,
    q: Result<Query<ContactQuery>, QueryRejection>,
) -> Response {
    let query = q
        .ok()
        .and_then(|Query(q)| q.q)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let result: Option<Result<ContactLookup, ApiError>> = match &query {
        None => None,
        Some(text) => match views::normalize_contact(text) {
            Err(e) => Some(Err(e)),
            Ok(key) => {
                let a = app.clone();
                Some(
                    app.db
                        .read(move |s| alerting::contact_lookup(&a, s, &key))
                        .await,
                )
            }
        },
    };
    let body = html! {
        section.card {
            h1 { "Look a contact up" }
            form #contact-form method="get" action="/contacts" {
                input #contact-query type="search" name="q" value=[query.as_deref()]
                    placeholder="ann@example.com or +14155550100" autocomplete="off" required;
                " "
                button.primary #lookup type="submit" { "Look up" }
            }
            p.muted.small { "An email, or a phone in international format. Shows what each activation's snapshot holds (what Attentive acknowledged), when and by which run each value was set, and whether the contact exists in the destination's account as last checked." }
        }
        @match &result {
            None => {},
            Some(Err(e)) => { div.card #flash .error { p { (e.message) } } },
            Some(Ok(c)) => { (contact_result(c)) },
        }
    };
    page("Contacts", Some(&session), None, body).into_response()
}

fn contact_result(c: &ContactLookup) -> Markup {
    html! {
        section.card #contact-result data-contact=(c.contact) {
            h2 { code { (c.contact) } " " span.muted.small { "(" (c.kind) ")" } }
            @if c.activations.iter().all(|a| !a.in_snapshot && a.existence == "unknown") {
                p.muted { "No activation has sent anything to this contact or checked it yet." }
            }
            @for a in &c.activations {
                div.contact-activation data-activation=(a.activation) {
                    h3 {
                        a href={"/activations/" (super::seg(&a.activation))} { (a.activation) }
                        " "
                        span.badge.existence.{"existence-" (a.existence)} data-existence=(a.existence) {
                            @match a.existence.as_str() {
                                "exists" => "exists in Attentive",
                                "not_found" => "not found in Attentive",
                                _ => "existence not checked",
                            }
                        }
                        @if let Some(t) = &a.existence_checked_at { " " span.muted.small { "checked " (short_time(t)) " in " (a.destination) } }
                    }
                    @if !a.in_snapshot {
                        p.muted { "Not in this activation's snapshot: nothing acknowledged yet." }
                    } @else {
                        @if let (Some(run), Some(at)) = (a.updated_run, &a.updated_at) {
                            p.small.muted { "Last settled by " a href={"/runs/" (run)} { "run #" (run) } " at " (short_time(at)) }
                        }
                        table.grid.attributes {
                            thead { tr { th { "Attribute" } th { "Value" } th { "Fingerprint" } th { "Set by" } th { "Set at" } } }
                            tbody {
                                @for attr in &a.attributes {
                                    tr.attribute data-key=(attr.key) {
                                        td { (attribute_name(&attr.key)) }
                                        td.value { (value_text(&attr.value)) }
                                        td { code.small { (attr.fingerprint) } }
                                        td { @if let Some(r) = attr.run_id { a href={"/runs/" (r)} { "run #" (r) } } @else { span.muted { "–" } } }
                                        td.nowrap { @if let Some(t) = &attr.set_at { (short_time(t)) } @else { span.muted { "–" } } }
                                    }
                                }
                            }
                        }
                        @if !a.in_doubt.is_empty() {
                            p.small.flash.warn { "In doubt (sent without a recorded answer; the next run sends them again): " (a.in_doubt.join(", ")) }
                        }
                    }
                }
            }
        }
    }
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// --- notifications ------------------------------------------------------------------------------

async fn notifications_page(State(app): State<Arc<App>>, LoggedIn(session): LoggedIn) -> Response {
    let data = app
        .db
        .read(|s| {
            Ok((
                s.deliveries(None, None, 100)?
                    .iter()
                    .map(DeliveryView::of)
                    .collect::<Vec<_>>(),
                s.pending_deliveries()?,
            ))
        })
        .await;
    let (deliveries, pending) = match data {
        Ok(d) => d,
        Err(e) => return error_page(&e, Some(&session)),
    };
    let endpoints: Vec<(&String, Option<String>)> = app
        .project
        .notifications
        .iter()
        .map(|(name, n)| (name, n.problem()))
        .collect();
    let body = html! {
        section.card {
            div.card-head {
                h1 { "Notifications" }
                span.muted.small { (pending) " pending" }
            }
            @if endpoints.is_empty() {
                p.muted { "No [notifications.NAME] endpoint in the config: alert states are kept, nothing is sent. See docs/ALERTS.md." }
            } @else {
                p.small {
                    "Endpoints: "
                    @for (name, problem) in &endpoints {
                        code { (name) }
                        @if let Some(p) = problem { " " span.badge.alert-firing title=(p) { "cannot send" } }
                        " "
                    }
                }
            }
            (deliveries_table(&deliveries))
        }
    };
    page("Notifications", Some(&session), None, body).into_response()
}

/// The pages' styles.
pub(super) const CSS: &str = r#"
.badge.alert-ok{background:#e3f5ea;color:var(--ok)}.badge.alert-firing{background:#fde6e6;color:var(--bad)}
.badge.delivery-delivered{background:#e3f5ea;color:var(--ok)}.badge.delivery-pending{background:#e6effd;color:#2d5fb3}.badge.delivery-failed{background:#fde6e6;color:var(--bad)}
.badge.existence-exists{background:#e3f5ea;color:var(--ok)}.badge.existence-not_found{background:#fff3dc;color:var(--warn)}
td.alerts{white-space:normal;max-width:14rem}
.chart{overflow-x:auto}.chart svg{display:block;max-width:100%;height:auto}
.chart a:hover rect:not([fill=transparent]){opacity:.8}
#contact-form{display:flex;gap:.5rem;align-items:center;margin:.4rem 0}
#contact-form input{font:inherit;padding:.45rem .6rem;border:1px solid var(--line);border-radius:6px;min-width:22rem}
.contact-activation{border-top:1px solid var(--line);padding-top:.6rem;margin-top:.6rem}
.contact-activation h3{font-size:1rem;margin:.2rem 0 .4rem}
td.value{font-weight:600;word-break:break-word}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: i64, status: &str, report: Option<serde_json::Value>) -> RunView {
        RunView {
            id,
            activation: "vip".into(),
            kind: "run".into(),
            status: status.into(),
            started_at: "2026-11-29T12:00:00.000Z".into(),
            finished_at: None,
            duration_ms: report.as_ref().and_then(|r| r["duration_ms"].as_u64()),
            error: None,
            rows_pruned_at: None,
            report: report.and_then(|r| runner::run::RunReport::from_json(&r.to_string())),
            live: None,
            recorded_rows: None,
            bulk_jobs: None,
        }
    }

    #[test]
    fn the_chart_has_one_group_per_run_oldest_first() {
        let report = |updated: u64, rejected: u64| {
            serde_json::json!({
                "run_id": 1, "activation": "vip", "status": "partial", "duration_ms": 1500,
                "counts": { "updated": updated, "rejected": rejected, "not_found": 1, "failed": 0 }
            })
        };
        let runs = vec![
            run(3, "partial", Some(report(10, 2))),
            run(2, "failed", None),
            run(1, "succeeded", Some(report(1000, 0))),
        ];
        let svg = run_chart(&runs).into_string();
        assert!(svg.contains(r#"data-runs="3""#), "{svg}");
        assert_eq!(svg.matches(r#"class="chart-run""#).count(), 3);
        let first = svg.find(r#"data-run-id="1""#).unwrap();
        let last = svg.find(r#"data-run-id="3""#).unwrap();
        assert!(first < last, "oldest on the left");
        assert!(svg.contains("rejected: 2"), "tooltips carry the numbers");
        assert!(svg.contains(r#"href="/runs/2""#));
        assert!(run_chart(&[]).into_string().contains("run-chart-empty"));
    }

    #[test]
    fn axes_round_up() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(1001.0), 2000.0);
        assert_eq!(nice_ceiling(4500.0), 5000.0);
        assert_eq!(compact(12_500.0), "12k");
        assert_eq!(compact(1500.0), "1.5k");
    }
}
