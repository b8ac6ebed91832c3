//! PostgreSQL models: the rows of a SQL query, streamed through a server-side cursor (see
//! [`PostgresSource`]).

// `lib.rs` does not re-export this module yet; until it does (`pub use
// crate::postgres::{redact_url, PostgresSource};`), its public items are unreachable and unused
// outside the tests.

use std::collections::HashSet;
use std::fmt::{self, LowerExp, Write as _};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use postgres::config::{Host, SslMode};
use postgres::error::{DbError, ErrorPosition, SqlState};
use postgres::types::{FromSql, Kind, Type};
use postgres::{Client, Config, NoTls, Row};
use sync_core::ports::ModelSource;
use sync_core::value::{SourceRow, Value};

use tls::{TlsMode, TlsOptions, Verify, TLS_MODES};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::Error;
use crate::float::{self, Float};
use crate::{set_defect, set_text};

mod tls;

/// The name of the server-side cursor the rows are fetched from.
const CURSOR: &str = "attentive_sync_model";

/// Rows asked for by the first `FETCH`, before the width of a row is known.
const FIRST_FETCH_ROWS: u64 = 1_000;
/// The most rows one `FETCH` asks for.
const MAX_FETCH_ROWS: u64 = 10_000;
/// The fewest rows one `FETCH` asks for, however wide the rows are.
const MIN_FETCH_ROWS: u64 = 16;
/// About how many bytes of rows one `FETCH` brings into memory (at most three batches are in
/// memory at once: one being fetched, one waiting, one being handed out).
const FETCH_BYTES: u64 = 4 * 1024 * 1024;
/// What a fetched row costs besides its values (the row, its value ranges), per column.
const ROW_OVERHEAD_PER_COLUMN: u64 = 24;

/// How long connecting may take when the `url` sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The column types a model query may return, as they are named in messages.
const SUPPORTED_TYPES: &str = "text, varchar, char, name, citext, smallint, integer, bigint, \
     numeric, real, double precision, boolean, date, timestamp, timestamptz, uuid, json, jsonb";

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 0001-01-01 (day 1 of the common era) to 2000-01-01.
const PG_EPOCH_DAYS_FROM_CE: i32 = 730_120;

/// A PostgreSQL model: the rows of one query, streamed.
///
/// [`PostgresSource::open`] connects, starts a read-only transaction and has the server
/// describe the query, so its columns and their types are known (and checked) before any row
/// is read. It then declares a server-side cursor for the query and fetches the first rows;
/// the next rows are fetched from it on a thread of the source's own, in batches of at most
/// 10,000 (fewer when rows are wide: a batch holds about 4 MiB), one batch ahead of the rows
/// handed out, so the server produces the next rows while these are decoded, and memory stays
/// flat however many rows the query returns. [`SourceRow::number`] is the record number
/// (1-based).
///
/// Values map from the column's type, exactly (never through a float unless the column is
/// one):
///
/// | PostgreSQL type | value |
/// |---|---|
/// | `text`, `varchar`, `char`, `name`, `citext` | [`Value::Text`] (`char` keeps its padding) |
/// | `smallint`, `integer`, `bigint` | [`Value::Int`] |
/// | `numeric` | [`Value::Number`], its decimal text as PostgreSQL prints it (`1.50`); `NaN` and `±Infinity` are [`Value::Unsupported`] |
/// | `real`, `double precision` | [`Value::Number`], the shortest text that reads back as the same float (`0.1`, `-0`, `1e300`); `NaN` and `±Infinity` are [`Value::Unsupported`] |
/// | `boolean` | [`Value::Bool`] |
/// | `date` | [`Value::Date`]; `±infinity` and years outside 1–9999 are [`Value::Unsupported`] |
/// | `timestamp` (taken as UTC), `timestamptz` | [`Value::Timestamp`] in UTC: `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`; `±infinity` and years outside 1–9999 are [`Value::Unsupported`] |
/// | `uuid` | [`Value::Text`], lower-case and hyphenated |
/// | `json`, `jsonb` | like a JSONL value: a string is [`Value::Text`], a number [`Value::Int`] or [`Value::Number`] (digits as written), `true`/`false` [`Value::Bool`], `null` [`Value::Null`], an array or an object [`Value::Unsupported`] |
/// | SQL `NULL` | [`Value::Null`] |
///
/// A domain maps as its base type. A column of any other type makes [`PostgresSource::open`]
/// fail, naming the column and its type.
///
/// The password in the `url` never appears in messages or in `Debug` output: the source is
/// named by [`redact_url`].
///
/// TLS follows the `url`'s `sslmode`, as libpq reads it (rustls does the TLS):
///
/// | `sslmode` | TLS | the server's certificate |
/// |---|---|---|
/// | `disable` | never | — |
/// | `allow` | only when the server refuses the connection without | not checked |
/// | `prefer` (the default) | when the server offers it (without, when it offers none or the handshake fails) | not checked |
/// | `require` | always | not checked; without `sslrootcert` the connection is encrypted but the server could be anyone (with `sslrootcert`, checked as by `verify-ca`, as libpq does) |
/// | `verify-ca` | always | signed by a CA of `sslrootcert` |
/// | `verify-full` | always | signed by a CA of `sslrootcert`, and issued for the host of the `url` |
///
/// `sslrootcert` is the absolute path of a PEM file of CA certificates; without it,
/// `verify-ca` and `verify-full` trust the Mozilla roots bundled with attentive-sync. TLS is
/// not used over Unix sockets.
///
/// The client is synchronous (it drives its own small runtime): call it from a plain thread or
/// `spawn_blocking`, never directly on an async runtime's worker.
pub struct PostgresSource {
    /// The `url` with its password hidden, for messages.
    name: String,
    /// The password, to scrub from messages that come from the server or the client library.
    secret: Option<String>,
    columns: Vec<String>,
    types: Vec<ColumnType>,
    /// Each column's type as named in messages.
    type_names: Vec<String>,
    /// The batches the fetching thread fetched; `None` once the rows are all read, or reading
    /// failed.
    receiver: Option<Receiver<Fetched>>,
    /// The thread that owns the connection and fetches the rows.
    thread: Option<JoinHandle<()>>,
    /// The rows of the last `FETCH` not yet handed out.
    batch: std::vec::IntoIter<Row>,
    /// The number of the last record handed out.
    record: u64,
    /// The server process serving this source, as `pg_stat_activity` shows it.
    backend_pid: i32,
    /// Why reading stopped, when it failed: every later read fails the same way.
    failure: Option<(io::ErrorKind, String)>,
}

impl fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSource")
            .field("name", &self.name)
            .field("columns", &self.columns)
            .field("backend_pid", &self.backend_pid)
            .field("record", &self.record)
            .field("open", &self.receiver.is_some())
            .finish_non_exhaustive()
    }
}

/// How the values of one column are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnType {
    Text,
    Int2,
    Int4,
    Int8,
    Numeric,
    Float4,
    Float8,
    Bool,
    Date,
    /// `timestamp` and `timestamptz`: both are microseconds from 2000-01-01 UTC on the wire.
    Timestamp,
    Uuid,
    Json,
    Jsonb,
}

impl ColumnType {
    fn of(ty: &Type) -> Option<ColumnType> {
        const TYPES: [(Type, ColumnType); 17] = [
            (Type::TEXT, ColumnType::Text),
            (Type::VARCHAR, ColumnType::Text),
            (Type::BPCHAR, ColumnType::Text),
            (Type::NAME, ColumnType::Text),
            (Type::INT2, ColumnType::Int2),
            (Type::INT4, ColumnType::Int4),
            (Type::INT8, ColumnType::Int8),
            (Type::NUMERIC, ColumnType::Numeric),
            (Type::FLOAT4, ColumnType::Float4),
            (Type::FLOAT8, ColumnType::Float8),
            (Type::BOOL, ColumnType::Bool),
            (Type::DATE, ColumnType::Date),
            (Type::TIMESTAMP, ColumnType::Timestamp),
            (Type::TIMESTAMPTZ, ColumnType::Timestamp),
            (Type::UUID, ColumnType::Uuid),
            (Type::JSON, ColumnType::Json),
            (Type::JSONB, ColumnType::Jsonb),
        ];
        if let Some((_, column_type)) = TYPES.iter().find(|(t, _)| t == ty) {
            return Some(*column_type);
        }
        // citext (an extension, so its OID varies) is sent as text.
        (ty.name() == "citext" && matches!(ty.kind(), Kind::Simple)).then_some(ColumnType::Text)
    }
}

/// A type as named in messages: the SQL spelling people write (`integer`, `text[]`).
fn type_name(ty: &Type) -> String {
    match ty.kind() {
        Kind::Array(inner) => format!("{}[]", type_name(inner)),
        Kind::Enum(_) => format!("{} (an enum)", ty.name()),
        Kind::Composite(_) => format!("{} (a composite type)", ty.name()),
        Kind::Range(_) | Kind::Multirange(_) => format!("{} (a range)", ty.name()),
        _ => match ty.name() {
            "int2" => "smallint",
            "int4" => "integer",
            "int8" => "bigint",
            "float4" => "real",
            "float8" => "double precision",
            "bool" => "boolean",
            "bpchar" => "char",
            "timetz" => "time with time zone",
            other => other,
        }
        .to_owned(),
    }
}

/// One value of a fetched row, undecoded: its wire bytes, or `None` for SQL `NULL`.
struct Cell<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Cell<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Where the source connects, for messages (never with the password).
struct Target {
    /// `host:port`, comma-separated when the `url` names several hosts.
    at: String,
    user: Option<String>,
    dbname: Option<String>,
}

impl Target {
    fn of(config: &Config) -> Target {
        let ports = config.get_ports();
        let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let mut at: Vec<String> = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| match host {
                Host::Tcp(h) => format!("{h}:{}", port(i)),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{}", dir.display(), port(i)),
            })
            .collect();
        if at.is_empty() {
            at = config
                .get_hostaddrs()
                .iter()
                .enumerate()
                .map(|(i, addr)| format!("{addr}:{}", port(i)))
                .collect();
        }
        Target {
            at: at.join(", "),
            user: config.get_user().map(str::to_owned),
            dbname: config.get_dbname().map(str::to_owned),
        }
    }

    fn user(&self) -> String {
        match &self.user {
            Some(user) => format!("user `{user}`"),
            None => "the default user".to_owned(),
        }
    }
}

/// How the source connects: with TLS or without, and what it checks of the server's
/// certificate (`sslmode` and `sslrootcert`, as libpq reads them).
struct Tls {
    mode: TlsMode,
    /// The `sslrootcert` file, when the `url` names one.
    root_cert: Option<PathBuf>,
    /// The host name(s) the certificate is checked against, for messages.
    names: String,
    /// The TLS client, for every mode that may use TLS; `None` when the connection goes
    /// without.
    connector: Option<MakeRustlsConnect>,
}

impl Tls {
    /// The TLS of a `url`; fails with a message naming the key, its value and what would be
    /// valid.
    fn of(options: &TlsOptions, config: &Config) -> Result<Tls, String> {
        let mode = match options.sslmode.as_deref() {
            // libpq's default.
            None => TlsMode::Prefer,
            Some(value) => TlsMode::parse(value).ok_or_else(|| {
                format!(
                    "`sslmode={value}` in the PostgreSQL `url` is not a TLS mode; use one of \
                     {TLS_MODES}"
                )
            })?,
        };
        let root_cert = match options.sslrootcert.as_deref() {
            None | Some("") => None,
            Some(value) if !Path::new(value).is_absolute() => {
                return Err(format!(
                    "`sslrootcert={value}` in the PostgreSQL `url` is a relative path; give \
                     the absolute path of a PEM file holding the CA certificate(s) that \
                     signed the server's certificate"
                ));
            }
            Some(value) => Some(PathBuf::from(value)),
        };
        let hosts = config.get_hosts();
        // TLS needs the server's name (hostaddr= alone gives none), and PostgreSQL does not
        // use it over Unix sockets.
        let named = !hosts.is_empty() && hosts.iter().all(|h| matches!(h, Host::Tcp(_)));
        let names: Vec<&str> = hosts
            .iter()
            .filter_map(|h| match h {
                Host::Tcp(name) => Some(name.as_str()),
                Host::Unix(_) => None,
            })
            .collect();
        if mode.requires_tls() && !named {
            return Err(format!(
                "`sslmode={mode}` in the PostgreSQL `url` needs TLS, which needs the server's \
                 host name, and the `url` gives a Unix socket or only hostaddr=; name the host \
                 (host=db.example.com, with hostaddr= for the address if you like), or use \
                 sslmode=prefer or sslmode=disable"
            ));
        }
        let verify = match mode {
            TlsMode::Disable => None,
            _ if !named => None,
            TlsMode::Allow | TlsMode::Prefer => Some(Verify::Nothing),
            // As libpq does: require verifies the chain when a root certificate is given.
            TlsMode::Require if root_cert.is_none() => Some(Verify::Nothing),
            TlsMode::Require | TlsMode::VerifyCa => Some(Verify::Ca),
            TlsMode::VerifyFull => Some(Verify::Full),
        };
        let connector = verify
            .map(|v| tls::client_config(v, root_cert.as_deref()).map(MakeRustlsConnect::new))
            .transpose()?;
        Ok(Tls {
            mode,
            root_cert,
            names: names.join(", "),
            connector,
        })
    }

    /// Connects as the mode says: `allow` tries without TLS first and with TLS when the
    /// server refuses; `prefer` uses TLS when the server offers it and goes without when the
    /// server offers none or the handshake fails; the other modes use TLS or fail.
    fn connect(&self, config: &mut Config) -> Result<Client, postgres::Error> {
        let Some(connector) = &self.connector else {
            config.ssl_mode(SslMode::Disable);
            return config.connect(NoTls);
        };
        match self.mode {
            TlsMode::Allow => {
                config.ssl_mode(SslMode::Disable);
                match config.connect(NoTls) {
                    Err(e) if e.as_db_error().is_some() => {
                        config.ssl_mode(SslMode::Require);
                        config.connect(connector.clone())
                    }
                    plain => plain,
                }
            }
            TlsMode::Prefer => {
                config.ssl_mode(SslMode::Prefer);
                match config.connect(connector.clone()) {
                    Err(e) if tls_error(&e).is_some() => {
                        config.ssl_mode(SslMode::Disable);
                        config.connect(NoTls)
                    }
                    tls => tls,
                }
            }
            _ => {
                config.ssl_mode(SslMode::Require);
                config.connect(connector.clone())
            }
        }
    }

    /// Why connecting failed, when TLS is why.
    fn failure(&self, e: &postgres::Error, target: &Target) -> Option<String> {
        let text = chain(e);
        if text.contains("server does not support TLS") {
            return Some(format!(
                "PostgreSQL at {} does not accept TLS connections, and the `url` asks for \
                 sslmode={}; turn `ssl` on in the server's configuration, or use \
                 sslmode=prefer to connect without TLS when the server offers none",
                target.at, self.mode
            ));
        }
        let why = match tls_error(e) {
            Some(rustls) => {
                let roots = match &self.root_cert {
                    Some(path) => format!("the CA certificates in sslrootcert={}", path.display()),
                    None => "the Mozilla roots bundled with attentive-sync, as the `url` sets \
                             no sslrootcert"
                        .to_owned(),
                };
                tls::certificate_problem(rustls, &self.names, &roots)
                    .unwrap_or_else(|| rustls.to_string())
            }
            None if text.starts_with("error performing TLS handshake") => text,
            None => return None,
        };
        Some(format!(
            "the TLS handshake with PostgreSQL at {} failed (sslmode={}): {why}",
            target.at, self.mode
        ))
    }
}

/// The rustls error behind `e`, if there is one.
fn tls_error(e: &postgres::Error) -> Option<&rustls::Error> {
    io_source(e)?.get_ref()?.downcast_ref::<rustls::Error>()
}

impl PostgresSource {
    /// Connects to the PostgreSQL server at `url` and prepares to stream the rows of `query`.
    ///
    /// `url` is a `postgres://user:password@host:port/database?option=value` URL or libpq
    /// `key=value` pairs; `sslmode` and `sslrootcert` set TLS (see [`PostgresSource`]). `query` is one `SELECT` (or `VALUES`, `TABLE`, `WITH ... SELECT`)
    /// without parameters; it runs in a read-only transaction.
    ///
    /// Fails when the server cannot be reached or refuses the login, when TLS fails (the
    /// message names the server and the reason: an untrusted certificate, a certificate for
    /// another host, a server without TLS), when the query is invalid
    /// or not permitted, and when a column has a type that cannot be sent (the message names
    /// the column, its type and the supported types) or a name another column has too.
    pub fn open(url: &str, query: &str) -> Result<Self, Error> {
        let name = redact_url(url);
        let path = || PathBuf::from(&name);
        let options = |message: String| Error::Options {
            path: path(),
            message,
        };
        // The client library knows neither `sslrootcert` nor the verifying modes: they are
        // taken out of the `url` and applied here.
        let (url, tls_options) = tls::split_tls_options(url);
        let mut config: Config = url.parse().map_err(|e: postgres::Error| {
            options(format!(
                "the PostgreSQL `url` cannot be read ({}); write it as \
                 postgres://user:password@host:port/database, or as key=value pairs \
                 (host=... port=... user=... password=... dbname=...)",
                chain(&e)
            ))
        })?;
        let secret = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .filter(|p| !p.is_empty());
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(options(
                "the PostgreSQL `url` names no host; write it as \
                 postgres://user:password@host:port/database"
                    .to_owned(),
            ));
        }
        let tls = Tls::of(&tls_options, &config)
            .map_err(|message| options(scrub(message, secret.as_deref())))?;
        if query.trim().is_empty() {
            return Err(options(
                "the `query` is empty; write the SELECT that returns the model's rows".to_owned(),
            ));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("attentive-sync");
        }
        let target = Target::of(&config);
        let open_error = |kind: io::ErrorKind, message: String| Error::Open {
            path: path(),
            source: io::Error::new(kind, scrub(message, secret.as_deref())),
        };

        let mut client = tls
            .connect(&mut config)
            .map_err(|e| open_error(connect_error_kind(&e), connect_message(&e, &target, &tls)))?;
        let lost = |e: &postgres::Error, doing: &str| {
            open_error(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "PostgreSQL at {} failed while {doing}: {}",
                    target.at,
                    describe(e)
                ),
            )
        };
        let backend_pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .and_then(|row| row.try_get(0))
            .map_err(|e| lost(&e, "starting the session"))?;
        client
            .batch_execute("START TRANSACTION READ ONLY")
            .map_err(|e| lost(&e, "starting a read-only transaction"))?;

        // Describe the query: its columns and their types, before any row is read.
        let statement = client.prepare(query).map_err(|e| {
            open_error(
                query_error_kind(&e),
                query_message(&e, query, Some(0), &target),
            )
        })?;
        if let Some(first) = statement.params().first() {
            return Err(options(format!(
                "the `query` takes {} parameter(s) ($1 has type {}); a model query cannot \
                 have parameters: write the values into the query",
                statement.params().len(),
                type_name(first)
            )));
        }
        let header = |message: String| Error::Header {
            path: path(),
            message,
        };
        if statement.columns().is_empty() {
            return Err(header(
                "the `query` returns no columns; a model query is a SELECT that returns the \
                 identifier and attribute columns"
                    .to_owned(),
            ));
        }
        let mut columns = Vec::with_capacity(statement.columns().len());
        let mut types = Vec::with_capacity(columns.capacity());
        let mut type_names = Vec::with_capacity(columns.capacity());
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        for column in statement.columns() {
            let ty = column.type_();
            let shown = type_name(ty);
            match ColumnType::of(ty) {
                Some(t) => types.push(t),
                None => problems.push(format!(
                    "column `{}` has type {shown}, which attentive-sync cannot send; cast it in \
                     the query, e.g. {}::text",
                    column.name(),
                    sql_identifier(column.name())
                )),
            }
            if !seen.insert(column.name()) {
                problems.push(format!(
                    "the `query` returns more than one column named `{}`; give each column a \
                     name of its own (... AS another_name)",
                    column.name()
                ));
            }
            columns.push(column.name().to_owned());
            type_names.push(shown);
        }
        if !problems.is_empty() {
            let supported = if types.len() < columns.len() {
                format!(" (supported types: {SUPPORTED_TYPES})")
            } else {
                String::new()
            };
            return Err(header(format!("{}{supported}", problems.join("; "))));
        }
        drop(statement);

        let declare = format!("DECLARE {CURSOR} NO SCROLL CURSOR FOR ");
        client
            .execute(&format!("{declare}{query}"), &[])
            .map_err(|e| {
                let offset = declare.chars().count();
                let message = if e.code() == Some(&SqlState::SYNTAX_ERROR) {
                    // The query itself was understood: it is not one a cursor can run.
                    format!(
                        "the `query` is not a SELECT: {}; a model query is a SELECT (or \
                         VALUES, TABLE, WITH ... SELECT) that only reads",
                        describe(&e)
                    )
                } else {
                    query_message(&e, query, Some(offset), &target)
                };
                open_error(query_error_kind(&e), message)
            })?;

        // The first rows: an error the query raises on them is found before the run starts.
        let first = fetch(&mut client, FIRST_FETCH_ROWS).map_err(|e| {
            open_error(
                query_error_kind(&e),
                query_message(&e, query, None, &target),
            )
        })?;
        let exhausted = (first.len() as u64) < FIRST_FETCH_ROWS;
        let next_rows = fetch_size(&first, columns.len());
        let (tx, receiver) = mpsc::sync_channel(1);
        let thread = thread::Builder::new()
            .name("postgres-model".to_owned())
            .spawn(move || fetch_thread(client, exhausted, next_rows, &tx))
            .map_err(|e| open_error(e.kind(), format!("cannot start the reading thread: {e}")))?;
        Ok(PostgresSource {
            name: name.clone(),
            secret: secret.clone(),
            columns,
            types,
            type_names,
            receiver: Some(receiver),
            thread: Some(thread),
            batch: first.into_iter(),
            record: 0,
            backend_pid,
            failure: None,
        })
    }

    /// The server process serving this source (`pg_backend_pid()`).
    #[cfg(test)]
    fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Waits for the next batch of rows from the fetching thread: `Ok(false)` at the end. A
    /// failure stops the read for good.
    fn next_batch(&mut self) -> Result<bool, Error> {
        let Some(receiver) = &self.receiver else {
            return Ok(false);
        };
        let e = match receiver.recv() {
            Ok(Fetched::Rows(rows)) => {
                self.batch = rows.into_iter();
                return Ok(true);
            }
            Ok(Fetched::End) => {
                self.finish();
                return Ok(false);
            }
            Ok(Fetched::Failed(e)) => e,
            Err(_) => {
                self.finish();
                self.failure = Some((
                    io::ErrorKind::Other,
                    "the thread reading from PostgreSQL stopped unexpectedly; the model was \
                     not read to the end"
                        .to_owned(),
                ));
                return Err(self.failure_error());
            }
        };
        let kind = if is_connection_lost(&e) {
            io::ErrorKind::ConnectionAborted
        } else {
            io::ErrorKind::Other
        };
        let what = if kind == io::ErrorKind::ConnectionAborted {
            "the connection to PostgreSQL was lost"
        } else {
            "PostgreSQL stopped the query"
        };
        let message = scrub(
            format!(
                "{what} after {} record(s): {}; the model was not read to the end",
                self.record,
                describe(&e)
            ),
            self.secret.as_deref(),
        );
        self.finish();
        self.failure = Some((kind, message));
        Err(self.failure_error())
    }

    /// The error every read returns once reading has failed.
    fn failure_error(&self) -> Error {
        let (kind, message) = match &self.failure {
            Some((kind, message)) => (*kind, message.clone()),
            None => (io::ErrorKind::Other, "reading failed".to_owned()),
        };
        Error::Read {
            path: PathBuf::from(&self.name),
            line: Some(self.record + 1),
            source: io::Error::new(kind, message),
        }
    }

    /// Ends the read: the fetching thread has closed the connection, or is about to.
    fn finish(&mut self) {
        self.batch = Vec::new().into_iter();
        self.receiver = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Decodes one fetched row into `row`, or marks it as a defect.
    fn fill_row(&mut self, fetched: &Row, row: &mut SourceRow) {
        row.reset(self.record, self.columns.len());
        let mut defect = None;
        for (i, (value, ty)) in row.values.iter_mut().zip(&self.types).enumerate() {
            let decoded = match fetched.try_get::<_, Cell<'_>>(i) {
                Ok(Cell(None)) => {
                    *value = Value::Null;
                    Ok(())
                }
                Ok(Cell(Some(raw))) => decode(*ty, raw, value),
                Err(e) => Err(chain(&e)),
            };
            if let Err(why) = decoded {
                let column = self.columns.get(i).map_or("?", String::as_str);
                let ty = self.type_names.get(i).map_or("?", String::as_str);
                defect = Some(format!(
                    "record {}: column `{column}` ({ty}): the value cannot be read: {why}",
                    self.record
                ));
                break;
            }
        }
        if let Some(defect) = defect {
            set_defect(row, defect);
        }
    }
}

impl ModelSource for PostgresSource {
    type Error = Error;

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_row(&mut self, row: &mut SourceRow) -> Result<bool, Error> {
        loop {
            if self.failure.is_some() {
                return Err(self.failure_error());
            }
            if let Some(fetched) = self.batch.next() {
                self.record += 1;
                self.fill_row(&fetched, row);
                return Ok(true);
            }
            if !self.next_batch()? {
                return Ok(false);
            }
        }
    }
}

/// What the fetching thread sends.
enum Fetched {
    Rows(Vec<Row>),
    /// Every row has been sent (and the connection closed).
    End,
    /// A `FETCH` failed; nothing follows.
    Failed(postgres::Error),
}

/// Fetches up to `rows` rows from the cursor.
fn fetch(client: &mut Client, rows: u64) -> Result<Vec<Row>, postgres::Error> {
    client.query(&format!("FETCH FORWARD {rows} FROM {CURSOR}"), &[])
}

/// How many rows the next `FETCH` asks for, after `rows`: up to 10,000, fewer when they are
/// wide, so that a batch holds about [`FETCH_BYTES`].
fn fetch_size(rows: &[Row], ncols: usize) -> u64 {
    let mut bytes = 0u64;
    for row in rows {
        bytes += ROW_OVERHEAD_PER_COLUMN * ncols as u64;
        for i in 0..ncols {
            if let Ok(Cell(Some(raw))) = row.try_get::<_, Cell<'_>>(i) {
                bytes += raw.len() as u64;
            }
        }
    }
    match bytes.checked_div(rows.len() as u64) {
        None => FIRST_FETCH_ROWS,
        Some(per_row) => (FETCH_BYTES / per_row.max(1)).clamp(MIN_FETCH_ROWS, MAX_FETCH_ROWS),
    }
}

/// The fetching thread: fetches batches of `rows` rows (sized after the batch before) and
/// sends them on `tx`, one batch ahead of the reader, until the cursor is exhausted (then it
/// closes the connection), a `FETCH` fails, or the receiver is gone (then the connection is
/// dropped, which ends the transaction).
fn fetch_thread(mut client: Client, exhausted: bool, mut rows: u64, tx: &SyncSender<Fetched>) {
    let mut exhausted = exhausted;
    while !exhausted {
        match fetch(&mut client, rows) {
            Ok(fetched) => {
                exhausted = (fetched.len() as u64) < rows;
                let next = fetch_size(&fetched, fetched.first().map_or(0, Row::len));
                if tx.send(Fetched::Rows(fetched)).is_err() {
                    return;
                }
                rows = next;
            }
            Err(e) => {
                let _ = tx.send(Fetched::Failed(e));
                return;
            }
        }
    }
    // Every row has arrived; a failure to say goodbye changes nothing.
    let _ = client.close();
    let _ = tx.send(Fetched::End);
}

/// Decodes the wire (binary) form `raw` of a value of type `ty` into `value`.
fn decode(ty: ColumnType, raw: &[u8], value: &mut Value) -> Result<(), String> {
    match ty {
        ColumnType::Text => set_text(value, utf8(raw)?),
        ColumnType::Int2 => *value = Value::Int(i64::from(i16::from_be_bytes(fixed(raw)?))),
        ColumnType::Int4 => *value = Value::Int(i64::from(i32::from_be_bytes(fixed(raw)?))),
        ColumnType::Int8 => *value = Value::Int(i64::from_be_bytes(fixed(raw)?)),
        ColumnType::Bool => *value = Value::Bool(fixed::<1>(raw)? != [0]),
        ColumnType::Float4 => set_float(value, f32::from_be_bytes(fixed(raw)?)),
        ColumnType::Float8 => set_float(value, f64::from_be_bytes(fixed(raw)?)),
        ColumnType::Numeric => {
            let mut buf = take_string(value);
            *value = match numeric_text(raw, &mut buf)? {
                Decimal::Finite => Value::Number(buf),
                Decimal::NaN => Value::Unsupported {
                    kind: "NaN",
                    text: "NaN".to_owned(),
                },
                Decimal::Infinity(negative) => infinity("infinity", negative, "Infinity"),
            };
        }
        ColumnType::Date => {
            *value = match i32::from_be_bytes(fixed(raw)?) {
                i32::MAX => infinity("infinite date", false, "infinity"),
                i32::MIN => infinity("infinite date", true, "infinity"),
                days => match date_from_pg(days) {
                    Some(date) if (1..=9999).contains(&date.year()) => Value::Date(date),
                    Some(date) => Value::Unsupported {
                        kind: "out-of-range date",
                        text: date_text(date, ""),
                    },
                    None => Value::Unsupported {
                        kind: "out-of-range date",
                        text: format!("{days} days after 2000-01-01"),
                    },
                },
            };
        }
        ColumnType::Timestamp => {
            let micros = i64::from_be_bytes(fixed(raw)?);
            *value = match micros {
                i64::MAX => infinity("infinite timestamp", false, "infinity"),
                i64::MIN => infinity("infinite timestamp", true, "infinity"),
                _ => {
                    let mut buf = take_string(value);
                    match timestamp_text(micros, &mut buf) {
                        Ok(()) => Value::Timestamp(buf),
                        Err(text) => Value::Unsupported {
                            kind: "out-of-range timestamp",
                            text,
                        },
                    }
                }
            };
        }
        ColumnType::Uuid => {
            let bytes: [u8; 16] = fixed(raw)?;
            let mut buf = take_string(value);
            for (i, b) in bytes.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    buf.push('-');
                }
                let _ = write!(buf, "{b:02x}");
            }
            *value = Value::Text(buf);
        }
        ColumnType::Json => set_json(value, utf8(raw)?)?,
        ColumnType::Jsonb => match raw.split_first() {
            Some((1, text)) => set_json(value, utf8(text)?)?,
            Some((version, _)) => return Err(format!("unknown jsonb format version {version}")),
            None => return Err("empty jsonb value".to_owned()),
        },
    }
    Ok(())
}

fn utf8(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw).map_err(|_| "not valid UTF-8".to_owned())
}

/// `raw` as exactly `N` bytes.
fn fixed<const N: usize>(raw: &[u8]) -> Result<[u8; N], String> {
    raw.try_into()
        .map_err(|_| format!("{} bytes where {N} were expected", raw.len()))
}

/// Empties `value`, handing back its string buffer (when it has one) for reuse.
fn take_string(value: &mut Value) -> String {
    match std::mem::replace(value, Value::Null) {
        Value::Text(mut s)
        | Value::Number(mut s)
        | Value::Timestamp(mut s)
        | Value::Unsupported { text: mut s, .. } => {
            s.clear();
            s
        }
        _ => String::new(),
    }
}

fn infinity(kind: &'static str, negative: bool, word: &str) -> Value {
    Value::Unsupported {
        kind,
        text: format!("{}{word}", if negative { "-" } else { "" }),
    }
}

/// Sets a float as the shortest decimal text that reads back as the same float: plain digits
/// for everyday magnitudes, an exponent for very large or small ones. NaN and infinities are
/// [`Value::Unsupported`].
fn set_float<F: Float + LowerExp>(value: &mut Value, x: F) {
    let wide: f64 = x.into();
    if wide.is_nan() {
        *value = Value::Unsupported {
            kind: "NaN",
            text: "NaN".to_owned(),
        };
        return;
    }
    if wide.is_infinite() {
        *value = infinity("infinity", wide < 0.0, "Infinity");
        return;
    }
    let mut buf = take_string(value);
    let magnitude = wide.abs();
    // The shortest digits found directly (for floats from short decimals, within
    // 1e-4..2^53), written as `{}` writes them.
    if let Some(decimal) = x.as_f64().and_then(float::Decimal::shortest) {
        decimal.write(&mut buf, false);
    } else if magnitude == 0.0 || (1e-7..1e21).contains(&magnitude) {
        let _ = write!(buf, "{x}");
    } else {
        let _ = write!(buf, "{x:e}");
    }
    *value = Value::Number(buf);
}

/// What a `numeric` value is.
#[derive(Debug, PartialEq, Eq)]
enum Decimal {
    /// A number, whose text was written.
    Finite,
    NaN,
    /// `Infinity`, or `-Infinity` when `true`.
    Infinity(bool),
}

/// Writes the decimal text of a binary `numeric` into `out` (cleared first), as PostgreSQL
/// prints it: every digit, and exactly the value's scale after the point.
///
/// The wire form is: digit count, weight (of the first digit, in powers of 10,000), sign,
/// display scale (digits after the point), then the base-10,000 digits, all big-endian 16-bit.
fn numeric_text(raw: &[u8], out: &mut String) -> Result<Decimal, String> {
    let word = |i: usize| -> Option<u16> {
        let bytes = raw.get(2 * i..2 * i + 2)?;
        Some(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]))
    };
    let bad = || format!("malformed numeric value ({} bytes)", raw.len());
    let (Some(ndigits), Some(weight), Some(sign), Some(dscale)) =
        (word(0), word(1), word(2), word(3))
    else {
        return Err(bad());
    };
    let ndigits = usize::from(ndigits);
    let weight = i64::from(weight as i16);
    if raw.len() != 8 + 2 * ndigits {
        return Err(bad());
    }
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok(Decimal::NaN),
        0xD000 => return Ok(Decimal::Infinity(false)),
        0xF000 => return Ok(Decimal::Infinity(true)),
        _ => return Err(bad()),
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        match word(4 + i) {
            Some(d) if d < 10_000 => digits.push(d),
            _ => return Err(bad()),
        }
    }
    let digit = |g: i64| -> u16 {
        usize::try_from(g)
            .ok()
            .and_then(|g| digits.get(g).copied())
            .unwrap_or(0)
    };
    out.clear();
    if sign == 0x4000 && digits.iter().any(|&d| d != 0) {
        out.push('-');
    }
    // The integer part, without leading zeros.
    let int_start = out.len();
    for g in 0..=weight {
        crate::timestamp::push_padded(out, u32::from(digit(g)), 4);
    }
    let leading = out
        .get(int_start..)
        .map_or(0, |int| int.len() - int.trim_start_matches('0').len());
    out.replace_range(int_start..int_start + leading, "");
    if out.len() == int_start {
        out.push('0');
    }
    // Exactly `dscale` digits after the point.
    let dscale = usize::from(dscale & 0x3FFF);
    if dscale > 0 {
        out.push('.');
        let frac_start = out.len();
        let mut g = weight + 1;
        while out.len() - frac_start < dscale {
            crate::timestamp::push_padded(out, u32::from(digit(g)), 4);
            g += 1;
        }
        out.truncate(frac_start + dscale);
    }
    Ok(Decimal::Finite)
}

/// The date `days` after 2000-01-01.
fn date_from_pg(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(PG_EPOCH_DAYS_FROM_CE.checked_add(days)?)
}

/// A date as PostgreSQL writes it (`10000-01-01`, `0044-03-15 BC`), with `time` after it.
fn date_text(date: NaiveDate, time: &str) -> String {
    let (year, era) = match date.year() {
        y if y >= 1 => (i64::from(y), ""),
        y => (1 - i64::from(y), " BC"),
    };
    format!("{year:04}-{:02}-{:02}{time}{era}", date.month(), date.day())
}

/// Writes the UTC time `micros` after 2000-01-01 as `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`; a time
/// outside the years 1–9999 comes back as `Err` with its text.
fn timestamp_text(micros: i64, out: &mut String) -> Result<(), String> {
    let time = micros
        .checked_add(PG_EPOCH_MICROS)
        .and_then(DateTime::<Utc>::from_timestamp_micros);
    let Some(time) = time else {
        return Err(format!("{micros} microseconds after 2000-01-01"));
    };
    if !(1..=9999).contains(&time.year()) {
        return Err(date_text(
            time.date_naive(),
            &time.format("T%H:%M:%S%.fZ").to_string(),
        ));
    }
    out.clear();
    crate::timestamp::push_date_time(out, &time.naive_utc());
    let fraction = time.timestamp_subsec_micros();
    if fraction != 0 {
        out.push('.');
        crate::timestamp::push_padded(out, fraction, 6);
    }
    out.push('Z');
    Ok(())
}

/// Sets a JSON value as a JSONL source would: scalars typed, arrays and objects unsupported.
fn set_json(value: &mut Value, text: &str) -> Result<(), String> {
    let raw: &serde_json::value::RawValue =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    match raw.get().trim() {
        "" => Err("empty JSON value".to_owned()),
        raw => {
            crate::jsonl::set_typed(value, raw);
            Ok(())
        }
    }
}

/// `name` as it can be written in SQL: bare when it is a plain lower-case identifier (and not
/// a keyword a column is likely to be named after), double-quoted otherwise.
fn sql_identifier(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "all",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "between",
        "both",
        "by",
        "case",
        "cast",
        "check",
        "collate",
        "column",
        "constraint",
        "create",
        "current_date",
        "current_time",
        "current_timestamp",
        "current_user",
        "date",
        "default",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "fetch",
        "for",
        "foreign",
        "from",
        "grant",
        "group",
        "having",
        "in",
        "interval",
        "into",
        "is",
        "join",
        "leading",
        "left",
        "like",
        "limit",
        "not",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "primary",
        "references",
        "right",
        "select",
        "table",
        "then",
        "time",
        "timestamp",
        "to",
        "trailing",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "when",
        "where",
        "window",
        "with",
    ];
    let plain = !KEYWORDS.contains(&name)
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The message of an error and of its causes, joined by `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// What PostgreSQL or the client said, for messages: the server's message (with its detail,
/// hint and SQLSTATE code), or the client's error chain.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => server_said(db, ""),
        None => chain(e),
    }
}

/// The server's message, `at` (where in the query), its detail and hint, and its SQLSTATE code.
fn server_said(db: &DbError, at: &str) -> String {
    let mut s = format!("{}{at}", db.message());
    if let Some(detail) = db.detail() {
        let _ = write!(s, " ({detail})");
    }
    if let Some(hint) = db.hint() {
        let _ = write!(s, "; hint: {hint}");
    }
    let _ = write!(s, " [SQLSTATE {}]", db.code().code());
    s
}

/// Replaces every occurrence of the password in `s` (text from the server or the client
/// library, which should never hold it) with `***`.
fn scrub(s: String, secret: Option<&str>) -> String {
    match secret {
        Some(secret) if !secret.is_empty() && s.contains(secret) => s.replace(secret, "***"),
        _ => s,
    }
}

/// Whether an error means the connection is gone (closed, reset, or ended by the server).
fn is_connection_lost(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // Class 08: connection exception; 57P0x: the server is shutting the session down.
        return code.starts_with("08") || code.starts_with("57P");
    }
    // Not from the server: an I/O failure on the connection.
    true
}

fn connect_error_kind(e: &postgres::Error) -> io::ErrorKind {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        return if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            io::ErrorKind::PermissionDenied
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            io::ErrorKind::NotFound
        } else {
            io::ErrorKind::ConnectionRefused
        };
    }
    io_source(e).map_or(io::ErrorKind::Other, io::Error::kind)
}

/// The I/O error behind `e`, if there is one.
fn io_source(e: &postgres::Error) -> Option<&io::Error> {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cause = c.source();
    }
    None
}

/// Why connecting failed, and what to fix.
fn connect_message(e: &postgres::Error, target: &Target, tls: &Tls) -> String {
    if let Some(db) = e.as_db_error() {
        return login_message(db.code(), &describe(e), target);
    }
    if let Some(message) = tls.failure(e, target) {
        return message;
    }
    let text = chain(e);
    if text.contains("password missing") {
        return format!(
            "PostgreSQL at {} asks for a password for {}, and the `url` has none; add it: \
             postgres://user:password@host:port/database",
            target.at,
            target.user()
        );
    }
    let why = io_source(e).map_or(text, io::Error::to_string);
    format!(
        "cannot connect to PostgreSQL at {}: {why} — is the server running? check `url`",
        target.at
    )
}

/// Why the server refused the login, and what to fix.
fn login_message(code: &SqlState, said: &str, target: &Target) -> String {
    if *code == SqlState::INVALID_PASSWORD {
        format!(
            "PostgreSQL at {} rejected the user/password for {}: {said}; check the user and \
             password in `url`",
            target.at,
            target.user()
        )
    } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
        format!(
            "PostgreSQL at {} refused the login of {}: {said}; check the user in `url` (the \
             role must exist and be allowed to log in from this host)",
            target.at,
            target.user()
        )
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        let db = target
            .dbname
            .as_deref()
            .map_or_else(|| "the default database".to_owned(), |d| format!("`{d}`"));
        format!(
            "PostgreSQL at {} has no database {db}: {said}; check the database name in `url`",
            target.at
        )
    } else {
        format!("PostgreSQL at {} refused the connection: {said}", target.at)
    }
}

fn query_error_kind(e: &postgres::Error) -> io::ErrorKind {
    match e.code() {
        Some(code) if *code == SqlState::INSUFFICIENT_PRIVILEGE => io::ErrorKind::PermissionDenied,
        Some(_) if !is_connection_lost(e) => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::ConnectionAborted,
    }
}

/// Why the query was refused, where in it, and what to fix. `offset` is how many characters
/// were sent before the query (error positions count them); `None` when what was sent is not
/// the query (positions are then ignored).
fn query_message(
    e: &postgres::Error,
    query: &str,
    offset: Option<usize>,
    target: &Target,
) -> String {
    let Some(db) = e.as_db_error() else {
        return format!(
            "PostgreSQL at {} failed while preparing the `query`: {}",
            target.at,
            chain(e)
        );
    };
    let at = offset.map_or_else(String::new, |offset| position(db, query, offset));
    let said = server_said(db, &at);
    let code = db.code();
    if *code == SqlState::SYNTAX_ERROR && db.message().contains("multiple commands") {
        format!("the `query` holds more than one statement: {said}; a model query is one SELECT")
    } else if *code == SqlState::SYNTAX_ERROR {
        format!("the `query` has a syntax error: {said}; fix `query`")
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        format!(
            "PostgreSQL refused the `query` to {}: {said}; grant it SELECT on what the \
             query reads (GRANT SELECT ON ... TO ...), or change `query`",
            target.user()
        )
    } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        format!(
            "the `query` tries to write: {said}; attentive-sync runs the model query in a \
             read-only transaction, so it must only read"
        )
    } else if code.code().starts_with("42") {
        format!("the `query` is invalid: {said}; fix `query`")
    } else if is_connection_lost(e) {
        format!(
            "the connection to PostgreSQL at {} was lost while preparing the `query`: {said}",
            target.at
        )
    } else {
        format!("the `query` failed: {said}")
    }
}

/// ` at line L, column C (`the line`)` for an error that points into the query.
fn position(db: &DbError, query: &str, offset: usize) -> String {
    let Some(ErrorPosition::Original(pos)) = db.position() else {
        return String::new();
    };
    // A 1-based character position, counted from the start of what was sent.
    let Some(index) = usize::try_from(*pos)
        .ok()
        .and_then(|p| p.checked_sub(offset.saturating_add(1)))
    else {
        return String::new();
    };
    let (mut line, mut column, mut line_start) = (1, 1, 0);
    for (i, (byte, c)) in query.char_indices().enumerate() {
        if i == index {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
            line_start = byte + 1;
        } else {
            column += 1;
        }
    }
    let text = query
        .get(line_start..)
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end();
    let shown: String = text.chars().take(120).collect();
    let more = if shown.len() < text.len() { "…" } else { "" };
    format!(" at line {line}, column {column} of the query (`{shown}{more}`)")
}

/// The connection `url` with its password replaced by `***`, for messages and logs.
///
/// Handles URLs (`postgres://user:secret@host/db` → `postgres://user:***@host/db`, and a
/// `password=` query parameter) and libpq `key=value` strings (`password=secret`,
/// `password='se cret'`). When a `key=value` string cannot be read, everything from the first
/// word `password` on is hidden.
pub fn redact_url(url: &str) -> String {
    let lower = url.trim_start().to_ascii_lowercase();
    let is_url = ["postgres://", "postgresql://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme));
    if is_url {
        redact_uri(url)
    } else {
        redact_conninfo(url)
    }
}

fn redact_uri(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    // The credentials end at the first `@` (as the client reads them); a password written
    // with a bare `@` in it runs to the last one, so everything up to there is hidden.
    let after_credentials = match rest.find('@') {
        Some(first) => match rest.get(..first).and_then(|c| c.find(':')) {
            Some(colon) => {
                // A bare `@` in the password (which the client would misread): the password is
                // hidden up to the last `@` before the query string.
                let query_start = rest
                    .get(first..)
                    .and_then(|r| r.find('?'))
                    .map_or(rest.len(), |q| first + q);
                let end = rest
                    .get(..query_start)
                    .and_then(|r| r.rfind('@'))
                    .unwrap_or(first);
                out.push_str(rest.get(..colon).unwrap_or_default());
                out.push_str(":***");
                rest.get(end..).unwrap_or_default()
            }
            None => rest,
        },
        None => rest,
    };
    match after_credentials.split_once('?') {
        Some((before, params)) => {
            out.push_str(before);
            out.push('?');
            let redacted: Vec<String> = params
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key.trim().eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            out.push_str(&redacted.join("&"));
        }
        None => out.push_str(after_credentials),
    }
    out
}

fn redact_conninfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let hide_rest = |out: &mut String, rest: &str| {
        match rest.to_ascii_lowercase().find("password") {
            Some(i) => {
                out.push_str(rest.get(..i).unwrap_or_default());
                out.push_str("***");
            }
            None => out.push_str(rest),
        };
    };
    loop {
        let ws = rest.len() - rest.trim_start().len();
        out.push_str(rest.get(..ws).unwrap_or_default());
        rest = rest.get(ws..).unwrap_or_default();
        if rest.is_empty() {
            return out;
        }
        let key_len = rest
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(rest.len());
        let key = rest.get(..key_len).unwrap_or_default();
        let after_key = rest.get(key_len..).unwrap_or_default();
        let ws = after_key.len() - after_key.trim_start().len();
        let Some(after_eq) = after_key.get(ws..).and_then(|r| r.strip_prefix('=')) else {
            hide_rest(&mut out, rest);
            return out;
        };
        let ws2 = after_eq.len() - after_eq.trim_start().len();
        let value = after_eq.get(ws2..).unwrap_or_default();
        let Some(value_len) = conninfo_value_len(value) else {
            hide_rest(&mut out, rest);
            return out;
        };
        // Everything up to the value is copied as written.
        let upto_value = rest.len() - value.len();
        out.push_str(rest.get(..upto_value).unwrap_or_default());
        if key.eq_ignore_ascii_case("password") {
            out.push_str("***");
        } else {
            out.push_str(value.get(..value_len).unwrap_or_default());
        }
        rest = value.get(value_len..).unwrap_or_default();
    }
}

/// The length in bytes of the `key=value` value at the start of `s`: quoted (`'...'`, with
/// backslash escapes) or up to the next whitespace. `None` when it is empty or unterminated.
fn conninfo_value_len(s: &str) -> Option<usize> {
    let mut chars = s.char_indices();
    let quoted = s.starts_with('\'');
    if quoted {
        chars.next();
    }
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' if quoted => return Some(i + 1),
            c if !quoted && c.is_whitespace() => return (i > 0).then_some(i),
            _ => {}
        }
    }
    (!quoted && !s.is_empty()).then_some(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicU32, Ordering};

    /// The server the tests use; `ATTENTIVE_SYNC_TEST_PG_URL` overrides it.
    fn test_url() -> String {
        std::env::var("ATTENTIVE_SYNC_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    /// A schema (and roles) of one test, dropped at the end even when the test fails.
    struct Scratch {
        client: Client,
        schema: String,
        roles: Vec<String>,
    }

    impl Scratch {
        fn new() -> Scratch {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let url = test_url();
            let client = Client::connect(&url, NoTls).unwrap_or_else(|e| {
                panic!(
                    "these tests need PostgreSQL at {} ({e}); start it with \
                     `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
                     or set ATTENTIVE_SYNC_TEST_PG_URL",
                    redact_url(&url)
                )
            });
            let schema = format!(
                "as_test_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let mut scratch = Scratch {
                client,
                schema,
                roles: Vec::new(),
            };
            scratch.exec("CREATE SCHEMA {s}");
            scratch
        }

        /// Runs `sql` with `{s}` standing for the schema.
        fn exec(&mut self, sql: &str) {
            let sql = sql.replace("{s}", &self.schema);
            self.client
                .batch_execute(&sql)
                .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
        }

        /// A login role (no password) dropped with the scratch.
        fn role(&mut self, suffix: &str) -> String {
            let role = format!("{}_{suffix}", self.schema);
            self.exec(&format!("CREATE ROLE {role} LOGIN"));
            self.roles.push(role.clone());
            role
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = self
                .client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
            for role in &self.roles {
                let _ = self
                    .client
                    .batch_execute(&format!("DROP ROLE IF EXISTS {role}"));
            }
        }
    }

    fn open(query: &str) -> PostgresSource {
        PostgresSource::open(&test_url(), query).unwrap_or_else(|e| panic!("{}", full_message(&e)))
    }

    fn open_err(url: &str, query: &str) -> Error {
        match PostgresSource::open(url, query) {
            Ok(source) => panic!("opened: {source:?}"),
            Err(e) => e,
        }
    }

    fn full_message(e: &Error) -> String {
        chain(e)
    }

    fn read_all(source: &mut PostgresSource) -> Vec<SourceRow> {
        let mut rows = Vec::new();
        let mut row = SourceRow::default();
        while source
            .next_row(&mut row)
            .unwrap_or_else(|e| panic!("{}", full_message(&e)))
        {
            rows.push(row.clone());
        }
        rows
    }

    /// The values of one column of type `ty` holding `literals` (SQL expressions) in order.
    fn values_of(ty: &str, literals: &[&str]) -> Vec<Value> {
        let rows: Vec<String> = literals
            .iter()
            .enumerate()
            .map(|(i, lit)| format!("({i}, CAST({lit} AS {ty}))"))
            .collect();
        let query = format!(
            "SELECT v FROM (VALUES {}) AS t(i, v) ORDER BY i",
            rows.join(", ")
        );
        let mut source = open(&query);
        read_all(&mut source)
            .into_iter()
            .map(|row| {
                assert_eq!(row.defect, None);
                row.values.into_iter().next().unwrap()
            })
            .collect()
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }
    fn number(s: &str) -> Value {
        Value::Number(s.to_owned())
    }
    fn timestamp(s: &str) -> Value {
        Value::Timestamp(s.to_owned())
    }
    fn unsupported(kind: &'static str, s: &str) -> Value {
        Value::Unsupported {
            kind,
            text: s.to_owned(),
        }
    }

    #[test]
    fn postgres_source_is_send() {
        fn send<T: Send>() {}
        send::<PostgresSource>();
    }

    #[test]
    fn postgres_every_type_maps_to_its_value() {
        let mut scratch = Scratch::new();
        scratch.exec(
            "CREATE TABLE {s}.people (
                 email text, nick varchar(20), code char(5), sys name,
                 small int2, mid int4, big int8, ltv numeric, ratio real, score float8,
                 vip bool, born date, seen timestamp, paid timestamptz, id uuid,
                 meta json, metab jsonb
             );
             INSERT INTO {s}.people VALUES
                 ('ann@example.com', 'annie', 'ab', 'sys', 7, -42, 9223372036854775807,
                  12345678901234567890.123, 0.1, '-0', true, '2024-02-29',
                  '2024-05-01 12:00:00.5', '2024-05-01 12:00:00+05:30',
                  'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '\"vip\"', '{\"a\": [1]}'),
                 (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                  NULL, NULL, NULL, NULL, NULL);",
        );
        let mut source = open(&format!(
            "SELECT * FROM {}.people ORDER BY email NULLS LAST",
            scratch.schema
        ));
        assert_eq!(
            source.columns(),
            [
                "email", "nick", "code", "sys", "small", "mid", "big", "ltv", "ratio", "score",
                "vip", "born", "seen", "paid", "id", "meta", "metab"
            ]
        );
        let rows = read_all(&mut source);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].number, 1);
        assert_eq!(rows[1].number, 2);
        assert_eq!(
            rows[0].values,
            [
                text("ann@example.com"),
                text("annie"),
                text("ab   "),
                text("sys"),
                Value::Int(7),
                Value::Int(-42),
                Value::Int(i64::MAX),
                number("12345678901234567890.123"),
                number("0.1"),
                number("-0"),
                Value::Bool(true),
                Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
                timestamp("2024-05-01T12:00:00.500000Z"),
                timestamp("2024-05-01T06:30:00Z"),
                text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                text("vip"),
                unsupported("object", "{\"a\": [1]}"),
            ]
        );
        assert_eq!(rows[1].values, vec![Value::Null; 17]);
        assert!(rows.iter().all(|r| r.defect.is_none()));
    }

    #[test]
    fn postgres_integers_and_booleans() {
        let _scratch = Scratch::new();
        assert_eq!(
            values_of("int2", &["32767", "-32768", "NULL"]),
            [Value::Int(32767), Value::Int(-32768), Value::Null]
        );
        assert_eq!(
            values_of("int4", &["2147483647", "-2147483648", "0"]),
            [
                Value::Int(2_147_483_647),
                Value::Int(-2_147_483_648),
                Value::Int(0)
            ]
        );
        assert_eq!(
            values_of("int8", &["9223372036854775807", "-9223372036854775808"]),
            [Value::Int(i64::MAX), Value::Int(i64::MIN)]
        );
        assert_eq!(
            values_of("bool", &["true", "false", "NULL"]),
            [Value::Bool(true), Value::Bool(false), Value::Null]
        );
    }

    #[test]
    fn postgres_numerics_keep_every_digit() {
        let _scratch = Scratch::new();
        let literals = [
            "'12345678901234567890.123'",
            "'-12345678901234567890.123'",
            "'0'",
            "'-0'",
            "'0.000'",
            "'1.50'",
            "'-0.5'",
            "'10000'",
            "'0.0001'",
            "'0.00001'",
            "'1e-20'",
            "'99999999.99990000'",
            "'1e30'",
            "'123456789.000000001'",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
        ];
        let got = values_of("numeric", &literals);
        let expected = [
            number("12345678901234567890.123"),
            number("-12345678901234567890.123"),
            number("0"),
            number("0"),
            number("0.000"),
            number("1.50"),
            number("-0.5"),
            number("10000"),
            number("0.0001"),
            number("0.00001"),
            number("0.00000000000000000001"),
            number("99999999.99990000"),
            number("1000000000000000000000000000000"),
            number("123456789.000000001"),
            unsupported("NaN", "NaN"),
            unsupported("infinity", "Infinity"),
            unsupported("infinity", "-Infinity"),
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn postgres_numerics_match_the_server_text() {
        // Every numeric decodes to the text PostgreSQL itself prints.
        let _scratch = Scratch::new();
        let query = "SELECT v, v::text AS t FROM (
                 SELECT (random() * 10 ^ (random() * 40 - 20))::numeric(60, 25) * sign(random() - 0.5)::numeric AS v
                 FROM generate_series(1, 500)
                 UNION ALL SELECT round(x::numeric, s) FROM generate_series(-3, 3) x, generate_series(0, 9) s
                 UNION ALL SELECT (10::numeric ^ e) - 1 FROM generate_series(0, 30) e
                 UNION ALL SELECT 1 / (10::numeric ^ e) FROM generate_series(0, 30) e
             ) AS q";
        let mut source = open(query);
        let rows = read_all(&mut source);
        assert!(rows.len() > 500);
        for row in rows {
            let Value::Text(t) = &row.values[1] else {
                panic!("{row:?}")
            };
            assert_eq!(row.values[0], number(t), "{row:?}");
        }
    }

    #[test]
    fn postgres_floats_are_shortest_round_trip_text() {
        let _scratch = Scratch::new();
        assert_eq!(
            values_of(
                "float8",
                &[
                    "0.1",
                    "'-0'",
                    "123.456",
                    "1e300",
                    "-2.5e-10",
                    "3",
                    "'NaN'",
                    "'Infinity'",
                    "'-Infinity'"
                ]
            ),
            [
                number("0.1"),
                number("-0"),
                number("123.456"),
                number("1e300"),
                number("-2.5e-10"),
                number("3"),
                unsupported("NaN", "NaN"),
                unsupported("infinity", "Infinity"),
                unsupported("infinity", "-Infinity"),
            ]
        );
        assert_eq!(
            values_of("real", &["0.1", "'-0'", "16777216", "'NaN'"]),
            [
                number("0.1"),
                number("-0"),
                number("16777216"),
                unsupported("NaN", "NaN")
            ]
        );
    }

    #[test]
    fn postgres_dates_and_timestamps_are_utc() {
        let _scratch = Scratch::new();
        let date = |y, m, d| Value::Date(NaiveDate::from_ymd_opt(y, m, d).unwrap());
        assert_eq!(
            values_of(
                "date",
                &[
                    "'2024-02-29'",
                    "'2000-01-01'",
                    "'1999-12-31'",
                    "'0001-01-01'",
                    "'infinity'",
                    "'-infinity'",
                    "'10000-01-01'",
                    "'0044-03-15 BC'"
                ]
            ),
            [
                date(2024, 2, 29),
                date(2000, 1, 1),
                date(1999, 12, 31),
                date(1, 1, 1),
                unsupported("infinite date", "infinity"),
                unsupported("infinite date", "-infinity"),
                unsupported("out-of-range date", "10000-01-01"),
                unsupported("out-of-range date", "0044-03-15 BC"),
            ]
        );
        assert_eq!(
            values_of(
                "timestamp",
                &[
                    "'2024-05-01 12:00:00'",
                    "'2024-05-01 12:00:00.123456'",
                    "'1970-01-01 00:00:00.000001'",
                    "'1999-12-31 23:59:59.999999'",
                    "'infinity'",
                    "'10000-01-01 10:00:00.25'",
                    "'0044-03-15 12:00:00 BC'"
                ]
            ),
            [
                timestamp("2024-05-01T12:00:00Z"),
                timestamp("2024-05-01T12:00:00.123456Z"),
                timestamp("1970-01-01T00:00:00.000001Z"),
                timestamp("1999-12-31T23:59:59.999999Z"),
                unsupported("infinite timestamp", "infinity"),
                unsupported("out-of-range timestamp", "10000-01-01T10:00:00.250Z"),
                unsupported("out-of-range timestamp", "0044-03-15T12:00:00Z BC"),
            ]
        );
        assert_eq!(
            values_of(
                "timestamptz",
                &[
                    "'2024-05-01 12:00:00+05:30'",
                    "'2024-05-01 01:00:00-08'",
                    "'2024-12-31 23:30:00.25-01'",
                    "'-infinity'"
                ]
            ),
            [
                timestamp("2024-05-01T06:30:00Z"),
                timestamp("2024-05-01T09:00:00Z"),
                timestamp("2025-01-01T00:30:00.250000Z"),
                unsupported("infinite timestamp", "-infinity"),
            ]
        );
    }

    #[test]
    fn postgres_timestamptz_ignores_the_session_time_zone() {
        let _scratch = Scratch::new();
        let url = format!("{}?options=-c%20TimeZone%3DAsia%2FKolkata", test_url());
        let mut source = PostgresSource::open(
            &url,
            "SELECT '2024-05-01 12:00:00+00'::timestamptz AS t, \
             current_setting('TimeZone') AS zone",
        )
        .unwrap_or_else(|e| panic!("{}", full_message(&e)));
        let rows = read_all(&mut source);
        assert_eq!(
            rows[0].values,
            [timestamp("2024-05-01T12:00:00Z"), text("Asia/Kolkata")]
        );
    }

    #[test]
    fn postgres_texts_uuids_and_json() {
        let mut scratch = Scratch::new();
        assert_eq!(
            values_of("text", &["'Ann'", "''", "'é ☃'", "NULL"]),
            [text("Ann"), text(""), text("é ☃"), Value::Null]
        );
        assert_eq!(values_of("varchar(3)", &["'abc'"]), [text("abc")]);
        assert_eq!(values_of("char(3)", &["'a'"]), [text("a  ")]);
        assert_eq!(values_of("name", &["'pg_class'"]), [text("pg_class")]);
        assert_eq!(
            values_of(
                "uuid",
                &[
                    "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
                    "'00000000-0000-0000-0000-000000000000'"
                ]
            ),
            [
                text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                text("00000000-0000-0000-0000-000000000000")
            ]
        );
        let json = [
            "'\"vip\"'",
            r#"'"a\"b \u00e9"'"#,
            "' 12 '",
            "'1.50'",
            "'12345678901234567890.123'",
            "'-0'",
            "'true'",
            "'false'",
            "'null'",
            "'[1, 2]'",
            "'{\"a\": 1}'",
            "NULL",
        ];
        let expected = |one_fifty: &str, array: &str, object: &str| {
            vec![
                text("vip"),
                text("a\"b é"),
                Value::Int(12),
                number(one_fifty),
                number("12345678901234567890.123"),
                Value::Int(0),
                Value::Bool(true),
                Value::Bool(false),
                Value::Null,
                unsupported("array", array),
                unsupported("object", object),
                Value::Null,
            ]
        };
        assert_eq!(
            values_of("json", &json),
            expected("1.50", "[1, 2]", "{\"a\": 1}")
        );
        assert_eq!(
            values_of("jsonb", &json),
            expected("1.50", "[1, 2]", "{\"a\": 1}")
        );
        // A long array keeps its first 200 characters.
        let long = values_of(
            "jsonb",
            &["(SELECT jsonb_agg(g) FROM generate_series(1, 1000) g)"],
        );
        match &long[0] {
            Value::Unsupported { kind, text } => {
                assert_eq!(*kind, "array");
                assert_eq!(text.chars().count(), 200);
            }
            other => panic!("{other:?}"),
        }

        // citext is an extension: installed into this test's schema unless already there.
        let installed: Option<String> = scratch
            .client
            .query_opt(
                "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'citext'",
                &[],
            )
            .unwrap()
            .map(|row| row.get(0));
        let citext_schema = match installed {
            Some(schema) => schema,
            None => {
                scratch.exec("CREATE EXTENSION IF NOT EXISTS citext SCHEMA {s}");
                scratch.schema.clone()
            }
        };
        let mut source = open(&format!(
            "SELECT CAST('Ann@Example.com' AS {citext_schema}.citext) AS email, \
             CAST('x' AS {citext_schema}.citext)::text AS plain"
        ));
        assert_eq!(
            read_all(&mut source)[0].values,
            [text("Ann@Example.com"), text("x")]
        );
    }

    #[test]
    fn postgres_domains_map_as_their_base_type() {
        let mut scratch = Scratch::new();
        scratch.exec("CREATE DOMAIN {s}.money_amount AS numeric(12, 2)");
        let mut source = open(&format!(
            "SELECT CAST(412.5 AS {}.money_amount) AS ltv",
            scratch.schema
        ));
        assert_eq!(read_all(&mut source)[0].values, [number("412.50")]);
    }

    #[test]
    fn postgres_unsupported_types_fail_open_naming_the_column() {
        let mut scratch = Scratch::new();
        scratch.exec(
            "CREATE TYPE {s}.mood AS ENUM ('happy', 'sad');
             CREATE TABLE {s}.people (email text, tags text[], span interval, mood {s}.mood,
                                      \"Raw Bytes\" bytea);",
        );
        let e = open_err(
            &test_url(),
            &format!("SELECT * FROM {}.people", scratch.schema),
        );
        assert!(matches!(e, Error::Header { .. }), "{e:?}");
        let message = full_message(&e);
        for part in [
            "column `tags` has type text[], which attentive-sync cannot send; cast it in the query, e.g. tags::text",
            "column `span` has type interval",
            "column `mood` has type mood (an enum)",
            "column `Raw Bytes` has type bytea, which attentive-sync cannot send; cast it in the query, e.g. \"Raw Bytes\"::text",
            "supported types: text, varchar",
        ] {
            assert!(message.contains(part), "{part:?} not in {message}");
        }
        assert!(!message.contains("column `email`"), "{message}");
        // Nothing was read: the check comes from describing the query.
        let casted = open(&format!(
            "SELECT email, tags::text AS tags FROM {}.people",
            scratch.schema
        ));
        assert_eq!(casted.columns(), ["email", "tags"]);
    }

    #[test]
    fn postgres_query_shape_problems_fail_open() {
        let _scratch = Scratch::new();
        let url = test_url();
        let message = |query: &str| full_message(&open_err(&url, query));
        let dup = message("SELECT 1 AS id, 2 AS id");
        assert!(dup.contains("more than one column named `id`"), "{dup}");
        let params = message("SELECT $1::text AS x");
        assert!(params.contains("cannot have parameters"), "{params}");
        let none = message("SELECT");
        assert!(none.contains("returns no columns"), "{none}");
        let empty = message("  ");
        assert!(empty.contains("the `query` is empty"), "{empty}");
        let two = message("SELECT 1 AS a; SELECT 2 AS b");
        assert!(two.contains("the `query`"), "{two}");
    }

    #[test]
    fn postgres_query_runs_read_only() {
        let mut scratch = Scratch::new();
        scratch.exec("CREATE TABLE {s}.t (id int); CREATE SEQUENCE {s}.seq;");
        let url = test_url();
        let delete = full_message(&open_err(
            &url,
            &format!("DELETE FROM {}.t RETURNING id", scratch.schema),
        ));
        assert!(delete.contains("the `query` is not a SELECT"), "{delete}");
        let write = full_message(&open_err(
            &url,
            &format!("SELECT nextval('{}.seq') AS n", scratch.schema),
        ));
        assert!(write.contains("read-only transaction"), "{write}");
    }

    #[test]
    fn postgres_streams_100k_rows_in_bounded_memory() {
        let mut scratch = Scratch::new();
        scratch.exec(
            "CREATE TABLE {s}.people AS
                 SELECT g AS id, 'user' || g || '@example.com' AS email FROM generate_series(1, 100000) g",
        );
        // About 1 KB a row: the whole result would take well over 100 MB in memory.
        // Measured before opening: the first rows are fetched by `open`.
        let before = rss_kib();
        let mut source = open(&format!(
            "SELECT id, email, repeat(md5(id::text), 4) AS a, repeat(md5(email), 4) AS b,
                    repeat(md5(id::text || 'c'), 4) AS c, repeat(md5(id::text || 'd'), 4) AS d,
                    repeat(md5(id::text || 'e'), 4) AS e, repeat(md5(id::text || 'f'), 4) AS f,
                    id * 1.5 AS ltv, id % 2 = 0 AS vip
             FROM {}.people ORDER BY id",
            scratch.schema
        ));
        let mut peak = before;
        let mut row = SourceRow::default();
        let mut n = 0u64;
        while source.next_row(&mut row).unwrap() {
            n += 1;
            assert_eq!(row.number, n);
            assert_eq!(row.values[0], Value::Int(n as i64));
            if n.is_multiple_of(5000) {
                peak = peak.max(rss_kib());
                assert_eq!(row.values[1], text(&format!("user{n}@example.com")));
                assert_eq!(row.values[8], number(&format!("{}.0", n * 3 / 2)));
            }
        }
        assert_eq!(n, 100_000);
        assert!(!source.next_row(&mut row).unwrap());
        let grown_mib = peak.saturating_sub(before) / 1024;
        eprintln!("100,000 rows read; resident memory grew by {grown_mib} MiB");
        assert!(grown_mib < 50, "memory grew by {grown_mib} MiB");
    }

    /// The resident memory of this process, in KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn postgres_empty_result_ends_at_once() {
        let _scratch = Scratch::new();
        let mut source = open("SELECT 1 AS a WHERE false");
        let mut row = SourceRow::default();
        assert!(!source.next_row(&mut row).unwrap());
        assert!(!source.next_row(&mut row).unwrap());
    }

    #[test]
    fn postgres_queries_in_every_reading_form() {
        let _scratch = Scratch::new();
        for query in [
            "SELECT 1 AS a;",
            "SELECT 1 AS a -- the model\n",
            "/* the model */ WITH x AS (SELECT 1 AS a) SELECT a FROM x",
            "VALUES (1)",
        ] {
            let mut source = open(query);
            let rows = read_all(&mut source);
            assert_eq!(rows.len(), 1, "{query}");
            assert_eq!(rows[0].values, [Value::Int(1)], "{query}");
        }
    }

    #[test]
    fn postgres_connection_refused_says_what_to_check() {
        let e = open_err(
            "postgres://postgres:s3cretPW@127.0.0.1:1/test",
            "SELECT 1 AS a",
        );
        let message = full_message(&e);
        assert!(matches!(e, Error::Open { .. }), "{e:?}");
        assert!(
            message.contains("cannot connect to PostgreSQL at 127.0.0.1:1: "),
            "{message}"
        );
        assert!(
            message.contains("is the server running? check `url`"),
            "{message}"
        );
        assert!(
            message.contains("postgres://postgres:***@127.0.0.1:1/test"),
            "{message}"
        );
        assert!(!message.contains("s3cretPW"), "{message}");
        assert!(!format!("{e:?}").contains("s3cretPW"));
    }

    #[test]
    fn postgres_unknown_host_says_what_to_check() {
        let e = open_err(
            "host=no-such-host.invalid port=5432 user=u password='s3cret PW' dbname=db",
            "SELECT 1 AS a",
        );
        let message = full_message(&e);
        assert!(
            message.contains("cannot connect to PostgreSQL at no-such-host.invalid:5432: "),
            "{message}"
        );
        assert!(message.contains("password=***"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn postgres_unknown_role_and_database_say_what_to_check() {
        // The test server trusts local connections, so a wrong password is accepted; an
        // unknown role is how a login gets refused here.
        let e = open_err(
            "postgres://no_such_role_xyz:s3cretPW@127.0.0.1:5432/test",
            "SELECT 1 AS a",
        );
        let message = full_message(&e);
        assert!(
            message.contains(
                "PostgreSQL at 127.0.0.1:5432 refused the login of user `no_such_role_xyz`: \
                 role \"no_such_role_xyz\" does not exist"
            ),
            "{message}"
        );
        assert!(!message.contains("s3cretPW"), "{message}");

        let e = open_err(
            "postgres://postgres:s3cretPW@127.0.0.1:5432/no_such_db_xyz",
            "SELECT 1 AS a",
        );
        let message = full_message(&e);
        assert!(
            message.contains("PostgreSQL at 127.0.0.1:5432 has no database `no_such_db_xyz`"),
            "{message}"
        );
        assert!(
            message.contains("check the database name in `url`"),
            "{message}"
        );
        assert!(!message.contains("s3cretPW"), "{message}");
    }

    #[test]
    fn postgres_wrong_password_message() {
        // The test server never asks for a password, so the message is checked on its own.
        let target = Target {
            at: "db.example.com:5432".to_owned(),
            user: Some("sync".to_owned()),
            dbname: Some("warehouse".to_owned()),
        };
        let message = login_message(
            &SqlState::INVALID_PASSWORD,
            "password authentication failed for user \"sync\" [SQLSTATE 28P01]",
            &target,
        );
        assert_eq!(
            message,
            "PostgreSQL at db.example.com:5432 rejected the user/password for user `sync`: \
             password authentication failed for user \"sync\" [SQLSTATE 28P01]; check the \
             user and password in `url`"
        );
    }

    #[test]
    fn postgres_password_in_url_is_accepted_and_hidden() {
        // With trust authentication the password is ignored, but it must never show.
        let _scratch = Scratch::new();
        let source = PostgresSource::open(
            "postgres://postgres:hunter2pw@127.0.0.1:5432/test",
            "SELECT 1 AS a",
        )
        .unwrap_or_else(|e| panic!("{}", full_message(&e)));
        let debug = format!("{source:?}");
        assert!(
            debug.contains("postgres://postgres:***@127.0.0.1:5432/test"),
            "{debug}"
        );
        assert!(!debug.contains("hunter2pw"), "{debug}");
    }

    #[test]
    fn postgres_bad_url_is_an_options_error() {
        let e = open_err(
            "postgres://u:s3cretPW@127.0.0.1:notaport/db",
            "SELECT 1 AS a",
        );
        assert!(matches!(e, Error::Options { .. }), "{e:?}");
        let message = full_message(&e);
        assert!(
            message.contains("the PostgreSQL `url` cannot be read"),
            "{message}"
        );
        assert!(!message.contains("s3cretPW"), "{message}");
        let e = open_err("user=u password=s3cretPW dbname=db", "SELECT 1 AS a");
        let message = full_message(&e);
        assert!(message.contains("names no host"), "{message}");
        assert!(!message.contains("s3cretPW"), "{message}");
    }

    #[test]
    fn postgres_syntax_error_shows_where() {
        let _scratch = Scratch::new();
        let url = test_url().replace("postgres@", "postgres:s3cretPW@");
        let e = open_err(&url, "SELECT id,\n       email,\nFROM people");
        assert!(matches!(e, Error::Open { .. }), "{e:?}");
        let message = full_message(&e);
        assert!(
            message.contains(
                "the `query` has a syntax error: syntax error at or near \"FROM\" at line 3, \
                 column 1 of the query (`FROM people`) [SQLSTATE 42601]; fix `query`"
            ),
            "{message}"
        );
        assert!(!message.contains("s3cretPW"), "{message}");
        let e = open_err(&url, "SELECT nope FROM no_such_table_xyz");
        let message = full_message(&e);
        assert!(
            message.contains(
                "the `query` is invalid: relation \"no_such_table_xyz\" does not exist at line \
                 1, column 18 of the query (`SELECT nope FROM no_such_table_xyz`) [SQLSTATE \
                 42P01]; fix `query`"
            ),
            "{message}"
        );
    }

    #[test]
    fn postgres_permission_denied_says_what_to_grant() {
        let mut scratch = Scratch::new();
        let role = scratch.role("reader");
        scratch.exec(&format!(
            "CREATE TABLE {{s}}.secret (email text);
             GRANT USAGE ON SCHEMA {{s}} TO {role};"
        ));
        let url = format!("postgres://{role}:s3cretPW@127.0.0.1:5432/test");
        let e = open_err(
            &url,
            &format!("SELECT email FROM {}.secret", scratch.schema),
        );
        assert!(matches!(e, Error::Open { .. }), "{e:?}");
        let message = full_message(&e);
        assert!(
            message.contains(&format!(
                "PostgreSQL refused the `query` to user `{role}`: permission denied for table \
                 secret [SQLSTATE 42501]"
            )),
            "{message}"
        );
        assert!(message.contains("grant it SELECT"), "{message}");
        assert!(!message.contains("s3cretPW"), "{message}");
    }

    #[test]
    fn postgres_connection_killed_mid_stream_is_an_error() {
        let mut scratch = Scratch::new();
        let mut source = PostgresSource::open(
            &test_url().replace("postgres@", "postgres:s3cretPW@"),
            "SELECT g AS id FROM generate_series(1, 50000) g",
        )
        .unwrap();
        let mut row = SourceRow::default();
        for _ in 0..10 {
            assert!(source.next_row(&mut row).unwrap());
        }
        let pid = source.backend_pid();
        let killed: bool = scratch
            .client
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap()
            .get(0);
        assert!(killed);
        // Wait until the backend is gone.
        for _ in 0..100 {
            let alive = scratch
                .client
                .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
                .unwrap()
                .is_some();
            if !alive {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The rows already fetched come out; then reading fails, and keeps failing.
        let mut read = 10u64;
        let error = loop {
            match source.next_row(&mut row) {
                Ok(true) => read += 1,
                Ok(false) => panic!("a lost connection read as the end of the model"),
                Err(e) => break e,
            }
            assert!(read < 50_000, "the stream never failed");
        };
        assert!(matches!(error, Error::Read { .. }), "{error:?}");
        let message = full_message(&error);
        assert!(
            message.contains(&format!(
                "the connection to PostgreSQL was lost after {read} record(s)"
            )),
            "{message}"
        );
        assert!(
            message.contains("the model was not read to the end"),
            "{message}"
        );
        assert!(!message.contains("s3cretPW"), "{message}");
        for _ in 0..3 {
            assert!(source.next_row(&mut row).is_err());
        }
        drop(scratch);
    }

    #[test]
    fn postgres_query_failing_mid_stream_is_an_error() {
        let _scratch = Scratch::new();
        let mut source = open("SELECT 1 / (5000 - g) AS x FROM generate_series(1, 10000) g");
        let mut row = SourceRow::default();
        let mut read = 0u64;
        let error = loop {
            match source.next_row(&mut row) {
                Ok(true) => read += 1,
                Ok(false) => panic!("a failed query read as the end of the model"),
                Err(e) => break e,
            }
        };
        assert!(read < 5000);
        let message = full_message(&error);
        assert!(
            message.contains(&format!(
                "PostgreSQL stopped the query after {read} record(s): division by zero"
            )),
            "{message}"
        );
        assert!(source.next_row(&mut row).is_err());
    }

    /// Where `cargo xtask test` (or `cargo xtask postgres`) keeps the test server's TLS
    /// certificates (`xtask/src/postgres_tls.rs`): `ca.crt` signed `server.crt` (for
    /// `localhost` and `127.0.0.1`); `other-ca.crt` signed nothing the server has.
    const PG_TLS_DIR: &str = "/var/lib/postgresql/attentive-sync-test-tls";
    /// The server the TLS tests use: the certificate names it.
    const TLS_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    /// The test CA and the other CA, when the server on 127.0.0.1:5432 presents the test
    /// certificate; else the test is skipped (it fails instead when `cargo xtask test` set
    /// the certificate up, which it says in `ATTENTIVE_SYNC_TEST_PG_TLS`).
    fn test_cas() -> Option<(String, String)> {
        let dir = Path::new(PG_TLS_DIR);
        let (ca, other) = (dir.join("ca.crt"), dir.join("other-ca.crt"));
        let served: Result<(String, String), String> = Client::connect(TLS_URL, NoTls)
            .and_then(|mut c| {
                let row = c.query_one(
                    "SELECT current_setting('ssl'), current_setting('ssl_cert_file')",
                    &[],
                )?;
                Ok((row.try_get(0)?, row.try_get(1)?))
            })
            .map_err(|e| describe(&e));
        let cert = dir.join("server.crt").display().to_string();
        let why = match served {
            Err(e) => format!("PostgreSQL at 127.0.0.1:5432 cannot be reached ({e})"),
            Ok((ssl, _)) if ssl != "on" => "PostgreSQL at 127.0.0.1:5432 has ssl off".to_owned(),
            Ok((_, file)) if file != cert => {
                format!("PostgreSQL at 127.0.0.1:5432 serves {file}, not {cert}")
            }
            Ok(_) if !ca.is_file() || !other.is_file() => format!("{PG_TLS_DIR} lacks a CA"),
            Ok(_) => {
                return Some((ca.display().to_string(), other.display().to_string()));
            }
        };
        let message = format!(
            "{why}; `cargo xtask postgres` (as root) gives the server the test certificate"
        );
        if std::env::var_os("ATTENTIVE_SYNC_TEST_PG_TLS").is_some() {
            panic!("{message}");
        }
        eprintln!("skipped: {message}");
        None
    }

    /// Whether the connection of `url` uses TLS, as the server sees it.
    fn uses_tls(url: &str) -> bool {
        let mut source = PostgresSource::open(
            url,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .unwrap_or_else(|e| panic!("{url}: {}", full_message(&e)));
        match read_all(&mut source).as_slice() {
            [row] => row.values == [Value::Bool(true)],
            rows => panic!("{url}: {rows:?}"),
        }
    }

    #[test]
    fn postgres_tls_require_encrypts_and_reads_rows() {
        if test_cas().is_none() {
            return;
        }
        let url = format!("{TLS_URL}?sslmode=require");
        assert!(uses_tls(&url));
        let mut source = PostgresSource::open(
            &url,
            "SELECT v FROM generate_series(1, 3) AS t(v) ORDER BY v",
        )
        .unwrap_or_else(|e| panic!("{}", full_message(&e)));
        let values: Vec<Value> = read_all(&mut source)
            .into_iter()
            .flat_map(|row| row.values)
            .collect();
        assert_eq!(values, [Value::Int(1), Value::Int(2), Value::Int(3)]);
        // libpq's default, prefer, takes TLS when the server offers it; disable never does.
        assert!(uses_tls(TLS_URL));
        assert!(!uses_tls(&format!("{TLS_URL}?sslmode=disable")));
        assert!(!uses_tls(
            "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable"
        ));
    }

    #[test]
    fn postgres_tls_verify_full_with_the_right_ca_reads_rows() {
        let Some((ca, _)) = test_cas() else { return };
        // The certificate names both; an IP address is checked against its IP entries.
        for host in ["localhost", "127.0.0.1"] {
            assert!(uses_tls(&format!(
                "postgres://postgres@{host}:5432/test?sslmode=verify-full&sslrootcert={ca}"
            )));
        }
        assert!(uses_tls(&format!(
            "host=localhost port=5432 user=postgres dbname=test sslmode='verify-full' \
             sslrootcert='{ca}'"
        )));
    }

    #[test]
    fn postgres_tls_another_ca_is_refused_naming_the_problem() {
        let Some((_, other)) = test_cas() else { return };
        let e = open_err(
            &format!(
                "postgres://postgres:s3cretPW@localhost:5432/test?sslmode=verify-full&\
                 sslrootcert={other}"
            ),
            "SELECT 1 AS a",
        );
        assert!(matches!(e, Error::Open { .. }), "{e:?}");
        let message = full_message(&e);
        assert!(
            message.contains(&format!(
                "the TLS handshake with PostgreSQL at localhost:5432 failed \
                 (sslmode=verify-full): its certificate is not signed by a trusted CA \
                 (trusted: the CA certificates in sslrootcert={other}); set sslrootcert to \
                 the PEM file of the CA that signed it"
            )),
            "{message}"
        );
        assert!(!message.contains("s3cretPW"), "{message}");
        // Without sslrootcert: the bundled roots, which do not hold the test CA.
        let message = full_message(&open_err(
            "postgres://postgres@localhost:5432/test?sslmode=verify-ca",
            "SELECT 1 AS a",
        ));
        assert!(
            message.contains("(sslmode=verify-ca): its certificate is not signed by a trusted CA (trusted: the Mozilla roots bundled"),
            "{message}"
        );
        // require with a root certificate verifies the chain, as libpq does.
        let message = full_message(&open_err(
            &format!("{TLS_URL}?sslmode=require&sslrootcert={other}"),
            "SELECT 1 AS a",
        ));
        assert!(
            message.contains("(sslmode=require): its certificate is not signed by a trusted CA"),
            "{message}"
        );
    }

    #[test]
    fn postgres_tls_verify_full_checks_the_host_name_and_verify_ca_does_not() {
        let Some((ca, _)) = test_cas() else { return };
        // Connect to 127.0.0.1, but check the certificate against another name.
        let url = |mode: &str| {
            format!(
                "host=db.example.invalid hostaddr=127.0.0.1 port=5432 user=postgres \
                 dbname=test sslmode={mode} sslrootcert={ca}"
            )
        };
        let e = open_err(&url("verify-full"), "SELECT 1 AS a");
        assert!(matches!(e, Error::Open { .. }), "{e:?}");
        let message = full_message(&e);
        assert!(
            message.contains(
                "the TLS handshake with PostgreSQL at db.example.invalid:5432 failed \
                 (sslmode=verify-full): its certificate is not issued for the host name \
                 `db.example.invalid` (it names localhost, 127.0.0.1)"
            ),
            "{message}"
        );
        assert!(message.contains("or use sslmode=verify-ca"), "{message}");
        // verify-ca checks who signed the certificate, not whom it is for.
        assert!(uses_tls(&url("verify-ca")));
    }

    #[test]
    fn postgres_tls_require_refuses_a_server_without_tls() {
        // A server that answers the TLS request with "N" (no TLS), as PostgreSQL with ssl off.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0; 8];
            stream.read_exact(&mut request).unwrap();
            // Length 8, then the SSLRequest code 80877103.
            assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47]);
            stream.write_all(b"N").unwrap();
            let _ = stream.read(&mut [0; 64]);
        });
        let e = open_err(
            &format!("postgres://u:s3cretPW@127.0.0.1:{port}/db?sslmode=require"),
            "SELECT 1 AS a",
        );
        server.join().unwrap();
        assert!(matches!(e, Error::Open { .. }), "{e:?}");
        let message = full_message(&e);
        assert!(
            message.contains(&format!(
                "PostgreSQL at 127.0.0.1:{port} does not accept TLS connections, and the \
                 `url` asks for sslmode=require; turn `ssl` on in the server's \
                 configuration, or use sslmode=prefer"
            )),
            "{message}"
        );
        assert!(!message.contains("s3cretPW"), "{message}");
    }

    #[test]
    fn postgres_bad_tls_options_are_options_errors() {
        let check = |url: &str, expected: &[&str]| {
            let e = open_err(url, "SELECT 1 AS a");
            assert!(matches!(e, Error::Options { .. }), "{url}: {e:?}");
            let message = full_message(&e);
            for part in expected {
                assert!(message.contains(part), "{url}: {message}");
            }
            assert!(!message.contains("s3cretPW"), "{message}");
        };
        check(
            "postgres://u:s3cretPW@127.0.0.1:5432/db?sslmode=verify_full",
            &[
                "`sslmode=verify_full` in the PostgreSQL `url` is not a TLS mode; use one of \
                 disable, allow, prefer, require, verify-ca or verify-full",
                "postgres://u:***@127.0.0.1:5432/db",
            ],
        );
        check(
            "host=127.0.0.1 user=u password=s3cretPW sslmode=on",
            &["`sslmode=on`", "verify-full", "password=***"],
        );
        check(
            "postgres://u:s3cretPW@127.0.0.1/db?sslmode=verify-full&sslrootcert=/no/such/ca.pem",
            &[
                "`sslrootcert=/no/such/ca.pem` in the PostgreSQL `url` cannot be read (No such \
                 file or directory",
                "give the absolute path of a PEM file",
            ],
        );
        check(
            "postgres://u:s3cretPW@127.0.0.1/db?sslmode=verify-ca&sslrootcert=certs/ca.pem",
            &["`sslrootcert=certs/ca.pem` in the PostgreSQL `url` is a relative path"],
        );
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate\n").unwrap();
        check(
            &format!(
                "postgres://u:s3cretPW@127.0.0.1/db?sslmode=verify-full&sslrootcert={}",
                not_pem.display()
            ),
            &["holds no usable CA certificate (it holds no -----BEGIN CERTIFICATE----- block)"],
        );
        check(
            "postgres://u:s3cretPW@/db?host=/var/run/postgresql&sslmode=require",
            &["`sslmode=require` in the PostgreSQL `url` needs TLS, which needs the server's host name"],
        );
    }

    #[test]
    fn redacts_passwords_in_urls() {
        let cases = [
            (
                "postgres://user:secret@host/db",
                "postgres://user:***@host/db",
            ),
            (
                "postgresql://user:secret@host:5432/db?sslmode=disable",
                "postgresql://user:***@host:5432/db?sslmode=disable",
            ),
            (
                "postgres://user:p@ss:w/rd@host/db",
                "postgres://user:***@host/db",
            ),
            ("postgres://user@host/db", "postgres://user@host/db"),
            ("postgres://host/db", "postgres://host/db"),
            (
                "postgres://host/db?user=u&password=secret&x=1",
                "postgres://host/db?user=u&password=***&x=1",
            ),
            (
                "postgres://user:se%40cret@host/db",
                "postgres://user:***@host/db",
            ),
            (
                "postgres://user:secret@host/db?application_name=a@b",
                "postgres://user:***@host/db?application_name=a@b",
            ),
            (
                "host=h user=u password=secret dbname=d",
                "host=h user=u password=*** dbname=d",
            ),
            (
                "host=h password = 'se cr\\'et' dbname=d",
                "host=h password = *** dbname=d",
            ),
            ("password=secret", "password=***"),
            ("host=h password='unterminated secret", "host=h ***"),
            ("host=h password", "host=h ***"),
            ("host=h user=u", "host=h user=u"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn numeric_wire_form_decodes() {
        let wire = |ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]| {
            let mut raw = Vec::new();
            for w in [ndigits, weight as u16, sign, dscale].iter().chain(digits) {
                raw.extend_from_slice(&w.to_be_bytes());
            }
            let mut out = String::new();
            numeric_text(&raw, &mut out).map(|d| (d, out))
        };
        let finite = |s: &str| Ok((Decimal::Finite, s.to_owned()));
        assert_eq!(wire(2, 0, 0, 2, &[12, 5000]), finite("12.50"));
        assert_eq!(wire(1, -2, 0x4000, 5, &[1000]), finite("-0.00001"));
        assert_eq!(wire(1, 2, 0, 0, &[7]), finite("700000000"));
        assert_eq!(wire(0, 0, 0, 3, &[]), finite("0.000"));
        assert_eq!(wire(0, 0, 0x4000, 0, &[]), finite("0"));
        assert_eq!(wire(0, 0, 0xC000, 0, &[]).map(|r| r.0), Ok(Decimal::NaN));
        assert_eq!(
            wire(0, 0, 0xF000, 0, &[]).map(|r| r.0),
            Ok(Decimal::Infinity(true))
        );
        assert!(wire(1, 0, 0, 0, &[10_000]).is_err());
        assert!(wire(2, 0, 0, 0, &[1]).is_err());
        assert!(wire(0, 0, 0x1234, 0, &[]).is_err());
        let mut out = String::new();
        assert!(numeric_text(&[0, 1], &mut out).is_err());
    }

    #[test]
    fn pg_epochs_are_right() {
        assert_eq!(date_from_pg(0), NaiveDate::from_ymd_opt(2000, 1, 1));
        let mut out = String::new();
        timestamp_text(0, &mut out).unwrap();
        assert_eq!(out, "2000-01-01T00:00:00Z");
        assert!(date_from_pg(i32::MAX - 1).is_none());
    }
}
