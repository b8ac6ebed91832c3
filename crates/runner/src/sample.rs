//! A deterministic sample project: the model `init` and `demo` write, and the synthetic
//! models benchmarks generate. Same arguments, same bytes, on every machine.

use std::io::{self, Write};
use std::path::Path;

/// A small deterministic generator (SplitMix64); sample data only, not for anything secret.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// First names the generated models draw from (also used by `cargo xtask bench source`).
pub const FIRST: &[&str] = &[
    "Ann", "Bob", "Carla", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kofi",
    "Lena", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara",
];
/// Last names the generated models draw from.
pub const LAST: &[&str] = &[
    "Lee", "Garcia", "Smith", "Okafor", "Rossi", "Nguyen", "Kim", "Patel", "Muller", "Silva",
    "Cohen", "Haddad", "Brown", "Ivanova", "Tanaka",
];
/// City, state (empty: none), zip, country.
pub const PLACES: &[(&str, &str, &str, &str)] = &[
    ("Brooklyn", "NY", "11222", "US"),
    ("Austin", "TX", "78701", "US"),
    ("Boston", "MA", "02134", "US"),
    ("Denver", "CO", "80202", "US"),
    ("Seattle", "WA", "98101", "US"),
    ("Toronto", "ON", "M5V 2T6", "CA"),
    ("London", "", "SW1A 1AA", "GB"),
    ("Lyon", "", "69001", "FR"),
];
/// Loyalty tiers.
pub const TIERS: &[&str] = &["bronze", "silver", "gold", "platinum"];

/// Columns of the sample customer model.
pub const SAMPLE_COLUMNS: &[&str] = &[
    "email",
    "first_name",
    "last_name",
    "phone",
    "city",
    "state",
    "zip",
    "country",
    "birthday",
    "loyalty_tier",
    "lifetime_value",
    "vip",
];

/// Writes the sample customer model: `rows` rows, a handful of them deliberately invalid so
/// that a plan shows what a rejection looks like.
pub fn write_sample_model(w: &mut dyn Write, rows: u64) -> io::Result<()> {
    let mut rng = Rng::new(0x5EED);
    writeln!(w, "{}", SAMPLE_COLUMNS.join(","))?;
    for i in 0..rows {
        let first = rng.pick(FIRST);
        let last = rng.pick(LAST);
        let (city, state, zip, country) = PLACES[rng.below(PLACES.len() as u64) as usize];
        let mut email = format!(
            "{}.{}{}@example.com",
            first.to_lowercase(),
            last.to_lowercase(),
            i
        );
        let mut phone = if country == "US" {
            format!("(212) 555-{:04}", 100 + i % 9000)
        } else {
            String::new()
        };
        let mut country = country.to_owned();
        let mut birthday = format!(
            "{}-{:02}-{:02}",
            1950 + rng.below(55),
            1 + rng.below(12),
            1 + rng.below(28)
        );
        // A few rows a person would need to fix, spread through the file.
        match i % 250 {
            17 => {
                email = format!(
                    "{}.{}{}example.com",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    i
                )
            }
            61 => phone = "555-01".to_owned(),
            113 => country = "Atlantis".to_owned(),
            187 => birthday = "31/12/1990".to_owned(),
            _ => {}
        }
        // Messy but valid input: the tool normalizes it.
        if i % 7 == 3 {
            email = format!("  {}  ", email.to_uppercase());
        }
        let ltv = format!("{}.{:02}", rng.below(5000), rng.below(100));
        let vip = if rng.below(10) == 0 { "true" } else { "false" };
        writeln!(
            w,
            "{email},{first},{last},{phone},{city},{state},\"{zip}\",{country},{birthday},{},{ltv},{vip}",
            rng.pick(TIERS)
        )?;
    }
    Ok(())
}

/// The commented config `init` writes next to the sample model.
pub fn sample_config(model_path: &str, base_url: Option<&str>) -> String {
    let base_url = match base_url {
        Some(u) => format!("base_url = \"{u}\""),
        None => "# base_url = \"https://api.attentivemobile.com\"".to_owned(),
    };
    format!(
        r#"# attentive-sync project. Reference: docs/CONFIG.md
#
# Planning (`attentive-sync plan vip`) reads the model and the state file only; sending needs
# the API key of an Attentive private app with Custom Attributes and Subscribers permissions.

[state]
# SQLite file holding snapshots, runs and the existence cache (relative to this file).
path = "attentive-sync.db"

[destinations.attentive]
# Read from the environment; never printed, logged or stored.
api_key = "${{ATTENTIVE_API_KEY}}"
{base_url}
# requests_per_second = 150
# existence_check = "graphql"      # or "subscriptions" (a profile without subscriptions is then not found)

[models.customers]
source = "csv"                     # csv | jsonl
path = "{model_path}"
# delimiter = ","

[activations.vip]
model = "customers"
destination = "attentive"
# The column that matches existing Attentive contacts: kind = "email" or "phone".
identifier = {{ column = "email", kind = "email" }}
# Phones without +country code are read in this region; without it they are rejected.
default_phone_region = "US"
# date_order = "mdy"                # read 03/04/1990 as March 4 ("dmy": April 3)
# on_null = "omit"                  # or "clear": send "" when a text value becomes empty (not with a phone/email field)
# duplicates = "reject"             # or "first" / "last"
# A new phone is looked up first and left out when another contact holds it (docs/CONFIG.md).
attach_secondary = "checked"        # or "never" / "always" (may link two people's profiles)
# schedule = "0 */6 * * *"          # used by `attentive-sync serve` (cron; 6 fields: seconds first)
# timezone = "America/New_York"     # the schedule's IANA time zone (default "UTC")
# filter = "loyalty_tier in ('gold', 'platinum')"   # send a segment only (docs/CONFIG.md)

[activations.vip.standard]
first_name = "first_name"
last_name = "last_name"
phone = "phone"
city = "city"
state = "state"
zip_code = "zip"
country = "country"
date_of_birth = "birthday"

[activations.vip.custom]
"Loyalty Tier" = "loyalty_tier"
"Lifetime Value" = {{ column = "lifetime_value", type = "number" }}
"VIP" = {{ column = "vip", type = "bool" }}

# Alert rules watch every run and are on by default (docs/ALERTS.md): failed runs, rejected or
# not-found rows, slow runs, unusual numbers of changed contacts, mapping backfills, missed
# schedules. Tune them, or turn one off with `= false`:
# [activations.vip.alerts]
# rows_rejected = {{ percent = 2.0 }}
# slow_run = false

# Where run events and alerts go, once per change of state (docs/ALERTS.md):
# [notifications.ops]
# url = "https://ops.example.com/hooks/attentive-sync"
# secret_env = "ATTENTIVE_SYNC_WEBHOOK_SECRET"   # HMAC-SHA256 signing key, read from the environment
# [notifications.slack]
# kind = "slack"
# url = "${{SLACK_WEBHOOK_URL}}"
# events = ["alert.firing", "alert.resolved"]
"#
    )
}

/// Writes a sample project (config + model) into `dir`, refusing to overwrite files unless
/// `force`. Returns the config path.
pub fn write_sample_project(
    dir: &Path,
    rows: u64,
    base_url: Option<&str>,
    force: bool,
) -> io::Result<std::path::PathBuf> {
    let config = dir.join("attentive-sync.toml");
    let model = dir.join("data").join("customers.csv");
    for p in [&config, &model] {
        if p.exists() && !force {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists; pass --force to overwrite it", p.display()),
            ));
        }
    }
    std::fs::create_dir_all(dir.join("data"))?;
    let mut w = io::BufWriter::new(std::fs::File::create(&model)?);
    write_sample_model(&mut w, rows)?;
    w.flush()?;
    std::fs::write(&config, sample_config("data/customers.csv", base_url))?;
    Ok(config)
}

/// Standard fields used by the synthetic benchmark model, in order.
const BENCH_STANDARD: &[(&str, &str)] = &[
    ("first_name", "first_name"),
    ("last_name", "last_name"),
    ("address", "address"),
    ("city", "city"),
    ("state", "state"),
    ("zip_code", "zip"),
    ("country", "country"),
    ("organization", "company"),
];

/// Writes a synthetic model of `rows` rows with an email identifier and `attrs` mapped
/// attributes (up to 8 standard text fields, the rest custom: text, number, bool, date), and
/// the config that maps them. Deterministic for the same `(rows, attrs, seed)`.
pub fn write_bench_project(
    dir: &Path,
    rows: u64,
    attrs: usize,
    seed: u64,
) -> io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let n_std = attrs.min(BENCH_STANDARD.len());
    let n_custom = attrs - n_std;
    let mut cols: Vec<String> = vec!["email".into()];
    cols.extend(BENCH_STANDARD[..n_std].iter().map(|(_, c)| (*c).to_owned()));
    cols.extend((0..n_custom).map(|i| format!("c{i}")));
    let model = dir.join("model.csv");
    let mut w = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&model)?);
    writeln!(w, "{}", cols.join(","))?;
    let mut rng = Rng::new(seed);
    let mut line = String::with_capacity(512);
    for i in 0..rows {
        use std::fmt::Write as _;
        line.clear();
        let _ = write!(line, "user{i}@example.com");
        let (city, state, zip, country) = PLACES[rng.below(PLACES.len() as u64) as usize];
        for (field, _) in &BENCH_STANDARD[..n_std] {
            line.push(',');
            match *field {
                "first_name" => line.push_str(rng.pick(FIRST)),
                "last_name" => line.push_str(rng.pick(LAST)),
                "address" => {
                    let _ = write!(line, "{} Main Street", 1 + rng.below(999));
                }
                "city" => line.push_str(city),
                "state" => line.push_str(state),
                "zip_code" => line.push_str(zip),
                "country" => line.push_str(country),
                _ => {
                    let _ = write!(line, "Company {}", rng.below(500));
                }
            }
        }
        for c in 0..n_custom {
            line.push(',');
            match c % 4 {
                0 => line.push_str(rng.pick(TIERS)),
                1 => {
                    let _ = write!(line, "{}.{:02}", rng.below(100_000), rng.below(100));
                }
                2 => line.push_str(if rng.below(2) == 0 { "true" } else { "false" }),
                _ => {
                    let _ = write!(
                        line,
                        "20{:02}-{:02}-{:02}",
                        rng.below(25),
                        1 + rng.below(12),
                        1 + rng.below(28)
                    );
                }
            }
        }
        writeln!(w, "{line}")?;
    }
    w.flush()?;
    let mut cfg = String::from(
        "[destinations.attentive]\napi_key = \"${ATTENTIVE_API_KEY}\"\n\n[models.bench]\nsource = \"csv\"\npath = \"model.csv\"\n\n[activations.bench]\nmodel = \"bench\"\ndestination = \"attentive\"\nidentifier = { column = \"email\", kind = \"email\" }\n\n[activations.bench.standard]\n",
    );
    for (field, col) in &BENCH_STANDARD[..n_std] {
        cfg.push_str(&format!("{field} = \"{col}\"\n"));
    }
    cfg.push_str("\n[activations.bench.custom]\n");
    for c in 0..n_custom {
        let ty = ["string", "number", "bool", "date"][c % 4];
        cfg.push_str(&format!(
            "\"Attr {c}\" = {{ column = \"c{c}\", type = \"{ty}\" }}\n"
        ));
    }
    let config = dir.join("attentive-sync.toml");
    std::fs::write(&config, cfg)?;
    Ok(config)
}
