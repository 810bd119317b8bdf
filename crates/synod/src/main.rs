//! `synod`: the command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
mod sim;

#[derive(Parser)]
#[command(name = "synod", version, about = "Synod: a fault-tolerant replicated state machine")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the deterministic simulator: the real protocol code under seeded faults.
    Sim(sim::SimArgs),
    /// Check recorded histories for linearizability (and bank invariants).
    Check(check::CheckArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Sim(args) => sim::run(args),
        Cmd::Check(args) => check::run(args),
    }
}
