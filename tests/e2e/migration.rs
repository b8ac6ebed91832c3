//! State files written by earlier builds open in this one, keeping what they hold.
//!
//! `tests/fixtures/schema-1` was written by the first release (state schema 1, commit
//! 69323c0): its `attentive-sync demo --dir`, then the 20 model rows whose contacts Attentive
//! does not have were removed from the model, then its `plan vip` and `contacts show` answers
//! were saved under `expected/` (`plan-counts.json`, `contacts-<key>.json`).

use std::path::Path;

use crate::support::Project;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/schema-1");
const ENV: [(&str, &str); 1] = [("ATTENTIVE_API_KEY", "not-used-by-plan")];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn schema_version(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// The schema version this build writes.
fn latest() -> i64 {
    state_store::StateStore::supported_schema_version()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Opening a schema-1 file migrates it in place to the current schema in one step; the
/// migrated file plans no change for the same model (as the old build planned), and `contacts
/// show` gives the old build's answers: every value, its fingerprint, the run that set it and
/// when the contact was settled.
#[test]
fn a_schema_1_state_file_migrates_and_gives_the_same_answers() {
    let p = Project::new();
    copy_dir(Path::new(FIXTURE), p.dir());
    let db = p.path("attentive-sync.db");
    assert_eq!(schema_version(&db), 1);

    // While another process holds an activation (a lock with a fresh heartbeat: a schema-1
    // row says nothing else of its holder), the migration is refused and changes nothing.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO locks VALUES ('vip', 'attentive-sync run on another host', 1, ?1, ?1)",
            [&now],
        )
        .unwrap();
    let refused = p.run_env(&["plan", "vip", "--format", "json"], &ENV);
    assert_ne!(refused.code, 0, "{}", refused.all());
    assert!(
        refused
            .stderr
            .contains(&format!("needs migrating to {}", latest()))
            && refused
                .stderr
                .contains("locked by attentive-sync run on another host"),
        "{}",
        refused.all()
    );
    assert_eq!(schema_version(&db), 1);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("DELETE FROM locks", [])
        .unwrap();

    let plan = p.run_env(&["plan", "vip", "--format", "json"], &ENV);
    assert!(plan.code == 0 || plan.code == 3, "{}", plan.all());
    assert_eq!(schema_version(&db), latest(), "{}", plan.all());
    let counts = json(&plan.stdout)["counts"].clone();
    let expected = json(&p.read("expected/plan-counts.json"));
    assert_eq!(counts, expected);
    assert_eq!(counts["changed"], 0);
    assert_eq!(counts["unchanged"], 964);

    let mut checked = 0;
    for entry in std::fs::read_dir(p.path("expected")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(key) = name
            .strip_prefix("contacts-")
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let shown = p.run_env(&["contacts", "show", key, "--format", "json"], &ENV);
        assert_eq!(shown.code, 0, "{}", shown.all());
        let mut now = json(&shown.stdout);
        // Added since schema 1 (attributes in doubt, schema 3): none in that file.
        for a in now["activations"].as_array_mut().unwrap() {
            let doubts = a.as_object_mut().unwrap().remove("in_doubt");
            assert_eq!(doubts, Some(serde_json::json!([])), "{key}");
        }
        assert_eq!(now, json(&p.read(&format!("expected/{name}"))), "{key}");
        checked += 1;
    }
    assert!(checked >= 4, "{checked} contacts compared");

    // The views show the moved values as text, as the old tables did.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let city: (String, String, i64) = conn
        .query_row(
            "SELECT value_tag, value_text, run_id FROM snapshot_attributes \
             WHERE contact_key = 'mateo.nguyen0@example.com' AND attribute_key = 'std:city'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(city, ("s".into(), "Springfield".into(), 3));
    let counts: (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM snapshot_contacts), \
             (SELECT count(*) FROM snapshot_attributes)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(counts, (964, 9978));
}
