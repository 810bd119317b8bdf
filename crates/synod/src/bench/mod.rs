//! `synod bench`: a closed-loop load generator.
//!
//! N clients, each one session with one request in flight, run a workload for a while;
//! each point of a run is one (workload, clients) pair. Per point it reports throughput,
//! latency percentiles from an HDR histogram, errors by kind, and — when it started the
//! servers itself — the servers' CPU seconds per 1,000 operations, read from
//! `/proc/PID/stat`. For Synod it also reads `/metrics` before and after a point, to say
//! how well group commit and batching worked (fsyncs per second, records per fsync,
//! commands per slot).
//!
//! The system under load is an enum, [`System`], not a hard-wired client: `--compare etcd`
//! (feature `etcd`, `etcd.rs`) adds a local etcd cluster with its own client, and
//! everything around it (the clock, the histograms, the tables, the JSON rows, the plot)
//! is shared, so both systems meet the same load generator in the same run. Closed loop means a slow system gets fewer requests, not a
//! growing queue: the numbers are throughput at a given concurrency, and latency as one
//! waiting client sees it (coordinated omission does not apply to a closed loop).

mod args;
mod cluster;
#[cfg(feature = "etcd")]
mod etcd;
mod load;
mod plot;
mod report;
mod system;
mod table;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use rand::Rng;

pub use args::BenchArgs;
use args::Compare;
use cluster::raise_open_files_limit;
use load::{run_point, PointSpec};
use report::{format_duration, print_header, print_notes, print_row, Row};
use system::System;

/// How to get a build that can compare with etcd, for the error when this one cannot.
#[cfg(not(feature = "etcd"))]
const ETCD_BUILD_HINT: &str = "this build of synod has no etcd client (it is behind the cargo feature \
     `etcd`, whose build needs protoc). Install protoc and etcd (Debian: apt-get install -y \
     protobuf-compiler etcd-server), then build with `cargo build --release -p synod --features etcd` \
     and run target/release/synod bench --compare etcd";

pub fn run(args: BenchArgs) -> ExitCode {
    if let Err(error) = args.validate() {
        eprintln!("synod bench: {error}");
        return ExitCode::from(2);
    }
    #[cfg(not(feature = "etcd"))]
    if args.compare == Some(Compare::Etcd) {
        eprintln!("synod bench: --compare etcd: {ETCD_BUILD_HINT}");
        return ExitCode::from(2);
    }
    raise_open_files_limit();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime starts");
    runtime.block_on(async move {
        // Ctrl-C drops the run, and with it the systems: their clusters stop and their
        // temporary data goes (the clusters kill their processes when dropped).
        let outcome = tokio::select! {
            outcome = start_and_bench(&args) => outcome,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
        };
        match outcome.and_then(|rows| write_outputs(&args, &rows)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("synod bench: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Starts the systems (Synod, and the one to compare with), runs every point, and stops
/// them before returning, so that their logs end before the summary.
async fn start_and_bench(args: &BenchArgs) -> Result<Vec<Row>, String> {
    let mut systems = vec![System::synod(args).await?];
    if let Some(compare) = args.compare {
        systems.push(start_other(compare, args).await?);
    }
    let rows = bench(&systems, args).await?;
    drop(systems);
    if args.compare.is_some() {
        println!();
        print!("{}", table::markdown(&rows));
        println!("{}", table::RATIO_LEGEND);
    }
    Ok(rows)
}

#[cfg(feature = "etcd")]
async fn start_other(compare: Compare, args: &BenchArgs) -> Result<System, String> {
    match compare {
        Compare::Etcd => Ok(System::Etcd(etcd::EtcdSystem::start(args).await?)),
    }
}

#[cfg(not(feature = "etcd"))]
async fn start_other(compare: Compare, _args: &BenchArgs) -> Result<System, String> {
    match compare {
        Compare::Etcd => Err(ETCD_BUILD_HINT.to_string()),
    }
}

/// Runs every (workload, clients) point in turn and prints the table as it goes. With two
/// systems the points interleave (Synod, then etcd, at each client count), so that both
/// meet the same machine: on shared cores, noise from elsewhere changes by the minute.
async fn bench(systems: &[System], args: &BenchArgs) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let transfer_ids = Arc::new(AtomicU64::new(rand::thread_rng().gen_range(1..1u64 << 62)));
    let (workloads, clients) = (args.workloads(), args.clients());
    let points: usize =
        workloads.iter().map(|&w| systems.iter().filter(|s| s.supports(w)).count() * clients.len()).sum();
    eprintln!(
        "synod bench: {} against {}; {points} points of {} after {} warm-up",
        workloads.iter().map(|w| w.name()).collect::<Vec<_>>().join(","),
        systems.iter().map(System::describe).collect::<Vec<_>>().join(" and "),
        format_duration(args.duration()),
        format_duration(args.warmup()),
    );
    print_header();
    for &workload in &workloads {
        let systems: Vec<&System> = systems.iter().filter(|s| s.supports(workload)).collect();
        for system in &systems {
            system.prepare(workload, args).await?;
        }
        for &clients in &clients {
            for system in &systems {
                let spec = PointSpec {
                    workload,
                    clients,
                    duration: args.duration(),
                    warmup: args.warmup(),
                    index: rows.len() + 1,
                    points,
                    transfer_ids: transfer_ids.clone(),
                };
                let row = run_point(system, args, spec).await?;
                print_row(&row);
                rows.push(row);
            }
        }
    }
    print_notes(systems, &rows);
    Ok(rows)
}

/// Writes the files the flags asked for: JSON rows, the Markdown table, the SVG plot.
fn write_outputs(args: &BenchArgs, rows: &[Row]) -> Result<(), String> {
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    if let Some(path) = &args.json {
        write(path, serde_json::to_string_pretty(rows).expect("rows serialize") + "\n")?;
    }
    if let Some(path) = &args.markdown {
        let legend = if rows.iter().any(|r| r.system != "synod") {
            format!("\n{}\n", table::RATIO_LEGEND)
        } else {
            String::new()
        };
        write(path, table::markdown(rows) + &legend)?;
    }
    if let Some(path) = &args.plot {
        write(path, plot::svg(rows))?;
    }
    Ok(())
}
