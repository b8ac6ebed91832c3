//! `config`: the project config, parsed and validated by [`Project::parse`] from arbitrary
//! text (two environment variables set, `API_KEY` and `DATA_DIR`).
//!
//! Checked: a refused config is a TOML syntax error with a message, or a list of problems
//! that is not empty, each with a key and a message. An accepted one is consistent: every
//! activation names a model and a destination the project has and maps at least one
//! attribute; a `schedule` is parsed exactly when one is set; a file model's segment filter
//! prints as text that parses back to it; relative paths are resolved against the config's
//! folder; and the API key never shows in the project's `Debug` form. Parsing the same text
//! twice gives the same project.

use std::path::Path;

use runner::config::{ConfigError, ModelSpec, Project, Segment};
use sync_core::segment::Filter;

const API_KEY: &str = "sk-fuzz-9f3b2c";

fn env(name: &str) -> Option<String> {
    match name {
        "API_KEY" => Some(API_KEY.to_owned()),
        "DATA_DIR" => Some("/data".to_owned()),
        _ => None,
    }
}

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/fuzz/project/attentive-sync.toml");
    let project = match Project::parse(path, text, &env) {
        Ok(p) => p,
        Err(e) => {
            match &e {
                ConfigError::Syntax { message, .. } => assert!(!message.is_empty()),
                ConfigError::Invalid { problems, .. } => {
                    assert!(!problems.is_empty(), "invalid without a problem");
                    for p in problems {
                        assert!(!p.key.is_empty() && !p.message.is_empty(), "{p:?}");
                    }
                }
                ConfigError::Read { .. } => panic!("parse read a file: {e:?}"),
            }
            let _ = e.to_string();
            return;
        }
    };
    let again = Project::parse(path, text, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        format!("{again:?}"),
        format!("{project:?}"),
        "parse is deterministic"
    );
    if !text.contains(API_KEY) {
        assert!(
            !format!("{project:?}").contains(API_KEY),
            "the API key shows in Debug"
        );
    }
    assert!(project.state_path.is_absolute(), "{:?}", project.state_path);
    for model in project.models.values() {
        let file = match &model.spec {
            ModelSpec::Csv { path, .. }
            | ModelSpec::Jsonl { path }
            | ModelSpec::Parquet { path }
            | ModelSpec::Sqlite { path, .. } => Some(path),
            ModelSpec::Postgres { .. } => None,
        };
        if let Some(p) = file {
            assert!(p.is_absolute(), "model {} at {p:?}", model.name);
        }
    }
    for (name, a) in &project.activations {
        assert_eq!(&a.name, name);
        assert!(project.models.contains_key(&a.model), "{name}: {}", a.model);
        assert!(
            project.destinations.contains_key(&a.destination),
            "{name}: {}",
            a.destination
        );
        assert!(!a.mapping.attributes.is_empty(), "{name} maps nothing");
        assert_eq!(a.schedule.is_some(), a.cron.is_some(), "{name}");
        if let Some(Segment::Rows(f)) = &a.segment {
            let text = f.to_string();
            assert_eq!(Filter::parse(&text).as_ref(), Ok(f), "{name}: {text}");
        }
    }
}
