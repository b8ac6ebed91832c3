//! Authentication: the server token (bearer, for the API), dashboard sessions (a random id in
//! an `HttpOnly; SameSite=Strict` cookie, never the token itself) and per-session CSRF tokens.
//!
//! Secrets are compared in constant time ([`subtle`]) and never printed: [`ServerToken`]'s
//! `Debug` is redacted, and session ids and CSRF tokens appear only in the cookie and forms
//! of their own session.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::error::Error;

/// The environment variable holding the server token.
pub const TOKEN_ENV: &str = "ATTENTIVE_SYNC_SERVER_TOKEN";
/// The shortest server token accepted.
pub const MIN_TOKEN_LEN: usize = 16;
/// The dashboard session cookie.
pub const SESSION_COOKIE: &str = "attentive_sync_session";
/// How long a dashboard session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest are dropped beyond that.
const MAX_SESSIONS: usize = 10_000;

/// Failed logins and wrong bearer tokens allowed per client address in one window.
pub const FAILURES_PER_CLIENT: u32 = 20;
/// Failed attempts allowed from all addresses together in one window.
pub const FAILURES_IN_ALL: u32 = 200;
/// The window the failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Counts failed logins and wrong bearer tokens per client address and in all, in windows of
/// [`FAILURE_WINDOW`]. An address past [`FAILURES_PER_CLIENT`] failures is refused (429,
/// without its token being checked) until the window ends; past [`FAILURES_IN_ALL`] failures
/// from everyone, every address that failed in the window is, while addresses that did not
/// fail still get in. Each failure is logged with its address (the first of a window, then
/// every tenth).
#[derive(Debug)]
pub struct AuthThrottle {
    state: Mutex<ThrottleState>,
}

#[derive(Debug)]
struct ThrottleState {
    since: Instant,
    per_client: HashMap<Option<std::net::IpAddr>, u32>,
    total: u32,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle {
            state: Mutex::new(ThrottleState {
                since: Instant::now(),
                per_client: HashMap::new(),
                total: 0,
            }),
        }
    }
}

impl AuthThrottle {
    fn state(&self) -> std::sync::MutexGuard<'_, ThrottleState> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.since.elapsed() >= FAILURE_WINDOW {
            *s = ThrottleState {
                since: Instant::now(),
                per_client: HashMap::new(),
                total: 0,
            };
        }
        s
    }

    /// Whether attempts from `client` are refused for now (checked before the token is).
    pub fn refuses(&self, client: Option<std::net::IpAddr>) -> bool {
        let s = self.state();
        let mine = s.per_client.get(&client).copied().unwrap_or(0);
        mine >= FAILURES_PER_CLIENT || (s.total >= FAILURES_IN_ALL && mine > 0)
    }

    /// Counts a failed attempt of `client` (`what`: "login", "bearer token").
    pub fn failed(&self, client: Option<std::net::IpAddr>, what: &str) {
        let mut s = self.state();
        s.total += 1;
        let n = {
            let n = s.per_client.entry(client).or_insert(0);
            *n += 1;
            *n
        };
        if n == 1 || n.is_multiple_of(10) {
            let address = client.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
            tracing::warn!(
                client = %address,
                failures = n,
                in_all = s.total,
                "{what} refused: wrong server token"
            );
        }
    }
}

/// Whether two secrets are equal, in time that does not depend on where they differ (only
/// on their lengths).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The secret that opens the API (as a bearer token) and the dashboard (at login).
#[derive(Clone)]
pub struct ServerToken(Arc<[u8]>);

impl fmt::Debug for ServerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerToken(<redacted>)")
    }
}

impl ServerToken {
    /// A token from its text (surrounding whitespace, e.g. a file's final newline, is
    /// dropped); `source_name` says where it came from, for messages.
    pub fn new(text: &str, source_name: &str) -> Result<ServerToken, Error> {
        let t = text.trim();
        if t.chars().count() < MIN_TOKEN_LEN {
            return Err(Error::WeakToken {
                source_name: source_name.to_owned(),
                len: t.chars().count(),
                min: MIN_TOKEN_LEN,
            });
        }
        Ok(ServerToken(Arc::from(t.as_bytes())))
    }

    /// The token from `token_file` if given, else from the environment variable's value
    /// (`env`); an error that says how to set one when there is none.
    pub fn load(token_file: Option<&Path>, env: Option<String>) -> Result<ServerToken, Error> {
        if let Some(path) = token_file {
            let text = std::fs::read_to_string(path).map_err(|source| Error::TokenFile {
                path: path.to_owned(),
                source,
            })?;
            return ServerToken::new(&text, &path.display().to_string());
        }
        match env {
            Some(v) if !v.trim().is_empty() => ServerToken::new(&v, TOKEN_ENV),
            _ => Err(Error::NoToken { min: MIN_TOKEN_LEN }),
        }
    }

    /// Whether `candidate` is the token (constant time).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        ct_eq(&self.0, candidate)
    }

    /// Whether the request carries `Authorization: Bearer TOKEN` with this token.
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|t| self.matches(t))
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (scheme in any case).
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(rest.trim_ascii())
}

/// A random secret: 32 bytes from a CSPRNG, as 64 hex digits.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A logged-in dashboard session.
#[derive(Clone)]
pub struct Session {
    /// The session's id (the cookie's value).
    pub id: String,
    /// The token every form of this session carries.
    pub csrf: String,
    expires: Instant,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Session(<redacted>)")
    }
}

impl Session {
    /// Whether a submitted form carries this session's CSRF token (constant time).
    pub fn csrf_ok(&self, submitted: Option<&str>) -> bool {
        submitted.is_some_and(|s| ct_eq(self.csrf.as_bytes(), s.as_bytes()))
    }
}

/// Dashboard sessions, in memory (a restart logs everyone out).
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// A new session, valid for [`SESSION_TTL`].
    pub fn create(&self) -> Session {
        let session = Session {
            id: random_secret(),
            csrf: random_secret(),
            expires: Instant::now() + SESSION_TTL,
        };
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(session.id.clone(), session.clone());
        session
    }

    /// The live session with this id.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// The session of a request's cookie.
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<Session> {
        cookie(headers, SESSION_COOKIE).and_then(|id| self.get(id))
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

/// The `Set-Cookie` value that starts a session: never readable by scripts, never sent by
/// other sites, `Secure` when the server is served over https.
pub fn session_cookie(id: &str, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_session_cookie(secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::http::HeaderValue;

    const TOKEN: &str = "0123456789abcdef-secret";

    #[test]
    fn failures_are_throttled_per_client_and_in_all() {
        let t = AuthThrottle::default();
        let a = Some(std::net::IpAddr::from([10, 0, 0, 1]));
        let b = Some(std::net::IpAddr::from([10, 0, 0, 2]));
        for _ in 0..FAILURES_PER_CLIENT {
            assert!(!t.refuses(a));
            t.failed(a, "login");
        }
        assert!(t.refuses(a), "past its limit");
        assert!(!t.refuses(b), "another address is not affected");
        for i in 0..FAILURES_IN_ALL {
            t.failed(
                Some(std::net::IpAddr::from([
                    10,
                    1,
                    (i / 250) as u8,
                    (i % 250) as u8,
                ])),
                "bearer token",
            );
        }
        t.failed(b, "login");
        assert!(
            t.refuses(b),
            "everyone who failed, once the total is past its limit"
        );
        assert!(
            !t.refuses(Some(std::net::IpAddr::from([10, 9, 9, 9]))),
            "but not who never failed"
        );
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"", b"a"));
        let t = ServerToken::new(TOKEN, "test").unwrap();
        assert!(t.matches(TOKEN.as_bytes()));
        assert!(!t.matches(b"0123456789abcdef-secreT"));
        assert!(!t.matches(b""));
    }

    #[test]
    fn tokens_are_trimmed_checked_and_never_printed() {
        let t = ServerToken::new(&format!("  {TOKEN}\n"), "file").unwrap();
        assert!(t.matches(TOKEN.as_bytes()));
        assert_eq!(format!("{t:?}"), "ServerToken(<redacted>)");
        let e = ServerToken::new("short", "ENV").unwrap_err().to_string();
        assert!(e.contains("5 characters") && e.contains("ENV"), "{e}");
        assert!(!e.contains("short"), "{e}");
        let e = ServerToken::load(None, None).unwrap_err();
        assert!(matches!(e, Error::NoToken { .. }));
        let e = ServerToken::load(None, Some("  ".into())).unwrap_err();
        assert!(matches!(e, Error::NoToken { .. }));
        assert!(ServerToken::load(None, Some(TOKEN.into())).is_ok());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
        let t = ServerToken::load(Some(&file), Some("ignored-because-a-file-wins".into()));
        assert!(t.unwrap().matches(TOKEN.as_bytes()));
        let e = ServerToken::load(Some(&dir.path().join("missing")), None).unwrap_err();
        assert!(matches!(e, Error::TokenFile { .. }));
    }

    #[test]
    fn bearer_headers() {
        let t = ServerToken::new(TOKEN, "test").unwrap();
        let mut h = HeaderMap::new();
        assert!(!t.authorizes(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
        );
        assert!(t.authorizes(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("bearer  {TOKEN} ")).unwrap(),
        );
        assert!(t.authorizes(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {TOKEN}")).unwrap(),
        );
        assert!(!t.authorizes(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer wrong"),
        );
        assert!(!t.authorizes(&h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bear"));
        assert!(!t.authorizes(&h));
    }

    #[test]
    fn cookie_flags() {
        let c = session_cookie("abc", false);
        assert_eq!(
            c,
            "attentive_sync_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"
        );
        let c = session_cookie("abc", true);
        assert!(c.ends_with("; Secure"), "{c}");
        let c = clear_session_cookie(false);
        assert!(c.contains("Max-Age=0") && c.contains("HttpOnly"), "{c}");

        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("attentive_sync_session=xyz"),
        );
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn sessions_and_csrf() {
        let sessions = Sessions::default();
        let s = sessions.create();
        assert_eq!(s.id.len(), 64);
        assert_ne!(s.id, s.csrf);
        assert_eq!(format!("{s:?}"), "Session(<redacted>)");
        let got = sessions.get(&s.id).unwrap();
        assert!(got.csrf_ok(Some(&s.csrf)));
        assert!(!got.csrf_ok(None));
        assert!(!got.csrf_ok(Some("")));
        assert!(!got.csrf_ok(Some(&s.id)));
        let other = sessions.create();
        assert!(
            !got.csrf_ok(Some(&other.csrf)),
            "CSRF tokens are per session"
        );

        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{SESSION_COOKIE}={}", s.id)).unwrap(),
        );
        assert!(sessions.from_headers(&h).is_some());
        sessions.remove(&s.id);
        assert!(sessions.get(&s.id).is_none());
        assert!(sessions.from_headers(&h).is_none());
        assert!(sessions.get("not-a-session").is_none());
    }
}
