//! One [`Config`] from layers, each overriding the last: the defaults (or `Config::fast()` with
//! `--fast`), a TOML file (`--config`), `PARTI_*` environment variables (nested keys with `__`:
//! `PARTI_DEGRADED__ENTER_AFTER=2s`), then flags. Then `parti config print` and
//! `parti config check`.
//!
//! `PARTI_NATS_*` variables are connection options of the command line, not settings, and are
//! left out of the environment layer.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use parti_core::{Config, ValidConfig};

/// Where the configuration comes from.
#[derive(Clone, Debug, Default, clap::Args)]
pub(crate) struct ConfigArgs {
    /// A TOML file of settings (the fields of parti_core::Config, durations like "2s").
    #[arg(long = "config", value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// Start from the demo timers (`Config::fast()`: heartbeat 200 ms, TTL 600 ms) instead of
    /// the production defaults. For tests and trials on one machine only.
    #[arg(long)]
    pub(crate) fast: bool,
}

/// The `parti config` subcommands.
#[derive(Clone, Debug, clap::Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the effective configuration (defaults, file, PARTI_* variables) as TOML.
    Print {
        #[command(flatten)]
        source: ConfigArgs,
    },
    /// Check a configuration file: every problem with its key, exit 2 if there is one.
    Check {
        /// The TOML file.
        file: PathBuf,
        /// Check it on top of `Config::fast()` instead of the defaults.
        #[arg(long)]
        fast: bool,
    },
}

/// The layered configuration before flags.
///
/// # Errors
///
/// Every problem, one per line, each with its key path.
pub(crate) fn load(args: &ConfigArgs) -> Result<Config, String> {
    let base = if args.fast {
        Config::fast()
    } else {
        Config::default()
    };
    let mut figment = Figment::from(Serialized::defaults(base));
    if let Some(file) = &args.file {
        std::fs::metadata(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = figment.merge(
        Env::prefixed("PARTI_")
            .filter(|key| !key.as_str().to_ascii_lowercase().starts_with("nats_"))
            .split("__"),
    );
    figment.extract::<Config>().map_err(|e| {
        e.into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Validates, listing every problem.
///
/// # Errors
///
/// Every problem (the message lists them).
pub(crate) fn validate(config: Config) -> Result<ValidConfig, String> {
    config.validate().map_err(|e| {
        let n = e.errors().len();
        let mut text = format!(
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        );
        for problem in e.errors() {
            text.push_str(&format!("\n  - {problem}"));
        }
        text
    })
}

/// Runs `parti config …`.
///
/// # Errors
///
/// What is wrong, and the exit code (2).
pub(crate) fn run(command: &ConfigCommand) -> Result<(), (String, u8)> {
    match command {
        ConfigCommand::Print { source } => {
            let config = load(source).map_err(|e| (e, 2))?;
            let text = toml::to_string(&config)
                .map_err(|e| (format!("cannot write the configuration as TOML: {e}"), 1))?;
            print!("{text}");
            if let Err(e) = validate(config) {
                eprintln!("warning: this configuration is not valid:\n{e}");
            }
            Ok(())
        }
        ConfigCommand::Check { file, fast } => {
            check(file, *fast).map_err(|e| (e, 2))?;
            println!("{}: valid", file.display());
            Ok(())
        }
    }
}

fn check(file: &Path, fast: bool) -> Result<(), String> {
    let config = load(&ConfigArgs {
        file: Some(file.to_owned()),
        fast,
    })?;
    let valid = validate(config)?;
    for warning in valid.warnings() {
        println!("warning: {warning}");
    }
    Ok(())
}
