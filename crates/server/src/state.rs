//! What every request handler shares: the project, the token and sessions, the runs going on,
//! the metrics, and read connections to the state database.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use runner::Project;
use state_store::StateStore;

use crate::auth::{ServerToken, Sessions};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::runs::Registry;

/// How the server behaves (from `serve`'s flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Add `Secure` to the session cookie (the server is behind https).
    pub secure_cookies: bool,
    /// `/metrics` asks for the bearer token too.
    pub metrics_require_token: bool,
    /// A scheduled run starts up to this long after its due time (random), so that many
    /// activations due at once do not all start in the same instant.
    pub jitter: Duration,
    /// Contacts delivered at once per run (see `attentive-sync run --max-in-flight`).
    pub max_in_flight: usize,
    /// Contacts cached as not found are checked again after this long.
    pub recheck_after: Duration,
    /// How long a graceful stop waits for runs to commit what is in flight.
    pub shutdown_timeout: Duration,
    /// After the runs, how long open connections get to finish their requests.
    pub shutdown_grace: Duration,
    /// Connections served at once; one more is closed at once.
    pub max_connections: usize,
    /// A client must send a request's headers within this long (also how long an idle
    /// keep-alive connection stays open).
    pub header_timeout: Duration,
    /// A handler answering later than this answers 503 `request_timeout`.
    pub request_timeout: Duration,
    /// Serve https with this certificate and key (`--tls-cert`, `--tls-key`).
    pub tls: Option<crate::tls::TlsFiles>,
    /// Requests whose `Host` is not one of these are refused (421 `host_not_allowed`):
    /// DNS rebinding cannot reach the server through another name. Empty: any host.
    pub allowed_hosts: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            secure_cookies: false,
            metrics_require_token: false,
            jitter: Duration::from_secs(5),
            max_in_flight: 16,
            recheck_after: Duration::from_secs(24 * 3600),
            shutdown_timeout: Duration::from_secs(120),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            tls: None,
            allowed_hosts: Vec::new(),
        }
    }
}

/// The server's shared state.
#[derive(Debug)]
pub struct App {
    pub project: Arc<Project>,
    pub token: ServerToken,
    pub sessions: Sessions,
    /// Failed logins and wrong bearer tokens, per client address.
    pub auth_failures: crate::auth::AuthThrottle,
    pub settings: Settings,
    pub runs: Registry,
    pub metrics: Metrics,
    pub db: Db,
    /// When each scheduled activation is next due.
    next_due: Mutex<HashMap<String, DateTime<Utc>>>,
    shutting_down: AtomicBool,
}

impl App {
    pub fn new(project: Project, token: ServerToken, settings: Settings) -> App {
        let names: Vec<String> = project.activations.keys().cloned().collect();
        App {
            db: Db::new(project.state_path.clone()),
            project: Arc::new(project),
            token,
            sessions: Sessions::default(),
            auth_failures: crate::auth::AuthThrottle::default(),
            settings,
            runs: Registry::default(),
            metrics: Metrics::new(&names),
            next_due: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// The activations' names, sorted.
    pub fn activation_names(&self) -> Vec<String> {
        self.project.activations.keys().cloned().collect()
    }

    /// The activation, or a 404 naming the ones there are.
    pub fn activation(&self, name: &str) -> Result<&runner::config::Activation, ApiError> {
        self.project
            .activations
            .get(name)
            .ok_or_else(|| ApiError::activation_not_found(name, &self.activation_names()))
    }

    pub fn next_due(&self, name: &str) -> Option<DateTime<Utc>> {
        self.next_due
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied()
    }

    pub fn set_next_due(&self, name: &str, due: Option<DateTime<Utc>>) {
        let mut map = self.next_due.lock().unwrap_or_else(PoisonError::into_inner);
        match due {
            Some(d) => map.insert(name.to_owned(), d),
            None => map.remove(name),
        };
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Refuses new runs from now on and asks every run going on to stop cleanly.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        self.runs.stop_all();
    }
}

/// Read connections at most: reads beyond this wait for one to be free rather than opening
/// more (opening a connection costs far more than a read).
const MAX_READERS: usize = 4;

/// Read connections to the state database, used on blocking threads: a read never waits for
/// a run's writes (WAL), and a run's commits never wait for the API.
#[derive(Debug, Clone)]
pub struct Db(Arc<DbInner>);

#[derive(Debug)]
struct DbInner {
    path: PathBuf,
    idle: Mutex<Vec<StateStore>>,
    /// One permit per connection that may be open; held until the blocking work ends, even
    /// when the client that asked has gone.
    permits: Arc<tokio::sync::Semaphore>,
    /// Previews (full model scans) at once; fewer than the connections, so that they never
    /// take every one (`/readyz` and the pages keep answering).
    previews: Arc<tokio::sync::Semaphore>,
    /// Activations being previewed: a second preview of one is refused, never stacked.
    previewing: Mutex<std::collections::HashSet<String>>,
}

/// Previews at once at most.
pub const MAX_PREVIEWS: usize = 2;

/// A preview's claim on its activation and on a preview slot; released when dropped.
#[derive(Debug)]
pub struct PreviewClaim {
    db: Db,
    activation: String,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for PreviewClaim {
    fn drop(&mut self) {
        self.db
            .0
            .previewing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.activation);
    }
}

impl Db {
    pub fn new(path: PathBuf) -> Db {
        Db(Arc::new(DbInner {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
            previews: Arc::new(tokio::sync::Semaphore::new(MAX_PREVIEWS)),
            previewing: Mutex::default(),
        }))
    }

    /// Claims a preview of `activation`: 409 `preview_in_progress` while one of it goes on,
    /// 429 `too_many_previews` while [`MAX_PREVIEWS`] of others do.
    pub fn claim_preview(&self, activation: &str) -> Result<PreviewClaim, ApiError> {
        let mut previewing = self
            .0
            .previewing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if previewing.contains(activation) {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                ErrorCode::PreviewInProgress,
                format!("a preview of activation {activation:?} is being computed; ask again when it is done"),
            ));
        }
        let slot = self.0.previews.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyPreviews,
                format!("{MAX_PREVIEWS} previews are being computed; ask again when one is done"),
            )
        })?;
        previewing.insert(activation.to_owned());
        Ok(PreviewClaim {
            db: self.clone(),
            activation: activation.to_owned(),
            _slot: slot,
        })
    }

    /// A read permit, for work that reads on a thread of its own (held until it ends).
    pub async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.0
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::internal(format!("the database pool is closed: {e}")))
    }

    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.0.path
    }

    /// Runs `f` with a read connection on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&StateStore) -> Result<T, ApiError> + Send + 'static,
    {
        let permit = self.permit().await?;
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            // Held by the work, not by the request: a client that gives up does not free a
            // connection while its read goes on.
            let _permit = permit;
            let store = db.take()?;
            let result = f(&store);
            db.give(store);
            result
        })
        .await
        .map_err(|e| ApiError::internal(format!("a database task failed: {e}")))?
    }

    /// An idle connection, or a new one.
    pub fn take(&self) -> Result<StateStore, ApiError> {
        let idle = self
            .0
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(s) => Ok(s),
            None => StateStore::open(&self.0.path).map_err(|e| ApiError::store(&e)),
        }
    }

    /// Returns a connection taken with [`Db::take`].
    pub fn give(&self, store: StateStore) {
        let mut idle = self.0.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_READERS {
            idle.push(store);
        }
    }
}

#[cfg(test)]
mod preview_tests {
    use super::*;

    /// Issue 13: previews never stack. A second preview of one activation is refused with
    /// 409 while the first goes on; beyond `MAX_PREVIEWS` others get 429; a claim is released
    /// when the work holding it ends.
    #[test]
    fn previews_are_refused_rather_than_stacked() {
        let db = Db::new(PathBuf::from("/nonexistent/state.db"));
        let first = db.claim_preview("vip").unwrap();
        let again = db.claim_preview("vip").unwrap_err();
        assert_eq!(
            (again.status.as_u16(), again.code),
            (409, ErrorCode::PreviewInProgress)
        );
        let other = db.claim_preview("loyalty").unwrap();
        let third = db.claim_preview("orders").unwrap_err();
        assert_eq!(
            (third.status.as_u16(), third.code),
            (429, ErrorCode::TooManyPreviews)
        );
        drop(first);
        let vip = db.claim_preview("vip").unwrap();
        drop((vip, other));
        assert!(db.claim_preview("orders").is_ok());
    }
}
