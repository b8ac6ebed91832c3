//! Parsing and validating request bodies, on raw `serde_json::Value`s.
//!
//! A JSON `null` anywhere is treated as if the field were absent (and is recorded as a
//! violation elsewhere); an empty string on a standard field or custom attribute clears it.

use serde_json::{Map, Value};

/// Identifiers of one user in a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Identifiers {
    pub(crate) email: Option<String>,
    pub(crate) phone: Option<String>,
    pub(crate) client_user_id: Option<String>,
    pub(crate) custom: Vec<(String, String)>,
}

impl Identifiers {
    pub(crate) fn has_email_or_phone(&self) -> bool {
        self.email.is_some() || self.phone.is_some()
    }
}

/// A validated write for one user.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct UserWrite {
    pub(crate) ids: Identifiers,
    /// Standard attributes: path → value (`""` clears).
    pub(crate) standard: Vec<(String, Value)>,
    /// Custom attributes: name → scalar value (`""` clears).
    pub(crate) custom: Vec<(String, Value)>,
}

/// Maximum length of a custom attribute name.
pub(crate) const MAX_CUSTOM_KEY_CHARS: usize = 200;
/// Maximum length of an email.
pub(crate) const MAX_EMAIL_CHARS: usize = 100;

const LOCATION_FIELDS: &[&str] = &[
    "address1",
    "address2",
    "city",
    "state",
    "zip",
    "country",
    "region",
    "latitude",
    "longitude",
    "timezone",
];
const DEMOGRAPHIC_FIELDS: &[&str] = &[
    "language",
    "dateOfBirth",
    "age",
    "organization",
    "title",
    "website",
];
const LOCALE_FIELDS: &[&str] = &["language", "country"];
const ATTRIBUTE_FIELDS: &[&str] = &[
    "firstName",
    "lastName",
    "location",
    "demographic",
    "locale",
    "custom",
];
const V2_IDENTIFIER_FIELDS: &[&str] = &[
    "email",
    "phone",
    "clientUserId",
    "customIdentifiers",
    "shopifyId",
    "klaviyoId",
];

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{path} must be a JSON object, got {}", kind_of(v)))
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_known(obj: &Map<String, Value>, allowed: &[&str], path: &str) -> Result<(), String> {
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(format!(
                "Unrecognized field \"{}\" (allowed: {})",
                join(path, key),
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

/// A field's value, `None` when absent or null.
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn string_field(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, String> {
    match field(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "{} must be a string, got {}",
            join(path, key),
            kind_of(other)
        )),
    }
}

/// `^\+[1-9]\d{1,14}$`.
pub(crate) fn is_e164(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

pub(crate) fn check_phone(phone: &str, path: &str) -> Result<(), String> {
    if is_e164(phone) {
        Ok(())
    } else {
        let hint = if phone.starts_with(' ') {
            " (a '+' in a query string must be URL-encoded as %2B)"
        } else {
            ""
        };
        Err(format!(
            "{path}: invalid phone number '{phone}': must be E.164, e.g. +14155550100{hint}"
        ))
    }
}

pub(crate) fn check_email(email: &str, path: &str) -> Result<(), String> {
    let chars = email.chars().count();
    if chars > MAX_EMAIL_CHARS {
        return Err(format!(
            "{path}: email is {chars} characters, the maximum is {MAX_EMAIL_CHARS}"
        ));
    }
    let mut parts = email.split('@');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(local), Some(domain), None) if !local.is_empty() && !domain.is_empty() => Ok(()),
        _ => Err(format!(
            "{path}: invalid email '{email}': must contain exactly one '@' between a non-empty \
             local part and domain"
        )),
    }
}

fn check_date(s: &str, path: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if shape && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() {
        Ok(())
    } else {
        Err(format!(
            "{path} must be a date formatted YYYY-MM-DD, got '{s}'"
        ))
    }
}

/// Validates a custom attribute map (`attributes.custom` or v1 `properties`).
pub(crate) fn parse_custom(v: &Value, path: &str) -> Result<Vec<(String, Value)>, String> {
    let obj = as_object(v, path)?;
    let mut out = Vec::with_capacity(obj.len());
    for (key, value) in obj {
        let chars = key.chars().count();
        if chars == 0 {
            return Err(format!("{path}: custom attribute names must not be empty"));
        }
        if chars > MAX_CUSTOM_KEY_CHARS {
            let shown: String = key.chars().take(40).collect();
            return Err(format!(
                "{path}: custom attribute name '{shown}...' is {chars} characters, the maximum \
                 is {MAX_CUSTOM_KEY_CHARS}"
            ));
        }
        match value {
            Value::Null => {}
            Value::Array(_) | Value::Object(_) => {
                return Err(format!(
                    "{path}: the value of custom attribute '{key}' is {}; values must be a \
                     string, number or boolean (arrays and maps are not supported)",
                    kind_of(value)
                ))
            }
            _ => out.push((key.clone(), value.clone())),
        }
    }
    Ok(out)
}

/// Validates one v2 user object (`POST /v2/user/attributes` body, or one bulk `users[]` item).
/// `path` prefixes messages (empty for the single endpoint, `users[3]` in bulk).
pub(crate) fn parse_v2_user(v: &Value, path: &str) -> Result<UserWrite, String> {
    let name = if path.is_empty() { "body" } else { path };
    let top = as_object(v, name)?;
    check_known(top, &["identifiers", "attributes", "subscriptions"], path)?;
    let ids_path = join(path, "identifiers");
    let Some(ids_v) = field(top, "identifiers") else {
        return Err(format!("{ids_path} is required"));
    };
    let ids_obj = as_object(ids_v, &ids_path)?;
    check_known(ids_obj, V2_IDENTIFIER_FIELDS, &ids_path)?;
    let mut ids = Identifiers {
        email: string_field(ids_obj, "email", &ids_path)?,
        phone: string_field(ids_obj, "phone", &ids_path)?,
        client_user_id: string_field(ids_obj, "clientUserId", &ids_path)?,
        custom: Vec::new(),
    };
    string_field(ids_obj, "shopifyId", &ids_path)?;
    string_field(ids_obj, "klaviyoId", &ids_path)?;
    if let Some(custom_ids) = field(ids_obj, "customIdentifiers") {
        ids.custom =
            parse_custom_identifiers(custom_ids, "key", &join(&ids_path, "customIdentifiers"))?;
    }
    check_identifiers(&ids, &ids_path)?;
    if ids.email.is_none() && ids.phone.is_none() && ids.client_user_id.is_none() {
        return Err(format!(
            "{ids_path} must contain at least one of email, phone, clientUserId"
        ));
    }

    let mut write = UserWrite {
        ids,
        ..UserWrite::default()
    };
    if let Some(attrs_v) = field(top, "attributes") {
        let attrs_path = join(path, "attributes");
        let attrs = as_object(attrs_v, &attrs_path)?;
        check_known(attrs, ATTRIBUTE_FIELDS, &attrs_path)?;
        for key in ["firstName", "lastName"] {
            if let Some(s) = string_field(attrs, key, &attrs_path)? {
                write.standard.push((key.to_owned(), Value::String(s)));
            }
        }
        for (group, fields) in [
            ("location", LOCATION_FIELDS),
            ("demographic", DEMOGRAPHIC_FIELDS),
            ("locale", LOCALE_FIELDS),
        ] {
            let Some(group_v) = field(attrs, group) else {
                continue;
            };
            let group_path = join(&attrs_path, group);
            let obj = as_object(group_v, &group_path)?;
            check_known(obj, fields, &group_path)?;
            for &key in fields {
                let stored = format!("{group}.{key}");
                if group == "demographic" && key == "age" {
                    match field(obj, key) {
                        None => {}
                        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
                            write.standard.push((stored, Value::Number(n.clone())));
                        }
                        Some(Value::String(s)) if s.is_empty() => {
                            write.standard.push((stored, Value::String(String::new())));
                        }
                        Some(other) => {
                            return Err(format!(
                                "{} must be an integer, got {}",
                                join(&group_path, key),
                                if other.is_number() {
                                    "a fractional number"
                                } else {
                                    kind_of(other)
                                }
                            ))
                        }
                    }
                    continue;
                }
                let Some(s) = string_field(obj, key, &group_path)? else {
                    continue;
                };
                if key == "dateOfBirth" && !s.is_empty() {
                    check_date(&s, &join(&group_path, key))?;
                }
                write.standard.push((stored, Value::String(s)));
            }
        }
        if let Some(custom) = field(attrs, "custom") {
            write.custom = parse_custom(custom, &join(&attrs_path, "custom"))?;
        }
    }
    Ok(write)
}

fn check_identifiers(ids: &Identifiers, path: &str) -> Result<(), String> {
    if let Some(email) = &ids.email {
        check_email(email, &join(path, "email"))?;
    }
    if let Some(phone) = &ids.phone {
        check_phone(phone, &join(path, "phone"))?;
    }
    if let Some(id) = &ids.client_user_id {
        let n = id.chars().count();
        if n == 0 || n > 100 {
            return Err(format!(
                "{}: must be 1 to 100 characters, got {n}",
                join(path, "clientUserId")
            ));
        }
    }
    Ok(())
}

/// `[{<name_key>: "...", "value": "..."}]`.
fn parse_custom_identifiers(
    v: &Value,
    name_key: &str,
    path: &str,
) -> Result<Vec<(String, String)>, String> {
    let Value::Array(items) = v else {
        return Err(format!(
            "{path} must be an array of {{\"{name_key}\": .., \"value\": ..}}, got {}",
            kind_of(v)
        ));
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let obj = as_object(item, &item_path)?;
        check_known(obj, &[name_key, "value"], &item_path)?;
        let name = string_field(obj, name_key, &item_path)?;
        let value = string_field(obj, "value", &item_path)?;
        match (name, value) {
            (Some(n), Some(v)) if !n.is_empty() && !v.is_empty() => out.push((n, v)),
            _ => {
                return Err(format!(
                    "{item_path} needs a non-empty \"{name_key}\" and \"value\""
                ))
            }
        }
    }
    Ok(out)
}

/// `POST /v1/attributes/custom` body: `{"properties": {...}, "user": {...}}`.
pub(crate) fn parse_v1_custom(v: &Value) -> Result<UserWrite, String> {
    let top = as_object(v, "body")?;
    check_known(top, &["properties", "user"], "")?;
    let Some(props) = field(top, "properties") else {
        return Err("properties is required".into());
    };
    let custom = parse_custom(props, "properties")?;
    let Some(user_v) = field(top, "user") else {
        return Err("user is required".into());
    };
    let user = as_object(user_v, "user")?;
    check_known(user, &["phone", "email", "externalIdentifiers"], "user")?;
    let mut ids = Identifiers {
        email: string_field(user, "email", "user")?,
        phone: string_field(user, "phone", "user")?,
        ..Identifiers::default()
    };
    let mut has_external = false;
    if let Some(ext_v) = field(user, "externalIdentifiers") {
        let path = "user.externalIdentifiers";
        let ext = as_object(ext_v, path)?;
        check_known(ext, &["clientUserId", "customIdentifiers"], path)?;
        ids.client_user_id = string_field(ext, "clientUserId", path)?;
        if let Some(c) = field(ext, "customIdentifiers") {
            ids.custom = parse_custom_identifiers(c, "name", &join(path, "customIdentifiers"))?;
        }
        has_external = ids.client_user_id.is_some() || !ids.custom.is_empty();
    }
    if !ids.has_email_or_phone() && !has_external {
        return Err("user must contain at least one of phone, email, externalIdentifiers".into());
    }
    check_identifiers(&ids, "user")?;
    Ok(UserWrite {
        ids,
        standard: Vec::new(),
        custom,
    })
}

/// Paths of every JSON `null` in `v` (`attributes.custom.tier`, `users[2].identifiers.phone`).
pub(crate) fn null_paths(v: &Value) -> Vec<String> {
    fn walk(v: &Value, path: &mut String, out: &mut Vec<String>) {
        match v {
            Value::Null => out.push(if path.is_empty() {
                "(body)".to_owned()
            } else {
                path.clone()
            }),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(item, path, out);
                    path.truncate(len);
                }
            }
            Value::Object(obj) => {
                for (k, item) in obj {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    walk(item, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut String::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn e164() {
        for ok in ["+19148440001", "+442071838750", "+551155256325", "+12"] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in [
            "19148440001",
            "+1---914---844---0001",
            "1 () 914 844 0001",
            "+0123",
            "+1",
            "+1234567890123456",
            "",
            " 14155550100",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn v2_full_object_parses() {
        let w = parse_v2_user(
            &json!({
                "identifiers": {"email": "a@b.co", "customIdentifiers": [{"key": "k", "value": "v"}]},
                "attributes": {
                    "firstName": "Ann",
                    "location": {"zip": "02134", "latitude": "40.1"},
                    "demographic": {"age": 34, "dateOfBirth": "1990-11-08"},
                    "locale": {"language": "en"},
                    "custom": {"tier": "gold", "ltv": 1.5, "vip": true, "gone": null}
                }
            }),
            "",
        )
        .unwrap();
        assert_eq!(w.ids.email.as_deref(), Some("a@b.co"));
        assert_eq!(w.ids.custom, vec![("k".into(), "v".into())]);
        assert!(w
            .standard
            .contains(&("location.zip".into(), json!("02134"))));
        assert!(w.standard.contains(&("demographic.age".into(), json!(34))));
        assert_eq!(w.custom.len(), 3);
    }

    #[test]
    fn v2_rules() {
        let bad = [
            json!({"identifiers": {}}),
            json!({"identifiers": {"phone": "4155550100"}}),
            json!({"identifiers": {"email": "no-at"}}),
            json!({"identifiers": {"email": "a@b@c"}}),
            json!({"identifiers": {"email": "a@b.co"}, "attributes": {"demographic": {"age": "34"}}}),
            json!({"identifiers": {"email": "a@b.co"}, "attributes": {"demographic": {"age": 3.5}}}),
            json!({"identifiers": {"email": "a@b.co"}, "attributes": {"location": {"zip": 2134}}}),
            json!({"identifiers": {"email": "a@b.co"}, "attributes": {"location": {"latitude": 1.0}}}),
            json!({"identifiers": {"email": "a@b.co"}, "attributes": {"location": {"street": "x"}}}),
            json!({"identifiers": {"email": "a@b.co"}, "attributes": {"demographic": {"dateOfBirth": "1990-13-01"}}}),
            json!({"identifiers": {"email": "a@b.co"}, "attributes": {"demographic": {"dateOfBirth": "11/08/1990"}}}),
            json!({"identifiers": {"email": "a@b.co"}, "attributes": {"custom": {"a": [1]}}}),
            json!({"identifiers": {"email": "a@b.co"}, "attributes": {"custom": {"a": {"b": 1}}}}),
            json!({"identifiers": {"email": "a@b.co"}, "attributes": {"nickname": "x"}}),
            json!({"identifiers": {"email": "a@b.co"}, "extra": 1}),
        ];
        for b in bad {
            assert!(parse_v2_user(&b, "").is_err(), "{b}");
        }
    }

    #[test]
    fn null_paths_are_found() {
        let v = json!({"a": null, "b": {"c": [1, null]}, "d": 1});
        assert_eq!(null_paths(&v), vec!["a".to_owned(), "b.c[1]".to_owned()]);
    }
}
