//! Behaviour of the simulator's HTTP API, through a real HTTP client on 127.0.0.1.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use attentive_sim::{
    BulkJobStatus, ContactOrigin, CustomType, Faults, Permission, RateLimitScope, RunningSim,
    SeedContact, SimConfig, SimKey, ViolationKind, DEFAULT_KEY,
};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

mod common;
use common::{client, start};

async fn seeded(emails: &[&str]) -> RunningSim {
    start(SimConfig {
        contacts: emails.iter().map(|e| SeedContact::email(*e)).collect(),
        ..SimConfig::default()
    })
    .await
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Reply {
        status,
        headers,
        body,
    }
}

async fn post(sim: &RunningSim, path: &str, key: &str, body: Value) -> Reply {
    send(
        client()
            .post(format!("{}{path}", sim.base_url()))
            .bearer_auth(key)
            .json(&body),
    )
    .await
}

async fn get(sim: &RunningSim, path_and_query: &str, key: &str) -> Reply {
    send(
        client()
            .get(format!("{}{path_and_query}", sim.base_url()))
            .bearer_auth(key),
    )
    .await
}

fn assert_spring(reply: &Reply, status: u16) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.body);
    assert_eq!(reply.body["status"], json!(status), "{}", reply.body);
    assert!(reply.body["timestamp"].is_string(), "{}", reply.body);
    assert!(reply.body["error"].is_string(), "{}", reply.body);
    assert!(reply.body["message"].is_string(), "{}", reply.body);
    assert!(reply.body["path"].is_string(), "{}", reply.body);
}

fn message(reply: &Reply) -> String {
    reply.body["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn v2(email: &str, attributes: Value) -> Value {
    json!({"identifiers": {"email": email}, "attributes": attributes})
}

// ---- auth ------------------------------------------------------------------------------------

#[tokio::test]
async fn me_requires_a_known_bearer_key() {
    let sim = start(SimConfig::default()).await;
    let none = send(client().get(format!("{}/v1/me", sim.base_url()))).await;
    assert_spring(&none, 401);
    let unknown = get(&sim, "/v1/me", "nope").await;
    assert_spring(&unknown, 401);
    let ok = get(&sim, "/v1/me", DEFAULT_KEY).await;
    assert_eq!(ok.status, StatusCode::OK);
    for field in [
        "applicationName",
        "attentiveDomainName",
        "companyName",
        "contactEmail",
        "companyId",
    ] {
        assert!(ok.body[field].is_string(), "{field} in {}", ok.body);
    }
    // The log never holds the key itself.
    let log = sim.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].key_id, None);
    assert_eq!(log[1].key_id.as_deref(), Some("unknown"));
    assert_eq!(log[2].key_id.as_deref(), Some("key-1"));
    let raw = serde_json::to_string(&log).unwrap();
    assert!(!raw.contains(DEFAULT_KEY));
}

#[tokio::test]
async fn missing_permission_is_403_naming_it_and_applies_nothing() {
    let sim = start(SimConfig {
        keys: vec![
            SimKey::with("attr-only", [Permission::Attributes]),
            SimKey::with("subs-only", [Permission::Subscriptions]),
        ],
        contacts: vec![SeedContact::email("ann@example.com")],
        ..SimConfig::default()
    })
    .await;
    let r = get(&sim, "/v1/subscriptions?email=ann@example.com", "attr-only").await;
    assert_spring(&r, 403);
    assert!(message(&r).contains("subscriptions"), "{}", r.body);

    let r = post(
        &sim,
        "/v2/user/attributes",
        "attr-only",
        v2("new@example.com", json!({"firstName": "New"})),
    )
    .await;
    assert_spring(&r, 403);
    assert!(message(&r).contains("subscriptions"), "{}", r.body);

    let r = post(
        &sim,
        "/v1/attributes/custom",
        "subs-only",
        json!({"properties": {"tier": "gold"}, "user": {"email": "ann@example.com"}}),
    )
    .await;
    assert_spring(&r, 403);
    assert!(message(&r).contains("attributes"), "{}", r.body);

    // /v1/me needs no permission.
    assert_eq!(
        get(&sim, "/v1/me", "subs-only").await.status,
        StatusCode::OK
    );
    assert_eq!(sim.contact_count(), 1);
    assert!(sim.contacts()[0].custom.is_empty());
}

// ---- existence check -------------------------------------------------------------------------

#[tokio::test]
async fn subscriptions_lookup_is_a_read_only_existence_check() {
    let sim = start(SimConfig {
        contacts: vec![
            SeedContact::email("ann@example.com"),
            SeedContact::phone("+14155550100"),
        ],
        ..SimConfig::default()
    })
    .await;
    let found = get(&sim, "/v1/subscriptions?email=ANN@example.com", DEFAULT_KEY).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    let elig = found.body["subscriptionEligibilities"].as_array().unwrap();
    assert_eq!(elig[0]["subscription"]["channel"], "EMAIL");

    let by_phone = get(&sim, "/v1/subscriptions?phone=%2B14155550100", DEFAULT_KEY).await;
    assert_eq!(by_phone.status, StatusCode::OK, "{}", by_phone.body);

    let missing = get(&sim, "/v1/subscriptions?email=bob@example.com", DEFAULT_KEY).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body, json!({"message": "Subscriptions not found"}));
    let missing = get(&sim, "/v1/subscriptions?phone=%2B14155550199", DEFAULT_KEY).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Exactly one parameter; an unencoded '+' decodes to a space and is not E.164.
    for bad in [
        "/v1/subscriptions",
        "/v1/subscriptions?email=ann@example.com&phone=%2B14155550100",
        "/v1/subscriptions?phone=+14155550100",
        "/v1/subscriptions?phone=4155550100",
    ] {
        assert_spring(&get(&sim, bad, DEFAULT_KEY).await, 400);
    }
    assert_eq!(
        sim.contact_count(),
        2,
        "a lookup must never create anything"
    );
    let log = sim.requests();
    assert_eq!(log[2].query.as_deref(), Some("email=bob@example.com"));
}

// ---- v2 user attributes ----------------------------------------------------------------------

#[tokio::test]
async fn v2_creates_unknown_contacts_and_updates_known_ones() {
    let sim = seeded(&["ann@example.com"]).await;
    let r = post(
        &sim,
        "/v2/user/attributes",
        DEFAULT_KEY,
        v2("stranger@example.com", json!({"firstName": "Who"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["success"], json!(true));
    assert!(r.body["message"].is_string());
    assert_eq!(
        sim.contact_count(),
        2,
        "v2 creates unknown contacts, as Attentive does"
    );
    let created = sim.find_contact("stranger@example.com").unwrap();
    assert_eq!(created.origin, ContactOrigin::V2UserAttributes);

    let full = json!({
        "identifiers": {"email": "Ann@Example.com", "phone": "+14155550100"},
        "attributes": {
            "firstName": "Ann",
            "lastName": "Lee",
            "location": {"address1": "1 Main St", "city": "Brooklyn", "zip": "02134",
                         "latitude": "40.730610", "longitude": "-73.935242",
                         "country": "US", "region": "US-NY", "timezone": "America/New_York"},
            "demographic": {"age": 34, "dateOfBirth": "1990-11-08", "organization": "Acme",
                            "title": "Dr", "website": "https://ann.example", "language": "en"},
            "locale": {"language": "en", "country": "US"},
            "custom": {"tier": "gold", "ltv": 412.5, "vip": true, "signup": "2021-04-23T16:04:33Z"}
        }
    });
    let r = post(&sim, "/v2/user/attributes", DEFAULT_KEY, full).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(
        sim.contact_count(),
        2,
        "an existing contact is updated, not duplicated"
    );
    let ann = sim.find_contact("ann@example.com").unwrap();
    assert_eq!(ann.origin, ContactOrigin::Seed);
    assert_eq!(ann.phone.as_deref(), Some("+14155550100"));
    assert_eq!(ann.standard("firstName"), Some(&json!("Ann")));
    assert_eq!(ann.standard("location.zip"), Some(&json!("02134")));
    assert_eq!(ann.standard("demographic.age"), Some(&json!(34)));
    assert_eq!(ann.standard("locale.country"), Some(&json!("US")));
    assert_eq!(ann.custom_value("ltv"), Some(&json!(412.5)));
    assert_eq!(ann.custom["vip"].kind, CustomType::Boolean);
    assert_eq!(ann.custom["signup"].kind, CustomType::String);
    assert_eq!(ann.writes, 1);

    // "" clears.
    let r = post(
        &sim,
        "/v2/user/attributes",
        DEFAULT_KEY,
        v2(
            "ann@example.com",
            json!({"lastName": "", "location": {"city": ""}, "custom": {"tier": ""}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let ann = sim.find_contact("ann@example.com").unwrap();
    assert_eq!(ann.standard("lastName"), None);
    assert_eq!(ann.standard("location.city"), None);
    assert_eq!(ann.custom_value("tier"), None);
    assert_eq!(ann.standard("firstName"), Some(&json!("Ann")));
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[tokio::test]
async fn custom_attribute_type_is_fixed_by_the_first_value() {
    let sim = seeded(&["ann@example.com", "bob@example.com"]).await;
    let r = post(
        &sim,
        "/v2/user/attributes",
        DEFAULT_KEY,
        v2(
            "ann@example.com",
            json!({"custom": {"ltv": 10, "since": "2024-01-02"}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(sim.custom_attribute_types()["ltv"], CustomType::Number);
    assert_eq!(sim.custom_attribute_types()["since"], CustomType::String);

    // Another contact, another type: 400 naming the attribute and both types; nothing applied.
    let r = post(
        &sim,
        "/v2/user/attributes",
        DEFAULT_KEY,
        v2(
            "bob@example.com",
            json!({"firstName": "Bob", "custom": {"ltv": "ten"}}),
        ),
    )
    .await;
    assert_spring(&r, 400);
    let m = message(&r);
    assert!(
        m.contains("ltv") && m.contains("NUMBER") && m.contains("STRING"),
        "{m}"
    );
    let bob = sim.find_contact("bob@example.com").unwrap();
    assert_eq!(bob.standard("firstName"), None);
    assert_eq!(bob.custom_value("ltv"), None);

    // v1 follows the same account-wide types.
    let r = post(
        &sim,
        "/v1/attributes/custom",
        DEFAULT_KEY,
        json!({"properties": {"ltv": true}, "user": {"email": "bob@example.com"}}),
    )
    .await;
    assert_spring(&r, 400);
    assert!(message(&r).contains("BOOLEAN"), "{}", r.body);
    let r = post(
        &sim,
        "/v1/attributes/custom",
        DEFAULT_KEY,
        json!({"properties": {"ltv": 11.5}, "user": {"email": "bob@example.com"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn v2_validation_errors_are_400_and_create_nothing() {
    let sim = start(SimConfig::default()).await;
    let long_key = "k".repeat(201);
    let long_email = format!("{}@example.com", "a".repeat(95));
    let cases = [
        json!({}),
        json!({"identifiers": {}}),
        json!({"identifiers": {"customIdentifiers": [{"key": "k", "value": "v"}]}}),
        json!({"identifiers": {"phone": "14155550100"}}),
        json!({"identifiers": {"phone": "+1 415 555 0100"}}),
        json!({"identifiers": {"email": "not-an-email"}}),
        json!({"identifiers": {"email": long_email}}),
        v2("a@example.com", json!({"custom": {long_key: "x"}})),
        v2("a@example.com", json!({"custom": {"tags": ["a", "b"]}})),
        v2("a@example.com", json!({"custom": {"obj": {"a": 1}}})),
        v2("a@example.com", json!({"demographic": {"age": "34"}})),
        v2("a@example.com", json!({"demographic": {"age": 34.5}})),
        v2("a@example.com", json!({"location": {"zip": 2134}})),
        v2("a@example.com", json!({"location": {"latitude": 40.7}})),
        v2("a@example.com", json!({"location": {"longitude": -73.9}})),
        v2(
            "a@example.com",
            json!({"demographic": {"dateOfBirth": "11/08/1990"}}),
        ),
        v2(
            "a@example.com",
            json!({"demographic": {"dateOfBirth": "1990-02-30"}}),
        ),
        v2("a@example.com", json!({"location": {"street": "x"}})),
        v2("a@example.com", json!({"demographic": {"height": 180}})),
        v2("a@example.com", json!({"nickname": "x"})),
        json!({"identifiers": {"email": "a@example.com"}, "extra": true}),
    ];
    for case in cases {
        let r = post(&sim, "/v2/user/attributes", DEFAULT_KEY, case.clone()).await;
        assert_spring(&r, 400);
        assert!(!message(&r).is_empty(), "{case}");
    }
    // Not JSON at all.
    let r = send(
        client()
            .post(format!("{}/v2/user/attributes", sim.base_url()))
            .bearer_auth(DEFAULT_KEY)
            .header("content-type", "application/json")
            .body("{nope"),
    )
    .await;
    assert_spring(&r, 400);
    let r = send(
        client()
            .post(format!("{}/v2/user/attributes", sim.base_url()))
            .bearer_auth(DEFAULT_KEY)
            .body(r#"{"identifiers":{"email":"a@example.com"}}"#),
    )
    .await;
    assert_spring(&r, 415);
    assert_eq!(sim.contact_count(), 0);
    // A 200-character key is fine.
    let ok_key = "k".repeat(200);
    let r = post(
        &sim,
        "/v2/user/attributes",
        DEFAULT_KEY,
        v2("a@example.com", json!({"custom": {ok_key: "x"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
}

// ---- violations ------------------------------------------------------------------------------

#[tokio::test]
async fn subscriptions_field_and_nulls_are_recorded_violations() {
    let sim = seeded(&["ann@example.com"]).await;
    let r = post(
        &sim,
        "/v2/user/attributes",
        DEFAULT_KEY,
        json!({
            "identifiers": {"email": "ann@example.com"},
            "attributes": {"firstName": "Ann"},
            "subscriptions": [{"type": "MARKETING", "channel": "TEXT"}]
        }),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "still accepted, as Attentive would"
    );
    let r = post(
        &sim,
        "/v2/user/attributes",
        DEFAULT_KEY,
        v2(
            "ann@example.com",
            json!({"lastName": null, "custom": {"tier": null}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let v = sim.violations();
    assert_eq!(v.len(), 3, "{v:?}");
    assert_eq!(v[0].kind, ViolationKind::SubscriptionsField);
    assert_eq!(v[0].endpoint, "POST /v2/user/attributes");
    let nulls: BTreeSet<_> = v[1..]
        .iter()
        .map(|x| {
            assert_eq!(x.kind, ViolationKind::NullValue);
            x.detail.clone()
        })
        .collect();
    assert_eq!(
        nulls,
        BTreeSet::from([
            "attributes.lastName".to_owned(),
            "attributes.custom.tier".to_owned()
        ])
    );

    let admin: Value = client()
        .get(format!("{}/_sim/violations", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(admin.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn subscription_endpoints_are_accepted_but_recorded() {
    let sim = seeded(&["ann@example.com"]).await;
    for path in ["/v1/subscriptions", "/v1/subscriptions/unsubscribe"] {
        let r = post(
            &sim,
            path,
            DEFAULT_KEY,
            json!({"user": {"email": "new@example.com"}, "signUpSourceId": "1"}),
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{path}");
    }
    let v = sim.violations();
    assert_eq!(v.len(), 2);
    assert!(v
        .iter()
        .all(|x| x.kind == ViolationKind::SubscriptionEndpoint));
    assert_eq!(sim.contact_count(), 1);
}

// ---- v1 custom attributes --------------------------------------------------------------------

#[tokio::test]
async fn v1_custom_attributes_write_and_read_back() {
    let sim = start(SimConfig {
        contacts: vec![SeedContact::phone("+14155550100")],
        ..SimConfig::default()
    })
    .await;
    let r = post(
        &sim,
        "/v1/attributes/custom",
        DEFAULT_KEY,
        json!({"properties": {"Loyalty Tier": "gold", "ltv": 12.5, "vip": true},
               "user": {"phone": "+14155550100"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({}));
    let back = get(
        &sim,
        "/v1/attributes/custom?phone=%2B14155550100",
        DEFAULT_KEY,
    )
    .await;
    assert_eq!(back.status, StatusCode::OK);
    assert_eq!(
        back.body,
        json!([
            {"name": "Loyalty Tier", "value": "gold"},
            {"name": "ltv", "value": "12.5"},
            {"name": "vip", "value": "true"}
        ])
    );
    assert_eq!(
        get(
            &sim,
            "/v1/attributes/custom?email=x@example.com",
            DEFAULT_KEY
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_spring(
        &get(
            &sim,
            "/v1/attributes/custom?email=x@example.com&phone=%2B14155550100",
            DEFAULT_KEY,
        )
        .await,
        400,
    );

    let bad = [
        json!({"properties": {"a": 1}, "user": {}}),
        json!({"properties": {"a": 1}, "user": {"email": "a@example.com", "name": "x"}}),
        json!({"properties": {"a": [1]}, "user": {"phone": "+14155550100"}}),
        json!({"properties": {"a": {"b": 1}}, "user": {"phone": "+14155550100"}}),
        json!({"properties": {"k".repeat(201): 1}, "user": {"phone": "+14155550100"}}),
        json!({"properties": {"a": 1}, "user": {"phone": "4155550100"}}),
        json!({"user": {"phone": "+14155550100"}}),
        json!({"properties": {"a": 1}}),
    ];
    for body in bad {
        assert_spring(
            &post(&sim, "/v1/attributes/custom", DEFAULT_KEY, body).await,
            400,
        );
    }
    assert_eq!(sim.contact_count(), 1);

    // Unknown users are created by default (configurable).
    let r = post(
        &sim,
        "/v1/attributes/custom",
        DEFAULT_KEY,
        json!({"properties": {"a": 1}, "user": {"email": "new@example.com"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(sim.contact_count(), 2);
    assert_eq!(
        sim.find_contact("new@example.com").unwrap().origin,
        ContactOrigin::V1CustomAttributes
    );
}

#[tokio::test]
async fn v1_can_be_configured_not_to_create_unknown_users() {
    let sim = start(SimConfig {
        v1_creates_unknown_users: false,
        ..SimConfig::default()
    })
    .await;
    let r = post(
        &sim,
        "/v1/attributes/custom",
        DEFAULT_KEY,
        json!({"properties": {"a": 1}, "user": {"email": "new@example.com"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(sim.contact_count(), 0);
}

// ---- rate limits -----------------------------------------------------------------------------

#[tokio::test]
async fn a_burst_over_the_limit_gets_429s_with_headers() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    let url = format!("{}/v1/me", sim.base_url());
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let req = c.get(&url).bearer_auth(DEFAULT_KEY);
            tokio::spawn(async move { send(req).await })
        })
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.headers["x-ratelimit-limit"], "150");
        let remaining: u32 = r.headers["x-ratelimit-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(remaining <= 150);
        match r.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert_eq!(r.body, json!({"message": "Too many requests"}));
                assert_eq!(remaining, 0);
                assert!(!r.headers.contains_key("retry-after"));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(limited > 0, "200 requests at once must exceed 150/s");
    assert!(ok >= 150, "the first 150 of a window pass (ok = {ok})");
    let counters = sim.counters();
    assert_eq!(counters.rate_limited, limited);
    assert_eq!(counters.count("GET /v1/me", 429), limited);
    assert_eq!(counters.count("GET /v1/me", 200), ok);
}

#[tokio::test]
async fn limits_are_per_key_and_retry_after_is_optional() {
    let sim = start(SimConfig {
        keys: vec![SimKey::all("a"), SimKey::all("b")],
        rate_limit_per_second: 2,
        bulk_rate_limit_per_second: 1,
        retry_after_secs: Some(1),
        ..SimConfig::default()
    })
    .await;
    let statuses = |rs: &[Reply]| rs.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>();
    let mut a = Vec::new();
    for _ in 0..3 {
        a.push(get(&sim, "/v1/me", "a").await);
    }
    // Three requests within a second (generous: the window is a second long).
    assert_eq!(statuses(&a), vec![200, 200, 429]);
    assert_eq!(a[0].headers["x-ratelimit-remaining"], "1");
    assert_eq!(a[2].headers["retry-after"], "1");
    assert_eq!(get(&sim, "/v1/me", "b").await.status, StatusCode::OK);
    // Bulk routes have their own limit.
    let r1 = get(&sim, "/v2/bulk/job/none", "b").await;
    assert_eq!(r1.status, StatusCode::NOT_FOUND);
    assert_eq!(r1.headers["x-ratelimit-limit"], "1");
    assert_eq!(
        get(&sim, "/v2/bulk/job/none", "b").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_limit_counts_each_endpoint_or_the_whole_key() {
    let statuses = |rs: &[Reply]| rs.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>();
    for (scope, expected) in [
        (RateLimitScope::Endpoint, vec![200, 200, 404, 404]),
        (RateLimitScope::Key, vec![200, 200, 429, 429]),
    ] {
        let sim = start(SimConfig {
            rate_limit_per_second: 2,
            rate_limit_scope: scope,
            ..SimConfig::default()
        })
        .await;
        // Within one second: two to one endpoint, two to another.
        let replies = vec![
            get(&sim, "/v1/me", DEFAULT_KEY).await,
            get(&sim, "/v1/me", DEFAULT_KEY).await,
            get(&sim, "/v1/subscriptions?email=nobody@x.com", DEFAULT_KEY).await,
            get(&sim, "/v1/subscriptions?email=nobody@x.com", DEFAULT_KEY).await,
        ];
        assert_eq!(statuses(&replies), expected, "{scope:?}");
    }
}

// ---- faults ----------------------------------------------------------------------------------

#[tokio::test]
async fn an_injected_error_is_returned_and_the_write_is_not_applied() {
    let sim = seeded(&["ann@example.com"]).await;
    sim.set_faults(Faults {
        error_rates: [(503, 1.0)].into_iter().collect(),
        ..Faults::default()
    })
    .unwrap();
    let r = post(
        &sim,
        "/v2/user/attributes",
        DEFAULT_KEY,
        v2("ann@example.com", json!({"firstName": "Ann"})),
    )
    .await;
    assert_spring(&r, 503);
    assert!(r.headers.contains_key("x-ratelimit-limit"));
    let r = post(
        &sim,
        "/v2/user/attributes",
        DEFAULT_KEY,
        v2("new@example.com", json!({"firstName": "New"})),
    )
    .await;
    assert_eq!(r.status.as_u16(), 503);
    assert_eq!(sim.contact_count(), 1);
    assert_eq!(
        sim.find_contact("ann@example.com")
            .unwrap()
            .standard("firstName"),
        None
    );
    assert_eq!(sim.counters().faults_injected, 2);
    assert_eq!(sim.requests()[0].fault.as_deref(), Some("error 503"));

    // Through the admin endpoint: 500 at rate 1.0, then no fault.
    let put = client()
        .put(format!("{}/_sim/faults", sim.base_url()))
        .json(&json!({"error_rates": {"500": 1.0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let r = post(
        &sim,
        "/v1/attributes/custom",
        DEFAULT_KEY,
        json!({"properties": {"a": 1}, "user": {"email": "ann@example.com"}}),
    )
    .await;
    assert_spring(&r, 500);
    assert!(sim
        .find_contact("ann@example.com")
        .unwrap()
        .custom
        .is_empty());
    let bad = client()
        .put(format!("{}/_sim/faults", sim.base_url()))
        .json(&json!({"error_rates": {"500": 1.5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let put = client()
        .put(format!("{}/_sim/faults", sim.base_url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let r = post(
        &sim,
        "/v2/user/attributes",
        DEFAULT_KEY,
        v2("ann@example.com", json!({"firstName": "Ann"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_dropped_connection_is_a_client_error_and_applies_nothing() {
    let sim = seeded(&["ann@example.com"]).await;
    sim.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    })
    .unwrap();
    let err = client()
        .post(format!("{}/v2/user/attributes", sim.base_url()))
        .bearer_auth(DEFAULT_KEY)
        .json(&v2("ann@example.com", json!({"firstName": "Ann"})))
        .send()
        .await
        .expect_err("the connection is closed without a response");
    assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    assert_eq!(
        sim.find_contact("ann@example.com")
            .unwrap()
            .standard("firstName"),
        None
    );
    let counters = sim.counters();
    assert_eq!(counters.dropped, 1);
    assert_eq!(
        counters.by_endpoint["POST /v2/user/attributes"]["dropped"],
        1
    );
    assert_eq!(sim.requests()[0].status, None);
    // The server keeps serving.
    sim.set_faults(Faults::default()).unwrap();
    assert_eq!(
        get(&sim, "/v1/me", DEFAULT_KEY).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn faults_are_reproducible_with_a_seed() {
    async fn run(seed: u64) -> Vec<u16> {
        let sim = start(SimConfig {
            faults: Faults {
                error_rates: [(500, 0.3), (503, 0.2)].into_iter().collect(),
                seed,
                ..Faults::default()
            },
            ..SimConfig::default()
        })
        .await;
        let mut out = Vec::new();
        for _ in 0..30 {
            out.push(get(&sim, "/v1/me", DEFAULT_KEY).await.status.as_u16());
        }
        out
    }
    let a = run(42).await;
    assert_eq!(a, run(42).await);
    assert!(a.contains(&200) && a.iter().any(|s| *s >= 500), "{a:?}");
    assert_ne!(a, run(7).await);
}

#[tokio::test]
async fn burst_429_and_latency() {
    let sim = start(SimConfig::default()).await;
    sim.set_faults(Faults {
        burst_429: Some(attentive_sim::Burst429 {
            period_ms: 60_000,
            duration_ms: 60_000,
        }),
        ..Faults::default()
    })
    .unwrap();
    let r = get(&sim, "/v1/me", DEFAULT_KEY).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers["x-ratelimit-remaining"], "0");
    assert_eq!(sim.counters().too_many_requests, 1);
    assert_eq!(sim.counters().rate_limited, 0);

    sim.set_faults(Faults {
        latency_ms: 150,
        jitter_ms: 50,
        ..Faults::default()
    })
    .unwrap();
    let t = Instant::now();
    assert_eq!(
        get(&sim, "/v1/me", DEFAULT_KEY).await.status,
        StatusCode::OK
    );
    assert!(t.elapsed() >= Duration::from_millis(150));
}

// ---- bulk ------------------------------------------------------------------------------------

#[tokio::test]
async fn bulk_job_lifecycle_and_result_file() {
    let sim = seeded(&["ann@example.com"]).await;
    let users = json!([
        v2("ann@example.com", json!({"firstName": "Ann", "custom": {"tier": "gold"}})),
        v2("new@example.com", json!({"firstName": "New"})),
        {"identifiers": {"phone": "12345"}},
    ]);
    let r = post(
        &sim,
        "/v2/bulk/user/attributes",
        DEFAULT_KEY,
        json!({ "users": users }),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert!(r.body["message"].is_string());
    assert_eq!(r.headers["x-ratelimit-limit"], "100");
    let id = r.body["batchJobId"].as_str().unwrap().to_owned();

    let job = get(&sim, &format!("/v2/bulk/job/{id}"), DEFAULT_KEY).await;
    assert_eq!(job.status, StatusCode::OK);
    assert_eq!(job.body["bulkJobId"], json!(id));
    assert_eq!(job.body["status"], "COMPLETED");
    assert_eq!(job.body["totalRecords"], 3);
    let url = job.body["url"].as_str().unwrap();
    assert!(url.starts_with(&sim.base_url()), "{url}");
    assert!(url.ends_with(".jsonl"));

    let text = client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["request"], users[0]);
    let statuses: Vec<_> = lines
        .iter()
        .map(|l| l["response"]["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!(202), json!(202), json!(400)]);
    assert!(lines[2]["response"]["message"]
        .as_str()
        .unwrap()
        .contains("E.164"));

    let ann = sim.find_contact("ann@example.com").unwrap();
    assert_eq!(ann.standard("firstName"), Some(&json!("Ann")));
    assert_eq!(ann.custom_value("tier"), Some(&json!("gold")));
    assert_eq!(
        sim.find_contact("new@example.com").unwrap().origin,
        ContactOrigin::Bulk
    );
    let jobs = sim.bulk_jobs();
    assert_eq!((jobs[0].succeeded, jobs[0].rejected), (2, 1));

    // 0 and 257 users are refused; an unknown job is 404.
    assert_spring(
        &post(
            &sim,
            "/v2/bulk/user/attributes",
            DEFAULT_KEY,
            json!({"users": []}),
        )
        .await,
        400,
    );
    let many: Vec<Value> = (0..257)
        .map(|i| v2(&format!("u{i}@example.com"), json!({})))
        .collect();
    assert_spring(
        &post(
            &sim,
            "/v2/bulk/user/attributes",
            DEFAULT_KEY,
            json!({ "users": many }),
        )
        .await,
        400,
    );
    assert_eq!(
        get(&sim, "/v2/bulk/job/nope", DEFAULT_KEY).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_delayed_bulk_job_goes_through_pending_states() {
    let sim = start(SimConfig {
        bulk_processing_delay_ms: 600,
        ..SimConfig::default()
    })
    .await;
    let users: Vec<Value> = (0..256)
        .map(|i| v2(&format!("u{i}@example.com"), json!({"custom": {"n": i}})))
        .collect();
    let r = post(
        &sim,
        "/v2/bulk/user/attributes",
        DEFAULT_KEY,
        json!({ "users": users }),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let id = r.body["batchJobId"].as_str().unwrap().to_owned();
    let first = get(&sim, &format!("/v2/bulk/job/{id}"), DEFAULT_KEY).await;
    let status = first.body["status"].as_str().unwrap().to_owned();
    assert!(
        ["PENDING", "IN_PROGRESS", "COMPLETED"].contains(&status.as_str()),
        "{status}"
    );
    if status != "COMPLETED" {
        assert!(first.body["url"].is_null());
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let job = get(&sim, &format!("/v2/bulk/job/{id}"), DEFAULT_KEY).await;
        if job.body["status"] == "COMPLETED" {
            assert!(job.body["url"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "job never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sim.contact_count(), 256);
}

#[tokio::test]
async fn a_failed_bulk_job_applies_nothing() {
    let sim = start(SimConfig {
        faults: Faults {
            bulk_job_failure_rate: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let r = post(
        &sim,
        "/v2/bulk/user/attributes",
        DEFAULT_KEY,
        json!({"users": [v2("a@example.com", json!({"firstName": "A"}))]}),
    )
    .await;
    let id = r.body["batchJobId"].as_str().unwrap().to_owned();
    let job = get(&sim, &format!("/v2/bulk/job/{id}"), DEFAULT_KEY).await;
    assert_eq!(job.body["status"], "FAILED");
    assert!(job.body["url"].is_null());
    assert_eq!(sim.bulk_jobs()[0].status, BulkJobStatus::Failed);
    assert_eq!(sim.contact_count(), 0);
}

#[tokio::test]
async fn bulk_records_carry_violations_too() {
    let sim = start(SimConfig::default()).await;
    let r = post(
        &sim,
        "/v2/bulk/user/attributes",
        DEFAULT_KEY,
        json!({"users": [
            v2("a@example.com", json!({})),
            {"identifiers": {"email": "b@example.com"}, "subscriptions": []},
        ]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let v = sim.violations();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].kind, ViolationKind::SubscriptionsField);
    assert_eq!(v[0].detail, "users[1].subscriptions");
}

// ---- admin -----------------------------------------------------------------------------------

#[tokio::test]
async fn admin_routes_seed_inspect_and_reset() {
    let sim = seeded(&["ann@example.com"]).await;
    let c = client();
    let base = sim.base_url();
    let r = c
        .post(format!("{base}/_sim/contacts"))
        .json(&json!([{"email": "bob@example.com", "phone": "+14155550100"}, {"phone": "+14155550101"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"created": 2, "total": 3}));
    let bad = c
        .post(format!("{base}/_sim/contacts"))
        .json(&json!([{"phone": "555"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    post(
        &sim,
        "/v2/user/attributes",
        DEFAULT_KEY,
        v2("bob@example.com", json!({"firstName": "Bob"})),
    )
    .await;
    let contacts: Value = c
        .get(format!("{base}/_sim/contacts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(contacts[1]["standard"]["firstName"], "Bob");
    assert_eq!(contacts[1]["phone"], "+14155550100");

    let requests: Value = c
        .get(format!("{base}/_sim/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requests[0]["method"], "POST");
    assert_eq!(requests[0]["path"], "/v2/user/attributes");
    assert_eq!(requests[0]["status"], 202);
    assert_eq!(requests[0]["key_id"], "key-1");
    assert_eq!(requests[0]["body"]["attributes"]["firstName"], "Bob");

    let counters: Value = c
        .get(format!("{base}/_sim/counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        counters["by_endpoint"]["POST /v2/user/attributes"]["202"],
        1
    );

    let r = c.post(format!("{base}/_sim/reset")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(sim.contact_count(), 1, "back to the configured seed");
    assert!(sim.requests().is_empty());
    assert_eq!(sim.counters().total, 0);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let sim = start(SimConfig::default()).await;
    let base = sim.base_url();
    assert_eq!(
        get(&sim, "/v1/me", DEFAULT_KEY).await.status,
        StatusCode::OK
    );
    sim.shutdown().await;
    let err = client()
        .get(format!("{base}/v1/me"))
        .bearer_auth(DEFAULT_KEY)
        .send()
        .await;
    assert!(err.is_err());
}
