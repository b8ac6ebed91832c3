//! The REST API under `/api/v1` (bearer token), the operational routes (`/healthz`,
//! `/readyz`, `/metrics`) and the OpenAPI document, generated from these handlers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use state_store::Outcome;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::error::{error_chain, ApiError, ErrorBody, ErrorCode};
use crate::runs::{self, Trigger};
use crate::state::App;
use crate::views::{
    self, ActivationView, ContactView, RowsPage, RunView, RunsPage, StartedRun, MAX_PAGE,
};

/// The OpenAPI document, generated from the handlers' annotations (every route of
/// [`routers`] is listed here; a test checks that each documented route is served).
#[derive(Debug, OpenApi)]
#[openapi(
    paths(
        list_activations,
        start_run,
        plan,
        list_runs,
        get_run,
        run_rows,
        rejected_csv,
        contact,
        list_alerts,
        list_notifications,
        healthz,
        readyz,
        metrics
    ),
    components(schemas(OutcomeName, DeliveryStateName)),
    info(
        title = "attentive-sync server",
        description = "Runs attentive-sync activations on schedules and on demand, and shows their runs. \
                       Every /api/v1 route needs `Authorization: Bearer TOKEN` (the server token). \
                       Errors are `{\"error\": {\"code\": \"stable_snake_case\", \"message\": \"...\"}}`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "activations", description = "Activations, starting runs, dry-run plans"),
        (name = "runs", description = "Runs and their row outcomes"),
        (name = "contacts", description = "What the snapshot holds for a contact"),
        (name = "alerts", description = "Alert rules and their states; notifications and their deliveries"),
        (name = "operations", description = "Health, readiness and metrics (no token)")
    )
)]
pub struct ApiDoc;

#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // Every route behind the token may also refuse an address that sent too many wrong
        // tokens (see `auth::AuthThrottle`).
        let too_many = error_response(
            "Too many wrong tokens from this address in the last minute (`too_many_failures`)",
        );
        let bad_parameter = error_response(
            "A parameter that cannot be read or is out of its range (`invalid_request`)",
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/") {
                continue;
            }
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                // Every parameter is parsed before the handler runs: one that cannot be is a
                // 400 with the error body.
                if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    op.responses
                        .responses
                        .entry("400".to_owned())
                        .or_insert_with(|| bad_parameter.clone().into());
                }
                match op.responses.responses.get_mut("429") {
                    Some(utoipa::openapi::RefOr::T(r)) => {
                        r.description.push_str(
                            "; or too many wrong tokens from this address in the last minute (`too_many_failures`)",
                        );
                    }
                    Some(utoipa::openapi::RefOr::Ref(_)) => {}
                    None => {
                        op.responses
                            .responses
                            .insert("429".to_owned(), too_many.clone().into());
                    }
                }
            }
        }
    }
}

/// A documented answer with the error body.
fn error_response(description: &str) -> utoipa::openapi::Response {
    utoipa::openapi::ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// The API routes (token checked) and the open operational routes, with their OpenAPI
/// document.
pub fn routers(app: &Arc<App>) -> (axum::Router<Arc<App>>, utoipa::openapi::OpenApi) {
    use axum::routing::{get, post};
    let protected = axum::Router::new()
        .route("/api/v1/activations", get(list_activations))
        .route("/api/v1/activations/{name}/runs", post(start_run))
        .route("/api/v1/activations/{name}/plan", get(plan))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(get_run))
        .route("/api/v1/runs/{id}/rows", get(run_rows))
        .route("/api/v1/runs/{id}/rejected.csv", get(rejected_csv))
        .route("/api/v1/contacts/{contact}", get(contact))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/notifications", get(list_notifications))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_token,
        ));
    let open = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    (protected.merge(open), ApiDoc::openapi())
}

/// Refuses requests without the bearer token (401, JSON).
async fn require_token(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let client = crate::client_address(&req);
    if app.auth_failures.refuses(client) {
        return ApiError::too_many_failures().into_response();
    }
    if app.token.authorizes(req.headers()) {
        next.run(req).await
    } else {
        // A wrong token is a guess; no token at all is not.
        if crate::auth::bearer(req.headers()).is_some() {
            app.auth_failures.failed(client, "bearer token");
        }
        ApiError::unauthorized().into_response()
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(t)| t)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// Every activation, with its schedule, next due time, the run going on and the last run.
#[utoipa::path(
    get,
    path = "/api/v1/activations",
    tag = "activations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The activations, by name", body = [ActivationView]),
        (status = 401, description = "No or wrong token", body = ErrorBody)
    )
)]
async fn list_activations(
    State(app): State<Arc<App>>,
) -> Result<Json<Vec<ActivationView>>, ApiError> {
    let a = app.clone();
    Ok(Json(app.db.read(move |s| views::activations(&a, s)).await?))
}

/// Starts a run now (in the background).
#[utoipa::path(
    post,
    path = "/api/v1/activations/{name}/runs",
    tag = "activations",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The activation"), StartQuery),
    responses(
        (status = 202, description = "Started; follow it at `location` (also the Location header)", body = StartedRun),
        (status = 404, description = "No such activation (`activation_not_found`)", body = ErrorBody),
        (status = 409, description = "A run of the activation is in progress, here or in another process (`run_in_progress`)", body = ErrorBody),
        (status = 422, description = "The activation cannot run as configured, e.g. its API key variable is unset (`not_runnable`)", body = ErrorBody),
        (status = 503, description = "The server is shutting down (`shutting_down`)", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody)
    )
)]
async fn start_run(
    State(app): State<Arc<App>>,
    name: Result<Path<String>, PathRejection>,
    q: Result<Query<StartQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let name = path(name)?;
    let q = query(q)?;
    app.activation(&name)?;
    let how = runs::StartOptions {
        rebind_destination: q.rebind_destination.unwrap_or(false),
    };
    let run_id = runs::start_with(&app, &name, Trigger::Manual, how).await?;
    let location = format!("/api/v1/runs/{run_id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location.clone())],
        Json(StartedRun {
            run_id,
            activation: name,
            location,
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StartQuery {
    /// The destination's key now belongs to another Attentive account than the state file:
    /// bind it to that account, forgetting the destination's existence cache and the
    /// snapshots of its activations (`run --rebind-destination`). Default false: such a run
    /// fails before sending anything.
    rebind_destination: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PlanQuery {
    /// How many changes and rejections to show (default 10, at most 1000).
    #[param(minimum = 0, maximum = 1000)]
    sample: Option<usize>,
}

/// A dry run: what a run would send now, through the same code path, sending nothing.
#[utoipa::path(
    get,
    path = "/api/v1/activations/{name}/plan",
    tag = "activations",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The activation"), PlanQuery),
    responses(
        (status = 200, description = "The plan report (`attentive-sync plan --format json`): counts, attributes to send, sample changes and rejections", body = Object),
        (status = 404, description = "No such activation", body = ErrorBody),
        (status = 409, description = "A preview of this activation is being computed (`preview_in_progress`)", body = ErrorBody),
        (status = 429, description = "Too many previews are being computed (`too_many_previews`)", body = ErrorBody),
        (status = 422, description = "The model cannot be read or does not fit the mapping (`plan_failed`)", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody)
    )
)]
async fn plan(
    State(app): State<Arc<App>>,
    name: Result<Path<String>, PathRejection>,
    q: Result<Query<PlanQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = path(name)?;
    let q = query(q)?;
    app.activation(&name)?;
    let sample = match q.sample {
        None => 10,
        Some(n) if n <= 1000 => n,
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "sample must be at most 1000, not {n}"
            )))
        }
    };
    let report = dry_run(&app, &name, sample).await?;
    serde_json::to_value(report)
        .map(Json)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Plans an activation on a blocking thread.
pub async fn dry_run(
    app: &Arc<App>,
    name: &str,
    sample: usize,
) -> Result<runner::plan::PlanReport, ApiError> {
    let project = app.project.clone();
    let claim = app.db.claim_preview(name)?;
    let name = name.to_owned();
    app.db
        .read(move |store| {
            // Released when the scan ends, whatever became of the request.
            let _claim = claim;
            let opts = runner::plan::PlanOptions {
                sample_size: sample,
                output: None,
            };
            runner::plan::plan(&project, &name, store, &opts, &|_| {}).map_err(|e| match e {
                runner::plan::Error::Store(s) => ApiError::store(&s),
                e => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::PlanFailed,
                    error_chain(&e),
                ),
            })
        })
        .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunsQuery {
    /// Only this activation's runs.
    activation: Option<String>,
    /// Runs per page (default 20, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Runs with ids below this one (the `next_before` of the previous page).
    before: Option<i64>,
}

/// The latest runs, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    tag = "runs",
    security(("bearer" = [])),
    params(RunsQuery),
    responses(
        (status = 200, description = "A page of runs", body = RunsPage),
        (status = 400, description = "A bad parameter (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody)
    )
)]
async fn list_runs(
    State(app): State<Arc<App>>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<RunsPage>, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit, 20)?;
    let a = app.clone();
    let page = app
        .db
        .read(move |s| {
            let runs = s.runs_before(q.activation.as_deref(), q.before, limit)?;
            let next_before = if runs.len() as u64 == limit {
                runs.last().map(|r| r.id)
            } else {
                None
            };
            let runs = runs.iter().map(|r| views::run_view(&a, r)).collect();
            Ok(RunsPage { runs, next_before })
        })
        .await?;
    Ok(Json(page))
}

/// One run: status, report (counts, delivery) and, while it goes on, its progress.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    tag = "runs",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run", body = RunView),
        (status = 404, description = "No such run (`run_not_found`)", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody)
    )
)]
async fn get_run(
    State(app): State<Arc<App>>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<RunView>, ApiError> {
    let id = path(id)?;
    let a = app.clone();
    let run = app
        .db
        .read(move |s| {
            let run = s.run(id)?.ok_or_else(|| ApiError::run_not_found(id))?;
            views::run_detail(&a, s, &run)
        })
        .await?;
    Ok(Json(run))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RowsQuery {
    /// Only rows with this outcome.
    #[param(value_type = Option<OutcomeName>)]
    outcome: Option<String>,
    /// Rows after this row number (the `next_after` of the previous page).
    #[param(maximum = 9_223_372_036_854_775_807_u64)]
    after: Option<u64>,
    /// Rows per page (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// A row outcome.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // only its schema is used: the value is parsed by `views::parse_outcome`
enum OutcomeName {
    Updated,
    Unchanged,
    NotFound,
    Rejected,
    Failed,
    Pending,
}

/// A page size: `default` when not given, else 1 to [`MAX_PAGE`] (beyond is a 400, as the
/// OpenAPI document says).
fn page_limit(limit: Option<u64>, default: u64) -> Result<u64, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}, not {n}"
        ))),
    }
}

/// A page of a run's rows in model order, optionally of one outcome (keyset paging).
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/rows",
    tag = "runs",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The run's id"), RowsQuery),
    responses(
        (status = 200, description = "A page of rows", body = RowsPage),
        (status = 400, description = "A bad parameter, e.g. an unknown outcome (`invalid_request`)", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody)
    )
)]
async fn run_rows(
    State(app): State<Arc<App>>,
    id: Result<Path<i64>, PathRejection>,
    q: Result<Query<RowsQuery>, QueryRejection>,
) -> Result<Json<RowsPage>, ApiError> {
    let id = path(id)?;
    let q = query(q)?;
    if q.outcome.as_deref().is_some_and(|o| o.trim().is_empty()) {
        return Err(ApiError::bad_request(
            "outcome is empty; leave it out for every row, or give one of: updated, unchanged, not_found, rejected, failed, pending",
        ));
    }
    let outcome = views::parse_outcome(q.outcome.as_deref())?;
    if q.after.is_some_and(|a| i64::try_from(a).is_err()) {
        // Row numbers are stored as SQLite integers: nothing lies beyond i64::MAX.
        return Err(ApiError::bad_request(format!(
            "after must be at most {}",
            i64::MAX
        )));
    }
    let limit = page_limit(q.limit, 100)?;
    let page = app
        .db
        .read(move |s| views::rows_page(s, id, outcome, q.after, limit))
        .await?;
    Ok(Json(page))
}

/// Every rejected row of a run, with its reason, as CSV (`row,contact,outcome,code,message,attributes`).
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/rejected.csv",
    tag = "runs",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The run's id")),
    responses(
        (status = 200, description = "CSV, streamed", content_type = "text/csv", body = String),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody)
    )
)]
async fn rejected_csv(
    State(app): State<Arc<App>>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path(id)?;
    rows_csv(&app, id, Outcome::Rejected).await
}

/// An export whose client reads nothing for this long is ended (its read connection freed).
const EXPORT_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends `item` from a blocking thread, waiting at most `stall` for room; false when the
/// receiver is gone or did not take it in time.
fn send_within<T>(
    tx: &tokio::sync::mpsc::Sender<T>,
    mut item: T,
    stall: std::time::Duration,
) -> bool {
    use tokio::sync::mpsc::error::TrySendError;
    let deadline = std::time::Instant::now() + stall;
    loop {
        match tx.try_send(item) {
            Ok(()) => return true,
            Err(TrySendError::Closed(_)) => return false,
            Err(TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                item = back;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(TrySendError::Full(_)) => {
                tracing::warn!(?stall, "an export's client stopped reading: ended");
                return false;
            }
        }
    }
}

/// Streams a run's rows of one outcome as CSV, read page by page on a blocking thread.
pub async fn rows_csv(app: &Arc<App>, run_id: i64, outcome: Outcome) -> Result<Response, ApiError> {
    app.db
        .read(move |s| {
            s.run(run_id)?
                .ok_or_else(|| ApiError::run_not_found(run_id))
        })
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let db = app.db.clone();
    let permit = app.db.permit().await?;
    tokio::task::spawn_blocking(move || {
        const PAGE: u64 = 5000;
        // A read connection for the whole export (counted against the readers' limit).
        let _permit = permit;
        let store = match db.take() {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.message)));
                return;
            }
        };
        let mut after = None;
        let mut header = true;
        loop {
            let rows = match store.run_rows_after(run_id, Some(outcome), after, PAGE) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(error_chain(&e))));
                    break;
                }
            };
            let chunk = csv_chunk(header, &rows);
            header = false;
            if !send_within(&tx, chunk, EXPORT_STALL) {
                break; // the client went away, or stopped reading
            }
            if (rows.len() as u64) < PAGE {
                break;
            }
            after = rows.last().map(|r| r.row_number);
        }
        db.give(store);
    });
    let filename = format!("run-{run_id}-{}.csv", outcome.as_str());
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(Chunks(rx)),
    )
        .into_response())
}

fn csv_chunk(header: bool, rows: &[state_store::RunRow]) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    runner::output::write_run_rows_csv(&mut out, rows, header)?;
    Ok(out)
}

/// A body stream fed by a channel.
struct Chunks(tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>);

impl futures_core::Stream for Chunks {
    type Item = Result<Vec<u8>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// What the snapshot holds for a contact, per activation and attribute.
#[utoipa::path(
    get,
    path = "/api/v1/contacts/{contact}",
    tag = "contacts",
    security(("bearer" = [])),
    params(("contact" = String, Path, description = "An email, or a phone in international format (+14155550100); normalized as the runs do")),
    responses(
        (status = 200, description = "The contact's snapshot (empty `activations`: never acknowledged)", body = ContactView),
        (status = 404, description = "Not an email or international phone, so no contact can be stored under it (`invalid_contact`)", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody)
    )
)]
async fn contact(
    State(app): State<Arc<App>>,
    contact: Result<Path<String>, PathRejection>,
) -> Result<Json<ContactView>, ApiError> {
    let key = views::normalize_contact(&path(contact)?)?;
    let view = app
        .db
        .read(move |s| Ok(ContactView::of(&key, &s.contact(&key)?)))
        .await?;
    Ok(Json(view))
}

/// Every alert rule of every activation (in the config's order) and its state.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "alerts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The rules: `ok` or `firing`, since when, why", body = [crate::alerting::AlertView]),
        (status = 401, description = "No or wrong token", body = ErrorBody)
    )
)]
async fn list_alerts(
    State(app): State<Arc<App>>,
) -> Result<Json<Vec<crate::alerting::AlertView>>, ApiError> {
    let a = app.clone();
    Ok(Json(
        app.db.read(move |s| crate::alerting::alerts(&a, s)).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct NotificationsQuery {
    /// Only this activation's notifications.
    activation: Option<String>,
    /// Only deliveries in this state.
    #[param(value_type = Option<DeliveryStateName>)]
    state: Option<String>,
    /// Deliveries per page (default 50, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// A delivery state.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // only its schema is used: the value is parsed by `alerting::parse_delivery_state`
enum DeliveryStateName {
    Pending,
    Delivered,
    Failed,
}

/// Notification deliveries, newest first: event, endpoint, attempts, the last HTTP status
/// and error, when it was delivered.
#[utoipa::path(
    get,
    path = "/api/v1/notifications",
    tag = "alerts",
    security(("bearer" = [])),
    params(NotificationsQuery),
    responses(
        (status = 200, description = "The deliveries", body = [crate::alerting::DeliveryView]),
        (status = 400, description = "A bad parameter (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody)
    )
)]
async fn list_notifications(
    State(app): State<Arc<App>>,
    q: Result<Query<NotificationsQuery>, QueryRejection>,
) -> Result<Json<Vec<crate::alerting::DeliveryView>>, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit, 50)?;
    let state = crate::alerting::parse_delivery_state(q.state.as_deref())?;
    let deliveries = app
        .db
        .read(move |s| {
            Ok(s.deliveries(q.activation.as_deref(), state, limit)?
                .iter()
                .map(crate::alerting::DeliveryView::of)
                .collect())
        })
        .await?;
    Ok(Json(deliveries))
}

/// Health.
#[derive(Debug, Serialize, ToSchema)]
struct Status {
    /// `ok` or `ready`.
    status: String,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    security(()),
    responses((status = 200, description = "Up", body = Status))
)]
async fn healthz() -> Json<Status> {
    Json(Status {
        status: "ok".to_owned(),
    })
}

/// The config is loaded and the state database opens; 503 while shutting down.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "Not ready (`not_ready`) or stopping (`shutting_down`)", body = ErrorBody)
    )
)]
async fn readyz(State(app): State<Arc<App>>) -> Result<Json<Status>, ApiError> {
    if app.is_shutting_down() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ShuttingDown,
            "the server is shutting down",
        ));
    }
    app.db
        .read(|s| Ok(s.schema_version()?))
        .await
        .map_err(|e| {
            // The details (paths, SQLite's words) go to the log, not to whoever asks.
            tracing::error!(error = %e.message, "not ready: the state database cannot be read");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::NotReady,
                "the state database cannot be read (see the server's log)",
            )
        })?;
    Ok(Json(Status {
        status: "ready".to_owned(),
    }))
}

/// Prometheus metrics (OpenMetrics text). Open unless the server runs with
/// `--metrics-require-token`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The metrics", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "`--metrics-require-token` is set and the token is missing or wrong", body = ErrorBody)
    )
)]
async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    if app.settings.metrics_require_token && !app.token.authorizes(&headers) {
        return Err(ApiError::unauthorized());
    }
    // Alert states and deliveries are read from the state at each scrape: other processes
    // (`attentive-sync run` under cron) change them too.
    let read = app
        .db
        .read(|s| Ok((s.alert_states(None)?, s.delivery_totals()?)))
        .await;
    match read {
        Ok((states, totals)) => app
            .metrics
            .set_notifications(&app.project, &states, &totals),
        Err(e) => tracing::warn!("metrics: reading alert states failed: {}", e.message),
    }
    let text = app
        .metrics
        .encode()
        .map_err(|e| ApiError::internal(format!("encoding metrics failed: {e}")))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

#[cfg(test)]
mod csv_tests {
    /// Issue 13: `rejected.csv` wrote cells starting with `=`, `+`, `-`, `@` as they were.
    #[test]
    fn rejected_csv_neutralizes_formula_cells() {
        let row = state_store::RunRow {
            row_number: 3,
            contact_key: Some("=hyperlink(\"http://x\")@example.com".to_owned()),
            outcome: state_store::Outcome::Rejected,
            code: Some("invalid_value".to_owned()),
            message: Some("-5 is not an age".to_owned()),
            attributes_json: Some("@x".to_owned()),
        };
        let body = String::from_utf8(super::csv_chunk(true, &[row]).unwrap()).unwrap();
        assert_eq!(
            body,
            "row,contact,outcome,code,message,attributes\n\
             3,\"'=hyperlink(\"\"http://x\"\")@example.com\",rejected,invalid_value,'-5 is not an age,'@x\n"
        );
    }
}
