//! Attentive's wire format: request bodies, paths, and lenient parsing of what comes back.
//!
//! Pure functions, no I/O: everything here is tested with snapshots of the exact bytes sent.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::ser::{Serialize, SerializeMap, Serializer};
use sync_core::mapping::{AttributeId, IdentifierKind, StandardField};
use sync_core::ports::{ContactRef, ContactWrite};
use sync_core::value::Canonical;

/// `POST`: v2 user attributes (standard and custom), 202 on success.
pub const PATH_USER_ATTRIBUTES: &str = "/v2/user/attributes";
/// `POST`: v1 custom attributes only, 200 on success.
pub const PATH_CUSTOM_ATTRIBUTES: &str = "/v1/attributes/custom";
/// `GET ?email=|phone=`: the existence lookup (200 or 404). Never `POST`ed by this crate.
pub const PATH_SUBSCRIPTIONS: &str = "/v1/subscriptions";
/// `GET`: who the key belongs to.
pub const PATH_ME: &str = "/v1/me";
/// `POST`: a bulk job of up to [`MAX_BULK_RECORDS`] v2 user-attribute objects, 202 with its id.
pub const PATH_BULK_ATTRIBUTES: &str = "/v2/bulk/user/attributes";
/// `GET /v2/bulk/job/{id}`: where a bulk job is (the id follows as [`Request::segment`]).
pub const PATH_BULK_JOB: &str = "/v2/bulk/job/";
/// Most records one bulk job takes.
pub const MAX_BULK_RECORDS: usize = 256;

/// Longest message kept from a response body.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// The HTTP methods this crate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// One request, before the base URL, the key and the budget are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// Absolute path below the base URL (`/v2/user/attributes`).
    pub path: &'static str,
    /// A path segment after `path` (a bulk job's id), percent-encoded when sent.
    pub segment: Option<String>,
    /// Query pairs, URL-encoded when sent (`+` becomes `%2B`).
    pub query: Vec<(&'static str, String)>,
    /// A JSON body.
    pub body: Option<Vec<u8>>,
}

impl Request {
    /// The endpoint, as Attentive's rate limits count it: `METHOD /path`.
    pub fn endpoint(&self) -> &'static str {
        match (self.method, self.path) {
            (Method::Get, PATH_SUBSCRIPTIONS) => "GET /v1/subscriptions",
            (Method::Get, PATH_ME) => "GET /v1/me",
            (Method::Post, PATH_USER_ATTRIBUTES) => "POST /v2/user/attributes",
            (Method::Post, PATH_CUSTOM_ATTRIBUTES) => "POST /v1/attributes/custom",
            (Method::Post, crate::lookup::PATH_GRAPHQL) => "POST /v1/graphql",
            (Method::Post, PATH_BULK_ATTRIBUTES) => "POST /v2/bulk/user/attributes",
            (Method::Get, PATH_BULK_JOB) => "GET /v2/bulk/job/{id}",
            (Method::Get, path) => path,
            (Method::Post, path) => path,
        }
    }

    pub fn get(path: &'static str) -> Request {
        Request {
            method: Method::Get,
            path,
            segment: None,
            query: Vec::new(),
            body: None,
        }
    }

    pub fn post_json(path: &'static str, body: Vec<u8>) -> Request {
        Request {
            method: Method::Post,
            path,
            segment: None,
            query: Vec::new(),
            body: Some(body),
        }
    }
}

/// What Attentive answered (any status that is not retried or fatal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The body, cut at 64 KiB.
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Attentive's message, parsed leniently ([`error_message`]).
    pub fn message(&self) -> String {
        error_message(&self.body)
    }
}

/// A write that is refused before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error(
        "cannot clear standard field `{0}`: Attentive cannot remove a contact's {0} through \
         attribute updates; use on_null = \"omit\" for it"
    )]
    ClearIdentifier(StandardField),
    #[error(
        "standard field `{field}` would change the identifier this contact is matched on; \
         the identifier itself is never rewritten"
    )]
    IdentifierChange { field: StandardField },
}

/// The request for one write: `POST /v2/user/attributes`, or, with `custom_only_v1` and only
/// custom attributes, `POST /v1/attributes/custom`.
pub fn write_request(write: &ContactWrite, custom_only_v1: bool) -> Result<Request, WireError> {
    let only_custom = !write.attributes.is_empty()
        && write
            .attributes
            .iter()
            .all(|(a, _)| matches!(a, AttributeId::Custom(_)));
    if custom_only_v1 && only_custom {
        Ok(Request::post_json(
            PATH_CUSTOM_ATTRIBUTES,
            custom_attributes_body(write)?,
        ))
    } else {
        Ok(Request::post_json(
            PATH_USER_ATTRIBUTES,
            user_attributes_body(write)?,
        ))
    }
}

/// The `GET /v1/subscriptions?email=..|phone=..` lookup.
pub fn existence_request(contact: &ContactRef) -> Request {
    let mut r = Request::get(PATH_SUBSCRIPTIONS);
    r.query.push((contact.kind.as_str(), contact.key.clone()));
    r
}

/// The body of `POST /v2/user/attributes`:
/// `{"identifiers": {..}, "attributes": {.., "custom": {..}}}`.
///
/// The contact's identifier goes under `identifiers`; a changed standard `email`/`phone`
/// field goes there too ([`standard_path`]). Standard fields land at their wire
/// path, custom attributes under `attributes.custom`, typed as [`Canonical`] serializes them
/// (numbers digit for digit). A clear (`None`) is sent as `""`. Never a `subscriptions` field,
/// never a JSON `null`; an empty `attributes` object is omitted.
pub fn user_attributes_body(write: &ContactWrite) -> Result<Vec<u8>, WireError> {
    Ok(to_json(&user_attributes(write)?))
}

/// The body of `POST /v2/bulk/user/attributes`: `{"users": [..]}`, each record exactly the
/// body [`user_attributes_body`] sends for that write alone. A write that cannot be sent at
/// all ([`WireError`]) is left out; its index comes back with the error.
pub fn bulk_body(writes: &[ContactWrite]) -> (Vec<u8>, Vec<(usize, WireError)>) {
    let mut users = Vec::with_capacity(writes.len());
    let mut refused = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        match user_attributes(w) {
            Ok(node) => users.push(node),
            Err(e) => refused.push((i, e)),
        }
    }
    let mut out = b"{\"users\":".to_vec();
    // As in `to_json`: serializing these trees into a Vec cannot fail.
    if serde_json::to_writer(&mut out, &users).is_err() {
        out.truncate(9);
        out.extend_from_slice(b"[]");
    }
    out.push(b'}');
    (out, refused)
}

/// A write as the v2 user-attributes object (see [`user_attributes_body`]).
fn user_attributes(write: &ContactWrite) -> Result<Node<'_>, WireError> {
    let mut root = Node::map();
    root.insert(
        &["identifiers", write.contact.kind.as_str()],
        Leaf::Str(&write.contact.key),
    );
    for (attr, value) in &write.attributes {
        let leaf = match value {
            Some(v) => Leaf::Value(v),
            None => Leaf::Str(""),
        };
        match attr {
            AttributeId::Standard(field) => {
                if let Some(kind) = identifier_kind(*field) {
                    check_identifier_field(write, *field, kind, value.as_ref())?;
                    if kind == write.contact.kind {
                        continue; // the same value as the identifier already there
                    }
                }
                root.insert(standard_path(*field), leaf);
            }
            AttributeId::Custom(name) => {
                root.insert(&["attributes", "custom", name.as_str()], leaf);
            }
        }
    }
    Ok(root)
}

/// The id in a 202 answer to a bulk submission: `batchJobId` (Attentive's spec), or
/// `bulkJobId` / `jobId` / `id` (read leniently).
pub fn bulk_job_id(body: &[u8]) -> Option<String> {
    let v = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    ["batchJobId", "bulkJobId", "jobId", "id"]
        .iter()
        .find_map(|k| match v.get(k)? {
            serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

/// An answer of `GET /v2/bulk/job/{id}`, read leniently: `status` is a free string (only
/// `COMPLETED` completes a job; `FAILED` and `CANCELLED` fail it; any other status, known or
/// not, keeps it pending), and the result file is `url` or `resultUrl`.
pub fn bulk_job_state(body: &[u8]) -> sync_core::ports::BulkJobState {
    use sync_core::ports::BulkJobState;
    let v = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
    let text = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let status = text("status").unwrap_or_default();
    match status.to_ascii_uppercase().as_str() {
        "COMPLETED" => BulkJobState::Completed {
            result_url: text("url")
                .or_else(|| text("resultUrl"))
                .or_else(|| text("resultURL")),
            status,
        },
        "FAILED" | "CANCELLED" | "CANCELED" => BulkJobState::Failed { status },
        "" => BulkJobState::Pending {
            status: "(no status)".to_owned(),
        },
        _ => BulkJobState::Pending { status },
    }
}

/// One line of a bulk job's result file. No schema is published; lines seen are
/// `{"request": {..the record..}, "response": {"status": 202, "message": ".."}}`. Success
/// only when the line clearly says so (a 2xx status); 4xx is a rejection with Attentive's
/// message; anything else (5xx, no status, not JSON) is a failure. The identifiers are read
/// from the record (`identifiers`, or `user`, or the record itself), normalized as sent.
pub fn bulk_result_line(line: &str) -> sync_core::ports::BulkRecordResult {
    use sync_core::ports::{BulkRecordOutcome, BulkRecordResult};
    let unreadable = |why: &str| BulkRecordResult {
        contacts: Vec::new(),
        outcome: BulkRecordOutcome::Failed {
            reason: format!("the result file's line for this record {why}"),
        },
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return unreadable("is not JSON (the file may be cut short)");
    };
    let mut contacts = Vec::new();
    if let Some(request) = v.get("request") {
        for holder in [
            request.get("identifiers"),
            request.get("user"),
            Some(request),
        ]
        .into_iter()
        .flatten()
        {
            for kind in [IdentifierKind::Email, IdentifierKind::Phone] {
                let Some(raw) = holder.get(kind.as_str()).and_then(|x| x.as_str()) else {
                    continue;
                };
                let key = match kind {
                    IdentifierKind::Email => raw.trim().to_lowercase(),
                    IdentifierKind::Phone => raw.trim().to_owned(),
                };
                let c = ContactRef { kind, key };
                if !c.key.is_empty() && !contacts.contains(&c) {
                    contacts.push(c);
                }
            }
        }
    }
    let response = v.get("response").unwrap_or(&v);
    let status = match response
        .get("status")
        .or_else(|| response.get("statusCode"))
    {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let message = || json_message(response).unwrap_or_else(|| "(no message)".to_owned());
    let outcome = match status {
        Some(200..=299) => BulkRecordOutcome::Acknowledged,
        Some(s @ 400..=499) => BulkRecordOutcome::Rejected {
            message: if s == 400 {
                truncate(&message(), MAX_MESSAGE_CHARS)
            } else {
                truncate(&format!("HTTP {s}: {}", message()), MAX_MESSAGE_CHARS)
            },
        },
        Some(s) => BulkRecordOutcome::Failed {
            reason: truncate(&format!("HTTP {s}: {}", message()), MAX_MESSAGE_CHARS),
        },
        None => BulkRecordOutcome::Failed {
            reason: "the result file's line for this record gives no status".to_owned(),
        },
    };
    BulkRecordResult { contacts, outcome }
}

/// The body of `POST /v1/attributes/custom`: `{"properties": {..}, "user": {"email"|"phone"}}`.
/// Standard fields are never sent here (v1 would make them custom attributes); callers use
/// [`write_request`], which picks this body only for custom-only writes.
pub fn custom_attributes_body(write: &ContactWrite) -> Result<Vec<u8>, WireError> {
    let mut root = Node::map();
    root.insert(
        &["user", write.contact.kind.as_str()],
        Leaf::Str(&write.contact.key),
    );
    // `properties` is required even when empty.
    root.ensure_map("properties");
    for (attr, value) in &write.attributes {
        if let AttributeId::Custom(name) = attr {
            let leaf = match value {
                Some(v) => Leaf::Value(v),
                None => Leaf::Str(""),
            };
            root.insert(&["properties", name.as_str()], leaf);
        }
    }
    Ok(to_json(&root))
}

/// Where a standard field's value goes in a `POST /v2/user/attributes` body (and a bulk
/// record): its JSON path.
pub fn standard_path(field: StandardField) -> &'static [&'static str] {
    match field {
        StandardField::Address => &["attributes", "location", "address1"],
        StandardField::Age => &["attributes", "demographic", "age"],
        StandardField::City => &["attributes", "location", "city"],
        StandardField::Country => &["attributes", "location", "country"],
        StandardField::DateOfBirth => &["attributes", "demographic", "dateOfBirth"],
        StandardField::Email => &["identifiers", "email"],
        StandardField::FirstName => &["attributes", "firstName"],
        StandardField::Language => &["attributes", "demographic", "language"],
        StandardField::LastName => &["attributes", "lastName"],
        StandardField::Latitude => &["attributes", "location", "latitude"],
        StandardField::Longitude => &["attributes", "location", "longitude"],
        StandardField::Organization => &["attributes", "demographic", "organization"],
        StandardField::Phone => &["identifiers", "phone"],
        StandardField::Region => &["attributes", "location", "region"],
        StandardField::State => &["attributes", "location", "state"],
        StandardField::TimeZone => &["attributes", "location", "timezone"],
        StandardField::Title => &["attributes", "demographic", "title"],
        StandardField::Website => &["attributes", "demographic", "website"],
        StandardField::ZipCode => &["attributes", "location", "zip"],
    }
}

fn identifier_kind(field: StandardField) -> Option<IdentifierKind> {
    match field {
        StandardField::Email => Some(IdentifierKind::Email),
        StandardField::Phone => Some(IdentifierKind::Phone),
        _ => None,
    }
}

fn check_identifier_field(
    write: &ContactWrite,
    field: StandardField,
    kind: IdentifierKind,
    value: Option<&Canonical>,
) -> Result<(), WireError> {
    let Some(value) = value else {
        return Err(WireError::ClearIdentifier(field));
    };
    if kind == write.contact.kind && value.to_text() != write.contact.key {
        return Err(WireError::IdentifierChange { field });
    }
    Ok(())
}

/// A JSON tree with sorted keys whose leaves borrow the write's values, so numbers are
/// serialized by [`Canonical`]'s own `Serialize` (a raw literal), never through `f64`.
#[derive(Debug)]
enum Node<'a> {
    Leaf(Leaf<'a>),
    Map(BTreeMap<&'a str, Node<'a>>),
}

#[derive(Debug, Clone, Copy)]
enum Leaf<'a> {
    Value(&'a Canonical),
    Str(&'a str),
}

impl<'a> Node<'a> {
    fn map() -> Node<'a> {
        Node::Map(BTreeMap::new())
    }

    fn ensure_map(&mut self, key: &'a str) {
        if let Node::Map(m) = self {
            m.entry(key).or_insert_with(Node::map);
        }
    }

    /// Sets the leaf at `path`, creating maps on the way. Paths never cross a leaf: standard
    /// wire paths are distinct and custom attributes have their own `custom` map.
    fn insert(&mut self, path: &[&'a str], leaf: Leaf<'a>) {
        let Node::Map(map) = self else { return };
        match path {
            [] => {}
            [last] => {
                map.insert(last, Node::Leaf(leaf));
            }
            [first, rest @ ..] => map
                .entry(first)
                .or_insert_with(Node::map)
                .insert(rest, leaf),
        }
    }
}

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Leaf(Leaf::Value(v)) => v.serialize(s),
            Node::Leaf(Leaf::Str(t)) => s.serialize_str(t),
            Node::Map(m) => {
                let mut out = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    // Omit empty objects (e.g. no attributes at all), except the required
                    // `properties` of v1.
                    if matches!(v, Node::Map(inner) if inner.is_empty()) && *k != "properties" {
                        continue;
                    }
                    out.serialize_entry(k, v)?;
                }
                out.end()
            }
        }
    }
}

fn to_json(node: &Node<'_>) -> Vec<u8> {
    // Serializing string keys and scalar leaves into a Vec cannot fail; a raw number that
    // were not valid JSON falls back to a string inside `Canonical`'s impl.
    serde_json::to_vec(node).unwrap_or_else(|_| b"{}".to_vec())
}

/// Attentive's message from an error body, leniently: `message`, `error.message`, `error`
/// (a string), `errors[0].message`, `detail`; else the raw text. Trimmed and cut at
/// [`MAX_MESSAGE_CHARS`] characters. Bodies seen: Spring-style
/// `{"timestamp","status","error","message","path"}`, `{"error":{"id","message"}}`, plain text.
pub fn error_message(body: &[u8]) -> String {
    let parsed = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| json_message(&v));
    let text = match parsed {
        Some(m) => m,
        None => String::from_utf8_lossy(body).trim().to_owned(),
    };
    if text.is_empty() {
        "(empty response body)".to_owned()
    } else {
        truncate(&text, MAX_MESSAGE_CHARS)
    }
}

fn json_message(v: &serde_json::Value) -> Option<String> {
    let nonempty = |v: Option<&serde_json::Value>| {
        v.and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    nonempty(v.get("message"))
        .or_else(|| nonempty(v.get("error").and_then(|e| e.get("message"))))
        .or_else(|| nonempty(v.get("error")))
        .or_else(|| {
            nonempty(
                v.get("errors")
                    .and_then(|e| e.get(0))
                    .and_then(|e| e.get("message")),
            )
        })
        .or_else(|| nonempty(v.get("detail")))
}

/// Cuts `s` to at most `max` characters, marking the cut with `…`.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((end, _)) => {
            let cut = s[..end]
                .char_indices()
                .nth(max.saturating_sub(1))
                .map_or(end, |(i, _)| i);
            format!("{}…", &s[..cut])
        }
    }
}

/// `GET /v1/me`: who the key belongs to. Every field is optional and read leniently.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub application_name: Option<String>,
    pub company_name: Option<String>,
    pub attentive_domain_name: Option<String>,
    pub company_id: Option<String>,
    pub contact_email: Option<String>,
}

impl Me {
    /// Reads whatever string fields are there; anything else is ignored.
    pub fn parse(body: &[u8]) -> Me {
        let v = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        Me {
            application_name: s("applicationName"),
            company_name: s("companyName"),
            attentive_domain_name: s("attentiveDomainName"),
            company_id: s("companyId"),
            contact_email: s("contactEmail"),
        }
    }
}

/// The permission a 403 on `path` points at (Attentive's custom-app permission names).
pub fn permission_for(path: &str) -> &'static str {
    match path {
        PATH_USER_ATTRIBUTES => "\"Custom Attributes\" (write) and \"Subscribers\" (write)",
        PATH_CUSTOM_ATTRIBUTES => "\"Custom Attributes\" (write)",
        PATH_SUBSCRIPTIONS => "\"Subscribers\" (read)",
        PATH_ME => "any API permission (the app may have been disabled)",
        PATH_BULK_ATTRIBUTES => "\"Custom Attributes\" (write) and \"Subscribers\" (write)",
        _ => "the one this endpoint needs",
    }
}

/// `Retry-After` as delta-seconds (`"2"`, `"1.5"`). An HTTP-date is ignored (`None`): the
/// client then uses its own backoff.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (0.0..86_400.0)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

/// `x-ratelimit-limit` / `x-ratelimit-remaining` as a number (`"150"`, `"150.0"`).
pub fn parse_rate_header(value: &str) -> Option<u64> {
    let v = value.trim();
    v.parse::<u64>().ok().or_else(|| {
        let f: f64 = v.parse().ok()?;
        (f.is_finite() && f >= 0.0).then_some(f as u64)
    })
}

#[cfg(test)]
mod tests;
