//! Errors: what stops the server from starting ([`Error`]), and what an API call answers
//! when it fails ([`ApiError`]: `{"error": {"code": "stable_snake_case", "message": "..."}}`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// What stops `serve` before or while it serves.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No token to protect the API and dashboard with.
    #[error(
        "no server token: set the environment variable ATTENTIVE_SYNC_SERVER_TOKEN or pass \
         --token-file PATH (a file holding a random secret of at least {min} characters, e.g. \
         from `openssl rand -hex 32`)"
    )]
    NoToken {
        /// The shortest token accepted.
        min: usize,
    },
    /// The token is too short to be a secret.
    #[error(
        "the server token from {source_name} is {len} characters long; use at least {min} \
         random characters (e.g. from `openssl rand -hex 32`)"
    )]
    WeakToken {
        /// Where it came from (the variable's name or the file's path), never the token.
        source_name: String,
        /// Its length.
        len: usize,
        /// The shortest token accepted.
        min: usize,
    },
    /// The token file could not be read.
    #[error("cannot read the token file {path}")]
    TokenFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state database could not be opened.
    #[error("opening the state database {path} failed")]
    Store {
        /// The database file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: state_store::Error,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving HTTP failed")]
    Serve(#[source] std::io::Error),
    /// `--tls-cert` / `--tls-key` cannot be used.
    #[error("TLS: {}: {reason}", path.display())]
    Tls {
        /// The file at fault.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The stable codes of the API's errors (`{"error": {"code": ...}}`), as docs/SERVER.md
/// lists them (a test checks that it does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No or wrong bearer token (401).
    Unauthorized,
    /// Too many wrong tokens or logins from this address, or in all, in the last minute (429).
    TooManyFailures,
    /// A parameter or body that cannot be read or is out of its range (400).
    InvalidRequest,
    /// No activation has this name (404).
    ActivationNotFound,
    /// No run has this id (404).
    RunNotFound,
    /// The activation is running already, here or in another process (409).
    RunInProgress,
    /// The run could not start (500).
    RunFailedToStart,
    /// Not an email or international phone, so no contact is stored under it (404).
    InvalidContact,
    /// The activation cannot run: its destination's key is missing (422).
    NotRunnable,
    /// The preview failed: the model could not be read (422).
    PlanFailed,
    /// A preview of this activation is being computed (409).
    PreviewInProgress,
    /// Too many previews are being computed (429).
    TooManyPreviews,
    /// The server is stopping (503).
    ShuttingDown,
    /// The state database cannot be read (503).
    NotReady,
    /// The state database failed (500).
    StateStoreError,
    /// The request took longer than `--request-timeout-secs` (503).
    RequestTimeout,
    /// The request's `Host` is not one of `--allowed-hosts` (421).
    HostNotAllowed,
    /// No such route (404).
    NotFound,
    /// Anything else (500).
    Internal,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::Unauthorized,
        ErrorCode::TooManyFailures,
        ErrorCode::InvalidRequest,
        ErrorCode::ActivationNotFound,
        ErrorCode::RunNotFound,
        ErrorCode::RunInProgress,
        ErrorCode::RunFailedToStart,
        ErrorCode::InvalidContact,
        ErrorCode::NotRunnable,
        ErrorCode::PlanFailed,
        ErrorCode::PreviewInProgress,
        ErrorCode::TooManyPreviews,
        ErrorCode::ShuttingDown,
        ErrorCode::NotReady,
        ErrorCode::StateStoreError,
        ErrorCode::RequestTimeout,
        ErrorCode::HostNotAllowed,
        ErrorCode::NotFound,
        ErrorCode::Internal,
    ];

    /// The code as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TooManyFailures => "too_many_failures",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::ActivationNotFound => "activation_not_found",
            ErrorCode::RunNotFound => "run_not_found",
            ErrorCode::RunInProgress => "run_in_progress",
            ErrorCode::RunFailedToStart => "run_failed_to_start",
            ErrorCode::InvalidContact => "invalid_contact",
            ErrorCode::NotRunnable => "not_runnable",
            ErrorCode::PlanFailed => "plan_failed",
            ErrorCode::PreviewInProgress => "preview_in_progress",
            ErrorCode::TooManyPreviews => "too_many_previews",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::StateStoreError => "state_store_error",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::HostNotAllowed => "host_not_allowed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error answer of the API.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A machine-readable code and a message for people.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case (`ErrorCode`): `unauthorized`, `too_many_failures`, `invalid_request`, `activation_not_found`, `run_not_found`, `run_in_progress`, `run_failed_to_start`, `invalid_contact`, `not_runnable`, `plan_failed`, `preview_in_progress`, `too_many_previews`, `shutting_down`, `not_ready`, `state_store_error`, `request_timeout`, `host_not_allowed`, `not_found`, `internal`.
    #[schema(example = "run_in_progress")]
    pub code: String,
    /// What happened and what to do, for people.
    pub message: String,
}

/// An API error: a status, a stable code and a message. Messages never hold secrets.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "a valid bearer token is required (Authorization: Bearer TOKEN)",
        )
    }

    pub fn too_many_failures() -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyFailures,
            "too many attempts with a wrong token from this address; wait a minute",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
    }

    pub fn activation_not_found(name: &str, known: &[String]) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ActivationNotFound,
            format!(
                "no activation named {name:?}; activations: {}",
                if known.is_empty() {
                    "(none)".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        )
    }

    pub fn run_not_found(id: i64) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::RunNotFound,
            format!("no run with id {id}"),
        )
    }

    pub fn store(e: &state_store::Error) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::StateStoreError,
            error_chain(e),
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            message,
        )
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message.clone(),
            },
        }
    }
}

impl From<state_store::Error> for ApiError {
    fn from(e: state_store::Error) -> ApiError {
        match e {
            state_store::Error::UnknownOutcome { .. } => ApiError::bad_request(e.to_string()),
            state_store::Error::UnknownRun { run_id } => ApiError::run_not_found(run_id),
            e => ApiError::store(&e),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code.as_str(), message = %self.message, "request failed");
        }
        let status = self.status;
        let unauthorized = status == StatusCode::UNAUTHORIZED;
        let mut response = (status, axum::Json(self.body())).into_response();
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"attentive-sync\""),
            );
        }
        response
    }
}

pub use runner::error_chain;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// docs/SERVER.md's table of error codes lists every code, and nothing else.
    #[test]
    fn the_server_docs_list_every_error_code() {
        let doc = include_str!("../../../docs/SERVER.md");
        let listed: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| {
                let (code, rest) = l.split_once("` | ")?;
                rest.chars()
                    .next()
                    .filter(char::is_ascii_digit)
                    .map(|_| code)
            })
            .collect();
        let all: Vec<&str> = super::ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        for code in &all {
            assert!(
                listed.contains(code),
                "docs/SERVER.md does not list `{code}`"
            );
        }
        for code in &listed {
            assert!(
                all.contains(code),
                "docs/SERVER.md lists `{code}`, which the server never answers"
            );
        }
    }

    use super::*;
    use http_body_util::BodyExt;

    async fn json_of(r: Response) -> (StatusCode, Option<HeaderValue>, serde_json::Value) {
        let status = r.status();
        let auth = r.headers().get(header::WWW_AUTHENTICATE).cloned();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, auth, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn errors_are_json_with_a_stable_code() {
        let (status, auth, body) = json_of(ApiError::run_not_found(7).into_response()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(auth.is_none());
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "run_not_found", "message": "no run with id 7"}})
        );

        let (status, auth, body) = json_of(ApiError::unauthorized().into_response()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            auth.unwrap().to_str().unwrap(),
            "Bearer realm=\"attentive-sync\""
        );
        assert_eq!(body["error"]["code"], "unauthorized");

        let e = ApiError::activation_not_found("x", &["a".into(), "b".into()]);
        let (_, _, body) = json_of(e.into_response()).await;
        assert_eq!(body["error"]["code"], "activation_not_found");
        assert_eq!(
            body["error"]["message"],
            "no activation named \"x\"; activations: a, b"
        );
    }

    #[test]
    fn the_no_token_message_says_what_to_do() {
        let m = Error::NoToken { min: 16 }.to_string();
        assert!(m.contains("ATTENTIVE_SYNC_SERVER_TOKEN"), "{m}");
        assert!(m.contains("--token-file"), "{m}");
    }
}
