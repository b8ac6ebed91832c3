//! The web dashboard: server-rendered HTML (maud, escaped by default), readable without
//! JavaScript. Login asks for the server token once and starts a session (a random id in an
//! `HttpOnly; SameSite=Strict` cookie); every form carries the session's CSRF token.
//!
//! Stable hooks for browser tests: `#login-form`, `#token`, `#login`, `#logout`,
//! `#activation-{name}`, `#run-now-{name}`, `#preview-plan-{name}`, `#run-status`
//! (`data-status`), `.count-{outcome}` (`.value` inside), `#rows`, `#next-page`,
//! `#download-rejected`, `#plan-counts`, `#flash`, `td.alerts` (`data-firing`); the pages
//! of `insights` add their own.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use state_store::Outcome;

use crate::auth::{clear_session_cookie, session_cookie, Session};
use crate::error::ApiError;
use crate::runs::{self, StartError, Trigger};
use crate::state::App;
use crate::views::{self, ActivationView, RowsPage, RunView};

mod insights;

/// The dashboard's routes.
pub fn router(app: &Arc<App>) -> Router<Arc<App>> {
    insights::routes(Router::new())
        .route("/", get(index))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/activations/{name}/run", post(run_now))
        .route("/activations/{name}/plan", get(preview_plan))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/rejected.csv", get(run_rejected_csv))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            security_headers,
        ))
}

/// Headers for every dashboard page: no framing, no sniffing, no caching, no referrer, and
/// a content security policy that allows no script at all.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

/// A logged-in request (else a redirect to the login page).
struct LoggedIn(Session);

impl FromRequestParts<Arc<App>> for LoggedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        app.sessions
            .from_headers(&parts.headers)
            .map(LoggedIn)
            .ok_or_else(|| Redirect::to("/login").into_response())
    }
}

/// A form that carries only the CSRF token.
#[derive(Debug, Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

/// The page a form with a missing or wrong CSRF token gets.
fn csrf_failed() -> Response {
    let body = html! {
        div.card #flash .error {
            h1 { "This form has expired" }
            p { "It did not carry this session's security token (code " code { "csrf_failed" } "). Go back, reload the page and try again." }
            p { a href="/" { "Back to the activations" } }
        }
    };
    (
        StatusCode::FORBIDDEN,
        page("Form expired", None, None, body),
    )
        .into_response()
}

/// Whether a form carries the session's CSRF token (logged when it does not).
fn csrf_ok(session: &Session, form: Result<Form<CsrfForm>, FormRejection>) -> bool {
    let ok = matches!(form, Ok(Form(f)) if session.csrf_ok(f.csrf.as_deref()));
    if !ok {
        tracing::warn!("a dashboard form was refused: missing or wrong CSRF token");
    }
    ok
}

/// An error as a page.
/// The activation a page's path names, or the error page to answer with (a path that is not
/// a name, or an activation the config does not have).
pub(crate) fn known_activation(
    app: &App,
    name: Result<Path<String>, PathRejection>,
    session: &Session,
) -> Result<String, Box<Response>> {
    let Ok(Path(name)) = name else {
        return Err(Box::new(error_page(
            &ApiError::bad_request("bad activation name"),
            Some(session),
        )));
    };
    app.activation(&name)
        .map_err(|e| Box::new(error_page(&e, Some(session))))?;
    Ok(name)
}

fn error_page(e: &ApiError, session: Option<&Session>) -> Response {
    let body = html! {
        div.card #flash .error {
            h1 { "Something went wrong" }
            p { (e.message) }
            p.muted { "code " code { (e.code) } }
            p { a href="/" { "Back to the activations" } }
        }
    };
    (e.status, page("Error", session, None, body)).into_response()
}

// --- login ----------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: Option<String>,
}

fn login_form(error: Option<&str>) -> Html<String> {
    let body = html! {
        div.login.card {
            h1 { "attentive-sync" }
            p.muted { "Enter the server token (ATTENTIVE_SYNC_SERVER_TOKEN or the --token-file) to open the dashboard." }
            @if let Some(e) = error { p #flash .error { (e) } }
            form #login-form method="post" action="/login" {
                label for="token" { "Server token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button #login .primary type="submit" { "Log in" }
            }
        }
    };
    page("Log in", None, None, body)
}

async fn login_page(State(app): State<Arc<App>>, headers: axum::http::HeaderMap) -> Response {
    if app.sessions.from_headers(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    login_form(None).into_response()
}

async fn login(
    State(app): State<Arc<App>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let client = peer.map(|axum::Extension(axum::extract::ConnectInfo(a))| a.ip());
    if app.auth_failures.refuses(client) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            login_form(Some(
                "Too many wrong tokens from this address: wait a minute, then try again.",
            )),
        )
            .into_response();
    }
    let token = form.ok().and_then(|Form(f)| f.token).unwrap_or_default();
    if !app.token.matches(token.trim().as_bytes()) {
        app.auth_failures.failed(client, "dashboard login");
        // Slows guessing down a little; tokens are long and random anyway.
        tokio::time::sleep(Duration::from_millis(250)).await;
        return (
            StatusCode::UNAUTHORIZED,
            login_form(Some("That is not the server token.")),
        )
            .into_response();
    }
    let session = app.sessions.create();
    tracing::info!("dashboard login");
    (
        [(
            header::SET_COOKIE,
            session_cookie(&session.id, app.settings.secure_cookies),
        )],
        Redirect::to("/"),
    )
        .into_response()
}

async fn logout(
    State(app): State<Arc<App>>,
    LoggedIn(session): LoggedIn,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    if !csrf_ok(&session, form) {
        return csrf_failed();
    }
    app.sessions.remove(&session.id);
    (
        [(
            header::SET_COOKIE,
            clear_session_cookie(app.settings.secure_cookies),
        )],
        Redirect::to("/login"),
    )
        .into_response()
}

// --- activations ----------------------------------------------------------------------------

async fn index(State(app): State<Arc<App>>, LoggedIn(session): LoggedIn) -> Response {
    let a = app.clone();
    let data = app
        .db
        .read(move |s| {
            let activations = views::activations(&a, s)?;
            let alerts = crate::alerting::alerts(&a, s)?;
            let runs = s
                .runs(None, 25)?
                .iter()
                .map(|r| views::run_view(&a, r))
                .collect::<Vec<_>>();
            Ok((activations, runs, alerts))
        })
        .await;
    let (activations, runs, alerts) = match data {
        Ok(d) => d,
        Err(e) => return error_page(&e, Some(&session)),
    };
    let any_running = activations.iter().any(|a| a.running.is_some());
    let body = html! {
        section.card {
            div.card-head {
                h1 { "Activations" }
                @if app.is_shutting_down() { span.badge.status-interrupted { "shutting down" } }
            }
            @if activations.is_empty() {
                p.muted { "The config has no activations." }
            } @else {
                table.grid #activations {
                    thead { tr {
                        th { "Activation" } th { "Schedule" } th { "Alerts" } th { "Last run" }
                        @for o in crate::metrics::OUTCOMES { th.num { (outcome_label(*o)) } }
                        th { "" }
                    } }
                    tbody {
                        @for a in &activations { (activation_row(a, &alerts, &session)) }
                    }
                }
            }
        }
        section.card {
            h2 { "Recent runs" }
            (runs_table(&runs))
        }
    };
    page(
        "Activations",
        Some(&session),
        any_running.then_some(3),
        body,
    )
    .into_response()
}

fn activation_row(
    a: &ActivationView,
    alerts: &[crate::alerting::AlertView],
    session: &Session,
) -> Markup {
    let last = a.last_run.as_ref();
    let count = |o: Outcome| last.and_then(|r| r.count(o));
    html! {
        tr.activation #{"activation-" (a.name)} data-activation=(a.name) {
            td {
                div.name { a href={"/activations/" (seg(&a.name))} { (a.name) } }
                div.muted.small.nowrap { (a.model) " → " (a.destination) }
            }
            td.schedule {
                @if let Some(s) = &a.schedule {
                    code { (s) } " " span.muted.small { (a.timezone) }
                    @if let Some(d) = &a.next_due { div.small.muted.next-due { "next " (short_time(d)) } }
                } @else {
                    span.muted { "on demand" }
                }
            }
            (insights::alert_cell(alerts, &a.name))
            td.last-run {
                @if let Some(live) = &a.running {
                    span.badge.status-running { "running" }
                    @if let Some(id) = live.run_id { " " a href={"/runs/" (id)} { "#" (id) } }
                    div.small.muted { (live.delivered) " / " (live.changed) " delivered" }
                } @else if let Some(r) = last {
                    span.badge.{"status-" (r.status)} { (r.status) } " "
                    a href={"/runs/" (r.id)} { "#" (r.id) }
                    div.small.muted { (short_time(&r.started_at)) }
                } @else {
                    span.muted { "never run" }
                }
            }
            @for o in crate::metrics::OUTCOMES {
                td.num.{"count-" (o.as_str())} { @if let Some(n) = count(*o) { (n) } @else { span.muted { "–" } } }
            }
            td.actions {
                form.inline method="post" action={"/activations/" (seg(&a.name)) "/run"} {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button.primary #{"run-now-" (a.name)} type="submit" disabled[a.running.is_some()] { "Run now" }
                }
                a.button #{"preview-plan-" (a.name)} href={"/activations/" (seg(&a.name)) "/plan"} { "Preview plan" }
            }
        }
    }
}

fn runs_table(runs: &[RunView]) -> Markup {
    html! {
        @if runs.is_empty() {
            p.muted { "No runs yet." }
        } @else {
            table.grid #runs {
                thead { tr {
                    th { "Run" } th { "Activation" } th { "Status" } th { "Started" } th.num { "Duration" }
                    @for o in RUN_LIST_OUTCOMES { th.num { (outcome_label(o)) } }
                } }
                tbody {
                    @for r in runs {
                        tr.run #{"run-row-" (r.id)} {
                            td { a href={"/runs/" (r.id)} { "#" (r.id) } }
                            td { (r.activation) }
                            td { span.badge.{"status-" (r.status)} { (r.status) } }
                            td { (short_time(&r.started_at)) }
                            td.num { @if let Some(ms) = r.duration_ms { (duration(ms)) } }
                            @for o in RUN_LIST_OUTCOMES {
                                td.num.{"count-" (o.as_str())} { @if let Some(n) = r.count(o) { (n) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn run_now(
    State(app): State<Arc<App>>,
    LoggedIn(session): LoggedIn,
    name: Result<Path<String>, PathRejection>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    if !csrf_ok(&session, form) {
        return csrf_failed();
    }
    let name = match known_activation(&app, name, &session) {
        Ok(name) => name,
        Err(page) => return *page,
    };
    match runs::start(&app, &name, Trigger::Manual).await {
        Ok(id) => Redirect::to(&format!("/runs/{id}")).into_response(),
        Err(StartError::InProgress {
            run_id: Some(id), ..
        }) => Redirect::to(&format!("/runs/{id}")).into_response(),
        Err(e) => error_page(&ApiError::from(e), Some(&session)),
    }
}

async fn preview_plan(
    State(app): State<Arc<App>>,
    LoggedIn(session): LoggedIn,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    let name = match known_activation(&app, name, &session) {
        Ok(name) => name,
        Err(page) => return *page,
    };
    let report = match crate::api::dry_run(&app, &name, 20).await {
        Ok(r) => r,
        Err(e) => return error_page(&e, Some(&session)),
    };
    let c = &report.counts;
    let body = html! {
        section.card {
            div.card-head {
                h1 { "Plan preview · " (name) }
                form.inline method="post" action={"/activations/" (seg(&name)) "/run"} {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button.primary #{"run-now-" (name)} type="submit" { "Run now" }
                }
            }
            p.muted { "A dry run through the same code path as a run: nothing was sent and the snapshot did not change. "
                "Model " code { (report.model) } ", " (report.snapshot_contacts) " contacts in the snapshot, planned in " (duration(report.duration_ms)) "." }
            div.counts #plan-counts {
                (count_box("rows", "Rows read", c.rows))
                (count_box("changed", "To update", c.changed))
                (count_box("unchanged", "Unchanged", c.unchanged))
                (count_box("rejected", "Rejected", c.rejected))
            }
        }
        @if !c.attributes_to_send.is_empty() || !c.rejected_by_code.is_empty() {
            div.two {
                @if !c.attributes_to_send.is_empty() {
                    section.card {
                        h2 { "Attributes to send" }
                        table.grid #attributes-to-send {
                            tbody { @for (k, n) in &c.attributes_to_send {
                                tr { td { (attribute_name(k)) } td.num { (n) } }
                            } }
                        }
                    }
                }
                @if !c.rejected_by_code.is_empty() {
                    section.card {
                        h2 { "Rejections by reason" }
                        table.grid #rejected-by-code {
                            tbody { @for (code, n) in &c.rejected_by_code {
                                tr { td { code { (code.as_str()) } } td.num { (n) } }
                            } }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "First changes" }
            @if report.sample_changes.is_empty() {
                p.muted { "Nothing to send: Attentive already has every value." }
            } @else {
                table.grid #sample-changes {
                    thead { tr { th.num { "Line" } th { "Contact" } th { "Changes" } } }
                    tbody { @for ch in &report.sample_changes {
                        tr {
                            td.num { (ch.row) }
                            td { (ch.contact) @if ch.new_contact { " " span.badge.status-running { "new" } } }
                            td { ul.changes { @for at in &ch.attributes {
                                li {
                                    span.attr { (at.attribute) } @if at.custom { span.muted.small { " (custom)" } } ": "
                                    @if let Some(p) = &at.previous { span.prev { (p.to_string()) } " → " }
                                    @match &at.value { Some(v) => span.new { (v.to_string()) }, None => span.muted { "cleared" } }
                                }
                            } } }
                        }
                    } }
                }
            }
        }
        section.card {
            h2 { "First rejected rows" }
            @if report.sample_rejections.is_empty() {
                p.muted { "No rejected rows." }
            } @else {
                table.grid #sample-rejections {
                    thead { tr { th.num { "Line" } th { "Reason" } } }
                    tbody { @for r in &report.sample_rejections {
                        tr { td.num { (r.row) } td.reason { (r.message) } }
                    } }
                }
            }
        }
    };
    page(&format!("Plan · {name}"), Some(&session), None, body).into_response()
}

// --- runs -----------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct RunPageQuery {
    outcome: Option<String>,
    after: Option<u64>,
}

const ROW_TABS: [(&str, &str); 5] = [
    ("rejected", "Rejected"),
    ("failed", "Failed"),
    ("not_found", "Not found"),
    ("pending", "Pending"),
    ("updated", "Updated"),
];

async fn run_page(
    State(app): State<Arc<App>>,
    LoggedIn(session): LoggedIn,
    id: Result<Path<i64>, PathRejection>,
    q: Result<Query<RunPageQuery>, QueryRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return error_page(
            &ApiError::bad_request("a run id is a number"),
            Some(&session),
        );
    };
    let q = q.map(|Query(q)| q).unwrap_or(RunPageQuery {
        outcome: None,
        after: None,
    });
    let outcome = match views::parse_outcome(q.outcome.as_deref()) {
        Ok(o) => o.unwrap_or(Outcome::Rejected),
        Err(e) => return error_page(&e, Some(&session)),
    };
    let a = app.clone();
    let data = app
        .db
        .read(move |s| {
            let run = s.run(id)?.ok_or_else(|| ApiError::run_not_found(id))?;
            let view = views::run_detail(&a, s, &run)?;
            let rows = views::rows_page(s, id, Some(outcome), q.after, 50)?;
            Ok((view, rows))
        })
        .await;
    let (run, rows) = match data {
        Ok(d) => d,
        Err(e) => return error_page(&e, Some(&session)),
    };
    let running = run.status == "running";
    let body = run_body(&run, &rows, outcome, q.after.is_some());
    page(
        &format!("Run {id}"),
        Some(&session),
        running.then_some(2),
        body,
    )
    .into_response()
}

fn run_body(run: &RunView, rows: &RowsPage, outcome: Outcome, paged: bool) -> Markup {
    let report = run.report.as_ref();
    let live = run.live.as_ref();
    let recorded = |o: Outcome| {
        run.recorded_rows
            .as_ref()
            .and_then(|m| m.get(o.as_str()).copied())
    };
    let delivery = run.delivery().unwrap_or_default();
    html! {
        section.card {
            div.card-head {
                h1 { "Run #" (run.id) " · " a href="/" { (run.activation) } }
                span #run-status .badge.big.{"status-" (run.status)} data-status=(run.status) { (run.status) }
            }
            dl.facts {
                dt { "Started" } dd #started-at { (short_time(&run.started_at)) }
                dt { "Finished" } dd #finished-at { @if let Some(f) = &run.finished_at { (short_time(f)) } @else { span.muted { "—" } } }
                dt { "Duration" } dd #duration { @if let Some(ms) = run.duration_ms { (duration(ms)) } @else { span.muted { "—" } } }
                @if let Some(l) = live { dt { "Trigger" } dd { (l.trigger) } }
            }
            @if let Some(e) = &run.error { p #run-error .flash.{ @if run.status == "failed" { "error" } @else { "warn" } } { (e) } }
            @if let Some(l) = live {
                div.progress #live-progress {
                    "In progress: "
                    @if l.rows_read > 0 { strong { (l.rows_read) } " rows read · " }
                    strong { (l.changed) } " contacts to update so far · "
                    strong { (l.delivered) } " delivered"
                    @if l.stopping { " · " span.badge.status-interrupted { "stopping" } }
                    span.muted.small { " — the counts below are those recorded so far; this page refreshes itself." }
                }
            }
            div.counts #run-counts {
                @for o in crate::metrics::OUTCOMES {
                    @let n = run.count(*o).or_else(|| recorded(*o));
                    (count_box(o.as_str(), &outcome_label(*o), n.unwrap_or(0)))
                }
            }
            @if report.is_some() {
                h2 { "Delivery" }
                div.counts.small-counts #delivery {
                    (count_box("requests", "Requests", delivery.requests))
                    (count_box("existence-checks", "Existence checks", report.map_or(0, |r| r.existence_checks)))
                    (count_box("retries", "Retries", delivery.retries))
                    (count_box("rate-limited", "429 answers", delivery.rate_limited))
                    div.count.count-throttled {
                        span.value { (format!("{:.1}", delivery.throttled_ms as f64 / 1000.0)) " s" }
                        span.label { "Throttled (summed over requests)" }
                    }
                }
            }
            @if let Some(jobs) = &run.bulk_jobs {
                h2 { "Bulk jobs" }
                table.grid #bulk-jobs {
                    thead { tr { th { "Job" } th { "Attentive id" } th { "State" } th { "Status" } th.num { "Records" } th.num { "Updated" } th.num { "Rejected" } th.num { "Failed" } th.num { "Pending" } th { "Note" } } }
                    tbody {
                        @for j in jobs {
                            tr.bulk-job {
                                td { "#" (j["id"]) }
                                td { code { (j["remote_id"].as_str().unwrap_or("—")) } }
                                td { span.badge.{"status-" (if j["state"] == "settled" { "succeeded" } else { "pending" })} { (j["state"].as_str().unwrap_or("")) } }
                                td { (j["remote_status"].as_str().unwrap_or("—")) }
                                @for k in ["records", "updated", "rejected", "failed", "pending"] {
                                    td.num { (j[k].as_u64().unwrap_or(0)) }
                                }
                                td.muted.small { (j["message"].as_str().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            div.card-head {
                h2 { "Rows" }
                @if outcome == Outcome::Rejected {
                    a.button #download-rejected href={"/runs/" (run.id) "/rejected.csv"} { "Download rejected rows (CSV)" }
                }
            }
            nav.tabs {
                @for (o, label) in ROW_TABS {
                    a.tab.active[o == outcome.as_str()] #{"tab-" (o)} href={"/runs/" (run.id) "?outcome=" (o)} { (label) }
                }
            }
            @if rows.rows.is_empty() {
                @if let Some(at) = &run.rows_pruned_at {
                    p.muted #rows-pruned { "This run's rows were pruned on " (short_time(at)) " (the state keeps the rows of the newest runs, [state] keep_runs); its counts remain." }
                } @else {
                    p.muted #no-rows { @if paged { "No more rows." } @else { "No " (outcome_label(outcome).to_lowercase()) " rows." } }
                }
            } @else {
                table.grid #rows {
                    thead { tr { th.num { "Line" } th { "Contact" } th { "Code" } th { "Reason" } } }
                    tbody {
                        @for r in &rows.rows {
                            tr.row #{"row-" (r.row)} {
                                td.num { (r.row) }
                                td { @if let Some(c) = &r.contact { (c) } @else { span.muted { "—" } } }
                                td { @if let Some(c) = &r.code { code { (c) } } }
                                td.reason { @if let Some(m) = &r.message { (m) } }
                            }
                        }
                    }
                }
            }
            div.pager {
                @if paged { a.button #first-page href={"/runs/" (run.id) "?outcome=" (outcome.as_str())} { "First page" } }
                @if let Some(n) = rows.next_after {
                    a.button #next-page href={"/runs/" (run.id) "?outcome=" (outcome.as_str()) "&after=" (n)} { "Next page →" }
                }
            }
        }
    }
}

async fn run_rejected_csv(
    State(app): State<Arc<App>>,
    LoggedIn(session): LoggedIn,
    id: Result<Path<i64>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return error_page(
            &ApiError::bad_request("a run id is a number"),
            Some(&session),
        );
    };
    match crate::api::rows_csv(&app, id, Outcome::Rejected).await {
        Ok(r) => r,
        Err(e) => error_page(&e, Some(&session)),
    }
}

// --- pieces ---------------------------------------------------------------------------------

fn count_box(class: &str, label: &str, n: u64) -> Markup {
    html! {
        div.count.{"count-" (class)} {
            span.value { (n) }
            span.label { (label) }
        }
    }
}

/// The outcomes the runs list shows.
const RUN_LIST_OUTCOMES: [Outcome; 5] = [
    Outcome::Updated,
    Outcome::Rejected,
    Outcome::Failed,
    Outcome::NotFound,
    Outcome::Pending,
];

fn outcome_label(o: Outcome) -> String {
    match o {
        Outcome::Updated => "Updated",
        Outcome::Unchanged => "Unchanged",
        Outcome::NotFound => "Not found",
        Outcome::Rejected => "Rejected",
        Outcome::Failed => "Failed",
        Outcome::Pending => "Pending",
    }
    .to_owned()
}

fn attribute_name(key: &str) -> String {
    key.strip_prefix("std:")
        .map(str::to_owned)
        .or_else(|| key.strip_prefix("custom:").map(|n| format!("{n} (custom)")))
        .unwrap_or_else(|| key.to_owned())
}

/// `2026-11-29T12:00:00.123Z` → `2026-11-29 12:00:00 UTC`.
fn short_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_owned())
}

fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        if s < 3600 {
            format!("{} min {} s", s / 60, s % 60)
        } else {
            format!("{} h {} min", s / 3600, (s % 3600) / 60)
        }
    }
}

/// A path segment, percent-encoded (activation names may hold any character).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn page(
    title: &str,
    session: Option<&Session>,
    refresh_secs: Option<u32>,
    body: Markup,
) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(s) = refresh_secs { meta http-equiv="refresh" content=(s); }
                title { (title) " · attentive-sync" }
                style { (PreEscaped(CSS)) (PreEscaped(insights::CSS)) }
            }
            body {
                header.top {
                    a.brand href="/" { span.logo { "◆" } " attentive-sync" }
                    @if let Some(s) = session {
                        nav {
                            a href="/" { "Activations" }
                            a href="/contacts" { "Contacts" }
                            a href="/notifications" { "Notifications" }
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button.link #logout type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

const CSS: &str = r#"
:root{--bg:#f6f7f9;--card:#fff;--ink:#1d2330;--muted:#6b7385;--line:#e3e6ec;--accent:#2f5bea;--accent-ink:#fff;
--ok:#1f8a4c;--warn:#b26b00;--bad:#c62f2f;--run:#2f5bea;font-size:15px}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;line-height:1.45}
header.top{display:flex;align-items:center;justify-content:space-between;padding:.7rem 1.5rem;background:#151a26;color:#fff}
header.top a{color:#fff;text-decoration:none}
header.top nav{display:flex;gap:1rem;align-items:center}
.brand{font-weight:600;letter-spacing:.01em}.logo{color:#7f9cff}
main{max-width:1200px;margin:1.2rem auto;padding:0 1rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:1rem 1.2rem;margin-bottom:1rem;box-shadow:0 1px 2px rgba(20,30,60,.04)}
.card-head{display:flex;align-items:center;justify-content:space-between;gap:1rem;flex-wrap:wrap}
h1{font-size:1.3rem;margin:.2rem 0 .6rem}h2{font-size:1.05rem;margin:.2rem 0 .6rem}
a{color:var(--accent)}
.muted{color:var(--muted)}.small{font-size:.85em}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em;background:#f0f2f6;padding:.05em .35em;border-radius:4px}
table.grid{width:100%;border-collapse:collapse}
table.grid th,table.grid td{padding:.45rem .55rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
table.grid th{white-space:nowrap;font-size:.8rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);font-weight:600}
table.grid tr:last-child td{border-bottom:none}
.num{text-align:right!important;font-variant-numeric:tabular-nums}
td.reason{max-width:40rem;word-break:break-word}
.name{font-weight:600}.nowrap{white-space:nowrap}
.badge{display:inline-block;padding:.1em .55em;border-radius:999px;font-size:.8rem;font-weight:600;background:#eef0f4;color:var(--muted)}
.badge.big{font-size:.95rem;padding:.25em .8em}
.status-succeeded{background:#e3f5ea;color:var(--ok)}.status-partial{background:#fff3dc;color:var(--warn)}
.status-failed{background:#fde6e6;color:var(--bad)}.status-interrupted{background:#f1e8fb;color:#7440b8}.status-pending{background:#e6effd;color:#2d5fb3}
.status-running{background:#e6ecff;color:var(--run)}
button,.button{display:inline-block;font:inherit;font-size:.9rem;padding:.35rem .8rem;border-radius:6px;border:1px solid var(--line);background:#fff;color:var(--ink);cursor:pointer;text-decoration:none;white-space:nowrap}
button:hover,.button:hover{border-color:#c4c9d4}
button.primary{background:var(--accent);border-color:var(--accent);color:var(--accent-ink)}
button[disabled]{opacity:.5;cursor:not-allowed}
button.link{background:none;border:none;color:#fff;padding:0;font-size:inherit}
form.inline{display:inline}
td.actions{white-space:nowrap}td.actions>*{margin-left:.3rem}
.counts{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:.6rem;margin:.6rem 0}
.count{border:1px solid var(--line);border-radius:8px;padding:.6rem .8rem;display:flex;flex-direction:column}
.count .value{font-size:1.5rem;font-weight:650;font-variant-numeric:tabular-nums}
.small-counts .count .value{font-size:1.15rem}
.count .label{font-size:.8rem;color:var(--muted)}
.count-updated .value{color:var(--ok)}.count-rejected .value,.count-failed .value{color:var(--bad)}.count-not_found .value{color:var(--warn)}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.2rem 0 .6rem}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0}
.flash{padding:.6rem .8rem;border-radius:8px;margin:.5rem 0}
.error{border-left:4px solid var(--bad)}.flash.error,p.error{background:#fdeeee;color:#8d1f1f;padding:.6rem .8rem;border-radius:8px}
.flash.warn{background:#fff6e5;color:#7a4a00}
.progress{background:#eef2ff;border-radius:8px;padding:.6rem .8rem;margin:.5rem 0}
.tabs{display:flex;gap:.25rem;border-bottom:1px solid var(--line);margin-bottom:.6rem}
.tab{padding:.4rem .8rem;text-decoration:none;color:var(--muted);border-bottom:2px solid transparent}
.tab.active{color:var(--ink);border-bottom-color:var(--accent);font-weight:600}
.pager{display:flex;gap:.5rem;justify-content:flex-end;margin-top:.6rem}
.two{display:grid;grid-template-columns:1fr 1fr;gap:1rem;margin-bottom:1rem}.two .card{margin-bottom:0}
ul.changes{margin:0;padding-left:1rem}.prev{color:var(--muted);text-decoration:line-through}.new{font-weight:600}
.login{max-width:380px;margin:4rem auto}
.login form{display:flex;flex-direction:column;gap:.6rem}
.login input{font:inherit;padding:.5rem .6rem;border:1px solid var(--line);border-radius:6px}
@media (max-width:800px){.two{grid-template-columns:1fr}table.grid{font-size:.85rem}}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces() {
        assert_eq!(seg("vip"), "vip");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
        assert_eq!(duration(250), "250 ms");
        assert_eq!(duration(12_340), "12.3 s");
        assert_eq!(duration(125_000), "2 min 5 s");
        assert_eq!(
            short_time("2026-11-29T12:00:00.123Z"),
            "2026-11-29 12:00:00 UTC"
        );
        assert_eq!(attribute_name("custom:Tier"), "Tier (custom)");
        assert_eq!(attribute_name("std:city"), "city");
    }
}
