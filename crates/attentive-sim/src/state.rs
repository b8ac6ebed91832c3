//! The simulator's state and the handle tests use to inspect and steer it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::config::{CompanyInfo, Faults, Permission, RateLimitAlgorithm, SeedContact, SimConfig};
use crate::model::{
    BulkJobInfo, BulkJobStatus, Contact, ContactOrigin, Counters, CustomAttribute, CustomType,
    RequestRecord, Violation, ViolationKind,
};
use crate::validate::{self, Identifiers, UserWrite};
use crate::Error;

/// Which rate limit window a request counts against (per key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum LimitClass {
    /// Every non-bulk route of the key (`RateLimitScope::Key`).
    Default,
    /// The `/v2/bulk/...` routes (their own, lower limit).
    Bulk,
    /// One non-bulk endpoint, `METHOD /path` (`RateLimitScope::Endpoint`).
    Endpoint(String),
}

/// What the gate decided for an API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Unauthorized,
    RateLimited,
    Forbidden(Permission),
    Burst429,
    Drop,
    Error(u16),
    Proceed,
}

#[derive(Debug, Clone)]
pub(crate) struct Admission {
    pub(crate) seq: u64,
    pub(crate) key_id: Option<String>,
    /// `(limit, remaining)` for the rate-limit headers.
    pub(crate) rate: Option<(u32, u32)>,
    pub(crate) verdict: Verdict,
    pub(crate) delay: Duration,
}

#[derive(Debug)]
pub(crate) enum ApplyError {
    BadRequest(String),
    NotFound,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    count: u32,
    tokens: f64,
}

impl Window {
    fn new(limit: u32, now: Instant) -> Self {
        Window {
            start: now,
            count: 0,
            tokens: f64::from(limit),
        }
    }

    /// Takes one request; `Ok(remaining)` or `Err(())` when over the limit.
    fn take(&mut self, alg: RateLimitAlgorithm, limit: u32, now: Instant) -> Result<u32, ()> {
        match alg {
            RateLimitAlgorithm::FixedWindow => {
                if now.duration_since(self.start) >= Duration::from_secs(1) {
                    self.start = now;
                    self.count = 0;
                }
                if self.count < limit {
                    self.count += 1;
                    Ok(limit - self.count)
                } else {
                    Err(())
                }
            }
            RateLimitAlgorithm::TokenBucket => {
                let elapsed = now.duration_since(self.start).as_secs_f64();
                self.start = now;
                self.tokens = (self.tokens + elapsed * f64::from(limit)).min(f64::from(limit));
                if self.tokens >= 1.0 {
                    self.tokens -= 1.0;
                    // Truncation is intended: whole requests left.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    Ok(self.tokens.floor() as u32)
                } else {
                    Err(())
                }
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct Job {
    created: Instant,
    users: Vec<Value>,
    /// Decided when the job was created: it ends `FAILED`, nothing applied.
    fail: bool,
    /// Seed of the job's own generator (one number per record, drawn when processed).
    seed: u64,
    pub(crate) status: BulkJobStatus,
    /// One JSON line per record, once processed.
    pub(crate) results: Vec<String>,
    applied: usize,
    rejected: usize,
    errored: usize,
    /// `GET /v2/bulk/job/{id}` polls answered so far.
    pub(crate) polls: u32,
}

impl Job {
    pub(crate) fn total(&self) -> usize {
        self.users.len()
    }
}

#[derive(Debug)]
pub(crate) struct State {
    contacts: Vec<Contact>,
    by_email: HashMap<String, usize>,
    by_phone: HashMap<String, usize>,
    by_client: HashMap<String, usize>,
    by_custom_id: HashMap<(String, String), usize>,
    custom_types: BTreeMap<String, CustomType>,
    requests: VecDeque<RequestRecord>,
    next_seq: u64,
    counters: Counters,
    violations: Vec<Violation>,
    pub(crate) jobs: BTreeMap<String, Job>,
    next_job: u64,
    /// Jobs created since the faults were last set (the seed of each job's generator).
    jobs_since_faults: u64,
    limiter: HashMap<(usize, LimitClass), Window>,
    faults: Faults,
    rng: StdRng,
    faults_epoch: Instant,
    /// What `GET /v1/me` and GraphQL `installerCompany` answer (switchable; kept by reset).
    pub(crate) company: CompanyInfo,
}

fn is_clear(v: &Value) -> bool {
    v.as_str() == Some("")
}

impl State {
    fn new(faults: Faults, company: CompanyInfo) -> Self {
        State {
            contacts: Vec::new(),
            by_email: HashMap::new(),
            by_phone: HashMap::new(),
            by_client: HashMap::new(),
            by_custom_id: HashMap::new(),
            custom_types: BTreeMap::new(),
            requests: VecDeque::new(),
            next_seq: 0,
            counters: Counters::default(),
            violations: Vec::new(),
            jobs: BTreeMap::new(),
            next_job: 0,
            jobs_since_faults: 0,
            limiter: HashMap::new(),
            rng: StdRng::seed_from_u64(faults.seed),
            faults,
            faults_epoch: Instant::now(),
            company,
        }
    }

    fn set_faults(&mut self, faults: Faults) {
        self.rng = StdRng::seed_from_u64(faults.seed);
        self.faults = faults;
        self.faults_epoch = Instant::now();
        self.jobs_since_faults = 0;
    }

    /// The faults in force.
    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    // ---- contacts -------------------------------------------------------------------------

    fn find(&self, ids: &Identifiers) -> Option<usize> {
        ids.email
            .as_ref()
            .and_then(|e| self.by_email.get(&e.to_lowercase()))
            .or_else(|| ids.phone.as_ref().and_then(|p| self.by_phone.get(p)))
            .or_else(|| {
                ids.client_user_id
                    .as_ref()
                    .and_then(|c| self.by_client.get(c))
            })
            .or_else(|| ids.custom.iter().find_map(|k| self.by_custom_id.get(k)))
            .copied()
    }

    pub(crate) fn find_by_query(
        &self,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> Option<&Contact> {
        let idx = match (email, phone) {
            (Some(e), _) => self.by_email.get(&e.to_lowercase()),
            (None, Some(p)) => self.by_phone.get(p),
            (None, None) => None,
        }?;
        self.contacts.get(*idx)
    }

    fn create(&mut self, origin: ContactOrigin) -> usize {
        let idx = self.contacts.len();
        self.contacts.push(Contact {
            id: idx as u64 + 1,
            email: None,
            phone: None,
            client_user_id: None,
            custom_identifiers: BTreeMap::new(),
            standard: BTreeMap::new(),
            custom: BTreeMap::new(),
            origin,
            writes: 0,
            subscribed: true,
        });
        idx
    }

    /// Gives the contact the identifiers it lacks, unless another contact holds them.
    fn attach_ids(&mut self, idx: usize, ids: &Identifiers) {
        if let Some(email) = &ids.email {
            let key = email.to_lowercase();
            if self.contacts[idx].email.is_none() && !self.by_email.contains_key(&key) {
                self.by_email.insert(key, idx);
                self.contacts[idx].email = Some(email.clone());
            }
        }
        if let Some(phone) = &ids.phone {
            if self.contacts[idx].phone.is_none() && !self.by_phone.contains_key(phone) {
                self.by_phone.insert(phone.clone(), idx);
                self.contacts[idx].phone = Some(phone.clone());
            }
        }
        if let Some(client) = &ids.client_user_id {
            if self.contacts[idx].client_user_id.is_none() && !self.by_client.contains_key(client) {
                self.by_client.insert(client.clone(), idx);
                self.contacts[idx].client_user_id = Some(client.clone());
            }
        }
        for (name, value) in &ids.custom {
            let key = (name.clone(), value.clone());
            if !self.contacts[idx].custom_identifiers.contains_key(name)
                && !self.by_custom_id.contains_key(&key)
            {
                self.by_custom_id.insert(key, idx);
                self.contacts[idx]
                    .custom_identifiers
                    .insert(name.clone(), value.clone());
            }
        }
    }

    /// Applies one validated write: custom types are checked first (nothing is applied when
    /// one conflicts), then the contact is found or (when `create` is set) created.
    pub(crate) fn apply_write(
        &mut self,
        w: &UserWrite,
        create: Option<ContactOrigin>,
        count_write: bool,
    ) -> Result<bool, ApplyError> {
        let mut new_types: Vec<(String, CustomType)> = Vec::new();
        for (name, value) in &w.custom {
            if is_clear(value) {
                continue;
            }
            let Some(t) = CustomType::of(value) else {
                continue;
            };
            match self.custom_types.get(name) {
                Some(&fixed) if fixed != t => {
                    return Err(ApplyError::BadRequest(format!(
                        "Custom attribute '{name}' has type {fixed} (fixed by the first value \
                         received); got {value} of type {t}"
                    )))
                }
                Some(_) => {}
                None => new_types.push((name.clone(), t)),
            }
        }
        let (idx, created) = match self.find(&w.ids) {
            Some(idx) => (idx, false),
            None => match create {
                Some(origin) => (self.create(origin), true),
                None => return Err(ApplyError::NotFound),
            },
        };
        self.attach_ids(idx, &w.ids);
        self.custom_types.extend(new_types);
        let contact = &mut self.contacts[idx];
        for (path, value) in &w.standard {
            if is_clear(value) {
                contact.standard.remove(path);
            } else {
                contact.standard.insert(path.clone(), value.clone());
            }
        }
        for (name, value) in &w.custom {
            match CustomType::of(value) {
                Some(kind) if !is_clear(value) => {
                    contact.custom.insert(
                        name.clone(),
                        CustomAttribute {
                            value: value.clone(),
                            kind,
                        },
                    );
                }
                _ => {
                    contact.custom.remove(name);
                }
            }
        }
        if count_write {
            contact.writes += 1;
        }
        Ok(created)
    }

    fn seed(&mut self, seeds: &[SeedContact]) -> Result<usize, Error> {
        let mut created = 0;
        for (i, s) in seeds.iter().enumerate() {
            let path = format!("contacts[{i}]");
            let err = |m: String| Error::Seed(m);
            let ids = Identifiers {
                email: s.email.clone().filter(|e| !e.is_empty()),
                phone: s.phone.clone().filter(|p| !p.is_empty()),
                client_user_id: s.client_user_id.clone().filter(|c| !c.is_empty()),
                custom: Vec::new(),
            };
            if ids.email.is_none() && ids.phone.is_none() && ids.client_user_id.is_none() {
                return Err(err(format!("{path} has no email, phone or clientUserId")));
            }
            if let Some(e) = &ids.email {
                validate::check_email(e, &format!("{path}.email")).map_err(err)?;
            }
            if let Some(p) = &ids.phone {
                validate::check_phone(p, &format!("{path}.phone")).map_err(err)?;
            }
            let custom = validate::parse_custom(
                &Value::Object(s.custom.clone().into_iter().collect()),
                &format!("{path}.custom"),
            )
            .map_err(err)?;
            let write = UserWrite {
                ids,
                standard: Vec::new(),
                custom,
            };
            match self.apply_write(&write, Some(ContactOrigin::Seed), false) {
                Ok(true) => {
                    created += 1;
                    // The contact just created is the last one.
                    if let Some(c) = self.contacts.last_mut() {
                        c.subscribed = s.subscribed;
                    }
                }
                Ok(false) => {}
                Err(ApplyError::BadRequest(m)) => return Err(err(format!("{path}: {m}"))),
                Err(ApplyError::NotFound) => {}
            }
        }
        Ok(created)
    }

    // ---- gate, log, counters --------------------------------------------------------------

    pub(crate) fn admit(
        &mut self,
        config: &SimConfig,
        token: Option<&str>,
        class: LimitClass,
        needs: &[Permission],
        now: Instant,
    ) -> Admission {
        self.next_seq += 1;
        let seq = self.next_seq;
        // Always draw the same four numbers so that a request sequence is reproducible.
        let (r_jitter, r_spike, r_drop, r_error): (f64, f64, f64, f64) = (
            self.rng.random(),
            self.rng.random(),
            self.rng.random(),
            self.rng.random(),
        );
        let f = &self.faults;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let jitter = ((r_jitter * (f.jitter_ms as f64 + 1.0)) as u64).min(f.jitter_ms);
        let spike = if r_spike < f.spike_probability {
            f.spike_ms
        } else {
            0
        };
        let delay = Duration::from_millis(f.latency_ms + jitter + spike);
        let limit = match class {
            LimitClass::Default | LimitClass::Endpoint(_) => config.rate_limit_per_second,
            LimitClass::Bulk => config.bulk_rate_limit_per_second,
        };
        let mut adm = Admission {
            seq,
            key_id: None,
            rate: (limit > 0).then_some((limit, limit)),
            verdict: Verdict::Proceed,
            delay,
        };
        let key = token.and_then(|t| config.keys.iter().position(|k| k.key == t));
        let Some(key_idx) = key else {
            adm.key_id = token.map(|_| "unknown".to_owned());
            adm.verdict = Verdict::Unauthorized;
            return adm;
        };
        adm.key_id = Some(format!("key-{}", key_idx + 1));
        if limit > 0 {
            let window = self
                .limiter
                .entry((key_idx, class))
                .or_insert_with(|| Window::new(limit, now));
            match window.take(config.rate_limit_algorithm, limit, now) {
                Ok(remaining) => adm.rate = Some((limit, remaining)),
                Err(()) => {
                    adm.rate = Some((limit, 0));
                    adm.verdict = Verdict::RateLimited;
                    return adm;
                }
            }
        }
        let perms = &config.keys[key_idx].permissions;
        if let Some(missing) = needs.iter().find(|p| !perms.contains(p)) {
            adm.verdict = Verdict::Forbidden(*missing);
            return adm;
        }
        if let Some(b) = f.burst_429 {
            let elapsed = now.saturating_duration_since(self.faults_epoch).as_millis();
            if elapsed % u128::from(b.period_ms) < u128::from(b.duration_ms) {
                if let Some((l, _)) = adm.rate {
                    adm.rate = Some((l, 0));
                }
                adm.verdict = Verdict::Burst429;
                return adm;
            }
        }
        if r_drop < f.drop_rate {
            adm.verdict = Verdict::Drop;
            return adm;
        }
        let mut acc = 0.0;
        for (&status, &p) in &f.error_rates {
            acc += p;
            if r_error < acc {
                adm.verdict = Verdict::Error(status);
                return adm;
            }
        }
        adm
    }

    pub(crate) fn record_violation(
        &mut self,
        seq: u64,
        kind: ViolationKind,
        endpoint: &str,
        detail: String,
        key_id: Option<String>,
    ) {
        self.violations.push(Violation {
            request_seq: seq,
            kind,
            endpoint: endpoint.to_owned(),
            detail,
            key_id,
        });
    }

    pub(crate) fn record_request(&mut self, rec: RequestRecord, max: usize, verdict: Verdict) {
        let c = &mut self.counters;
        c.total += 1;
        let status_key = rec
            .status
            .map_or_else(|| "dropped".to_owned(), |s| s.to_string());
        *c.by_endpoint
            .entry(rec.endpoint.clone())
            .or_default()
            .entry(status_key)
            .or_default() += 1;
        if rec.status == Some(429) {
            c.too_many_requests += 1;
        }
        match verdict {
            Verdict::RateLimited => c.rate_limited += 1,
            Verdict::Burst429 | Verdict::Error(_) => c.faults_injected += 1,
            Verdict::Drop => {
                c.faults_injected += 1;
                c.dropped += 1;
            }
            _ => {}
        }
        if max > 0 {
            while self.requests.len() >= max {
                self.requests.pop_front();
            }
            self.requests.push_back(rec);
        }
    }

    // ---- bulk jobs ------------------------------------------------------------------------

    pub(crate) fn create_job(&mut self, users: Vec<Value>) -> String {
        self.next_job += 1;
        self.jobs_since_faults += 1;
        let id = format!("bulk-job-{:08}", self.next_job);
        // The draw is made only when the rate is set, as before the deterministic faults
        // existed, so that the request faults after a job stay what they were.
        let drawn_failure = self.faults.bulk_job_failure_rate > 0.0
            && self.rng.random::<f64>() < self.faults.bulk_job_failure_rate;
        let fail = if self.faults.bulk_fail_next_jobs > 0 {
            self.faults.bulk_fail_next_jobs -= 1;
            true
        } else {
            drawn_failure
        };
        // The job's generator depends on the fault seed and on how many jobs were created
        // since the faults were set, not on the requests around it nor on when the job is
        // processed.
        let seed = self
            .faults
            .seed
            .wrapping_add(self.jobs_since_faults.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.jobs.insert(
            id.clone(),
            Job {
                created: Instant::now(),
                users,
                fail,
                seed,
                status: BulkJobStatus::Pending,
                results: Vec::new(),
                applied: 0,
                rejected: 0,
                errored: 0,
                polls: 0,
            },
        );
        id
    }

    /// Moves jobs along: half the delay `PENDING`, then `IN_PROGRESS`, then processed with
    /// the faults in force at that moment.
    pub(crate) fn refresh_jobs(&mut self, delay: Duration, now: Instant) {
        let due: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| matches!(j.status, BulkJobStatus::Pending | BulkJobStatus::InProgress))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            let elapsed = now.saturating_duration_since(job.created);
            if elapsed < delay {
                if elapsed * 2 >= delay {
                    job.status = BulkJobStatus::InProgress;
                }
                continue;
            }
            if job.fail {
                job.status = BulkJobStatus::Failed;
                continue;
            }
            let users = std::mem::take(&mut job.users);
            let mut rng = StdRng::seed_from_u64(job.seed);
            let forced = self.faults.bulk_record_errors.clone();
            let error_rate = self.faults.bulk_record_error_rate;
            let reject_rate = self.faults.bulk_record_reject_rate;
            let mut lines = Vec::with_capacity(users.len());
            let (mut applied, mut rejected, mut errored) = (0, 0, 0);
            for user in &users {
                // One draw per record whatever happens to it, so that the outcome of a record
                // does not depend on the others'.
                let draw: f64 = rng.random();
                let outcome = if let Some(status) = forced_status(&forced, user) {
                    Err((status, record_error_message(status, user)))
                } else if draw < error_rate {
                    Err((500, record_error_message(500, user)))
                } else if draw < error_rate + reject_rate {
                    Err((400, record_error_message(400, user)))
                } else {
                    validate::parse_v2_user(user, "")
                        .and_then(|w| {
                            self.apply_write(&w, Some(ContactOrigin::Bulk), true)
                                .map_err(|e| match e {
                                    ApplyError::BadRequest(m) => m,
                                    ApplyError::NotFound => "User not found".to_owned(),
                                })
                        })
                        .map_err(|m| (400, m))
                };
                let response = match outcome {
                    Ok(_) => {
                        applied += 1;
                        json!({"status": 202, "message": "Accepted"})
                    }
                    Err((status, m)) => {
                        if status >= 500 {
                            errored += 1;
                        } else {
                            rejected += 1;
                        }
                        json!({"status": status, "message": m})
                    }
                };
                lines.push(json!({"request": user, "response": response}).to_string());
            }
            if let Some(job) = self.jobs.get_mut(&id) {
                job.users = users;
                job.results = lines;
                job.applied = applied;
                job.rejected = rejected;
                job.errored = errored;
                job.status = BulkJobStatus::Completed;
            }
        }
    }
}

/// The status `bulk_record_errors` gives a record: by its email as sent (case-insensitive),
/// else by its phone as sent.
fn forced_status(forced: &BTreeMap<String, u16>, user: &Value) -> Option<u16> {
    if forced.is_empty() {
        return None;
    }
    let ids = user.get("identifiers");
    let field = |name: &str| ids.and_then(|i| i.get(name)).and_then(Value::as_str);
    if let Some(email) = field("email") {
        // Lowercased as contacts are matched (not only ASCII).
        let email = email.to_lowercase();
        let hit = forced
            .iter()
            .find(|(k, _)| k.contains('@') && k.to_lowercase() == email);
        if let Some((_, &status)) = hit {
            return Some(status);
        }
    }
    field("phone").and_then(|p| forced.get(p).copied())
}

/// The message of an injected per-record failure.
fn record_error_message(status: u16, user: &Value) -> String {
    match status {
        500..=599 => "Internal error".to_owned(),
        400 => match first_attribute(user) {
            Some(name) => format!("Invalid value for attribute '{name}'"),
            None => "Invalid value for attributes".to_owned(),
        },
        404 => "User not found".to_owned(),
        429 => "Too many requests".to_owned(),
        _ => axum::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Rejected")
            .to_owned(),
    }
}

/// The first attribute a record sets: `firstName`, `location.city`, or a custom name.
fn first_attribute(user: &Value) -> Option<String> {
    let attributes = user.get("attributes")?.as_object()?;
    for (key, value) in attributes {
        match value.as_object() {
            Some(inner) if key == "custom" => {
                if let Some(name) = inner.keys().next() {
                    return Some(name.clone());
                }
            }
            Some(inner) => {
                if let Some(name) = inner.keys().next() {
                    return Some(format!("{key}.{name}"));
                }
            }
            None => return Some(key.clone()),
        }
    }
    None
}

/// Shared between the server and every [`SimHandle`].
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    state: Mutex<State>,
    pub(crate) bound: OnceLock<SocketAddr>,
}

/// A handle on a simulator's state: inspect contacts, requests, counters, violations; set
/// faults; seed; reset. Cheap to clone; every clone sees the same simulator.
#[derive(Clone)]
pub struct SimHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.shared.bound.get())
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// A simulator state for `config` (validated, contacts seeded), not yet serving.
    pub fn new(config: SimConfig) -> Result<Self, Error> {
        config.validate()?;
        let mut state = State::new(config.faults.clone(), config.company.clone());
        state.seed(&config.contacts)?;
        Ok(SimHandle {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(state),
                bound: OnceLock::new(),
            }),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters for a test double; keep serving.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    pub(crate) fn bulk_delay(&self) -> Duration {
        Duration::from_millis(self.shared.config.bulk_processing_delay_ms)
    }

    /// The address the server is bound to, once it is serving.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.bound.get().copied()
    }

    /// Every contact, in creation order (due bulk jobs are processed first).
    pub fn contacts(&self) -> Vec<Contact> {
        let mut st = self.lock();
        st.refresh_jobs(self.bulk_delay(), Instant::now());
        st.contacts.clone()
    }

    /// Number of contacts.
    pub fn contact_count(&self) -> usize {
        let mut st = self.lock();
        st.refresh_jobs(self.bulk_delay(), Instant::now());
        st.contacts.len()
    }

    /// The contact with this email (case-insensitive, when it contains `@`), else this phone,
    /// else this `clientUserId`.
    pub fn find_contact(&self, identifier: &str) -> Option<Contact> {
        let mut st = self.lock();
        st.refresh_jobs(self.bulk_delay(), Instant::now());
        let ids = if identifier.contains('@') {
            Identifiers {
                email: Some(identifier.to_owned()),
                ..Identifiers::default()
            }
        } else {
            Identifiers {
                phone: Some(identifier.to_owned()),
                client_user_id: Some(identifier.to_owned()),
                ..Identifiers::default()
            }
        };
        st.find(&ids).map(|i| st.contacts[i].clone())
    }

    /// The account's custom attribute types (fixed by the first value received).
    pub fn custom_attribute_types(&self) -> BTreeMap<String, CustomType> {
        self.lock().custom_types.clone()
    }

    /// The request log of API routes, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        let mut out: Vec<RequestRecord> = self.lock().requests.iter().cloned().collect();
        out.sort_by_key(|r| r.seq);
        out
    }

    /// The requests logged since `cursor`, in the order they were answered (not their arrival
    /// order), and the cursor to pass next time (start with 0). For reading a long log a piece
    /// at a time: a request is logged when it is answered, so a request that arrived earlier
    /// may be logged after one that arrived later, and [`SimHandle::requests`] filtered by
    /// `seq` could miss it. Requests evicted by `max_logged_requests` are skipped.
    pub fn requests_since(&self, cursor: u64) -> (Vec<RequestRecord>, u64) {
        let st = self.lock();
        let logged = st.counters.total;
        let first = logged.saturating_sub(st.requests.len() as u64);
        let skip = usize::try_from(cursor.saturating_sub(first)).unwrap_or(usize::MAX);
        (st.requests.iter().skip(skip).cloned().collect(), logged)
    }

    /// Request counters.
    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    /// Recorded violations.
    pub fn violations(&self) -> Vec<Violation> {
        self.lock().violations.clone()
    }

    /// Bulk jobs, in creation order (due ones are processed first): status, records, and
    /// how many were applied, rejected (4xx) and errored (5xx).
    pub fn bulk_jobs(&self) -> Vec<BulkJobInfo> {
        let mut st = self.lock();
        st.refresh_jobs(self.bulk_delay(), Instant::now());
        st.jobs
            .iter()
            .map(|(id, j)| BulkJobInfo {
                id: id.clone(),
                status: j.status,
                total_records: j.total(),
                succeeded: j.applied,
                rejected: j.rejected,
                applied: j.applied,
                errored: j.errored,
                polls: j.polls,
            })
            .collect()
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Replaces the faults (validated); restarts the fault generator from `faults.seed` and
    /// the 429-burst cycle.
    pub fn set_faults(&self, faults: Faults) -> Result<(), Error> {
        faults.validate()?;
        self.lock().set_faults(faults);
        Ok(())
    }

    /// Adds contacts (an existing contact with the same email/phone is not duplicated).
    /// Returns how many were created.
    pub fn seed_contacts(&self, contacts: &[SeedContact]) -> Result<usize, Error> {
        self.lock().seed(contacts)
    }

    /// Back to the configured start: contacts, types, log, counters, violations, jobs, rate
    /// windows cleared; seed contacts and faults from the config restored. The current
    /// company (see [`SimHandle::set_company`]) is kept.
    pub fn reset(&self) -> Result<(), Error> {
        let company = self.company();
        let mut fresh = State::new(self.shared.config.faults.clone(), company);
        fresh.seed(&self.shared.config.contacts)?;
        *self.lock() = fresh;
        Ok(())
    }

    /// The company `GET /v1/me` answers now (and GraphQL `installerCompany { id name }`).
    pub fn company(&self) -> CompanyInfo {
        self.lock().company.clone()
    }

    /// Switches the account: `GET /v1/me` (and GraphQL `installerCompany`) answer `company`
    /// from now on, until the next switch; [`SimHandle::reset`] keeps it.
    pub fn set_company(&self, company: CompanyInfo) {
        self.lock().company = company;
    }
}
