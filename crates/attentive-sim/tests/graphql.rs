//! `POST /v1/graphql` lookups, profiles without subscriptions and the company switch, through
//! a real HTTP client on 127.0.0.1.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use attentive_sim::{
    CompanyInfo, Permission, RunningSim, SeedContact, SimConfig, SimKey, ViolationKind, DEFAULT_KEY,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

const PATH: [&str; 3] = ["viewer", "installedApplication", "installerCompany"];

mod common;
use common::{client, start};

/// ann (email + phone), phone-only +12125550111, email-only bob.
async fn three_contacts() -> RunningSim {
    start(SimConfig {
        contacts: vec![
            SeedContact {
                email: Some("Ann@Example.com".into()),
                phone: Some("+12125550100".into()),
                ..SeedContact::default()
            },
            SeedContact::phone("+12125550111"),
            SeedContact::email("bob@example.com"),
        ],
        ..SimConfig::default()
    })
    .await
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn gql_as(sim: &RunningSim, key: &str, body: Value) -> (StatusCode, Value) {
    send(
        client()
            .post(format!("{}/v1/graphql", sim.base_url()))
            .bearer_auth(key)
            .json(&body),
    )
    .await
}

/// Sends a query with variables; asserts HTTP 200 (GraphQL answers errors in the body).
async fn gql(sim: &RunningSim, query: &str, variables: Value) -> Value {
    let (status, body) = gql_as(
        sim,
        DEFAULT_KEY,
        json!({"query": query, "variables": variables}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn company(body: &Value) -> &Value {
    &body["data"]["viewer"]["installedApplication"]["installerCompany"]
}

fn lookup(selections: &str) -> String {
    format!("{{ viewer {{ installedApplication {{ installerCompany {{ {selections} }} }} }} }}")
}

#[tokio::test]
async fn aliases_with_variables_and_inline_literals_find_users_or_null() {
    let sim = three_contacts().await;
    let query = "query Lookup($e0: String, $p1: String, $e2: String) { viewer { \
                 installedApplication { installerCompany { c0: user(email: $e0) { id } \
                 c1: user(phone: $p1) { id } c2: user(email: $e2) { id } \
                 c3: user(email: \"BOB@example.COM\") { id } \
                 c4: user(phone: \"+12125550111\") { id } } } } }";
    let body = gql(
        &sim,
        query,
        json!({"e0": "ann@example.com", "p1": "+12125550199", "e2": "nobody@example.com"}),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    let c = company(&body);
    assert!(c["c0"]["id"].is_string(), "{body}");
    assert_eq!(c["c1"], Value::Null, "unknown phone is null: {body}");
    assert_eq!(c["c2"], Value::Null, "unknown email is null: {body}");
    assert!(c["c3"]["id"].is_string(), "case-insensitive email: {body}");
    assert!(c["c4"]["id"].is_string(), "{body}");
    // Exactly the selected keys.
    let mut keys: Vec<&String> = c.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["c0", "c1", "c2", "c3", "c4"]);

    // A phone that is not E.164, or both/neither argument: that alias is null, with an error
    // at its path; the others are answered.
    let body = gql(
        &sim,
        &lookup(
            "bad: user(phone: \"2125550100\") { id } both: user(email: \"ann@example.com\", \
             phone: \"+12125550100\") { id } none: user { id } \
             ok: user(email: \"ann@example.com\") { id }",
        ),
        json!({}),
    )
    .await;
    let c = company(&body);
    assert!(c["ok"]["id"].is_string(), "{body}");
    for alias in ["bad", "both", "none"] {
        assert_eq!(c[alias], Value::Null, "{body}");
        assert!(
            body["errors"].as_array().unwrap().iter().any(|e| e["path"]
                == json!(["viewer", "installedApplication", "installerCompany", alias])
                && e["extensions"]["code"] == "BAD_USER_INPUT"),
            "{alias}: {body}"
        );
    }
    assert_eq!(
        sim.contact_count(),
        3,
        "a lookup must never create anything"
    );
}

#[tokio::test]
async fn ids_are_stable_and_shared_by_the_email_and_phone_of_one_contact() {
    let sim = three_contacts().await;
    let query = lookup(
        "a: user(email: \"ann@example.com\") { id } b: user(phone: \"+12125550100\") { id } \
         c: user(phone: \"+12125550111\") { id } d: user(email: \"bob@example.com\") { id }",
    );
    let first = gql(&sim, &query, json!({})).await;
    let c = company(&first);
    assert_eq!(c["a"]["id"], c["b"]["id"], "same contact, same id: {first}");
    assert_ne!(c["a"]["id"], c["c"]["id"], "{first}");
    assert_ne!(c["c"]["id"], c["d"]["id"], "{first}");
    let ann = sim.find_contact("ann@example.com").unwrap();
    assert_eq!(c["a"]["id"], json!(ann.graphql_id()));
    assert_eq!(ann.graphql_id(), "VXNlcjox", "base64 of User:1");
    // The same on the next query, and after other writes.
    let write = send(
        client()
            .post(format!("{}/v2/user/attributes", sim.base_url()))
            .bearer_auth(DEFAULT_KEY)
            .json(&json!({"identifiers": {"email": "new@example.com"}, "attributes": {"firstName": "N"}})),
    )
    .await;
    assert_eq!(write.0, StatusCode::ACCEPTED, "{}", write.1);
    let again = gql(&sim, &query, json!({})).await;
    assert_eq!(company(&again), company(&first));
}

#[tokio::test]
async fn a_missing_non_null_field_nulls_its_alias_with_an_error_and_path() {
    let sim = three_contacts().await;
    let query = lookup(
        "p: user(phone: \"+12125550111\") { id email } \
         e: user(email: \"bob@example.com\") { id subscribedPhone } \
         a: user(email: \"ann@example.com\") { id email subscribedPhone }",
    );
    let body = gql(&sim, &query, json!({})).await;
    let c = company(&body);
    assert_eq!(c["p"], Value::Null, "{body}");
    assert_eq!(c["e"], Value::Null, "{body}");
    assert_eq!(c["a"]["email"], "Ann@Example.com", "{body}");
    assert_eq!(c["a"]["subscribedPhone"], "+12125550100", "{body}");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{body}");
    let paths: Vec<&Value> = errors.iter().map(|e| &e["path"]).collect();
    let path = |alias: &str, field: &str| {
        let mut p: Vec<Value> = PATH.iter().map(|s| json!(s)).collect();
        p.push(json!(alias));
        p.push(json!(field));
        Value::Array(p)
    };
    assert!(paths.contains(&&path("p", "email")), "{body}");
    assert!(paths.contains(&&path("e", "subscribedPhone")), "{body}");
    assert!(errors.iter().all(|e| e["message"].is_string()), "{body}");

    // firstName / lastName come from the standard attributes a write sets.
    let write = send(
        client()
            .post(format!("{}/v2/user/attributes", sim.base_url()))
            .bearer_auth(DEFAULT_KEY)
            .json(&json!({"identifiers": {"email": "bob@example.com"}, "attributes": {"firstName": "Bob"}})),
    )
    .await;
    assert_eq!(write.0, StatusCode::ACCEPTED);
    let body = gql(
        &sim,
        &lookup("b: user(email: \"bob@example.com\") { firstName lastName }"),
        json!({}),
    )
    .await;
    assert_eq!(company(&body)["b"], Value::Null, "{body}");
    assert_eq!(
        body["errors"][0]["path"],
        json!([
            "viewer",
            "installedApplication",
            "installerCompany",
            "b",
            "lastName"
        ])
    );
    let body = gql(
        &sim,
        &lookup("b: user(email: \"bob@example.com\") { firstName }"),
        json!({}),
    )
    .await;
    assert_eq!(company(&body)["b"]["firstName"], "Bob", "{body}");
    assert!(body.get("errors").is_none(), "{body}");
}

#[tokio::test]
async fn too_many_aliases_is_a_complexity_error_without_data() {
    let sim = start(SimConfig {
        contacts: vec![SeedContact::email("ann@example.com")],
        graphql_max_aliases: 3,
        ..SimConfig::default()
    })
    .await;
    let users = |n: usize| {
        (0..n)
            .map(|i| format!("u{i}: user(email: \"ann@example.com\") {{ id }}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let over = gql(&sim, &lookup(&users(4)), json!({})).await;
    assert_eq!(
        over,
        json!({"errors": [{
            "message": "Query is too complex: 4 fields exceeds the maximum of 3",
            "extensions": {"code": "QUERY_COMPLEXITY"}
        }]})
    );
    let at_limit = gql(&sim, &lookup(&users(3)), json!({})).await;
    assert!(at_limit.get("errors").is_none(), "{at_limit}");
    assert!(company(&at_limit)["u2"]["id"].is_string(), "{at_limit}");

    // The default limit is 100.
    let sim = start(SimConfig::default()).await;
    assert!(gql(&sim, &lookup(&users(100)), json!({}))
        .await
        .get("data")
        .is_some());
    let over = gql(&sim, &lookup(&users(101)), json!({})).await;
    assert_eq!(over["errors"][0]["extensions"]["code"], "QUERY_COMPLEXITY");
    assert!(over.get("data").is_none());
}

#[tokio::test]
async fn malformed_queries_and_unknown_fields_are_errors_without_data() {
    let sim = three_contacts().await;
    for (query, variables, needle) in [
        ("{ viewer { ", json!({}), "Invalid Syntax"),
        (
            "{ viewer { installedApplication { installerCompany { user(email: \"a@b.c\") { id ssn } } } } }",
            json!({}),
            "Field 'ssn' in type 'User' is undefined",
        ),
        ("{ users { id } }", json!({}), "Field 'users' in type 'Query' is undefined"),
        (
            "query($e: String) { viewer { installedApplication { installerCompany { user(mail: $e) { id } } } } }",
            json!({"e": "a@b.c"}),
            "Unknown field argument 'mail'",
        ),
        (
            "{ viewer { installedApplication { installerCompany { user(email: $e) { id } } } } }",
            json!({"e": "a@b.c"}),
            "Undefined variable '$e'",
        ),
        (
            "{ viewer { installedApplication { installerCompany { user(email: 42) { id } } } } }",
            json!({}),
            "is not a valid 'String'",
        ),
        (
            "{ viewer { installedApplication { installerCompany { user(email: \"a@b.c\") } } } }",
            json!({}),
            "Sub selection required",
        ),
    ] {
        let body = gql(&sim, query, variables).await;
        assert!(body.get("data").is_none(), "{query}: {body}");
        let msg = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{query}: {body}");
    }
    // A variable value of the wrong type, and a body that is not a GraphQL request.
    let body = gql(
        &sim,
        &lookup("user(email: $e) { id }").replacen('{', "query($e: String) {", 1),
        json!({"e": 5}),
    )
    .await;
    assert!(body.get("data").is_none(), "{body}");
    let (status, body) = gql_as(&sim, DEFAULT_KEY, json!({"variables": {}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["errors"][0]["message"].is_string(), "{body}");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[tokio::test]
async fn fragments_and_company_fields_resolve() {
    let sim = three_contacts().await;
    let body = gql(
        &sim,
        "query { viewer { installedApplication { name installerCompany { id name \
         ...U } } } } fragment U on Company { a: user(email: \"ann@example.com\") { ... on User { id } __typename } }",
        json!({}),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    let c = company(&body);
    let default = CompanyInfo::default();
    assert_eq!(c["id"], json!(default.company_id));
    assert_eq!(c["name"], json!(default.company_name));
    assert_eq!(c["a"]["__typename"], "User");
    assert!(c["a"]["id"].is_string());
    assert_eq!(
        body["data"]["viewer"]["installedApplication"]["name"],
        json!(default.application_name)
    );
}

#[tokio::test]
async fn a_mutation_is_refused_and_recorded_as_a_violation() {
    let sim = three_contacts().await;
    let body = gql(
        &sim,
        "mutation Set { setCustomAttributes(input: {properties: \"{}\", user: {email: \"ann@example.com\"}}) { __typename } }",
        json!({}),
    )
    .await;
    assert!(body.get("data").is_none(), "{body}");
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("mutation"));
    // Even unparsable, and even from a key that is refused.
    let refused = start(SimConfig {
        keys: vec![SimKey::with("weak", [Permission::Attributes])],
        ..SimConfig::default()
    })
    .await;
    let (status, _) = gql_as(&refused, "weak", json!({"query": "mutation { oops("})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (s, detail) in [
        (&sim, "mutation Set"),
        (&refused, "mutation (unparsable document)"),
    ] {
        let v = s.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, ViolationKind::GraphqlMutation);
        assert_eq!(v[0].endpoint, "POST /v1/graphql");
        assert_eq!(v[0].detail, detail);
    }
    // A query is no violation.
    gql(
        &sim,
        &lookup("user(email: \"ann@example.com\") { id }"),
        json!({}),
    )
    .await;
    assert_eq!(sim.violations().len(), 1);
}

#[tokio::test]
async fn graphql_needs_the_subscriptions_permission() {
    let sim = start(SimConfig {
        keys: vec![
            SimKey::with("attrs", [Permission::Attributes]),
            SimKey::with("subs", [Permission::Subscriptions]),
        ],
        contacts: vec![SeedContact::email("ann@example.com")],
        ..SimConfig::default()
    })
    .await;
    let q = json!({"query": lookup("user(email: \"ann@example.com\") { id }")});
    let (status, body) = gql_as(&sim, "attrs", q.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["message"].as_str().unwrap().contains("subscriptions"));
    let (status, body) = gql_as(&sim, "subs", q.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(company(&body)["user"]["id"].is_string(), "{body}");
    let (status, _) = gql_as(&sim, "nope", q).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Logged and counted like every request.
    let counters = sim.counters();
    assert_eq!(counters.count("POST /v1/graphql", 403), 1);
    assert_eq!(counters.count("POST /v1/graphql", 200), 1);
    assert_eq!(counters.count("POST /v1/graphql", 401), 1);
    assert_eq!(sim.requests().len(), 3);
    assert_eq!(sim.requests()[1].endpoint, "POST /v1/graphql");
}

#[tokio::test]
async fn graphql_can_be_switched_off() {
    let sim = start(SimConfig {
        graphql_enabled: false,
        keys: vec![SimKey::with("attrs", [Permission::Attributes])],
        ..SimConfig::default()
    })
    .await;
    let q = json!({"query": lookup("user(email: \"ann@example.com\") { id }")});
    let (status, _) = gql_as(&sim, "attrs", q).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(sim.counters().count("POST /v1/graphql", 404), 1);
}

#[tokio::test]
async fn graphql_has_its_own_rate_limit_window() {
    let sim = start(SimConfig {
        rate_limit_per_second: 2,
        contacts: vec![SeedContact::email("ann@example.com")],
        ..SimConfig::default()
    })
    .await;
    let q = json!({"query": lookup("user(email: \"ann@example.com\") { id }")});
    // Spend the default class's window first: GraphQL still has its own 2.
    for _ in 0..2 {
        let r = send(
            client()
                .get(format!("{}/v1/me", sim.base_url()))
                .bearer_auth(DEFAULT_KEY),
        )
        .await;
        assert_eq!(r.0, StatusCode::OK);
    }
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(gql_as(&sim, DEFAULT_KEY, q.clone()).await.0.as_u16());
    }
    // Over the budget within the same second (the test runs well under it).
    assert_eq!(statuses, [200, 200, 429]);
}

#[tokio::test]
async fn a_profile_without_subscriptions_is_404_on_rest_but_found_and_updated() {
    let sim = start(SimConfig {
        contacts: vec![
            SeedContact::unsubscribed_email("quiet@example.com"),
            SeedContact::email("loud@example.com"),
        ],
        ..SimConfig::default()
    })
    .await;
    let rest = |email: &str| {
        client()
            .get(format!("{}/v1/subscriptions", sim.base_url()))
            .query(&[("email", email)])
            .bearer_auth(DEFAULT_KEY)
    };
    let (status, body) = send(rest("quiet@example.com")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"message": "Subscriptions not found"}));
    assert_eq!(send(rest("loud@example.com")).await.0, StatusCode::OK);

    let body = gql(
        &sim,
        &lookup("q: user(email: \"quiet@example.com\") { id email }"),
        json!({}),
    )
    .await;
    assert_eq!(company(&body)["q"]["email"], "quiet@example.com", "{body}");

    let write = send(
        client()
            .post(format!("{}/v1/attributes/custom", sim.base_url()))
            .bearer_auth(DEFAULT_KEY)
            .json(&json!({"properties": {"tier": "gold"}, "user": {"email": "quiet@example.com"}})),
    )
    .await;
    assert_eq!(write.0, StatusCode::OK, "{}", write.1);
    assert_eq!(sim.contact_count(), 2, "updated, not duplicated");
    let quiet = sim.find_contact("quiet@example.com").unwrap();
    assert_eq!(quiet.custom_value("tier"), Some(&json!("gold")));
    assert!(!quiet.subscribed, "writes never change subscribed");
    assert_eq!(
        send(rest("quiet@example.com")).await.0,
        StatusCode::NOT_FOUND
    );
    // Seeds default to subscribed.
    assert!(sim.find_contact("loud@example.com").unwrap().subscribed);
}

#[tokio::test]
async fn the_company_can_be_switched_at_runtime_and_survives_reset() {
    let sim = start(SimConfig::default()).await;
    let me = || async {
        send(
            client()
                .get(format!("{}/v1/me", sim.base_url()))
                .bearer_auth(DEFAULT_KEY),
        )
        .await
    };
    assert_eq!(
        me().await.1["companyId"],
        json!(CompanyInfo::default().company_id)
    );

    let put = send(
        client()
            .put(format!("{}/_sim/company", sim.base_url()))
            .json(&json!({"companyId": "MDc6Q29tcGFueTI", "companyName": "Hudson & Ivy"})),
    )
    .await;
    assert_eq!(put.0, StatusCode::OK, "{}", put.1);
    let (status, body) = me().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["companyId"], "MDc6Q29tcGFueTI");
    assert_eq!(body["companyName"], "Hudson & Ivy");
    assert_eq!(
        body["applicationName"],
        json!(CompanyInfo::default().application_name)
    );
    // GraphQL's installerCompany follows.
    let g = gql(&sim, &lookup("id name"), json!({})).await;
    assert_eq!(company(&g)["id"], "MDc6Q29tcGFueTI");

    // An unknown field is refused and changes nothing.
    let bad = send(
        client()
            .put(format!("{}/_sim/company", sim.base_url()))
            .json(&json!({"companyID": "x"})),
    )
    .await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST);

    // Reset keeps the current company; the handle switches it too.
    sim.reset().unwrap();
    assert_eq!(me().await.1["companyId"], "MDc6Q29tcGFueTI");
    sim.set_company(CompanyInfo {
        company_id: "other".into(),
        ..CompanyInfo::default()
    });
    assert_eq!(me().await.1["companyId"], "other");
    assert_eq!(sim.company().company_id, "other");
}

#[test]
fn seed_files_may_mark_contacts_unsubscribed() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("c.csv");
    std::fs::write(
        &csv,
        "email,phone,subscribed\na@example.com,,false\nb@example.com,,true\nc@example.com,,\n",
    )
    .unwrap();
    let seeds = SeedContact::load_file(&csv).unwrap();
    let subscribed: Vec<bool> = seeds.iter().map(|s| s.subscribed).collect();
    assert_eq!(subscribed, [false, true, true]);

    std::fs::write(&csv, "email,subscribed\na@example.com,maybe\n").unwrap();
    assert!(SeedContact::load_file(&csv).is_err());

    let json_file = dir.path().join("c.json");
    std::fs::write(
        &json_file,
        r#"[{"email": "a@example.com", "subscribed": false}, {"email": "b@example.com"}]"#,
    )
    .unwrap();
    let seeds = SeedContact::load_file(&json_file).unwrap();
    assert!(!seeds[0].subscribed);
    assert!(seeds[1].subscribed);
}
