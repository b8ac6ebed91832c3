//! Activation locks: two runs of one activation never overlap.
//!
//! A lock is a row of `locks`, inserted in an IMMEDIATE transaction (so two processes cannot
//! both see the activation free). The [`ActivationLock`] owns its own connection to the file,
//! so it outlives nothing and can be moved to another thread; dropping it deletes the row if
//! the row is still its own. A row whose process is gone (`/proc/<pid>` missing, on Linux) or
//! whose heartbeat is older than the stale timeout is taken over.
//!
//! In-memory stores cannot share a database between connections, so their locks live in a
//! map inside the store, with the same rules (heartbeat staleness; the process is alive).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::{configure, now, Context, Error, Location, MemoryLocks, StateStore};

/// A lock whose heartbeat is older than this is considered abandoned and taken over.
pub const DEFAULT_LOCK_STALE_AFTER: Duration = Duration::from_secs(10 * 60);

/// An in-memory store's lock.
#[derive(Debug)]
pub(crate) struct MemoryLockEntry {
    holder: String,
    acquired_at: String,
    heartbeat: Instant,
    token: u64,
}

/// Tells in-memory locks apart, so that a lock taken over is not released by its old owner.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// The exclusive right to run one activation, released when dropped.
///
/// Call [`ActivationLock::heartbeat`] regularly (well within the stale timeout, e.g. every
/// minute) during long runs, or another process may take the lock over.
#[derive(Debug)]
pub struct ActivationLock {
    activation: String,
    holder: String,
    acquired_at: String,
    inner: Inner,
    released: bool,
}

#[derive(Debug)]
enum Inner {
    File { conn: Connection, pid: i64 },
    Memory { locks: MemoryLocks, token: u64 },
}

fn lock_map(locks: &MemoryLocks) -> MutexGuard<'_, HashMap<String, MemoryLockEntry>> {
    // A panic while holding the map cannot leave it inconsistent (single inserts/removes).
    locks.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a process with this id runs on this host. Without `/proc` (not Linux), every
/// process is assumed alive and only the heartbeat decides.
fn pid_alive(pid: i64) -> bool {
    if pid <= 0 {
        return false;
    }
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// Whether an RFC 3339 heartbeat is older than `after` (unreadable ones are).
fn heartbeat_stale(heartbeat_at: &str, after: Duration) -> bool {
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(heartbeat_at) else {
        return true;
    };
    let age = chrono::Utc::now().signed_duration_since(at);
    match age.to_std() {
        Ok(age) => age > after,
        // In the future (clock skew): fresh.
        Err(_) => false,
    }
}

/// A timestamp precise enough to tell two acquisitions apart.
fn now_precise() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl StateStore {
    /// Takes the activation's lock for `holder` (a description for people, e.g.
    /// `"run on host-1"`), or fails with [`Error::Locked`] if a live lock exists. A lock whose
    /// process is gone or whose heartbeat is older than the stale timeout
    /// ([`StateStore::set_lock_stale_after`]) is taken over.
    pub fn try_lock(&self, activation: &str, holder: &str) -> Result<ActivationLock, Error> {
        match &self.location {
            Location::File(path) => self.try_lock_file(path, activation, holder),
            Location::Memory(locks) => {
                let mut map = lock_map(locks);
                if let Some(e) = map.get(activation) {
                    if e.heartbeat.elapsed() <= self.lock_stale_after {
                        return Err(Error::Locked {
                            activation: activation.to_owned(),
                            holder: e.holder.clone(),
                            since: e.acquired_at.clone(),
                        });
                    }
                }
                let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
                let acquired_at = now_precise();
                map.insert(
                    activation.to_owned(),
                    MemoryLockEntry {
                        holder: holder.to_owned(),
                        acquired_at: acquired_at.clone(),
                        heartbeat: Instant::now(),
                        token,
                    },
                );
                Ok(ActivationLock {
                    activation: activation.to_owned(),
                    holder: holder.to_owned(),
                    acquired_at,
                    inner: Inner::Memory {
                        locks: locks.clone(),
                        token,
                    },
                    released: false,
                })
            }
        }
    }

    fn try_lock_file(
        &self,
        path: &Path,
        activation: &str,
        holder: &str,
    ) -> Result<ActivationLock, Error> {
        const A: &str = "taking an activation lock";
        let open_err = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        configure(&conn, true).map_err(open_err)?;
        let pid = i64::from(std::process::id());
        let acquired_at = now_precise();
        {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .ctx(A)?;
            let current: Option<(String, i64, String, String)> = tx
                .query_row(
                    "SELECT holder, pid, acquired_at, heartbeat_at FROM locks \
                     WHERE activation = ?1",
                    [activation],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .ctx(A)?;
            if let Some((holder, pid, since, heartbeat_at)) = current {
                if pid_alive(pid) && !heartbeat_stale(&heartbeat_at, self.lock_stale_after) {
                    return Err(Error::Locked {
                        activation: activation.to_owned(),
                        holder,
                        since,
                    });
                }
            }
            tx.execute(
                "INSERT INTO locks (activation, holder, pid, acquired_at, heartbeat_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (activation) DO UPDATE SET holder = excluded.holder, \
                 pid = excluded.pid, acquired_at = excluded.acquired_at, \
                 heartbeat_at = excluded.heartbeat_at",
                params![activation, holder, pid, acquired_at, now()],
            )
            .ctx(A)?;
            tx.commit().ctx(A)?;
        }
        Ok(ActivationLock {
            activation: activation.to_owned(),
            holder: holder.to_owned(),
            acquired_at,
            inner: Inner::File { conn, pid },
            released: false,
        })
    }
}

impl ActivationLock {
    /// The locked activation.
    pub fn activation(&self) -> &str {
        &self.activation
    }

    /// Who holds it, as given to [`StateStore::try_lock`].
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// When it was taken (RFC 3339, UTC).
    pub fn acquired_at(&self) -> &str {
        &self.acquired_at
    }

    /// Refreshes the heartbeat so the lock is not taken over as stale. Fails with
    /// [`Error::LockLost`] if it was taken over already: stop the run then.
    pub fn heartbeat(&self) -> Result<(), Error> {
        let ours = match &self.inner {
            Inner::File { conn, pid } => {
                conn.execute(
                    "UPDATE locks SET heartbeat_at = ?5 WHERE activation = ?1 AND holder = ?2 \
                     AND pid = ?3 AND acquired_at = ?4",
                    params![self.activation, self.holder, pid, self.acquired_at, now()],
                )
                .ctx("refreshing an activation lock")?
                    == 1
            }
            Inner::Memory { locks, token } => match lock_map(locks).get_mut(&self.activation) {
                Some(e) if e.token == *token => {
                    e.heartbeat = Instant::now();
                    true
                }
                _ => false,
            },
        };
        if ours {
            Ok(())
        } else {
            Err(Error::LockLost {
                activation: self.activation.clone(),
            })
        }
    }

    /// Releases the lock now, reporting failures (dropping it releases too, silently).
    /// Releasing a lock that was taken over leaves the new holder's lock alone.
    pub fn release(mut self) -> Result<(), Error> {
        self.released = true;
        self.release_inner()
    }

    fn release_inner(&self) -> Result<(), Error> {
        match &self.inner {
            Inner::File { conn, pid } => {
                conn.execute(
                    "DELETE FROM locks WHERE activation = ?1 AND holder = ?2 AND pid = ?3 \
                     AND acquired_at = ?4",
                    params![self.activation, self.holder, pid, self.acquired_at],
                )
                .ctx("releasing an activation lock")?;
            }
            Inner::Memory { locks, token } => {
                let mut map = lock_map(locks);
                if map.get(&self.activation).is_some_and(|e| e.token == *token) {
                    map.remove(&self.activation);
                }
            }
        }
        Ok(())
    }
}

impl Drop for ActivationLock {
    fn drop(&mut self) {
        if !self.released {
            // Nothing to report to in Drop; a row left behind is taken over once its process
            // is gone or its heartbeat is stale.
            let _ = self.release_inner();
        }
    }
}
