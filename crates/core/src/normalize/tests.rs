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

// ---- regressions: issue 12, item 6 (cosmetic changes that sent, values that passed) --------

fn custom_number(raw: &str) -> Result<Option<Canonical>, Invalid> {
    custom(&Value::Text(raw.into()), Some(CustomType::Number), &opts())
}

/// `100` → `1e2` was sent as a change: every spelling of one number is one canonical value.
#[test]
fn regression_number_100_to_1e2_is_not_a_change() {
    use crate::fingerprint::value_fingerprint;
    for (spellings, canonical) in [
        (
            &[
                "100", "100.0", "1e2", "1.00E+2", " 100 ", "+100", "0.1e3", "1000e-1",
            ][..],
            Canonical::Int(100),
        ),
        (
            &["3.5", "35e-1", "0.35E1", "3.50", "+3.5"][..],
            Canonical::Number(NumberText::parse("3.5").unwrap()),
        ),
        (&["0", "-0", "0e400", "-0.000e-9"][..], Canonical::Int(0)),
    ] {
        for s in spellings {
            let c = custom_number(s).unwrap().unwrap();
            assert_eq!(c, canonical, "{s:?}");
            assert_eq!(
                value_fingerprint(&c),
                value_fingerprint(&canonical),
                "{s:?}"
            );
            // Typed sources give numbers as Value::Number: the same canonical value.
            let typed = custom(&Value::Number(s.to_string()), None, &opts()).unwrap();
            assert_eq!(typed, Some(canonical.clone()), "{s:?}");
        }
    }
}

/// Values that were canonical before exponents were applied keep their text (and so their
/// fingerprint and every stored snapshot): only exponent spellings moved.
#[test]
fn regression_canonical_numbers_keep_their_form() {
    for (raw, text, tag) in [
        ("100", "100", 'i'),
        ("3.5", "3.5", 'n'),
        ("-0.25", "-0.25", 'n'),
        ("412.50", "412.5", 'n'),
        ("0412.50", "412.5", 'n'),
        ("0.05", "0.05", 'n'),
        (".5", "0.5", 'n'),
        ("5.", "5", 'i'),
        ("-7", "-7", 'i'),
        // Beyond 2^53: integers are kept exactly, never through a float.
        ("9007199254740993", "9007199254740993", 'i'),
        ("-9223372036854775808", "-9223372036854775808", 'i'),
        ("9223372036854775808", "9223372036854775808", 'n'),
        ("12345678901234567890.123", "12345678901234567890.123", 'n'),
        (
            "0.1000000000000000055511151231257827",
            "0.1000000000000000055511151231257827",
            'n',
        ),
    ] {
        let c = custom_number(raw).unwrap().unwrap();
        assert_eq!((c.to_text().as_str(), c.tag()), (text, tag), "{raw:?}");
    }
    // The pinned fingerprint of 412.5 (fingerprint.rs) is reached from its other spellings.
    let n = NumberText::parse("4.125e2").unwrap();
    assert_eq!(
        crate::fingerprint::value_fingerprint(&Canonical::Number(n)),
        0xfd8b_8122_f926_9616
    );
}

/// `1e400` passed `plan` and got a 400 from Attentive: a number no finite f64 holds is
/// rejected before sending, naming the rule.
#[test]
fn regression_number_1e400_is_rejected_as_out_of_range() {
    for s in [
        "1e400",
        "-1e400",
        "2e308",
        "1.8e308",
        &format!("1{}", "0".repeat(309)),
    ] {
        let e = custom_number(s).unwrap_err().0;
        assert!(
            e.contains("out of range") && e.contains("64-bit"),
            "{s}: {e}"
        );
        let e = custom(&Value::Number(s.to_string()), None, &opts())
            .unwrap_err()
            .0;
        assert!(e.contains("out of range"), "{s}: {e}");
    }
    // The largest finite double and a huge exponent's worth of digits are fine or refused
    // without building the number.
    assert!(custom_number("1.7976931348623157e308").is_ok());
    assert!(custom_number("1e999999999999999999999999")
        .unwrap_err()
        .0
        .contains("out of range"));
}

/// `1e-400` became `0.0`: a non-zero number that a double rounds to zero is rejected
/// (Attentive reads numbers as doubles, so it could not arrive as given).
#[test]
fn regression_number_1e_minus_400_is_rejected_as_underflow() {
    for s in [
        "1e-400",
        "-1e-400",
        "2e-324",
        "9e-325",
        "1e-999999999999999999999",
    ] {
        let e = custom_number(s).unwrap_err().0;
        assert!(
            e.contains("too small") && e.contains("underflows to 0"),
            "{s}: {e}"
        );
        let e = custom(&Value::Number(s.to_string()), None, &opts())
            .unwrap_err()
            .0;
        assert!(e.contains("too small"), "{s}: {e}");
    }
    // The smallest doubles (subnormal) are doubles: a typed source's 5e-324 is kept.
    assert_eq!(
        custom_number("5e-324").unwrap().unwrap().to_text(),
        format!("0.{}5", "0".repeat(323))
    );
    assert!(custom_number("3e-324").is_ok());
    assert!(custom_number("2.3e-308").is_ok());
}

/// longitude `180.0000000000000000001` passed (f64 rounding): ranges are compared exactly.
#[test]
fn regression_longitude_just_over_180_is_rejected() {
    use StandardField as F;
    for (field, bad) in [
        (F::Longitude, "180.0000000000000000001"),
        (F::Longitude, "-180.0000000000000000001"),
        (F::Longitude, "180.00000000000000000000000000000000000001"),
        (F::Latitude, "90.000000000000000001"),
        (F::Latitude, "-90.000000000000000001"),
        (F::Longitude, &format!("1{}", "0".repeat(400))),
    ] {
        assert!(
            std_err(field, bad).contains("between"),
            "{field} {bad}: should be out of range"
        );
    }
    // Within range, however many digits: sent as given after trim.
    for (field, ok) in [
        (F::Longitude, "180"),
        (F::Longitude, "-180.000"),
        (F::Longitude, "179.99999999999999999999999"),
        (F::Latitude, " 89.999999999999999999 "),
        (F::Latitude, "+90.0"),
        (F::Latitude, &format!("0.{}1", "0".repeat(400))),
    ] {
        assert_eq!(
            std_ok(field, ok),
            ok.trim().trim_start_matches('+'),
            "{field} {ok}"
        );
    }
}

#[test]
fn regression_date_of_birth_with_hour_25_is_rejected() {
    for bad in [
        "1990-01-01T25:00:00",
        "1990-01-01T25:00:00Z",
        "1990-01-01 24:00",
        "1990-01-01T10:60:00",
        "1990-01-01T10:00:00 trailing",
        "1990-01-01T",
    ] {
        let e = std_err(StandardField::DateOfBirth, bad);
        assert!(e.contains("time part"), "{bad}: {e}");
    }
    assert_eq!(
        std_ok(StandardField::DateOfBirth, "1990-01-01T23:59:59.5-05:00"),
        "1990-01-01"
    );
    assert_eq!(
        std_ok(StandardField::DateOfBirth, "1990/01/01 10:00"),
        "1990-01-01"
    );
}

#[test]
fn regression_date_of_birth_with_offset_plus_25_is_rejected() {
    for bad in [
        "1990-01-01T10:00:00+25:00",
        "1990-01-01T10:00:00-19:00",
        "1990-01-01T10:00:00+05:60",
    ] {
        let e = std_err(StandardField::DateOfBirth, bad);
        assert!(e.contains("time part") && e.contains("18:00"), "{bad}: {e}");
    }
    assert_eq!(
        std_ok(StandardField::DateOfBirth, "1990-01-01T10:00:00+14:00"),
        "1990-01-01"
    );
    // The same rule for custom datetimes.
    let dt = |s: &str| custom(&Value::Text(s.into()), Some(CustomType::Datetime), &opts());
    assert!(dt("2024-05-01T12:00:00+25:00").is_err());
    assert!(dt("2024-05-01T25:00:00Z").is_err());
    assert_eq!(
        dt("2024-05-01T12:00:00-18:00").unwrap().unwrap().to_text(),
        "2024-05-02T06:00:00Z"
    );
}

#[test]
fn regression_date_of_birth_with_a_signed_six_digit_year_is_rejected() {
    for bad in [
        "+001990-01-01",
        "001990-01-01",
        "-1990-01-01",
        "19900-01-01",
        "1990-001-01",
    ] {
        let e = std_err(StandardField::DateOfBirth, bad);
        assert!(e.contains("not in a known form"), "{bad}: {e}");
    }
    let dt = custom(
        &Value::Text("+001990-01-01T00:00:00Z".into()),
        Some(CustomType::Datetime),
        &opts(),
    );
    assert!(dt.is_err(), "{dt:?}");
}

/// `1990-02-29` said "not in a known form": a well-formed date that does not exist says so.
#[test]
fn regression_february_29_of_a_common_year_is_not_a_real_date() {
    for bad in [
        "1990-02-29",
        "1990/02/29",
        "1990-13-01",
        "1990-04-31",
        "1990-02-29T10:00:00Z",
    ] {
        let e = std_err(StandardField::DateOfBirth, bad);
        assert!(e.contains("not a real calendar date"), "{bad}: {e}");
    }
    assert_eq!(
        std_ok(StandardField::DateOfBirth, "1992-02-29"),
        "1992-02-29"
    );
    let d = custom(
        &Value::Text("2023-02-29".into()),
        Some(CustomType::Date),
        &opts(),
    );
    assert!(d.unwrap_err().0.contains("not a real calendar date"));
    let dt = custom(
        &Value::Text("2023-02-29T10:00:00Z".into()),
        Some(CustomType::Datetime),
        &opts(),
    );
    assert!(dt.unwrap_err().0.contains("not a real calendar date"));
}

/// A zero-width space inside an email passed: invisible (Cf) and control (Cc) characters are
/// refused in emails, as identifier and as field.
#[test]
fn regression_zero_width_space_in_email_is_rejected() {
    for c in [
        '\u{200B}',
        '\u{FEFF}',
        '\u{202E}',
        '\u{AD}',
        '\u{2060}',
        '\u{E0041}',
        '\u{1}',
    ] {
        let bad = format!("ann{c}@example.com");
        let e = email(&bad).unwrap_err().0;
        assert!(
            e.contains("invisible or control character")
                && e.contains(&format!("{:04X}", u32::from(c))),
            "{bad:?}: {e}"
        );
        let id = identifier(IdentifierKind::Email, &Value::Text(bad.clone()), &opts());
        assert!(id.is_err(), "{bad:?}");
        let domain = format!("ann@exa{c}mple.com");
        assert!(email(&domain).is_err(), "{domain:?}");
    }
    assert_eq!(email("Zoë@Exämple.com").unwrap(), "zoë@exämple.com");
}

/// NUL bytes in text values were sent: control characters other than tab, LF and CR reject
/// the value, naming the character and the rule.
#[test]
fn regression_nul_byte_in_text_is_rejected() {
    use StandardField as F;
    for c in ['\0', '\u{1}', '\u{1B}', '\u{7F}', '\u{9C}'] {
        let bad = format!("Ann{c}Lee");
        let e = std_err(F::FirstName, &bad);
        assert!(
            e.contains(&format!(
                "control character U+{:04X} at character 4",
                u32::from(c)
            )) && e.contains("other than tab, line feed and carriage return"),
            "{bad:?}: {e}"
        );
        for ty in [None, Some(CustomType::String)] {
            let r = custom(&Value::Text(bad.clone()), ty, &opts());
            assert!(
                r.unwrap_err().0.contains("control character"),
                "{ty:?} {bad:?}"
            );
        }
        for field in [F::City, F::ZipCode, F::Address, F::Website] {
            assert!(std_err(field, &format!("1{c}2")).contains("control character"));
        }
    }
    // Tab, line feed and carriage return are whitespace: collapsed in names, kept in customs.
    assert_eq!(std_ok(F::FirstName, "Ann\tMarie\r\nLee"), "Ann Marie Lee");
    assert_eq!(
        custom(&Value::Text("line 1\nline 2".into()), None, &opts()).unwrap(),
        Some(Canonical::Text("line 1\nline 2".into()))
    );
}

// ---- regressions: issue 12, item 9 (vague messages) ----------------------------------------

/// A 20-digit age said "must be a whole number": it is out of range.
#[test]
fn regression_twenty_digit_age_is_out_of_range() {
    for bad in ["12345678901234567890", "1e400", "151", "1.51e2"] {
        let e = std_err(StandardField::Age, bad);
        assert!(
            e.contains("out of range") && e.contains("150"),
            "{bad}: {e}"
        );
    }
    assert!(std_err(StandardField::Age, "-12345678901234567890").contains("negative"));
    assert!(std_err(StandardField::Age, "3.5").contains("whole"));
    assert_eq!(std_ok(StandardField::Age, "3.4e1"), "34");
}

proptest! {
    /// One number, spelled with the point moved and the exponent compensating, padded with
    /// zeros, signed or not: always one canonical value.
    #[test]
    fn equal_numbers_have_one_canonical_form(
        neg in any::<bool>(),
        digits in "[0-9]{1,25}",
        point in 0usize..25,
        exp in -330i64..330,
        shift in -40i64..40,
        lead in "0{0,3}",
        trail in "0{0,3}",
        upper in any::<bool>(),
    ) {
        let point = point.min(digits.len());
        let sign = if neg { "-" } else { "" };
        let e = if upper { "E" } else { "e" };
        // digits with the point after `point` characters, times 10^exp.
        let a = format!("{sign}{lead}{}.{}{trail}{e}{exp}", &digits[..point], &digits[point..]);
        // The same value with every digit before the point: the exponent drops by the rest.
        let b = format!("{sign}{digits}e{}", exp - (digits.len() - point) as i64);
        // And with the point moved `shift` places, compensated in the exponent.
        let frac_len = digits.len() as i64 - point as i64 + shift;
        let (int, frac) = if frac_len <= 0 {
            (format!("{digits}{}", "0".repeat((-frac_len) as usize)), String::new())
        } else if frac_len as usize >= digits.len() {
            (String::new(), format!("{}{digits}", "0".repeat(frac_len as usize - digits.len())))
        } else {
            let (i, f) = digits.split_at(digits.len() - frac_len as usize);
            (i.to_owned(), f.to_owned())
        };
        let c = format!("{sign}{int}.{frac}e{}", exp + shift);
        let (pa, pb, pc) = (NumberText::parse_checked(&a), NumberText::parse_checked(&b), NumberText::parse_checked(&c));
        prop_assert_eq!(&pa, &pb, "{} vs {}", a, b);
        prop_assert_eq!(&pa, &pc, "{} vs {}", a, c);
        if let Ok(n) = pa {
            // Canonical text is a fixed point, never has an exponent, and is the same double.
            prop_assert_eq!(NumberText::parse(n.as_str()), Some(n.clone()));
            prop_assert!(!n.as_str().contains('e'));
            let x: f64 = a.parse().unwrap();
            let y: f64 = n.as_str().parse().unwrap();
            prop_assert_eq!(x, y);
            prop_assert!(x.is_finite());
            prop_assert_eq!(x == 0.0, digits.bytes().all(|b| b == b'0'));
        } else {
            // Refused exactly when a double cannot hold it: infinite, or non-zero rounded to 0.
            let x: f64 = a.parse().unwrap();
            prop_assert!(x.is_infinite() || (x == 0.0 && digits.bytes().any(|b| b != b'0')));
        }
    }

    /// Latitude/longitude ranges are exact: a value is accepted iff its integer part is below
    /// the limit, or equal to it with only zeros after the point.
    #[test]
    fn coordinate_ranges_are_exact(
        neg in any::<bool>(),
        int in 0u32..200,
        frac in "[0-9]{0,30}",
    ) {
        let raw = format!("{}{int}{}{frac}", if neg { "-" } else { "" }, if frac.is_empty() { "" } else { "." });
        let inside = int < 180 || (int == 180 && frac.bytes().all(|b| b == b'0'));
        let got = coordinate(&raw, 180, "longitude");
        prop_assert_eq!(got.is_ok(), inside, "{} -> {:?}", raw, got);
        if let Ok(t) = got {
            prop_assert_eq!(t, raw);
        }
    }

    /// Text with a control character other than tab/LF/CR is never sent, in any text field.
    #[test]
    fn no_control_character_is_ever_sent(
        pre in "[a-zA-Z ]{0,8}",
        c in prop_oneof![0u32..0x09, 0x0Bu32..0x0D, 0x0Eu32..0x20, 0x7Fu32..0xA0].prop_map(|u| char::from_u32(u).unwrap()),
        post in "[a-zA-Z ]{0,8}",
        field in any_field(),
    ) {
        let v = Value::Text(format!("{pre}{c}{post}"));
        if let Ok(Some(out)) = standard(field, &v, &opts()) {
            prop_assert!(!out.to_text().contains(c), "{} {:?} -> {:?}", field, v, out);
        }
        for ty in [None, Some(CustomType::String)] {
            if let Ok(Some(out)) = custom(&v, ty, &opts()) {
                prop_assert!(!out.to_text().contains(c), "{:?} -> {:?}", v, out);
            }
        }
    }
}

/// Fuzzing finding (`normalize`): a typed date (a `Value::Date` from Parquet, SQLite or
/// PostgreSQL) outside the years 0000-9999 was sent as `-0648-11-29` or `+10000-01-01` for a
/// `date` or `datetime` custom attribute, which is not `YYYY-MM-DD` and does not read back;
/// an offset could move a datetime of year 9999 into year 10000 the same way.
#[test]
fn dates_outside_four_digit_years_are_rejected() {
    let opts = NormalizeOptions::default();
    let day = |y, m, d| Value::Date(NaiveDate::from_ymd_opt(y, m, d).unwrap());
    for v in [day(-648, 11, 29), day(-1, 12, 31), day(10000, 1, 1)] {
        for ty in [CustomType::Date, CustomType::Datetime] {
            let e = custom(&v, Some(ty), &opts).unwrap_err();
            assert!(
                e.0.contains("outside the years 0000 to 9999"),
                "{v:?} {ty:?}: {e}"
            );
        }
    }
    let t = |s: &str| Value::Text(s.to_owned());
    for s in ["9999-12-31T23:00:00-05:00", "0000-01-01T00:30:00+01:00"] {
        assert!(
            custom(&t(s), Some(CustomType::Datetime), &opts).is_err(),
            "{s}"
        );
    }
    assert_eq!(
        custom(&day(0, 1, 1), Some(CustomType::Date), &opts).unwrap(),
        Some(Canonical::Text("0000-01-01".into()))
    );
    assert_eq!(
        custom(&day(9999, 12, 31), Some(CustomType::Datetime), &opts).unwrap(),
        Some(Canonical::Text("9999-12-31T00:00:00Z".into()))
    );
    assert_eq!(
        custom(
            &t("9999-12-31T23:00:00+05:00"),
            Some(CustomType::Datetime),
            &opts
        )
        .unwrap(),
        Some(Canonical::Text("9999-12-31T18:00:00Z".into()))
    );
}

/// Fuzzing finding (`normalize`): `-277068347753324` read as a German number (default region
/// DE) was accepted and sent as `+49277068347753324`, 17 digits, which is no E.164 number
/// (at most 15 digits, country code included).
#[test]
fn phones_longer_than_e164_are_rejected() {
    let de = NormalizeOptions {
        default_phone_region: Some(phonenumber::country::Id::DE),
        ..NormalizeOptions::default()
    };
    let e = phone("-277068347753324", &de).unwrap_err();
    assert!(e.0.contains("17 digits"), "{e}");
    let e = standard(StandardField::Phone, &Value::Int(-277068347753324), &de).unwrap_err();
    assert!(e.0.contains("at most 15"), "{e}");
    assert_eq!(phone("030 1234567", &de).unwrap(), "+49301234567");
}
