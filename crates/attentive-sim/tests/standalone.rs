//! The simulator without a caller's runtime: on its own thread, from files, as a binary.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use attentive_sim::{RunningSim, SeedContact, SimConfig, DEFAULT_KEY};

/// A minimal HTTP/1.1 exchange over a std socket: returns (status, body).
fn http(base_url: &str, method: &str, path: &str, key: Option<&str>) -> (u16, String) {
    let addr = base_url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn runs_on_its_own_thread_for_sync_callers() {
    let sim = RunningSim::spawn_on_thread(SimConfig {
        contacts: vec![SeedContact::email("ann@example.com")],
        ..SimConfig::default()
    })
    .unwrap();
    let base = sim.base_url();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let (status, body) = http(&base, "GET", "/v1/me", Some(DEFAULT_KEY));
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(
        &base,
        "GET",
        "/v1/subscriptions?email=ann@example.com",
        Some(DEFAULT_KEY),
    );
    assert_eq!(status, 200);
    assert_eq!(http(&base, "GET", "/v1/me", None).0, 401);
    assert_eq!(sim.requests().len(), 3);
    sim.shutdown_blocking();
    // The port is closed, unless a test running in parallel was just given the same free port:
    // then whoever answers is not this simulator (its log does not have our requests).
    if TcpStream::connect(base.trim_start_matches("http://")).is_ok() {
        let (_, log) = http(&base, "GET", "/_sim/requests", None);
        assert!(
            !log.contains("ann@example.com"),
            "the simulator still answers after shutdown: {log}"
        );
    }
}

#[test]
fn seed_contacts_load_from_csv_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("contacts.csv");
    std::fs::write(
        &csv,
        "Email,phone,name\nann@example.com,,Ann\n,+14155550100,Bob\n\"c@example.com\",+14155550101,C\n",
    )
    .unwrap();
    let loaded = SeedContact::load_file(&csv).unwrap();
    assert_eq!(loaded.len(), 3);
    assert_eq!(loaded[0].email.as_deref(), Some("ann@example.com"));
    assert_eq!(loaded[0].phone, None);
    assert_eq!(loaded[1].phone.as_deref(), Some("+14155550100"));

    let json = dir.path().join("contacts.json");
    std::fs::write(
        &json,
        r#"[{"email":"ann@example.com"},{"phone":"+14155550100","clientUserId":"u1"}]"#,
    )
    .unwrap();
    let loaded = SeedContact::load_file(&json).unwrap();
    assert_eq!(loaded[1].client_user_id.as_deref(), Some("u1"));

    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "name\nx\n").unwrap();
    assert!(SeedContact::load_file(&bad).is_err());

    // Invalid seeds are refused when the simulator starts.
    let err = RunningSim::spawn_on_thread(SimConfig {
        contacts: vec![SeedContact::phone("4155550100")],
        ..SimConfig::default()
    });
    assert!(err.is_err());
}

#[test]
fn the_binary_serves_with_flags() {
    let dir = tempfile::tempdir().unwrap();
    let contacts = dir.path().join("c.csv");
    std::fs::write(&contacts, "email,phone\nann@example.com,\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_attentive-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--key",
            "k1:attributes",
            "--contacts",
        ])
        .arg(&contacts)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    let result = std::panic::catch_unwind(|| {
        assert_eq!(http(&base, "GET", "/v1/me", Some("k1")).0, 200);
        assert_eq!(http(&base, "GET", "/v1/me", Some(DEFAULT_KEY)).0, 401);
        // k1 lacks the subscriptions permission.
        assert_eq!(
            http(
                &base,
                "GET",
                "/v1/subscriptions?email=ann@example.com",
                Some("k1")
            )
            .0,
            403
        );
        let (status, body) = http(&base, "GET", "/_sim/contacts", None);
        assert_eq!(status, 200);
        assert!(body.contains("ann@example.com"), "{body}");
    });
    child.kill().unwrap();
    child.wait().unwrap();
    result.unwrap();
}
