//! Notifications of attentive-sync: what a receiver is told (an [`Event`]: a run's lifecycle
//! or an alert's transition), how it is written for each kind of endpoint ([`render`]: the
//! event's JSON for generic webhooks, a Slack-compatible `{"text", "blocks"}` payload for
//! incoming webhooks), how it is signed ([`signature`]: HMAC-SHA256 over
//! `timestamp + "." + body`), and one delivery attempt over HTTP ([`Sender::send`]), with the
//! backoff between attempts ([`backoff`]).
//!
//! An adapter: it knows HTTP and the payloads, nothing of the state (the outbox is in
//! `state-store`) or of the config (the runner builds [`Endpoint`]s). Secrets and URLs are
//! never in its errors or `Debug` output.

#![warn(missing_docs)]

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};

/// The header carrying the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "x-attentive-sync-signature";
/// The header naming the event (`alert.firing`...).
pub const EVENT_HEADER: &str = "x-attentive-sync-event";
/// The header carrying the notification's id, the same on every attempt (for receivers that
/// drop duplicates: an answer lost on the way back makes the sender try again).
pub const DELIVERY_HEADER: &str = "x-attentive-sync-delivery";

/// Everything that can go wrong before a request is sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stored event is not JSON an event reads from.
    #[error("the stored notification is not a readable event: {0}")]
    Payload(#[source] serde_json::Error),
    /// The HTTP client could not be built.
    #[error("setting up the HTTP client for notifications failed")]
    Client(#[source] reqwest::Error),
}

macro_rules! event_kinds {
    ($($variant:ident => $text:literal, $doc:literal;)+) => {
        /// What happened: a run's lifecycle, or an alert rule's transition.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind {
            $(#[doc = $doc] $variant,)+
        }

        impl EventKind {
            /// Every event, in this order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)+];

            /// The name receivers subscribe to and see.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $text,)+
                }
            }

            /// Parses [`EventKind::as_str`]'s text.
            pub fn parse(text: &str) -> Option<EventKind> {
                match text {
                    $($text => Some(EventKind::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

event_kinds! {
    RunStarted => "run.started", "A run started.";
    RunSucceeded => "run.succeeded", "A run finished and every row went through.";
    RunPartial => "run.partial", "A run finished with rows rejected, failed or not found.";
    RunFailed => "run.failed", "A run stopped by an error (or was interrupted).";
    AlertFiring => "alert.firing", "An alert rule started firing.";
    AlertResolved => "alert.resolved", "An alert rule that was firing recovered.";
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        EventKind::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown event {text:?}")))
    }
}

/// An event as a generic webhook receives it (JSON), and as the outbox keeps it. `id` is the
/// notification's id, added when it is sent (the outbox assigns it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The notification's id: the same on every attempt (also in `X-Attentive-Sync-Delivery`).
    #[serde(default)]
    pub id: i64,
    /// What happened.
    pub event: EventKind,
    /// The activation it is about.
    pub activation: String,
    /// The run it is about (none for alerts evaluated on the clock, like a missed schedule).
    pub run_id: Option<i64>,
    /// When it happened (RFC 3339, UTC).
    pub occurred_at: String,
    /// One line for people.
    pub summary: String,
    /// The alert rule (`alert.*` events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The run's status (`run.*` events but `run.started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Details: the run's counts and duration, the rule's measurements.
    #[serde(default)]
    pub details: serde_json::Value,
}

/// How an endpoint wants its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The [`Event`] as JSON, signed when the endpoint has a secret.
    Webhook,
    /// A Slack-compatible incoming-webhook message: `{"text": ..., "blocks": [...]}`.
    Slack,
}

impl Kind {
    /// The name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Slack => "slack",
        }
    }
}

/// A signing secret. Its `Debug` is redacted; it leaves only through [`signature`].
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps the secret's bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Where to send, and how.
#[derive(Clone)]
pub struct Endpoint {
    /// Its name in the config (what the outbox and listings show).
    pub name: String,
    /// Its URL: never shown (an incoming-webhook URL is itself a credential).
    pub url: String,
    /// The payload it takes.
    pub kind: Kind,
    /// Signs each request when set.
    pub secret: Option<Secret>,
    /// How long an attempt may take.
    pub timeout: Duration,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &"(redacted)")
            .field("kind", &self.kind)
            .field("secret", &self.secret)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `t=<timestamp>,v1=<hex>`: HMAC-SHA256 with `secret` over `"<timestamp>.<body>"`.
pub fn signature(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(&secret.0) {
        Ok(m) => m,
        Err(_) => return format!("t={timestamp},v1="),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(tag.len() * 2);
    for b in tag.iter() {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("t={timestamp},v1={hex}")
}

/// Reads a stored event (the outbox's JSON) and sets its id.
pub fn event_of(notification_id: i64, payload_json: &str) -> Result<Event, Error> {
    let mut event: Event = serde_json::from_str(payload_json).map_err(Error::Payload)?;
    event.id = notification_id;
    Ok(event)
}

/// The request body an endpoint of `kind` gets for `event`.
pub fn render(kind: Kind, event: &Event) -> Vec<u8> {
    let value = match kind {
        Kind::Webhook => serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
        Kind::Slack => slack(event),
    };
    value.to_string().into_bytes()
}

/// A Slack-compatible incoming-webhook message: `text` (also what notifications show) and a
/// section block with the event and its details.
fn slack(event: &Event) -> serde_json::Value {
    let icon = match event.event {
        EventKind::AlertFiring | EventKind::RunFailed => ":rotating_light:",
        EventKind::AlertResolved | EventKind::RunSucceeded => ":white_check_mark:",
        EventKind::RunPartial => ":warning:",
        EventKind::RunStarted => ":arrow_forward:",
    };
    let text = format!(
        "{icon} [{}] {}: {}",
        event.event, event.activation, event.summary
    );
    let mut fields = vec![
        format!("*Activation*\n{}", slack_escape(&event.activation)),
        format!("*Event*\n`{}`", event.event),
    ];
    if let Some(run) = event.run_id {
        fields.push(format!("*Run*\n#{run}"));
    }
    if let Some(rule) = &event.rule {
        fields.push(format!("*Rule*\n`{}`", slack_escape(rule)));
    }
    serde_json::json!({
        "text": text,
        "blocks": [
            {
                "type": "section",
                "text": { "type": "mrkdwn", "text": format!("{icon} {}", slack_escape(&event.summary)) }
            },
            {
                "type": "section",
                "fields": fields
                    .into_iter()
                    .map(|f| serde_json::json!({ "type": "mrkdwn", "text": f }))
                    .collect::<Vec<_>>()
            },
            {
                "type": "context",
                "elements": [{ "type": "mrkdwn", "text": format!("attentive-sync · {}", event.occurred_at) }]
            }
        ]
    })
}

/// Slack's three control characters in message text.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The wait before attempt `attempt + 1` after `attempt` failed: `initial × 2^(attempt-1)`,
/// at most `max`.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
    initial.saturating_mul(factor).min(max)
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The endpoint answered 2xx.
    Delivered {
        /// The status.
        status: u16,
    },
    /// It did not.
    Failed {
        /// The status, when an answer came.
        status: Option<u16>,
        /// What went wrong, for people (no URL, no secret).
        error: String,
        /// Whether trying again may help: network errors, timeouts, 408, 429 and 5xx; other
        /// 4xx answers will not change.
        retryable: bool,
    },
}

/// Sends notifications over HTTP (rustls), each attempt bounded by a timeout.
#[derive(Debug, Clone)]
pub struct Sender {
    http: reqwest::Client,
}

impl Sender {
    /// A sender whose connections give up after `connect_timeout` (each attempt is bounded by
    /// its endpoint's timeout too).
    pub fn new(connect_timeout: Duration) -> Result<Sender, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("attentive-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Client)?;
        Ok(Sender { http })
    }

    /// One attempt: `POST`s the event, rendered for the endpoint's kind and signed with its
    /// secret (the signature's timestamp is `now_unix`), and says how it went.
    pub async fn send(&self, endpoint: &Endpoint, event: &Event, now_unix: i64) -> Attempt {
        let body = render(endpoint.kind, event);
        let mut request = self
            .http
            .post(&endpoint.url)
            .timeout(endpoint.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, event.event.as_str())
            .header(DELIVERY_HEADER, event.id.to_string());
        if let Some(secret) = &endpoint.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, now_unix, &body));
        }
        match request.body(body).send().await {
            Ok(response) => {
                let status = response.status();
                // Read (a little of) the body so the connection can be reused.
                let _ = response.bytes().await;
                if status.is_success() {
                    Attempt::Delivered {
                        status: status.as_u16(),
                    }
                } else {
                    let code = status.as_u16();
                    Attempt::Failed {
                        status: Some(code),
                        error: format!("the endpoint answered {status}"),
                        retryable: code == 408 || code == 429 || status.is_server_error(),
                    }
                }
            }
            Err(e) => Attempt::Failed {
                status: None,
                error: describe(&e.without_url()),
                retryable: true,
            },
        }
    }
}

/// A transport error for people, without the URL.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "answered with a redirect (not followed)"
    } else if e.is_builder() {
        "the URL cannot be used"
    } else {
        "failed"
    };
    let mut out = format!("the request {what}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            id: 7,
            event: kind,
            activation: "vip".into(),
            run_id: Some(3),
            occurred_at: "2026-11-29T12:00:00.000Z".into(),
            summary: "2 rows rejected (5.0% of 40) > 1%".into(),
            rule: Some("rejected".into()),
            status: None,
            details: serde_json::json!({ "rejected": 2 }),
        }
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed with Python: hmac.new(b"key", b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(
            signature(&Secret::new("key"), 1_700_000_000, b"{}"),
            "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The header is that HMAC over "<t>.<body>".
        let body = b"what do ya want for nothing?";
        let split = signature(&Secret::new("Jefe"), 12, body);
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"12.what do ya want for nothing?");
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(split, format!("t=12,v1={want}"));
        assert_ne!(signature(&Secret::new("other"), 12, body), split);
        assert_ne!(signature(&Secret::new("Jefe"), 13, body), split);
    }

    #[test]
    fn secrets_and_urls_stay_out_of_debug() {
        let e = Endpoint {
            name: "ops".into(),
            url: "https://hooks.example.com/T000/B000/XXXX".into(),
            kind: Kind::Slack,
            secret: Some(Secret::new("s3cr3t")),
            timeout: Duration::from_secs(1),
        };
        let shown = format!("{e:?}");
        assert!(
            !shown.contains("XXXX") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        assert!(shown.contains("ops"));
    }

    #[test]
    fn events_round_trip_and_render() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(*k));
        }
        let e = event(EventKind::AlertFiring);
        let mut stored = serde_json::to_value(&e).unwrap();
        stored.as_object_mut().unwrap().remove("id");
        let back = event_of(7, &stored.to_string()).unwrap();
        assert_eq!(back, e);
        let webhook: serde_json::Value =
            serde_json::from_slice(&render(Kind::Webhook, &e)).unwrap();
        assert_eq!(webhook["event"], "alert.firing");
        assert_eq!(webhook["id"], 7);
        assert_eq!(webhook["rule"], "rejected");
        let slack: serde_json::Value = serde_json::from_slice(&render(Kind::Slack, &e)).unwrap();
        let text = slack["text"].as_str().unwrap();
        assert!(
            text.contains("[alert.firing] vip: 2 rows rejected"),
            "{text}"
        );
        assert_eq!(slack["blocks"][0]["type"], "section");
        assert!(event_of(1, "{\"event\":\"nope\"}").is_err());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(1, s(2), s(60)), s(2));
        assert_eq!(backoff(2, s(2), s(60)), s(4));
        assert_eq!(backoff(4, s(2), s(60)), s(16));
        assert_eq!(backoff(6, s(2), s(60)), s(60));
        assert_eq!(backoff(u32::MAX, s(2), s(60)), s(60));
    }

    #[tokio::test]
    async fn attempts_report_status_and_retryability() {
        use std::sync::{Arc, Mutex};
        type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;
        let seen: Seen = Arc::default();
        let app = {
            let seen = seen.clone();
            axum::Router::new()
                .route(
                    "/ok",
                    axum::routing::post(move |h: axum::http::HeaderMap, b: axum::body::Bytes| {
                        let seen = seen.clone();
                        async move {
                            let get = |n: &str| {
                                h.get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_owned()
                            };
                            seen.lock().unwrap().push((
                                get(SIGNATURE_HEADER),
                                get(EVENT_HEADER),
                                b.to_vec(),
                            ));
                            "ok"
                        }
                    }),
                )
                .route(
                    "/gone",
                    axum::routing::post(|| async { axum::http::StatusCode::GONE }),
                )
                .route(
                    "/busy",
                    axum::routing::post(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE }),
                )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let sender = Sender::new(Duration::from_secs(5)).unwrap();
        let at = |path: &str| Endpoint {
            name: "t".into(),
            url: format!("http://{addr}{path}"),
            kind: Kind::Webhook,
            secret: Some(Secret::new("k")),
            timeout: Duration::from_secs(5),
        };
        let e = event(EventKind::RunFailed);
        assert_eq!(
            sender.send(&at("/ok"), &e, 100).await,
            Attempt::Delivered { status: 200 }
        );
        let (sig, ev, body) = seen.lock().unwrap()[0].clone();
        assert_eq!(sig, signature(&Secret::new("k"), 100, &body));
        assert_eq!(ev, "run.failed");
        assert!(matches!(
            sender.send(&at("/gone"), &e, 100).await,
            Attempt::Failed {
                status: Some(410),
                retryable: false,
                ..
            }
        ));
        assert!(matches!(
            sender.send(&at("/busy"), &e, 100).await,
            Attempt::Failed {
                status: Some(503),
                retryable: true,
                ..
            }
        ));
        // Nothing listens on port 1: a transport error, retryable, without the URL.
        let down = Endpoint {
            url: "http://127.0.0.1:1/secret-path".into(),
            ..at("/")
        };
        match sender.send(&down, &e, 100).await {
            Attempt::Failed {
                status: None,
                error,
                retryable: true,
            } => assert!(!error.contains("secret-path"), "{error}"),
            other => panic!("{other:?}"),
        }
    }
}
