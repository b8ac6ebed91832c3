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

mod account;
mod alerts;
mod bulk;
mod commit;
mod compact;
mod doubt;
mod existence;
mod lock;
mod notifications;
mod packed;
mod runs;
mod schema;
mod snapshot;

pub use account::AccountBinding;
pub use alerts::{AlertBatch, AlertState, AlertStateRow, AlertUpdate, AlertsRecorded};
pub use bulk::{JobRecord, JobRecordIn, JobState, JobSummary, RecordResult};
pub use commit::CommitBatch;
pub use lock::{ActivationLock, DEFAULT_LOCK_STALE_AFTER};
pub use notifications::{AttemptResult, ClaimedDelivery, Delivery, DeliveryState, NewNotification};
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
    /// The folder of the database cannot be written (read-only file system, permissions), so
    /// the database cannot be created or written.
    #[error(
        "the state database {} cannot be created or written: {} is not writable; point \
         `[state] path` at a writable place",
        path.display(),
        what.display()
    )]
    NotWritable {
        /// The database file.
        path: PathBuf,
        /// What is not writable: the file, or its folder.
        what: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The file is a SQLite database, but not an attentive-sync state file.
    #[error(
        "{} is not an attentive-sync state database (it holds other tables: {tables}); \
         point `[state] path` at a new file or an attentive-sync state file",
        path.display()
    )]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// Some of its tables, for people.
        tables: String,
    },
    /// The state file was deleted or replaced while this process had it open: what it writes
    /// would go to a file nobody reads, and another process may be using the new one.
    #[error(
        "the state database {} was deleted or replaced while in use; stopping (nothing more is \
         sent; the next run starts from the file now at that path)",
        path.display()
    )]
    Replaced {
        /// The database file.
        path: PathBuf,
    },
    /// A read-only opening found a database that needs a migration first.
    #[error(
        "the state database {} has schema version {found} and needs migrating to {supported}, \
         which needs write access; run `attentive-sync run` once (or make it writable)",
        path.display()
    )]
    NeedsMigration {
        /// The database file.
        path: PathBuf,
        /// The database's version.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
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
    /// The file needs migrating, but another process holds one of its activations: the
    /// migration needs the file to itself.
    #[error(
        "the state database has schema version {found} and needs migrating to {supported}, but \
         activation `{activation}` is locked by {holder} since {since}; stop that process (or \
         let its run end) and start again"
    )]
    MigrationBlocked {
        /// The database's version.
        found: i64,
        /// The version this build migrates to.
        supported: i64,
        /// A locked activation.
        activation: String,
        /// Who holds it.
        holder: String,
        /// Since when (RFC 3339, UTC).
        since: String,
    },
    /// A migration failed; the database stays at the version it had.
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
         rejected, failed, pending"
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
    /// No notification delivery has this id.
    #[error("notification delivery {id} does not exist")]
    UnknownDelivery {
        /// The id given.
        id: i64,
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

/// Which file a path named when it was opened (device and inode on Unix), so that a file
/// deleted or replaced under a running process is noticed instead of written into the void.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> std::io::Result<FileIdentity> {
        let meta = std::fs::metadata(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            Ok(FileIdentity {
                dev: meta.dev(),
                ino: meta.ino(),
            })
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            Ok(FileIdentity { dev: 0, ino: 0 })
        }
    }

    /// Fails with [`Error::Replaced`] unless `path` still names this file.
    pub(crate) fn verify(&self, path: &Path) -> Result<(), Error> {
        match FileIdentity::of(path) {
            Ok(now) if now == *self => Ok(()),
            _ => Err(Error::Replaced {
                path: path.to_owned(),
            }),
        }
    }
}

/// Locks of in-memory stores: activation → (holder, acquired_at, heartbeat, token).
type MemoryLocks = Arc<Mutex<std::collections::HashMap<String, lock::MemoryLockEntry>>>;

/// Where the database lives, which decides how locks are taken.
#[derive(Debug)]
enum Location {
    File {
        path: PathBuf,
        identity: FileIdentity,
    },
    Memory(MemoryLocks),
}

/// The state database. One per process and state file; cheap operations, each in its own
/// transaction. `Send`, not `Sync`: move it to the thread that uses it.
#[derive(Debug)]
pub struct StateStore {
    conn: Connection,
    location: Location,
    lock_stale_after: Duration,
    /// The activation whose index this connection last loaded, if it had no attribute in
    /// doubt then: reading its contacts' attributes skips looking for doubts. Cleared when this
    /// connection marks any.
    doubt_free: std::cell::RefCell<Option<String>>,
    /// Attribute keys by slot, per activation id, as last read ([`snapshot::slot_keys`]).
    slot_keys: std::cell::RefCell<std::collections::HashMap<i64, Vec<String>>>,
}

impl StateStore {
    /// Opens (creating it and its directory if needed) the state database at `path`, applies
    /// pending migrations, and configures the connection: WAL journal, `synchronous=NORMAL`,
    /// foreign keys on, a busy timeout of [`BUSY_TIMEOUT`].
    pub fn open(path: &Path) -> Result<StateStore, Error> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags)
            .and_then(|c| configure(&c, true).map(|()| c))
            .map_err(|source| open_failure(path, dir, source))?;
        refuse_foreign(&conn, path)?;
        migrate(&mut conn)?;
        StateStore::on_file(conn, path)
    }

    /// Opens an existing state database for reading only (`plan`, `runs`, `contacts show`,
    /// `validate`): never creates a file, works on a read-only file or file system, and
    /// refuses a file that is not an attentive-sync state database or is from a newer
    /// version. `Ok(None)` when there is no file at `path` (nothing has run yet). A database
    /// that needs a migration is migrated if it can be written, else refused with
    /// [`Error::NeedsMigration`].
    pub fn open_existing_read_only(path: &Path) -> Result<Option<StateStore>, Error> {
        if !path.exists() {
            return Ok(None);
        }
        let (conn, found) = open_read_only(path)?;
        let supported = schema_len();
        if found < supported {
            drop(conn);
            let writable = std::fs::OpenOptions::new().write(true).open(path).is_ok();
            return if writable {
                StateStore::open(path).map(Some)
            } else {
                Err(Error::NeedsMigration {
                    path: path.to_owned(),
                    found,
                    supported,
                })
            };
        }
        conn.set_prepared_statement_cache_capacity(64);
        StateStore::on_file(conn, path).map(Some)
    }

    /// Checks, without changing anything, that a run could use the state database at `path`:
    /// a SQLite file holding an attentive-sync state of a version this build knows (or no
    /// file yet), writable, in a writable folder. What `validate` reports.
    pub fn check_file(path: &Path) -> Result<FileCheck, Error> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !path.exists() {
            // The folder may not exist yet either: the nearest one that does must be writable.
            let mut existing = dir;
            while !existing.exists() {
                match existing.parent() {
                    Some(p) if !p.as_os_str().is_empty() => existing = p,
                    _ => {
                        existing = Path::new(".");
                        break;
                    }
                }
            }
            writable(path, existing)?;
            return Ok(FileCheck::WillBeCreated);
        }
        let (_conn, found) = open_read_only(path)?;
        let supported = schema_len();
        writable(path, dir)?;
        Ok(if found == supported {
            FileCheck::Ready {
                schema_version: found,
            }
        } else {
            FileCheck::WillMigrate {
                from: found,
                to: supported,
            }
        })
    }

    fn on_file(conn: Connection, path: &Path) -> Result<StateStore, Error> {
        // Lock connections reopen the same file even if the working directory changes.
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let identity =
            FileIdentity::of(&path).map_err(|_| Error::Replaced { path: path.clone() })?;
        Ok(StateStore {
            conn,
            location: Location::File { path, identity },
            lock_stale_after: DEFAULT_LOCK_STALE_AFTER,
            doubt_free: Default::default(),
            slot_keys: Default::default(),
        })
    }

    /// Checks that the state file is still the file this store opened (not deleted or
    /// replaced since); [`Error::Replaced`] if not. Writers call it before each commit, so
    /// nothing is recorded into a file nobody will read. Always `Ok` in memory.
    pub fn verify_file(&self) -> Result<(), Error> {
        self.verify_identity().map(|_| ())
    }

    pub(crate) fn verify_identity(&self) -> Result<FileIdentity, Error> {
        match &self.location {
            Location::File { path, identity } => identity.verify(path).map(|()| *identity),
            Location::Memory(_) => Ok(FileIdentity { dev: 0, ino: 0 }),
        }
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
            doubt_free: Default::default(),
            slot_keys: Default::default(),
        })
    }

    /// Runs `f` in one IMMEDIATE transaction with the id of `activation` (created on first use)
    /// and the time now, and commits if it succeeds (`action` names it in errors).
    pub(crate) fn write_activation<T>(
        &mut self,
        action: &'static str,
        activation: &str,
        f: impl FnOnce(&rusqlite::Transaction<'_>, i64, &str) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(action)?;
        let id = ensure_activation(&tx, activation).ctx(action)?;
        let out = f(&tx, id, &now())?;
        tx.commit().ctx(action)?;
        Ok(out)
    }

    /// Creates an empty state file at an older schema `version` (the first `version`
    /// migrations), as an earlier build would have: for tests of the migrations.
    #[doc(hidden)]
    pub fn create_at_schema(path: &Path, version: i64) -> Result<(), Error> {
        let open_err = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        let count = usize::try_from(version).unwrap_or(0);
        for (i, sql) in schema::MIGRATIONS.iter().take(count).enumerate() {
            let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
            conn.execute_batch(sql)
                .map_err(|source| Error::Migration { version, source })?;
        }
        conn.pragma_update(None, "user_version", version)
            .map_err(open_err)
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
            Location::File { path, .. } => Some(path),
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

/// Why a database could not be opened, for people: an unwritable folder is named as such
/// (SQLite only says "unable to open database file").
fn open_failure(path: &Path, dir: &Path, source: rusqlite::Error) -> Error {
    let cannot_open = matches!(
        source.sqlite_error_code(),
        Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly)
    );
    if cannot_open {
        if let Err(e) = writable(path, dir) {
            return e;
        }
    }
    Error::Open {
        path: path.to_owned(),
        source,
    }
}

/// Whether the database at `path` (if it exists) and its folder `dir` (SQLite creates its
/// `-wal` and `-shm` files there) can be written. Changes nothing: the file is opened for
/// writing without truncation, and a probe file in the folder is created and removed.
fn writable(path: &Path, dir: &Path) -> Result<(), Error> {
    let not_writable = |what: &Path| {
        let path = path.to_owned();
        let what = what.to_owned();
        move |source| Error::NotWritable { path, what, source }
    };
    if path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(not_writable(path))?;
    }
    let probe = dir.join(format!(".attentive-sync-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(not_writable(dir))?;
    std::fs::remove_file(&probe).map_err(not_writable(dir))
}

/// What [`StateStore::check_file`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileCheck {
    /// No file yet; its folder is writable, so the first run creates it.
    WillBeCreated,
    /// A state database of this version that can be written.
    Ready {
        /// Its schema version.
        schema_version: i64,
    },
    /// An older state database that the next run migrates.
    WillMigrate {
        /// Its schema version.
        from: i64,
        /// The version it will have.
        to: i64,
    },
}

/// Opens an existing database read-only and reads its schema version, refusing a file that
/// is not SQLite, a foreign SQLite database and one from a newer version.
fn open_read_only(path: &Path) -> Result<(Connection, i64), Error> {
    let open_err = |source| Error::Open {
        path: path.to_owned(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    // Reading the schema is what tells a SQLite file from anything else.
    let found = user_version(&conn).map_err(open_err)?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(open_err)?;
    refuse_foreign(&conn, path)?;
    let supported = schema_len();
    if found > supported {
        return Err(Error::SchemaTooNew { found, supported });
    }
    Ok((conn, found))
}

/// Refuses a SQLite database that holds tables but was never an attentive-sync state file
/// (schema version 0), instead of migrating into it (and printing its SQL in the error).
fn refuse_foreign(conn: &Connection, path: &Path) -> Result<(), Error> {
    let open_err = |source| Error::Open {
        path: path.to_owned(),
        source,
    };
    if user_version(conn).map_err(open_err)? != 0 {
        return Ok(());
    }
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name LIMIT 6")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(open_err)?;
    if tables.is_empty() {
        return Ok(());
    }
    let mut list: Vec<String> = tables.iter().take(5).map(|t| format!("`{t}`")).collect();
    if tables.len() > 5 {
        list.push("...".to_owned());
    }
    Err(Error::Foreign {
        path: path.to_owned(),
        tables: list.join(", "),
    })
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
        // Checkpoint every 32 MiB of log instead of 4 MiB: a page that many commits touch is
        // copied into the database once per checkpoint, and there are eight times fewer
        // (acknowledgements commit twice as fast). The log is cut back to 64 MiB after one.
        conn.pragma_update(None, "wal_autocheckpoint", 8192)?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Brings the schema to the latest version: every pending migration in one transaction, so
/// that a file is either untouched or at the latest version. Refused while another process
/// holds an activation lock of the file (a run or a server may be using it).
fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let supported = schema_len();
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
    let found = user_version(&tx).ctx("reading the schema version")?;
    if found > supported {
        return Err(Error::SchemaTooNew { found, supported });
    }
    if found == supported {
        return Ok(());
    }
    if found >= 1 {
        if let Some((activation, holder, since)) = lock::live_holder(&tx, found >= 2)? {
            return Err(Error::MigrationBlocked {
                found,
                supported,
                activation,
                holder,
                since,
            });
        }
    }
    for version in found + 1..=supported {
        let fail = |source| Error::Migration { version, source };
        let sql = usize::try_from(version - 1)
            .ok()
            .and_then(|i| schema::MIGRATIONS.get(i))
            .ok_or(Error::SchemaTooNew { found, supported })?;
        tx.execute_batch(sql).map_err(fail)?;
        if let Some(code) = schema::code(version) {
            code(&tx).map_err(|e| match e {
                Error::Sqlite { source, .. } => Error::Migration { version, source },
                other => other,
            })?;
        }
    }
    let fail = |source| Error::Migration {
        version: supported,
        source,
    };
    tx.pragma_update(None, "user_version", supported)
        .map_err(fail)?;
    tx.commit().map_err(fail)
}

/// What [`StateStore::vacuum`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vacuumed {
    /// The database's size before, in bytes (pages in use and free).
    pub before: u64,
    /// After.
    pub after: u64,
}

impl StateStore {
    /// Rebuilds the database file without its free pages (`VACUUM`), holding every
    /// activation's lock meanwhile, so that no run of this or another process writes during
    /// it ([`Error::Locked`] when one is running). Readers of other processes make it wait up
    /// to [`BUSY_TIMEOUT`].
    pub fn vacuum(&mut self) -> Result<Vacuumed, Error> {
        const A: &str = "vacuuming the state database";
        let holder = format!("attentive-sync state vacuum (pid {})", std::process::id());
        let mut locks = Vec::new();
        for activation in self.activations()? {
            locks.push(self.try_lock(&activation, &holder)?);
        }
        let size = |conn: &Connection| -> Result<u64, Error> {
            let pages: i64 = conn
                .pragma_query_value(None, "page_count", |r| r.get(0))
                .ctx(A)?;
            let page: i64 = conn
                .pragma_query_value(None, "page_size", |r| r.get(0))
                .ctx(A)?;
            Ok(u64::try_from(pages.saturating_mul(page)).unwrap_or(0))
        };
        let before = size(&self.conn)?;
        self.conn.execute_batch("VACUUM").ctx(A)?;
        if self.path().is_some() {
            // Hand the space back to the file system now, not at the next checkpoint.
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .ctx(A)?;
        }
        let after = size(&self.conn)?;
        drop(locks);
        Ok(Vacuumed { before, after })
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
