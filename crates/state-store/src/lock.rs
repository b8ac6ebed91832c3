//! Activation locks: two runs of one activation never overlap.
//!
//! A lock is a row of `locks`, inserted in an IMMEDIATE transaction (so two processes cannot
//! both see the activation free). The [`ActivationLock`] owns its own connection to the file,
//! so it outlives nothing and can be moved to another thread; dropping it deletes the row if
//! the row is still its own.
//!
//! A lock is taken over only when its holder is gone. On Linux a row records the host and
//! the holding process's identity (boot id and start time, so a reused pid is not mistaken
//! for the holder): a lock of this host is taken over when that process no longer runs,
//! however old its heartbeat, and never while it runs. A lock of another host (a state file
//! on a shared disk), or one taken where processes cannot be inspected, is taken over when
//! its heartbeat is older than the stale timeout: its holder must heartbeat well within it
//! (the run pipeline does, from its own thread, for the whole run).
//!
//! Every heartbeat also checks that the state file is still the file the lock was taken in:
//! a file deleted or replaced under a run fails it with [`Error::Replaced`].
//!
//! In-memory stores cannot share a database between connections, so their locks live in a
//! map inside the store; their holders are in this process, so only the heartbeat decides.

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
    File {
        conn: Connection,
        pid: i64,
        path: std::path::PathBuf,
        identity: crate::FileIdentity,
    },
    Memory {
        locks: MemoryLocks,
        token: u64,
    },
}

fn lock_map(locks: &MemoryLocks) -> MutexGuard<'_, HashMap<String, MemoryLockEntry>> {
    // A panic while holding the map cannot leave it inconsistent (single inserts/removes).
    locks.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This host's name, where the system tells it.
pub(crate) fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// A process's identity on this host: the boot id and its start time (clock ticks since
/// boot), so that a pid reused by another process, or after a reboot, does not match.
/// `None` where `/proc` cannot tell (not Linux, or no such process).
pub(crate) fn process_identity(pid: i64) -> Option<String> {
    if pid <= 0 {
        return None;
    }
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses; fields after the
    // last `)` start at field 3, so the start time (field 22) is the 20th of them.
    let after = &stat[stat.rfind(')')? + 1..];
    let start = after.split_whitespace().nth(19)?;
    Some(format!("{}:{start}", boot.trim()))
}

/// Whether the holder of a lock row is gone, as far as this host can tell: `Some(true)` gone,
/// `Some(false)` alive, `None` cannot tell (another host, or no `/proc`).
fn holder_gone(host: Option<&str>, pid: i64, process: Option<&str>) -> Option<bool> {
    let here = host_name()?;
    if host? != here || process_identity(i64::from(std::process::id())).is_none() {
        return None;
    }
    Some(match (process_identity(pid), process) {
        (None, _) => true,
        (Some(now), Some(then)) => now != then,
        // A row without an identity (written before schema 2): the pid decides.
        (Some(_), None) => false,
    })
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

/// A lock of the file held by a live process, if any: `(activation, holder, since)`. Rows
/// whose holder cannot be told alive or gone count as live until their heartbeat is stale.
/// `identity`: the file has the `host` and `process` columns (schema 2 on).
pub(crate) fn live_holder(
    conn: &Connection,
    identity: bool,
) -> Result<Option<(String, String, String)>, Error> {
    const A: &str = "reading activation locks";
    let sql = if identity {
        "SELECT activation, holder, pid, acquired_at, heartbeat_at, host, process FROM locks"
    } else {
        "SELECT activation, holder, pid, acquired_at, heartbeat_at, NULL, NULL FROM locks"
    };
    let mut stmt = conn.prepare(sql).ctx(A)?;
    let mut rows = stmt.query([]).ctx(A)?;
    while let Some(r) = rows.next().ctx(A)? {
        let pid: i64 = r.get(2).ctx(A)?;
        let heartbeat_at: String = r.get(4).ctx(A)?;
        let host: Option<String> = r.get(5).ctx(A)?;
        let process: Option<String> = r.get(6).ctx(A)?;
        let gone = holder_gone(host.as_deref(), pid, process.as_deref())
            .unwrap_or_else(|| heartbeat_stale(&heartbeat_at, DEFAULT_LOCK_STALE_AFTER));
        if !gone {
            return Ok(Some((r.get(0).ctx(A)?, r.get(1).ctx(A)?, r.get(3).ctx(A)?)));
        }
    }
    Ok(None)
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
            Location::File { path, .. } => self.try_lock_file(path, activation, holder),
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
        // The lock must live in the very file this store opened.
        let identity = self.verify_identity()?;
        let pid = i64::from(std::process::id());
        let host = host_name();
        let process = process_identity(pid);
        let acquired_at = now_precise();
        {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .ctx(A)?;
            type Row = (String, i64, String, String, Option<String>, Option<String>);
            let current: Option<Row> = tx
                .query_row(
                    "SELECT holder, pid, acquired_at, heartbeat_at, host, process FROM locks \
                     WHERE activation = ?1",
                    [activation],
                    |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                        ))
                    },
                )
                .optional()
                .ctx(A)?;
            if let Some((holder, held_by, since, heartbeat_at, held_on, held_as)) = current {
                let gone = holder_gone(held_on.as_deref(), held_by, held_as.as_deref())
                    .unwrap_or_else(|| heartbeat_stale(&heartbeat_at, self.lock_stale_after));
                if !gone {
                    return Err(Error::Locked {
                        activation: activation.to_owned(),
                        holder,
                        since,
                    });
                }
            }
            tx.execute(
                "INSERT INTO locks (activation, holder, pid, acquired_at, heartbeat_at, host, \
                 process) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (activation) DO UPDATE SET holder = excluded.holder, \
                 pid = excluded.pid, acquired_at = excluded.acquired_at, \
                 heartbeat_at = excluded.heartbeat_at, host = excluded.host, \
                 process = excluded.process",
                params![activation, holder, pid, acquired_at, now(), host, process],
            )
            .ctx(A)?;
            tx.commit().ctx(A)?;
        }
        Ok(ActivationLock {
            activation: activation.to_owned(),
            holder: holder.to_owned(),
            acquired_at,
            inner: Inner::File {
                conn,
                pid,
                path: path.to_owned(),
                identity,
            },
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
    /// [`Error::LockLost`] if it was taken over already, and with [`Error::Replaced`] if the
    /// state file was deleted or replaced since the lock was taken: stop the run then.
    pub fn heartbeat(&self) -> Result<(), Error> {
        let ours = match &self.inner {
            Inner::File {
                conn,
                pid,
                path,
                identity,
            } => {
                identity.verify(path)?;
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
            Inner::File { conn, pid, .. } => {
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
