//! The client against tiny fake Attentive servers on 127.0.0.1 (never the internet).

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attentive_client::{ApiKey, Client, ClientConfig, Error, ExistenceStrategy, RetryBudget};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use sync_core::mapping::{AttributeId, IdentifierKind, StandardField};
use sync_core::ports::{ContactRef, ContactWrite, Destination, Existence, Lookup, WriteOutcome};
use sync_core::value::{Canonical, NumberText};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request the fake saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    authorization: Option<String>,
    user_agent: Option<String>,
    content_type: Option<String>,
    body: String,
    at: SystemTime,
}

/// What the fake answers next.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: body.to_owned(),
        delay: Duration::ZERO,
    }
}

impl Reply {
    fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_owned()));
        self
    }
    fn delayed(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

/// A scripted server: answers the replies in order, then `202 {}` forever.
#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

impl Fake {
    async fn start(replies: Vec<Reply>) -> (Fake, String) {
        let fake = Fake::default();
        fake.script.lock().unwrap().extend(replies);
        let app = Router::new().fallback(handle).with_state(fake.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, format!("http://{addr}"))
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(State(fake): State<Fake>, req: Request) -> Response {
    let at = SystemTime::now();
    // Read in a block: a borrow of the (non-`Sync`) body must not live across an await.
    let mut seen = {
        let header = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Seen {
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(str::to_owned),
            authorization: header("authorization"),
            user_agent: header("user-agent"),
            content_type: header("content-type"),
            body: String::new(),
            at,
        }
    };
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    seen.body = String::from_utf8(bytes.to_vec()).unwrap();
    fake.seen.lock().unwrap().push(seen);
    let next = fake.script.lock().unwrap().pop_front();
    let r = next.unwrap_or_else(|| reply(202, "{}"));
    tokio::time::sleep(r.delay).await;
    let mut resp = Response::new(Body::from(r.body));
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap();
    for (k, v) in r.headers {
        resp.headers_mut().insert(
            HeaderName::from_static(k),
            HeaderValue::from_str(&v).unwrap(),
        );
    }
    resp
}

/// A config for tests: a key of its own (budgets are shared per key in the process), fast
/// retries.
fn config(base: &str, key: &str) -> ClientConfig {
    let mut c = ClientConfig::new(ApiKey::new(key.to_owned()));
    c.base_url = base.to_owned();
    c.requests_per_second = 1000.0;
    c.timeout = Duration::from_secs(5);
    c.max_retries = 3;
    c.retry_base = Duration::from_millis(5);
    c.retry_max_delay = Duration::from_millis(200);
    c
}

fn client(base: &str, key: &str) -> Client {
    Client::new(config(base, key)).unwrap()
}

/// A client that checks existence through `GET /v1/subscriptions` only.
fn rest_client(base: &str, key: &str) -> Client {
    let mut c = config(base, key);
    c.existence_check = ExistenceStrategy::Subscriptions;
    Client::new(c).unwrap()
}

fn by_email(key: &str) -> ContactRef {
    ContactRef {
        kind: IdentifierKind::Email,
        key: key.to_owned(),
    }
}

fn by_phone(key: &str) -> ContactRef {
    ContactRef {
        kind: IdentifierKind::Phone,
        key: key.to_owned(),
    }
}

fn sample_write() -> ContactWrite {
    ContactWrite {
        contact: by_email("ann@example.com"),
        attributes: vec![
            (
                AttributeId::Standard(StandardField::FirstName),
                Some(Canonical::Text("Ann".into())),
            ),
            (
                AttributeId::Custom("Lifetime Value".into()),
                Some(Canonical::Number(NumberText::parse("412.50").unwrap())),
            ),
        ],
    }
}

#[tokio::test]
async fn write_is_acknowledged_and_well_formed() {
    let (fake, base) = Fake::start(vec![reply(202, r#"{"success":true,"message":"ok"}"#)]).await;
    let c = client(&base, "key-write-ok");
    let out = c.write(&sample_write()).await.unwrap();
    assert_eq!(out, WriteOutcome::Acknowledged);
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.path, "/v2/user/attributes");
    assert_eq!(s.authorization.as_deref(), Some("Bearer key-write-ok"));
    assert!(s
        .user_agent
        .as_deref()
        .unwrap()
        .starts_with("attentive-sync/"));
    assert_eq!(s.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        s.body,
        r#"{"attributes":{"custom":{"Lifetime Value":412.5},"firstName":"Ann"},"identifiers":{"email":"ann@example.com"}}"#
    );
    let stats = c.stats_snapshot();
    assert_eq!(stats.requests_sent, 1);
    assert_eq!(stats.by_status.get(&202), Some(&1));
    assert_eq!(stats.retries, 0);
}

#[tokio::test]
async fn custom_only_writes_use_v1_when_configured() {
    let (fake, base) = Fake::start(vec![reply(200, "{}")]).await;
    let mut cfg = config(&base, "key-v1");
    cfg.custom_only_v1 = true;
    let c = Client::new(cfg).unwrap();
    let write = ContactWrite {
        contact: by_phone("+14155550100"),
        attributes: vec![(
            AttributeId::Custom("vip".into()),
            Some(Canonical::Bool(true)),
        )],
    };
    assert_eq!(c.write(&write).await.unwrap(), WriteOutcome::Acknowledged);
    let s = &fake.seen()[0];
    assert_eq!(s.path, "/v1/attributes/custom");
    assert_eq!(
        s.body,
        r#"{"properties":{"vip":true},"user":{"phone":"+14155550100"}}"#
    );
}

#[tokio::test]
async fn unauthorized_stops_the_run_without_retrying() {
    let (fake, base) = Fake::start(vec![reply(401, "")]).await;
    let c = client(&base, "key-401");
    let err = c.write(&sample_write()).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(err.is_fatal());
    assert_eq!(
        err.to_string(),
        "the API key was rejected (401): check destinations.attentive.api_key"
    );
    assert_eq!(fake.seen().len(), 1);
    let (_, base) = Fake::start(vec![reply(401, "")]).await;
    assert!(matches!(
        client(&base, "key-401-me").me().await,
        Err(Error::Unauthorized { .. })
    ));
}

#[tokio::test]
async fn forbidden_names_the_missing_permission() {
    let (fake, base) = Fake::start(vec![reply(403, "Forbidden"), reply(403, "")]).await;
    let c = rest_client(&base, "key-403");
    match c.write(&sample_write()).await {
        Err(Error::Forbidden {
            endpoint,
            permission,
        }) => {
            assert_eq!(endpoint, "POST /v2/user/attributes");
            assert!(permission.contains("Custom Attributes"), "{permission}");
        }
        other => panic!("{other:?}"),
    }
    let err = c
        .check_exists(&by_email("ann@example.com"))
        .await
        .unwrap_err();
    assert!(err.is_fatal());
    let text = err.to_string();
    assert!(
        text.contains("GET /v1/subscriptions") && text.contains("Subscribers"),
        "{text}"
    );
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn bad_request_is_rejected_with_attentives_message() {
    let spring = r#"{"timestamp":"2025-07-22T04:41:12.731+00:00","status":400,"error":"Bad Request","message":"Invalid phone number","path":"/v2/user/attributes"}"#;
    let (fake, base) = Fake::start(vec![reply(400, spring), reply(422, "nope")]).await;
    let c = client(&base, "key-400");
    assert_eq!(
        c.write(&sample_write()).await.unwrap(),
        WriteOutcome::Rejected {
            message: "Invalid phone number".into()
        }
    );
    assert_eq!(
        c.write(&sample_write()).await.unwrap(),
        WriteOutcome::Rejected {
            message: "HTTP 422: nope".into()
        }
    );
    assert_eq!(fake.seen().len(), 2, "400s are never retried");
}

#[tokio::test]
async fn not_found_on_write() {
    let (_, base) = Fake::start(vec![reply(404, "")]).await;
    let c = client(&base, "key-404");
    assert_eq!(
        c.write(&sample_write()).await.unwrap(),
        WriteOutcome::NotFound
    );
}

#[tokio::test]
async fn server_error_then_success_is_acknowledged_after_a_retry() {
    let (fake, base) = Fake::start(vec![reply(500, "oops"), reply(202, "{}")]).await;
    let c = client(&base, "key-500");
    assert_eq!(
        c.write(&sample_write()).await.unwrap(),
        WriteOutcome::Acknowledged
    );
    assert_eq!(fake.seen().len(), 2);
    assert_eq!(fake.seen()[0].body, fake.seen()[1].body);
    let stats = c.stats_snapshot();
    assert_eq!(stats.retries, 1);
    assert_eq!(stats.requests_sent, 2);
    assert_eq!(stats.by_class.server_error, 1);
    assert_eq!(stats.by_class.success, 1);
}

#[tokio::test]
async fn persistent_failure_is_a_failed_write() {
    let (fake, base) = Fake::start(vec![reply(503, "down"); 10]).await;
    let c = client(&base, "key-503");
    match c.write(&sample_write()).await.unwrap() {
        WriteOutcome::Failed { reason } => {
            assert!(reason.contains("gave up after 4 attempt(s)"), "{reason}");
            assert!(reason.contains("HTTP 503: down"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.seen().len(), 4, "1 + max_retries attempts");
    assert_eq!(c.stats_snapshot().retries, 3);
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let (fake, base) = Fake::start(vec![
        reply(429, "").header("retry-after", "1"),
        reply(202, "{}"),
    ])
    .await;
    let mut cfg = config(&base, "key-429-ra");
    cfg.retry_max_delay = Duration::from_secs(2);
    let c = Client::new(cfg).unwrap();
    let start = std::time::Instant::now();
    assert_eq!(
        c.write(&sample_write()).await.unwrap(),
        WriteOutcome::Acknowledged
    );
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let stats = c.stats_snapshot();
    assert_eq!(stats.rate_limited, 1);
    assert_eq!(stats.retries, 1);
    assert!(stats.throttled >= Duration::from_secs(1));
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn too_many_requests_without_retry_after_backs_off() {
    let (fake, base) = Fake::start(vec![
        reply(429, "").header("x-ratelimit-limit", "150"),
        reply(429, ""),
        reply(202, "{}"),
    ])
    .await;
    let c = client(&base, "key-429");
    assert_eq!(
        c.write(&sample_write()).await.unwrap(),
        WriteOutcome::Acknowledged
    );
    let stats = c.stats_snapshot();
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(stats.retries, 2);
    assert_eq!(fake.seen().len(), 3);
    // Each 429 paused the key's budget until the next wall-clock second.
    assert!(c.budget().concurrency_limit() >= 1);
}

#[tokio::test]
async fn a_retry_after_longer_than_allowed_gives_up() {
    let (fake, base) = Fake::start(vec![reply(429, "").header("retry-after", "3600")]).await;
    let c = client(&base, "key-429-long");
    match c.write(&sample_write()).await.unwrap() {
        WriteOutcome::Failed { reason } => {
            assert!(reason.contains("longer than retry_max_delay"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn the_retry_budget_bounds_retries() {
    let (fake, base) = Fake::start(vec![reply(503, ""); 10]).await;
    let mut cfg = config(&base, "key-budget");
    cfg.retry_budget = RetryBudget::Count(1);
    let c = Client::new(cfg).unwrap();
    let first = c.write(&sample_write()).await.unwrap();
    assert!(matches!(first, WriteOutcome::Failed { .. }));
    // 2 attempts for the first write (one retry), then 1 for the second.
    let second = c.write(&sample_write()).await.unwrap();
    match second {
        WriteOutcome::Failed { reason } => assert!(reason.contains("retry budget"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let (fake, base) = Fake::start(vec![
        reply(202, "{}").delayed(Duration::from_secs(3)),
        reply(202, "{}"),
    ])
    .await;
    let mut cfg = config(&base, "key-timeout");
    cfg.timeout = Duration::from_millis(300);
    let c = Client::new(cfg).unwrap();
    assert_eq!(
        c.write(&sample_write()).await.unwrap(),
        WriteOutcome::Acknowledged
    );
    let stats = c.stats_snapshot();
    assert_eq!(stats.timeouts, 1);
    assert_eq!(stats.retries, 1);
    assert_eq!(fake.seen().len(), 2);
}

/// Reads one HTTP/1.1 request (headers and a `content-length` body).
async fn read_request(sock: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return buf;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return buf;
            }
        }
    }
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let n = count.fetch_add(1, Ordering::SeqCst);
            read_request(&mut sock).await;
            if n == 0 {
                drop(sock); // closed without an answer
                continue;
            }
            let body = r#"{"success":true}"#;
            let resp = format!(
                "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
            sock.shutdown().await.ok();
        }
    });
    let c = client(&base, "key-dropped");
    assert_eq!(
        c.write(&sample_write()).await.unwrap(),
        WriteOutcome::Acknowledged
    );
    let stats = c.stats_snapshot();
    assert_eq!(stats.dropped_connections, 1);
    assert_eq!(stats.retries, 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn existence_is_a_read_only_lookup_with_the_plus_encoded() {
    let (fake, base) = Fake::start(vec![
        reply(
            200,
            r#"{"subscriptionEligibilities":[{"subscription":{"type":"MARKETING","channel":"TEXT"},"eligibility":{"isEligible":true}}]}"#,
        ),
        reply(404, "Subscriptions not found"),
    ])
    .await;
    let c = rest_client(&base, "key-exists");
    assert_eq!(
        c.check_exists(&by_phone("+13115552368")).await.unwrap(),
        Existence::Exists
    );
    assert_eq!(
        c.check_exists(&by_email("ann+tag@example.com"))
            .await
            .unwrap(),
        Existence::NotFound
    );
    let seen = fake.seen();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/v1/subscriptions");
    assert_eq!(seen[0].query.as_deref(), Some("phone=%2B13115552368"));
    assert_eq!(
        seen[1].query.as_deref(),
        Some("email=ann%2Btag%40example.com")
    );
    assert!(seen.iter().all(|s| s.body.is_empty()));
}

#[tokio::test]
async fn existence_failures_are_not_fatal() {
    let (_, base) = Fake::start(vec![reply(503, ""); 10]).await;
    let c = client(&base, "key-exists-503");
    let err = c
        .check_exists(&by_email("ann@example.com"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 4, .. }),
        "{err:?}"
    );
    assert!(!err.is_fatal() && err.is_transient());
    let (_, base) = Fake::start(vec![reply(400, r#"{"message":"bad phone"}"#)]).await;
    let c = rest_client(&base, "key-exists-400");
    let err = c.check_exists(&by_phone("+1")).await.unwrap_err();
    assert!(matches!(err, Error::Rejected { status: 400, ref message } if message == "bad phone"));
    assert!(!err.is_fatal());
}

#[tokio::test]
async fn me_reads_the_account() {
    let (fake, base) = Fake::start(vec![reply(
        200,
        r#"{"applicationName":"Pillow Api","attentiveDomainName":"hudsonivy.attn.tv","companyName":"Hudson & Ivy","contactEmail":"name@company.com","companyId":"MDc6Q29tcGFueTI"}"#,
    )])
    .await;
    let me = client(&base, "key-me").me().await.unwrap();
    assert_eq!(me.company_name.as_deref(), Some("Hudson & Ivy"));
    assert_eq!(me.company_id.as_deref(), Some("MDc6Q29tcGFueTI"));
    assert_eq!(fake.seen()[0].path, "/v1/me");
}

#[tokio::test]
async fn low_remaining_holds_requests_until_the_next_second() {
    let (fake, base) = Fake::start(vec![reply(202, "{}")
        .header("x-ratelimit-limit", "150")
        .header("x-ratelimit-remaining", "0")])
    .await;
    let c = client(&base, "key-remaining");
    c.write(&sample_write()).await.unwrap();
    c.write(&sample_write()).await.unwrap();
    let seen = fake.seen();
    let first = seen[0].at.duration_since(UNIX_EPOCH).unwrap();
    let second = seen[1].at.duration_since(UNIX_EPOCH).unwrap();
    assert!(second.as_secs() > first.as_secs(), "{first:?} {second:?}");
    assert!(second.subsec_millis() < 300, "{second:?}");
}

#[tokio::test]
async fn clients_of_one_key_share_a_budget() {
    let (_, base) = Fake::start(vec![]).await;
    let a = client(&base, "key-shared");
    let mut cfg = config(&base, "key-shared");
    cfg.requests_per_second = 50.0;
    let b = Client::new(cfg).unwrap();
    assert!(Arc::ptr_eq(a.budget(), b.budget()));
    assert_eq!(a.budget().rate(), 50.0, "the lowest rate wins");
    let other = client(&base, "key-not-shared");
    assert!(!Arc::ptr_eq(a.budget(), other.budget()));
}

#[tokio::test]
async fn the_key_never_shows() {
    const KEY: &str = "sk_live_SECRET_0123456789";
    // A port with nothing behind it: connections are refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let mut cfg = config(&base, KEY);
    cfg.max_retries = 1;
    let c = Client::new(cfg.clone()).unwrap();
    let mut texts = vec![
        format!("{cfg:?}"),
        format!("{c:?}"),
        format!("{:?}", cfg.api_key),
    ];

    let out = c.write(&sample_write()).await.unwrap();
    texts.push(format!("{out:?}"));
    let err = c
        .check_exists(&by_email("ann@example.com"))
        .await
        .unwrap_err();
    texts.push(format!("{err} {err:?}"));
    for e in [
        Error::Unauthorized {
            destination: "attentive".into(),
        },
        Error::Forbidden {
            endpoint: "POST /v2/user/attributes".into(),
            permission: "x".into(),
        },
        Client::new(ClientConfig {
            base_url: format!("http://user:{KEY}@127.0.0.1"),
            ..cfg.clone()
        })
        .unwrap_err(),
        Client::new(ClientConfig {
            api_key: ApiKey::new(format!("{KEY}\n")),
            ..cfg.clone()
        })
        .unwrap_err(),
    ] {
        texts.push(format!("{e} {e:?}"));
    }
    for t in &texts {
        assert!(!t.contains("SECRET"), "key leaked: {t}");
    }
    // Lookups carry an email in the URL: transport errors must not echo it either.
    assert!(!texts[4].contains("ann"), "{}", texts[4]);
    assert!(
        matches!(out, WriteOutcome::Failed { ref reason } if reason.contains("connection failed")),
        "{out:?}"
    );
    assert_eq!(c.stats_snapshot().dropped_connections, 4);
}

#[tokio::test]
async fn concurrent_writes_keep_to_the_rate() {
    let (fake, base) = Fake::start(vec![]).await;
    let mut cfg = config(&base, "key-rate-e2e");
    cfg.requests_per_second = 50.0;
    let c = Client::new(cfg).unwrap();
    let start = std::time::Instant::now();
    let tasks: Vec<_> = (0..120)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.write(&sample_write()).await.unwrap() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), WriteOutcome::Acknowledged);
    }
    // 97 % of 50/s after a burst of at most 2: about 2.4 s for 120 requests.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(2300), "{took:?}");
    let mut at: Vec<SystemTime> = fake.seen().iter().map(|s| s.at).collect();
    at.sort();
    assert_eq!(at.len(), 120);
    let mut most = 0;
    for (i, t) in at.iter().enumerate() {
        let n = at[i..]
            .iter()
            .take_while(|u| u.duration_since(*t).unwrap() < Duration::from_secs(1))
            .count();
        most = most.max(n);
    }
    // Paced sends are exact (see the budget's paused-time tests); arrival times on a busy
    // machine may bunch by a millisecond or two, hence one request of slack.
    assert!(most <= 51, "{most} requests arrived within one second");
    assert!(c.budget().concurrency_limit() >= 1);
    assert_eq!(c.budget().in_flight(), 0);
}

/// A port nothing listens on (bound, then closed).
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// Regression (issue 12): with `base_url` on a closed port a run spent 29 s on 2,425
/// requests and 487 retries and ended `partial` with 1,938 `failed`. Now a short run of
/// connection failures trips the breaker: a fatal error naming the URL, and every later
/// request fails at once without being sent.
#[tokio::test]
async fn an_unreachable_destination_trips_the_breaker_and_stops_the_run() {
    let base = closed_port().await;
    let mut cfg = config(&base, "key-unreachable");
    cfg.unreachable_after = 5;
    let c = Client::new(cfg).unwrap();
    let mut first_fatal = None;
    for i in 0..10 {
        match c.write(&sample_write()).await {
            Err(e) => {
                assert!(c.stops_run(&e), "{e}");
                first_fatal.get_or_insert((i, e.to_string()));
            }
            Ok(WriteOutcome::Failed { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    let (at, msg) = first_fatal.expect("the breaker tripped");
    // The first write makes 4 attempts (3 retries); the second trips it on its 1st attempt.
    assert!(at <= 1, "tripped at write {at}");
    assert!(msg.contains(&base), "{msg}");
    assert!(
        msg.contains("5 connection attempts in a row failed"),
        "{msg}"
    );
    assert!(msg.contains("destinations.attentive.base_url"), "{msg}");
    // Nothing more was sent once it tripped.
    assert_eq!(c.stats_snapshot().requests_sent, 5);
}

/// Failures must be consecutive: an answer in between starts the count again.
#[tokio::test]
async fn an_answer_resets_the_breaker() {
    let base = closed_port().await;
    let addr = base.trim_start_matches("http://").to_owned();
    let mut cfg = config(&base, "key-breaker-reset");
    cfg.unreachable_after = 2;
    cfg.max_retries = 0;
    let c = Client::new(cfg).unwrap();
    for _ in 0..3 {
        // One connection failure...
        assert!(matches!(
            c.write(&sample_write()).await,
            Ok(WriteOutcome::Failed { .. })
        ));
        // ...then an answer on the same address...
        let listener = TcpListener::bind(&addr).await.unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            read_request(&mut sock).await;
            let resp = "HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
            sock.write_all(resp.as_bytes()).await.unwrap();
            sock.shutdown().await.ok();
        });
        assert_eq!(
            c.write(&sample_write()).await.unwrap(),
            WriteOutcome::Acknowledged
        );
        server.await.unwrap(); // ...and the port is closed again
    }
}

/// The GraphQL lookup: one request for several contacts, aliases read back in order; an alias
/// with an error is checked again through REST.
#[tokio::test]
async fn graphql_lookups_batch_contacts_and_ask_rest_about_alias_errors() {
    let graphql = r#"{"data":{"viewer":{"installedApplication":{"installerCompany":{"c0":{"id":"VXNlcjox"},"c1":null,"c2":null}}}},"errors":[{"message":"x","path":["viewer","installedApplication","installerCompany","c2"]}]}"#;
    let (fake, base) = Fake::start(vec![
        reply(200, graphql),
        reply(404, "Subscriptions not found"),
    ])
    .await;
    let c = client(&base, "key-graphql");
    let answers = c
        .check_many(&[
            by_email("ann@example.com"),
            by_phone("+13115552368"),
            by_email("cy@example.com"),
        ])
        .await;
    let answers: Vec<Lookup> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        answers,
        [
            Lookup {
                existence: Existence::Exists,
                id: Some("VXNlcjox".into())
            },
            Lookup::existence(Existence::NotFound),
            Lookup::existence(Existence::NotFound),
        ]
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/v1/graphql")
    );
    assert!(
        seen[0].body.contains("c2: user(email: $c2) { id }"),
        "{}",
        seen[0].body
    );
    assert!(!seen[0].body.contains("mutation"));
    assert_eq!(seen[1].path, "/v1/subscriptions");
    assert_eq!(seen[1].query.as_deref(), Some("email=cy%40example.com"));
    assert!(c.graphql_given_up().is_none());
}

/// GraphQL unavailable (404 here; 403 or errors for the whole query alike): the client falls
/// back to REST for the rest of its life, and says why once.
#[tokio::test]
async fn graphql_unavailable_falls_back_to_rest_for_good() {
    let ok = r#"{"subscriptionEligibilities":[]}"#;
    let (fake, base) = Fake::start(vec![
        reply(404, r#"{"message":"Not Found"}"#),
        reply(200, ok),
        reply(200, ok),
        reply(200, ok),
    ])
    .await;
    let c = client(&base, "key-graphql-404");
    let first = c
        .check_many(&[by_email("a@example.com"), by_email("b@example.com")])
        .await;
    assert!(first
        .iter()
        .all(|r| matches!(r, Ok(l) if l.existence == Existence::Exists)));
    assert!(c.graphql_given_up().unwrap().contains("404"));
    assert_eq!(c.lookup_batch(), 1);
    c.check_exists(&by_email("c@example.com")).await.unwrap();
    let paths: Vec<String> = fake.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/v1/graphql",
            "/v1/subscriptions",
            "/v1/subscriptions",
            "/v1/subscriptions"
        ]
    );
}

/// A "too complex" answer halves the batch and sends the halves.
#[tokio::test]
async fn a_too_complex_answer_halves_the_batch() {
    let too = r#"{"errors":[{"message":"Query is too complex","extensions":{"code":"QUERY_COMPLEXITY"}}]}"#;
    let half = |a: &str, b: &str| {
        format!(
            r#"{{"data":{{"viewer":{{"installedApplication":{{"installerCompany":{{"c0":{a},"c1":{b}}}}}}}}}}}"#
        )
    };
    let (fake, base) = Fake::start(vec![
        reply(200, too),
        reply(200, &half(r#"{"id":"1"}"#, "null")),
        reply(200, &half("null", r#"{"id":"4"}"#)),
    ])
    .await;
    let mut config = config(&base, "key-graphql-complex");
    config.lookup_batch = 4;
    let c = Client::new(config).unwrap();
    let contacts: Vec<ContactRef> = ["a", "b", "c", "d"]
        .iter()
        .map(|k| by_email(&format!("{k}@example.com")))
        .collect();
    let got: Vec<Existence> = c
        .check_many(&contacts)
        .await
        .into_iter()
        .map(|r| r.unwrap().existence)
        .collect();
    use Existence::{Exists, NotFound};
    assert_eq!(got, [Exists, NotFound, NotFound, Exists]);
    assert_eq!(c.lookup_batch(), 2);
    assert_eq!(fake.seen().len(), 3);
}
