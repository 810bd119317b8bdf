//! `synod bench`: a closed-loop load generator (issue 7).
//!
//! N clients, each one session with one request in flight, run a workload for a while;
//! each point of a run is one (workload, clients) pair. Per point it reports throughput,
//! latency percentiles from an HDR histogram, errors by kind, and — when it started the
//! servers itself — the servers' CPU seconds per 1,000 operations, read from
//! `/proc/PID/stat`. For Synod it also reads `/metrics` before and after a point, to say
//! how well group commit and batching worked (fsyncs per second, records per fsync,
//! commands per slot).
//!
//! The system under load is an enum, [`System`], not a hard-wired client, so that the
//! comparison with etcd (issue 7) can add a variant with its own client and its own way of
//! starting a local cluster; everything around it (the clock, the histograms, the table,
//! the JSON rows) is shared. Closed loop means a slow system gets fewer requests, not a
//! growing queue: the numbers are throughput at a given concurrency, and latency as one
//! waiting client sees it (coordinated omission does not apply to a closed loop).

mod args;
mod cluster;
mod load;
mod report;
mod system;

use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use rand::Rng;

pub use args::BenchArgs;
use cluster::raise_open_files_limit;
use load::{run_point, PointSpec};
use report::{format_duration, print_header, print_notes, print_row, Row};
use system::System;

pub fn run(args: BenchArgs) -> ExitCode {
    if let Err(error) = args.validate() {
        eprintln!("synod bench: {error}");
        return ExitCode::from(2);
    }
    raise_open_files_limit();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime starts");
    runtime.block_on(async move {
        let system = match System::synod(&args).await {
            Ok(system) => system,
            Err(error) => {
                eprintln!("synod bench: {error}");
                return ExitCode::FAILURE;
            }
        };
        let outcome = tokio::select! {
            outcome = bench(&system, &args) => outcome,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
        };
        // Stops the cluster we started (if any) before we print, so that its logs end.
        drop(system);
        match outcome {
            Ok(rows) => {
                if let Some(path) = &args.json {
                    let text = serde_json::to_string_pretty(&rows).expect("rows serialize");
                    if let Err(error) = std::fs::write(path, text + "\n") {
                        eprintln!("synod bench: cannot write {}: {error}", path.display());
                        return ExitCode::FAILURE;
                    }
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("synod bench: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Runs every (workload, clients) point in turn and prints the table as it goes.
async fn bench(system: &System, args: &BenchArgs) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let transfer_ids = Arc::new(AtomicU64::new(rand::thread_rng().gen_range(1..1u64 << 62)));
    eprintln!(
        "synod bench: {} against {}; {} per point after {} warm-up",
        args.workload.iter().map(|w| w.name()).collect::<Vec<_>>().join(","),
        system.describe(),
        format_duration(args.duration),
        format_duration(args.warmup),
    );
    print_header();
    for &workload in &args.workload {
        system.prepare(workload, args).await?;
        for &clients in &args.clients {
            let spec = PointSpec { workload, clients, transfer_ids: transfer_ids.clone() };
            let row = run_point(system, args, spec).await?;
            print_row(&row);
            rows.push(row);
        }
    }
    print_notes(system, &rows);
    Ok(rows)
}
