//! Helpers: a temporary project folder and a way to run the binary in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
