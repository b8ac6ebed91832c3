//! Connecting to PostgreSQL (the target, TLS) and the messages of what went wrong, with
//! passwords scrubbed and URLs redacted.

use std::fmt::Write as _;

use super::*;

/// Where the source connects, for messages (never with the password).
pub(super) struct Target {
    /// `host:port`, comma-separated when the `url` names several hosts.
    pub(super) at: String,
    pub(super) user: Option<String>,
    pub(super) dbname: Option<String>,
}

impl Target {
    pub(super) fn of(config: &Config) -> Target {
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

    pub(super) fn user(&self) -> String {
        match &self.user {
            Some(user) => format!("user `{user}`"),
            None => "the default user".to_owned(),
        }
    }
}

/// How the source connects: with TLS or without, and what it checks of the server's
/// certificate (`sslmode` and `sslrootcert`, as libpq reads them).
pub(super) struct Tls {
    pub(super) mode: TlsMode,
    /// The `sslrootcert` file, when the `url` names one.
    pub(super) root_cert: Option<PathBuf>,
    /// The host name(s) the certificate is checked against, for messages.
    pub(super) names: String,
    /// The TLS client, for every mode that may use TLS; `None` when the connection goes
    /// without.
    pub(super) connector: Option<MakeRustlsConnect>,
}

impl Tls {
    /// The TLS of a `url`; fails with a message naming the key, its value and what would be
    /// valid.
    pub(super) fn of(options: &TlsOptions, config: &Config) -> Result<Tls, String> {
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
    pub(super) fn connect(&self, config: &mut Config) -> Result<Client, postgres::Error> {
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
    pub(super) fn failure(&self, e: &postgres::Error, target: &Target) -> Option<String> {
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
pub(super) fn tls_error(e: &postgres::Error) -> Option<&rustls::Error> {
    io_source(e)?.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The message of an error and of its causes, joined by `: `.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
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
pub(super) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => server_said(db, ""),
        None => chain(e),
    }
}

/// The server's message, `at` (where in the query), its detail and hint, and its SQLSTATE code.
pub(super) fn server_said(db: &DbError, at: &str) -> String {
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
pub(super) fn scrub(s: String, secret: Option<&str>) -> String {
    match secret {
        Some(secret) if !secret.is_empty() && s.contains(secret) => s.replace(secret, "***"),
        _ => s,
    }
}

/// Whether an error means the connection is gone (closed, reset, or ended by the server).
pub(super) fn is_connection_lost(e: &postgres::Error) -> bool {
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

pub(super) fn connect_error_kind(e: &postgres::Error) -> io::ErrorKind {
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
pub(super) fn io_source(e: &postgres::Error) -> Option<&io::Error> {
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
pub(super) fn connect_message(e: &postgres::Error, target: &Target, tls: &Tls) -> String {
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
pub(super) fn login_message(code: &SqlState, said: &str, target: &Target) -> String {
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

pub(super) fn query_error_kind(e: &postgres::Error) -> io::ErrorKind {
    match e.code() {
        Some(code) if *code == SqlState::INSUFFICIENT_PRIVILEGE => io::ErrorKind::PermissionDenied,
        Some(_) if !is_connection_lost(e) => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::ConnectionAborted,
    }
}

/// Why the query was refused, where in it, and what to fix. `offset` is how many characters
/// were sent before the query (error positions count them); `None` when what was sent is not
/// the query (positions are then ignored).
pub(super) fn query_message(
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
pub(super) fn position(db: &DbError, query: &str, offset: usize) -> String {
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

pub(super) fn redact_uri(url: &str) -> String {
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

pub(super) fn redact_conninfo(s: &str) -> String {
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
pub(super) fn conninfo_value_len(s: &str) -> Option<usize> {
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
