//! Output: the rows of results (JSON), Synod's diagnostics from `/metrics`, and the table
//! for people.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::system::{ServerCounters, System};

/// One row of the results: the comparison's JSON schema, plus Synod's own diagnostics.
#[derive(Debug, Serialize)]
pub struct Row {
    pub(super) system: &'static str,
    pub(super) workload: &'static str,
    pub(super) clients: usize,
    pub(super) duration_s: f64,
    /// Requests that succeeded within the measured window.
    pub(super) ops: u64,
    pub(super) throughput_ops_s: f64,
    /// Transfers per second (transfer workloads; a batch request carries many).
    pub(super) transfers_s: Option<f64>,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) p999_ms: f64,
    pub(super) mean_ms: f64,
    pub(super) max_ms: f64,
    /// Server CPU (user + system, all nodes) per 1,000 requests; null when the servers
    /// are not ours to watch.
    pub(super) cpu_s_per_1k_ops: Option<f64>,
    /// The same for this load generator: on one machine it competes with the servers.
    pub(super) client_cpu_s_per_1k_ops: Option<f64>,
    pub(super) errors: BTreeMap<String, u64>,
    /// Synod's counters over the window (all nodes), when `/metrics` answered.
    pub(super) server: Option<ServerDiagnostics>,
}

#[derive(Debug, Serialize)]
pub(super) struct ServerDiagnostics {
    /// Write-ahead log syncs per second, summed over the nodes.
    fsyncs_per_s: f64,
    /// Records made durable per sync: how much group commit gathers (null: not counted).
    records_per_fsync: Option<f64>,
    fsync_ms_mean: f64,
    /// Slots decided per second, and requests per slot: how much the leader batches
    /// (etcd: Raft entries committed).
    slots_per_s: f64,
    ops_per_slot: f64,
    /// Commands per proposed batch, as the leader counts them (null: server too old).
    commands_per_batch: Option<f64>,
    /// Linearizable reads per second served under the leader lease (null: server too old).
    lease_reads_per_s: Option<f64>,
    /// Optimistic retries per committed transfer (etcd's transfers).
    #[serde(skip_serializing_if = "Option::is_none")]
    retries_per_op: Option<f64>,
}

pub(super) fn diagnostics(
    before: &ServerCounters,
    after: &ServerCounters,
    seconds: f64,
    ops: u64,
) -> ServerDiagnostics {
    let fsyncs = after.fsyncs - before.fsyncs;
    let slots = after.decided_upto - before.decided_upto;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let delta = |b: Option<f64>, a: Option<f64>| Some(a? - b?);
    let batches = delta(before.batches_proposed, after.batches_proposed);
    let commands = delta(before.commands_proposed, after.commands_proposed);
    ServerDiagnostics {
        fsyncs_per_s: fsyncs / seconds,
        records_per_fsync: delta(before.records_persisted, after.records_persisted).map(|r| ratio(r, fsyncs)),
        fsync_ms_mean: ratio((after.fsync_seconds - before.fsync_seconds) * 1_000.0, fsyncs),
        slots_per_s: slots / seconds,
        ops_per_slot: ratio(ops as f64, slots),
        commands_per_batch: batches.zip(commands).map(|(b, c)| ratio(c, b)),
        lease_reads_per_s: delta(before.lease_reads, after.lease_reads).map(|r| r / seconds),
        retries_per_op: delta(before.transfer_retries, after.transfer_retries).map(|r| ratio(r, ops as f64)),
    }
}

pub(super) fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

pub(super) fn print_header() {
    println!(
        "{:<8} {:<15} {:>7} {:>10} {:>11} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8}  errors",
        "system",
        "workload",
        "clients",
        "ops/s",
        "transfers/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "srv cpu/k",
        "cli cpu/k",
        "fsync/s",
        "rec/sync",
        "ops/slot",
    );
}

pub(super) fn print_row(row: &Row) {
    let opt = |v: Option<f64>, precision: usize| v.map_or("-".to_string(), |v| format!("{v:.precision$}"));
    let errors = if row.errors.is_empty() {
        "0".to_string()
    } else {
        row.errors.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    };
    println!(
        "{:<8} {:<15} {:>7} {:>10.0} {:>11} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>9} {:>8} {:>8} {:>8}  {errors}",
        row.system,
        row.workload,
        row.clients,
        row.throughput_ops_s,
        opt(row.transfers_s, 0),
        row.p50_ms,
        row.p99_ms,
        row.p999_ms,
        opt(row.cpu_s_per_1k_ops, 3),
        opt(row.client_cpu_s_per_1k_ops, 3),
        opt(row.server.as_ref().map(|s| s.fsyncs_per_s), 0),
        opt(row.server.as_ref().filter(|s| s.fsyncs_per_s > 0.0).and_then(|s| s.records_per_fsync), 1),
        opt(row.server.as_ref().filter(|s| s.slots_per_s > 0.0).map(|s| s.ops_per_slot), 1),
    );
}

pub(super) fn print_notes(systems: &[System], rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!("srv cpu/k, cli cpu/k: CPU seconds (user+system) per 1,000 requests of the servers (all nodes;");
    println!("  '-' when they were not started by this run) and of this load generator.");
    if systems.iter().any(|s| matches!(s, System::Synod(_))) {
        println!(
            "fsync/s, rec/sync: write-ahead log syncs per second summed over the nodes, and records per"
        );
        println!("  sync (group commit); ops/slot: requests per decided slot (leader batching).");
    }
    if systems.iter().any(|s| s.name() == "etcd") {
        println!(
            "etcd: fsync/s counts WAL fsyncs; ops/slot is requests per committed Raft entry. A transfer"
        );
        println!("  is an optimistic Txn retried on conflict and counts once; retries per transfer:");
        for row in rows.iter().filter(|r| r.system == "etcd" && r.workload == "transfer") {
            let retries = row.server.as_ref().and_then(|s| s.retries_per_op);
            println!("  x{}: {}", row.clients, retries.map_or("-".to_string(), |r| format!("{r:.2}")));
        }
    }
}
