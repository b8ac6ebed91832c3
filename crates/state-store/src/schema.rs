//! The schema, as an ordered list of migrations.
//!
//! Migration `i` (0-based) takes the database from `PRAGMA user_version = i` to `i + 1`. Each
//! runs in its own IMMEDIATE transaction together with the `user_version` bump, so a database
//! is always at a whole version. Never edit a released migration: append a new one.
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
];
