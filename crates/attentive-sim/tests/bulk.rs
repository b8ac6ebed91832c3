//! Bulk jobs under the bulk faults and configurations: per-record outcomes (deterministic and
//! random), unknown statuses, truncated result files, failed jobs, the result URL's field.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use attentive_sim::{
    BulkJobStatus, BulkResultField, ContactOrigin, Faults, RunningSim, SeedContact, SimConfig,
    Simulator, DEFAULT_KEY,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

mod common;
use common::{client, start};

async fn start_with(faults: Faults) -> RunningSim {
    start(SimConfig {
        faults,
        ..SimConfig::default()
    })
    .await
}

fn v2(email: &str, attributes: Value) -> Value {
    json!({"identifiers": {"email": email}, "attributes": attributes})
}

fn users(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| v2(&format!("u{i}@example.com"), json!({"custom": {"n": i}})))
        .collect()
}

async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Posts a bulk job; returns its id.
async fn submit(sim: &RunningSim, users: &[Value]) -> String {
    let resp = client()
        .post(format!("{}/v2/bulk/user/attributes", sim.base_url()))
        .bearer_auth(DEFAULT_KEY)
        .json(&json!({ "users": users }))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["batchJobId"].as_str().unwrap().to_owned()
}

async fn poll(sim: &RunningSim, id: &str) -> Value {
    let resp = client()
        .get(format!("{}/v2/bulk/job/{id}", sim.base_url()))
        .bearer_auth(DEFAULT_KEY)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn download(url: &str) -> String {
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap()
}

/// Polls until COMPLETED; returns the result file's lines, parsed.
async fn results(sim: &RunningSim, id: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let job = poll(sim, id).await;
        if job["status"] == "COMPLETED" {
            let text = download(job["url"].as_str().unwrap()).await;
            assert!(text.ends_with('\n'), "{text}");
            return text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        }
        assert!(Instant::now() < deadline, "job never completed: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn statuses(lines: &[Value]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| l["response"]["status"].as_u64().unwrap())
        .collect()
}

async fn put_faults(sim: &RunningSim, body: &Value) -> (StatusCode, Value) {
    let resp = client()
        .put(format!("{}/_sim/faults", sim.base_url()))
        .json(body)
        .send()
        .await
        .unwrap();
    json_of(resp).await
}

// ---- per-record outcomes --------------------------------------------------------------------

#[tokio::test]
async fn bulk_record_errors_give_exact_outcomes_and_apply_nothing_of_those_records() {
    let sim = start(SimConfig {
        contacts: vec![SeedContact::email("ann@example.com")],
        ..SimConfig::default()
    })
    .await;
    // Set through the admin route, to pin its JSON shape.
    let (status, echoed) = put_faults(
        &sim,
        &json!({"bulk_record_errors": {
            "ann@example.com": 500,
            "+12125550100": 429,
            "REJ@example.com": 400,
            "zoë@example.com": 404,
        }}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{echoed}");
    assert_eq!(echoed["bulk_record_errors"]["+12125550100"], 429);
    assert_eq!(sim.faults().bulk_record_errors.len(), 4);

    let batch = vec![
        // The email as sent differs in case from the key: still matched.
        v2("ANN@Example.com", json!({"firstName": "Ann"})),
        json!({"identifiers": {"phone": "+12125550100"}, "attributes": {"firstName": "P"}}),
        v2("rej@example.com", json!({"custom": {"tier": "gold"}})),
        v2("ok@example.com", json!({"firstName": "Ok"})),
        // Fails validation on its own: still a 400 line.
        json!({"identifiers": {"phone": "12345"}}),
        // Case-insensitive beyond ASCII, as contacts are matched.
        v2("ZOË@example.com", json!({})),
    ];
    let id = submit(&sim, &batch).await;
    let lines = results(&sim, &id).await;
    assert_eq!(statuses(&lines), vec![500, 429, 400, 202, 400, 404]);
    assert_eq!(lines[0]["request"], batch[0]);
    assert_eq!(lines[0]["response"]["message"], "Internal error");
    assert_eq!(
        lines[2]["response"]["message"],
        "Invalid value for attribute 'tier'"
    );
    assert!(lines[4]["response"]["message"]
        .as_str()
        .unwrap()
        .contains("E.164"));
    assert_eq!(lines[5]["response"]["message"], "User not found");

    // Only the 202 record was applied.
    let ann = sim.find_contact("ann@example.com").unwrap();
    assert_eq!(ann.standard("firstName"), None);
    assert_eq!(ann.writes, 0);
    assert!(sim.find_contact("+12125550100").is_none());
    assert!(sim.find_contact("rej@example.com").is_none());
    assert!(sim.find_contact("zoë@example.com").is_none());
    let ok = sim.find_contact("ok@example.com").unwrap();
    assert_eq!(ok.origin, ContactOrigin::Bulk);
    assert_eq!(ok.standard("firstName"), Some(&json!("Ok")));
    assert_eq!(sim.contact_count(), 2);

    // A job whose records failed is still COMPLETED; the counts tell them apart.
    let jobs = sim.bulk_jobs();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.status, BulkJobStatus::Completed);
    assert_eq!(job.total_records, 6);
    assert_eq!(
        (job.applied, job.succeeded, job.rejected, job.errored),
        (1, 1, 4, 1)
    );
    assert_eq!(job.polls, 1);

    // The admin route shows the same, camelCase.
    let (_, listed) = json_of(
        client()
            .get(format!("{}/_sim/bulk-jobs", sim.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed[0]["applied"], 1);
    assert_eq!(listed[0]["errored"], 1);
    assert_eq!(listed[0]["rejected"], 4);
    assert_eq!(listed[0]["totalRecords"], 6);
    assert_eq!(listed[0]["status"], "COMPLETED");

    // The log and counters saw the bulk requests as usual.
    let counters = sim.counters();
    assert_eq!(counters.count("POST /v2/bulk/user/attributes", 202), 1);
    assert_eq!(counters.count("GET /v2/bulk/job/{id}", 200), 1);
    assert!(sim
        .requests()
        .iter()
        .any(|r| r.endpoint == "POST /v2/bulk/user/attributes" && r.body["users"][0] == batch[0]));
}

#[tokio::test]
async fn a_bulk_record_is_validated_and_applied_like_a_realtime_write() {
    let sim = start(SimConfig::default()).await;
    // The realtime endpoint fixes the type of `tier` to NUMBER.
    let resp = client()
        .post(format!("{}/v2/user/attributes", sim.base_url()))
        .bearer_auth(DEFAULT_KEY)
        .json(&v2("a@example.com", json!({"custom": {"tier": 1}})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let realtime = client()
        .post(format!("{}/v2/user/attributes", sim.base_url()))
        .bearer_auth(DEFAULT_KEY)
        .json(&v2("a@example.com", json!({"custom": {"tier": "gold"}})))
        .send()
        .await
        .unwrap();
    let (status, realtime) = json_of(realtime).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let id = submit(
        &sim,
        &[
            v2("a@example.com", json!({"custom": {"tier": "gold"}})),
            v2("a@example.com", json!({"custom": {"tier": 2}})),
        ],
    )
    .await;
    let lines = results(&sim, &id).await;
    assert_eq!(statuses(&lines), vec![400, 202]);
    assert_eq!(lines[0]["response"]["message"], realtime["message"]);
    let a = sim.find_contact("a@example.com").unwrap();
    assert_eq!(a.custom_value("tier"), Some(&json!(2)));
    assert_eq!(a.writes, 2);
    assert_eq!(a.origin, ContactOrigin::V2UserAttributes);
}

async fn run_random_job(sim: &RunningSim, seed: u64) -> Vec<u64> {
    sim.set_faults(Faults {
        bulk_record_error_rate: 0.25,
        bulk_record_reject_rate: 0.25,
        seed,
        ..Faults::default()
    })
    .unwrap();
    let batch = users(256);
    let id = submit(sim, &batch).await;
    let lines = results(sim, &id).await;
    let got = statuses(&lines);
    // Every record's line is its own, and only the 202 ones were applied.
    for (line, user) in lines.iter().zip(&batch) {
        assert_eq!(&line["request"], user);
        let email = user["identifiers"]["email"].as_str().unwrap();
        let applied = sim.find_contact(email).is_some();
        match line["response"]["status"].as_u64().unwrap() {
            202 => assert!(applied, "{email}"),
            500 => {
                assert_eq!(line["response"]["message"], "Internal error");
                assert!(!applied, "{email}");
            }
            400 => {
                assert!(line["response"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("Invalid value for attribute"));
                assert!(!applied, "{email}");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    got
}

#[tokio::test]
async fn random_record_failures_are_drawn_from_the_seed() {
    let sim = start(SimConfig::default()).await;
    let first = run_random_job(&sim, 7).await;
    let count = |s: u64| first.iter().filter(|&&x| x == s).count();
    // 256 draws at 25% each: far from 0 and from 256.
    for status in [202, 400, 500] {
        assert!((30..=180).contains(&count(status)), "{status}: {first:?}");
    }
    let job = sim.bulk_jobs()[0].clone();
    assert_eq!(job.applied, count(202));
    assert_eq!(job.rejected, count(400));
    assert_eq!(job.errored, count(500));
    assert_eq!(sim.contact_count(), count(202));

    // The same seed on a fresh simulator state gives the same outcomes.
    sim.reset().unwrap();
    assert_eq!(run_random_job(&sim, 7).await, first);
    sim.reset().unwrap();
    assert_ne!(run_random_job(&sim, 8).await, first);

    // Certain failure: nothing applied, the job still COMPLETED.
    sim.reset().unwrap();
    sim.set_faults(Faults {
        bulk_record_error_rate: 1.0,
        ..Faults::default()
    })
    .unwrap();
    let id = submit(&sim, &users(3)).await;
    assert_eq!(statuses(&results(&sim, &id).await), vec![500, 500, 500]);
    assert_eq!(sim.bulk_jobs()[0].status, BulkJobStatus::Completed);
    assert_eq!(sim.contact_count(), 0);
}

#[tokio::test]
async fn record_outcomes_do_not_depend_on_other_requests() {
    // The same jobs with or without other API requests in between get the same lines.
    async fn run(extra_requests: usize) -> Vec<u64> {
        let sim = start_with(Faults {
            bulk_record_reject_rate: 0.5,
            seed: 3,
            ..Faults::default()
        })
        .await;
        for _ in 0..extra_requests {
            let r = client()
                .get(format!("{}/v1/me", sim.base_url()))
                .bearer_auth(DEFAULT_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        let id = submit(&sim, &users(64)).await;
        statuses(&results(&sim, &id).await)
    }
    assert_eq!(run(0).await, run(5).await);
}

// ---- timing of the decisions ----------------------------------------------------------------

#[tokio::test]
async fn record_faults_are_taken_when_the_job_is_processed() {
    let sim = start(SimConfig::default()).await;
    // Created without faults, processed (at the first poll: nothing looks before, not even
    // an inspection, which would process it) after they were set.
    let id = submit(&sim, &[v2("a@example.com", json!({}))]).await;
    sim.set_faults(Faults {
        bulk_record_errors: BTreeMap::from([("a@example.com".to_owned(), 503)]),
        ..Faults::default()
    })
    .unwrap();
    assert_eq!(statuses(&results(&sim, &id).await), vec![503]);
    assert!(sim.find_contact("a@example.com").is_none());

    // Created under the fault, processed after it was cleared.
    let id = submit(&sim, &[v2("a@example.com", json!({}))]).await;
    sim.set_faults(Faults::none()).unwrap();
    assert_eq!(statuses(&results(&sim, &id).await), vec![202]);
    assert!(sim.find_contact("a@example.com").is_some());
}

#[tokio::test]
async fn a_delayed_job_runs_with_the_faults_in_force_when_it_is_due() {
    let sim = start(SimConfig {
        bulk_processing_delay_ms: 2_000,
        ..SimConfig::default()
    })
    .await;
    let id = submit(&sim, &users(2)).await;
    let first = poll(&sim, &id).await;
    assert_ne!(first["status"], "COMPLETED", "{first}");
    sim.set_faults(Faults {
        bulk_record_errors: BTreeMap::from([("u1@example.com".to_owned(), 500)]),
        ..Faults::default()
    })
    .unwrap();
    assert_eq!(statuses(&results(&sim, &id).await), vec![202, 500]);
}

// ---- whole-job failure ----------------------------------------------------------------------

#[tokio::test]
async fn fail_next_jobs_fails_that_many_jobs_then_counts_zero() {
    let sim = start(SimConfig::default()).await;
    let (status, body) = put_faults(&sim, &json!({"bulk_fail_next_jobs": 2})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let a = submit(&sim, &[v2("a@example.com", json!({}))]).await;
    assert_eq!(sim.faults().bulk_fail_next_jobs, 1);
    let b = submit(&sim, &[v2("b@example.com", json!({}))]).await;
    assert_eq!(sim.faults().bulk_fail_next_jobs, 0);
    let (_, shown) = json_of(
        client()
            .get(format!("{}/_sim/faults", sim.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(shown["bulk_fail_next_jobs"], 0);
    // Decided at creation: clearing the faults now does not save them.
    sim.set_faults(Faults::none()).unwrap();
    let c = submit(&sim, &[v2("c@example.com", json!({}))]).await;

    for id in [&a, &b] {
        let job = poll(&sim, id).await;
        assert_eq!(job["status"], "FAILED");
        assert!(job["url"].is_null());
        let resp = client()
            .get(format!("{}/_sim/bulk/{id}/results.jsonl", sim.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(statuses(&results(&sim, &c).await), vec![202]);
    assert!(sim.find_contact("a@example.com").is_none());
    assert!(sim.find_contact("b@example.com").is_none());
    assert!(sim.find_contact("c@example.com").is_some());
    let jobs = sim.bulk_jobs();
    let st: Vec<_> = jobs.iter().map(|j| j.status).collect();
    assert_eq!(
        st,
        vec![
            BulkJobStatus::Failed,
            BulkJobStatus::Failed,
            BulkJobStatus::Completed
        ]
    );
    assert_eq!(
        (jobs[0].applied, jobs[0].rejected, jobs[0].errored),
        (0, 0, 0)
    );
}

// ---- NEEDS_REVIEW ---------------------------------------------------------------------------

#[tokio::test]
async fn the_first_polls_answer_needs_review_whatever_the_state() {
    let sim = start_with(Faults {
        bulk_unknown_status_polls: 2,
        ..Faults::default()
    })
    .await;
    let id = submit(&sim, &[v2("a@example.com", json!({}))]).await;
    for _ in 0..2 {
        let job = poll(&sim, &id).await;
        assert_eq!(job["status"], "NEEDS_REVIEW", "{job}");
        assert!(job["url"].is_null(), "{job}");
        assert_eq!(job["bulkJobId"], json!(id));
        assert_eq!(job["totalRecords"], 1);
    }
    // Meanwhile the job ran: its own state is COMPLETED and the record is applied.
    assert_eq!(sim.bulk_jobs()[0].status, BulkJobStatus::Completed);
    assert!(sim.find_contact("a@example.com").is_some());
    let job = poll(&sim, &id).await;
    assert_eq!(job["status"], "COMPLETED");
    assert!(job["url"].is_string());
    assert_eq!(sim.bulk_jobs()[0].polls, 3);

    // Per job: a new job starts its own count; a failed one is hidden too.
    sim.set_faults(Faults {
        bulk_unknown_status_polls: 1,
        bulk_fail_next_jobs: 1,
        ..Faults::default()
    })
    .unwrap();
    let failed = submit(&sim, &[v2("b@example.com", json!({}))]).await;
    assert_eq!(poll(&sim, &failed).await["status"], "NEEDS_REVIEW");
    assert_eq!(poll(&sim, &failed).await["status"], "FAILED");
    // The old job has had its polls.
    assert_eq!(poll(&sim, &id).await["status"], "COMPLETED");
}

// ---- truncated result files -----------------------------------------------------------------

#[tokio::test]
async fn a_truncated_result_file_drops_lines_of_applied_records() {
    let sim = start_with(Faults {
        bulk_truncate_results: true,
        ..Faults::default()
    })
    .await;
    let batch = users(5);
    let id = submit(&sim, &batch).await;
    let job = poll(&sim, &id).await;
    assert_eq!(job["status"], "COMPLETED");
    let url = job["url"].as_str().unwrap().to_owned();
    let text = download(&url).await;
    assert!(!text.ends_with('\n'), "{text}");
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, user) in lines[..2].iter().zip(&batch) {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(&v["request"], user);
        assert_eq!(v["response"]["status"], 202);
    }
    assert!(
        serde_json::from_str::<Value>(lines[2]).is_err(),
        "{}",
        lines[2]
    );
    assert!(lines[2].starts_with("{\"request\""), "{}", lines[2]);
    // Every record was applied, the dropped ones too.
    assert_eq!(sim.contact_count(), 5);
    assert_eq!(sim.bulk_jobs()[0].applied, 5);

    // Decided per download: once the fault is cleared, the whole file comes.
    sim.set_faults(Faults::none()).unwrap();
    let whole = download(&url).await;
    assert_eq!(whole.lines().count(), 5);
    assert!(whole.ends_with('\n'));

    // One record: no complete line at all, only a cut one.
    sim.set_faults(Faults {
        bulk_truncate_results: true,
        ..Faults::default()
    })
    .unwrap();
    let id = submit(&sim, &users(1)).await;
    let url = poll(&sim, &id).await["url"].as_str().unwrap().to_owned();
    let text = download(&url).await;
    assert!(!text.is_empty() && !text.contains('\n'), "{text}");
    assert!(serde_json::from_str::<Value>(&text).is_err());
}

// ---- the result URL's field -----------------------------------------------------------------

#[tokio::test]
async fn the_result_url_field_is_configurable() {
    for (field, present, absent) in [
        (BulkResultField::Url, &["url"][..], &["resultUrl"][..]),
        (BulkResultField::ResultUrl, &["resultUrl"][..], &["url"][..]),
        (BulkResultField::Both, &["url", "resultUrl"][..], &[][..]),
    ] {
        let sim = start(SimConfig {
            bulk_result_url_field: field,
            faults: Faults {
                bulk_unknown_status_polls: 1,
                ..Faults::default()
            },
            ..SimConfig::default()
        })
        .await;
        let id = submit(&sim, &[v2("a@example.com", json!({}))]).await;
        // A hidden status has the field(s), null.
        let hidden = poll(&sim, &id).await;
        let done = poll(&sim, &id).await;
        assert_eq!(done["status"], "COMPLETED");
        for name in present {
            assert!(
                hidden[name].is_null() && hidden.get(name).is_some(),
                "{hidden}"
            );
            let url = done[name].as_str().unwrap();
            assert!(download(url).await.contains("a@example.com"));
        }
        for name in absent {
            assert!(done.get(name).is_none(), "{field:?}: {done}");
            assert!(hidden.get(name).is_none(), "{field:?}: {hidden}");
        }
    }
}

#[tokio::test]
async fn a_pending_job_has_a_null_result_url_in_every_field() {
    let sim = start(SimConfig {
        bulk_result_url_field: BulkResultField::Both,
        bulk_processing_delay_ms: 60_000,
        ..SimConfig::default()
    })
    .await;
    let id = submit(&sim, &[v2("a@example.com", json!({}))]).await;
    let job = poll(&sim, &id).await;
    assert_eq!(job["status"], "PENDING");
    assert!(job.get("url").is_some_and(Value::is_null), "{job}");
    assert!(job.get("resultUrl").is_some_and(Value::is_null), "{job}");
    assert_eq!(sim.contact_count(), 0);
}

#[test]
fn the_result_field_parses_from_flag_names() {
    for (s, f) in [
        ("url", BulkResultField::Url),
        ("result-url", BulkResultField::ResultUrl),
        ("resultUrl", BulkResultField::ResultUrl),
        ("both", BulkResultField::Both),
    ] {
        assert_eq!(s.parse::<BulkResultField>().unwrap(), f);
    }
    assert!("link".parse::<BulkResultField>().is_err());
    assert_eq!(BulkResultField::default(), BulkResultField::Url);
}

// ---- validation -----------------------------------------------------------------------------

#[tokio::test]
async fn bulk_faults_are_validated() {
    let sim = start(SimConfig::default()).await;
    let bad = [
        json!({"bulk_record_error_rate": 1.5}),
        json!({"bulk_record_reject_rate": -0.1}),
        json!({"bulk_record_error_rate": 0.6, "bulk_record_reject_rate": 0.6}),
        json!({"bulk_record_errors": {"a@example.com": 200}}),
        json!({"bulk_record_errors": {"a@example.com": 600}}),
        json!({"bulk_record_errors": {"ann": 500}}),
        json!({"bulk_record_errors": {"A@example.com": 500, "a@example.com": 400}}),
        json!({"bulk_unknown_status_polls": -1}),
        json!({"bulk_truncate_results": "yes"}),
        json!({"bulk_fail_next": 1}),
    ];
    for body in bad {
        let (status, answer) = put_faults(&sim, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(sim.faults(), Faults::default(), "{body}");
    }
    assert!(sim
        .set_faults(Faults {
            bulk_record_errors: BTreeMap::from([("+1212".to_owned(), 99)]),
            ..Faults::default()
        })
        .is_err());
    assert!(Simulator::start(SimConfig {
        faults: Faults {
            bulk_record_error_rate: 2.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .is_err());
    // The boundaries are fine.
    let (status, answer) = put_faults(
        &sim,
        &json!({"bulk_record_error_rate": 0.5, "bulk_record_reject_rate": 0.5,
                "bulk_record_errors": {"a@example.com": 400, "+12125550100": 599}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}
