//! `attentive-sync serve` over loopback against the in-process Attentive simulator: schedules
//! fire on time and never overlap, the API starts and shows runs, refuses overlaps and
//! strangers, documents itself, its metrics add up to the run reports, and SIGTERM stops a
//! run cleanly so that the next one (after a restart) sends exactly the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use attentive_sim::{Faults, RequestRecord, SimConfig, SimHandle};
use serde_json::{json, Value};

use crate::support::{
    body_email, seed, sim_config, start_sim, Project, Server, SERVER_TOKEN, WRITE,
};

const CITIES: &[&str] = &["Austin", "Boston", "Denver", "Seattle", "Brooklyn"];

fn emails(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("p{i}@example.com")).collect()
}

/// `email,city,tier` rows for `p0..p{n-1}@example.com`, then `extra`.
pub(crate) fn model(n: usize, extra: &str) -> String {
    let mut s = String::from("email,city,tier\n");
    for i in 0..n {
        s.push_str(&format!(
            "p{i}@example.com,{},tier-{}\n",
            CITIES[i % CITIES.len()],
            i % 3
        ));
    }
    s.push_str(extra);
    s
}

/// Every contact holds the model's values.
fn assert_state_equals_model(sim: &SimHandle, n: usize) {
    for i in 0..n {
        let email = format!("p{i}@example.com");
        let c = sim
            .find_contact(&email)
            .unwrap_or_else(|| panic!("{email} is not a contact"));
        assert_eq!(
            c.standard("location.city"),
            Some(&json!(CITIES[i % CITIES.len()])),
            "{c:?}"
        );
        assert_eq!(
            c.custom_value("Tier"),
            Some(&json!(format!("tier-{}", i % 3))),
            "{c:?}"
        );
    }
}

/// Writes the simulator applied (202), per contact.
fn applied_per_contact(requests: &[RequestRecord]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in requests
        .iter()
        .filter(|r| r.endpoint == WRITE && r.status == Some(202))
    {
        *m.entry(body_email(r)).or_default() += 1;
    }
    m
}

/// A project over `data/m.csv` pointed at `sim`, activation `a` (city + custom Tier).
pub(crate) fn project(sim: &SimHandle, csv: &str) -> Project {
    let p = Project::new();
    let base = format!("http://{}", sim.local_addr().expect("simulator address"));
    p.write(
        "attentive-sync.toml",
        &sim_config(&base, "city = \"city\"", "\"Tier\" = \"tier\""),
    );
    p.write("data/m.csv", csv);
    p
}

/// Adds lines to the destination section of the project's config.
fn destination_option(p: &Project, line: &str) {
    let key_line = "api_key = \"${ATTENTIVE_API_KEY}\"\n";
    let cfg = p
        .read("attentive-sync.toml")
        .replacen(key_line, &format!("{key_line}{line}\n"), 1);
    p.write("attentive-sync.toml", &cfg);
}

fn unix_ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?}: {e}"))
        .timestamp_millis()
}

// --- a small OpenMetrics / Prometheus text parser ---------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text format; panics on any line it does not understand.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut saw_eof = false;
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in text.lines() {
        assert!(!saw_eof, "a line after # EOF: {line:?}");
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap_or("");
            assert!(
                ["HELP", "TYPE", "UNIT"].contains(&kind) && valid_name(name),
                "bad comment line {line:?}"
            );
            if kind == "TYPE" {
                let t = parts.next().unwrap_or("");
                assert!(
                    [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "unknown",
                        "info",
                        "stateset",
                        "gaugehistogram"
                    ]
                    .contains(&t),
                    "bad type in {line:?}"
                );
            }
            continue;
        }
        let (name_labels, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, l)) => (
                n,
                parse_labels(
                    l.strip_suffix('}')
                        .unwrap_or_else(|| panic!("unclosed labels in {line:?}")),
                ),
            ),
            None => (name_labels, BTreeMap::new()),
        };
        assert!(valid_name(name), "bad metric name in {line:?}");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    assert!(saw_eof, "no # EOF at the end");
    samples
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("dangling escape in {s:?}"),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.unwrap_or_else(|| panic!("unclosed label value in {s:?}"));
        out.insert(key.to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    out
}

/// The value of one series (0 when absent).
fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                && s.labels.len() == labels.len()
        })
        .map_or(0.0, |s| s.value)
}

fn scrape(server: &Server) -> Vec<Sample> {
    let r = server
        .http
        .get(server.url("/metrics"))
        .send()
        .expect("GET /metrics");
    assert_eq!(r.status().as_u16(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    parse_metrics(&r.text().unwrap())
}

#[test]
fn the_metrics_parser_reads_the_text_format() {
    let s = parse_metrics(
        "# HELP x_total X.\n# TYPE x counter\nx_total{a=\"v\\\"1\",b=\"2\"} 3\ny 1.5e0\n# EOF\n",
    );
    assert_eq!(metric(&s, "x_total", &[("a", "v\"1"), ("b", "2")]), 3.0);
    assert_eq!(metric(&s, "y", &[]), 1.5);
}

// 1 ------------------------------------------------------------------------------------------

/// A manual run over the API: 202 with its location, its report, its rows by outcome and as
/// CSV, the contact's snapshot, a dry run, and metrics equal to the report.
#[test]
fn a_manual_run_over_the_api_matches_its_report_and_the_metrics() {
    const N: usize = 12;
    let sim = start_sim(SimConfig {
        contacts: seed(&emails(N).iter().map(String::as_str).collect::<Vec<_>>()),
        ..SimConfig::default()
    });
    let p = project(
        &sim,
        &model(
            N,
            "not-an-email,Austin,gold\nghost@example.com,Austin,gold\nbad@@x,Austin,gold\n",
        ),
    );
    let server = p.serve(&[]);

    let (status, activations) = server.get_json("/api/v1/activations");
    assert_eq!(status, 200, "{activations}");
    assert_eq!(activations[0]["name"], "a");
    assert_eq!(activations[0]["schedule"], Value::Null);
    assert_eq!(activations[0]["last_run"], Value::Null);

    // A dry run sends nothing.
    let (status, plan) = server.get_json("/api/v1/activations/a/plan?sample=3");
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["counts"]["changed"], (N + 1) as u64, "{plan}");
    assert_eq!(plan["counts"]["rejected"], 2, "{plan}");
    assert_eq!(plan["sample_changes"].as_array().unwrap().len(), 3);
    assert!(sim.requests().is_empty());

    let (status, started, location) = server.post_json("/api/v1/activations/a/runs");
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_i64().unwrap();
    assert_eq!(
        location.as_deref(),
        Some(format!("/api/v1/runs/{id}").as_str())
    );
    assert_eq!(started["location"], format!("/api/v1/runs/{id}"));
    let (status, missing, _) = server.post_json("/api/v1/activations/nope/runs");
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "activation_not_found");

    let run = server.wait_run(id, Duration::from_secs(60));
    assert_eq!(run["status"], "partial", "{run}");
    let report = &run["report"];
    assert_eq!(report["counts"]["updated"], N as u64, "{run}");
    assert_eq!(report["counts"]["rejected"], 2, "{run}");
    assert_eq!(report["counts"]["not_found"], 1, "{run}");
    assert_state_equals_model(&sim, N);
    assert_eq!(sim.contact_count(), N, "no contact was created");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());

    // Rows, paged by key.
    let mut rows = Vec::new();
    let mut path = format!("/api/v1/runs/{id}/rows?outcome=rejected&limit=1");
    loop {
        let (status, page) = server.get_json(&path);
        assert_eq!(status, 200, "{page}");
        rows.extend(page["rows"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_u64() {
            Some(after) => {
                path = format!("/api/v1/runs/{id}/rows?outcome=rejected&limit=1&after={after}")
            }
            None => break,
        }
    }
    let lines: Vec<u64> = rows.iter().map(|r| r["row"].as_u64().unwrap()).collect();
    assert_eq!(lines, [N as u64 + 2, N as u64 + 4]);
    assert!(rows
        .iter()
        .all(|r| r["code"].is_string() && r["message"].is_string()));
    let (_, nf) = server.get_json(&format!("/api/v1/runs/{id}/rows?outcome=not_found"));
    assert_eq!(nf["rows"][0]["contact"], "ghost@example.com");
    let (status, bad) = server.get_json(&format!("/api/v1/runs/{id}/rows?outcome=lost"));
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );

    let (status, csv) = server.get(&format!("/api/v1/runs/{id}/rejected.csv"));
    assert_eq!(status, 200);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec!["row", "contact", "outcome", "code", "message", "attributes"]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 2);
    assert_eq!(&records[0][0], (N + 2).to_string().as_str());
    assert_eq!(&records[0][2], "rejected");

    // The snapshot of one contact, with the identifier normalized as `contacts show` does.
    let (status, c) = server.get_json("/api/v1/contacts/%20P3@Example.COM");
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["contact"], "p3@example.com");
    let attrs = &c["activations"][0]["attributes"];
    assert_eq!(attrs.as_array().unwrap().len(), 2, "{c}");
    assert!(attrs.as_array().unwrap().iter().all(|a| a["run_id"] == id));

    // The runs list, and the activation's last run.
    let (_, list) = server.get_json("/api/v1/runs?activation=a&limit=10");
    assert_eq!(list["runs"][0]["id"], id);
    let (_, activations) = server.get_json("/api/v1/activations");
    assert_eq!(activations[0]["last_run"]["id"], id);
    assert_eq!(activations[0]["running"], Value::Null);

    // The metrics add up to the report.
    let m = scrape(&server);
    let a = [("activation", "a")];
    for outcome in ["updated", "unchanged", "not_found", "rejected", "failed"] {
        assert_eq!(
            metric(
                &m,
                "attentive_sync_run_rows_total",
                &[("activation", "a"), ("outcome", outcome)]
            ),
            report["counts"][outcome].as_f64().unwrap(),
            "{outcome}"
        );
    }
    let d = &report["delivery"];
    assert_eq!(
        metric(&m, "attentive_sync_requests_total", &a),
        d["requests"].as_f64().unwrap()
    );
    assert_eq!(
        metric(&m, "attentive_sync_retries_total", &a),
        d["retries"].as_f64().unwrap()
    );
    assert_eq!(
        metric(&m, "attentive_sync_rate_limited_total", &a),
        d["rate_limited"].as_f64().unwrap()
    );
    assert_eq!(
        metric(&m, "attentive_sync_throttled_seconds_total", &a),
        d["throttled_ms"].as_f64().unwrap() / 1000.0
    );
    assert_eq!(
        metric(&m, "attentive_sync_existence_checks_total", &a),
        report["existence_checks"].as_f64().unwrap()
    );
    let attributes: u64 = report["plan"]["attributes_to_send"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        metric(&m, "attentive_sync_attributes_sent_total", &a),
        attributes as f64
    );
    assert_eq!(
        metric(
            &m,
            "attentive_sync_runs_total",
            &[("activation", "a"), ("status", "partial")]
        ),
        1.0
    );
    assert_eq!(
        metric(&m, "attentive_sync_run_duration_seconds_count", &a),
        1.0
    );
    assert_eq!(metric(&m, "attentive_sync_run_in_progress", &a), 0.0);
    assert!(metric(&m, "attentive_sync_last_success_timestamp_seconds", &a) > 1.7e9);
    // Responses per status add up to what the simulator answered.
    let answered: BTreeMap<u16, usize> = sim.requests().iter().fold(BTreeMap::new(), |mut m, r| {
        if let Some(s) = r.status {
            *m.entry(s).or_default() += 1;
        }
        m
    });
    for (status, n) in &answered {
        assert_eq!(
            metric(
                &m,
                "attentive_sync_responses_total",
                &[("activation", "a"), ("status", &status.to_string())]
            ),
            *n as f64,
            "status {status}"
        );
    }
    assert_eq!(
        answered.values().sum::<usize>() as f64,
        d["requests"].as_f64().unwrap()
    );
}

// 2 ------------------------------------------------------------------------------------------

/// The token guards the API (401 JSON without it or with a wrong one, never echoed), health
/// and metrics are open, the dashboard asks to log in, the OpenAPI document lists every
/// route, and `serve` refuses to start without a token.
#[test]
fn the_token_guards_the_api_and_the_openapi_document_lists_every_route() {
    let sim = start_sim(SimConfig::default());
    let p = project(&sim, &model(1, ""));

    // No token, a weak one, an unreadable file: refused with a message that says what to do.
    let r = p.run_within(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("ATTENTIVE_API_KEY", attentive_sim::DEFAULT_KEY)],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("ATTENTIVE_SYNC_SERVER_TOKEN"),
        "{}",
        r.all()
    );
    assert!(r.stderr.contains("--token-file"), "{}", r.all());
    let r = p.run_within(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("ATTENTIVE_SYNC_SERVER_TOKEN", "letmein")],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("at least 16"), "{}", r.all());
    assert!(!r.all().contains("letmein"), "{}", r.all());

    // A token file works as well as the variable.
    p.write("token.txt", &format!("{SERVER_TOKEN}\n"));
    let server = p.serve_env(
        &["--token-file", "token.txt"],
        &[("ATTENTIVE_API_KEY", attentive_sim::DEFAULT_KEY)],
    );

    let get = |path: &str, token: Option<&str>| {
        let mut req = server.http.get(server.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let www = r
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, www, r.text().unwrap())
    };
    for path in [
        "/api/v1/activations",
        "/api/v1/runs",
        "/api/v1/runs/1",
        "/api/v1/runs/1/rows",
        "/api/v1/runs/1/rejected.csv",
        "/api/v1/activations/a/plan",
        "/api/v1/contacts/p0@example.com",
    ] {
        for token in [None, Some("wrong"), Some(&SERVER_TOKEN[1..])] {
            let (status, www, body) = get(path, token);
            assert_eq!(status, 401, "{path} {token:?}: {body}");
            assert!(www.is_some_and(|w| w.starts_with("Bearer")));
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"]["code"], "unauthorized", "{body}");
            assert!(!body.contains(SERVER_TOKEN));
        }
    }
    let r = server
        .http
        .post(server.url("/api/v1/activations/a/runs"))
        .bearer_auth("wrong")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(
        sim.requests().is_empty(),
        "a refused request starts nothing"
    );
    assert_eq!(get("/api/v1/activations", Some(SERVER_TOKEN)).0, 200);

    for path in ["/healthz", "/readyz", "/metrics", "/api/openapi.json"] {
        assert_eq!(get(path, None).0, 200, "{path}");
    }
    let (status, _, body) = get("/readyz", None);
    assert_eq!((status, body.contains("ready")), (200, true));

    // The dashboard asks to log in; the login page never holds the token.
    let r = server.http.get(server.url("/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let login = server
        .http
        .get(server.url("/login"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(login.contains("id=\"login-form\"") && !login.contains(SERVER_TOKEN));
    let r = server
        .http
        .post(server.url("/login"))
        .form(&[("token", SERVER_TOKEN)])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(SERVER_TOKEN));
    let session = cookie.split(';').next().unwrap();
    let home = server
        .http
        .get(server.url("/"))
        .header("cookie", session)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(home.contains("id=\"run-now-a\"") && home.contains("id=\"preview-plan-a\""));
    let r = server
        .http
        .post(server.url("/activations/a/run"))
        .header("cookie", session)
        .form(&[("csrf", "forged")])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "a forged form is refused");

    // The OpenAPI document lists every API route, with the methods served.
    let (status, _, body) = get("/api/openapi.json", None);
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let expected: BTreeSet<(&str, &str)> = [
        ("get", "/api/v1/activations"),
        ("post", "/api/v1/activations/{name}/runs"),
        ("get", "/api/v1/activations/{name}/plan"),
        ("get", "/api/v1/runs"),
        ("get", "/api/v1/runs/{id}"),
        ("get", "/api/v1/runs/{id}/rows"),
        ("get", "/api/v1/runs/{id}/rejected.csv"),
        ("get", "/api/v1/contacts/{contact}"),
        ("get", "/api/v1/alerts"),
        ("get", "/api/v1/notifications"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ]
    .into_iter()
    .collect();
    let documented: BTreeSet<(&str, &str)> = paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.as_str(), path.as_str()))
        })
        .collect();
    assert_eq!(documented, expected);
    // Every route behind the token documents 401 and the wrong-token limit's 429.
    for (method, path) in expected.iter().filter(|(_, p)| p.starts_with("/api/v1/")) {
        let responses = &paths[*path][*method]["responses"];
        for code in ["401", "429"] {
            assert!(responses.get(code).is_some(), "{method} {path}: no {code}");
        }
        assert!(
            responses["429"]["description"]
                .as_str()
                .unwrap_or("")
                .contains("too_many_failures"),
            "{method} {path}: {}",
            responses["429"]
        );
    }
    // And each documented route answers (with the token) rather than 404/405.
    for (method, path) in &expected {
        let concrete = path
            .replace("{name}", "a")
            .replace("{id}", "1")
            .replace("{contact}", "p0@example.com");
        let req = match *method {
            "get" => server.http.get(server.url(&concrete)),
            _ => server.http.post(server.url(&concrete)),
        };
        let status = req
            .bearer_auth(SERVER_TOKEN)
            .send()
            .unwrap()
            .status()
            .as_u16();
        assert!(
            ![401, 405].contains(&status) && (status != 404 || concrete.contains("/runs/1")),
            "{method} {concrete}: {status}"
        );
    }
    // Neither secret is in the server's logs or in the state database, whatever was asked.
    let logs = server.logs();
    for secret in [SERVER_TOKEN, attentive_sim::DEFAULT_KEY] {
        assert!(!logs.contains(secret), "a secret in the logs:\n{logs}");
        for file in ["attentive-sync.db", "attentive-sync.db-wal"] {
            if let Ok(bytes) = std::fs::read(p.path(file)) {
                let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                assert!(!found, "a secret in {file}");
            }
        }
    }
}

// 3 ------------------------------------------------------------------------------------------

/// A run going on gets a second start refused with 409 (in this server, and when another
/// process holds the activation's lock).
#[test]
fn a_second_run_while_one_goes_on_is_refused_with_409() {
    const N: usize = 30;
    let sim = start_sim(SimConfig {
        contacts: seed(&emails(N).iter().map(String::as_str).collect::<Vec<_>>()),
        faults: Faults {
            latency_ms: 100,
            ..Faults::default()
        },
        ..SimConfig::default()
    });
    let p = project(&sim, &model(N, ""));
    let server = p.serve(&["--max-in-flight", "2"]);

    let id = server.start_run("a");
    let (status, v, _) = server.post_json("/api/v1/activations/a/runs");
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "run_in_progress");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("run {id}")),
        "{v}"
    );
    // While it goes on, the API shows its progress and stays quick.
    let started = Instant::now();
    let (_, running) = server.get_json(&format!("/api/v1/runs/{id}"));
    let (_, list) = server.get_json("/api/v1/runs");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(running["status"], "running", "{running}");
    assert!(running["live"]["rows_read"].is_u64(), "{running}");
    assert_eq!(list["runs"][0]["id"], id);
    let (_, activations) = server.get_json("/api/v1/activations");
    assert_eq!(activations[0]["running"]["run_id"], id);
    let run = server.wait_run(id, Duration::from_secs(120));
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["report"]["counts"]["updated"], N as u64);

    // Another process runs the activation: the server answers 409 too.
    p.write("data/m.csv", &model(N, "").replace("tier-", "level-"));
    let cli = p.spawn(&["run", "a", "--format", "json", "--max-in-flight", "1"]);
    let before = sim.requests().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.requests().len() < before + 2 {
        assert!(
            Instant::now() < deadline,
            "the CLI run never started writing"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, v, _) = server.post_json("/api/v1/activations/a/runs");
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "run_in_progress");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("locked"),
        "{v}"
    );
    let out = cli.wait_with_output().expect("wait for the CLI run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// 4 ------------------------------------------------------------------------------------------

/// A 6-field schedule (every 2 s, no jitter) starts runs on time; a run still going on when
/// the next one is due is skipped and logged, never overlapped.
#[test]
fn schedules_start_runs_on_time_and_never_overlap() {
    const N: usize = 40;
    let sim = start_sim(SimConfig {
        contacts: seed(&emails(N).iter().map(String::as_str).collect::<Vec<_>>()),
        faults: Faults {
            latency_ms: 150,
            ..Faults::default()
        },
        ..SimConfig::default()
    });
    // `a` is quick (3 rows); `slow` delivers 40 contacts two at a time (~6 s).
    let p = Project::new();
    p.write("data/small.csv", &model(3, ""));
    p.write("data/m.csv", &model(N, ""));
    let activation = |name: &str, model: &str, extra: &str| {
        format!(
            r#"
[activations.{name}]
model = "{model}"
destination = "attentive"
identifier = {{ column = "email", kind = "email" }}
schedule = "*/2 * * * * *"
{extra}
[activations.{name}.standard]
city = "city"
[activations.{name}.custom]
"Tier" = "tier"
"#
        )
    };
    p.write(
        "attentive-sync.toml",
        &format!(
            r#"[destinations.attentive]
api_key = "${{ATTENTIVE_API_KEY}}"
base_url = "http://{}"

[models.small]
source = "csv"
path = "data/small.csv"

[models.m]
source = "csv"
path = "data/m.csv"
{}{}"#,
            sim.local_addr().expect("simulator address"),
            activation("a", "small", "timezone = \"America/New_York\""),
            activation("slow", "m", "")
        ),
    );
    let check = p.run_env(
        &["validate"],
        &[("ATTENTIVE_API_KEY", attentive_sim::DEFAULT_KEY)],
    );
    assert_eq!(check.code, 0, "{}", check.all());

    let server = p.serve(&["--max-in-flight", "2"]);
    let (_, activations) = server.get_json("/api/v1/activations");
    let a = activations
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "a")
        .unwrap();
    assert_eq!(a["schedule"], "*/2 * * * * *");
    assert_eq!(a["timezone"], "America/New_York");
    let due = unix_ms(a["next_due"].as_str().expect("next_due"));
    assert_eq!(due % 2000, 0, "due on an even second: {a}");

    // Watch for ~9 s: runs of `a` start within a second of an even second; runs of `slow`
    // never overlap, and the occurrences that fall inside its first run are skipped.
    let deadline = Instant::now() + Duration::from_secs(9);
    let mut max_running_slow = 0;
    while Instant::now() < deadline {
        let (_, list) = server.get_json("/api/v1/runs?activation=slow&limit=100");
        let running = list["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "running")
            .count();
        max_running_slow = max_running_slow.max(running);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(max_running_slow <= 1);

    let (_, list) = server.get_json("/api/v1/runs?activation=a&limit=100");
    let runs = list["runs"].as_array().unwrap();
    assert!(runs.len() >= 3, "{list}\n{}", server.logs());
    for r in runs {
        let late = unix_ms(r["started_at"].as_str().unwrap()) % 2000;
        assert!(
            late < 1000,
            "run {} started {late} ms after its due time",
            r["id"]
        );
    }
    let (_, list) = server.get_json("/api/v1/runs?activation=slow&limit=100");
    let slow_runs = list["runs"].as_array().unwrap();
    let mut spans: Vec<(i64, i64)> = slow_runs
        .iter()
        .map(|r| {
            (
                unix_ms(r["started_at"].as_str().unwrap()),
                r["finished_at"].as_str().map_or(i64::MAX, unix_ms),
            )
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "runs of `slow` overlapped: {spans:?}");
    }
    let logs = server.logs();
    assert!(
        logs.contains("scheduled run skipped: the previous run is still going on"),
        "{logs}"
    );
    let m = scrape(&server);
    assert!(
        metric(
            &m,
            "attentive_sync_runs_skipped_total",
            &[("activation", "slow"), ("reason", "still_running")]
        ) >= 1.0,
        "{m:?}"
    );
    assert!(
        metric(
            &m,
            "attentive_sync_runs_total",
            &[("activation", "a"), ("status", "succeeded")]
        ) >= 3.0
    );
}

// 5 ------------------------------------------------------------------------------------------

/// SIGTERM during a run: in-flight writes are committed, the run ends `interrupted`, the server
/// exits 0; after a restart the next run sends exactly the rest and Attentive holds the model.
#[test]
fn sigterm_stops_a_run_cleanly_and_the_next_run_after_a_restart_sends_the_rest() {
    const N: usize = 60;
    let sim = start_sim(SimConfig {
        contacts: seed(&emails(N).iter().map(String::as_str).collect::<Vec<_>>()),
        faults: Faults {
            latency_ms: 30,
            ..Faults::default()
        },
        ..SimConfig::default()
    });
    let p = project(&sim, &model(N, ""));
    destination_option(&p, "requests_per_second = 20");
    let mut server = p.serve(&[]);
    let id = server.start_run("a");
    let deadline = Instant::now() + Duration::from_secs(30);
    while applied_per_contact(&sim.requests()).len() < 5 {
        assert!(Instant::now() < deadline, "the run never started writing");
        std::thread::sleep(Duration::from_millis(5));
    }
    let code = server.terminate(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", server.logs());
    let logs = server.logs();
    assert!(logs.contains("stopping"), "{logs}");
    assert!(logs.contains("run interrupted"), "{logs}");
    drop(server);

    let server = p.serve(&[]);
    let (_, first) = server.get_json(&format!("/api/v1/runs/{id}"));
    assert_eq!(first["status"], "interrupted", "{first}");
    let updated_first = first["report"]["counts"]["updated"].as_u64().unwrap();
    assert!((5..N as u64).contains(&updated_first), "{first}");

    let next = server.start_run("a");
    let run = server.wait_run(next, Duration::from_secs(120));
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["report"]["counts"]["updated"].as_u64().unwrap() + updated_first,
        N as u64,
        "{run}"
    );
    assert_state_equals_model(&sim, N);
    for (email, writes) in applied_per_contact(&sim.requests()) {
        assert_eq!(writes, 1, "{email} was written {writes} times");
    }
    assert_eq!(sim.contact_count(), N);
    assert!(sim.violations().is_empty());
}

/// Issue 13: slow clients cannot hold the server. Beyond `--max-connections` a new connection
/// is closed at once, and a client that does not finish its headers within
/// `--header-timeout-secs` is closed, so `/healthz` answers again and a run finishes; after
/// SIGTERM, a request whose body never comes does not keep the server up past
/// `--shutdown-grace-secs`.
#[test]
fn slow_clients_cannot_hold_the_server() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    const N: usize = 10;
    let sim = start_sim(SimConfig {
        contacts: seed(&emails(N).iter().map(String::as_str).collect::<Vec<_>>()),
        ..SimConfig::default()
    });
    let p = project(&sim, &model(N, ""));
    let mut server = p.serve(&[
        "--max-connections",
        "8",
        "--header-timeout-secs",
        "1",
        "--shutdown-grace-secs",
        "2",
    ]);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            // Headers started, never finished.
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
            s
        })
        .collect();
    let started = Instant::now();
    loop {
        let answer = server
            .http
            .get(server.url("/healthz"))
            .timeout(Duration::from_secs(1))
            .send();
        if answer.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "/healthz does not answer\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = server.start_run("a");
    let run = server.wait_run(id, Duration::from_secs(60));
    assert_eq!(run["status"], "succeeded", "{run}");
    // The server closed every slow connection (end of stream, or a reset).
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(n) => assert!(
                n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
                "{}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "still open"),
        }
    }

    // A login whose body never comes, then SIGTERM: the server still exits, after its grace.
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ntoken=",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stopping = Instant::now();
    let code = server.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{}", server.logs());
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "took {:?}",
        stopping.elapsed()
    );
    drop(half);
}

/// Issue 13: wrong tokens are limited per client address and logged with it. After
/// `FAILURES_PER_CLIENT` (20) wrong bearer tokens in a minute, the address gets 429
/// `too_many_failures` without its token being checked, on the API and the login form.
#[test]
fn wrong_tokens_are_limited_per_client_address() {
    let sim = start_sim(SimConfig::default());
    let p = project(&sim, &model(2, ""));
    let server = p.serve(&[]);
    let wrong = |path: &str| {
        server
            .http
            .get(server.url(path))
            .bearer_auth("not-the-token-at-all-0000")
            .send()
            .unwrap()
    };
    for i in 0..20 {
        assert_eq!(wrong("/api/v1/activations").status(), 401, "attempt {i}");
    }
    let refused = wrong("/api/v1/activations");
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "too_many_failures", "{body}");
    // Refused without looking at the token, for this address, for the rest of the minute.
    let right = server
        .http
        .get(server.url("/api/v1/activations"))
        .bearer_auth(SERVER_TOKEN)
        .send()
        .unwrap();
    assert_eq!(right.status(), 429);
    let login = server
        .http
        .post(server.url("/login"))
        .form(&[("token", SERVER_TOKEN)])
        .send()
        .unwrap();
    assert_eq!(login.status(), 429);
    // Unauthenticated routes still answer.
    assert_eq!(server.get("/healthz").0, 200);
    let logs = server.logs();
    assert!(
        logs.contains("client=127.0.0.1") && logs.contains("bearer token refused"),
        "{logs}"
    );
    assert!(!logs.contains("not-the-token-at-all"), "a token was logged");
}

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1, made with the
/// `openssl` command: `(ca, cert, key)`.
fn self_signed(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "2",
                "-subj",
                "/CN=e2e test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "key.pem",
                "-out",
                "server.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

/// `serve --tls-cert --tls-key`: https with the given certificate (a client that trusts it
/// gets its answers, the session cookie is `Secure`), plain http to the same port gets
/// nothing; a bad key file is a clear error naming it.
#[test]
fn serve_speaks_tls_with_the_given_certificate() {
    let sim = start_sim(SimConfig::default());
    let p = project(&sim, &model(2, ""));
    let (ca, cert, key) = self_signed(p.dir());
    let (cert_s, key_s) = (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    );
    let mut server = p.serve(&["--tls-cert", &cert_s, "--tls-key", &key_s]);
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    let root = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let https = reqwest::blocking::Client::builder()
        .add_root_certificate(root)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = https
        .get(server.url("/healthz"))
        .send()
        .expect("https /healthz");
    assert_eq!(r.status().as_u16(), 200);
    let r = https
        .get(server.url("/api/v1/activations"))
        .bearer_auth(crate::support::SERVER_TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let login = https
        .post(server.url("/login"))
        .form(&[("token", crate::support::SERVER_TOKEN)])
        .send()
        .unwrap();
    let cookie = login
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(cookie.contains("Secure"), "{cookie}");
    // A client that does not trust the certificate, and plain http, get nothing.
    let untrusting = reqwest::blocking::Client::new();
    assert!(untrusting.get(server.url("/healthz")).send().is_err());
    let plain = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(server.url("/healthz").replacen("https://", "http://", 1))
        .send();
    assert!(plain.is_err(), "plain http was answered: {plain:?}");
    server.terminate(Duration::from_secs(20));

    // A key that does not exist.
    let r = p.run_within(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert_s,
            "--tls-key",
            "missing.pem",
        ],
        &[("ATTENTIVE_SYNC_SERVER_TOKEN", crate::support::SERVER_TOKEN)],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("missing.pem"), "{}", r.all());
}

/// `--allowed-hosts`: a request naming another host (DNS rebinding) gets 421 and the error
/// JSON, the named host is served.
#[test]
fn allowed_hosts_refuse_other_host_names() {
    let sim = start_sim(SimConfig::default());
    let p = project(&sim, &model(2, ""));
    let mut server = p.serve(&["--allowed-hosts", "localhost,sync.example.com"]);
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let client = reqwest::blocking::Client::new();
    let get = |host: &str| {
        client
            .get(server.url("/readyz"))
            .header("host", host)
            .send()
            .unwrap()
    };
    let r = get("evil.example");
    assert_eq!(r.status().as_u16(), 421);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "host_not_allowed", "{body}");
    assert_eq!(get(&format!("127.0.0.1:{port}")).status().as_u16(), 421);
    assert_eq!(get(&format!("localhost:{port}")).status().as_u16(), 200);
    assert_eq!(get("SYNC.example.com").status().as_u16(), 200);
    server.terminate(Duration::from_secs(20));
}

/// Issue 13, item 6: the OpenAPI document is a contract. schemathesis (installed by `cargo
/// xtask test` when missing) runs every check against a live `serve` whose state has runs,
/// rows, contacts with acknowledged attributes and bulk jobs, and finds nothing.
#[test]
fn schemathesis_finds_no_contract_violation() {
    let st = std::process::Command::new("st").arg("--version").output();
    assert!(
        st.is_ok_and(|o| o.status.success()),
        "schemathesis (`st`) is not installed: `cargo xtask test` installs it (python3 -m pip install 'schemathesis>=4,<5')"
    );
    const N: usize = 8;
    let sim = start_sim(SimConfig {
        contacts: seed(&emails(N).iter().map(String::as_str).collect::<Vec<_>>()),
        ..SimConfig::default()
    });
    let p = project(&sim, &model(N, ""));
    // History to read: a realtime run, then a bulk one (jobs, pending then settled rows).
    assert!(matches!(p.sync().0, 0 | 3));
    let text = p.read("attentive-sync.toml").replacen(
        "default_phone_region = \"US\"\n",
        "default_phone_region = \"US\"\ndelivery = \"bulk\"\n",
        1,
    );
    p.write("attentive-sync.toml", &text);
    p.write("data/m.csv", &model(N, "").replace(",tier-", ",gold-"));
    let (r, _) = p.sync_with(attentive_sim::DEFAULT_KEY, &[]);
    assert!(matches!(r.code, 0 | 3), "{}", r.all());
    // Half of the contact lookups name contacts the state holds (the others are generated).
    p.write(
        "schemathesis.toml",
        "[dictionaries.contacts]\nvalues = [\"p1@example.com\", \"p2@example.com\", \"+14155550100\"]\n\n[[operations]]\ninclude-path = \"/api/v1/contacts/{contact}\"\nparameters = { \"path.contact\" = { dictionary = \"contacts\", probability = 0.5 } }\n",
    );
    let mut server = p.serve(&[]);
    let out = std::process::Command::new("st")
        .arg("--config-file")
        .arg(p.path("schemathesis.toml"))
        .args(["run", &server.url("/api/openapi.json"), "--checks", "all"])
        .args(["--max-examples", "25", "--seed", "1", "--workers", "1"])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", crate::support::SERVER_TOKEN),
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("No issues found"),
        "schemathesis found problems:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
    server.terminate(Duration::from_secs(20));
}
