use super::*;
use crate::mapping::NormalizeOptions;
use proptest::prelude::*;

fn opts() -> NormalizeOptions {
    NormalizeOptions {
        default_phone_region: Some(phonenumber::country::Id::US),
        date_order: DateOrder::Iso,
        today: NaiveDate::from_ymd_opt(2026, 11, 29),
    }
}

fn std_ok(field: StandardField, raw: &str) -> String {
    match standard(field, &Value::Text(raw.into()), &opts()) {
        Ok(Some(c)) => c.to_text(),
        other => panic!("{field} {raw:?}: {other:?}"),
    }
}

fn std_err(field: StandardField, raw: &str) -> String {
    match standard(field, &Value::Text(raw.into()), &opts()) {
        Err(e) => e.0,
        other => panic!("{field} {raw:?} should fail: {other:?}"),
    }
}

#[test]
fn emails() {
    assert_eq!(
        email("  Ann.Lee@Example.COM ").unwrap(),
        "ann.lee@example.com"
    );
    for (bad, why) in [
        ("ann", "exactly one @"),
        ("a@b@c.com", "exactly one @"),
        ("@example.com", "nothing before"),
        ("ann@", "no domain"),
        ("ann lee@example.com", "spaces"),
        ("ann@localhost", "not a domain name"),
        ("ann@exa..com", "not a domain name"),
    ] {
        let e = email(bad).unwrap_err().0;
        assert!(e.contains(why), "{bad}: {e}");
    }
    let long = format!("{}@example.com", "a".repeat(90));
    assert!(email(&long).unwrap_err().0.contains("at most 100"));
}

#[test]
fn phones() {
    let o = opts();
    assert_eq!(phone("+1 (415) 555-0100", &o).unwrap(), "+14155550100");
    assert!(phone("+1 (415) 555-01", &o)
        .unwrap_err()
        .0
        .contains("valid"));
    assert_eq!(phone("+1 212-555-0123", &o).unwrap(), "+12125550123");
    assert_eq!(phone("(212) 555.0123", &o).unwrap(), "+12125550123");
    assert_eq!(phone("+44 20 7183 8750", &o).unwrap(), "+442071838750");
    assert_eq!(phone("0044 20 7183 8750", &o).unwrap(), "+442071838750");
    assert!(phone("12", &o).is_err());
    let no_region = NormalizeOptions::default();
    let e = phone("212 555 0123", &no_region).unwrap_err().0;
    assert!(e.contains("default_phone_region"), "{e}");
    // Never a silent +1: an international number is read as such without a region.
    assert_eq!(
        phone("+33 1 42 68 53 00", &no_region).unwrap(),
        "+33142685300"
    );
}

#[test]
fn standard_fields() {
    use StandardField as F;
    assert_eq!(std_ok(F::FirstName, "  Ann   Marie "), "Ann Marie");
    assert!(std_err(F::City, &"x".repeat(256)).contains("at most 255"));
    assert_eq!(std_ok(F::Country, "usa"), "US");
    assert_eq!(std_ok(F::Country, "gb"), "GB");
    assert_eq!(std_ok(F::Country, "France"), "FR");
    assert!(std_err(F::Country, "Atlantis").contains("ISO 3166-1"));
    assert_eq!(std_ok(F::Region, "us-ny"), "US-NY");
    assert_eq!(std_ok(F::Region, "AU-NSW"), "AU-NSW");
    assert!(std_err(F::Region, "XX-NY").contains("ISO 3166-2"));
    assert!(std_err(F::Region, "NY").contains("ISO 3166-2"));
    assert_eq!(std_ok(F::Latitude, " 40.730610 "), "40.730610");
    assert!(std_err(F::Latitude, "123").contains("between -90 and 90"));
    assert!(std_err(F::Longitude, "east").contains("not a decimal number"));
    assert_eq!(std_ok(F::Longitude, "-179.5"), "-179.5");
    assert_eq!(std_ok(F::ZipCode, "02134"), "02134");
    assert_eq!(std_ok(F::TimeZone, "america/new_york"), "America/New_York");
    assert!(std_err(F::TimeZone, "Mars/Olympus").contains("IANA"));
    assert_eq!(std_ok(F::Language, "EN_us"), "en-US");
    assert_eq!(std_ok(F::Language, "zh-hant-tw"), "zh-Hant-TW");
    assert!(std_err(F::Language, "xx").contains("ISO 639"));
    assert_eq!(
        std_ok(F::Website, "example.com/shop"),
        "https://example.com/shop"
    );
    assert_eq!(
        std_ok(F::Website, "HTTP://example.com"),
        "http://example.com"
    );
    assert!(std_err(F::Website, "ftp://example.com").contains("http"));
    assert!(std_err(F::Website, "not a url").contains("not a URL"));
    assert_eq!(std_ok(F::Age, "34"), "34");
    assert_eq!(std_ok(F::Age, "34.0"), "34");
    assert!(std_err(F::Age, "-1").contains("negative"));
    assert!(std_err(F::Age, "3.5").contains("whole"));
    assert!(std_err(F::Age, "151").contains("150"));
    assert_eq!(std_ok(F::DateOfBirth, "1990/11/08"), "1990-11-08");
    assert_eq!(std_ok(F::DateOfBirth, "1990-11-08T10:00:00Z"), "1990-11-08");
    assert!(std_err(F::DateOfBirth, "11/08/1990").contains("ambiguous"));
    assert!(std_err(F::DateOfBirth, "1990-02-30").contains("not a real calendar date"));
    assert!(std_err(F::DateOfBirth, "2030-01-01").contains("future"));
    assert_eq!(
        standard(F::City, &Value::Text("   ".into()), &opts()),
        Ok(None)
    );
    assert_eq!(
        standard(F::ZipCode, &Value::Int(2134), &opts())
            .unwrap()
            .unwrap()
            .to_text(),
        "2134"
    );
    assert_eq!(
        standard(F::Age, &Value::Int(40), &opts()).unwrap(),
        Some(Canonical::Int(40))
    );
}

#[test]
fn dates_with_an_order() {
    let mdy = date(&Value::Text("03/04/1990".into()), DateOrder::Mdy).unwrap();
    let dmy = date(&Value::Text("03/04/1990".into()), DateOrder::Dmy).unwrap();
    assert_eq!(mdy.to_string(), "1990-03-04");
    assert_eq!(dmy.to_string(), "1990-04-03");
    assert!(date(&Value::Text("13/13/1990".into()), DateOrder::Mdy)
        .unwrap_err()
        .0
        .contains("real calendar date"));
}

#[test]
fn custom_values() {
    let o = opts();
    let c = |v: Value, t: Option<CustomType>| custom(&v, t, &o);
    assert_eq!(
        c(Value::Text(" Gold ".into()), None).unwrap(),
        Some(Canonical::Text("Gold".into()))
    );
    assert_eq!(
        c(Value::Text("412.50".into()), Some(CustomType::Number))
            .unwrap()
            .unwrap()
            .to_text(),
        "412.5"
    );
    assert_eq!(
        c(Value::Text("24".into()), Some(CustomType::Number)).unwrap(),
        Some(Canonical::Int(24))
    );
    assert_eq!(
        c(Value::Number("24.0".into()), None).unwrap(),
        Some(Canonical::Int(24))
    );
    assert_eq!(
        c(Value::Text("Yes".into()), Some(CustomType::Bool)).unwrap(),
        Some(Canonical::Bool(true))
    );
    assert!(c(Value::Text("maybe".into()), Some(CustomType::Bool)).is_err());
    assert!(c(Value::Text("12x".into()), Some(CustomType::Number))
        .unwrap_err()
        .0
        .contains("not a number"));
    assert_eq!(
        c(
            Value::Text("2024-05-01T14:00:00+02:00".into()),
            Some(CustomType::Datetime)
        )
        .unwrap()
        .unwrap()
        .to_text(),
        "2024-05-01T12:00:00Z"
    );
    assert_eq!(
        c(Value::Text("2024/05/01".into()), Some(CustomType::Date))
            .unwrap()
            .unwrap()
            .to_text(),
        "2024-05-01"
    );
    let arr = Value::Unsupported {
        kind: "array",
        text: "[1,2]".into(),
    };
    assert!(c(arr, None)
        .unwrap_err()
        .0
        .contains("array values are not accepted"));
    assert_eq!(
        c(Value::Text("".into()), Some(CustomType::Number)).unwrap(),
        None
    );
}

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        "[ -~]{0,24}".prop_map(Value::Text),
        "[+-]?[0-9]{0,6}(\\.[0-9]{0,4})?".prop_map(Value::Number),
        "\\s*[A-Za-z0-9 .@+()/_-]{0,30}\\s*".prop_map(Value::Text),
        "\\s*[a-z]{1,8}@[a-z]{1,8}\\.(com|org|io)\\s*".prop_map(Value::Text),
        "\\+?[0-9 ()-]{6,16}".prop_map(Value::Text),
        "(19|20)[0-9]{2}[-/][01][0-9][-/][0-3][0-9]".prop_map(Value::Text),
    ]
}

fn any_field() -> impl Strategy<Value = StandardField> {
    (0..StandardField::ALL.len()).prop_map(|i| StandardField::ALL[i])
}

fn reparse(c: &Canonical) -> Value {
    match c {
        Canonical::Bool(b) => Value::Bool(*b),
        Canonical::Int(i) => Value::Int(*i),
        Canonical::Number(n) => Value::Number(n.as_str().to_owned()),
        Canonical::Text(t) => Value::Text(t.clone()),
    }
}

proptest! {
    /// Normalizing a canonical value again gives the same value: cosmetic re-runs never send.
    #[test]
    fn standard_normalization_is_idempotent(field in any_field(), v in any_value()) {
        let o = opts();
        if let Ok(Some(c)) = standard(field, &v, &o) {
            let again = standard(field, &reparse(&c), &o);
            prop_assert_eq!(again, Ok(Some(c)));
        }
    }

    #[test]
    fn custom_normalization_is_idempotent(v in any_value(), t in prop_oneof![
        Just(None), Just(Some(CustomType::String)), Just(Some(CustomType::Number)),
        Just(Some(CustomType::Bool)), Just(Some(CustomType::Date)), Just(Some(CustomType::Datetime))]) {
        let o = opts();
        if let Ok(Some(c)) = custom(&v, t, &o) {
            prop_assert_eq!(custom(&reparse(&c), t, &o), Ok(Some(c)));
        }
    }

    #[test]
    fn email_and_phone_identifiers_are_idempotent(v in any_value()) {
        let o = opts();
        for kind in [IdentifierKind::Email, IdentifierKind::Phone] {
            if let Ok(Some(k)) = identifier(kind, &v, &o) {
                prop_assert_eq!(identifier(kind, &Value::Text(k.clone()), &o), Ok(Some(k)));
            }
        }
    }

    /// Surrounding whitespace and letter case never change an email's canonical form.
    #[test]
    fn email_ignores_case_and_spaces(local in "[a-z0-9._]{1,10}", domain in "[a-z]{1,10}\\.com", pad in "\\s{0,3}") {
        let plain = format!("{local}@{domain}");
        let messy = format!("{pad}{}{pad}", plain.to_uppercase());
        prop_assert_eq!(email(&plain).ok(), email(&messy).ok());
    }

    #[test]
    fn numbers_canonicalize_to_a_fixed_point(s in "[+-]?0{0,2}[0-9]{1,5}(\\.[0-9]{0,4}0{0,2})?") {
        let n = NumberText::parse(&s).expect("generated numbers parse");
        let again = NumberText::parse(n.as_str()).expect("canonical parses");
        prop_assert_eq!(&n, &again);
        let a: f64 = s.parse().expect("f64");
        let b: f64 = n.as_str().parse().expect("f64");
        prop_assert!((a - b).abs() <= f64::EPSILON * a.abs().max(1.0));
    }
}

proptest! {
    /// The one-pass ASCII email check accepts only what the full check accepts, identically.
    #[test]
    fn fast_email_path_agrees_with_the_full_check(s in "[a-zA-Z0-9.@_+ <:-]{0,30}") {
        let t = s.trim();
        if let Some(fast) = plain_ascii_email(t) {
            prop_assert_eq!(email_slow(t), Ok(fast));
        }
        prop_assert_eq!(email(&s).is_ok(), email_slow(t).is_ok());
    }
}
