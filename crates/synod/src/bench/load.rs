//! One point of a run: N closed-loop clients drawing a workload's requests for warm-up
//! plus duration, their latencies in HDR histograms.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use synod_client::api::TransferRequest;

use super::args::{BenchArgs, Workload};
use super::cluster::{cpu_seconds, cpu_seconds_self};
use super::report::{diagnostics, Row};
use super::system::{Session, System};

/// Key and value sizes of the key-value workloads: the sizes etcd's own benchmark and the
/// issue use, so that the comparison moves the same bytes.
pub const KEY_BYTES: usize = 8;
pub const VALUE_BYTES: usize = 256;
/// Bench accounts live far from small ids a person may have opened by hand.
pub(super) const ACCOUNT_BASE: u64 = 1_000_000_000;
/// Latencies are recorded in microseconds, up to two minutes, three significant digits.
const LATENCY_US_MAX: u64 = 120_000_000;

/// One request of a workload.
pub(super) enum Op {
    Put { key: String, value: Arc<str> },
    Get { key: String },
    Transfer(TransferRequest),
    TransferBatch(Vec<TransferRequest>),
}

pub(super) fn key_name(k: u64) -> String {
    let key = format!("{k:08x}");
    debug_assert_eq!(key.len(), KEY_BYTES);
    key
}

pub(super) fn random_value(rng: &mut StdRng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..VALUE_BYTES).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

/// Draws one client's requests.
struct OpGen {
    rng: StdRng,
    workload: Workload,
    keys: u64,
    accounts: u64,
    batch: usize,
    value: Arc<str>,
    /// Shared by all clients of the run: every transfer gets a fresh id.
    transfer_ids: Arc<AtomicU64>,
}

impl OpGen {
    fn next(&mut self) -> Op {
        let write = match self.workload {
            Workload::Write => true,
            Workload::Read => false,
            Workload::Mixed => self.rng.gen_bool(0.5),
            Workload::Transfer => {
                let id = self.transfer_ids.fetch_add(1, Ordering::Relaxed);
                return Op::Transfer(self.transfer(id));
            }
            Workload::TransferBatch => {
                let first = self.transfer_ids.fetch_add(self.batch as u64, Ordering::Relaxed);
                return Op::TransferBatch((0..self.batch as u64).map(|i| self.transfer(first + i)).collect());
            }
        };
        let key = key_name(self.rng.gen_range(0..self.keys));
        if write {
            Op::Put { key, value: self.value.clone() }
        } else {
            Op::Get { key }
        }
    }

    /// A transfer of 1 between two different random accounts.
    fn transfer(&mut self, id: u64) -> TransferRequest {
        let from = self.rng.gen_range(0..self.accounts);
        let to = (from + self.rng.gen_range(1..self.accounts)) % self.accounts;
        TransferRequest { id, from: ACCOUNT_BASE + from, to: ACCOUNT_BASE + to, amount: 1 }
    }
}

pub(super) struct PointSpec {
    pub(super) workload: Workload,
    pub(super) clients: usize,
    pub(super) duration: Duration,
    pub(super) warmup: Duration,
    /// This point's place in the run (1-based) and the run's points, for the progress bar.
    pub(super) index: usize,
    pub(super) points: usize,
    pub(super) transfer_ids: Arc<AtomicU64>,
}

/// What one client saw within the measured window.
struct ClientTally {
    latency_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

pub(super) async fn run_point(system: &System, args: &BenchArgs, spec: PointSpec) -> Result<Row, String> {
    let sessions: Vec<Session> = system.sessions(spec.clients).await?;
    let started = Instant::now();
    let measure_from = started + spec.warmup;
    let measure_until = measure_from + spec.duration;
    let completed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, session) in sessions.into_iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(rand::thread_rng().gen::<u64>() ^ index as u64);
        let value: Arc<str> = random_value(&mut rng).into();
        let generator = OpGen {
            rng,
            workload: spec.workload,
            keys: args.keys,
            accounts: args.accounts,
            batch: args.batch,
            value,
            transfer_ids: spec.transfer_ids.clone(),
        };
        tasks.spawn(client_loop(session, generator, measure_from, measure_until, completed.clone()));
    }

    let progress = progress_bar(system, &spec);
    let watcher = {
        let (progress, completed) = (progress.clone(), completed.clone());
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = (Instant::now(), completed.load(Ordering::Relaxed));
                let rate = (now.1 - last.1) as f64 / (now.0 - last.0).as_secs_f64();
                progress.set_position(started.elapsed().as_millis() as u64);
                progress.set_message(format!("{rate:.0} ops/s"));
                last = now;
            }
        })
    };

    tokio::time::sleep_until(measure_from.into()).await;
    let pids = system.server_pids();
    let cpu_before = (cpu_seconds(&pids), cpu_seconds_self());
    let counters_before = system.counters().await;
    tokio::time::sleep_until(measure_until.into()).await;
    let cpu_after = (cpu_seconds(&pids), cpu_seconds_self());
    let counters_after = system.counters().await;

    let mut latency_us = new_histogram();
    let mut errors = BTreeMap::new();
    while let Some(tally) = tasks.join_next().await {
        let tally = tally.map_err(|e| format!("a client task failed: {e}"))?;
        latency_us.add(&tally.latency_us).expect("histograms with the same bounds add");
        for (kind, count) in tally.errors {
            *errors.entry(kind).or_insert(0) += count;
        }
    }
    watcher.abort();
    progress.finish_and_clear();

    let ops = latency_us.len();
    let seconds = spec.duration.as_secs_f64();
    let per_1k = |cpu: Option<f64>| cpu.filter(|_| ops > 0).map(|c| c * 1_000.0 / ops as f64);
    let items = if spec.workload == Workload::TransferBatch { args.batch as u64 } else { 1 };
    let ms = |us: u64| us as f64 / 1_000.0;
    let row = Row {
        system: system.name(),
        workload: spec.workload.name(),
        clients: spec.clients,
        duration_s: seconds,
        ops,
        throughput_ops_s: ops as f64 / seconds,
        transfers_s: spec.workload.uses_accounts().then(|| (ops * items) as f64 / seconds),
        p50_ms: ms(latency_us.value_at_quantile(0.5)),
        p99_ms: ms(latency_us.value_at_quantile(0.99)),
        p999_ms: ms(latency_us.value_at_quantile(0.999)),
        mean_ms: latency_us.mean() / 1_000.0,
        max_ms: ms(latency_us.max()),
        cpu_s_per_1k_ops: per_1k(cpu_before.0.zip(cpu_after.0).map(|(b, a)| a - b)),
        client_cpu_s_per_1k_ops: per_1k(cpu_before.1.zip(cpu_after.1).map(|(b, a)| a - b)),
        errors,
        server: counters_before.zip(counters_after).map(|(b, a)| diagnostics(&b, &a, seconds, ops)),
    };
    eprintln!(
        "synod bench: {} {} x{}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        row.system,
        row.workload,
        row.clients,
        row.throughput_ops_s,
        row.p50_ms,
        row.p99_ms,
        row.errors.values().sum::<u64>()
    );
    Ok(row)
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// One closed-loop client: issue, wait, record, repeat, until the window closes. A call
/// still in flight when it closes is abandoned: it would land outside the window.
async fn client_loop(
    session: Session,
    mut generator: OpGen,
    measure_from: Instant,
    measure_until: Instant,
    completed: Arc<AtomicU64>,
) -> ClientTally {
    let mut tally = ClientTally { latency_us: new_histogram(), errors: BTreeMap::new() };
    // Within the warm-up: point the session at the leader, so that measured requests do
    // not pay a follower's forwarding hop (as etcd's clients talk to the leader too).
    session.find_leader().await;
    loop {
        let sent = Instant::now();
        if sent >= measure_until {
            return tally;
        }
        let op = generator.next();
        let result = tokio::select! {
            result = session.execute(op) => result,
            _ = tokio::time::sleep_until(measure_until.into()) => return tally,
        };
        let done = Instant::now();
        completed.fetch_add(1, Ordering::Relaxed);
        if sent < measure_from || done > measure_until {
            continue;
        }
        match result {
            Ok(()) => tally.latency_us.saturating_record((done - sent).as_micros() as u64),
            Err(kind) => *tally.errors.entry(kind).or_insert(0) += 1,
        }
    }
}

fn progress_bar(system: &System, spec: &PointSpec) -> indicatif::ProgressBar {
    let total_ms = (spec.warmup + spec.duration).as_millis() as u64;
    let bar = indicatif::ProgressBar::new(total_ms);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>36} [{bar:30}] {elapsed:>3} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!(
        "{}/{} {} {} x{}",
        spec.index,
        spec.points,
        system.name(),
        spec.workload.name(),
        spec.clients
    ));
    bar
}

#[cfg(test)]
mod tests {
    use super::super::args::KEYS_MAX;
    use super::*;

    #[test]
    fn keys_are_eight_bytes_and_transfers_never_go_to_the_same_account() {
        assert_eq!(key_name(0).len(), KEY_BYTES);
        assert_eq!(key_name(KEYS_MAX - 1).len(), KEY_BYTES);
        let mut generator = OpGen {
            rng: StdRng::seed_from_u64(7),
            workload: Workload::TransferBatch,
            keys: 10,
            accounts: 2,
            batch: 50,
            value: "v".into(),
            transfer_ids: Arc::new(AtomicU64::new(1)),
        };
        let Op::TransferBatch(transfers) = generator.next() else { panic!("a batch") };
        assert_eq!(transfers.len(), 50);
        assert!(transfers.iter().all(|t| t.from != t.to && t.amount == 1));
        let ids: std::collections::BTreeSet<u64> = transfers.iter().map(|t| t.id).collect();
        assert_eq!(ids.len(), 50, "fresh ids");
    }
}
