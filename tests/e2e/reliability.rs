//! Regression tests for issue 12's CLI defects: a hostile user, a full disk, a closed pipe, an
//! unreachable destination. Each test is named after the defect it pins.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{bin, seed, sim_config, start_sim, Project};

const KEY: &str = attentive_sim::DEFAULT_KEY;

/// A project from `init` that has run once against a simulator holding its contacts.
fn synced() -> (Project, attentive_sim::RunningSim) {
    let p = Project::init(40);
    let sim = start_sim(attentive_sim::SimConfig {
        contacts: seed(&[]),
        ..attentive_sim::SimConfig::default()
    });
    let cfg = p.read("attentive-sync.toml").replace(
        "api_key = \"${ATTENTIVE_API_KEY}\"",
        &format!(
            "api_key = \"${{ATTENTIVE_API_KEY}}\"\nbase_url = \"{}\"",
            sim.base_url()
        ),
    );
    p.write("attentive-sync.toml", &cfg);
    let r = p.run_env(&["run", "vip"], &[("ATTENTIVE_API_KEY", KEY)]);
    assert!(r.code == 0 || r.code == 3, "{}", r.all());
    (p, sim)
}

#[test]
fn plan_output_onto_the_state_database_the_model_or_the_config_is_refused() {
    let (p, _sim) = synced();
    let state = std::fs::read(p.path("attentive-sync.db")).unwrap();
    let model = p.read("data/customers.csv");
    let config = p.read("attentive-sync.toml");
    for (target, what) in [
        ("attentive-sync.db", "the state database"),
        ("data/customers.csv", "model `customers`"),
        ("./data/../attentive-sync.toml", "the config file"),
    ] {
        let r = p.run(&["plan", "vip", "--output", target]);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(
            r.stderr.contains("refusing to write") && r.stderr.contains(what),
            "{}",
            r.all()
        );
    }
    assert_eq!(std::fs::read(p.path("attentive-sync.db")).unwrap(), state);
    assert_eq!(p.read("data/customers.csv"), model);
    assert_eq!(p.read("attentive-sync.toml"), config);
    // The runs are all still there.
    let r = p.run(&["runs", "list"]);
    assert!(!r.stdout.contains("No runs yet"), "{}", r.all());
}

#[test]
fn runs_show_export_onto_the_state_database_is_refused() {
    let (p, _sim) = synced();
    let before = std::fs::read(p.path("attentive-sync.db")).unwrap();
    let r = p.run(&["runs", "show", "1", "--export", "attentive-sync.db"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("the state database"), "{}", r.all());
    assert_eq!(std::fs::read(p.path("attentive-sync.db")).unwrap(), before);
    // A normal export is complete, with no temporary file left beside it.
    let r = p.run(&["runs", "show", "1", "--export", "rows.csv"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(p.read("rows.csv").starts_with("row,contact,outcome"));
    let leftovers: Vec<_> = std::fs::read_dir(p.dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `attentive-sync plan vip --format json | head -c 200` panicked with "failed printing to
/// stdout: Broken pipe" and a backtrace.
#[test]
fn a_closed_stdout_pipe_ends_the_command_without_a_panic() {
    let p = Project::init(300);
    let mut child = Command::new(bin())
        .args(["plan", "vip", "--format", "json", "--sample", "300"])
        .current_dir(p.dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 200];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout); // `head -c 200` has what it wanted
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    // The plan's own exit code (3: the sample has bad rows), not a crash.
    assert_eq!(status.code(), Some(3), "{stderr}");
}

/// A failed `plan` created an empty state file; `plan` and `runs list` must not create one.
#[test]
fn reading_commands_never_create_the_state_file() {
    let p = Project::init(20);
    p.write("data/customers.csv", "not,the,columns\n1,2,3\n");
    let r = p.run(&["plan", "vip"]);
    assert_eq!(r.code, 1, "{}", r.all());
    for args in [
        &["runs", "list"][..],
        &["contacts", "show", "ann@example.com"],
    ] {
        let r = p.run(args);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    assert!(!p.path("attentive-sync.db").exists());
}

/// `validate` said "valid" when the state file was garbage or from a newer version.
#[test]
fn validate_reports_a_garbage_or_newer_state_file() {
    let p = Project::init(20);
    let validate = || p.run_env(&["validate"], &[("ATTENTIVE_API_KEY", KEY)]);
    let r = validate();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("the first run creates it"), "{}", r.all());

    p.write(
        "attentive-sync.db",
        "garbage, not a database at all, long enough to be read",
    );
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("problem: cannot open the state database"),
        "{}",
        r.all()
    );

    std::fs::remove_file(p.path("attentive-sync.db")).unwrap();
    {
        let conn = rusqlite::Connection::open(p.path("attentive-sync.db")).unwrap();
        conn.execute_batch("CREATE TABLE orders (id INTEGER); PRAGMA user_version = 0;")
            .unwrap();
    }
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("not an attentive-sync state database"),
        "{}",
        r.all()
    );
    assert!(!r.all().contains("CREATE TABLE"), "{}", r.all());
    let r = p.run(&["plan", "vip"]);
    assert_eq!(r.code, 1);
    assert!(r.all().lines().count() < 6, "{}", r.all());
    // From a newer version.
    std::fs::remove_file(p.path("attentive-sync.db")).unwrap();
    {
        let conn = rusqlite::Connection::open(p.path("attentive-sync.db")).unwrap();
        conn.execute_batch("CREATE TABLE runs (id INTEGER); PRAGMA user_version = 42;")
            .unwrap();
    }
    let r = validate();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("schema version 42"), "{}", r.all());
}

/// With `base_url` on a closed port, `run` spent 29 s on 2,425 requests and 487 retries,
/// printed hundreds of WARN lines and ended `partial` (exit 3).
#[test]
fn an_unreachable_destination_fails_the_run_quickly_with_one_message() {
    let p = Project::init(300);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let cfg = p.read("attentive-sync.toml").replace(
        "api_key = \"${ATTENTIVE_API_KEY}\"",
        &format!("api_key = \"${{ATTENTIVE_API_KEY}}\"\nbase_url = \"{base}\""),
    );
    p.write("attentive-sync.toml", &cfg);
    let started = Instant::now();
    let r = p.run_env(&["run", "vip"], &[("ATTENTIVE_API_KEY", KEY)]);
    let took = started.elapsed();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains(&format!("cannot reach Attentive at {base}")),
        "{}",
        r.all()
    );
    let warns = r.stderr.lines().filter(|l| l.contains("WARN")).count();
    assert!(warns <= 3, "{warns} warning lines:\n{}", r.stderr);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let r = p.run(&["runs", "list", "--format", "json"]);
    let runs: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(runs[0]["status"], "failed", "{runs}");
}

/// `run` against a state store that fails mid-run (a trigger stands in for a full disk):
/// exit 1, the run recorded `failed`, and far fewer writes sent than the model has changes.
#[test]
fn a_run_stops_sending_when_it_cannot_record() {
    let p = Project::new();
    let people: Vec<String> = (0..400).map(|i| format!("p{i}@example.com")).collect();
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    let sim = start_sim(attentive_sim::SimConfig {
        contacts: seed(&refs),
        faults: attentive_sim::Faults {
            latency_ms: 20,
            ..attentive_sim::Faults::default()
        },
        ..attentive_sim::SimConfig::default()
    });
    p.write(
        "attentive-sync.toml",
        &sim_config(&sim.base_url(), "first_name = \"first\"", ""),
    );
    let mut csv = String::from("email,first\n");
    for e in &people {
        csv.push_str(&format!("{e},Ann\n"));
    }
    p.write("data/m.csv", &csv);
    let child = p.spawn(&["run", "a", "--max-in-flight", "8"]);
    // Once some writes are acknowledged, the disk "fills".
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.counters().count(crate::support::WRITE, 202) < 40 {
        assert!(Instant::now() < deadline, "the run did not start writing");
        std::thread::sleep(Duration::from_millis(5));
    }
    {
        let conn = rusqlite::Connection::open(p.path("attentive-sync.db")).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER full BEFORE INSERT ON run_rows \
             BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;",
        )
        .unwrap();
    }
    let at_failure = sim.counters().count(crate::support::WRITE, 202);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("database or disk is full"), "{stderr}");
    let writes = sim.counters().count(crate::support::WRITE, 202);
    assert!(
        writes - at_failure <= 64,
        "{} writes after the store failed ({writes} in all)",
        writes - at_failure
    );
    assert!(writes < 200, "{writes} of 400");
}
