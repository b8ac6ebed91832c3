use super::*;
use crate::config::{AlertRules, Deviation, ScheduleMissed, SlowRun, Threshold};

fn facts(status: RunStatus) -> RunFacts {
    RunFacts {
        status: Some(status),
        rows: 1000,
        changed: 100,
        rejected: 0,
        failed: Some(0),
        not_found: Some(0),
        duration_ms: Some(60_000),
        backfill: Vec::new(),
    }
}

fn past(changed: &[u64], duration_ms: u64) -> Vec<PastRun> {
    changed
        .iter()
        .enumerate()
        .map(|(i, c)| PastRun {
            run_id: 100 - i as i64,
            duration_ms,
            changed: *c,
            backfill: false,
        })
        .collect()
}

fn verdict(verdicts: &[Verdict], rule: Rule) -> Option<&Verdict> {
    verdicts.iter().find(|v| v.rule == rule)
}

#[test]
fn defaults_are_on() {
    let r = AlertRules::default();
    assert!(r.run_failed && r.mapping_backfill);
    assert_eq!(
        r.rows_rejected,
        Some(Threshold {
            count: None,
            percent: Some(1.0)
        })
    );
    assert!(r.rows_not_found.is_some() && r.slow_run.is_some());
    assert!(r.changed_deviation.is_some() && r.schedule_missed.is_some());
}

#[test]
fn a_failed_run_only_moves_run_failed() {
    let mut f = facts(RunStatus::Failed);
    f.rejected = 900;
    let v = evaluate(&AlertRules::default(), &f, &past(&[100, 100, 100], 1000));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].rule, Rule::RunFailed);
    assert!(v[0].firing);
}

#[test]
fn unfinished_runs_move_nothing() {
    for status in [
        RunStatus::Pending,
        RunStatus::Interrupted,
        RunStatus::Running,
    ] {
        let mut f = facts(status);
        f.rejected = 900;
        assert!(
            evaluate(&AlertRules::default(), &f, &[]).is_empty(),
            "{status}"
        );
    }
}

#[test]
fn a_good_run_resolves_everything_it_judges() {
    let v = evaluate(
        &AlertRules::default(),
        &facts(RunStatus::Succeeded),
        &past(&[100, 90, 110], 50_000),
    );
    let rules: Vec<Rule> = v.iter().map(|v| v.rule).collect();
    assert_eq!(
        rules,
        [
            Rule::RunFailed,
            Rule::RowsRejected,
            Rule::RowsNotFound,
            Rule::SlowRun,
            Rule::ChangedDeviation,
            Rule::MappingBackfill
        ]
    );
    assert!(v.iter().all(|v| !v.firing), "{v:#?}");
}

#[test]
fn rejected_and_failed_rows_count_against_the_threshold() {
    let rules = AlertRules::default(); // 1% of the model
    let mut f = facts(RunStatus::Partial);
    f.rejected = 6;
    f.failed = Some(4);
    let v = evaluate(&rules, &f, &[]);
    let r = verdict(&v, Rule::RowsRejected).unwrap();
    assert!(!r.firing, "10 of 1000 is 1.0%, not above 1%: {}", r.message);
    f.failed = Some(5);
    let v = evaluate(&rules, &f, &[]);
    let r = verdict(&v, Rule::RowsRejected).unwrap();
    assert!(r.firing);
    assert_eq!(
        r.message,
        "11 rows rejected or failed (1.1% of 1000 rows); the limit is 1%"
    );
    // A count limit alone.
    let rules = AlertRules {
        rows_rejected: Some(Threshold {
            count: Some(20),
            percent: None,
        }),
        ..AlertRules::default()
    };
    assert!(
        !verdict(&evaluate(&rules, &f, &[]), Rule::RowsRejected)
            .unwrap()
            .firing
    );
    f.rejected = 16;
    assert!(
        verdict(&evaluate(&rules, &f, &[]), Rule::RowsRejected)
            .unwrap()
            .firing
    );
}

#[test]
fn not_found_above_its_threshold_fires() {
    let mut f = facts(RunStatus::Partial);
    f.not_found = Some(51);
    let v = evaluate(&AlertRules::default(), &f, &[]);
    assert!(verdict(&v, Rule::RowsNotFound).unwrap().firing);
    f.not_found = Some(50);
    let v = evaluate(&AlertRules::default(), &f, &[]);
    assert!(!verdict(&v, Rule::RowsNotFound).unwrap().firing);
}

#[test]
fn slow_runs_are_measured_against_the_median() {
    let rules = AlertRules {
        slow_run: Some(SlowRun {
            factor: 3.0,
            runs: 10,
            min: Duration::from_secs(60),
        }),
        ..AlertRules::default()
    };
    let history: Vec<PastRun> = [30_000, 40_000, 50_000, 1_000_000]
        .iter()
        .enumerate()
        .map(|(i, d)| PastRun {
            run_id: i as i64,
            duration_ms: *d,
            changed: 100,
            backfill: false,
        })
        .collect();
    // Median 45 s (one outlier does not move it): 136 s is over 3×.
    let mut f = facts(RunStatus::Succeeded);
    f.duration_ms = Some(136_000);
    let v = evaluate(&rules, &f, &history);
    let slow = verdict(&v, Rule::SlowRun).unwrap();
    assert!(slow.firing, "{}", slow.message);
    assert!(
        slow.message.contains("median of the last 4 runs (45.0 s)"),
        "{}",
        slow.message
    );
    f.duration_ms = Some(134_000);
    assert!(
        !verdict(&evaluate(&rules, &f, &history), Rule::SlowRun)
            .unwrap()
            .firing
    );
    // Under the minimum it never fires, however many times slower.
    let quick: Vec<PastRun> = past(&[1, 1, 1], 100);
    f.duration_ms = Some(50_000);
    assert!(
        !verdict(&evaluate(&rules, &f, &quick), Rule::SlowRun)
            .unwrap()
            .firing
    );
    // Too little history: no verdict.
    assert!(verdict(&evaluate(&rules, &f, &quick[..2]), Rule::SlowRun).is_none());
}

#[test]
fn changed_contacts_far_from_the_average_fire_both_ways() {
    let rules = AlertRules {
        changed_deviation: Some(Deviation {
            percent: 90.0,
            runs: 3,
            min_average: 20.0,
        }),
        ..AlertRules::default()
    };
    // Only the last 3 runs count: average 100.
    let history = past(&[90, 100, 110, 100_000], 1000);
    let mut f = facts(RunStatus::Succeeded);
    for (changed, firing) in [
        (100, false),
        (189, false),
        (191, true),
        (11, false),
        (0, true),
    ] {
        f.changed = changed;
        let v = evaluate(&rules, &f, &history);
        assert_eq!(
            verdict(&v, Rule::ChangedDeviation).unwrap().firing,
            firing,
            "{changed} changed"
        );
    }
    // A model that usually changes almost nothing is not judged.
    f.changed = 1000;
    let v = evaluate(&rules, &f, &past(&[1, 2, 3], 1000));
    assert!(!verdict(&v, Rule::ChangedDeviation).unwrap().firing);
    // Backfills are left out of the average, and a backfilling run is not judged.
    let mut history = past(&[100, 100, 100], 1000);
    history.insert(
        0,
        PastRun {
            run_id: 200,
            duration_ms: 1000,
            changed: 50_000,
            backfill: true,
        },
    );
    f.changed = 100;
    assert!(
        !verdict(&evaluate(&rules, &f, &history), Rule::ChangedDeviation)
            .unwrap()
            .firing
    );
    f.backfill = vec![("custom:Tier".into(), 1000)];
    assert!(verdict(&evaluate(&rules, &f, &history), Rule::ChangedDeviation).is_none());
}

#[test]
fn a_mapping_backfill_says_which_attributes_and_how_many_contacts() {
    let mut f = facts(RunStatus::Succeeded);
    f.backfill = vec![("custom:Tier".into(), 1000), ("std:city".into(), 1)];
    let v = evaluate(&AlertRules::default(), &f, &[]);
    let b = verdict(&v, Rule::MappingBackfill).unwrap();
    assert!(b.firing);
    assert_eq!(
        b.message,
        "a mapping change backfills custom:Tier for 1000 contacts, std:city for 1 contact"
    );
    assert_eq!(b.details["attributes"][0]["contacts"], 1000);
}

#[test]
fn plans_judge_what_they_can() {
    let mut f = facts(RunStatus::Succeeded);
    f.status = None;
    f.failed = None;
    f.not_found = None;
    f.duration_ms = None;
    f.rejected = 50;
    let v = evaluate(&AlertRules::default(), &f, &past(&[100, 100, 100], 1000));
    let rules: Vec<Rule> = v.iter().map(|v| v.rule).collect();
    assert_eq!(
        rules,
        [
            Rule::RowsRejected,
            Rule::ChangedDeviation,
            Rule::MappingBackfill
        ]
    );
    assert!(verdict(&v, Rule::RowsRejected).unwrap().firing);
    assert_eq!(
        verdict(&v, Rule::RowsRejected).unwrap().message,
        "50 rows rejected (5.0% of 1000 rows); the limit is 1%"
    );
}

#[test]
fn disabled_rules_give_no_verdict() {
    let rules = AlertRules {
        run_failed: false,
        rows_rejected: None,
        rows_not_found: None,
        slow_run: None,
        changed_deviation: None,
        mapping_backfill: false,
        schedule_missed: None,
    };
    let mut f = facts(RunStatus::Failed);
    assert!(evaluate(&rules, &f, &[]).is_empty());
    f.status = Some(RunStatus::Partial);
    f.rejected = 1000;
    assert!(evaluate(&rules, &f, &past(&[1, 1, 1], 1)).is_empty());
}

#[test]
fn the_schedule_is_missed_after_two_starts_and_the_grace() {
    let hourly = Schedule::parse("0 * * * *", chrono_tz::Tz::UTC).unwrap();
    let rule = ScheduleMissed {
        within: None,
        grace: Duration::from_secs(15 * 60),
    };
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    let last = Some(t("2026-11-29T10:05:00Z"));
    // Starts at 11:00 and 12:00; grace to 12:15.
    let at = |now: &str| schedule_missed(&rule, Some(&hourly), last, t(now)).unwrap();
    assert!(!at("2026-11-29T12:14:00Z").firing);
    let missed = at("2026-11-29T12:16:00Z");
    assert!(missed.firing);
    assert!(
        missed
            .message
            .contains("no successful run since 2026-11-29 10:05 UTC"),
        "{}",
        missed.message
    );
    // `within` instead of the schedule.
    let within = ScheduleMissed {
        within: Some(Duration::from_secs(26 * 3600)),
        grace: Duration::ZERO,
    };
    let now = t("2026-11-30T12:06:00Z");
    assert!(schedule_missed(&within, None, last, now).unwrap().firing);
    assert!(
        !schedule_missed(&within, None, last, t("2026-11-30T12:04:00Z"))
            .unwrap()
            .firing
    );
    // Nothing to judge by.
    assert!(schedule_missed(&rule, None, last, now).is_none());
    assert!(schedule_missed(&rule, Some(&hourly), None, now).is_none());
}

#[test]
fn only_changes_of_state_are_transitions() {
    let v = vec![
        Verdict::new(
            Rule::RunFailed,
            false,
            String::new(),
            serde_json::Value::Null,
        ),
        Verdict::new(
            Rule::RowsRejected,
            true,
            String::new(),
            serde_json::Value::Null,
        ),
        Verdict::new(Rule::SlowRun, false, String::new(), serde_json::Value::Null),
        Verdict::new(
            Rule::MappingBackfill,
            true,
            String::new(),
            serde_json::Value::Null,
        ),
    ];
    let current = |r: Rule| match r {
        Rule::RunFailed => None, // never evaluated, ok now: nothing
        Rule::RowsRejected => Some(AlertState::Firing), // still firing: nothing
        Rule::SlowRun => Some(AlertState::Firing), // resolves
        _ => None,               // first firing
    };
    let t = transitions(&current, &v);
    let rules: Vec<(Rule, Option<AlertState>)> =
        t.iter().map(|t| (t.verdict.rule, t.from)).collect();
    assert_eq!(
        rules,
        [
            (Rule::SlowRun, Some(AlertState::Firing)),
            (Rule::MappingBackfill, None)
        ]
    );
}
