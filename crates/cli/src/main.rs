//! `attentive-sync`: keep Attentive subscribers' attributes in step with a data model.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

mod output;

/// Exit codes scripts can act on (also in docs/CLI.md).
pub(crate) mod exit {
    /// Everything went through.
    pub(crate) const OK: u8 = 0;
    /// A fatal error: bad config, unreadable model, state store failure.
    pub(crate) const FATAL: u8 = 1;
    /// The command line itself is wrong (clap's usage errors).
    pub(crate) const USAGE: u8 = 2;
    /// The work finished, but some rows were rejected.
    pub(crate) const ROWS_REJECTED: u8 = 3;
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
    /// What the snapshot holds for contacts.
    Contacts {
        #[command(subcommand)]
        command: ContactsCommand,
    },
    /// Show the tool on a bundled sample project, with nothing to set up.
    Demo {
        /// Keep the sample project in this folder instead of a temporary one.
        #[arg(long)]
        dir: Option<PathBuf>,
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
    let default = match verbose {
        0 => "warn",
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
    init_logs(cli.log_format, cli.verbose);
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

fn open_store(project: &runner::Project) -> Result<state_store::StateStore> {
    state_store::StateStore::open(&project.state_path)
        .with_context(|| format!("opening the state store {}", project.state_path.display()))
}

fn run(command: Command) -> Result<u8> {
    match command {
        Command::Init { dir, rows, force } => {
            let config = runner::sample::write_sample_project(&dir, rows, None, force)
                .with_context(|| format!("writing the sample project into {}", dir.display()))?;
            println!(
                "Wrote {} and {}.",
                config.display(),
                dir.join("data/customers.csv").display()
            );
            println!(
                "Next: attentive-sync validate -c {0} && attentive-sync plan vip -c {0}",
                config.display()
            );
            Ok(exit::OK)
        }
        Command::Validate { config } => validate(&config),
        Command::Plan {
            activation,
            config,
            format,
            output,
            sample,
        } => {
            let project = load(&config)?;
            let store = open_store(&project)?;
            let report = plan_with_progress(&project, &activation, &store, sample, output)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Format::Text => print!("{}", output::plan_text(&report)),
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
            let store = open_store(&project)?;
            let key = normalize_contact(&contact)?;
            let entries = store.contact(&key).context("reading the snapshot")?;
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&output::contact_json(&key, &entries))?
                ),
                Format::Text => print!("{}", output::contact_text(&key, &entries)),
            }
            Ok(exit::OK)
        }
        Command::Demo { dir } => demo(dir.as_deref()),
    }
}

/// An email or international phone as the snapshot keys it.
fn normalize_contact(s: &str) -> Result<String> {
    if s.contains('@') {
        Ok(sync_core::normalize::email(s).map_err(|e| anyhow::anyhow!("{s:?}: {e}"))?)
    } else {
        let opts = sync_core::mapping::NormalizeOptions::default();
        Ok(sync_core::normalize::phone(s, &opts)
            .map_err(|e| anyhow::anyhow!("{s:?}: {e} (give phones as +country code and number)"))?)
    }
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

fn validate(config: &ConfigArg) -> Result<u8> {
    let project = load(config)?;
    let mut problems = 0;
    for p in project.delivery_problems() {
        println!("problem: {p} (planning works; sending needs it)");
        problems += 1;
    }
    for (name, a) in &project.activations {
        match runner::plan::bind(&project, a) {
            Ok((_, mapping)) => println!(
                "ok: activation {name}: model {} → destination {}, identifier `{}` ({}), {} attribute{} mapped",
                a.model,
                a.destination,
                mapping.identifier.column,
                mapping.identifier.kind.as_str(),
                mapping.attributes.len(),
                if mapping.attributes.len() == 1 { "" } else { "s" }
            ),
            Err(e) => {
                println!("problem: {}", format!("{:#}", anyhow::Error::from(e)).replace('\n', "\n  "));
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
    println!("{} is valid.", config.config.display());
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
    let config = runner::sample::write_sample_project(&dir, 1000, None, true)
        .with_context(|| format!("writing the sample project into {}", dir.display()))?;
    println!(
        "attentive-sync demo: a sample project in {}\n",
        dir.display()
    );
    let project = runner::Project::parse(&config, &std::fs::read_to_string(&config)?, &|_| None)?;
    let store = open_store(&project)?;
    let report = plan_with_progress(&project, "vip", &store, 5, None)?;
    print!("{}", output::plan_text(&report));
    Ok(exit::OK)
}
