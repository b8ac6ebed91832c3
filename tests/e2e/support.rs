//! Helpers: a temporary project folder and a way to run the binary in it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Project {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout and stderr together, for assertions about messages.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_attentive-sync"))
}

impl Project {
    pub fn new() -> Project {
        Project {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A project made by `attentive-sync init`.
    pub fn init(rows: u64) -> Project {
        let p = Project::new();
        let r = p.run(&["init", "--dir", ".", "--rows", &rows.to_string()]);
        assert_eq!(r.code, 0, "{}", r.all());
        p
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).expect("read")
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("ATTENTIVE_SYNC_CONFIG")
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run attentive-sync").into()
    }

    /// `plan ACTIVATION --format json`, parsed.
    pub fn plan_json(&self, activation: &str) -> (i32, serde_json::Value) {
        let r = self.run(&["plan", activation, "--format", "json"]);
        assert!(r.code == 0 || r.code == 3, "plan failed: {}", r.all());
        (r.code, serde_json::from_str(&r.stdout).expect("plan JSON"))
    }

    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A minimal config over `data/m.csv` with an email identifier and the given mapping lines.
pub fn config(standard: &str, custom: &str) -> String {
    format!(
        r#"[destinations.attentive]
api_key = "${{ATTENTIVE_API_KEY}}"

[models.m]
source = "csv"
path = "data/m.csv"

[activations.a]
model = "m"
destination = "attentive"
identifier = {{ column = "email", kind = "email" }}
default_phone_region = "US"

[activations.a.standard]
{standard}

[activations.a.custom]
{custom}
"#
    )
}

// ---------------------------------------------------------------------------------------------
// Runs against the in-process Attentive simulator.

/// The write endpoint, as the simulator names it in its log and counters.
pub const WRITE: &str = "POST /v2/user/attributes";

/// An Attentive simulator on 127.0.0.1, on its own thread.
pub fn start_sim(config: attentive_sim::SimConfig) -> attentive_sim::RunningSim {
    attentive_sim::RunningSim::spawn_on_thread(config).expect("start the Attentive simulator")
}

/// Contacts known by their email.
pub fn seed(emails: &[&str]) -> Vec<attentive_sim::SeedContact> {
    emails
        .iter()
        .map(|e| attentive_sim::SeedContact::email(*e))
        .collect()
}

/// [`config`], pointed at a simulator.
pub fn sim_config(base_url: &str, standard: &str, custom: &str) -> String {
    let key_line = "api_key = \"${ATTENTIVE_API_KEY}\"\n";
    let text = config(standard, custom);
    assert!(text.contains(key_line));
    text.replacen(
        key_line,
        &format!("{key_line}base_url = \"{base_url}\"\n"),
        1,
    )
}

/// [`sim_config`] over a JSON Lines model, `data/m.jsonl`.
pub fn sim_config_jsonl(base_url: &str, standard: &str, custom: &str) -> String {
    let csv = "source = \"csv\"\npath = \"data/m.csv\"";
    let text = sim_config(base_url, standard, custom);
    assert!(text.contains(csv));
    text.replacen(csv, "source = \"jsonl\"\npath = \"data/m.jsonl\"", 1)
}

/// The highest request sequence number the simulator has logged (0 before any request).
pub fn last_seq(sim: &attentive_sim::SimHandle) -> u64 {
    sim.requests().iter().map(|r| r.seq).max().unwrap_or(0)
}

/// Requests logged after `seq` (see [`last_seq`]), in arrival order.
pub fn requests_after(
    sim: &attentive_sim::SimHandle,
    seq: u64,
) -> Vec<attentive_sim::RequestRecord> {
    sim.requests().into_iter().filter(|r| r.seq > seq).collect()
}

/// What a run sent after `seq` besides `GET /v1/me` (the account check every run makes
/// once, before anything else).
pub fn sent_after(sim: &attentive_sim::SimHandle, seq: u64) -> Vec<attentive_sim::RequestRecord> {
    requests_after(sim, seq)
        .into_iter()
        .filter(|r| r.endpoint != "GET /v1/me")
        .collect()
}

/// Write requests (`POST /v2/user/attributes`) logged after `seq`.
pub fn writes_after(sim: &attentive_sim::SimHandle, seq: u64) -> Vec<attentive_sim::RequestRecord> {
    requests_after(sim, seq)
        .into_iter()
        .filter(|r| r.endpoint == WRITE)
        .collect()
}

/// The `identifiers.email` of a write body.
pub fn body_email(r: &attentive_sim::RequestRecord) -> String {
    r.body["identifiers"]["email"]
        .as_str()
        .unwrap_or_else(|| panic!("write without identifiers.email: {}", r.body))
        .to_owned()
}

/// Whether a JSON value has an object key `key` anywhere inside it.
pub fn has_key(v: &serde_json::Value, key: &str) -> bool {
    match v {
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| k == key || has_key(v, key)),
        serde_json::Value::Array(a) => a.iter().any(|v| has_key(v, key)),
        _ => false,
    }
}

impl Project {
    /// Starts `attentive-sync ARGS` in the background with the simulator's key, stdout and
    /// stderr piped: for tests that act while it runs.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(bin())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("ATTENTIVE_SYNC_CONFIG")
            .env_remove("RUST_LOG")
            .env("ATTENTIVE_API_KEY", attentive_sim::DEFAULT_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start attentive-sync")
    }

    /// Runs the binary with a deadline: a hung run fails the test instead of hanging it.
    pub fn run_within(&self, args: &[&str], env: &[(&str, &str)], deadline: Duration) -> Run {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("ATTENTIVE_SYNC_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start attentive-sync");
        let read = |mut s: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = read(Box::new(child.stdout.take().expect("stdout")));
        let err = read(Box::new(child.stderr.take().expect("stderr")));
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for attentive-sync") {
                break s;
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "attentive-sync {args:?} did not finish within {deadline:?}; stderr: {}",
                    err.join().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Run {
            code: status.code().unwrap_or(-1),
            stdout: out.join().expect("stdout reader"),
            stderr: err.join().expect("stderr reader"),
        }
    }

    /// `run a --format json [extra]` with `ATTENTIVE_API_KEY=key`: the exit code, the parsed
    /// report, and the raw output.
    pub fn sync_with(&self, key: &str, extra: &[&str]) -> (Run, serde_json::Value) {
        let mut args = vec!["run", "a", "--format", "json"];
        args.extend_from_slice(extra);
        let r = self.run_within(
            &args,
            &[("ATTENTIVE_API_KEY", key)],
            Duration::from_secs(90),
        );
        let report = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("run report is not JSON ({e}): {}", r.all()));
        (r, report)
    }

    /// [`Project::sync_with`] with the simulator's default key; the run must finish (exit 0
    /// or 3, status succeeded or partial).
    pub fn sync(&self) -> (i32, serde_json::Value) {
        let (r, report) = self.sync_with(attentive_sim::DEFAULT_KEY, &[]);
        assert!(
            (r.code == 0 && report["status"] == "succeeded")
                || (r.code == 3 && report["status"] == "partial"),
            "run did not finish: {}",
            r.all()
        );
        (r.code, report)
    }

    /// `runs show ID [--outcome O] --format json`, every row.
    pub fn runs_show(&self, id: &serde_json::Value, outcome: Option<&str>) -> serde_json::Value {
        let id = id.as_i64().expect("run id").to_string();
        let mut args = vec![
            "runs", "show", &id, "--format", "json", "--limit", "1000000",
        ];
        if let Some(o) = outcome {
            args.extend_from_slice(&["--outcome", o]);
        }
        let r = self.run_within(&args, &[], Duration::from_secs(60));
        assert_eq!(r.code, 0, "{}", r.all());
        serde_json::from_str(&r.stdout).expect("runs show JSON")
    }
}

// ---------------------------------------------------------------------------------------------
// `attentive-sync serve`, driven over loopback.

/// The server token the tests use.
pub const SERVER_TOKEN: &str = "e2e-server-token-0123456789abcdef";

/// A running `attentive-sync serve`; killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    pub http: reqwest::blocking::Client,
}

impl Project {
    /// Starts `attentive-sync serve --listen 127.0.0.1:0 --jitter-secs 0 [extra]` with the
    /// simulator's key and [`SERVER_TOKEN`], and waits for its `listening on` line.
    pub fn serve(&self, extra: &[&str]) -> Server {
        self.serve_env(
            extra,
            &[
                ("ATTENTIVE_API_KEY", attentive_sim::DEFAULT_KEY),
                ("ATTENTIVE_SYNC_SERVER_TOKEN", SERVER_TOKEN),
            ],
        )
    }

    pub fn serve_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Server {
        use std::io::BufRead;
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--jitter-secs", "0"];
        args.extend_from_slice(extra);
        let mut cmd = Command::new(bin());
        cmd.args(&args)
            .current_dir(self.dir.path())
            .env_remove("ATTENTIVE_SYNC_CONFIG")
            .env_remove("ATTENTIVE_SYNC_SERVER_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start attentive-sync serve");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        {
            let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                while err.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    sink.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            let _ = tx.send(line);
            let mut rest = String::new();
            let _ = out.read_to_string(&mut rest);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Some(base) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "serve did not start: stdout {line:?}, stderr {}",
                stderr.lock().unwrap()
            );
        };
        Server {
            child,
            base: base.to_owned(),
            stderr,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("HTTP client"),
        }
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What the server logged so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `GET path` with the token: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(SERVER_TOKEN)
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (r.status().as_u16(), r.text().expect("body"))
    }

    /// `GET path` with the token, as JSON.
    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.get(path);
        let v = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"));
        (status, v)
    }

    /// `POST path` with the token, as JSON, with the Location header.
    pub fn post_json(&self, path: &str) -> (u16, serde_json::Value, Option<String>) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(SERVER_TOKEN)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        let body = r.text().expect("body");
        let v = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("POST {path} is not JSON ({e}): {body}"));
        (status, v, location)
    }

    /// Starts a run of `activation`; its id.
    pub fn start_run(&self, activation: &str) -> i64 {
        let (status, v, _) = self.post_json(&format!("/api/v1/activations/{activation}/runs"));
        assert_eq!(status, 202, "{v}\n{}", self.logs());
        v["run_id"].as_i64().expect("run_id")
    }

    /// Waits until run `id` is no longer `running`; its JSON.
    pub fn wait_run(&self, id: i64, deadline: Duration) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let (status, v) = self.get_json(&format!("/api/v1/runs/{id}"));
            assert_eq!(status, 200, "{v}");
            if v["status"] != "running" {
                return v;
            }
            assert!(
                started.elapsed() < deadline,
                "run {id} still running after {deadline:?}: {v}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the process to end; its exit code.
    pub fn terminate(&mut self, deadline: Duration) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for serve") {
                // Let the stderr reader catch the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return s.code();
            }
            assert!(
                started.elapsed() < deadline,
                "serve did not stop within {deadline:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
