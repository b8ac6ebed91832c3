//! The schema, as an ordered list of migrations.
//!
//! Migration `i` (0-based) takes the database from `PRAGMA user_version = i` to `i + 1`: its
//! SQL, then its code ([`code`]) if it has some. Every pending migration runs in one IMMEDIATE
//! transaction together with the `user_version` bump, so a database is always at a whole
//! version. Never edit a released migration: append a new one.
//!
//! Every table and column is documented in `docs/STATE.md`.

/// The migrations, oldest first. `MIGRATIONS.len()` is the schema version this build writes.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
CREATE TABLE activations (
    id                 INTEGER PRIMARY KEY,
    name               TEXT    NOT NULL UNIQUE,
    mapping_json       TEXT,
    mapping_updated_at TEXT
);

CREATE TABLE snapshot_contacts (
    activation_id   INTEGER NOT NULL REFERENCES activations(id) ON DELETE CASCADE,
    contact_key     TEXT    NOT NULL,
    key_hash        INTEGER NOT NULL,
    row_fingerprint INTEGER NOT NULL,
    updated_run     INTEGER,
    updated_at      TEXT    NOT NULL,
    PRIMARY KEY (activation_id, contact_key)
) WITHOUT ROWID;

-- Covering index: loading the planner's index of one activation is a range scan of this
-- index alone, which is much narrower than the table rows.
CREATE INDEX snapshot_contacts_index
    ON snapshot_contacts (activation_id, key_hash, row_fingerprint);

CREATE TABLE snapshot_attributes (
    activation_id INTEGER NOT NULL,
    contact_key   TEXT    NOT NULL,
    attribute_key TEXT    NOT NULL,
    fingerprint   INTEGER NOT NULL,
    value_tag     TEXT    NOT NULL CHECK (value_tag IN ('b', 'i', 'n', 's')),
    value_text    TEXT    NOT NULL,
    run_id        INTEGER,
    PRIMARY KEY (activation_id, contact_key, attribute_key),
    FOREIGN KEY (activation_id, contact_key)
        REFERENCES snapshot_contacts (activation_id, contact_key) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE contact_existence (
    destination  TEXT NOT NULL,
    contact_kind TEXT NOT NULL,
    contact_key  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('exists', 'not_found')),
    checked_at   TEXT NOT NULL,
    PRIMARY KEY (destination, contact_kind, contact_key)
) WITHOUT ROWID;

CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    activation_id INTEGER NOT NULL REFERENCES activations(id) ON DELETE CASCADE,
    kind          TEXT    NOT NULL CHECK (kind IN ('plan', 'run')),
    status        TEXT    NOT NULL
                  CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'interrupted')),
    started_at    TEXT    NOT NULL,
    finished_at   TEXT,
    counts_json   TEXT,
    error         TEXT
);

CREATE INDEX runs_by_activation ON runs (activation_id, id);
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';

CREATE TABLE run_rows (
    run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    row_number      INTEGER NOT NULL,
    contact_key     TEXT,
    outcome         TEXT    NOT NULL
                    CHECK (outcome IN ('updated', 'unchanged', 'not_found', 'rejected', 'failed')),
    code            TEXT,
    message         TEXT,
    attributes_json TEXT,
    PRIMARY KEY (run_id, row_number)
) WITHOUT ROWID;

CREATE INDEX run_rows_by_outcome ON run_rows (run_id, outcome, row_number);

CREATE TABLE locks (
    activation   TEXT    PRIMARY KEY,
    holder       TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    acquired_at  TEXT    NOT NULL,
    heartbeat_at TEXT    NOT NULL
);
"#,
    // 2: who holds a lock, precisely enough to tell a live holder from a reused pid: the host
    // and the process's identity on it (boot id and start time). A lock is taken over only when
    // its holder is gone; only locks of other hosts fall back on the heartbeat's age.
    r#"
ALTER TABLE locks ADD COLUMN host TEXT;
ALTER TABLE locks ADD COLUMN process TEXT;
"#,
    // 3: attributes in doubt: sent by a run whose answer was never recorded (the process was
    // killed mid-write, or the write failed after its retries). Marked before each write is
    // sent and settled by its answer; the planner sends them again until then.
    r#"
CREATE TABLE in_doubt (
    activation_id INTEGER NOT NULL REFERENCES activations(id) ON DELETE CASCADE,
    contact_key   TEXT    NOT NULL,
    attribute_key TEXT    NOT NULL,
    key_hash      INTEGER NOT NULL,
    value_tag     TEXT    NOT NULL CHECK (value_tag IN ('b', 'i', 'n', 's')),
    value_text    TEXT    NOT NULL,
    run_id        INTEGER,
    sent_at       TEXT    NOT NULL,
    PRIMARY KEY (activation_id, contact_key, attribute_key)
) WITHOUT ROWID;
"#,
    // 4: which Attentive account each destination's existence cache and snapshots belong to,
    // so that a state file is never used against another account by mistake.
    r#"
CREATE TABLE destination_accounts (
    destination  TEXT PRIMARY KEY,
    company_id   TEXT NOT NULL,
    company_name TEXT,
    base_url     TEXT NOT NULL,
    bound_at     TEXT NOT NULL
);
"#,
    // 5: bulk jobs. A job and the records it carries are recorded (and their attributes
    // marked in doubt, *pending*) before it is submitted; its result settles each record.
    // Rows and runs can be `pending` meanwhile: `runs` and `run_rows` are rebuilt with the
    // wider CHECKs (SQLite cannot alter a CHECK), keeping every row.
    r#"
CREATE TABLE runs_new (
    id            INTEGER PRIMARY KEY,
    activation_id INTEGER NOT NULL REFERENCES activations(id) ON DELETE CASCADE,
    kind          TEXT    NOT NULL CHECK (kind IN ('plan', 'run')),
    status        TEXT    NOT NULL
                  CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'interrupted',
                                    'pending')),
    started_at    TEXT    NOT NULL,
    finished_at   TEXT,
    counts_json   TEXT,
    error         TEXT
);
INSERT INTO runs_new (id, activation_id, kind, status, started_at, finished_at, counts_json, error)
    SELECT id, activation_id, kind, status, started_at, finished_at, counts_json, error FROM runs;

CREATE TABLE run_rows_new (
    run_id          INTEGER NOT NULL REFERENCES runs_new(id) ON DELETE CASCADE,
    row_number      INTEGER NOT NULL,
    contact_key     TEXT,
    outcome         TEXT    NOT NULL
                    CHECK (outcome IN ('updated', 'unchanged', 'not_found', 'rejected', 'failed',
                                       'pending')),
    code            TEXT,
    message         TEXT,
    attributes_json TEXT,
    PRIMARY KEY (run_id, row_number)
) WITHOUT ROWID;
INSERT INTO run_rows_new
    SELECT run_id, row_number, contact_key, outcome, code, message, attributes_json FROM run_rows;

DROP TABLE run_rows;
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;
ALTER TABLE run_rows_new RENAME TO run_rows;
CREATE INDEX runs_by_activation ON runs (activation_id, id);
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';
CREATE INDEX run_rows_by_outcome ON run_rows (run_id, outcome, row_number);

CREATE TABLE bulk_jobs (
    id            INTEGER PRIMARY KEY,
    activation_id INTEGER NOT NULL REFERENCES activations(id) ON DELETE CASCADE,
    run_id        INTEGER NOT NULL,
    remote_id     TEXT,
    state         TEXT    NOT NULL CHECK (state IN ('submitting', 'pending', 'settled')),
    remote_status TEXT,
    records       INTEGER NOT NULL,
    created_at    TEXT    NOT NULL,
    submitted_at  TEXT,
    polls         INTEGER NOT NULL DEFAULT 0,
    polled_at     TEXT,
    settled_at    TEXT,
    message       TEXT
);
CREATE INDEX bulk_jobs_open ON bulk_jobs (activation_id, id) WHERE state != 'settled';
CREATE INDEX bulk_jobs_by_run ON bulk_jobs (run_id, id);

CREATE TABLE bulk_records (
    job_id          INTEGER NOT NULL REFERENCES bulk_jobs(id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    row_number      INTEGER NOT NULL,
    contact_kind    TEXT    NOT NULL CHECK (contact_kind IN ('email', 'phone')),
    contact_key     TEXT    NOT NULL,
    key_hash        INTEGER NOT NULL,
    row_fingerprint INTEGER NOT NULL,
    attributes_json TEXT    NOT NULL,
    outcome         TEXT    CHECK (outcome IN ('updated', 'rejected', 'failed')),
    message         TEXT,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

ALTER TABLE in_doubt ADD COLUMN job_id INTEGER;
ALTER TABLE in_doubt ADD COLUMN fingerprint INTEGER;
"#,
    // 6: the compact snapshot. One row per contact and activation (`snapshot`), its values
    // packed into a JSON array by attribute slot (`snapshot_keys`), value fingerprints
    // recomputed from the values instead of stored, times in milliseconds. The rows of
    // `snapshot_contacts` and `snapshot_attributes` are moved by `compact::migrate`, which
    // then drops the two tables and creates views of the same names for people.
    r#"
CREATE TABLE snapshot_keys (
    activation_id INTEGER NOT NULL REFERENCES activations(id) ON DELETE CASCADE,
    slot          INTEGER NOT NULL,
    attribute_key TEXT    NOT NULL,
    PRIMARY KEY (activation_id, slot),
    UNIQUE (activation_id, attribute_key)
) WITHOUT ROWID;

CREATE TABLE snapshot (
    id              INTEGER PRIMARY KEY,
    activation_id   INTEGER NOT NULL REFERENCES activations(id) ON DELETE CASCADE,
    key_hash        INTEGER NOT NULL,
    row_fingerprint INTEGER NOT NULL,
    updated_run     INTEGER,
    updated_at      INTEGER NOT NULL,
    contact_key     TEXT    NOT NULL,
    attribute_runs,
    attributes      TEXT    NOT NULL
);

-- The planner's index load is a range scan of this index alone; finding a contact's row by
-- its key hash uses it too.
CREATE INDEX snapshot_index ON snapshot (activation_id, key_hash, row_fingerprint);
"#,
    // 7: alerts and notifications. New tables only: the state of each alert rule per activation, which runs
    // had their alerts evaluated (runs that had finished before this migration count as
    // evaluated, so upgrading sends nothing about old runs), the notification outbox and one
    // delivery per notification and endpoint with its attempts.
    r#"
CREATE TABLE alert_states (
    activation   TEXT    NOT NULL,
    rule         TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('ok', 'firing')),
    since        TEXT    NOT NULL,
    run_id       INTEGER,
    message      TEXT,
    evaluated_at TEXT    NOT NULL,
    PRIMARY KEY (activation, rule)
) WITHOUT ROWID;

CREATE TABLE alert_evaluations (
    run_id       INTEGER PRIMARY KEY,
    evaluated_at TEXT    NOT NULL
);
INSERT INTO alert_evaluations (run_id, evaluated_at)
    SELECT id, coalesce(finished_at, started_at) FROM runs
    WHERE status NOT IN ('running', 'pending');

CREATE TABLE notifications (
    id           INTEGER PRIMARY KEY,
    activation   TEXT,
    event        TEXT    NOT NULL,
    run_id       INTEGER,
    rule         TEXT,
    payload_json TEXT    NOT NULL,
    created_at   TEXT    NOT NULL
);

CREATE TABLE notification_deliveries (
    id              INTEGER PRIMARY KEY,
    notification_id INTEGER NOT NULL REFERENCES notifications(id) ON DELETE CASCADE,
    endpoint        TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    last_attempt_at TEXT,
    http_status     INTEGER,
    error           TEXT,
    delivered_at    TEXT
);
CREATE INDEX notification_deliveries_due
    ON notification_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notification_deliveries_by_notification
    ON notification_deliveries (notification_id);
"#,
];

/// A migration's code, run after its SQL in the same transaction.
pub(crate) type MigrationCode = fn(&rusqlite::Connection) -> Result<(), crate::Error>;

/// Code a migration runs after its SQL, in the same transaction, by the version it leads to.
pub(crate) fn code(version: i64) -> Option<MigrationCode> {
    match version {
        6 => Some(crate::compact::migrate),
        _ => None,
    }
}

/// The views of migration 6: the snapshot as the tables of schemas 1 to 5 showed it, with
/// values as text, for the `sqlite3` shell (value fingerprints are not stored: `contacts show`
/// computes them).
pub(crate) const SNAPSHOT_VIEWS: &str = r#"
CREATE VIEW snapshot_contacts AS
SELECT activation_id, contact_key, key_hash, row_fingerprint, updated_run,
       strftime('%Y-%m-%dT%H:%M:%fZ', updated_at / 1000.0, 'unixepoch') AS updated_at
FROM snapshot;

CREATE VIEW snapshot_attributes AS
SELECT s.activation_id, s.contact_key, k.attribute_key,
       substr(j.value, 1, 1) AS value_tag,
       substr(j.value, 2)    AS value_text,
       CASE typeof(s.attribute_runs)
           WHEN 'text' THEN json_extract(s.attribute_runs, '$[' || j.key || ']')
           ELSE s.attribute_runs
       END AS run_id
FROM snapshot AS s
JOIN json_each(s.attributes) AS j
JOIN snapshot_keys AS k ON k.activation_id = s.activation_id AND k.slot = j.key
WHERE j.type = 'text';
"#;
