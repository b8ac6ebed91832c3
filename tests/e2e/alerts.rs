//! Alerts and notifications end to end: a test receiver on loopback (a plain HTTP/1.1 server
//! on a thread, sharing no code with the sender) checks each request's HMAC-SHA256 signature
//! itself, answers 500 to the first request so that delivery has to retry, and records every
//! event; `run` (as from cron) and `serve` deliver to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attentive_sim::SimConfig;
use hmac::{KeyInit, Mac};
use serde_json::Value;

use crate::server::{model, project};
use crate::support::{seed, start_sim, Project};

const SECRET: &str = "e2e-webhook-secret";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    /// The signature header checked against the body with [`SECRET`].
    signed: bool,
    event_header: String,
    delivery_header: String,
    body: Value,
    answered: u16,
}

/// A loopback webhook receiver: answers 500 to the first `fail_first` requests, 204 after.
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Vec<Received>>>,
}

fn verify(header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_owned()),
            Some(("v1", x)) => v1 = Some(x.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // The timestamp is recent (a receiver refuses replays of old ones).
    let fresh = t
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
    want == v1 && fresh
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                let mut headers = std::collections::HashMap::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let mut seen = sink.lock().unwrap();
                let answered = if seen.len() < fail_first { 500 } else { 204 };
                let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
                seen.push(Received {
                    path,
                    signed: verify(&header("x-attentive-sync-signature"), &body),
                    event_header: header("x-attentive-sync-event"),
                    delivery_header: header("x-attentive-sync-delivery"),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    answered,
                });
                drop(seen);
                let reason = if answered == 500 {
                    "Internal Server Error"
                } else {
                    "No Content"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {answered} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver { port, seen }
    }

    fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// The events acknowledged (answered 204) at `path`, in order, by name (and rule).
    fn delivered(&self, path: &str) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|r| r.path == path && r.answered == 204)
            .map(|r| match r.body["rule"].as_str() {
                Some(rule) => format!("{} {rule}", r.event_header),
                None => r.event_header.clone(),
            })
            .collect()
    }

    /// [`Receiver::delivered`] after the first `skip`, sorted (retries reorder deliveries).
    fn delivered_since(&self, path: &str, skip: usize) -> Vec<String> {
        let mut d: Vec<String> = self.delivered(path).into_iter().skip(skip).collect();
        d.sort();
        d
    }

    fn wait_for(&self, path: &str, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let d = self.delivered(path);
            if d.len() >= n || Instant::now() > deadline {
                return d;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn with_notifications(p: &Project, port: u16) {
    let text = p.read("attentive-sync.toml");
    p.write(
        "attentive-sync.toml",
        &format!(
            r#"{text}
[notifications.hook]
url = "http://127.0.0.1:{port}/hook"
secret_env = "HOOK_SECRET"
retry_initial_secs = 0.3

[notifications.chat]
kind = "slack"
url = "http://127.0.0.1:{port}/slack"
events = ["alert.firing", "alert.resolved"]
"#
        ),
    );
}

fn run(p: &Project) -> crate::support::Run {
    p.run_within(
        &["run", "a"],
        &[
            ("ATTENTIVE_API_KEY", attentive_sim::DEFAULT_KEY),
            ("HOOK_SECRET", SECRET),
        ],
        Duration::from_secs(90),
    )
}

#[test]
fn webhooks_are_signed_retried_and_sent_once_per_transition() {
    const N: usize = 6;
    let emails: Vec<String> = (0..N).map(|i| format!("p{i}@example.com")).collect();
    let sim = start_sim(SimConfig {
        contacts: seed(&emails.iter().map(String::as_str).collect::<Vec<_>>()),
        ..SimConfig::default()
    });
    let receiver = Receiver::start(1);
    // A bad row: 1 of 7 rows rejected, above the default 1% of `rows_rejected`.
    let p = project(&sim, &model(N, "not-an-email,Austin,tier-1\n"));
    with_notifications(&p, receiver.port);

    let first = run(&p);
    assert_eq!(first.code, 3, "{}", first.all());
    // Delivered before `run` returned, the first one after a 500 and a retry.
    assert_eq!(
        receiver.delivered_since("/hook", 0),
        ["alert.firing rows_rejected", "run.partial", "run.started"],
        "{:#?}\n{}",
        receiver.seen(),
        first.all()
    );
    // The same bad row: the rule still fires, and says nothing new.
    let second = run(&p);
    assert_eq!(second.code, 3, "{}", second.all());
    assert!(
        second
            .stdout
            .contains("Alerts firing:\n  rows_rejected      1 row rejected or failed"),
        "{}",
        second.stdout
    );
    assert_eq!(
        receiver.delivered_since("/hook", 3),
        ["run.partial", "run.started"],
        "{:#?}",
        receiver.seen()
    );
    // Fixed: it recovers.
    p.write("data/m.csv", &model(N, ""));
    let third = run(&p);
    assert_eq!(third.code, 0, "{}", third.all());
    assert_eq!(
        receiver.delivered_since("/hook", 5),
        [
            "alert.resolved rows_rejected",
            "run.started",
            "run.succeeded"
        ],
        "{:#?}",
        receiver.seen()
    );
    let hook = receiver.delivered("/hook");
    assert_eq!(hook.len(), 8);
    let seen = receiver.seen();
    // Every request to the webhook was signed with the secret; the Slack one was not asked to be.
    for r in seen.iter().filter(|r| r.path == "/hook") {
        assert!(r.signed, "bad signature: {r:?}");
        assert_eq!(r.body["event"].as_str(), Some(r.event_header.as_str()));
        assert_eq!(r.body["id"].to_string(), r.delivery_header);
        assert_eq!(r.body["activation"], "a");
    }
    // The 500 was retried with the same event (same id): one delivery, two attempts.
    assert_eq!(seen[0].answered, 500);
    let retried: Vec<&Received> = seen
        .iter()
        .filter(|r| r.delivery_header == seen[0].delivery_header && r.path == "/hook")
        .collect();
    assert_eq!(retried.len(), 2, "{seen:#?}");
    assert_eq!(
        (retried[1].answered, &retried[1].body),
        (204, &seen[0].body)
    );
    // Each transition went out once, whatever the retries.
    let ids: std::collections::HashSet<String> = seen
        .iter()
        .filter(|r| r.path == "/hook" && r.answered == 204)
        .map(|r| r.delivery_header.clone())
        .collect();
    assert_eq!(ids.len(), hook.len());
    let firing = seen
        .iter()
        .find(|r| r.event_header == "alert.firing" && r.path == "/hook")
        .unwrap();
    assert!(
        firing.body["summary"]
            .as_str()
            .unwrap()
            .contains("1 row rejected or failed (14.3% of 7 rows)"),
        "{}",
        firing.body
    );
    // The Slack-compatible endpoint got the transitions only, as `text` and blocks.
    assert_eq!(
        receiver.delivered("/slack"),
        ["alert.firing", "alert.resolved"]
    );
    let slack = seen.iter().find(|r| r.path == "/slack").unwrap();
    assert!(
        slack.body["text"]
            .as_str()
            .unwrap()
            .contains("[alert.firing] a: rows_rejected is firing"),
        "{}",
        slack.body
    );
    assert!(slack.body["blocks"].is_array());

    // What was delivered, and how, is listed.
    let list = p.run(&[
        "notifications",
        "list",
        "--format",
        "json",
        "--limit",
        "100",
    ]);
    assert_eq!(list.code, 0, "{}", list.all());
    let list: Value = serde_json::from_str(&list.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), hook.len() + 2);
    assert!(list.iter().all(|d| d["state"] == "delivered"), "{list:#?}");
    let retried = list
        .iter()
        .find(|d| d["attempts"] == 2)
        .expect("the retried delivery");
    assert_eq!(retried["endpoint"], "hook");
    assert_eq!(retried["http_status"], 204);
    assert!(retried["delivered_at"].is_string());
    // The secret never reached the state file, the output or the list.
    let state = std::fs::read(p.path("attentive-sync.db")).unwrap();
    assert!(!state.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
    for out in [&first, &second, &third] {
        assert!(!out.all().contains(SECRET));
    }
    let text = p.run(&["notifications", "list"]);
    assert!(text.stdout.contains("alert.firing"), "{}", text.stdout);
    let alerts = p.run(&["notifications", "alerts", "--format", "json"]);
    let alerts: Value = serde_json::from_str(&alerts.stdout).unwrap();
    let rejected = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "rows_rejected")
        .unwrap();
    assert_eq!(rejected["state"], "ok");
}

#[test]
fn an_unreachable_receiver_never_fails_the_run_and_the_next_run_delivers() {
    let sim = start_sim(SimConfig {
        contacts: seed(&["p0@example.com"]),
        ..SimConfig::default()
    });
    // Nothing listens on the port yet.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = project(&sim, &model(1, ""));
    with_notifications(&p, port);
    let started = Instant::now();
    let r = p.run_within(
        &["run", "a", "--notify-wait-secs", "1"],
        &[
            ("ATTENTIVE_API_KEY", attentive_sim::DEFAULT_KEY),
            ("HOOK_SECRET", SECRET),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        r.stderr
            .contains("not done yet: the next `attentive-sync run`"),
        "{}",
        r.stderr
    );
    let pending = p.run(&[
        "notifications",
        "list",
        "--state",
        "pending",
        "--format",
        "json",
    ]);
    let pending: Value = serde_json::from_str(&pending.stdout).unwrap();
    assert_eq!(pending.as_array().unwrap().len(), 2, "{pending:#}");
    assert!(pending[0]["error"]
        .as_str()
        .unwrap()
        .contains("could not connect"));

    // The receiver is back; the next invocation delivers what was left, and its own.
    let receiver = Receiver::start(0);
    let text = p
        .read("attentive-sync.toml")
        .replace(&format!(":{port}/"), &format!(":{}/", receiver.port));
    p.write("attentive-sync.toml", &text);
    std::thread::sleep(Duration::from_millis(700)); // past the first backoff
    let again = run(&p);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(
        receiver.delivered_since("/hook", 0),
        [
            "run.started",
            "run.started",
            "run.succeeded",
            "run.succeeded"
        ]
    );
}

#[test]
fn run_all_runs_every_activation_in_the_config_order() {
    let sim = start_sim(SimConfig {
        contacts: seed(&["p0@example.com", "p1@example.com"]),
        ..SimConfig::default()
    });
    let p = project(&sim, &model(2, "not-an-email,Austin,tier-1\n"));
    p.write("data/ok.csv", &model(2, ""));
    // `zz` comes first in the file, `a` (one rejected row) second.
    let text = p.read("attentive-sync.toml");
    let (head, activation) = text.split_at(text.find("[activations.a]").unwrap());
    p.write(
        "attentive-sync.toml",
        &format!(
            "{head}[models.ok]\nsource = \"csv\"\npath = \"data/ok.csv\"\n\n[activations.zz]\nmodel = \"ok\"\ndestination = \"attentive\"\nidentifier = {{ column = \"email\", kind = \"email\" }}\n[activations.zz.custom]\n\"Tier\" = \"tier\"\n\n{activation}"
        ),
    );
    let env = [("ATTENTIVE_API_KEY", attentive_sim::DEFAULT_KEY)];
    let r = p.run_within(&["run", "--all"], &env, Duration::from_secs(90));
    assert_eq!(r.code, 3, "the worst of 0 and 3: {}", r.all());
    let zz = r.stdout.find("== zz").expect("a report for zz");
    let a = r.stdout.find("== a").expect("a report for a");
    assert!(zz < a, "{}", r.stdout);
    let r = p.run_within(
        &["run", "--all", "--format", "json"],
        &env,
        Duration::from_secs(90),
    );
    let reports: Value = serde_json::from_str(&r.stdout).unwrap();
    let names: Vec<&str> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["activation"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["zz", "a"]);
    assert_eq!(reports[0]["status"], "succeeded");
    assert_eq!(reports[1]["status"], "partial");
    // A name and --all together is a usage error.
    assert_eq!(p.run(&["run", "a", "--all"]).code, 2);
    assert_eq!(p.run(&["run"]).code, 2);
}

#[test]
fn plan_says_which_rules_a_run_would_fire() {
    let sim = start_sim(SimConfig {
        contacts: seed(&["p0@example.com"]),
        ..SimConfig::default()
    });
    let p = project(&sim, &model(1, "not-an-email,Austin,tier-1\n"));
    let (_, plan) = p.plan_json("a");
    let firing: Vec<&str> = plan["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["firing"] == true)
        .map(|a| a["rule"].as_str().unwrap())
        .collect();
    assert_eq!(firing, ["rows_rejected"], "{plan:#}");
    let text = p.run(&["plan", "a"]);
    assert!(
        text.stdout.contains("Alerts a run like this would fire:")
            && text
                .stdout
                .contains("rows_rejected      1 row rejected (50.0% of 2 rows)"),
        "{}",
        text.stdout
    );
}

#[test]
fn serve_delivers_in_the_background_and_shows_alerts_and_deliveries() {
    const N: usize = 3;
    let emails: Vec<String> = (0..N).map(|i| format!("p{i}@example.com")).collect();
    let sim = start_sim(SimConfig {
        contacts: seed(&emails.iter().map(String::as_str).collect::<Vec<_>>()),
        ..SimConfig::default()
    });
    let receiver = Receiver::start(1);
    let p = project(&sim, &model(N, "not-an-email,Austin,tier-1\n"));
    with_notifications(&p, receiver.port);
    let mut server = p.serve_env(
        &[],
        &[
            ("ATTENTIVE_API_KEY", attentive_sim::DEFAULT_KEY),
            ("ATTENTIVE_SYNC_SERVER_TOKEN", crate::support::SERVER_TOKEN),
            ("HOOK_SECRET", SECRET),
        ],
    );
    let id = server.start_run("a");
    let run = server.wait_run(id, Duration::from_secs(60));
    assert_eq!(run["status"], "partial", "{run}");
    receiver.wait_for("/hook", 3, Duration::from_secs(20));
    assert_eq!(
        receiver.delivered_since("/hook", 0),
        ["alert.firing rows_rejected", "run.partial", "run.started"],
        "{}",
        server.logs()
    );
    assert!(receiver
        .seen()
        .iter()
        .filter(|r| r.path == "/hook")
        .all(|r| r.signed));

    let (status, alerts) = server.get_json("/api/v1/alerts");
    assert_eq!(status, 200, "{alerts}");
    let rejected = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "rows_rejected")
        .unwrap();
    assert_eq!(rejected["state"], "firing", "{alerts:#}");
    assert_eq!(rejected["run_id"], id);
    let deadline = Instant::now() + Duration::from_secs(10);
    let deliveries = loop {
        let (status, d) = server.get_json("/api/v1/notifications?state=delivered");
        assert_eq!(status, 200, "{d}");
        if d.as_array().unwrap().len() >= 4 || Instant::now() > deadline {
            break d;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(deliveries.as_array().unwrap().len(), 4, "{deliveries:#}");
    assert_eq!(server.get_json("/api/v1/notifications?state=nope").0, 400);
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains(r#"attentive_sync_alert_firing{activation="a",rule="rows_rejected"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"attentive_sync_notification_deliveries{endpoint="hook",state="delivered"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"attentive_sync_notification_attempts{endpoint="hook"} 4"#),
        "{metrics}"
    );
    // The OpenAPI document lists the new routes.
    let (_, doc) = server.get_json("/api/openapi.json");
    assert!(doc["paths"]["/api/v1/alerts"]["get"].is_object());
    assert!(doc["paths"]["/api/v1/notifications"]["get"].is_object());
    server.terminate(Duration::from_secs(20));
}
