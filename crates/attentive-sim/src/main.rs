//! `attentive-sim`: run the Attentive API simulator as a server.

use std::net::SocketAddr;

use anyhow::Context as _;
use attentive_sim::{BulkResultField, Burst429, Faults, SeedContact, SimConfig, SimKey, Simulator};
use clap::Parser;

/// A local simulator of Attentive's API (attributes, subscription lookup, bulk jobs), with
/// rate limits and fault injection. Admin and inspection routes live under /_sim/.
#[derive(Debug, Parser)]
#[command(name = "attentive-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// API key, `KEY` (every permission) or `KEY:perm,perm` (attributes, subscriptions,
    /// identity, events, ecommerce, segments, all). Repeatable. Default: `sim-key`.
    #[arg(long = "key", value_name = "KEY[:PERMS]")]
    keys: Vec<String>,

    /// Seed contacts: a JSON array of {"email","phone","clientUserId"} or a CSV with an
    /// email and/or phone header.
    #[arg(long, value_name = "FILE")]
    contacts: Option<std::path::PathBuf>,

    /// Requests per second per key and endpoint (0 = unlimited); see --rate-limit-scope.
    #[arg(long, default_value_t = 150)]
    rate_limit: u32,

    /// What --rate-limit counts together: `endpoint` (each endpoint of a key on its own) or
    /// `key` (all of a key's non-bulk endpoints).
    #[arg(long, default_value = "endpoint", value_parser = ["endpoint", "key"])]
    rate_limit_scope: String,

    /// Requests per second per key on /v2/bulk/ routes (0 = unlimited).
    #[arg(long, default_value_t = 100)]
    bulk_rate_limit: u32,

    /// Send `Retry-After: SECS` on 429 responses (Attentive documents none).
    #[arg(long, value_name = "SECS")]
    retry_after: Option<u64>,

    /// Answer STATUS with probability P instead of processing, e.g. `500=0.2`. Repeatable.
    #[arg(long = "error-rate", value_name = "STATUS=P")]
    error_rates: Vec<String>,

    /// Fixed latency added to every API response.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,

    /// Random extra latency, uniform in 0..=JITTER.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,

    /// Probability of a latency spike.
    #[arg(long, default_value_t = 0.0)]
    spike_probability: f64,

    /// Extra latency of a spike.
    #[arg(long, default_value_t = 0)]
    spike_ms: u64,

    /// Probability of closing the connection without a response.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,

    /// 429 bursts: answer 429 for N ms out of every M ms.
    #[arg(long, value_name = "N/M")]
    burst_429: Option<String>,

    /// Probability that a bulk job ends FAILED.
    #[arg(long, default_value_t = 0.0)]
    bulk_failure_rate: f64,

    /// The next N bulk jobs created end FAILED.
    #[arg(long, default_value_t = 0, value_name = "N")]
    bulk_fail_next_jobs: u32,

    /// Probability per bulk record of a 500 "Internal error" result line (not applied).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    bulk_record_error_rate: f64,

    /// Probability per bulk record of a 400 "Invalid value for attribute" result line (not
    /// applied).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    bulk_record_reject_rate: f64,

    /// A bulk record with this email (case-insensitive) or phone gets a result line with
    /// STATUS (400..=599) and is not applied, e.g. `ann@example.com=500`. Repeatable.
    #[arg(long = "bulk-record-error", value_name = "EMAIL|PHONE=STATUS")]
    bulk_record_errors: Vec<String>,

    /// The first N polls of each bulk job answer status NEEDS_REVIEW (no URL).
    #[arg(long, default_value_t = 0, value_name = "N")]
    bulk_unknown_status_polls: u32,

    /// Result files lose their second half and end with a cut-off line (records applied).
    #[arg(long)]
    bulk_truncate_results: bool,

    /// Delay before a bulk job is processed.
    #[arg(long, default_value_t = 0)]
    bulk_delay_ms: u64,

    /// Which field of GET /v2/bulk/job/{id} carries the result URL: `url`, `result-url`
    /// (`resultUrl`) or `both`.
    #[arg(long, default_value = "url", value_name = "url|result-url|both")]
    bulk_result_field: BulkResultField,

    /// Seed of the fault generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Answer 404 to POST /v1/attributes/custom for unknown users instead of creating them.
    #[arg(long)]
    v1_no_create: bool,

    /// The companyId GET /v1/me answers (the account the key belongs to).
    #[arg(long, value_name = "ID")]
    company_id: Option<String>,

    /// The companyName GET /v1/me answers.
    #[arg(long, value_name = "NAME")]
    company_name: Option<String>,

    /// Answer 404 to POST /v1/graphql (an account without the beta GraphQL API).
    #[arg(long)]
    no_graphql: bool,

    /// Most user aliases in one GraphQL query (0 = no limit).
    #[arg(long, default_value_t = 100)]
    graphql_max_aliases: usize,
}

fn parse_error_rate(spec: &str) -> anyhow::Result<(u16, f64)> {
    let (status, p) = spec
        .split_once('=')
        .with_context(|| format!("--error-rate '{spec}': expected STATUS=P, e.g. 500=0.2"))?;
    Ok((
        status
            .trim()
            .parse()
            .with_context(|| format!("--error-rate '{spec}': bad status"))?,
        p.trim()
            .parse()
            .with_context(|| format!("--error-rate '{spec}': bad probability"))?,
    ))
}

fn parse_bulk_record_error(spec: &str) -> anyhow::Result<(String, u16)> {
    let (id, status) = spec.rsplit_once('=').with_context(|| {
        format!("--bulk-record-error '{spec}': expected EMAIL=STATUS or PHONE=STATUS")
    })?;
    Ok((
        id.trim().to_owned(),
        status
            .trim()
            .parse()
            .with_context(|| format!("--bulk-record-error '{spec}': bad status"))?,
    ))
}

fn parse_burst(spec: &str) -> anyhow::Result<Burst429> {
    let (n, m) = spec
        .split_once('/')
        .with_context(|| format!("--burst-429 '{spec}': expected N/M (ms), e.g. 200/1000"))?;
    Ok(Burst429 {
        duration_ms: n.trim().parse().context("--burst-429: bad N")?,
        period_ms: m.trim().parse().context("--burst-429: bad M")?,
    })
}

fn config(args: &Args) -> anyhow::Result<SimConfig> {
    let mut config = SimConfig {
        listen: args.listen,
        rate_limit_per_second: args.rate_limit,
        rate_limit_scope: if args.rate_limit_scope == "key" {
            attentive_sim::RateLimitScope::Key
        } else {
            attentive_sim::RateLimitScope::Endpoint
        },
        bulk_rate_limit_per_second: args.bulk_rate_limit,
        retry_after_secs: args.retry_after,
        v1_creates_unknown_users: !args.v1_no_create,
        bulk_processing_delay_ms: args.bulk_delay_ms,
        bulk_result_url_field: args.bulk_result_field,
        graphql_enabled: !args.no_graphql,
        graphql_max_aliases: args.graphql_max_aliases,
        ..SimConfig::default()
    };
    if let Some(id) = &args.company_id {
        config.company.company_id.clone_from(id);
    }
    if let Some(name) = &args.company_name {
        config.company.company_name.clone_from(name);
    }
    if !args.keys.is_empty() {
        config.keys = args
            .keys
            .iter()
            .map(|k| SimKey::parse_spec(k))
            .collect::<Result<_, _>>()?;
    }
    if let Some(path) = &args.contacts {
        config.contacts = SeedContact::load_file(path)?;
    }
    config.faults = Faults {
        error_rates: args
            .error_rates
            .iter()
            .map(|s| parse_error_rate(s))
            .collect::<anyhow::Result<_>>()?,
        latency_ms: args.latency_ms,
        jitter_ms: args.jitter_ms,
        spike_probability: args.spike_probability,
        spike_ms: args.spike_ms,
        drop_rate: args.drop_rate,
        burst_429: args.burst_429.as_deref().map(parse_burst).transpose()?,
        bulk_job_failure_rate: args.bulk_failure_rate,
        bulk_fail_next_jobs: args.bulk_fail_next_jobs,
        bulk_record_error_rate: args.bulk_record_error_rate,
        bulk_record_reject_rate: args.bulk_record_reject_rate,
        bulk_record_errors: args
            .bulk_record_errors
            .iter()
            .map(|s| parse_bulk_record_error(s))
            .collect::<anyhow::Result<_>>()?,
        bulk_unknown_status_polls: args.bulk_unknown_status_polls,
        bulk_truncate_results: args.bulk_truncate_results,
        seed: args.seed,
    };
    // Checked here too, so that a bad flag is named before anything is bound.
    config.validate()?;
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = config(&args)?;
    let keys = config.keys.len();
    let contacts = config.contacts.len();
    let sim = Simulator::start(config).await?;
    // One plain line on stdout, for scripts that start the simulator on port 0.
    println!("attentive-sim listening on {}", sim.base_url());
    tracing::info!(
        base_url = %sim.base_url(),
        keys,
        contacts,
        "attentive-sim ready (inspect with GET /_sim/contacts, /_sim/requests, /_sim/violations)"
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("shutting down");
    sim.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_build_a_config() {
        let args = Args::parse_from([
            "attentive-sim",
            "--listen",
            "127.0.0.1:0",
            "--key",
            "a",
            "--key",
            "b:attributes",
            "--error-rate",
            "500=0.2",
            "--error-rate",
            "503=0.05",
            "--burst-429",
            "100/1000",
            "--seed",
            "7",
        ]);
        let c = config(&args).unwrap();
        assert_eq!(c.keys.len(), 2);
        assert_eq!(c.keys[1].permissions.len(), 1);
        assert_eq!(c.faults.error_rates.get(&503), Some(&0.05));
        assert_eq!(
            c.faults.burst_429,
            Some(Burst429 {
                duration_ms: 100,
                period_ms: 1000
            })
        );
        assert_eq!(c.faults.seed, 7);
        assert!(parse_error_rate("500").is_err());
        assert!(c.graphql_enabled);
        assert_eq!(c.graphql_max_aliases, 100);
        assert_eq!(c.company, attentive_sim::CompanyInfo::default());
    }

    #[test]
    fn company_and_graphql_flags() {
        let args = Args::parse_from([
            "attentive-sim",
            "--company-id",
            "MDc6Q29tcGFueTI",
            "--company-name",
            "Hudson & Ivy",
            "--no-graphql",
            "--graphql-max-aliases",
            "25",
        ]);
        let c = config(&args).unwrap();
        assert_eq!(c.company.company_id, "MDc6Q29tcGFueTI");
        assert_eq!(c.company.company_name, "Hudson & Ivy");
        assert_eq!(
            c.company.application_name,
            attentive_sim::CompanyInfo::default().application_name
        );
        assert!(!c.graphql_enabled);
        assert_eq!(c.graphql_max_aliases, 25);
    }

    #[test]
    fn bulk_flags() {
        let defaults = config(&Args::parse_from(["attentive-sim"])).unwrap();
        assert_eq!(defaults.bulk_result_url_field, BulkResultField::Url);
        assert_eq!(defaults.faults, Faults::default());

        let args = Args::parse_from([
            "attentive-sim",
            "--bulk-result-field",
            "result-url",
            "--bulk-fail-next-jobs",
            "2",
            "--bulk-record-error-rate",
            "0.1",
            "--bulk-record-reject-rate",
            "0.2",
            "--bulk-record-error",
            "Ann@Example.com=500",
            "--bulk-record-error",
            "+12125550100=429",
            "--bulk-unknown-status-polls",
            "3",
            "--bulk-truncate-results",
        ]);
        let c = config(&args).unwrap();
        assert_eq!(c.bulk_result_url_field, BulkResultField::ResultUrl);
        let f = &c.faults;
        assert_eq!(f.bulk_fail_next_jobs, 2);
        assert_eq!(f.bulk_record_error_rate, 0.1);
        assert_eq!(f.bulk_record_reject_rate, 0.2);
        assert_eq!(f.bulk_record_errors.get("Ann@Example.com"), Some(&500));
        assert_eq!(f.bulk_record_errors.get("+12125550100"), Some(&429));
        assert_eq!(f.bulk_unknown_status_polls, 3);
        assert!(f.bulk_truncate_results);

        let both = Args::parse_from(["attentive-sim", "--bulk-result-field", "both"]);
        assert_eq!(
            config(&both).unwrap().bulk_result_url_field,
            BulkResultField::Both
        );
        assert!(Args::try_parse_from(["attentive-sim", "--bulk-result-field", "link"]).is_err());
        // Validated: a status that is not an error, and a key that is no email or phone.
        for bad in ["a@example.com=200", "ann=500", "a@example.com"] {
            let args = Args::parse_from(["attentive-sim", "--bulk-record-error", bad]);
            assert!(config(&args).is_err(), "{bad}");
        }
    }
}
