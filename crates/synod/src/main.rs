//! `synod`: the command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod check;
mod client_cmd;
mod join;
mod member_cmd;
mod nemesis_cmd;
mod server_cmd;
mod sim;

#[derive(Parser)]
#[command(name = "synod", version, about = "Synod: a fault-tolerant replicated state machine")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a three-node cluster on loopback (HTTP on 7001-7003), data in ./synod-data.
    Dev(server_cmd::DevArgs),
    /// Run one node of a cluster.
    Server(server_cmd::ServerArgs),
    /// Key-value operations against a cluster.
    Kv {
        #[command(subcommand)]
        command: client_cmd::KvCmd,
        #[command(flatten)]
        endpoints: client_cmd::Endpoints,
    },
    /// Bank operations against a cluster.
    Bank {
        #[command(subcommand)]
        command: client_cmd::BankCmd,
        #[command(flatten)]
        endpoints: client_cmd::Endpoints,
    },
    /// The cluster's membership: list, add a learner, promote, remove, transfer the
    /// leadership.
    Member {
        #[command(subcommand)]
        command: member_cmd::MemberCmd,
        #[command(flatten)]
        endpoints: client_cmd::Endpoints,
    },
    /// Every node's view: leader, ballot, decided and applied slots.
    Status {
        #[command(flatten)]
        endpoints: client_cmd::Endpoints,
    },
    /// Closed-loop load against a cluster: throughput and latency percentiles (with
    /// --compare etcd: Synod beside a local etcd cluster, and their ratios).
    Bench(bench::BenchArgs),
    /// Run the deterministic simulator: the real protocol code under seeded faults.
    Sim(sim::SimArgs),
    /// Check recorded histories for linearizability (and bank invariants).
    Check(check::CheckArgs),
    /// Fault injection against real server processes in network namespaces (needs root).
    Nemesis(nemesis_cmd::NemesisArgs),
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime starts")
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Dev(args) => server_cmd::dev(args),
        Cmd::Server(args) => server_cmd::server(args),
        Cmd::Kv { command, endpoints } => client_runtime().block_on(client_cmd::kv(command, endpoints)),
        Cmd::Bank { command, endpoints } => client_runtime().block_on(client_cmd::bank(command, endpoints)),
        Cmd::Member { command, endpoints } => {
            client_runtime().block_on(member_cmd::member(command, endpoints))
        }
        Cmd::Status { endpoints } => client_runtime().block_on(client_cmd::status(endpoints)),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Sim(args) => sim::run(args),
        Cmd::Check(args) => check::run(args),
        Cmd::Nemesis(args) => nemesis_cmd::run(args),
    }
}
