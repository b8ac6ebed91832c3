//! The SQLite state of attentive-sync: per-activation snapshots of what Attentive holds, the
//! contact existence cache, run history and per-row outcomes, and activation locks.
//!
//! This is the only crate that knows the SQL of the state; the tables are documented in
//! `docs/STATE.md`. [`StateStore`] implements [`sync_core::ports::SnapshotStore`] and behaves
//! exactly like [`sync_core::memory::MemorySnapshot`].
//!
//! Nothing secret is ever stored here.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

mod existence;
mod lock;
mod runs;
mod schema;
mod snapshot;

pub use lock::{ActivationLock, DEFAULT_LOCK_STALE_AFTER};
pub use runs::{Outcome, RunKind, RunRow, RunStatus, RunSummary};
pub use snapshot::ContactSnapshot;

/// How long a connection waits for another one's write lock before failing with "busy".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything that can go wrong in the state store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory that should hold the database could not be created.
    #[error("cannot create the directory {} for the state database", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or configured (missing permissions, not a SQLite
    /// file...).
    #[error("cannot open the state database {}", path.display())]
    Open {
        /// The database file (`:memory:` for in-memory stores).
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer attentive-sync.
    #[error(
        "the state database has schema version {found}, but this program knows versions up to \
         {supported}; use a newer attentive-sync (or another state file)"
    )]
    SchemaTooNew {
        /// The database's version (`PRAGMA user_version`).
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A migration failed; the database stays at the previous version.
    #[error("migrating the state database to schema version {version} failed")]
    Migration {
        /// The version the migration leads to.
        version: i64,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// A statement failed (I/O error, database busy for longer than [`BUSY_TIMEOUT`]...).
    #[error("state database error while {action}")]
    Sqlite {
        /// What was being done, e.g. `"recording acknowledged changes"`.
        action: &'static str,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// Another process (or another lock in this process) holds the activation.
    #[error(
        "activation `{activation}` is locked by {holder} since {since}; another run of it is \
         in progress"
    )]
    Locked {
        /// The activation.
        activation: String,
        /// Who holds it, as given to [`StateStore::try_lock`].
        holder: String,
        /// When it was taken (RFC 3339, UTC).
        since: String,
    },
    /// The lock row of an [`ActivationLock`] is gone or belongs to someone else (it was taken
    /// over as stale).
    #[error(
        "the lock on activation `{activation}` was lost (taken over by another process as stale)"
    )]
    LockLost {
        /// The activation.
        activation: String,
    },
    /// No run has this id.
    #[error("run {run_id} does not exist")]
    UnknownRun {
        /// The id asked for.
        run_id: i64,
    },
    /// A row outcome filter that is not one of [`Outcome`]'s names.
    #[error(
        "unknown row outcome {outcome:?}; expected one of: updated, unchanged, not_found, \
         rejected, failed"
    )]
    UnknownOutcome {
        /// The filter given.
        outcome: String,
    },
    /// [`StateStore::finish_run`] was given [`RunStatus::Running`].
    #[error("run {run_id} cannot finish with status `running`")]
    NotFinished {
        /// The run.
        run_id: i64,
    },
    /// A [`sync_core::plan::AttributeChange`] points outside the mapping it came with.
    #[error(
        "the change for contact {contact_key:?} refers to attribute #{index}, but the mapping \
         has {count} attributes"
    )]
    AttributeIndex {
        /// The contact of the change.
        contact_key: String,
        /// [`sync_core::plan::AttributeChange::attribute`].
        index: usize,
        /// How many attributes the mapping has.
        count: usize,
    },
    /// A number does not fit in a SQLite integer.
    #[error("{what} {value} is too large to store")]
    OutOfRange {
        /// What the number is, e.g. `"row number"`.
        what: &'static str,
        /// The number.
        value: u64,
    },
    /// The database holds something this program never writes.
    #[error("corrupt state database: {table}.{column} holds {value:?}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The column(s).
        column: &'static str,
        /// What it holds.
        value: String,
    },
}

/// Adds what was being done to a SQLite error.
trait Context<T> {
    fn ctx(self, action: &'static str) -> Result<T, Error>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn ctx(self, action: &'static str) -> Result<T, Error> {
        self.map_err(|source| Error::Sqlite { action, source })
    }
}

/// `u64` hashes and fingerprints are stored as the `i64` with the same bits.
fn u64_to_sql(v: u64) -> i64 {
    v.cast_signed()
}

/// The inverse of [`u64_to_sql`].
fn u64_from_sql(v: i64) -> u64 {
    v.cast_unsigned()
}

/// Now, as RFC 3339 UTC text with milliseconds (`2026-11-29T12:00:00.000Z`).
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Locks of in-memory stores: activation → (holder, acquired_at, heartbeat, token).
type MemoryLocks = Arc<Mutex<std::collections::HashMap<String, lock::MemoryLockEntry>>>;

/// Where the database lives, which decides how locks are taken.
#[derive(Debug)]
enum Location {
    File(PathBuf),
    Memory(MemoryLocks),
}

/// The state database. One per process and state file; cheap operations, each in its own
/// transaction. `Send`, not `Sync`: move it to the thread that uses it.
#[derive(Debug)]
pub struct StateStore {
    conn: Connection,
    location: Location,
    lock_stale_after: Duration,
}

impl StateStore {
    /// Opens (creating it and its directory if needed) the state database at `path`, applies
    /// pending migrations, and configures the connection: WAL journal, `synchronous=NORMAL`,
    /// foreign keys on, a busy timeout of [`BUSY_TIMEOUT`].
    pub fn open(path: &Path) -> Result<StateStore, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let open_err = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        configure(&conn, true).map_err(open_err)?;
        migrate(&mut conn)?;
        // Lock connections reopen the same file even if the working directory changes.
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        Ok(StateStore {
            conn,
            location: Location::File(path),
            lock_stale_after: DEFAULT_LOCK_STALE_AFTER,
        })
    }

    /// A private, empty database in memory (tests, dry runs). Its locks are in-process.
    pub fn open_in_memory() -> Result<StateStore, Error> {
        let path = PathBuf::from(":memory:");
        let open_err = |source| Error::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open_in_memory().map_err(open_err)?;
        configure(&conn, false).map_err(open_err)?;
        migrate(&mut conn)?;
        Ok(StateStore {
            conn,
            location: Location::Memory(MemoryLocks::default()),
            lock_stale_after: DEFAULT_LOCK_STALE_AFTER,
        })
    }

    /// The schema version this build reads and writes.
    pub fn supported_schema_version() -> i64 {
        schema_len()
    }

    /// The database's schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64, Error> {
        user_version(&self.conn).ctx("reading the schema version")
    }

    /// The file of a file-backed store; `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        match &self.location {
            Location::File(p) => Some(p),
            Location::Memory(_) => None,
        }
    }

    /// How old a lock's heartbeat must be before [`StateStore::try_lock`] takes it over
    /// (default [`DEFAULT_LOCK_STALE_AFTER`]).
    pub fn set_lock_stale_after(&mut self, after: Duration) {
        self.lock_stale_after = after;
    }

    /// The mapping (as JSON) the activation last ran with; `None` for an unknown activation
    /// or one that never recorded a mapping.
    pub fn activation_mapping(&self, name: &str) -> Result<Option<String>, Error> {
        self.conn
            .prepare_cached("SELECT mapping_json FROM activations WHERE name = ?1")
            .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
            .map(Option::flatten)
            .ctx("reading an activation's mapping")
    }

    /// Records the mapping (as JSON) the activation runs with, creating the activation.
    pub fn set_activation_mapping(&mut self, name: &str, json: &str) -> Result<(), Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("recording a mapping")?;
        let id = ensure_activation(&tx, name).ctx("creating an activation")?;
        tx.prepare_cached(
            "UPDATE activations SET mapping_json = ?2, mapping_updated_at = ?3 WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(rusqlite::params![id, json, now()]))
        .ctx("recording a mapping")?;
        tx.commit().ctx("recording a mapping")
    }

    /// The names of every known activation, sorted.
    pub fn activations(&self) -> Result<Vec<String>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM activations ORDER BY name")
            .ctx("listing activations")?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .ctx("listing activations")?;
        rows.collect::<Result<_, _>>().ctx("listing activations")
    }
}

fn schema_len() -> i64 {
    i64::try_from(schema::MIGRATIONS.len()).unwrap_or(i64::MAX)
}

fn configure(conn: &Connection, file: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    if file {
        // Returns the resulting mode; a file system without WAL support keeps its own mode,
        // which is still correct, only slower for concurrent readers.
        let _mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Brings the schema to the latest version, one transaction per migration.
fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let supported = schema_len();
    loop {
        let found = user_version(conn).ctx("reading the schema version")?;
        if found > supported {
            return Err(Error::SchemaTooNew { found, supported });
        }
        if found == supported {
            return Ok(());
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting a migration")?;
        // Another process may have migrated between the read above and the write lock.
        let version = user_version(&tx).ctx("reading the schema version")?;
        if version != found {
            continue;
        }
        let next = found + 1;
        let sql = usize::try_from(found)
            .ok()
            .and_then(|i| schema::MIGRATIONS.get(i))
            .ok_or(Error::SchemaTooNew { found, supported })?;
        let fail = |source| Error::Migration {
            version: next,
            source,
        };
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", next).map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
}

/// The id of an activation, if it exists.
fn activation_id(conn: &Connection, name: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM activations WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()
}

/// The id of an activation, creating it on first use.
fn ensure_activation(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    if let Some(id) = activation_id(conn, name)? {
        return Ok(id);
    }
    conn.prepare_cached("INSERT INTO activations (name) VALUES (?1)")?
        .execute([name])?;
    Ok(conn.last_insert_rowid())
}

#[cfg(test)]
mod tests;
