//! Batched existence checks through Attentive's GraphQL API (`POST /v1/graphql`, beta): one
//! alias per contact, selecting only the user's `id`. Read-only: a query, never a mutation.
//!
//! What an answer means (see `shared/reference/attentive-api.md` §9, where the API is
//! uncertain, and docs/CONFIG.md `existence_check`):
//!
//! * an alias with an object holding an `id`: the contact exists (and that is its id);
//! * an alias that is `null` with no error of its own: no such contact (`not_found`);
//! * an alias with an error, or missing: unknown, checked again through
//!   `GET /v1/subscriptions`;
//! * errors that say the query is too large or complex: the batch is halved and sent again;
//! * anything else that makes the whole answer unusable (403, 404, errors for the whole query,
//!   an unexpected shape): the client stops using GraphQL for the rest of its life (a run),
//!   logs the reason once, and checks through `GET /v1/subscriptions`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::Value;
use sync_core::ports::{ContactRef, Existence, Lookup};

use crate::wire::{Method, Request, Response};

/// The GraphQL endpoint.
pub const PATH_GRAPHQL: &str = "/v1/graphql";

/// Contacts per GraphQL lookup by default (what community clients use; Attentive documents
/// no limit).
pub const DEFAULT_LOOKUP_BATCH: usize = 25;

/// Which check establishes that a contact exists before its first write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExistenceStrategy {
    /// `POST /v1/graphql`, many contacts per request; finds profiles without subscriptions.
    #[default]
    Graphql,
    /// `GET /v1/subscriptions`, one contact per request; a profile with no subscription
    /// record answers 404 there and is reported `not_found`.
    Subscriptions,
}

/// The query and variables for a batch: alias `cN` and variable `$cN` for the N-th contact.
pub fn graphql_lookup_request(contacts: &[ContactRef]) -> Request {
    let mut params = String::new();
    let mut fields = String::new();
    let mut variables = serde_json::Map::new();
    for (i, c) in contacts.iter().enumerate() {
        let arg = c.kind.as_str(); // `email` or `phone`, as the API names them
        if i > 0 {
            params.push_str(", ");
        }
        params.push_str(&format!("$c{i}: String"));
        fields.push_str(&format!(" c{i}: user({arg}: $c{i}) {{ id }}"));
        variables.insert(format!("c{i}"), Value::String(c.key.clone()));
    }
    let query = format!(
        "query Lookup({params}) {{ viewer {{ installedApplication {{ installerCompany {{{fields} }} }} }} }}"
    );
    let body = serde_json::json!({ "query": query, "variables": variables });
    Request {
        method: Method::Post,
        path: PATH_GRAPHQL,
        segment: None,
        query: Vec::new(),
        body: Some(body.to_string().into_bytes()),
    }
}

/// What one alias of an answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasAnswer {
    Found(Lookup),
    /// An error for this alias (or the alias missing): ask the REST lookup.
    Unknown(String),
}

/// What a whole answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchAnswer {
    /// One answer per contact, in order.
    Aliases(Vec<AliasAnswer>),
    /// The batch is too large or complex for the server: send it in smaller pieces.
    TooLarge(String),
    /// The answer cannot be used at all: stop using GraphQL, for this reason.
    Unusable(String),
}

/// Whether an error message or code says the query is too big.
fn says_too_large(e: &Value) -> bool {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_lowercase();
    let message = text(e.get("message"));
    let code = text(e.get("extensions").and_then(|x| x.get("code")));
    [
        "complex",
        "too large",
        "too many",
        "exceeds",
        "limit",
        "depth",
        "cost",
        "size",
    ]
    .iter()
    .any(|w| message.contains(w) || code.contains(w))
}

/// Reads an answer to [`graphql_lookup_request`] for `n` contacts.
pub fn read_lookup_answer(response: &Response, n: usize) -> BatchAnswer {
    if !response.is_success() {
        return BatchAnswer::Unusable(format!(
            "POST {PATH_GRAPHQL} answered HTTP {}: {}",
            response.status,
            response.message()
        ));
    }
    let Ok(v) = serde_json::from_slice::<Value>(&response.body) else {
        return BatchAnswer::Unusable(format!("POST {PATH_GRAPHQL} answered with invalid JSON"));
    };
    let errors: &[Value] = v
        .get("errors")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let company = v
        .get("data")
        .and_then(|d| d.get("viewer"))
        .and_then(|d| d.get("installedApplication"))
        .and_then(|d| d.get("installerCompany"))
        .and_then(Value::as_object);
    let Some(company) = company else {
        if let Some(e) = errors.iter().find(|e| says_too_large(e)) {
            let m = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("too complex");
            return BatchAnswer::TooLarge(m.to_owned());
        }
        let first = errors
            .first()
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map_or_else(
                || "the answer has no viewer.installedApplication.installerCompany".to_owned(),
                |m| format!("errors for the whole query: {m}"),
            );
        return BatchAnswer::Unusable(format!("POST {PATH_GRAPHQL}: {first}"));
    };
    // Errors that name an alias in their path.
    let alias_error = |alias: &str| {
        errors.iter().find_map(|e| {
            let path = e.get("path")?.as_array()?;
            path.iter().any(|p| p.as_str() == Some(alias)).then(|| {
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .to_owned()
            })
        })
    };
    let answers = (0..n)
        .map(|i| {
            let alias = format!("c{i}");
            if let Some(m) = alias_error(&alias) {
                return AliasAnswer::Unknown(m);
            }
            match company.get(&alias) {
                Some(Value::Null) => AliasAnswer::Found(Lookup::existence(Existence::NotFound)),
                Some(Value::Object(user)) => match user.get("id") {
                    Some(Value::String(id)) => AliasAnswer::Found(Lookup {
                        existence: Existence::Exists,
                        id: Some(id.clone()),
                    }),
                    Some(Value::Number(id)) => AliasAnswer::Found(Lookup {
                        existence: Existence::Exists,
                        id: Some(id.to_string()),
                    }),
                    _ => AliasAnswer::Unknown("a user without an id".to_owned()),
                },
                Some(_) => AliasAnswer::Unknown("an unexpected value".to_owned()),
                None => AliasAnswer::Unknown("missing from the answer".to_owned()),
            }
        })
        .collect();
    BatchAnswer::Aliases(answers)
}

/// The GraphQL lookup's state for one client: its current batch size and whether it has
/// given up on GraphQL.
#[derive(Debug)]
pub(crate) struct GraphqlState {
    batch: AtomicUsize,
    off: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl GraphqlState {
    pub(crate) fn new(batch: usize, strategy: ExistenceStrategy) -> Self {
        GraphqlState {
            batch: AtomicUsize::new(batch.max(1)),
            off: AtomicBool::new(strategy == ExistenceStrategy::Subscriptions),
            reason: Mutex::new(None),
        }
    }

    /// Whether lookups go through GraphQL.
    pub(crate) fn on(&self) -> bool {
        !self.off.load(Ordering::Relaxed)
    }

    pub(crate) fn batch(&self) -> usize {
        self.batch.load(Ordering::Relaxed).max(1)
    }

    /// Halves the batch (a "too complex" answer); returns the new size.
    pub(crate) fn halve(&self, from: usize) -> usize {
        let to = (from / 2).max(1);
        let _ = self
            .batch
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b > to).then_some(to)
            });
        tracing::info!(from, to, "GraphQL lookups: the batch was too large; halved");
        to
    }

    /// Stops using GraphQL for this client, logging why once.
    pub(crate) fn give_up(&self, reason: String) {
        if !self.off.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %reason,
                "GraphQL lookups are not usable with this account; existence is checked \
                 through GET /v1/subscriptions for the rest of the run (profiles without \
                 subscriptions then count as not found)"
            );
            if let Ok(mut r) = self.reason.lock() {
                *r = Some(reason);
            }
        }
    }

    /// Why GraphQL was given up, if it was.
    pub(crate) fn reason(&self) -> Option<String> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }
}

#[cfg(test)]
mod tests;
