//! `parti`: the command-line front door of parti.
//!
//! **What this crate is.** A binary built only on the public APIs of `parti-runtime`,
//! `parti-nats` and `parti-strategy`: `parti demo` (a cluster inside one process on the embedded
//! store), `parti worker` (one real worker process) and `parti status` (members, leader, term,
//! version, load).
//!
//! **What it is not.** A library; nothing here is reused by the other crates.
//!
//! Exit codes: 0 success; 1 the command ran and found a problem (the demo's ledger saw two
//! owners, a worker failed); 2 a usage or configuration mistake.

mod catalog;
mod config;
mod demo;
mod nats;
mod serve;
mod status;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// parti spreads weighted partitions over worker processes, coordinated only through NATS
/// JetStream KV.
#[derive(Debug, Parser)]
#[command(name = "parti", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a small cluster inside this process on the embedded store, and watch partitions move
    /// as workers join, crash, restart and leave (no server needed).
    Demo(demo::DemoArgs),
    /// Run one worker process on NATS; it logs every change of its assignment and leaves
    /// gracefully on SIGINT/SIGTERM.
    Worker(Box<worker::WorkerArgs>),
    /// Show a cluster as its buckets say: members, leader and term, version, who owns how much,
    /// unowned partitions.
    Status(Box<status::StatusArgs>),
    /// Show or check the effective configuration (defaults, a TOML file, PARTI_* variables).
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config(command) = &cli.command {
        return match config::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err((message, code)) => {
                eprintln!("parti config: {message}");
                ExitCode::from(code)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("parti: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Demo(args) => match runtime.block_on(demo::run(args)) {
            Ok(demo::Outcome::Clean) => ExitCode::SUCCESS,
            Ok(demo::Outcome::Failed) => ExitCode::from(1),
            Err(e) => {
                eprintln!("parti demo: {e}");
                ExitCode::from(1)
            }
        },
        Command::Worker(args) => {
            init_logs();
            match runtime.block_on(worker::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err((message, code)) => {
                    eprintln!("parti worker: {message}");
                    ExitCode::from(code)
                }
            }
        }
        Command::Config(_) => ExitCode::SUCCESS,
        Command::Status(args) => match runtime.block_on(status::run(*args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err((message, code)) => {
                eprintln!("parti status: {message}");
                ExitCode::from(code)
            }
        },
    }
}
