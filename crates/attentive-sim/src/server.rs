//! The HTTP side: routes, the API gate (auth, rate limit, permissions, faults, logging) and
//! the handlers.

use std::future::IntoFuture;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::config::{CompanyInfo, Faults, Permission, RateLimitScope, SeedContact, SimConfig};
use crate::model::{BulkJobStatus, ContactOrigin, RequestRecord, ViolationKind};
use crate::state::{ApplyError, LimitClass, SimHandle, Verdict};
use crate::Error;
use crate::{graphql, validate};

/// Largest request body read (bytes).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Most users in one bulk request.
pub(crate) const MAX_BULK_USERS: usize = 256;
/// How long a shutdown waits for in-flight requests before the server task stops anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

// ---- responses ------------------------------------------------------------------------------

/// A Spring-Boot style error body, as Attentive's Java services answer.
fn spring_error(status: StatusCode, message: &str, path: &str) -> Response {
    let body = json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        "status": status.as_u16(),
        "error": status.canonical_reason().unwrap_or("Error"),
        "message": message,
        "path": path,
    });
    (status, Json(body)).into_response()
}

fn message(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

fn too_many_requests() -> Response {
    message(StatusCode::TOO_MANY_REQUESTS, "Too many requests")
}

/// A body that fails at once: hyper then closes the connection, and since the failure comes
/// before the buffered response head is flushed, the client sees the connection close with no
/// response at all.
#[derive(Debug)]
struct FailingBody;

impl futures_core::Stream for FailingBody {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(Some(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "attentive-sim: injected dropped connection",
        ))))
    }
}

fn dropped_connection() -> Response {
    let mut response = Response::new(Body::from_stream(FailingBody));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A request error, answered Spring-style by [`ApiError::at`].
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: String) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }

    fn at(&self, path: &str) -> Response {
        spring_error(self.status, &self.message, path)
    }
}

/// Parses a JSON request body; 415 when the content type is not JSON, 400 when it is not
/// valid JSON.
fn json_body(headers: &HeaderMap, bytes: &[u8]) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "application/json" && !mime.ends_with("+json") {
        return Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!(
                "Content-Type '{content_type}' is not supported, use application/json"
            ),
        });
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("JSON parse error: {e}")))
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

fn body_for_log(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(bytes);
        Value::String(text.chars().take(10_000).collect())
    })
}

/// The permissions a route needs (Attentive: attributes:write for custom attributes,
/// attributes + subscriptions for v2 user attributes and bulk, subscriptions for lookups).
fn required_permissions(method: &Method, route: &str) -> &'static [Permission] {
    match (method.as_str(), route) {
        (_, "/v1/attributes/custom") => &[Permission::Attributes],
        ("POST", "/v2/user/attributes" | "/v2/bulk/user/attributes") => {
            &[Permission::Attributes, Permission::Subscriptions]
        }
        (_, "/v1/subscriptions" | "/v1/subscriptions/unsubscribe") => &[Permission::Subscriptions],
        ("POST", GRAPHQL_ROUTE) => &[Permission::Subscriptions],
        _ => &[],
    }
}

fn base_url(sim: &SimHandle, headers: &HeaderMap) -> String {
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        return format!("http://{host}");
    }
    sim.local_addr()
        .map_or_else(|| "http://127.0.0.1".to_owned(), url_for)
}

fn url_for(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

// ---- the API gate ---------------------------------------------------------------------------

const GRAPHQL_ROUTE: &str = "/v1/graphql";

/// The route template of an API path (the gate only sees matched API routes).
fn route_template(path: &str) -> String {
    if path.starts_with("/v2/bulk/job/") {
        "/v2/bulk/job/{id}".to_owned()
    } else {
        path.trim_end_matches('/').to_owned()
    }
}

async fn api_gate(State(sim): State<SimHandle>, req: Request, next: Next) -> Response {
    if !sim.config().apply_after_disconnect {
        return gate(sim, req, next).await;
    }
    // On a task of its own, the request runs to its end (applied, logged) even when the
    // client goes away during the latency: hyper then drops only this waiting future.
    match tokio::spawn(gate(sim, req, next)).await {
        Ok(response) => response,
        Err(e) => spring_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("simulator task failed: {e}"),
            "",
        ),
    }
}

async fn gate(sim: SimHandle, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let route = route_template(parts.uri.path());
    let endpoint = format!("{} {}", parts.method, route);
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return spring_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
            &path,
        );
    };
    let logged_body = body_for_log(&bytes);
    let token = bearer(&parts.headers);
    let config = sim.config();
    let class = if route.starts_with("/v2/bulk/") {
        LimitClass::Bulk
    } else {
        match config.rate_limit_scope {
            RateLimitScope::Endpoint => LimitClass::Endpoint(format!("{} {route}", parts.method)),
            RateLimitScope::Key => LimitClass::Default,
        }
    };
    // A disabled GraphQL route is absent: 404 whatever the key may do.
    let needs = if route == GRAPHQL_ROUTE && !config.graphql_enabled {
        &[]
    } else {
        required_permissions(&parts.method, &route)
    };
    let adm = sim
        .lock()
        .admit(config, token.as_deref(), class, needs, Instant::now());
    record_violations(&sim, adm.seq, &endpoint, adm.key_id.as_ref(), &logged_body);
    if !adm.delay.is_zero() {
        tokio::time::sleep(adm.delay).await;
    }

    let mut fault = None;
    let mut response = match adm.verdict {
        Verdict::Unauthorized => spring_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: missing or unknown API key (send 'Authorization: Bearer <key>')",
            &path,
        ),
        Verdict::RateLimited => too_many_requests(),
        Verdict::Forbidden(p) => spring_error(
            StatusCode::FORBIDDEN,
            &format!(
                "Access denied: this API key lacks the '{}' permission (custom app permission \
                 '{}'), required for {endpoint}",
                p.as_str(),
                p.ui_name()
            ),
            &path,
        ),
        Verdict::Burst429 => {
            fault = Some("burst 429".to_owned());
            too_many_requests()
        }
        Verdict::Drop => {
            fault = Some("drop".to_owned());
            dropped_connection()
        }
        Verdict::Error(status) => {
            fault = Some(format!("error {status}"));
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status == StatusCode::TOO_MANY_REQUESTS {
                too_many_requests()
            } else {
                spring_error(status, "Injected fault (attentive-sim)", &path)
            }
        }
        Verdict::Proceed => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    };

    let headers = response.headers_mut();
    if let Some((limit, remaining)) = adm.rate {
        headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    }
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        if let Some(secs) = config.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }
    let dropped = adm.verdict == Verdict::Drop;
    tracing::debug!(
        endpoint = %endpoint,
        status = if dropped { 0 } else { status.as_u16() },
        key = adm.key_id.as_deref().unwrap_or("-"),
        "request"
    );
    let record = RequestRecord {
        seq: adm.seq,
        at,
        answered_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        method: endpoint.split(' ').next().unwrap_or("").to_owned(),
        path,
        query,
        endpoint,
        status: (!dropped).then_some(status.as_u16()),
        body: logged_body,
        key_id: adm.key_id,
        fault,
    };
    sim.lock()
        .record_request(record, config.max_logged_requests, adm.verdict);
    response
}

fn record_violations(
    sim: &SimHandle,
    seq: u64,
    endpoint: &str,
    key_id: Option<&String>,
    body: &Value,
) {
    let mut found: Vec<(ViolationKind, String)> = Vec::new();
    match endpoint {
        "POST /v1/subscriptions" | "POST /v1/subscriptions/unsubscribe" => found.push((
            ViolationKind::SubscriptionEndpoint,
            format!("subscription endpoint called: {endpoint}"),
        )),
        "POST /v1/graphql" => {
            if let Some(query) = body.get("query").and_then(Value::as_str) {
                for m in graphql::mutations_in(query) {
                    found.push((ViolationKind::GraphqlMutation, m));
                }
            }
        }
        "POST /v2/user/attributes" if body.get("subscriptions").is_some() => {
            found.push((ViolationKind::SubscriptionsField, "subscriptions".into()));
        }
        "POST /v2/bulk/user/attributes" => {
            if let Some(users) = body.get("users").and_then(Value::as_array) {
                for (i, user) in users.iter().enumerate() {
                    if user.get("subscriptions").is_some() {
                        found.push((
                            ViolationKind::SubscriptionsField,
                            format!("users[{i}].subscriptions"),
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    if endpoint.starts_with("POST ") && (body.is_object() || body.is_array()) {
        for path in validate::null_paths(body) {
            found.push((ViolationKind::NullValue, path));
        }
    }
    if found.is_empty() {
        return;
    }
    let mut st = sim.lock();
    for (kind, detail) in found {
        tracing::warn!(endpoint, ?kind, detail = %detail, "violation");
        st.record_violation(seq, kind, endpoint, detail, key_id.cloned());
    }
}

// ---- API handlers ---------------------------------------------------------------------------

async fn me(State(sim): State<SimHandle>) -> Response {
    Json(sim.company()).into_response()
}

enum Lookup {
    Email(String),
    Phone(String),
}

impl Lookup {
    fn find<'a>(&self, st: &'a crate::state::State) -> Option<&'a crate::model::Contact> {
        match self {
            Lookup::Email(e) => st.find_by_query(Some(e), None),
            Lookup::Phone(p) => st.find_by_query(None, Some(p)),
        }
    }
}

/// `?email=` or `?phone=`, exactly one, validated.
fn lookup_query(raw: Option<&str>) -> Result<Lookup, ApiError> {
    let mut email = None;
    let mut phone = None;
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "email" => email = Some(v.into_owned()),
            "phone" => phone = Some(v.into_owned()),
            _ => {}
        }
    }
    let bad = ApiError::bad_request;
    match (email, phone) {
        (Some(e), None) => {
            validate::check_email(&e, "email").map_err(bad)?;
            Ok(Lookup::Email(e))
        }
        (None, Some(p)) => {
            validate::check_phone(&p, "phone").map_err(bad)?;
            Ok(Lookup::Phone(p))
        }
        _ => Err(bad(
            "exactly one of the query parameters 'email' or 'phone' is required".into(),
        )),
    }
}

async fn get_subscriptions(
    State(sim): State<SimHandle>,
    RawQuery(raw): RawQuery,
    uri: Uri,
) -> Response {
    match lookup_query(raw.as_deref()) {
        Err(e) => e.at(uri.path()),
        Ok(lookup) => {
            let st = sim.lock();
            let contact = lookup.find(&st);
            match contact {
                // A profile without subscription records looks like nobody, as on Attentive.
                None => message(StatusCode::NOT_FOUND, "Subscriptions not found"),
                Some(c) if !c.subscribed => {
                    message(StatusCode::NOT_FOUND, "Subscriptions not found")
                }
                Some(c) => {
                    let mut elig = Vec::new();
                    for (present, channel) in
                        [(c.phone.is_some(), "TEXT"), (c.email.is_some(), "EMAIL")]
                    {
                        if present {
                            elig.push(json!({
                                "subscription": {"type": "MARKETING", "channel": channel},
                                "eligibility": {"isEligible": true}
                            }));
                        }
                    }
                    Json(json!({ "subscriptionEligibilities": elig })).into_response()
                }
            }
        }
    }
}

/// A request that is not a GraphQL request (body shape): 400 with a GraphQL `errors` array.
fn graphql_bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"errors": [{"message": message, "extensions": {"code": "BAD_REQUEST"}}]})),
    )
        .into_response()
}

/// `POST /v1/graphql`: user lookups (see [`graphql`]); 404 when `graphql_enabled` is false.
async fn post_graphql(
    State(sim): State<SimHandle>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let config = sim.config();
    if !config.graphql_enabled {
        return spring_error(StatusCode::NOT_FOUND, "No endpoint here", path);
    }
    let value = match json_body(&headers, &body) {
        Ok(v) => v,
        Err(e) => return e.at(path),
    };
    let Some(obj) = value.as_object() else {
        return graphql_bad_request("body must be a JSON object {\"query\": \"...\"}");
    };
    let Some(query) = obj.get("query").and_then(Value::as_str) else {
        return graphql_bad_request("query is required and must be a string");
    };
    let empty = Map::new();
    let variables = match obj.get("variables") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return graphql_bad_request("variables must be a JSON object"),
    };
    let operation_name = match obj.get("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return graphql_bad_request("operationName must be a string"),
    };
    let st = sim.lock();
    let answer = graphql::execute(
        &st,
        &st.company,
        config.graphql_max_aliases,
        query,
        variables,
        operation_name,
    );
    Json(answer).into_response()
}

/// `POST /v1/subscriptions` and `/v1/subscriptions/unsubscribe`: accepted (the violation is
/// recorded by the gate), nothing stored.
async fn post_subscription_endpoint(headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    if let Err(e) = json_body(&headers, &body) {
        return e.at(uri.path());
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({ "subscriptionResponses": [] })),
    )
        .into_response()
}

async fn post_v1_custom(
    State(sim): State<SimHandle>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let value = match json_body(&headers, &body) {
        Ok(v) => v,
        Err(e) => return e.at(path),
    };
    let write = match validate::parse_v1_custom(&value) {
        Ok(w) => w,
        Err(m) => return spring_error(StatusCode::BAD_REQUEST, &m, path),
    };
    let create = (sim.config().v1_creates_unknown_users && write.ids.has_email_or_phone())
        .then_some(ContactOrigin::V1CustomAttributes);
    let outcome = sim.lock().apply_write(&write, create, true);
    match outcome {
        Ok(_) => (StatusCode::OK, Json(json!({}))).into_response(),
        Err(ApplyError::NotFound) => message(StatusCode::NOT_FOUND, "User not found"),
        Err(ApplyError::BadRequest(m)) => spring_error(StatusCode::BAD_REQUEST, &m, path),
    }
}

async fn get_v1_custom(
    State(sim): State<SimHandle>,
    RawQuery(raw): RawQuery,
    uri: Uri,
) -> Response {
    match lookup_query(raw.as_deref()) {
        Err(e) => e.at(uri.path()),
        Ok(lookup) => {
            let st = sim.lock();
            let contact = lookup.find(&st);
            match contact {
                None => message(StatusCode::NOT_FOUND, "User not found"),
                Some(c) => {
                    let items: Vec<Value> = c
                        .custom
                        .iter()
                        .map(|(name, attr)| {
                            let value = match &attr.value {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            json!({ "name": name, "value": value })
                        })
                        .collect();
                    Json(Value::Array(items)).into_response()
                }
            }
        }
    }
}

async fn post_v2_user(
    State(sim): State<SimHandle>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let value = match json_body(&headers, &body) {
        Ok(v) => v,
        Err(e) => return e.at(path),
    };
    let write = match validate::parse_v2_user(&value, "") {
        Ok(w) => w,
        Err(m) => return spring_error(StatusCode::BAD_REQUEST, &m, path),
    };
    let outcome = sim
        .lock()
        .apply_write(&write, Some(ContactOrigin::V2UserAttributes), true);
    match outcome {
        Ok(_) => (
            StatusCode::ACCEPTED,
            Json(json!({"success": true, "message": "User attributes accepted for processing"})),
        )
            .into_response(),
        Err(ApplyError::BadRequest(m)) => spring_error(StatusCode::BAD_REQUEST, &m, path),
        Err(ApplyError::NotFound) => message(StatusCode::NOT_FOUND, "User not found"),
    }
}

async fn post_bulk(
    State(sim): State<SimHandle>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let value = match json_body(&headers, &body) {
        Ok(v) => v,
        Err(e) => return e.at(path),
    };
    let bad = |m: &str| spring_error(StatusCode::BAD_REQUEST, m, path);
    let Some(obj) = value.as_object() else {
        return bad("body must be a JSON object {\"users\": [...]}");
    };
    if let Some(k) = obj.keys().find(|k| k.as_str() != "users") {
        return bad(&format!("Unrecognized field \"{k}\" (allowed: users)"));
    }
    let Some(users) = obj.get("users").and_then(Value::as_array) else {
        return bad("users is required and must be an array");
    };
    if users.is_empty() || users.len() > MAX_BULK_USERS {
        return bad(&format!(
            "users must contain between 1 and {MAX_BULK_USERS} items, got {}",
            users.len()
        ));
    }
    let id = sim.lock().create_job(users.clone());
    (
        StatusCode::ACCEPTED,
        Json(json!({"message": "Bulk job accepted", "batchJobId": id})),
    )
        .into_response()
}

async fn get_bulk_job(
    State(sim): State<SimHandle>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let base = base_url(&sim, &headers);
    let mut st = sim.lock();
    st.refresh_jobs(sim.bulk_delay(), Instant::now());
    let unknown_polls = st.faults().bulk_unknown_status_polls;
    let Some(job) = st.jobs.get_mut(&id) else {
        return message(StatusCode::NOT_FOUND, "Bulk job not found");
    };
    let earlier_polls = job.polls;
    job.polls = job.polls.saturating_add(1);
    // The fault hides the job's state, whatever it is, for the first polls.
    let (status, url) = if earlier_polls < unknown_polls {
        (json!("NEEDS_REVIEW"), Value::Null)
    } else {
        let url = (job.status == BulkJobStatus::Completed)
            .then(|| format!("{base}/_sim/bulk/{id}/results.jsonl"));
        (json!(job.status), json!(url))
    };
    let mut body = Map::new();
    body.insert("bulkJobId".into(), json!(id));
    body.insert("status".into(), status);
    body.insert("totalRecords".into(), json!(job.total()));
    for field in sim.config().bulk_result_url_field.fields() {
        body.insert((*field).to_owned(), url.clone());
    }
    Json(Value::Object(body)).into_response()
}

// ---- admin / inspection routes (no auth) ----------------------------------------------------

async fn bulk_results(State(sim): State<SimHandle>, Path(id): Path<String>) -> Response {
    let mut st = sim.lock();
    st.refresh_jobs(sim.bulk_delay(), Instant::now());
    match st.jobs.get(&id) {
        Some(job) if job.status == BulkJobStatus::Completed => {
            let text = if st.faults().bulk_truncate_results {
                truncated_results(&job.results)
            } else {
                let mut text = job.results.join("\n");
                text.push('\n');
                text
            };
            ([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response()
        }
        _ => message(StatusCode::NOT_FOUND, "Result file not found"),
    }
}

/// A result file cut short (`bulk_truncate_results`): the first half of the lines (rounded
/// down), then the first half of the next line, cut mid-object, with no final newline.
fn truncated_results(lines: &[String]) -> String {
    let kept = lines.len() / 2;
    let mut text = String::new();
    for line in &lines[..kept] {
        text.push_str(line);
        text.push('\n');
    }
    if let Some(next) = lines.get(kept) {
        let mut cut = next.len() / 2;
        while !next.is_char_boundary(cut) {
            cut -= 1;
        }
        text.push_str(&next[..cut]);
    }
    text
}

async fn admin_get_faults(State(sim): State<SimHandle>) -> Response {
    Json(sim.faults()).into_response()
}

async fn admin_put_faults(State(sim): State<SimHandle>, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return message(StatusCode::BAD_REQUEST, &format!("invalid faults: {e}")),
    };
    match sim.set_faults(faults) {
        Ok(()) => Json(sim.faults()).into_response(),
        Err(e) => message(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn admin_get_company(State(sim): State<SimHandle>) -> Response {
    Json(sim.company()).into_response()
}

/// `PUT /_sim/company`: a `CompanyInfo` object; fields left out keep their current values.
async fn admin_put_company(State(sim): State<SimHandle>, body: Bytes) -> Response {
    let patch = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return message(StatusCode::BAD_REQUEST, "expected a JSON object"),
        Err(e) => return message(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
    };
    let mut merged = match serde_json::to_value(sim.company()) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (k, v) in patch {
        if !merged.contains_key(&k) {
            return message(
                StatusCode::BAD_REQUEST,
                &format!(
                    "unknown field '{k}' (allowed: applicationName, attentiveDomainName, \
                     companyName, contactEmail, companyId)"
                ),
            );
        }
        merged.insert(k, v);
    }
    match serde_json::from_value::<CompanyInfo>(Value::Object(merged)) {
        Ok(company) => {
            sim.set_company(company);
            Json(sim.company()).into_response()
        }
        Err(e) => message(StatusCode::BAD_REQUEST, &format!("invalid company: {e}")),
    }
}

async fn admin_get_contacts(State(sim): State<SimHandle>) -> Response {
    Json(sim.contacts()).into_response()
}

async fn admin_post_contacts(State(sim): State<SimHandle>, body: Bytes) -> Response {
    let seeds: Vec<SeedContact> = match serde_json::from_slice::<Value>(&body) {
        Ok(v @ Value::Array(_)) => match serde_json::from_value(v) {
            Ok(s) => s,
            Err(e) => return message(StatusCode::BAD_REQUEST, &format!("invalid contacts: {e}")),
        },
        Ok(v @ Value::Object(_)) => match serde_json::from_value(v) {
            Ok(s) => vec![s],
            Err(e) => return message(StatusCode::BAD_REQUEST, &format!("invalid contact: {e}")),
        },
        Ok(_) => return message(StatusCode::BAD_REQUEST, "expected a JSON array of contacts"),
        Err(e) => return message(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
    };
    match sim.seed_contacts(&seeds) {
        Ok(created) => {
            Json(json!({"created": created, "total": sim.contact_count()})).into_response()
        }
        Err(e) => message(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn admin_requests(State(sim): State<SimHandle>) -> Response {
    Json(sim.requests()).into_response()
}

async fn admin_counters(State(sim): State<SimHandle>) -> Response {
    Json(sim.counters()).into_response()
}

async fn admin_violations(State(sim): State<SimHandle>) -> Response {
    Json(sim.violations()).into_response()
}

async fn admin_bulk_jobs(State(sim): State<SimHandle>) -> Response {
    Json(sim.bulk_jobs()).into_response()
}

async fn admin_reset(State(sim): State<SimHandle>) -> Response {
    match sim.reset() {
        Ok(()) => Json(json!({"reset": true})).into_response(),
        Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn not_found(uri: Uri) -> Response {
    spring_error(StatusCode::NOT_FOUND, "No endpoint here", uri.path())
}

// ---- server ---------------------------------------------------------------------------------

/// Builds and starts simulators.
#[derive(Debug, Clone, Copy)]
pub struct Simulator;

impl Simulator {
    /// The simulator's routes over a state (to embed it in another axum app; most callers
    /// use [`Simulator::start`]).
    pub fn router(sim: SimHandle) -> Router {
        let api = Router::new()
            .route("/v1/me", get(me))
            .route("/v2/me", get(me))
            .route(
                "/v1/subscriptions",
                get(get_subscriptions).post(post_subscription_endpoint),
            )
            .route(
                "/v1/subscriptions/unsubscribe",
                post(post_subscription_endpoint),
            )
            .route(
                "/v1/attributes/custom",
                get(get_v1_custom).post(post_v1_custom),
            )
            .route("/v2/user/attributes", post(post_v2_user))
            .route("/v2/bulk/user/attributes", post(post_bulk))
            .route("/v2/bulk/job/{id}", get(get_bulk_job))
            .route(GRAPHQL_ROUTE, post(post_graphql))
            .route_layer(middleware::from_fn_with_state(sim.clone(), api_gate));
        let admin = Router::new()
            .route("/_sim/health", get(|| async { "ok" }))
            .route("/_sim/faults", get(admin_get_faults).put(admin_put_faults))
            .route(
                "/_sim/company",
                get(admin_get_company).put(admin_put_company),
            )
            .route(
                "/_sim/contacts",
                get(admin_get_contacts).post(admin_post_contacts),
            )
            .route("/_sim/requests", get(admin_requests))
            .route("/_sim/counters", get(admin_counters))
            .route("/_sim/violations", get(admin_violations))
            .route("/_sim/bulk-jobs", get(admin_bulk_jobs))
            .route("/_sim/bulk/{id}/results.jsonl", get(bulk_results))
            .route("/_sim/reset", post(admin_reset));
        api.merge(admin)
            .fallback(not_found)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .with_state(sim)
    }

    /// Validates `config`, binds `config.listen` (default `127.0.0.1:0`, a free port) and
    /// serves on the current tokio runtime until [`RunningSim::shutdown`] or drop.
    pub async fn start(config: SimConfig) -> Result<RunningSim, Error> {
        let listen = config.listen;
        let sim = SimHandle::new(config)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Error::Bind(listen, e))?;
        let addr = listener.local_addr().map_err(Error::Io)?;
        let _ = sim.shared.bound.set(addr);
        let (tx, rx) = watch::channel(false);
        let app = Simulator::router(sim.clone());
        let task = tokio::spawn(run_server(listener, app, rx));
        tracing::info!(%addr, "attentive-sim listening");
        Ok(RunningSim {
            addr,
            sim,
            shutdown: Some(tx),
            server: Some(ServerRun::Task(task)),
        })
    }
}

async fn wait_for_shutdown(rx: &mut watch::Receiver<bool>) {
    // An error means every sender is gone: that is a shutdown too.
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn run_server(listener: tokio::net::TcpListener, app: Router, rx: watch::Receiver<bool>) {
    let mut graceful_rx = rx.clone();
    let mut forced_rx = rx;
    let serve = axum::serve(listener, app)
        .with_graceful_shutdown(async move { wait_for_shutdown(&mut graceful_rx).await });
    tokio::select! {
        result = serve.into_future() => {
            if let Err(e) = result {
                tracing::error!(error = %e, "attentive-sim server failed");
            }
        }
        () = async move {
            wait_for_shutdown(&mut forced_rx).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("attentive-sim: connections still open after the grace period; stopped");
        }
    }
}

#[derive(Debug)]
enum ServerRun {
    Task(tokio::task::JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

/// A serving simulator. Derefs to its [`SimHandle`] for inspection (`sim.contacts()`, ...).
/// Dropping it stops the server (without waiting).
#[derive(Debug)]
pub struct RunningSim {
    addr: SocketAddr,
    sim: SimHandle,
    shutdown: Option<watch::Sender<bool>>,
    server: Option<ServerRun>,
}

impl RunningSim {
    /// Starts a simulator on a new thread with its own tokio runtime, for callers without a
    /// runtime (or that must not share theirs). Returns once the socket is bound.
    pub fn spawn_on_thread(config: SimConfig) -> Result<RunningSim, Error> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("attentive-sim".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("attentive-sim-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(Error::Io(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Simulator::start(config).await {
                        Ok(mut running) => {
                            let task = running.server.take();
                            let parts =
                                (running.addr, running.sim.clone(), running.shutdown.take());
                            if tx.send(Ok(parts)).is_err() {
                                return;
                            }
                            if let Some(ServerRun::Task(task)) = task {
                                let _ = task.await;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(Error::Io)?;
        match rx.recv() {
            Ok(Ok((addr, sim, shutdown))) => Ok(RunningSim {
                addr,
                sim,
                shutdown,
                server: Some(ServerRun::Thread(thread)),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::Config(
                    "the simulator thread stopped before binding".into(),
                ))
            }
        }
    }

    /// `http://127.0.0.1:PORT`: the base URL to give a client (no trailing slash).
    pub fn base_url(&self) -> String {
        url_for(self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The state handle (also reachable through `Deref`).
    pub fn handle(&self) -> &SimHandle {
        &self.sim
    }

    /// Stops the server: waits up to 5 s for in-flight requests, then for the server task or
    /// thread to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        match self.server.take() {
            Some(ServerRun::Task(task)) => {
                let _ = task.await;
            }
            Some(ServerRun::Thread(thread)) => {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            None => {}
        }
    }

    /// Stops the server from synchronous code: waits for the thread of
    /// [`RunningSim::spawn_on_thread`]; a server on a runtime task is only told to stop.
    pub fn shutdown_blocking(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(ServerRun::Thread(thread)) = self.server.take() {
            let _ = thread.join();
        }
    }
}

impl Deref for RunningSim {
    type Target = SimHandle;

    fn deref(&self) -> &SimHandle {
        &self.sim
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
    }
}
