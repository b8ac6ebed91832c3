use expect_test::{expect, Expect};
use proptest::prelude::*;
use sync_core::value::NumberText;

use super::*;

fn contact(kind: IdentifierKind, key: &str) -> ContactRef {
    ContactRef {
        kind,
        key: key.to_owned(),
    }
}

fn email(key: &str) -> ContactRef {
    contact(IdentifierKind::Email, key)
}

fn phone(key: &str) -> ContactRef {
    contact(IdentifierKind::Phone, key)
}

fn text(s: &str) -> Option<Canonical> {
    Some(Canonical::Text(s.to_owned()))
}

fn number(s: &str) -> Option<Canonical> {
    Some(Canonical::Number(NumberText::parse(s).unwrap()))
}

fn std_attr(f: StandardField, v: Option<Canonical>) -> (AttributeId, Option<Canonical>) {
    (AttributeId::Standard(f), v)
}

fn custom(name: &str, v: Option<Canonical>) -> (AttributeId, Option<Canonical>) {
    (AttributeId::Custom(name.to_owned()), v)
}

fn check_body(write: &ContactWrite, custom_only_v1: bool, expect: Expect) {
    let r = write_request(write, custom_only_v1).unwrap();
    let body = String::from_utf8(r.body.clone().unwrap()).unwrap();
    expect.assert_eq(&format!("{:?} {}\n{body}", r.method, r.path));
}

#[test]
fn v2_body_with_every_standard_field() {
    use StandardField::*;
    let write = ContactWrite {
        contact: phone("+14155550100"),
        attributes: vec![
            std_attr(Address, text("456 Elm Avenue")),
            std_attr(Age, Some(Canonical::Int(34))),
            std_attr(City, text("Brooklyn")),
            std_attr(Country, text("US")),
            std_attr(DateOfBirth, text("1990-11-08")),
            std_attr(Email, text("jsmith@example.com")),
            std_attr(FirstName, text("John")),
            std_attr(Language, text("en-US")),
            std_attr(LastName, text("Smith")),
            std_attr(Latitude, text("40.730610")),
            std_attr(Longitude, text("-73.935242")),
            std_attr(Organization, text("Acme Sports")),
            std_attr(Region, text("US-NY")),
            std_attr(State, text("NY")),
            std_attr(TimeZone, text("America/New_York")),
            std_attr(Title, text("Mr")),
            std_attr(Website, text("https://johnsmith.com")),
            std_attr(ZipCode, text("01222")),
            custom("Lifetime Value", number("12345678901234567890.123")),
            custom("lucky number", Some(Canonical::Int(6))),
            custom("has pets", Some(Canonical::Bool(true))),
            custom("Loyalty Tier", text("gold")),
            custom("ratio", number("1e-7")),
        ],
    };
    check_body(
        &write,
        false,
        expect![[r#"
            Post /v2/user/attributes
            {"attributes":{"custom":{"Lifetime Value":12345678901234567890.123,"Loyalty Tier":"gold","has pets":true,"lucky number":6,"ratio":0.0000001},"demographic":{"age":34,"dateOfBirth":"1990-11-08","language":"en-US","organization":"Acme Sports","title":"Mr","website":"https://johnsmith.com"},"firstName":"John","lastName":"Smith","location":{"address1":"456 Elm Avenue","city":"Brooklyn","country":"US","latitude":"40.730610","longitude":"-73.935242","region":"US-NY","state":"NY","timezone":"America/New_York","zip":"01222"}},"identifiers":{"email":"jsmith@example.com","phone":"+14155550100"}}"#]],
    );
}

#[test]
fn every_standard_field_lands_at_its_wire_path() {
    for field in StandardField::ALL {
        // The identifier is of the other kind, so `email`/`phone` fields are not the key.
        let who = if field == StandardField::Email {
            phone("+14155550100")
        } else {
            email("ann@example.com")
        };
        let value = if field == StandardField::Age {
            Canonical::Int(41)
        } else {
            Canonical::Text(format!("v-{}", field.name()))
        };
        let write = ContactWrite {
            contact: who.clone(),
            attributes: vec![std_attr(field, Some(value.clone()))],
        };
        let body = user_attributes_body(&write).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let pointer = format!("/{}", standard_path(field).join("/"));
        assert_eq!(
            json.pointer(&pointer),
            Some(&serde_json::to_value(&value).unwrap()),
            "{field}: {json}"
        );
        let id_pointer = format!("/identifiers/{}", who.kind.as_str());
        assert_eq!(
            json.pointer(&id_pointer).and_then(|v| v.as_str()),
            Some(who.key.as_str())
        );
        assert_eq!(leaves(&json).len(), 2, "{field}: {json}");
    }
}

#[test]
fn clear_is_an_empty_string() {
    let write = ContactWrite {
        contact: email("ann@example.com"),
        attributes: vec![std_attr(StandardField::City, None), custom("Tier", None)],
    };
    check_body(
        &write,
        false,
        expect![[r#"
            Post /v2/user/attributes
            {"attributes":{"custom":{"Tier":""},"location":{"city":""}},"identifiers":{"email":"ann@example.com"}}"#]],
    );
    check_body(
        &ContactWrite {
            contact: email("ann@example.com"),
            attributes: vec![custom("Tier", None), custom("LTV", number("10.50"))],
        },
        true,
        expect![[r#"
            Post /v1/attributes/custom
            {"properties":{"LTV":10.5,"Tier":""},"user":{"email":"ann@example.com"}}"#]],
    );
}

#[test]
fn custom_only_goes_to_v1_only_when_configured() {
    let only_custom = ContactWrite {
        contact: phone("+442071838750"),
        attributes: vec![custom("vip", Some(Canonical::Bool(false)))],
    };
    check_body(
        &only_custom,
        true,
        expect![[r#"
            Post /v1/attributes/custom
            {"properties":{"vip":false},"user":{"phone":"+442071838750"}}"#]],
    );
    check_body(
        &only_custom,
        false,
        expect![[r#"
            Post /v2/user/attributes
            {"attributes":{"custom":{"vip":false}},"identifiers":{"phone":"+442071838750"}}"#]],
    );
    let mixed = ContactWrite {
        contact: phone("+442071838750"),
        attributes: vec![
            custom("vip", Some(Canonical::Bool(false))),
            std_attr(StandardField::FirstName, text("Ann")),
        ],
    };
    assert_eq!(
        write_request(&mixed, true).unwrap().path,
        PATH_USER_ATTRIBUTES
    );
}

#[test]
fn identifier_only_write_omits_attributes() {
    let write = ContactWrite {
        contact: phone("+14155550100"),
        attributes: vec![std_attr(StandardField::Email, text("new@example.com"))],
    };
    check_body(
        &write,
        false,
        expect![[r#"
            Post /v2/user/attributes
            {"identifiers":{"email":"new@example.com","phone":"+14155550100"}}"#]],
    );
}

#[test]
fn identifiers_are_never_cleared_or_rewritten() {
    let clear = ContactWrite {
        contact: phone("+14155550100"),
        attributes: vec![std_attr(StandardField::Email, None)],
    };
    expect![[r#"cannot clear standard field `email`: Attentive cannot remove a contact's email through attribute updates; use on_null = "omit" for it"#]]
        .assert_eq(&write_request(&clear, false).unwrap_err().to_string());
    let rewrite = ContactWrite {
        contact: phone("+14155550100"),
        attributes: vec![std_attr(StandardField::Phone, text("+14155550199"))],
    };
    assert_eq!(
        write_request(&rewrite, false),
        Err(WireError::IdentifierChange {
            field: StandardField::Phone
        })
    );
    // The same value as the identifier is harmless: sent once.
    let same = ContactWrite {
        contact: phone("+14155550100"),
        attributes: vec![std_attr(StandardField::Phone, text("+14155550100"))],
    };
    let body = user_attributes_body(&same).unwrap();
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        r#"{"identifiers":{"phone":"+14155550100"}}"#
    );
}

#[test]
fn existence_lookup_is_a_get_with_one_parameter() {
    let r = existence_request(&phone("+13115552368"));
    assert_eq!(r.method, Method::Get);
    assert_eq!(r.path, "/v1/subscriptions");
    assert_eq!(r.query, vec![("phone", "+13115552368".to_owned())]);
    assert_eq!(r.body, None);
    let r = existence_request(&email("ann@example.com"));
    assert_eq!(r.query, vec![("email", "ann@example.com".to_owned())]);
}

/// Every leaf of a JSON document with its path.
fn leaves(v: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    fn walk(v: &serde_json::Value, path: String, out: &mut Vec<(String, serde_json::Value)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    walk(v, format!("{path}/{k}"), out);
                }
            }
            other => out.push((path, other.clone())),
        }
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}

fn canonical() -> impl Strategy<Value = Option<Canonical>> {
    prop_oneof![
        Just(None),
        any::<bool>().prop_map(|b| Some(Canonical::Bool(b))),
        any::<i64>().prop_map(|i| Some(Canonical::Int(i))),
        "-?[0-9]{1,25}(\\.[0-9]{1,12})?(e-?[0-9]{1,2})?"
            .prop_map(|s| Some(Canonical::Number(NumberText::parse(&s).unwrap()))),
        ".{0,20}".prop_map(|s| Some(Canonical::Text(s))),
    ]
}

fn attribute() -> impl Strategy<Value = AttributeId> {
    prop_oneof![
        (0..19usize).prop_map(|i| AttributeId::Standard(StandardField::ALL[i])),
        prop_oneof![
            Just("subscriptions".to_owned()),
            Just("null".to_owned()),
            "[A-Za-z ._-]{1,12}"
        ]
        .prop_map(AttributeId::Custom),
    ]
}

proptest! {
    #[test]
    fn bodies_never_hold_subscriptions_or_null(
        by_email in any::<bool>(),
        attrs in proptest::collection::btree_map(attribute(), canonical(), 0..12),
        v1 in any::<bool>(),
    ) {
        let contact = if by_email { email("ann@example.com") } else { phone("+14155550100") };
        let write = ContactWrite { contact, attributes: attrs.into_iter().collect() };
        let Ok(request) = write_request(&write, v1) else { return Ok(()) };
        let body = request.body.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let top: Vec<&String> = json.as_object().unwrap().keys().collect();
        for key in &top {
            prop_assert!(["identifiers", "attributes", "properties", "user"].contains(&key.as_str()), "{key}");
        }
        if let Some(attributes) = json.get("attributes").and_then(|a| a.as_object()) {
            prop_assert!(!attributes.contains_key("subscriptions"));
        }
        for (path, leaf) in leaves(&json) {
            prop_assert!(!leaf.is_null(), "null at {path}");
        }
        // Numbers go out digit for digit.
        let raw = String::from_utf8(body).unwrap();
        for (_, v) in &write.attributes {
            if let Some(Canonical::Number(n)) = v {
                prop_assert!(raw.contains(n.as_str()), "{} not in {raw}", n.as_str());
            }
        }
    }
}

#[test]
fn error_messages_are_parsed_leniently() {
    let cases: [(&str, &str); 9] = [
        (
            r#"{"timestamp":"2025-07-22T04:41:12.731+00:00","status":400,"error":"Bad Request","message":"at least one other field must be set","path":"/identity-resolution/user-identifiers"}"#,
            "at least one other field must be set",
        ),
        (
            r#"{"error":{"id":3,"message":"Invalid phone number"}}"#,
            "Invalid phone number",
        ),
        (r#"{"error":"Bad Request"}"#, "Bad Request"),
        (
            r#"{"status":400,"error":"Bad Request","message":""}"#,
            "Bad Request",
        ),
        (r#"{"errors":[{"message":"enum value"}]}"#, "enum value"),
        ("Subscriptions not found\n", "Subscriptions not found"),
        ("", "(empty response body)"),
        (r#"{"unrelated":1}"#, r#"{"unrelated":1}"#),
        (
            "<html><body>Bad gateway</body></html>",
            "<html><body>Bad gateway</body></html>",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(error_message(body.as_bytes()), want, "{body}");
    }
    let long = "é".repeat(1000);
    let m = error_message(long.as_bytes());
    assert_eq!(m.chars().count(), MAX_MESSAGE_CHARS);
    assert!(m.ends_with('…'));
    assert_eq!(error_message(&[0xff, b'o', b'k']), "\u{fffd}ok");
}

#[test]
fn truncate_keeps_short_text() {
    assert_eq!(truncate("abc", 3), "abc");
    assert_eq!(truncate("abcd", 3), "ab…");
    assert_eq!(truncate("", 3), "");
}

#[test]
fn me_is_lenient() {
    let me = Me::parse(
        br#"{"applicationName":"Pillow Api","attentiveDomainName":"hudsonivy.attn.tv","companyName":"Hudson & Ivy","contactEmail":"name@company.com","companyId":"MDc6Q29tcGFueTI","extra":1}"#,
    );
    assert_eq!(me.application_name.as_deref(), Some("Pillow Api"));
    assert_eq!(me.company_name.as_deref(), Some("Hudson & Ivy"));
    assert_eq!(
        me.attentive_domain_name.as_deref(),
        Some("hudsonivy.attn.tv")
    );
    assert_eq!(me.company_id.as_deref(), Some("MDc6Q29tcGFueTI"));
    assert_eq!(me.contact_email.as_deref(), Some("name@company.com"));
    assert_eq!(Me::parse(br#"{"companyId":42}"#), Me::default());
    assert_eq!(Me::parse(b"not json"), Me::default());
}

#[test]
fn headers_are_parsed() {
    assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
    assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    assert_eq!(parse_retry_after("-1"), None);
    assert_eq!(parse_rate_header("150"), Some(150));
    assert_eq!(parse_rate_header("149.0"), Some(149));
    assert_eq!(parse_rate_header("x"), None);
}

#[test]
fn forbidden_names_the_permission() {
    assert!(permission_for(PATH_SUBSCRIPTIONS).contains("Subscribers"));
    assert!(permission_for(PATH_CUSTOM_ATTRIBUTES).contains("Custom Attributes"));
    assert!(permission_for(PATH_USER_ATTRIBUTES).contains("Custom Attributes"));
}

#[test]
fn a_bulk_record_is_the_realtime_body_of_the_same_write() {
    let writes = vec![
        ContactWrite {
            contact: email("ann@example.com"),
            attributes: vec![
                custom("tier", text("gold")),
                std_attr(StandardField::FirstName, text("Ann")),
            ],
        },
        ContactWrite {
            contact: email("bob@example.com"),
            attributes: vec![std_attr(StandardField::Email, None)],
        },
        ContactWrite {
            contact: phone("+14155550100"),
            attributes: vec![custom("points", number("12.50"))],
        },
    ];
    let (body, refused) = bulk_body(&writes);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let users = body["users"].as_array().unwrap();
    assert_eq!(
        users.len(),
        2,
        "the write that clears its identifier is left out"
    );
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, 1);
    for (user, write) in users.iter().zip([&writes[0], &writes[2]]) {
        let single: serde_json::Value =
            serde_json::from_slice(&user_attributes_body(write).unwrap()).unwrap();
        assert_eq!(user, &single);
    }
    expect![[r#"{"users":[{"attributes":{"custom":{"tier":"gold"},"firstName":"Ann"},"identifiers":{"email":"ann@example.com"}},{"attributes":{"custom":{"points":12.5}},"identifiers":{"phone":"+14155550100"}}]}"#]]
    .assert_eq(&String::from_utf8(bulk_body(&writes).0).unwrap());
}

#[test]
fn bulk_job_ids_and_states_are_read_leniently() {
    use sync_core::ports::BulkJobState;
    assert_eq!(
        bulk_job_id(br#"{"message":"ok","batchJobId":"6f1c"}"#).as_deref(),
        Some("6f1c")
    );
    assert_eq!(
        bulk_job_id(br#"{"bulkJobId":" 42 "}"#).as_deref(),
        Some("42")
    );
    assert_eq!(bulk_job_id(br#"{"id":7}"#).as_deref(), Some("7"));
    assert_eq!(bulk_job_id(br#"{"message":"ok"}"#), None);
    assert_eq!(bulk_job_id(b"not json"), None);

    let state = |b: &str| bulk_job_state(b.as_bytes());
    assert_eq!(
        state(r#"{"status":"COMPLETED","url":"https://x/r.jsonl"}"#),
        BulkJobState::Completed {
            status: "COMPLETED".into(),
            result_url: Some("https://x/r.jsonl".into())
        }
    );
    assert_eq!(
        state(r#"{"status":"completed","resultUrl":"https://x/r.jsonl","url":null}"#),
        BulkJobState::Completed {
            status: "completed".into(),
            result_url: Some("https://x/r.jsonl".into())
        }
    );
    assert_eq!(
        state(r#"{"status":"COMPLETED"}"#),
        BulkJobState::Completed {
            status: "COMPLETED".into(),
            result_url: None
        }
    );
    for s in ["FAILED", "CANCELLED", "canceled"] {
        assert!(matches!(
            state(&format!(r#"{{"status":"{s}"}}"#)),
            BulkJobState::Failed { .. }
        ));
    }
    for s in ["PENDING", "IN_PROGRESS", "NEEDS_REVIEW", "SOMETHING_NEW"] {
        assert_eq!(
            state(&format!(r#"{{"status":"{s}","url":"https://x"}}"#)),
            BulkJobState::Pending { status: s.into() },
            "{s} keeps the job pending"
        );
    }
    assert!(matches!(state("{}"), BulkJobState::Pending { .. }));
    assert!(matches!(state("garbage"), BulkJobState::Pending { .. }));
}

#[test]
fn bulk_result_lines_acknowledge_only_clear_successes() {
    use sync_core::ports::BulkRecordOutcome as O;
    let line = |s: &str| bulk_result_line(s);
    let ok = line(
        r#"{"request":{"identifiers":{"email":"Ann@Example.com"},"attributes":{}},"response":{"status":202,"message":"Accepted"}}"#,
    );
    assert_eq!(ok.outcome, O::Acknowledged);
    assert_eq!(ok.contacts, vec![email("ann@example.com")]);
    let both = line(
        r#"{"request":{"user":{"phone":"+14155550100","email":"b@x.io"}},"response":{"status":"200"}}"#,
    );
    assert_eq!(both.outcome, O::Acknowledged);
    assert_eq!(both.contacts, vec![email("b@x.io"), phone("+14155550100")]);
    assert_eq!(
        line(r#"{"request":{"email":"c@x.io"},"response":{"status":400,"message":"Invalid value for attribute 'age'"}}"#).outcome,
        O::Rejected { message: "Invalid value for attribute 'age'".into() }
    );
    assert!(matches!(
        line(r#"{"request":{"email":"c@x.io"},"response":{"status":404,"message":"User not found"}}"#).outcome,
        O::Rejected { message } if message.starts_with("HTTP 404")
    ));
    for bad in [
        r#"{"request":{"email":"c@x.io"},"response":{"status":500,"message":"Internal error"}}"#,
        r#"{"request":{"email":"c@x.io"},"response":{"message":"done"}}"#,
        r#"{"request":{"email":"c@x.io"},"response":{"status":"SUCCESS"}}"#,
        r#"{"request":{"email":"c@x.io"},"resp"#,
        "",
    ] {
        assert!(matches!(line(bad).outcome, O::Failed { .. }), "{bad}");
    }
    assert!(line(r#"{"request":{"email":"c@x.io"},"resp"#)
        .contacts
        .is_empty());
}

proptest! {
    #[test]
    fn result_lines_never_panic(s in "\\PC{0,200}") {
        let _ = bulk_result_line(&s);
        let _ = bulk_job_state(s.as_bytes());
        let _ = bulk_job_id(s.as_bytes());
    }
}

#[test]
fn every_standard_field_has_its_own_path() {
    let mut paths: Vec<_> = StandardField::ALL
        .iter()
        .map(|f| standard_path(*f))
        .collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), 19);
}
