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
        r.activation, r.model, c.rows, r.snapshot_contacts, r.duration_ms
    );
    let _ = writeln!(s, "  to update  {:>9}", c.changed);
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
    s
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
    for e in entries {
        let _ = writeln!(
            s,
            "{key} in activation {}: row fingerprint {:016x}, settled by run {} at {}",
            e.activation,
            e.row_fingerprint,
            e.updated_run.map_or("-".to_owned(), |r| r.to_string()),
            e.updated_at
        );
        if e.attributes.is_empty() {
            let _ = writeln!(s, "  (no attributes acknowledged)");
        }
        for a in &e.attributes {
            let name =
                sync_core::AttributeId::from_key(&a.key).map_or(a.key.clone(), |id| id.to_string());
            let _ = writeln!(
                s,
                "  {name:<28} {:<30} fingerprint {:016x}  run {}",
                a.value.to_string(),
                a.fingerprint,
                a.run_id.map_or("-".to_owned(), |r| r.to_string())
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
        })).collect::<Vec<_>>(),
    })
}
