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
use crate::error::ApiError;
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
        }
    }
}

/// The server's shared state.
#[derive(Debug)]
pub struct App {
    pub project: Arc<Project>,
    pub token: ServerToken,
    pub sessions: Sessions,
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
    /// One permit per connection that may be open.
    permits: tokio::sync::Semaphore,
}

impl Db {
    pub fn new(path: PathBuf) -> Db {
        Db(Arc::new(DbInner {
            path,
            idle: Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(MAX_READERS),
        }))
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
        let _permit = self
            .0
            .permits
            .acquire()
            .await
            .map_err(|e| ApiError::internal(format!("the database pool is closed: {e}")))?;
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
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
