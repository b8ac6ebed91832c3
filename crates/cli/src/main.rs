//! `attentive-sync`: keep Attentive subscribers' attributes in step with a data model.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

mod output;

/// Standard output that a closed pipe (`attentive-sync plan vip | head`) silences instead of
/// panicking: once the reader has gone, later output is dropped and the command finishes its
/// work and exits with its usual code.
mod stdout {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicBool, Ordering};

    static CLOSED: AtomicBool = AtomicBool::new(false);

    pub(crate) fn write(args: std::fmt::Arguments<'_>) {
        if CLOSED.load(Ordering::Relaxed) {
            return;
        }
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
            CLOSED.store(true, Ordering::Relaxed);
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("error: writing to standard output failed: {e}");
            }
        }
    }
}

/// `print!` through [`stdout::write`].
macro_rules! out {
    ($($t:tt)*) => { $crate::stdout::write(format_args!($($t)*)) };
}

/// `println!` through [`stdout::write`].
macro_rules! outln {
    () => { $crate::stdout::write(format_args!("\n")) };
    ($($t:tt)*) => { $crate::stdout::write(format_args!("{}\n", format_args!($($t)*))) };
}

/// Exit codes scripts can act on (also in docs/CLI.md).
pub(crate) mod exit {
    /// Everything went through.
    pub(crate) const OK: u8 = 0;
    /// A fatal error: bad config, unreadable model, state store failure.
    pub(crate) const FATAL: u8 = 1;
    /// The command line itself is wrong (clap's usage errors).
    pub(crate) const USAGE: u8 = 2;
    /// The work finished, but some rows were rejected (or, for `run`, failed).
    pub(crate) const ROWS_REJECTED: u8 = 3;
    /// The run was interrupted (Ctrl-C); what was acknowledged is committed.
    pub(crate) const INTERRUPTED: u8 = 4;
    /// `run` submitted bulk jobs whose results are not known yet (`--no-wait`, or Ctrl-C
    /// while waiting): a later run (or `serve`) settles them.
    pub(crate) const PENDING: u8 = 5;
}

#[derive(Debug, Parser)]
#[command(
    name = "attentive-sync",
    version,
    about = "Reverse ETL for Attentive: update existing subscribers' attributes from a data model, sending only what changed."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// More logs (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The project config file.
    #[arg(
        short,
        long,
        env = "ATTENTIVE_SYNC_CONFIG",
        default_value = "attentive-sync.toml"
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a commented sample config and a sample model into a folder.
    Init {
        /// Where to write (created if missing).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Rows in the sample model.
        #[arg(long, default_value_t = 1000)]
        rows: u64,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Check the config, the environment it reads, the models' columns and the mappings.
    Validate {
        #[command(flatten)]
        config: ConfigArg,
        /// Also check each destination's API key with Attentive (`GET /v1/me`) and show the
        /// company and app it belongs to.
        #[arg(long)]
        check_key: bool,
    },
    /// Dry run: what a run would send, from the same code path, without sending anything.
    Plan {
        /// The activation to plan.
        activation: String,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write every changed contact and rejected row to this file (JSON Lines).
        #[arg(long)]
        output: Option<PathBuf>,
        /// How many changes and rejections to show.
        #[arg(long, default_value_t = 10)]
        sample: usize,
    },
    /// Send what changed to Attentive: plan, check that contacts exist, update them, and
    /// commit what Attentive acknowledged.
    Run {
        /// The activation to run.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        activation: Option<String>,
        /// Run every activation, one after the other in the order of the config file, with a
        /// report each; the exit code is the worst of their codes (1, then 4, 3, 5, 0).
        #[arg(long)]
        all: bool,
        /// Seconds to wait after the run(s) for notifications to be delivered (retries
        /// included); what is still undelivered then is sent by the next `run` or by `serve`.
        #[arg(long, default_value_t = 10.0)]
        notify_wait_secs: f64,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Check contacts cached as not found again now, whatever their age.
        #[arg(long)]
        recheck_missing: bool,
        /// Hours after which contacts cached as not found are checked again.
        #[arg(long, default_value_t = 24.0)]
        recheck_after_hours: f64,
        /// Contacts being delivered at once at most (the request budget paces them further);
        /// on Ctrl-C these finish and are committed.
        #[arg(long, default_value_t = 16)]
        max_in_flight: usize,
        /// The destination's key now belongs to another Attentive account than the state
        /// file: bind it to that account, forgetting the destination's existence cache and the
        /// snapshots of its activations (every contact is checked again and backfilled).
        #[arg(long)]
        rebind_destination: bool,
        /// With bulk delivery: return once the jobs are submitted, without waiting for
        /// Attentive to process them (the run ends `pending`, exit code 5; the next run or
        /// `serve` settles them).
        #[arg(long)]
        no_wait: bool,
        /// With bulk delivery: seconds between the first polls of the run's jobs (then
        /// longer, up to 30 s).
        #[arg(long, default_value_t = 2.0)]
        poll_every_secs: f64,
    },
    /// Past runs and their rows.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// What the snapshot holds for contacts.
    Contacts {
        #[command(subcommand)]
        command: ContactsCommand,
    },
    /// Lifecycle and alert notifications, and their deliveries.
    Notifications {
        #[command(subcommand)]
        command: NotificationsCommand,
    },
    /// The state file itself.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Run the server: activations on their schedules, a REST API, a web dashboard and
    /// Prometheus metrics (see docs/SERVER.md). Needs a token: ATTENTIVE_SYNC_SERVER_TOKEN
    /// or --token-file. SIGTERM or Ctrl-C stops it cleanly.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Address to listen on; port 0 picks a free port. The first line on stdout is
        /// `listening on http://ADDR` (`https://` with --tls-cert).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// A file holding the server token (else the environment variable
        /// ATTENTIVE_SYNC_SERVER_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Largest random delay, in seconds, added to each scheduled start.
        #[arg(long, default_value_t = 5.0)]
        jitter_secs: f64,
        /// Mark the session cookie `Secure` (when users reach the server over https).
        #[arg(long)]
        secure_cookies: bool,
        /// Ask for the bearer token on /metrics too (open by default).
        #[arg(long)]
        metrics_require_token: bool,
        /// Contacts delivered at once per run.
        #[arg(long, default_value_t = 16)]
        max_in_flight: usize,
        /// Hours after which contacts cached as not found are checked again.
        #[arg(long, default_value_t = 24.0)]
        recheck_after_hours: f64,
        /// Seconds a graceful stop waits for runs to commit what is in flight.
        #[arg(long, default_value_t = 120)]
        shutdown_timeout_secs: u64,
        /// Seconds open connections then get to finish their requests (a second signal
        /// exits at once).
        #[arg(long, default_value_t = 10)]
        shutdown_grace_secs: u64,
        /// Connections served at once; one more is closed at once.
        #[arg(long, default_value_t = 256)]
        max_connections: usize,
        /// Seconds a client has to send a request's headers (and an idle keep-alive
        /// connection stays open).
        #[arg(long, default_value_t = 10)]
        header_timeout_secs: u64,
        /// Seconds a request may take before it answers 503 `request_timeout`.
        #[arg(long, default_value_t = 120)]
        request_timeout_secs: u64,
        /// Serve https with this PEM certificate chain (leaf first); needs --tls-key. The
        /// session cookie is then `Secure`.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Answer only requests whose Host is one of these names (comma-separated;
        /// `*.example.com` for subdomains), so that DNS rebinding cannot reach the server
        /// through another name; others get 421. Default: any host.
        #[arg(long, value_delimiter = ',')]
        allowed_hosts: Vec<String>,
    },
    /// Show the tool on a bundled sample project, with nothing to set up.
    Demo {
        /// Keep the sample project in this folder instead of a temporary one.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// The latest runs, newest first.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this activation's runs.
        #[arg(long)]
        activation: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// One run: counts, and its rows by outcome.
    Show {
        id: i64,
        #[command(flatten)]
        config: ConfigArg,
        /// Rows with this outcome (updated, not_found, rejected, failed, pending).
        #[arg(long)]
        outcome: Option<String>,
        /// Write those rows to a CSV file.
        #[arg(long)]
        export: Option<PathBuf>,
        /// How many rows to print.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
enum NotificationsCommand {
    /// Deliveries, newest first: event, endpoint, state, attempts, the last HTTP status and
    /// error, when it was delivered.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this activation's.
        #[arg(long)]
        activation: Option<String>,
        /// Only deliveries in this state (pending, delivered, failed).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Alert rules and their state (ok / firing) per activation.
    Alerts {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
enum StateCommand {
    /// Rebuild the state file without its free pages (SQLite's VACUUM), so the disk space of
    /// deleted rows goes back to the file system. Holds every activation's lock meanwhile: it
    /// waits for no run, and fails if one is going on.
    Vacuum {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
enum ContactsCommand {
    /// Per attribute: value, fingerprint, and the run that set it.
    Show {
        /// An email, or a phone in international format (+14155550100).
        contact: String,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

fn init_logs(format: LogFormat, verbose: u8) {
    use tracing_subscriber::EnvFilter;
    // A state migration's progress is shown even when quiet: it can take minutes.
    let default = match verbose {
        0 => "warn,state_store::migration=info",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    // The server logs what it does (runs, skips, stops) by default.
    let verbose = if matches!(cli.command, Command::Serve { .. }) {
        cli.verbose.max(1)
    } else {
        cli.verbose
    };
    init_logs(cli.log_format, verbose);
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::FATAL)
        }
    }
}

fn load(config: &ConfigArg) -> Result<runner::Project> {
    Ok(runner::Project::load(&config.config)?)
}

/// The state store for commands that only read it (`plan`, `runs`, `contacts show`): never
/// creates the file (an empty store stands in until the first run), works on a read-only
/// file, and refuses a file that is not a state database of a version this build knows.
fn read_store(project: &runner::Project) -> Result<state_store::StateStore> {
    let path = &project.state_path;
    let store = state_store::StateStore::open_existing_read_only(path)
        .with_context(|| format!("reading the state database {}", path.display()))?;
    match store {
        Some(s) => Ok(s),
        None => Ok(state_store::StateStore::open_in_memory()?),
    }
}

fn run(command: Command) -> Result<u8> {
    match command {
        Command::Init { dir, rows, force } => {
            let config = runner::sample::write_sample_project(&dir, rows, None, force)
                .with_context(|| format!("writing the sample project into {}", dir.display()))?;
            outln!(
                "Wrote {} and {}.",
                config.display(),
                dir.join("data/customers.csv").display()
            );
            outln!(
                "Next: attentive-sync validate -c {0} && attentive-sync plan vip -c {0}",
                config.display()
            );
            Ok(exit::OK)
        }
        Command::Validate { config, check_key } => validate(&config, check_key),
        Command::Plan {
            activation,
            config,
            format,
            output,
            sample,
        } => {
            let project = load(&config)?;
            let store = read_store(&project)?;
            let mut report = plan_with_progress(&project, &activation, &store, sample, output)?;
            if let Ok(a) = project.activation(&activation) {
                report.alerts = runner::notify::plan_alerts(&store, a, &report)
                    .context("reading the alert states")?;
            }
            match format {
                Format::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
                Format::Text => out!("{}", output::plan_text(&report)),
            }
            Ok(if report.counts.rejected > 0 {
                exit::ROWS_REJECTED
            } else {
                exit::OK
            })
        }
        Command::Contacts {
            command:
                ContactsCommand::Show {
                    contact,
                    config,
                    format,
                },
        } => {
            let project = load(&config)?;
            let store = read_store(&project)?;
            let key = normalize_contact(&contact)?;
            let entries = store.contact(&key).context("reading the snapshot")?;
            match format {
                Format::Json => outln!(
                    "{}",
                    serde_json::to_string_pretty(&output::contact_json(&key, &entries))?
                ),
                Format::Text => out!("{}", output::contact_text(&key, &entries)),
            }
            Ok(exit::OK)
        }
        Command::Run {
            activation,
            all,
            notify_wait_secs,
            config,
            format,
            recheck_missing,
            recheck_after_hours,
            max_in_flight,
            rebind_destination,
            no_wait,
            poll_every_secs,
        } => {
            let project = load(&config)?;
            let opts = runner::run::RunOptions {
                recheck_missing,
                recheck_after: std::time::Duration::from_secs_f64(
                    recheck_after_hours.max(0.0) * 3600.0,
                ),
                max_in_flight,
                rebind_destination,
                wait_for_jobs: !no_wait,
                poll_every: std::time::Duration::from_secs_f64(poll_every_secs.clamp(0.05, 600.0)),
                ..runner::run::RunOptions::default()
            };
            let names = match (all, activation) {
                (true, _) => project.activation_order.clone(),
                (false, Some(a)) => vec![a],
                (false, None) => anyhow::bail!("name an activation, or run them all with --all"),
            };
            let mut codes = Vec::new();
            let mut reports = Vec::new();
            for (i, name) in names.iter().enumerate() {
                if all && format == Format::Text {
                    if i > 0 {
                        outln!();
                    }
                    outln!("== {name}");
                }
                let report = match run_activation(&project, name, opts.clone()) {
                    Ok(r) => r,
                    // One activation that cannot start does not keep the others from running.
                    Err(e) if all => {
                        eprintln!("error: activation {name}: {e:#}");
                        reports.push(
                            serde_json::json!({ "activation": name, "error": format!("{e:#}") }),
                        );
                        codes.push(exit::FATAL);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if let (Some(e), state_store::RunStatus::Failed) = (&report.error, report.status) {
                    eprintln!("error: run {} failed: {e}", report.run_id);
                }
                match format {
                    Format::Json if all => reports.push(serde_json::to_value(&report)?),
                    Format::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
                    Format::Text => {
                        out!("{}", output::run_text(&report));
                        // What the run left firing (evaluated when it ended; a pending run's
                        // rules are evaluated once its jobs settle).
                        let states =
                            state_store::StateStore::open_existing_read_only(&project.state_path)
                                .ok()
                                .flatten()
                                .and_then(|s| s.alert_states(Some(name)).ok())
                                .unwrap_or_default();
                        out!("{}", output::firing_text(&states));
                    }
                }
                codes.push(run_exit_code(&report));
                if report.status == state_store::RunStatus::Interrupted {
                    break; // Ctrl-C stops the rest too
                }
            }
            if all && format == Format::Json {
                outln!("{}", serde_json::to_string_pretty(&reports)?);
            }
            deliver_notifications(&project, notify_wait_secs);
            Ok(worst_exit_code(&codes))
        }
        Command::Notifications { command } => notifications(command),
        Command::Runs { command } => runs(command),
        Command::State {
            command: StateCommand::Vacuum { config },
        } => {
            let project = load(&config)?;
            let path = &project.state_path;
            if !path.exists() {
                outln!("no state file at {}: nothing to vacuum", path.display());
                return Ok(exit::OK);
            }
            let mut store = state_store::StateStore::open(path)
                .with_context(|| format!("opening the state database {}", path.display()))?;
            let v = store
                .vacuum()
                .with_context(|| format!("vacuuming {}", path.display()))?;
            let mb = |b: u64| b as f64 / 1_000_000.0;
            outln!(
                "vacuumed {}: {:.1} MB -> {:.1} MB",
                path.display(),
                mb(v.before),
                mb(v.after)
            );
            Ok(exit::OK)
        }
        Command::Demo { dir } => demo(dir.as_deref()),
        Command::Serve {
            config,
            listen,
            token_file,
            jitter_secs,
            secure_cookies,
            metrics_require_token,
            max_in_flight,
            recheck_after_hours,
            shutdown_timeout_secs,
            shutdown_grace_secs,
            max_connections,
            header_timeout_secs,
            request_timeout_secs,
            tls_cert,
            tls_key,
            allowed_hosts,
        } => {
            let project = load(&config)?;
            let token = server::ServerToken::load(
                token_file.as_deref(),
                std::env::var(server::auth::TOKEN_ENV).ok(),
            )?;
            for p in project.delivery_problems() {
                tracing::warn!("{p}: runs of the activations that send through it will not start");
            }
            let settings = server::Settings {
                secure_cookies,
                metrics_require_token,
                jitter: std::time::Duration::from_secs_f64(jitter_secs.clamp(0.0, 3600.0)),
                max_in_flight: max_in_flight.max(1),
                recheck_after: std::time::Duration::from_secs_f64(
                    recheck_after_hours.max(0.0) * 3600.0,
                ),
                shutdown_timeout: std::time::Duration::from_secs(shutdown_timeout_secs),
                shutdown_grace: std::time::Duration::from_secs(shutdown_grace_secs),
                max_connections,
                header_timeout: std::time::Duration::from_secs(header_timeout_secs.max(1)),
                request_timeout: std::time::Duration::from_secs(request_timeout_secs.max(1)),
                tls: tls_cert
                    .zip(tls_key)
                    .map(|(cert, key)| server::tls::TlsFiles { cert, key }),
                allowed_hosts: allowed_hosts
                    .into_iter()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .collect(),
            };
            let settings = server::Settings {
                secure_cookies: settings.secure_cookies || settings.tls.is_some(),
                ..settings
            };
            let scheme = if settings.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(server::serve(
                server::ServeOptions {
                    project,
                    listen,
                    token,
                    settings,
                },
                |addr| {
                    outln!("listening on {scheme}://{addr}");
                },
            ))?;
            Ok(exit::OK)
        }
    }
}

/// The worst of several runs' exit codes: a fatal error, then an interruption, rows rejected,
/// jobs pending, success.
fn worst_exit_code(codes: &[u8]) -> u8 {
    let rank = |c: u8| match c {
        exit::FATAL => 4,
        exit::INTERRUPTED => 3,
        exit::ROWS_REJECTED => 2,
        exit::PENDING => 1,
        _ => 0,
    };
    codes
        .iter()
        .copied()
        .max_by_key(|c| rank(*c))
        .unwrap_or(exit::OK)
}

/// After `run`: the clock's alerts (a missed schedule), then the outbox delivered for up to
/// `wait_secs` (retries included). Never fails the command: what is left is said on stderr
/// and sent by the next `run` (or `serve`).
fn deliver_notifications(project: &runner::Project, wait_secs: f64) {
    let mut store = match state_store::StateStore::open(&project.state_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "warning: notifications not delivered: {:#}",
                anyhow::Error::from(e)
            );
            return;
        }
    };
    if let Err(e) = runner::notify::evaluate_schedules(project, &mut store, chrono::Utc::now()) {
        eprintln!(
            "warning: checking missed schedules failed: {:#}",
            anyhow::Error::from(e)
        );
    }
    if project.notifications.is_empty() {
        return;
    }
    for p in project.notification_problems() {
        eprintln!("warning: {p}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warning: notifications not delivered: {e}");
            return;
        }
    };
    let wait_secs = if wait_secs.is_finite() {
        wait_secs.clamp(0.0, 3600.0)
    } else {
        10.0
    };
    let wait = std::time::Duration::from_secs_f64(wait_secs);
    let left = runtime.block_on(async {
        let sender = notifications::Sender::new(std::time::Duration::from_secs(10))?;
        runner::notify::deliver_for(project, &mut store, &sender, wait)
            .await
            .map_err(anyhow::Error::from)
    });
    match left {
        Ok(0) => {}
        Ok(n) => eprintln!(
            "{n} notification deliver{} not done yet: the next `attentive-sync run` (or `serve`) retries {} (`attentive-sync notifications list` shows {})",
            if n == 1 { "y is" } else { "ies are" },
            if n == 1 { "it" } else { "them" },
            if n == 1 { "it" } else { "them" },
        ),
        Err(e) => eprintln!("warning: delivering notifications failed: {e:#}"),
    }
}

fn notifications(command: NotificationsCommand) -> Result<u8> {
    match command {
        NotificationsCommand::List {
            config,
            activation,
            state,
            limit,
            format,
        } => {
            let project = load(&config)?;
            let store = read_store(&project)?;
            let state = match state.as_deref() {
                None => None,
                Some(s) => Some(state_store::DeliveryState::parse(s).with_context(|| {
                    format!("unknown delivery state {s:?}; use pending, delivered or failed")
                })?),
            };
            let deliveries = store.deliveries(activation.as_deref(), state, limit)?;
            match format {
                Format::Json => outln!(
                    "{}",
                    serde_json::to_string_pretty(&output::deliveries_json(&deliveries))?
                ),
                Format::Text => out!("{}", output::deliveries_text(&deliveries)),
            }
            Ok(exit::OK)
        }
        NotificationsCommand::Alerts { config, format } => {
            let project = load(&config)?;
            let store = read_store(&project)?;
            let states = store.alert_states(None)?;
            let mut rows = Vec::new();
            for name in &project.activation_order {
                for rule in runner::alerts::Rule::ALL {
                    let stored = states
                        .iter()
                        .find(|s| s.activation == *name && s.rule == rule.as_str());
                    rows.push(serde_json::json!({
                        "activation": name,
                        "rule": rule.as_str(),
                        "state": stored.map_or("ok", |s| s.state.as_str()),
                        "since": stored.map(|s| s.since.clone()),
                        "run_id": stored.and_then(|s| s.run_id),
                        "message": stored.and_then(|s| s.message.clone()),
                        "evaluated": stored.is_some(),
                    }));
                }
            }
            match format {
                Format::Json => outln!("{}", serde_json::to_string_pretty(&rows)?),
                Format::Text => {
                    for r in &rows {
                        outln!(
                            "{:<16} {:<18} {:<7} {}",
                            r["activation"].as_str().unwrap_or(""),
                            r["rule"].as_str().unwrap_or(""),
                            r["state"].as_str().unwrap_or(""),
                            r["message"].as_str().unwrap_or(if r["evaluated"] == true {
                                ""
                            } else {
                                "(not evaluated yet)"
                            })
                        );
                    }
                }
            }
            Ok(exit::OK)
        }
    }
}

fn run_exit_code(report: &runner::run::RunReport) -> u8 {
    use state_store::RunStatus;
    match report.status {
        RunStatus::Succeeded => exit::OK,
        RunStatus::Partial => exit::ROWS_REJECTED,
        RunStatus::Interrupted => exit::INTERRUPTED,
        RunStatus::Pending => exit::PENDING,
        RunStatus::Failed | RunStatus::Running => exit::FATAL,
    }
}

/// Runs an activation with the Attentive client its destination describes.
fn run_activation(
    project: &runner::Project,
    activation: &str,
    opts: runner::run::RunOptions,
) -> Result<runner::run::RunReport> {
    let client = std::sync::Arc::new(runner::run::client_for(project, activation)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let started = std::time::Instant::now();
    let progress_bar = bar.clone();
    let progress: std::sync::Arc<dyn Fn(runner::run::Progress) + Send + Sync> = std::sync::Arc::new(
        move |p: runner::run::Progress| {
            if p.waiting {
                progress_bar.set_message(format!(
                    "{} contacts submitted in bulk jobs; waiting for Attentive to process {} of them (Ctrl-C stops waiting: a later run settles them)",
                    p.delivered, p.pending
                ));
                return;
            }
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let rate = p.delivered as f64 / secs;
            let left = p.changed.saturating_sub(p.delivered);
            let eta = if rate > 0.0 {
                format!(", ETA {:.0} s", left as f64 / rate)
            } else {
                String::new()
            };
            progress_bar.set_message(format!(
                "{} rows read, {} contacts to update, {} done ({rate:.0}/s{eta})",
                p.rows, p.changed, p.delivered
            ));
        },
    );
    let stop = opts.stop.clone();
    let report = runtime.block_on(async {
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping: waiting for in-flight writes, then committing (Ctrl-C again to force)");
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(i32::from(exit::INTERRUPTED));
                }
            }
        });
        runner::run::run(project, activation, client, opts, progress).await
    });
    bar.finish_and_clear();
    Ok(report?)
}

fn runs(command: RunsCommand) -> Result<u8> {
    match command {
        RunsCommand::List {
            config,
            activation,
            limit,
            format,
        } => {
            let project = load(&config)?;
            let store = read_store(&project)?;
            let runs = store.runs(activation.as_deref(), limit)?;
            match format {
                Format::Json => outln!(
                    "{}",
                    serde_json::to_string_pretty(&output::runs_json(&runs))?
                ),
                Format::Text => out!("{}", output::runs_text(&runs)),
            }
            Ok(exit::OK)
        }
        RunsCommand::Show {
            id,
            config,
            outcome,
            export,
            limit,
            format,
        } => {
            let project = load(&config)?;
            let store = read_store(&project)?;
            let run = store
                .run(id)?
                .with_context(|| format!("no run with id {id}"))?;
            if let Some(path) = export {
                let n = output::export_rows(&project, &store, id, outcome.as_deref(), &path)?;
                eprintln!("wrote {n} rows to {}", path.display());
            }
            let rows = store.run_rows(id, outcome.as_deref(), 0, limit)?;
            let jobs = store.run_jobs(id)?;
            match format {
                Format::Json => outln!(
                    "{}",
                    serde_json::to_string_pretty(&output::run_json(&run, &rows, &jobs))?
                ),
                Format::Text => out!(
                    "{}",
                    output::run_summary_text(&run, &rows, &jobs, outcome.as_deref())
                ),
            }
            Ok(exit::OK)
        }
    }
}

/// An email or international phone as the snapshot keys it.
fn normalize_contact(s: &str) -> Result<String> {
    sync_core::normalize::contact_key(s).map_err(|e| anyhow::anyhow!("{s:?}: {e}"))
}

fn plan_with_progress(
    project: &runner::Project,
    activation: &str,
    store: &state_store::StateStore,
    sample: usize,
    output: Option<PathBuf>,
) -> Result<runner::plan::PlanReport> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} planning {msg}: {human_pos} rows ({per_sec}, {elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(activation.to_owned());
    let opts = runner::plan::PlanOptions {
        sample_size: sample,
        output,
    };
    let report = runner::plan::plan(project, activation, store, &opts, &|n| bar.set_position(n));
    bar.finish_and_clear();
    Ok(report?)
}

fn validate(config: &ConfigArg, check_key: bool) -> Result<u8> {
    let project = load(config)?;
    let mut problems = 0;
    if check_key {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        for a in project.activations.values() {
            let client = runner::run::client_for(&project, &a.name)?;
            match runtime.block_on(client.me()) {
                Ok(me) => outln!(
                    "ok: destination {}: the key belongs to app {} of company {} ({})",
                    a.destination,
                    me.application_name.as_deref().unwrap_or("(unnamed)"),
                    me.company_name.as_deref().unwrap_or("(unnamed)"),
                    me.attentive_domain_name.as_deref().unwrap_or("-")
                ),
                Err(e) => {
                    outln!("problem: destination {}: {e}", a.destination);
                    problems += 1;
                }
            }
        }
    }
    for p in project.delivery_problems() {
        outln!("problem: {p} (planning works; sending needs it)");
        problems += 1;
    }
    for p in project.notification_problems() {
        outln!("problem: {p}");
        problems += 1;
    }
    if !project.notifications.is_empty() {
        outln!(
            "ok: notifications to {}",
            project
                .notifications
                .values()
                .map(|n| format!("{} ({})", n.name, n.kind.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let state = &project.state_path;
    match state_store::StateStore::check_file(state) {
        Ok(check) => outln!(
            "ok: state database {}: {}",
            state.display(),
            match check {
                state_store::FileCheck::WillBeCreated =>
                    "none yet; the first run creates it".to_owned(),
                state_store::FileCheck::WillMigrate { from, to } =>
                    format!("schema version {from}; the next run migrates it to {to}"),
                state_store::FileCheck::Ready { schema_version } =>
                    format!("schema version {schema_version}, writable"),
                _ => "usable".to_owned(),
            }
        ),
        Err(e) => {
            outln!("problem: {:#}", anyhow::Error::from(e));
            problems += 1;
        }
    }
    for (name, a) in &project.activations {
        match runner::plan::bind(&project, a) {
            Ok(runner::plan::Bound { mapping, .. }) => outln!(
                "ok: activation {name}: model {} → destination {}, identifier `{}` ({}), {} attribute{} mapped{}",
                a.model,
                a.destination,
                mapping.identifier().column,
                mapping.identifier().kind.as_str(),
                mapping.attributes().len(),
                if mapping.attributes().len() == 1 { "" } else { "s" },
                match &a.segment {
                    Some(runner::config::Segment::Sql(f)) => format!(", segment `{f}` (filtered by the database)"),
                    Some(runner::config::Segment::Rows(f)) => format!(", segment `{f}`"),
                    None => String::new(),
                }
            ),
            Err(e) => {
                outln!("problem: {}", format!("{:#}", anyhow::Error::from(e)).replace('\n', "\n  "));
                problems += 1;
            }
        }
    }
    if problems > 0 {
        anyhow::bail!(
            "{} has {problems} problem{}",
            config.config.display(),
            if problems == 1 { "" } else { "s" }
        );
    }
    outln!("{} is valid.", config.config.display());
    Ok(exit::OK)
}

fn demo(dir: Option<&Path>) -> Result<u8> {
    let tmp;
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            tmp = tempfile::tempdir().context("creating a temporary folder")?;
            tmp.path().to_path_buf()
        }
    };
    // The bundled simulator on loopback, knowing most (not all) of the sample's contacts.
    let model_rows = 1000;
    let project_dir = dir.clone();
    std::fs::create_dir_all(&project_dir)?;
    let mut sim_config = attentive_sim::SimConfig::default();
    let sample_path = project_dir.join("data/customers.csv");
    runner::sample::write_sample_project(
        &project_dir,
        model_rows,
        Some("http://127.0.0.1:1"),
        true,
    )
    .with_context(|| format!("writing the sample project into {}", project_dir.display()))?;
    let text = std::fs::read_to_string(&sample_path)?;
    for (i, line) in text.lines().skip(1).enumerate() {
        if i % 50 == 49 {
            continue; // a few people in the model are not Attentive contacts
        }
        if let Some(Ok(email)) = line.split(',').next().map(sync_core::normalize::email) {
            sim_config
                .contacts
                .push(attentive_sim::SeedContact::email(email));
        }
    }
    let seeded = sim_config.contacts.len();
    let sim = attentive_sim::RunningSim::spawn_on_thread(sim_config)
        .context("starting the Attentive simulator")?;
    let config = runner::sample::write_sample_project(
        &project_dir,
        model_rows,
        Some(&sim.base_url()),
        true,
    )?;
    let key =
        |name: &str| (name == "ATTENTIVE_API_KEY").then(|| attentive_sim::DEFAULT_KEY.to_owned());
    let load = || -> Result<runner::Project> {
        Ok(runner::Project::parse(
            &config,
            &std::fs::read_to_string(&config)?,
            &key,
        )?)
    };
    let project = load()?;
    outln!("attentive-sync demo: a sample project in {}", dir.display());
    outln!("The Attentive simulator runs on {} with {seeded} contacts (nothing leaves this machine).\n", sim.base_url());

    outln!("== 1. plan: what a run would send\n");
    let store = read_store(&project)?;
    let report = plan_with_progress(&project, "vip", &store, 3, None)?;
    drop(store);
    out!("{}", output::plan_text(&report));

    outln!("\n== 2. run: check the account, look each contact up (read-only, in batches), update it, commit what Attentive acknowledged\n");
    let first = run_activation(&project, "vip", runner::run::RunOptions::default())?;
    out!("{}", output::run_text(&first));

    outln!(
        "\n== 3. run again: nothing changed, nothing is sent (one request: the account check)\n"
    );
    let second = run_activation(&project, "vip", runner::run::RunOptions::default())?;
    out!("{}", output::run_text(&second));

    outln!(
        "\n== 4. edit one cell (line 2's city), run again: one attribute of one contact is sent\n"
    );
    let edited = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 1 {
                let mut cols: Vec<&str> = l.split(',').collect();
                if cols.len() > 4 {
                    cols[4] = "Springfield";
                }
                cols.join(",")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    std::fs::write(&sample_path, edited)?;
    let third = run_activation(&load()?, "vip", runner::run::RunOptions::default())?;
    out!("{}", output::run_text(&third));
    outln!(
        "\nThe simulator holds {} contacts (it had {seeded}: the tool never creates one) and recorded {} violations (subscription calls, nulls).",
        sim.contact_count(),
        sim.violations().len()
    );
    Ok(exit::OK)
}
