//! The run pipeline driven in-process against a scripted destination and the real state
//! store.

use std::sync::atomic::AtomicUsize;

use sync_core::memory::{Answer, MemoryDestination};

use super::*;

fn sample(dir: &std::path::Path, rows: u64) -> Project {
    let cfg = crate::sample::write_sample_project(dir, rows, None, true).unwrap();
    Project::parse(&cfg, &std::fs::read_to_string(&cfg).unwrap(), &|_| None).unwrap()
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ScriptError(String);

/// A destination where every contact exists and every write is acknowledged after a short
/// delay (20 ms, so a commit takes a fraction of a write); `on_write(n)` runs before the n-th
/// write (1-based) is answered.
struct Scripted {
    writes: AtomicUsize,
    on_write: Box<dyn Fn(usize) -> Option<ScriptError> + Send + Sync>,
}

impl Scripted {
    fn new(on_write: impl Fn(usize) -> Option<ScriptError> + Send + Sync + 'static) -> Self {
        Scripted {
            writes: AtomicUsize::new(0),
            on_write: Box::new(on_write),
        }
    }

    fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
}

impl Destination for Scripted {
    type Error = ScriptError;

    async fn check_exists(&self, _: &ContactRef) -> Result<Existence, ScriptError> {
        Ok(Existence::Exists)
    }

    async fn write(&self, _: &ContactWrite) -> Result<WriteOutcome, ScriptError> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        match (self.on_write)(n) {
            Some(e) => Err(e),
            None => Ok(WriteOutcome::Acknowledged),
        }
    }
}

fn quiet() -> Arc<dyn Fn(Progress) + Send + Sync> {
    Arc::new(|_| {})
}

async fn run_with(project: &Project, dest: Arc<Scripted>, opts: RunOptions) -> RunReport {
    run(project, "vip", dest, opts, quiet()).await.unwrap()
}

/// Regression (issue 12): with the state on a full disk, a run went on sending all 984
/// writes for 11 s after its commits had started failing, and the next run re-sent 929.
/// Now the committer's first failure halts delivery at once: only the writes already in
/// flight are sent after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_committer_stops_delivery_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path(), 400);
    let state = project.state_path.clone();
    let failed_at = Arc::new(AtomicUsize::new(0));
    let dest = {
        let failed_at = failed_at.clone();
        Arc::new(Scripted::new(move |n| {
            if n == 50 {
                // From now on no run row can be recorded, as on a full disk.
                let conn = rusqlite::Connection::open(&state).unwrap();
                conn.busy_timeout(Duration::from_secs(5)).unwrap();
                conn.execute_batch(
                    "CREATE TRIGGER full BEFORE INSERT ON run_rows \
                     BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;",
                )
                .unwrap();
                failed_at.store(n, Ordering::SeqCst);
            }
            None
        }))
    };
    let opts = RunOptions {
        max_in_flight: 8,
        ..RunOptions::default()
    };
    let report = run_with(&project, dest.clone(), opts).await;
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    let error = report.error.clone().unwrap_or_default();
    assert!(
        error.contains("recording results in the state store failed")
            && error.contains("database or disk is full"),
        "{error}"
    );
    // Writes after the disk filled: those answered before the next commit found out (one
    // commit's worth: a few at 400 writes/s, more on a loaded machine) and the 8 in flight
    // when it did; never the rest of the model (about 390 changes; the old code sent all).
    let after = dest.writes() - failed_at.load(Ordering::SeqCst);
    assert!(
        after <= 64,
        "{after} writes were sent after the state store failed"
    );
    assert!(dest.writes() < 120, "{} writes in all", dest.writes());

    // The run is recorded as failed, and the next run (disk freed) sends the rest.
    {
        let conn = rusqlite::Connection::open(&project.state_path).unwrap();
        conn.execute_batch("DROP TRIGGER full").unwrap();
    }
    let again = Arc::new(Scripted::new(|_| None));
    let second = run_with(&project, again.clone(), RunOptions::default()).await;
    assert_eq!(second.status, RunStatus::Partial, "{second:?}"); // the sample has bad rows
    let store = StateStore::open(&project.state_path).unwrap();
    let first = store.run(report.run_id).unwrap().unwrap();
    assert_eq!(first.status, RunStatus::Failed);
    assert!(
        dest.writes() + again.writes() <= second.counts.updated as usize + dest.writes(),
        "re-sends beyond what was not committed"
    );
    assert!(second.counts.updated > 250, "{second:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_destination_error_stops_the_run_and_the_next_run_sends_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path(), 300);
    let dest = Arc::new(Scripted::new(|n| {
        (n >= 40).then(|| ScriptError("the API key was rejected (401)".into()))
    }));
    let opts = RunOptions {
        max_in_flight: 4,
        ..RunOptions::default()
    };
    let report = run_with(&project, dest.clone(), opts).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert!(report.error.as_deref().unwrap_or("").contains("401"));
    assert!(dest.writes() <= 40 + 4, "{} writes", dest.writes());
    let acknowledged = report.counts.updated;
    assert!(acknowledged >= 30, "{report:?}");

    // Nothing acknowledged is sent again, everything else is.
    let second = run_with(
        &project,
        Arc::new(Scripted::new(|_| None)),
        RunOptions::default(),
    )
    .await;
    assert_eq!(second.counts.unchanged, acknowledged, "{second:?}");
    let third = run_with(
        &project,
        Arc::new(Scripted::new(|_| None)),
        RunOptions::default(),
    )
    .await;
    assert_eq!(third.counts.updated, 0, "{third:?}");
}

/// Regression (issue 12): deleting the state file mid-run let a second run past the lock.
/// The run now stops at its next commit or heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_deleted_mid_run_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path(), 400);
    let state = project.state_path.clone();
    let dest = Arc::new(Scripted::new(move |n| {
        if n == 30 {
            std::fs::remove_file(&state).unwrap();
        }
        None
    }));
    let opts = RunOptions {
        max_in_flight: 4,
        ..RunOptions::default()
    };
    let report = run_with(&project, dest.clone(), opts).await;
    assert_eq!(report.status, RunStatus::Failed);
    let error = report.error.unwrap_or_default();
    assert!(error.contains("deleted or replaced"), "{error}");
    assert!(dest.writes() <= 30 + 3 * 4, "{} writes", dest.writes());
}

/// Regression (issue 12): a lock conflict was prefixed "the state store failed".
#[tokio::test]
async fn a_lock_conflict_says_who_holds_the_activation() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path(), 10);
    let store = StateStore::open(&project.state_path).unwrap();
    let _held = store.try_lock("vip", "a run on another terminal").unwrap();
    let dest = Arc::new(Scripted::new(|_| None));
    let err = run(
        &project,
        "vip",
        dest.clone(),
        RunOptions::default(),
        quiet(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("activation `vip` is locked by a run on another terminal"),
        "{err}"
    );
    assert_eq!(dest.writes(), 0);
}

/// Every contact exists; writes to the contacts in `fail` still fail after their retries (a
/// timeout: Attentive may or may not have applied them); every write is recorded.
#[derive(Default)]
struct Recording {
    fail: Mutex<Vec<String>>,
    writes: Mutex<Vec<ContactWrite>>,
}

impl Recording {
    fn failing(keys: &[&str]) -> Self {
        Recording {
            fail: Mutex::new(keys.iter().map(|k| (*k).to_owned()).collect()),
            ..Recording::default()
        }
    }

    /// The writes sent to one contact, as `attribute key=value` lists.
    fn sent_to(&self, key: &str) -> Vec<Vec<String>> {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|w| w.contact.key == key)
            .map(|w| {
                w.attributes
                    .iter()
                    .map(|(id, v)| {
                        format!(
                            "{}={}",
                            id.key(),
                            v.as_ref().map_or(String::new(), |v| v.to_text())
                        )
                    })
                    .collect()
            })
            .collect()
    }

    fn count(&self) -> usize {
        self.writes.lock().unwrap().len()
    }
}

impl Destination for Recording {
    type Error = ScriptError;

    async fn check_exists(&self, _: &ContactRef) -> Result<Existence, ScriptError> {
        Ok(Existence::Exists)
    }

    async fn write(&self, w: &ContactWrite) -> Result<WriteOutcome, ScriptError> {
        self.writes.lock().unwrap().push(w.clone());
        if self.fail.lock().unwrap().contains(&w.contact.key) {
            return Ok(WriteOutcome::Failed {
                reason: "timed out after 3 attempts".into(),
            });
        }
        Ok(WriteOutcome::Acknowledged)
    }
}

/// Sets the city (the 5th column) of the sample model's first data row; returns its email.
fn set_first_city(dir: &std::path::Path, city: &str) -> String {
    let path = dir.join("data").join("customers.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut cells: Vec<String> = lines[1].split(',').map(str::to_owned).collect();
    cells[4] = city.to_owned();
    lines[1] = cells.join(",");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    cells[0].trim().to_lowercase()
}

/// Regression (issue 12, found by the SIGKILL soak): a write whose answer was never recorded
/// (here it timed out; in the soak the process was killed with it in flight) may have been
/// applied by Attentive, while the snapshot kept the old value. When the model then went back
/// to the old value, nothing was ever sent and Attentive kept the value in flight. The write's
/// attributes are now in doubt until answered, and sent again whatever the model holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_an_answer_is_sent_again_even_when_the_model_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path(), 10);
    let first = set_first_city(dir.path(), "Paris");
    let first = first.as_str();
    let all = Arc::new(Recording::default());
    let report = run(&project, "vip", all.clone(), RunOptions::default(), quiet())
        .await
        .unwrap();
    assert_eq!(report.counts.failed, 0, "{report:?}");
    assert_eq!(all.sent_to(first).len(), 1, "{:?}", all.sent_to(first));

    // The city moves to Lyon; its write times out.
    set_first_city(dir.path(), "Lyon");
    let flaky = Arc::new(Recording::failing(&[first]));
    let report = run(
        &project,
        "vip",
        flaky.clone(),
        RunOptions::default(),
        quiet(),
    )
    .await
    .unwrap();
    assert_eq!(report.counts.failed, 1, "{report:?}");
    assert_eq!(flaky.sent_to(first), [["std:city=Lyon"]]);
    let store = StateStore::open(&project.state_path).unwrap();
    assert_eq!(store.in_doubt_count("vip").unwrap(), 1);
    let shown = store.contact(first).unwrap();
    assert_eq!(shown[0].in_doubt[0].key, "std:city");
    drop(store);

    // The model goes back to Paris, which is what the snapshot holds: Paris is sent anyway.
    set_first_city(dir.path(), "Paris");
    let again = Arc::new(Recording::default());
    let report = run(
        &project,
        "vip",
        again.clone(),
        RunOptions::default(),
        quiet(),
    )
    .await
    .unwrap();
    assert_eq!(again.sent_to(first), [["std:city=Paris"]], "{report:?}");
    assert_eq!(again.count(), 1, "only the contact in doubt is sent");
    let store = StateStore::open(&project.state_path).unwrap();
    assert_eq!(store.in_doubt_count("vip").unwrap(), 0);
    drop(store);

    // Settled: nothing more is sent.
    let quiet_run = Arc::new(Recording::default());
    run(
        &project,
        "vip",
        quiet_run.clone(),
        RunOptions::default(),
        quiet(),
    )
    .await
    .unwrap();
    assert_eq!(quiet_run.count(), 0);
}

/// The normalized emails of the sample model's rows (invalid ones included, as written).
fn sample_emails(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("data").join("customers.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().trim().to_lowercase())
        .collect()
}

async fn run_memory(
    project: &Project,
    dest: &Arc<MemoryDestination>,
    opts: RunOptions,
) -> RunReport {
    run(project, "vip", dest.clone(), opts, quiet())
        .await
        .unwrap()
}

/// A whole run in-process against the memory destination: every contact it holds gets the
/// model's values, people it does not hold are `not_found` and never written, and a second
/// run sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_delivers_the_model_and_the_next_run_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path(), 60);
    let emails = sample_emails(dir.path());
    // Attentive has every contact but the first five.
    let dest = Arc::new(MemoryDestination::with_contacts(
        emails[5..].iter().cloned(),
    ));
    let report = run_memory(&project, &dest, RunOptions::default()).await;
    assert_eq!(report.status, RunStatus::Partial, "{report:?}");
    assert_eq!(report.counts.not_found, 5, "{report:?}");
    assert_eq!(report.counts.failed, 0);
    let account = dest.account();
    assert!(
        account
            .writes
            .iter()
            .all(|w| !emails[..5].contains(&w.contact.key)),
        "a write went to a contact Attentive does not have"
    );
    assert_eq!(account.writes.len() as u64, report.counts.updated);
    let second = emails[6].as_str();
    assert!(
        account.contacts[second].contains_key("custom:Loyalty Tier"),
        "{:?}",
        account.contacts[second]
    );

    let again = run_memory(&project, &dest, RunOptions::default()).await;
    assert_eq!(
        dest.account().writes.len(),
        account.writes.len(),
        "{again:?}"
    );
    assert_eq!(again.counts.updated, 0);
    assert_eq!(
        again.counts.not_found, 5,
        "cached as not found: no write, no check"
    );
    assert_eq!(again.existence_checks, 0);
}

/// Duplicated identifiers: with the default policy every row of the identifier is rejected,
/// and nothing is sent for it, not even the first row (pass 1 finds them before delivery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_identifiers_are_rejected_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path(), 40);
    let path = dir.path().join("data").join("customers.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let first_row = text.lines().nth(1).unwrap().to_owned();
    std::fs::write(&path, format!("{text}{first_row}\n")).unwrap();
    let emails = sample_emails(dir.path());
    let dup = emails[0].clone();
    let dest = Arc::new(MemoryDestination::with_contacts(emails.iter().cloned()));
    let report = run_memory(&project, &dest, RunOptions::default()).await;
    assert!(
        dest.account().writes.iter().all(|w| w.contact.key != dup),
        "a duplicated identifier was written"
    );
    let store = StateStore::open(&project.state_path).unwrap();
    let rows = store
        .run_rows(report.run_id, Some("rejected"), 0, 100)
        .unwrap();
    let dup_rows: Vec<u64> = rows
        .iter()
        .filter(|r| r.code.as_deref() == Some("duplicate_identifier"))
        .map(|r| r.row_number)
        .collect();
    assert_eq!(dup_rows, [2, 42], "{rows:?}");
}

/// Ctrl-C mid-run: no new contact starts, those in flight finish and are committed; the next
/// run sends exactly the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_commits_what_it_sent_and_the_next_run_sends_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path(), 300);
    let emails = sample_emails(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let dest = {
        let stop = stop.clone();
        Arc::new(
            MemoryDestination::with_contacts(emails.iter().cloned()).with_hook(move |n, _| {
                if n == 25 {
                    stop.store(true, Ordering::SeqCst);
                }
                None
            }),
        )
    };
    let opts = RunOptions {
        max_in_flight: 4,
        stop: stop.clone(),
        ..RunOptions::default()
    };
    let report = run_memory(&project, &dest, opts).await;
    assert_eq!(report.status, RunStatus::Interrupted, "{report:?}");
    let sent = dest.account().writes.len();
    assert!((25..=25 + 4).contains(&sent), "{sent} writes");
    assert_eq!(
        report.counts.updated as usize, sent,
        "every write sent was committed"
    );

    let rest = Arc::new(MemoryDestination::with_contacts(emails.iter().cloned()));
    let second = run_memory(&project, &rest, RunOptions::default()).await;
    assert_eq!(second.counts.unchanged as usize, sent, "{second:?}");
    let resent: Vec<_> = rest
        .account()
        .writes
        .iter()
        .filter(|w| dest.account().writes.iter().any(|d| d.contact == w.contact))
        .map(|w| w.contact.key.clone())
        .collect();
    assert!(resent.is_empty(), "sent twice: {resent:?}");
}

/// Partial failures: a write refused for its content (400) is recorded `rejected` and not
/// sent again until its values change; one that still failed is `failed` and sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_failed_writes_make_a_partial_run() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path(), 30);
    let emails = sample_emails(dir.path());
    let (refused, failing) = (emails[1].clone(), emails[2].clone());
    let dest = {
        let (refused, failing) = (refused.clone(), failing.clone());
        Arc::new(
            MemoryDestination::with_contacts(emails.iter().cloned()).with_hook(move |_, w| {
                if w.contact.key == refused {
                    Some(Answer::Outcome(WriteOutcome::Rejected {
                        message: "400: invalid value for zip".into(),
                    }))
                } else if w.contact.key == failing {
                    Some(Answer::Outcome(WriteOutcome::Failed {
                        reason: "503 after 3 attempts".into(),
                    }))
                } else {
                    None
                }
            }),
        )
    };
    let report = run_memory(&project, &dest, RunOptions::default()).await;
    assert_eq!(report.status, RunStatus::Partial, "{report:?}");
    assert_eq!(report.counts.failed, 1, "{report:?}");
    let model_rejected = report.plan.rejected;
    assert_eq!(report.counts.rejected, model_rejected + 1, "{report:?}");

    let next = Arc::new(MemoryDestination::with_contacts(emails.iter().cloned()));
    let second = run_memory(&project, &next, RunOptions::default()).await;
    let keys: Vec<String> = next
        .account()
        .writes
        .iter()
        .map(|w| w.contact.key.clone())
        .collect();
    assert_eq!(keys, [failing], "{second:?}");
    assert_eq!(second.status, RunStatus::Partial); // the model's own bad rows
}

/// A fatal error mid-run (the key was revoked: 401) stops the run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_mid_run_stops_it_failed() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path(), 200);
    let emails = sample_emails(dir.path());
    let dest = Arc::new(
        MemoryDestination::with_contacts(emails.iter().cloned()).with_hook(|n, _| {
            (n >= 30).then(|| Answer::Fatal("the API key was rejected (401)".into()))
        }),
    );
    let opts = RunOptions {
        max_in_flight: 4,
        ..RunOptions::default()
    };
    let report = run_memory(&project, &dest, opts).await;
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    assert!(report.error.unwrap_or_default().contains("401"));
    assert!(dest.account().writes.len() <= 30 + 4);
    assert_eq!(report.counts.updated, 29);
}

/// Unknown contacts are looked up in batches (as the GraphQL lookup does): 300 contacts, 25
/// a request, take about 12 requests, not 300; and the answers land on the right contacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_contacts_are_looked_up_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path(), 300);
    let emails = sample_emails(dir.path());
    // Every other contact exists.
    let dest = Arc::new(
        MemoryDestination::with_contacts(emails.iter().step_by(2).cloned()).with_lookup_batch(25),
    );
    let report = run_memory(&project, &dest, RunOptions::default()).await;
    let account = dest.account();
    let contacts = report.counts.updated + report.counts.not_found;
    assert_eq!(report.existence_checks, contacts, "{report:?}");
    // The sample maps `phone` too: each new phone is looked up with its contact.
    let phones = report.plan.attributes_to_send["std:phone"];
    assert_eq!(account.checks, contacts + phones, "{report:?}");
    assert!(
        account.lookups <= account.checks.div_ceil(25) + 6,
        "{} lookup requests for {} identifiers",
        account.lookups,
        account.checks
    );
    assert!(account
        .writes
        .iter()
        .all(|w| account.contacts.contains_key(&w.contact.key)));
    assert_eq!(report.counts.updated as usize, account.writes.len());
    assert!(report.counts.not_found > 100, "{report:?}");
}

/// The state file belongs to one account: a run whose key reaches another stops before
/// anything is sent, naming both; `rebind_destination` forgets that destination's cache and
/// snapshots, and the next run checks every contact again and backfills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_another_account_stops_the_run_until_the_destination_is_rebound() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path(), 40);
    let emails = sample_emails(dir.path());
    let sandbox = Arc::new(
        MemoryDestination::with_contacts(emails.iter().cloned()).with_account("C-SBX", "Sandbox"),
    );
    let first = run_memory(&project, &sandbox, RunOptions::default()).await;
    assert!(first.counts.updated > 30, "{first:?}");
    let store = StateStore::open(&project.state_path).unwrap();
    assert_eq!(
        store
            .account_binding("attentive")
            .unwrap()
            .unwrap()
            .company_id,
        "C-SBX"
    );
    drop(store);

    let production = Arc::new(
        MemoryDestination::with_contacts(emails.iter().cloned()).with_account("C-PRD", "Acme"),
    );
    let refused = run_memory(&project, &production, RunOptions::default()).await;
    assert_eq!(refused.status, RunStatus::Failed, "{refused:?}");
    let error = refused.error.unwrap_or_default();
    for needle in [
        "\"Acme\" (company id C-PRD)",
        "\"Sandbox\" (company id C-SBX)",
        "--rebind-destination",
    ] {
        assert!(error.contains(needle), "{needle}: {error}");
    }
    let account = production.account();
    assert_eq!((account.writes.len(), account.checks), (0, 0));

    let opts = RunOptions {
        rebind_destination: true,
        ..RunOptions::default()
    };
    let backfill = run_memory(&project, &production, opts).await;
    assert_eq!(
        backfill.counts.updated, first.counts.updated,
        "{backfill:?}"
    );
    assert_eq!(
        backfill.existence_checks,
        first.counts.updated + first.counts.not_found,
        "every contact is checked again on the new account"
    );
    let again = run_memory(&project, &production, RunOptions::default()).await;
    assert_eq!(again.counts.updated, 0, "{again:?}");
}

/// The sample maps `phone` next to the email identifier, and Attentive files a phone under
/// `identifiers`, linking it to the contact. A phone held by another contact is left out of
/// the write (the row's other attributes are sent) with code `identifier_conflict`; one held
/// by the same contact, or by nobody, is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_held_by_another_contact_is_never_attached() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample(dir.path(), 30);
    let text = std::fs::read_to_string(dir.path().join("data").join("customers.csv")).unwrap();
    // (email, E.164 phone) of rows with a valid US phone.
    let with_phone: Vec<(String, String)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            let digits: String = cells[3].chars().filter(char::is_ascii_digit).collect();
            (digits.len() == 10 && cells[0].contains('@'))
                .then(|| (cells[0].trim().to_lowercase(), format!("+1{digits}")))
        })
        .collect();
    assert!(with_phone.len() >= 3, "{with_phone:?}");
    let (a, b, c) = (&with_phone[0], &with_phone[1], &with_phone[2]);
    let emails = sample_emails(dir.path());
    let dest = Arc::new(
        MemoryDestination::with_contacts(
            emails
                .iter()
                .cloned()
                .chain(["someone@else.com".to_owned()]),
        )
        .with_alias(&a.1, "someone@else.com")
        .with_alias(&b.1, &b.0)
        .with_lookup_batch(25),
    );
    let report = run_memory(&project, &dest, RunOptions::default()).await;
    assert_eq!(report.counts.identifier_conflicts, 1, "{report:?}");
    assert_eq!(report.status, RunStatus::Partial);
    let account = dest.account();
    let sent = |key: &str| -> Vec<String> {
        account
            .writes
            .iter()
            .filter(|w| w.contact.key == key)
            .flat_map(|w| w.attributes.iter().map(|(id, _)| id.key()))
            .collect()
    };
    assert!(
        !sent(&a.0).contains(&"std:phone".to_owned()),
        "{:?}",
        sent(&a.0)
    );
    assert!(
        sent(&a.0).contains(&"std:first_name".to_owned()),
        "the rest is sent"
    );
    assert!(
        sent(&b.0).contains(&"std:phone".to_owned()),
        "the same contact's phone"
    );
    assert!(
        sent(&c.0).contains(&"std:phone".to_owned()),
        "a phone nobody holds"
    );
    let store = StateStore::open(&project.state_path).unwrap();
    let rows = store
        .run_rows(report.run_id, Some("updated"), 0, 100)
        .unwrap();
    let conflict = rows
        .iter()
        .find(|r| r.code.as_deref() == Some("identifier_conflict"))
        .unwrap();
    assert_eq!(conflict.contact_key.as_deref(), Some(a.0.as_str()));
    let message = conflict.message.as_deref().unwrap_or("");
    assert!(
        message.contains(&a.1) && message.contains("another Attentive contact"),
        "{message}"
    );
    drop(store);

    // Not retried until the row changes; nothing else is re-sent either.
    let before = dest.account().writes.len();
    let again = run_memory(&project, &dest, RunOptions::default()).await;
    assert_eq!(dest.account().writes.len(), before, "{again:?}");
}

fn bulk_project(dir: &std::path::Path, rows: u64, mode: crate::config::DeliveryMode) -> Project {
    let mut project = sample(dir, rows);
    let a = project.activations.get_mut("vip").unwrap();
    a.delivery = crate::config::Delivery {
        mode,
        threshold: 10,
        batch_size: 16,
    };
    project
}

fn no_wait() -> RunOptions {
    RunOptions {
        wait_for_jobs: false,
        ..RunOptions::default()
    }
}

/// Bulk: contacts known to exist (checked first: a bulk job creates unknown contacts) go in
/// jobs of `bulk_batch_size`, the run waits for them and settles each record; the next run
/// sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_run_submits_jobs_of_checked_contacts_and_settles_them() {
    let dir = tempfile::tempdir().unwrap();
    let project = bulk_project(dir.path(), 60, crate::config::DeliveryMode::Bulk);
    let emails = sample_emails(dir.path());
    let dest = Arc::new(
        MemoryDestination::with_contacts(emails[5..].iter().cloned())
            .with_bulk(256)
            .with_lookup_batch(25),
    );
    let report = run_memory(&project, &dest, RunOptions::default()).await;
    assert_eq!(report.delivery_mode, "bulk", "{report:?}");
    assert_eq!(report.counts.not_found, 5, "{report:?}");
    assert_eq!(report.counts.pending, 0, "{report:?}");
    let account = dest.account();
    assert!(account.created.is_empty(), "created {:?}", account.created);
    assert_eq!(account.jobs.len() as u64, report.bulk_jobs);
    assert_eq!(
        report.bulk_jobs,
        report.counts.updated.div_ceil(16),
        "{report:?}"
    );
    assert!(account.jobs.values().all(|j| j.writes.len() <= 16));
    assert!(report.counts.updated > 30, "{report:?}");
    assert_eq!(
        report.status,
        RunStatus::Partial,
        "not found and the model's bad rows: {report:?}"
    );
    let second = emails[6].as_str();
    assert!(account.contacts[second].contains_key("custom:Loyalty Tier"));

    let again = run_memory(&project, &dest, RunOptions::default()).await;
    assert_eq!(dest.account().jobs.len(), account.jobs.len(), "{again:?}");
    assert_eq!(again.counts.updated, 0);
}

/// `--no-wait`: the run ends `pending`; a pending value is not sent again while its job is
/// pending; the next run settles the job and brings the first run's status up to date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_jobs_are_not_resent_and_a_later_run_settles_them() {
    let dir = tempfile::tempdir().unwrap();
    let project = bulk_project(dir.path(), 40, crate::config::DeliveryMode::Bulk);
    let emails = sample_emails(dir.path());
    let hold = Arc::new(AtomicBool::new(true));
    let dest = {
        let hold = hold.clone();
        Arc::new(
            MemoryDestination::with_contacts(emails.iter().cloned())
                .with_bulk(256)
                .with_job_hook(move |_, _| {
                    hold.load(Ordering::SeqCst)
                        .then(|| sync_core::ports::BulkJobState::Pending {
                            status: "IN_PROGRESS".into(),
                        })
                }),
        )
    };
    let first = run_memory(&project, &dest, no_wait()).await;
    assert_eq!(first.status, RunStatus::Pending, "{first:?}");
    assert!(first.counts.pending > 20, "{first:?}");
    let jobs = dest.account().jobs.len();
    // Still pending: nothing is sent again for the same values.
    let second = run_memory(&project, &dest, no_wait()).await;
    assert_eq!(second.bulk_jobs, 0, "{second:?}");
    assert_eq!(dest.account().jobs.len(), jobs);
    assert_eq!(second.jobs_settled, 0);
    // Processed: the next run settles them, and the first run's record says how it ended.
    hold.store(false, Ordering::SeqCst);
    let third = run_memory(&project, &dest, RunOptions::default()).await;
    assert_eq!(third.jobs_settled as usize, jobs, "{third:?}");
    assert_eq!(third.bulk_jobs, 0, "{third:?}");
    let store = StateStore::open(&project.state_path).unwrap();
    let run = store.run(first.run_id).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Partial, "the model's bad rows");
    let counts: serde_json::Value =
        serde_json::from_str(run.counts_json.as_deref().unwrap()).unwrap();
    assert_eq!(counts["counts"]["pending"], 0);
    assert_eq!(counts["counts"]["updated"], first.counts.pending);
    assert_eq!(store.in_doubt_count("vip").unwrap(), 0);
}

/// Per-record results: a rejected record is not sent again until its values change, a
/// failed one is, and a job that fails as a whole sends all its records again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_records_settle_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let project = bulk_project(dir.path(), 30, crate::config::DeliveryMode::Bulk);
    let emails = sample_emails(dir.path());
    let (refused, failing) = (emails[1].clone(), emails[2].clone());
    let dest = {
        let (refused, failing) = (refused.clone(), failing.clone());
        Arc::new(
            MemoryDestination::with_contacts(emails.iter().cloned())
                .with_bulk(256)
                .with_hook(move |_, w| {
                    if w.contact.key == refused {
                        Some(Answer::Outcome(WriteOutcome::Rejected {
                            message: "Invalid value for attribute 'zip'".into(),
                        }))
                    } else if w.contact.key == failing {
                        Some(Answer::Outcome(WriteOutcome::Failed {
                            reason: "HTTP 500: Internal error".into(),
                        }))
                    } else {
                        None
                    }
                }),
        )
    };
    let report = run_memory(&project, &dest, RunOptions::default()).await;
    assert_eq!(report.counts.failed, 1, "{report:?}");
    assert_eq!(
        report.counts.rejected,
        report.plan.rejected + 1,
        "{report:?}"
    );
    let store = StateStore::open(&project.state_path).unwrap();
    let rows = store
        .run_rows(report.run_id, Some("rejected"), 0, 100)
        .unwrap();
    assert!(rows
        .iter()
        .any(|r| r.contact_key.as_deref() == Some(&refused)
            && r.message.as_deref() == Some("Invalid value for attribute 'zip'")));
    drop(store);

    // The next run sends only the failed one, and its job fails as a whole.
    let next = Arc::new(
        MemoryDestination::with_contacts(emails.iter().cloned())
            .with_bulk(256)
            .with_job_hook(|_, _| {
                Some(sync_core::ports::BulkJobState::Failed {
                    status: "FAILED".into(),
                })
            }),
    );
    let second = run_memory(&project, &next, RunOptions::default()).await;
    let jobs = next.account().jobs;
    let sent: Vec<&str> = jobs
        .values()
        .flat_map(|j| j.writes.iter().map(|w| w.contact.key.as_str()))
        .collect();
    assert_eq!(sent, [failing.as_str()], "{second:?}");
    assert_eq!(second.counts.failed, 1, "{second:?}");
    // And so the one after sends it again.
    let last = Arc::new(MemoryDestination::with_contacts(emails.iter().cloned()).with_bulk(256));
    let third = run_memory(&project, &last, RunOptions::default()).await;
    assert_eq!(third.counts.updated, 1, "{third:?}");
    assert_eq!(third.counts.failed, 0, "{third:?}");
}

/// `auto` uses realtime up to `bulk_threshold` changed contacts and bulk above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_picks_the_mode_by_the_number_of_changed_contacts() {
    let dir = tempfile::tempdir().unwrap();
    let mut project = bulk_project(dir.path(), 40, crate::config::DeliveryMode::Auto);
    project
        .activations
        .get_mut("vip")
        .unwrap()
        .delivery
        .threshold = 1000;
    let emails = sample_emails(dir.path());
    let dest = Arc::new(MemoryDestination::with_contacts(emails.iter().cloned()).with_bulk(256));
    let report = run_memory(&project, &dest, RunOptions::default()).await;
    assert_eq!(report.delivery_mode, "realtime", "{report:?}");
    assert!(dest.account().jobs.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let project = bulk_project(dir.path(), 40, crate::config::DeliveryMode::Auto);
    let dest = Arc::new(MemoryDestination::with_contacts(emails.iter().cloned()).with_bulk(256));
    let report = run_memory(&project, &dest, RunOptions::default()).await;
    assert_eq!(report.delivery_mode, "bulk", "{report:?}");
    assert!(!dest.account().jobs.is_empty());
}

/// A job Attentive never finishes is settled as failed after 14 days (Attentive keeps jobs two
/// weeks), and its records are sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_open_for_two_weeks_is_settled_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let project = bulk_project(dir.path(), 20, crate::config::DeliveryMode::Bulk);
    let emails = sample_emails(dir.path());
    let stuck = Arc::new(
        MemoryDestination::with_contacts(emails.iter().cloned())
            .with_bulk(256)
            .with_job_hook(|_, _| {
                Some(sync_core::ports::BulkJobState::Pending {
                    status: "NEEDS_REVIEW".into(),
                })
            }),
    );
    let first = run_memory(&project, &stuck, no_wait()).await;
    assert_eq!(first.status, RunStatus::Pending, "{first:?}");
    // Two weeks and a day later.
    {
        let conn = rusqlite::Connection::open(&project.state_path).unwrap();
        let old = (chrono::Utc::now() - chrono::Duration::days(15))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        conn.execute("UPDATE bulk_jobs SET created_at = ?1", [old])
            .unwrap();
    }
    let fresh = Arc::new(MemoryDestination::with_contacts(emails.iter().cloned()).with_bulk(256));
    let second = run_memory(&project, &fresh, RunOptions::default()).await;
    assert_eq!(second.jobs_settled, first.bulk_jobs, "{second:?}");
    assert_eq!(
        second.counts.updated, first.counts.pending,
        "sent again: {second:?}"
    );
    let store = StateStore::open(&project.state_path).unwrap();
    let job = &store.run_jobs(first.run_id).unwrap()[0];
    assert!(
        job.message
            .as_deref()
            .is_some_and(|m| m.contains("14 days")),
        "{job:?}"
    );
    assert_eq!(
        store.run(first.run_id).unwrap().unwrap().status,
        RunStatus::Partial
    );
}
