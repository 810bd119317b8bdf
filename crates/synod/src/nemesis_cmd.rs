//! `synod nemesis`: fault injection against real `synod server` processes (see the
//! `synod-nemesis` crate). This file only parses flags, shows progress and prints the
//! report.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, ValueEnum};
use synod_nemesis::{FaultKind, RunConfig, WorkloadKind};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum WorkloadArg {
    Register,
    Bank,
}

#[derive(Args, Debug)]
pub struct NemesisArgs {
    /// What the clients do: per-key registers (linearizability) or the bank (transfers).
    #[arg(long, value_enum, default_value_t = WorkloadArg::Register)]
    workload: WorkloadArg,
    /// How long the workload runs, e.g. 60s, 30m.
    #[arg(long, default_value = "60s", value_parser = synod_nemesis::parse_duration)]
    duration: std::time::Duration,
    /// Seeds the fault schedule and the clients' choices (printed; same seed, same schedule).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for the report, the history, and the nodes' configs, logs and data.
    #[arg(long, default_value = "nemesis-out")]
    out: PathBuf,
    /// Number of servers: 3 or 5.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Faults to inject, comma-separated: kill, pause, partition, loss, delay, corrupt
    /// (flip bytes in a stopped node's log or checkpoint), wipe (delete a stopped node's
    /// whole data directory and restart it with no flag: it must come back as a new
    /// replica and repair from its peers), membership (fresh nodes join with --join and are
    /// promoted, voters and leaders are removed, killed voters replaced; 3 to 5 voters).
    #[arg(long, value_delimiter = ',', default_value = "kill,pause,partition")]
    nemesis: Vec<String>,
    /// Concurrent clients (1-64).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Wall-clock budget of the linearizability check.
    #[arg(long, default_value = "120s", value_parser = synod_nemesis::parse_duration)]
    check_budget: std::time::Duration,
    /// Plant a bug in the servers (stale-read) or in the harness, which then brings a
    /// wiped node back voting at once (wipe-keeps-identity, wipe-bootstraps), or starts a
    /// joining node with --bootstrap (join-bootstraps). Only test builds (the
    /// `planted-bugs` feature) accept them; the run must then fail.
    #[arg(long, hide = true)]
    planted_bug: Option<String>,
    /// The synod binary to run as servers (default: this one).
    #[arg(long, hide = true)]
    server_binary: Option<PathBuf>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

pub fn run(args: NemesisArgs) -> ExitCode {
    let nemeses: Result<Vec<FaultKind>, String> =
        args.nemesis.iter().map(|n| FaultKind::parse(n.trim())).collect();
    let nemeses = match nemeses {
        Ok(mut n) => {
            n.sort();
            n.dedup();
            n
        }
        Err(e) => {
            eprintln!("synod nemesis: {e}");
            return ExitCode::from(2);
        }
    };
    let binary = match args.server_binary.clone().map(Ok).unwrap_or_else(std::env::current_exe) {
        Ok(binary) => binary,
        Err(e) => {
            eprintln!("synod nemesis: cannot find the synod binary: {e}");
            return ExitCode::from(2);
        }
    };
    let workload = match args.workload {
        WorkloadArg::Register => WorkloadKind::Register,
        WorkloadArg::Bank => WorkloadKind::Bank,
    };
    let mut config = RunConfig::new(binary, workload, args.out.clone());
    config.nodes = args.nodes;
    config.clients = args.clients;
    config.duration = args.duration;
    config.seed = args.seed;
    config.nemeses = nemeses;
    config.check_budget = args.check_budget;
    config.planted_bug = args.planted_bug.clone();
    config.interrupt = Some(&INTERRUPTED);
    // Ctrl-C ends the run early, but it still heals, checks and removes what it created.
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_interrupt as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_interrupt as *const () as libc::sighandler_t);
    }
    eprintln!(
        "synod nemesis: workload {} for {:?}, {} nodes, {} clients, nemeses {}, seed {}, output in {}",
        workload.name(),
        config.duration,
        config.nodes,
        config.clients,
        config.nemeses.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
        config.seed,
        args.out.display()
    );
    let tty = std::io::stderr().is_terminal();
    let mut last_running_line = std::time::Instant::now() - std::time::Duration::from_secs(60);
    let mut progress = |line: &str| {
        // One line that updates in place on a terminal; in a log, every phase change
        // but the running counts only every ten seconds.
        if tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else if !line.starts_with("running") || last_running_line.elapsed().as_secs() >= 10 {
            if line.starts_with("running") {
                last_running_line = std::time::Instant::now();
            }
            eprintln!("{line}");
        }
    };
    let result = synod_nemesis::run(&config, &mut progress);
    if tty {
        eprintln!();
    }
    match result {
        Ok(report) => {
            println!("{}", report.text());
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("synod nemesis: {e}");
            ExitCode::from(2)
        }
    }
}
