//! What the simulator stores and what tests inspect.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The type of a custom attribute, fixed by the first value the account ever received for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CustomType {
    /// A JSON number.
    Number,
    /// A JSON boolean.
    Boolean,
    /// A JSON string (ISO-8601 dates included).
    String,
}

impl CustomType {
    /// The type of a scalar JSON value; `None` for null, arrays and objects.
    pub fn of(value: &Value) -> Option<CustomType> {
        match value {
            Value::Number(_) => Some(CustomType::Number),
            Value::Bool(_) => Some(CustomType::Boolean),
            Value::String(_) => Some(CustomType::String),
            _ => None,
        }
    }
}

impl fmt::Display for CustomType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CustomType::Number => "NUMBER",
            CustomType::Boolean => "BOOLEAN",
            CustomType::String => "STRING",
        })
    }
}

/// A custom attribute value on a contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomAttribute {
    /// The value as last received.
    pub value: Value,
    /// The attribute's (account-wide) type.
    #[serde(rename = "type")]
    pub kind: CustomType,
}

/// How a contact came to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactOrigin {
    /// Seeded (config, file, `POST /_sim/contacts`).
    Seed,
    /// Created by `POST /v2/user/attributes` for identifiers that matched nobody.
    V2UserAttributes,
    /// Created by `POST /v1/attributes/custom` for an unknown user.
    V1CustomAttributes,
    /// Created by a bulk job record.
    Bulk,
}

/// A contact (subscriber profile) of the simulated account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// Internal id, 1-based, in creation order.
    pub id: u64,
    /// Email as first received (matching is case-insensitive).
    pub email: Option<String>,
    /// Phone, E.164.
    pub phone: Option<String>,
    /// `clientUserId`.
    pub client_user_id: Option<String>,
    /// Custom identifiers, name → value.
    pub custom_identifiers: BTreeMap<String, String>,
    /// Standard attributes keyed by their JSON path under `attributes`, e.g. `firstName`,
    /// `location.city`, `demographic.age`, `locale.language`.
    pub standard: BTreeMap<String, Value>,
    /// Custom attributes by name (case-sensitive).
    pub custom: BTreeMap<String, CustomAttribute>,
    /// How the contact came to exist.
    pub origin: ContactOrigin,
    /// Number of writes applied to it (seeding not counted).
    pub writes: u64,
    /// Whether it has subscription records: false for a profile without subscriptions
    /// (seeded with `subscribed: false`), which `GET /v1/subscriptions` answers 404. Writes
    /// never change it; contacts created by writes have it true.
    #[serde(default = "yes")]
    pub subscribed: bool,
}

fn yes() -> bool {
    true
}

impl Contact {
    /// A standard attribute by path (`firstName`, `location.zip`, ...).
    pub fn standard(&self, path: &str) -> Option<&Value> {
        self.standard.get(path)
    }

    /// A custom attribute's value.
    pub fn custom_value(&self, name: &str) -> Option<&Value> {
        self.custom.get(name).map(|a| &a.value)
    }

    /// The contact's id in GraphQL answers (`User.id`): base64 of `User:<id>`, unpadded, the
    /// same on every query.
    pub fn graphql_id(&self) -> String {
        base64_unpadded(format!("User:{}", self.id).as_bytes())
    }
}

/// One request to an API route, as the request log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// 1-based sequence number.
    pub seq: u64,
    /// RFC 3339 arrival time.
    pub at: String,
    /// RFC 3339 time the answer was ready (after the injected latency and the processing),
    /// just before it was handed to the connection; a request that is applied is applied
    /// before this. Empty in logs written before this field existed.
    #[serde(default)]
    pub answered_at: String,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Route template, e.g. `POST /v2/bulk/job/{id}`.
    pub endpoint: String,
    /// Response status; `None` when the connection was dropped (fault).
    pub status: Option<u16>,
    /// Request body: parsed JSON, a string when it was not JSON, null when empty.
    pub body: Value,
    /// Which configured key was used (`key-1` for the first, ...; `unknown` for a key the
    /// simulator does not know); never the key itself. `None` when no bearer token was sent.
    pub key_id: Option<String>,
    /// The injected fault, if one answered this request (`error 503`, `drop`, `burst 429`).
    pub fault: Option<String>,
}

/// Request counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// API requests received.
    pub total: u64,
    /// Per endpoint (`POST /v2/user/attributes`), per status code as text (`"202"`), or
    /// `"dropped"` for dropped connections.
    pub by_endpoint: BTreeMap<String, BTreeMap<String, u64>>,
    /// Every 429 answered (rate limit, bursts, injected).
    pub too_many_requests: u64,
    /// 429s from the rate limiter alone.
    pub rate_limited: u64,
    /// Requests answered by an injected fault (error, burst, drop).
    pub faults_injected: u64,
    /// Dropped connections.
    pub dropped: u64,
}

impl Counters {
    /// Count for one endpoint (`"POST /v2/user/attributes"`) and status.
    pub fn count(&self, endpoint: &str, status: u16) -> u64 {
        self.by_endpoint
            .get(endpoint)
            .and_then(|m| m.get(&status.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// All requests seen for an endpoint, whatever the outcome.
    pub fn endpoint_total(&self, endpoint: &str) -> u64 {
        self.by_endpoint
            .get(endpoint)
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }
}

/// What a violation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// A `subscriptions` field was sent in a user-attributes body (it would opt people in).
    SubscriptionsField,
    /// A JSON `null` was sent (Attentive advises omitting fields instead).
    NullValue,
    /// `POST /v1/subscriptions` or `/v1/subscriptions/unsubscribe` was called.
    SubscriptionEndpoint,
    /// A GraphQL document with a mutation was sent to `POST /v1/graphql` (attentive-sync
    /// only looks users up).
    GraphqlMutation,
}

/// Something an attribute sync must never do. The request is still answered as Attentive
/// would; the violation is recorded for tests to assert on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// Sequence number of the request (see [`RequestRecord::seq`]).
    pub request_seq: u64,
    /// What it is.
    pub kind: ViolationKind,
    /// Route template of the request.
    pub endpoint: String,
    /// Details: the JSON path or the endpoint.
    pub detail: String,
    /// Key id (see [`RequestRecord::key_id`]).
    pub key_id: Option<String>,
}

/// Status of a bulk job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BulkJobStatus {
    /// Accepted, not started.
    Pending,
    /// Being processed.
    InProgress,
    /// Done; the result file is available.
    Completed,
    /// Failed as a whole (fault); nothing was applied.
    Failed,
}

/// A bulk job, as tests see it (`SimHandle::bulk_jobs`, `GET /_sim/bulk-jobs`, camelCase
/// there). The counts are 0 until the job is processed, and stay 0 for a `FAILED` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkJobInfo {
    /// `bulkJobId`.
    pub id: String,
    /// Current status (the job's own: a poll answered `NEEDS_REVIEW` by the
    /// `bulk_unknown_status_polls` fault does not change it).
    pub status: BulkJobStatus,
    /// Number of user records.
    pub total_records: usize,
    /// Records answered 202, i.e. applied (the same number as `applied`; kept for callers
    /// that read it).
    pub succeeded: usize,
    /// Records answered 4xx (failed validation, or injected): not applied.
    pub rejected: usize,
    /// Records applied (answered 202). Records whose lines a truncated result file drops
    /// were applied and count here.
    #[serde(default)]
    pub applied: usize,
    /// Records answered 5xx (injected): not applied.
    #[serde(default)]
    pub errored: usize,
    /// Polls of `GET /v2/bulk/job/{id}` answered for this job so far (faulted requests that
    /// never reached the job not counted).
    #[serde(default)]
    pub polls: u32,
}

/// Standard base64 without padding (as Attentive's ids, e.g. `MDc6Q29tcGFueTI`).
pub(crate) fn base64_unpadded(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            let idx = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[idx as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_attentive_ids() {
        // Attentive's documented companyId is base64 of "07:Company2", unpadded.
        assert_eq!(base64_unpadded(b"07:Company2"), "MDc6Q29tcGFueTI");
        assert_eq!(base64_unpadded(b"User:1"), "VXNlcjox");
        assert_eq!(base64_unpadded(b"User:12"), "VXNlcjoxMg");
        assert_eq!(base64_unpadded(b""), "");
    }
}
