//! Swarms of seeds with every fault kind pass: no safety violation, and after healing
//! every operation completes and every replica converges.

use rayon::prelude::*;
use synod_sim::{run_seed, SimOptions, SimReport, WorkloadKind};

fn swarm(nodes: usize, seeds: std::ops::RangeInclusive<u64>) {
    synod_sim::quiet_panics();
    let options = SimOptions { nodes: Some(nodes), ..SimOptions::default() };
    let reports: Vec<SimReport> = seeds.into_par_iter().map(|seed| run_seed(seed, &options)).collect();
    let failures: Vec<String> =
        reports.iter().filter(|r| !r.outcome.is_ok()).map(|r| format!("  {}", r.summary())).collect();
    let ok: u64 = reports.iter().map(|r| r.ops.ok).sum();
    let events: u64 = reports.iter().map(|r| r.events).sum();
    let bank = reports.iter().filter(|r| r.workload == WorkloadKind::Bank).count();
    let crashes: u64 = reports.iter().map(|r| r.faults.crashes).sum();
    let partitions: u64 = reports.iter().map(|r| r.faults.partitions).sum();
    let unknown = reports.iter().filter(|r| r.linearizability_unknown).count();
    println!(
        "{} seeds with {nodes} nodes ({bank} bank, {} register): {events} events, {ok} ops ok, {crashes} crashes, {partitions} partitions, {unknown} histories too hard to check",
        reports.len(),
        reports.len() - bank
    );
    assert!(bank > 0 && bank < reports.len(), "both workloads ran");
    assert!(failures.is_empty(), "{} seeds failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn two_hundred_seeds_with_three_nodes_pass() {
    swarm(3, 1..=200);
}

#[test]
fn two_hundred_seeds_with_five_nodes_pass() {
    swarm(5, 1..=200);
}
