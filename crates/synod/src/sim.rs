//! `synod sim`: run the deterministic simulator from the command line.
//!
//! One seed prints one line ending in `ok` or the first violation; a range of seeds runs
//! on every core and stops at the first failure, writing that seed's trace. Exit codes:
//! 0 all good, 1 safety violation, 2 liveness violation (also with `--bug`: finding the
//! planted bug is reported as the violation it is).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use synod_sim::{Bug, Outcome, Scenario, SimOptions, SimReport, WorkloadKind};

#[derive(clap::Args)]
pub struct SimArgs {
    /// Run this one seed.
    #[arg(long, conflicts_with_all = ["seeds", "scenario"])]
    seed: Option<u64>,
    /// Run seeds FIRST..FIRST+N-1 in parallel on every core.
    #[arg(long, conflicts_with = "scenario")]
    seeds: Option<u64>,
    /// The first seed of `--seeds`.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Cluster size (default: drawn from each seed, 3 or 5).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: Option<u64>,
    /// Workload: register or bank (default: drawn from each seed).
    #[arg(long)]
    workload: Option<WorkloadKind>,
    /// Plant a bug the checkers must catch: skip-fsync-before-ack (alias skip-persist),
    /// small-quorum, stale-ballot, stale-read, vote-while-recovering, own-vote-early or
    /// reconfig-no-overlap (a configuration governs at once, not ALPHA slots later).
    #[arg(long)]
    bug: Option<Bug>,
    /// Membership changes by the simulated operator: on or off (default: drawn per seed,
    /// half the seeds; with --bug, on only for reconfig-no-overlap).
    #[arg(long, value_parser = parse_on_off)]
    membership: Option<bool>,
    /// Length of the fault phase in simulated milliseconds (default: drawn per seed).
    #[arg(long)]
    fault_phase_ms: Option<u64>,
    /// Run a partial-connectivity scenario: quorum-loss, constrained-election, chained,
    /// or all.
    #[arg(long)]
    scenario: Option<String>,
    /// Where failing seeds' traces go.
    #[arg(long, default_value = "sim-traces")]
    trace_dir: PathBuf,
    /// With `--seed`: write the trace even if the seed passes.
    #[arg(long)]
    trace: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: SimArgs) -> ExitCode {
    synod_sim::quiet_panics();
    let options = SimOptions {
        nodes: args.nodes.map(|n| n as usize),
        workload: args.workload,
        bug: args.bug,
        fault_phase_ms: args.fault_phase_ms,
        membership: args.membership,
        ..SimOptions::default()
    };
    if let Some(scenario) = &args.scenario {
        return run_scenarios(scenario, args.json);
    }
    match (args.seed, args.seeds) {
        (Some(seed), _) => run_one(seed, &options, &args),
        (None, Some(count)) => run_many(args.first_seed, count, &options, &args),
        (None, None) => {
            eprintln!("synod sim: give --seed N, --seeds N or --scenario NAME");
            ExitCode::from(64)
        }
    }
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

fn exit_code(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Ok => 0,
        Outcome::Safety(_) => 1,
        Outcome::Liveness(_) => 2,
    }
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!("{}", serde_json::to_string(value).expect("reports serialize"));
}

/// Re-runs `seed` with tracing and writes its trace; says where.
fn write_trace(seed: u64, options: &SimOptions, dir: &Path) -> Option<PathBuf> {
    match synod_sim::write_trace(seed, options, dir) {
        Ok(path) => Some(path),
        Err(e) => {
            eprintln!("synod sim: cannot write the trace of seed {seed} to {}: {e}", dir.display());
            None
        }
    }
}

fn run_one(seed: u64, options: &SimOptions, args: &SimArgs) -> ExitCode {
    let report = synod_sim::run_seed(seed, options);
    let trace = (args.trace || !report.outcome.is_ok())
        .then(|| write_trace(seed, options, &args.trace_dir))
        .flatten();
    if args.json {
        print_json(&serde_json::json!({ "report": report, "trace": trace }));
    } else {
        println!("{}", report.summary());
        let full = report.outcome.to_string();
        if full.contains('\n') {
            println!("{full}");
        }
        if let Some(path) = &trace {
            println!("trace: {}", path.display());
        }
        if !report.outcome.is_ok() {
            println!("replay: synod sim --seed {seed}{}", synod_sim::replay_flags(options));
        }
    }
    ExitCode::from(exit_code(&report.outcome))
}

/// Totals over a range of seeds.
#[derive(Default, serde::Serialize)]
struct Totals {
    seeds_run: u64,
    events: u64,
    simulated_us: u64,
    ops_ok: u64,
    ops_fail: u64,
    ops_info: u64,
    linearizability_unknown: u64,
    faults: synod_sim::FaultCounts,
}

impl Totals {
    fn add(&mut self, report: &SimReport) {
        self.seeds_run += 1;
        self.events += report.events;
        self.simulated_us += report.simulated_us;
        self.ops_ok += report.ops.ok;
        self.ops_fail += report.ops.fail;
        self.ops_info += report.ops.info;
        self.linearizability_unknown += u64::from(report.linearizability_unknown);
        self.faults.add(&report.faults);
    }
}

fn run_many(first: u64, count: u64, options: &SimOptions, args: &SimArgs) -> ExitCode {
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let totals = Mutex::new(Totals::default());
    let failures: Mutex<Vec<SimReport>> = Mutex::new(Vec::new());
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(count);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} seeds {per_sec} {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let last_line = Mutex::new(Instant::now());
    (first..first + count).into_par_iter().for_each(|seed| {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let report = synod_sim::run_seed(seed, options);
        totals.lock().expect("no panics hold this lock").add(&report);
        if !report.outcome.is_ok() {
            stop.store(true, Ordering::Relaxed);
            if let Some(bar) = &bar {
                bar.println(report.summary());
            }
            failures.lock().expect("no panics hold this lock").push(report);
        }
        let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
        match &bar {
            Some(bar) => bar.set_position(finished),
            None => {
                let mut last = last_line.lock().expect("no panics hold this lock");
                if last.elapsed() >= Duration::from_secs(10) || finished == count {
                    *last = Instant::now();
                    eprintln!("synod sim: {finished}/{count} seeds, {:.0}s", started.elapsed().as_secs_f64());
                }
            }
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let wall = started.elapsed();
    let totals = totals.into_inner().expect("no panics hold this lock");
    let mut failures = failures.into_inner().expect("no panics hold this lock");
    failures.sort_by_key(|r| r.seed);
    // Report the lowest failing seed found (seeds ran in parallel, so "first" is the
    // smallest, which is also the one a rerun finds first).
    let first_failure = failures.first();
    let trace = first_failure.and_then(|r| write_trace(r.seed, options, &args.trace_dir));
    let events_per_s = totals.events as f64 / wall.as_secs_f64();
    let seeds_per_min = totals.seeds_run as f64 * 60.0 / wall.as_secs_f64();
    if args.json {
        print_json(&serde_json::json!({
            "totals": totals,
            "wall_s": wall.as_secs_f64(),
            "events_per_s": events_per_s,
            "seeds_per_minute": seeds_per_min,
            "failures": failures,
            "trace": trace,
        }));
    } else {
        let bug = options.bug.map(|b| format!(" with planted bug {b}")).unwrap_or_default();
        println!(
            "{} seeds{bug} in {:.1}s: {} events ({:.0} events/s), {:.0}s simulated, {:.0} seeds/minute; ops ok={} fail={} info={}; crashes={} pauses={} partitions={}; linearizability unknown={}\nstorage: {}\nmembership: {}",
            totals.seeds_run,
            wall.as_secs_f64(),
            totals.events,
            events_per_s,
            totals.simulated_us as f64 / 1e6,
            seeds_per_min,
            totals.ops_ok,
            totals.ops_fail,
            totals.ops_info,
            totals.faults.crashes,
            totals.faults.pauses,
            totals.faults.partitions,
            totals.linearizability_unknown,
            totals.faults.storage_summary(),
            totals.faults.membership_summary(),
        );
        match first_failure {
            None => println!("ok"),
            Some(report) => {
                println!("FAILED: seed {}: {}", report.seed, report.outcome.headline());
                if let Some(path) = &trace {
                    println!("trace: {}", path.display());
                }
                println!("replay: synod sim --seed {}{}", report.seed, synod_sim::replay_flags(options));
            }
        }
    }
    ExitCode::from(first_failure.map_or(0, |r| exit_code(&r.outcome)))
}

fn run_scenarios(name: &str, json: bool) -> ExitCode {
    let scenarios: Vec<Scenario> = if name == "all" {
        Scenario::ALL.to_vec()
    } else {
        match name.parse() {
            Ok(scenario) => vec![scenario],
            Err(e) => {
                eprintln!("synod sim: {e}");
                return ExitCode::from(64);
            }
        }
    };
    let mut code = 0;
    for scenario in scenarios {
        let report = synod_sim::run_scenario(scenario, 1);
        if json {
            print_json(&report);
        } else {
            println!("{}", report.summary());
        }
        code = code.max(exit_code(&report.outcome));
    }
    ExitCode::from(code)
}
