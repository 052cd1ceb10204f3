//! `parti`: the command-line front door of parti.
//!
//! **What this crate is.** A binary built only on the public APIs of `parti-runtime`,
//! `parti-nats` and `parti-strategy`: `parti demo` (a cluster inside one process on the embedded
//! store), `parti worker` (one real worker process) and `parti status` (members, leader, term,
//! version, load).
//!
//! **What it is not.** A library; nothing here is reused by the other crates.
//!
//! Status: none of those commands exists yet. The binary says so and exits with status 2.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "parti: no commands are available yet (demo, worker and status arrive with the runtime)"
    );
    ExitCode::from(2)
}
