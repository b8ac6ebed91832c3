//! What the CLI prints for people.

use std::fmt::Write as _;

use runner::plan::PlanReport;

/// A plan as text: counts, attributes to send, samples.
pub(crate) fn plan_text(r: &PlanReport) -> String {
    let c = &r.counts;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Plan for activation {} (model {}): {} rows read, {} contacts in the snapshot, {} ms",
        r.activation,
        r.model,
        c.rows + c.outside_segment,
        r.snapshot_contacts,
        r.duration_ms
    );
    if let Some(seg) = &r.segment {
        let _ = match seg.filtered_by {
            "database" => writeln!(
                s,
                "  segment `{}` (filtered by the database): {} rows kept",
                seg.filter, c.rows
            ),
            _ => writeln!(
                s,
                "  segment `{}`: {} rows kept, {} left out",
                seg.filter, c.rows, c.outside_segment
            ),
        };
    }
    let _ = writeln!(s, "  to update  {:>9}", c.changed);
    let d = &r.delivery;
    let _ = writeln!(
        s,
        "    a run would send them {} ({} write request{}; delivery = {:?}, bulk above {} contacts, {} per job), after existence checks of contacts not known to exist",
        if d.mode == "bulk" { "in bulk jobs" } else { "in realtime" },
        d.write_requests,
        if d.write_requests == 1 { "" } else { "s" },
        d.configured,
        d.bulk_threshold,
        d.bulk_batch_size
    );
    let _ = writeln!(s, "  unchanged  {:>9}", c.unchanged);
    let _ = writeln!(s, "  rejected   {:>9}", c.rejected);
    for (code, n) in &c.rejected_by_code {
        let _ = writeln!(s, "    {:<22}{:>7}", code.as_str(), n);
    }
    if !c.attributes_to_send.is_empty() {
        let _ = writeln!(s, "Attributes to send:");
        for (key, n) in &c.attributes_to_send {
            let name = key
                .strip_prefix("std:")
                .map(str::to_owned)
                .or_else(|| {
                    key.strip_prefix("custom:")
                        .map(|n| format!("{n:?} (custom)"))
                })
                .unwrap_or_else(|| key.clone());
            let _ = writeln!(s, "  {name:<28}{n:>9}");
        }
    }
    if !r.sample_changes.is_empty() {
        let _ = writeln!(s, "First changes:");
        for ch in &r.sample_changes {
            let _ = write!(
                s,
                "  line {:<6} {}{}:",
                ch.row,
                ch.contact,
                if ch.new_contact {
                    " (new to the snapshot)"
                } else {
                    ""
                }
            );
            for a in &ch.attributes {
                let name = if a.custom {
                    format!("{:?}", a.attribute)
                } else {
                    a.attribute.clone()
                };
                match (&a.value, &a.previous) {
                    (Some(v), Some(p)) => {
                        let _ = write!(s, " {name}: {p} → {v};");
                    }
                    (Some(v), None) => {
                        let _ = write!(s, " {name} = {v};");
                    }
                    (None, _) => {
                        let _ = write!(s, " {name} cleared;");
                    }
                }
            }
            s.pop();
            s.push('\n');
        }
    }
    if !r.sample_rejections.is_empty() {
        let _ = writeln!(
            s,
            "First rejected rows (fix them in the model; they are never sent):"
        );
        for rj in &r.sample_rejections {
            let _ = writeln!(s, "  line {:<6} {}", rj.row, rj.message);
        }
    }
    if c.changed == 0 && c.rejected == 0 {
        let _ = writeln!(s, "Nothing to send: Attentive already has every value.");
    }
    if !r.alerts.is_empty() {
        let firing: Vec<&runner::plan::PlanAlert> = r.alerts.iter().filter(|a| a.firing).collect();
        if firing.is_empty() {
            let _ = writeln!(
                s,
                "Alerts: a run like this would fire none of the rules a plan can judge (not found, failures and duration are only known by running)."
            );
        } else {
            let _ = writeln!(s, "Alerts a run like this would fire:");
            for a in firing {
                let note = if a.current == "firing" {
                    " (already firing: no new notification)"
                } else {
                    ""
                };
                let _ = writeln!(s, "  {:<18} {}{note}", a.rule, a.message);
            }
        }
    }
    s
}

/// The alert rules of an activation that fire, as text (nothing when none does).
pub(crate) fn firing_text(states: &[state_store::AlertStateRow]) -> String {
    let mut s = String::new();
    let firing: Vec<&state_store::AlertStateRow> = states
        .iter()
        .filter(|a| a.state == state_store::AlertState::Firing)
        .collect();
    if !firing.is_empty() {
        let _ = writeln!(s, "Alerts firing:");
        for a in firing {
            let _ = writeln!(
                s,
                "  {:<18} {} (since {})",
                a.rule,
                a.message.as_deref().unwrap_or(""),
                a.since
            );
        }
    }
    s
}

/// Notification deliveries, newest first, as text.
pub(crate) fn deliveries_text(deliveries: &[state_store::Delivery]) -> String {
    let mut s = String::new();
    if deliveries.is_empty() {
        s.push_str("No notifications yet.\n");
        return s;
    }
    let _ = writeln!(
        s,
        "{:>6}  {:<16} {:<15} {:<18} {:<14} {:<10} {:>8}  {:<6} when / error",
        "id", "activation", "event", "rule", "endpoint", "state", "attempts", "http"
    );
    for d in deliveries {
        let when = match d.state {
            state_store::DeliveryState::Delivered => {
                format!("delivered {}", d.delivered_at.as_deref().unwrap_or(""))
            }
            state_store::DeliveryState::Pending => format!(
                "next attempt {}{}",
                d.next_attempt_at,
                d.error
                    .as_deref()
                    .map(|e| format!("; last: {e}"))
                    .unwrap_or_default()
            ),
            state_store::DeliveryState::Failed => {
                format!("gave up: {}", d.error.as_deref().unwrap_or(""))
            }
        };
        let _ = writeln!(
            s,
            "{:>6}  {:<16} {:<15} {:<18} {:<14} {:<10} {:>8}  {:<6} {when}",
            d.notification_id,
            d.activation.as_deref().unwrap_or("-"),
            d.event,
            d.rule.as_deref().unwrap_or("-"),
            d.endpoint,
            d.state.as_str(),
            d.attempts,
            d.http_status
                .map(|h| h.to_string())
                .unwrap_or_else(|| "-".into()),
        );
    }
    s
}

/// Notification deliveries as JSON.
pub(crate) fn deliveries_json(deliveries: &[state_store::Delivery]) -> serde_json::Value {
    serde_json::Value::Array(
        deliveries
            .iter()
            .map(|d| {
                serde_json::json!({
                    "delivery_id": d.id,
                    "notification_id": d.notification_id,
                    "activation": d.activation,
                    "event": d.event,
                    "run_id": d.run_id,
                    "rule": d.rule,
                    "endpoint": d.endpoint,
                    "state": d.state.as_str(),
                    "attempts": d.attempts,
                    "created_at": d.created_at,
                    "last_attempt_at": d.last_attempt_at,
                    "next_attempt_at": (d.state == state_store::DeliveryState::Pending).then_some(&d.next_attempt_at),
                    "http_status": d.http_status,
                    "error": d.error,
                    "delivered_at": d.delivered_at,
                })
            })
            .collect(),
    )
}

/// What the snapshot holds for one contact, as text.
pub(crate) fn contact_text(key: &str, entries: &[state_store::ContactSnapshot]) -> String {
    let mut s = String::new();
    if entries.is_empty() {
        let _ = writeln!(
            s,
            "{key}: not in the snapshot of any activation (never acknowledged by Attentive)."
        );
        return s;
    }
    let name = |key: &str| {
        sync_core::mapping::AttributeId::from_key(key).map_or(key.to_owned(), |id| id.to_string())
    };
    let run = |r: Option<i64>| r.map_or("-".to_owned(), |r| r.to_string());
    for e in entries {
        if e.row_fingerprint == 0 && e.updated_run.is_none() && e.updated_at.is_empty() {
            let _ = writeln!(s, "{key} in activation {}: never settled", e.activation);
        } else {
            let _ = writeln!(
                s,
                "{key} in activation {}: row fingerprint {:016x}, settled by run {} at {}",
                e.activation,
                e.row_fingerprint,
                run(e.updated_run),
                e.updated_at
            );
        }
        if e.attributes.is_empty() {
            let _ = writeln!(s, "  (no attributes acknowledged)");
        }
        for a in &e.attributes {
            let _ = writeln!(
                s,
                "  {:<28} {:<30} fingerprint {:016x}  run {}",
                name(&a.key),
                a.value.to_string(),
                a.fingerprint,
                run(a.run_id)
            );
        }
        if !e.in_doubt.is_empty() {
            let _ = writeln!(
                s,
                "  in doubt (sent, answer never recorded; the next run sends them again):"
            );
        }
        for d in &e.in_doubt {
            let _ = writeln!(
                s,
                "  {:<28} {:<30} sent by run {}",
                name(&d.key),
                d.sent.to_string(),
                run(d.run_id)
            );
        }
    }
    s
}

/// What the snapshot holds for one contact, as JSON.
pub(crate) fn contact_json(
    key: &str,
    entries: &[state_store::ContactSnapshot],
) -> serde_json::Value {
    serde_json::json!({
        "contact": key,
        "activations": entries.iter().map(|e| serde_json::json!({
            "activation": e.activation,
            "row_fingerprint": format!("{:016x}", e.row_fingerprint),
            "updated_run": e.updated_run,
            "updated_at": e.updated_at,
            "attributes": e.attributes.iter().map(|a| serde_json::json!({
                "key": a.key,
                "value": a.value,
                "fingerprint": format!("{:016x}", a.fingerprint),
                "run_id": a.run_id,
            })).collect::<Vec<_>>(),
            "in_doubt": e.in_doubt.iter().map(|d| serde_json::json!({
                "key": d.key,
                "sent": d.sent,
                "run_id": d.run_id,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// A run report as text.
pub(crate) fn run_text(r: &runner::run::RunReport) -> String {
    let c = &r.counts;
    let d = &r.delivery;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Run {} of activation {}: {} in {:.1} s",
        r.run_id,
        r.activation,
        r.status,
        r.duration_ms as f64 / 1000.0
    );
    let _ = writeln!(s, "  updated    {:>9}", c.updated);
    let _ = writeln!(s, "  unchanged  {:>9}", c.unchanged);
    let _ = writeln!(
        s,
        "  not found  {:>9}   (not Attentive contacts: nothing written)",
        c.not_found
    );
    let _ = writeln!(s, "  rejected   {:>9}", c.rejected);
    let _ = writeln!(
        s,
        "  failed     {:>9}   (sent again by the next run)",
        c.failed
    );
    if r.delivery_mode == "bulk" || c.pending > 0 {
        let _ = writeln!(
            s,
            "  pending    {:>9}   (in bulk jobs Attentive has not processed yet: settled by a later run)",
            c.pending
        );
        let _ = writeln!(
            s,
            "  delivered in {} bulk job{}; jobs of earlier runs settled first: {}",
            r.bulk_jobs,
            if r.bulk_jobs == 1 { "" } else { "s" },
            r.jobs_settled
        );
    } else if r.jobs_settled > 0 {
        let _ = writeln!(
            s,
            "  bulk jobs of earlier runs settled first: {}",
            r.jobs_settled
        );
    }
    let _ = writeln!(
        s,
        "  requests {} ({} contacts looked up), retries {}, 429s {}, waiting for the budget {:.1} s (summed over requests)",
        d.requests,
        r.existence_checks,
        d.retries,
        d.rate_limited,
        d.throttled_ms as f64 / 1000.0
    );
    if let Some(e) = &r.error {
        let _ = writeln!(s, "  error: {e}");
    }
    if c.rejected + c.failed + c.not_found > 0 {
        let _ = writeln!(
            s,
            "  details: attentive-sync runs show {} --outcome rejected|failed|not_found [--export rows.csv]",
            r.run_id
        );
    }
    s
}

pub(crate) fn runs_text(runs: &[state_store::RunSummary]) -> String {
    let mut s = String::new();
    if runs.is_empty() {
        s.push_str("No runs yet.\n");
        return s;
    }
    let _ = writeln!(
        s,
        "{:>6}  {:<16} {:<5} {:<12} {:<26} counts",
        "id", "activation", "kind", "status", "started"
    );
    for r in runs {
        let counts = r
            .counts_json
            .as_deref()
            .and_then(runner::run::RunReport::from_json)
            .map(|report| {
                state_store::Outcome::ALL
                    .iter()
                    .filter(|o| **o != state_store::Outcome::Pending || report.counts.pending > 0)
                    .map(|o| format!("{} {}", o.as_str(), report.counts.get(*o)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "{:>6}  {:<16} {:<5} {:<12} {:<26} {counts}",
            r.id,
            r.activation,
            r.kind.as_str(),
            r.status.as_str(),
            r.started_at
        );
    }
    s
}

fn run_summary_json(r: &state_store::RunSummary) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "activation": r.activation,
        "kind": r.kind.as_str(),
        "status": r.status.as_str(),
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "report": r.counts_json.as_deref().and_then(runner::run::RunReport::from_json),
        "error": r.error,
        "rows_pruned_at": r.rows_pruned_at,
    })
}

pub(crate) fn runs_json(runs: &[state_store::RunSummary]) -> serde_json::Value {
    serde_json::Value::Array(runs.iter().map(run_summary_json).collect())
}

fn row_json(r: &state_store::RunRow) -> serde_json::Value {
    serde_json::json!({
        "row": r.row_number,
        "contact": r.contact_key,
        "outcome": r.outcome.as_str(),
        "code": r.code,
        "message": r.message,
        "attributes": r.attributes_json.as_deref().and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok()),
    })
}

pub(crate) fn run_json(
    run: &state_store::RunSummary,
    rows: &[state_store::RunRow],
    jobs: &[state_store::JobSummary],
) -> serde_json::Value {
    let mut v = run_summary_json(run);
    v["rows"] = serde_json::Value::Array(rows.iter().map(row_json).collect());
    v["bulk_jobs"] = serde_json::to_value(jobs).unwrap_or_default();
    v
}

pub(crate) fn run_summary_text(
    run: &state_store::RunSummary,
    rows: &[state_store::RunRow],
    jobs: &[state_store::JobSummary],
    outcome: Option<&str>,
) -> String {
    let mut s = runs_text(std::slice::from_ref(run));
    if let Some(e) = &run.error {
        let _ = writeln!(s, "error: {e}");
    }
    if !jobs.is_empty() {
        let _ = writeln!(s, "Bulk jobs:");
        for j in jobs {
            let _ = writeln!(
                s,
                "  #{:<5} {:<38} {:<10} {:<12} records {:>4}: updated {}, rejected {}, failed {}, pending {}{}",
                j.id,
                j.remote_id.as_deref().unwrap_or("(no job id)"),
                j.state.as_str(),
                j.remote_status.as_deref().unwrap_or("-"),
                j.records,
                j.updated,
                j.rejected,
                j.failed,
                j.pending,
                j.message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default()
            );
        }
    }
    if let Some(at) = &run.rows_pruned_at {
        let _ = writeln!(
            s,
            "Rows: pruned at {at} (the state keeps the rows of the newest [state] keep_runs runs); the counts above remain"
        );
        return s;
    }
    let _ = writeln!(
        s,
        "Rows{}:",
        outcome
            .map(|o| format!(" with outcome {o}"))
            .unwrap_or_default()
    );
    if rows.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for r in rows {
        let _ = writeln!(
            s,
            "  line {:<6} {:<32} {:<10} {}",
            r.row_number,
            r.contact_key.as_deref().unwrap_or("-"),
            r.outcome.as_str(),
            r.message.as_deref().unwrap_or("")
        );
    }
    s
}

/// Writes a run's rows (optionally of one outcome) as CSV; returns how many. The file is
/// never one of the project's own (config, model, state) and appears only once complete;
/// cells a spreadsheet would evaluate are neutralized.
pub(crate) fn export_rows(
    project: &runner::Project,
    store: &state_store::StateStore,
    run_id: i64,
    outcome: Option<&str>,
    path: &std::path::Path,
) -> anyhow::Result<u64> {
    let mut w = runner::output::OutputFile::create(project, path)?;
    let mut n = 0u64;
    loop {
        let rows = store.run_rows(run_id, outcome, n, 10_000)?;
        runner::output::write_run_rows_csv(&mut w, &rows, n == 0)?;
        if rows.is_empty() {
            break;
        }
        n += rows.len() as u64;
    }
    w.finish()?;
    Ok(n)
}
