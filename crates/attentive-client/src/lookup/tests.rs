use super::*;
use sync_core::mapping::IdentifierKind;

fn contact(kind: IdentifierKind, key: &str) -> ContactRef {
    ContactRef {
        kind,
        key: key.into(),
    }
}

fn answer(status: u16, body: serde_json::Value) -> Response {
    Response {
        status,
        body: body.to_string().into_bytes(),
    }
}

#[test]
fn the_query_has_one_alias_and_variable_per_contact_and_selects_only_the_id() {
    let r = graphql_lookup_request(&[
        contact(IdentifierKind::Email, "ann@example.com"),
        contact(IdentifierKind::Phone, "+12125550100"),
    ]);
    assert_eq!((r.method, r.path), (Method::Post, PATH_GRAPHQL));
    let body: Value = serde_json::from_slice(r.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        body["query"],
        "query Lookup($c0: String, $c1: String) { viewer { installedApplication { \
         installerCompany { c0: user(email: $c0) { id } c1: user(phone: $c1) { id } } } } }"
    );
    assert_eq!(
        body["variables"],
        serde_json::json!({"c0": "ann@example.com", "c1": "+12125550100"})
    );
    let query = body["query"].as_str().unwrap();
    assert!(query.starts_with("query ") && !query.contains("mutation"));
}

#[test]
fn found_null_and_alias_errors_are_told_apart() {
    let r = answer(
        200,
        serde_json::json!({
            "data": {"viewer": {"installedApplication": {"installerCompany": {
                "c0": {"id": "VXNlcjox"}, "c1": null, "c2": null
            }}}},
            "errors": [{"message": "boom", "path": ["viewer", "installedApplication", "installerCompany", "c2", "id"]}]
        }),
    );
    assert_eq!(
        read_lookup_answer(&r, 4),
        BatchAnswer::Aliases(vec![
            AliasAnswer::Found(Lookup {
                existence: Existence::Exists,
                id: Some("VXNlcjox".into())
            }),
            AliasAnswer::Found(Lookup::existence(Existence::NotFound)),
            AliasAnswer::Unknown("boom".into()),
            AliasAnswer::Unknown("missing from the answer".into()),
        ])
    );
}

#[test]
fn a_complexity_error_asks_for_smaller_batches() {
    let r = answer(
        200,
        serde_json::json!({"errors": [{"message": "Query is too complex: 30 fields exceeds the maximum of 20", "extensions": {"code": "QUERY_COMPLEXITY"}}]}),
    );
    assert!(matches!(
        read_lookup_answer(&r, 30),
        BatchAnswer::TooLarge(_)
    ));
}

#[test]
fn request_level_failures_make_the_answer_unusable() {
    for (status, body) in [
        (404, serde_json::json!({"message": "Not Found"})),
        (
            200,
            serde_json::json!({"errors": [{"message": "Field 'user' is not defined"}]}),
        ),
        (200, serde_json::json!({"data": {"viewer": null}})),
        (200, serde_json::json!({"data": {"something": "else"}})),
    ] {
        let got = read_lookup_answer(&answer(status, body.clone()), 2);
        assert!(matches!(got, BatchAnswer::Unusable(_)), "{body}: {got:?}");
    }
    let garbage = Response {
        status: 200,
        body: b"<html>".to_vec(),
    };
    assert!(matches!(
        read_lookup_answer(&garbage, 1),
        BatchAnswer::Unusable(_)
    ));
}

#[test]
fn the_batch_halves_and_never_reaches_zero() {
    let s = GraphqlState::new(25, ExistenceStrategy::Graphql);
    assert_eq!(s.halve(25), 12);
    assert_eq!(s.batch(), 12);
    assert_eq!(s.halve(1), 1);
    assert_eq!(s.batch(), 1);
    assert!(s.on());
    s.give_up("no".into());
    assert!(!s.on());
    assert_eq!(s.reason().as_deref(), Some("no"));
    assert!(!GraphqlState::new(25, ExistenceStrategy::Subscriptions).on());
}
