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

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use synod_client::api::{TransferRequest, TxnOp, TxnRequest};
use synod_client::{Client, Error, Options, DEFAULT_ENDPOINTS};
use synod_core::apps::bank::TRANSFER_BATCH_MAX;
use synod_core::apps::kv::TXN_OPS_MAX;

/// Concurrent clients in one point at most (each holds a connection and a task).
pub const CLIENTS_MAX: usize = 2_000;
/// Points (client counts) per workload at most.
pub const CLIENT_COUNTS_MAX: usize = 16;
/// Measured time per point at most, and unmeasured warm-up at most.
pub const DURATION_MAX: Duration = Duration::from_secs(600);
pub const WARMUP_MAX: Duration = Duration::from_secs(60);
/// Keys and accounts a workload draws from at most.
pub const KEYS_MAX: u64 = 10_000_000;
pub const ACCOUNTS_MAX: u64 = 1_000_000;
/// Key and value sizes of the key-value workloads: the sizes etcd's own benchmark and the
/// issue use, so that the comparison moves the same bytes.
pub const KEY_BYTES: usize = 8;
pub const VALUE_BYTES: usize = 256;
/// Bench accounts live far from small ids a person may have opened by hand.
const ACCOUNT_BASE: u64 = 1_000_000_000;
/// Every bench account starts with this much: a run never runs out of money.
const ACCOUNT_BALANCE: u64 = 1 << 50;
/// Clients that load keys or open accounts before a workload, at most.
const PREPARE_CLIENTS: usize = 16;
/// Keys per preloading transaction (below the server's `TXN_OPS_MAX`).
const PRELOAD_KEYS_PER_TXN: usize = 100;
const _: () = assert!(PRELOAD_KEYS_PER_TXN <= TXN_OPS_MAX);
/// Latencies are recorded in microseconds, up to two minutes, three significant digits.
const LATENCY_US_MAX: u64 = 120_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Puts of 8-byte keys with 256-byte values, keys uniform over --keys.
    Write,
    /// Linearizable gets of preloaded keys.
    Read,
    /// Half writes, half linearizable reads.
    Mixed,
    /// One bank transfer per request between pre-opened accounts.
    Transfer,
    /// One request carrying --batch transfers, applied atomically in one slot.
    TransferBatch,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Write => "write",
            Workload::Read => "read",
            Workload::Mixed => "mixed",
            Workload::Transfer => "transfer",
            Workload::TransferBatch => "transfer-batch",
        }
    }

    fn uses_keys(self) -> bool {
        matches!(self, Workload::Read | Workload::Mixed)
    }

    fn uses_accounts(self) -> bool {
        matches!(self, Workload::Transfer | Workload::TransferBatch)
    }
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Workloads, comma-separated, run in turn: write, read, mixed, transfer, transfer-batch.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "write")]
    workload: Vec<Workload>,
    /// Concurrent clients, comma-separated: one measured point per count, run in turn.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    clients: Vec<usize>,
    /// Measured time per point: 10s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured load before each point (connections, leader discovery, caches).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// HTTP endpoints of a running cluster, comma-separated (default: the dev cluster's).
    #[arg(long, value_delimiter = ',', conflicts_with = "start_cluster")]
    endpoints: Vec<String>,
    /// Start a local three-node cluster of this binary for the run, and stop it after.
    /// Only then can the servers' CPU time be measured.
    #[arg(long)]
    start_cluster: bool,
    /// Where --start-cluster keeps the nodes' data and logs (default: a temporary
    /// directory, removed at the end).
    #[arg(long, requires = "start_cluster")]
    data_dir: Option<PathBuf>,
    /// Extra server settings for --start-cluster: a TOML fragment in the format of
    /// `synod server --config` without node_id, members and data_dir (the bench sets
    /// those), e.g. a `[protocol]` table with `window_slots = 4`. For tuning experiments.
    #[arg(long, value_name = "FILE", requires = "start_cluster")]
    server_config: Option<PathBuf>,
    /// Transfers per request in the transfer-batch workload.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Distinct keys the key-value workloads draw from (read and mixed preload them all).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Accounts the transfer workloads draw from (opened before the first point).
    #[arg(long, default_value_t = 1_000)]
    accounts: u64,
    /// Also write the results to FILE as a JSON array of rows.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Parses `10s`, `500ms`, `2m` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (text, 1_000.0)
    };
    let value: f64 =
        number.trim().parse().map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?} is not a duration like 10s or 500ms"));
    }
    Ok(Duration::from_micros((value * scale_ms * 1_000.0).round() as u64))
}

impl BenchArgs {
    /// Checks every bound; the message says what to change.
    fn validate(&self) -> Result<(), String> {
        if self.clients.is_empty() || self.clients.len() > CLIENT_COUNTS_MAX {
            return Err(format!("--clients takes 1 to {CLIENT_COUNTS_MAX} counts"));
        }
        if let Some(bad) = self.clients.iter().find(|&&c| c == 0 || c > CLIENTS_MAX) {
            return Err(format!("--clients {bad}: each count must be in 1..={CLIENTS_MAX}"));
        }
        if self.duration < Duration::from_millis(100) || self.duration > DURATION_MAX {
            return Err(format!("--duration must be between 100ms and {}s", DURATION_MAX.as_secs()));
        }
        if self.warmup > WARMUP_MAX {
            return Err(format!("--warmup must be at most {}s", WARMUP_MAX.as_secs()));
        }
        if self.batch == 0 || self.batch > TRANSFER_BATCH_MAX {
            return Err(format!("--batch must be in 1..={TRANSFER_BATCH_MAX}"));
        }
        if self.keys == 0 || self.keys > KEYS_MAX {
            return Err(format!("--keys must be in 1..={KEYS_MAX}"));
        }
        if self.accounts < 2 || self.accounts > ACCOUNTS_MAX {
            return Err(format!("--accounts must be in 2..={ACCOUNTS_MAX}"));
        }
        Ok(())
    }
}

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

// ---------------------------------------------------------------------------------------
// The systems under load.

/// A system under load. Today: Synod. The etcd comparison of issue 7 adds a variant
/// (its client crate, its local cluster) and nothing else changes.
pub enum System {
    Synod(SynodSystem),
}

pub struct SynodSystem {
    endpoints: Vec<String>,
    /// The cluster we started, if we did: its processes are charged the CPU time.
    cluster: Option<LocalCluster>,
    /// What `prepare` loaded already: keys, accounts.
    prepared: std::sync::Mutex<(bool, bool)>,
}

/// One client's connection to the system: one request in flight at a time.
enum Session {
    Synod(Client),
}

/// One request of a workload.
enum Op {
    Put { key: String, value: Arc<str> },
    Get { key: String },
    Transfer(TransferRequest),
    TransferBatch(Vec<TransferRequest>),
}

/// Counters a system exposes about itself, sampled before and after a point.
#[derive(Clone, Debug, Default)]
struct ServerCounters {
    fsyncs: f64,
    fsync_seconds: f64,
    records_persisted: f64,
    /// The highest `decided_upto` among the nodes: slots decided so far.
    decided_upto: f64,
    /// Batches the leaders proposed, and the commands in them (newer servers only).
    batches_proposed: Option<f64>,
    commands_proposed: Option<f64>,
    /// Reads served under the leader lease, without a slot (newer servers only).
    lease_reads: Option<f64>,
}

impl System {
    async fn synod(args: &BenchArgs) -> Result<System, String> {
        let (endpoints, cluster) = if args.start_cluster {
            let extra = match &args.server_config {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                None => String::new(),
            };
            let cluster = LocalCluster::start(args.data_dir.clone(), extra).await?;
            (cluster.endpoints(), Some(cluster))
        } else if args.endpoints.is_empty() {
            (DEFAULT_ENDPOINTS.iter().map(|e| e.to_string()).collect(), None)
        } else {
            (args.endpoints.clone(), None)
        };
        let system = System::Synod(SynodSystem { endpoints, cluster, prepared: Default::default() });
        system.wait_until_ready(Duration::from_secs(20)).await?;
        Ok(system)
    }

    fn name(&self) -> &'static str {
        match self {
            System::Synod(_) => "synod",
        }
    }

    fn describe(&self) -> String {
        match self {
            System::Synod(s) => match &s.cluster {
                Some(cluster) => format!("a local 3-node Synod cluster in {}", cluster.root.display()),
                None => format!("Synod at {}", s.endpoints.join(",")),
            },
        }
    }

    /// The processes whose CPU time a point charges to the system (empty: unknown).
    fn server_pids(&self) -> Vec<u32> {
        match self {
            System::Synod(s) => s.cluster.as_ref().map(|c| c.pids()).unwrap_or_default(),
        }
    }

    fn session(&self) -> Session {
        match self {
            System::Synod(s) => {
                // The client's default retries stay on: what a user sees is what we time.
                Session::Synod(Client::new(s.endpoints.clone(), Options::default()))
            }
        }
    }

    /// Waits until every node that answers follows the same leader, with a quorum, and
    /// keeps doing so for `LEADER_STABLE`. A fresh cluster's first election can change
    /// hands within its first second (two candidates of the same round: the higher
    /// ballot wins), and clients that found the first leader would then stay on a
    /// follower, which forwards: every request would pay an extra hop.
    async fn wait_until_ready(&self, within: Duration) -> Result<(), String> {
        const LEADER_STABLE: Duration = Duration::from_secs(1);
        let System::Synod(s) = self;
        let deadline = Instant::now() + within;
        let mut last = String::from("no answer yet");
        let mut stable_since: Option<(u32, Instant)> = None;
        loop {
            let mut leaders = Vec::new();
            for endpoint in &s.endpoints {
                let client =
                    Client::new(vec![endpoint.clone()], Options { attempts_max: 1, ..Options::default() });
                match client.status().await {
                    Ok(status) if status.quorum_connected => leaders.push(status.leader),
                    Ok(status) => {
                        leaders.push(None);
                        last = format!("{endpoint}: no quorum (leader {:?})", status.leader);
                    }
                    Err(error) => last = error.to_string(),
                }
            }
            let agreed = match leaders.first() {
                Some(&Some(leader)) if leaders.iter().all(|&l| l == Some(leader)) => Some(leader),
                _ => None,
            };
            stable_since = match (agreed, stable_since) {
                (Some(leader), Some((same, since))) if leader == same => Some((same, since)),
                (Some(leader), _) => Some((leader, Instant::now())),
                (None, _) => None,
            };
            if stable_since.is_some_and(|(_, since)| since.elapsed() >= LEADER_STABLE) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the cluster has no stable leader after {}s ({last}); is it running? \
                     (`synod dev`, or use --start-cluster)",
                    within.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Loads what a workload reads before its first point: keys for reads, accounts for
    /// transfers. Idempotent, so a second run against the same cluster redoes it safely.
    async fn prepare(&self, workload: Workload, args: &BenchArgs) -> Result<(), String> {
        /// One request of the preparation.
        enum Job {
            /// Puts of these keys in one transaction.
            Keys(Vec<String>),
            OpenAccount(u64),
        }
        if !workload.uses_keys() && !workload.uses_accounts() {
            return Ok(());
        }
        let System::Synod(synod) = self;
        {
            let mut prepared = synod.prepared.lock().expect("prepared lock");
            let done = if workload.uses_keys() { &mut prepared.0 } else { &mut prepared.1 };
            if std::mem::replace(done, true) {
                return Ok(());
            }
        }
        let started = Instant::now();
        let jobs: Vec<Job> = if workload.uses_keys() {
            let keys: Vec<u64> = (0..args.keys).collect();
            keys.chunks(PRELOAD_KEYS_PER_TXN)
                .map(|chunk| Job::Keys(chunk.iter().map(|&k| key_name(k)).collect()))
                .collect()
        } else {
            (0..args.accounts).map(|a| Job::OpenAccount(ACCOUNT_BASE + a)).collect()
        };
        let value = random_value(&mut StdRng::seed_from_u64(0));
        let count = jobs.len();
        let jobs = Arc::new(std::sync::Mutex::new(jobs));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..PREPARE_CLIENTS.min(count) {
            let client = Client::new(synod.endpoints.clone(), Options::default());
            let (jobs, value) = (jobs.clone(), value.clone());
            workers.spawn(async move {
                loop {
                    let Some(job) = jobs.lock().expect("jobs lock").pop() else { return Ok(()) };
                    match job {
                        Job::Keys(keys) => {
                            let success = keys
                                .into_iter()
                                .map(|key| TxnOp::Put { key, value: value.clone() })
                                .collect();
                            client.txn(&TxnRequest { compare: vec![], success, failure: vec![] }).await?;
                        }
                        // Opening an open account changes nothing: reruns are safe.
                        Job::OpenAccount(account) => {
                            client.open_account(account, ACCOUNT_BALANCE).await?;
                        }
                    }
                }
            });
        }
        while let Some(result) = workers.join_next().await {
            result
                .map_err(|e| format!("a preparing task failed: {e}"))?
                .map_err(|e: Error| format!("preparing the {} workload failed: {e}", workload.name()))?;
        }
        let what = if workload.uses_keys() {
            format!("loaded {} keys", args.keys)
        } else {
            format!("opened {} accounts", args.accounts)
        };
        eprintln!("synod bench: {what} in {} ms", started.elapsed().as_millis());
        Ok(())
    }

    /// Sums the nodes' counters (Synod: from `/metrics`); `None` if any node is silent.
    async fn counters(&self) -> Option<ServerCounters> {
        let System::Synod(s) = self;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
        let mut total = ServerCounters::default();
        for endpoint in &s.endpoints {
            let text = http.get(format!("{endpoint}/metrics")).send().await.ok()?.text().await.ok()?;
            let metric = |name: &str| -> Option<f64> {
                text.lines().find_map(|line| {
                    let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
                    rest.split_whitespace().next()?.parse().ok()
                })
            };
            total.fsyncs += metric("synod_fsyncs_total")?;
            total.fsync_seconds += metric("synod_fsync_seconds_total")?;
            total.records_persisted += metric("synod_records_persisted_total")?;
            total.decided_upto = total.decided_upto.max(metric("synod_decided_upto")?);
            let add = |sum: Option<f64>, name: &str| Some(sum.unwrap_or(0.0) + metric(name)?);
            total.batches_proposed = add(total.batches_proposed, "synod_batches_proposed_total");
            total.commands_proposed = add(total.commands_proposed, "synod_commands_proposed_total");
            total.lease_reads = add(total.lease_reads, "synod_lease_reads_total");
        }
        Some(total)
    }
}

impl Session {
    async fn find_leader(&self) {
        let Session::Synod(client) = self;
        let _ = client.discover_leader().await;
    }

    /// Runs one request; `Err` names the kind of failure, for the error counts.
    async fn execute(&self, op: Op) -> Result<(), String> {
        let Session::Synod(client) = self;
        match op {
            Op::Put { key, value } => client.put(&key, &value).await.map(drop).map_err(error_kind),
            Op::Get { key } => client.get(&key, false).await.map(drop).map_err(error_kind),
            Op::Transfer(transfer) => {
                let reply = client.transfer(transfer).await.map_err(error_kind)?;
                (reply.result == "ok").then_some(()).ok_or(format!("transfer_{}", reply.result))
            }
            Op::TransferBatch(transfers) => {
                let reply = client.transfer_batch(transfers).await.map_err(error_kind)?;
                match reply.results.iter().find(|r| r.result != "ok") {
                    None => Ok(()),
                    Some(bad) => Err(format!("transfer_{}", bad.result)),
                }
            }
        }
    }
}

/// A short, bounded name for an error: the server's code, or how the call failed.
fn error_kind(error: Error) -> String {
    match error {
        Error::Rejected { code, .. } => code,
        Error::Unavailable { last, .. } => {
            // `last` ends with "(code)" when a server answered, else it is a transport error.
            let code = last
                .rsplit_once('(')
                .and_then(|(_, tail)| tail.strip_suffix(')'))
                .filter(|c| c.len() <= 24 && c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'));
            format!("unavailable_{}", code.unwrap_or("transport"))
        }
    }
}

fn key_name(k: u64) -> String {
    let key = format!("{k:08x}");
    debug_assert_eq!(key.len(), KEY_BYTES);
    key
}

fn random_value(rng: &mut StdRng) -> String {
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

// ---------------------------------------------------------------------------------------
// One point: N clients for warm-up + duration.

struct PointSpec {
    workload: Workload,
    clients: usize,
    transfer_ids: Arc<AtomicU64>,
}

/// What one client saw within the measured window.
struct ClientTally {
    latency_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

/// One row of the results: the JSON schema of issue 7, plus Synod's own diagnostics.
#[derive(Debug, Serialize)]
pub struct Row {
    system: &'static str,
    workload: &'static str,
    clients: usize,
    duration_s: f64,
    /// Requests that succeeded within the measured window.
    ops: u64,
    throughput_ops_s: f64,
    /// Transfers per second (transfer workloads; a batch request carries many).
    transfers_s: Option<f64>,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    mean_ms: f64,
    max_ms: f64,
    /// Server CPU (user + system, all nodes) per 1,000 requests; null when the servers
    /// are not ours to watch.
    cpu_s_per_1k_ops: Option<f64>,
    /// The same for this load generator: on one machine it competes with the servers.
    client_cpu_s_per_1k_ops: Option<f64>,
    errors: BTreeMap<String, u64>,
    /// Synod's counters over the window (all nodes), when `/metrics` answered.
    server: Option<ServerDiagnostics>,
}

#[derive(Debug, Serialize)]
struct ServerDiagnostics {
    /// Write-ahead log syncs per second, summed over the nodes.
    fsyncs_per_s: f64,
    /// Records made durable per sync: how much group commit gathers.
    records_per_fsync: f64,
    fsync_ms_mean: f64,
    /// Slots decided per second, and requests per slot: how much the leader batches.
    slots_per_s: f64,
    ops_per_slot: f64,
    /// Commands per proposed batch, as the leader counts them (null: server too old).
    commands_per_batch: Option<f64>,
    /// Linearizable reads per second served under the leader lease (null: server too old).
    lease_reads_per_s: Option<f64>,
}

async fn run_point(system: &System, args: &BenchArgs, spec: PointSpec) -> Result<Row, String> {
    let sessions: Vec<Session> = (0..spec.clients).map(|_| system.session()).collect();
    let started = Instant::now();
    let measure_from = started + args.warmup;
    let measure_until = measure_from + args.duration;
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

    let progress = progress_bar(spec.workload, spec.clients, args);
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
    let seconds = args.duration.as_secs_f64();
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
        "synod bench: {} x{}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        row.workload,
        row.clients,
        row.throughput_ops_s,
        row.p50_ms,
        row.p99_ms,
        row.errors.values().sum::<u64>()
    );
    Ok(row)
}

fn diagnostics(before: &ServerCounters, after: &ServerCounters, seconds: f64, ops: u64) -> ServerDiagnostics {
    let fsyncs = after.fsyncs - before.fsyncs;
    let slots = after.decided_upto - before.decided_upto;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let delta = |b: Option<f64>, a: Option<f64>| Some(a? - b?);
    let batches = delta(before.batches_proposed, after.batches_proposed);
    let commands = delta(before.commands_proposed, after.commands_proposed);
    ServerDiagnostics {
        fsyncs_per_s: fsyncs / seconds,
        records_per_fsync: ratio(after.records_persisted - before.records_persisted, fsyncs),
        fsync_ms_mean: ratio((after.fsync_seconds - before.fsync_seconds) * 1_000.0, fsyncs),
        slots_per_s: slots / seconds,
        ops_per_slot: ratio(ops as f64, slots),
        commands_per_batch: batches.zip(commands).map(|(b, c)| ratio(c, b)),
        lease_reads_per_s: delta(before.lease_reads, after.lease_reads).map(|r| r / seconds),
    }
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

fn progress_bar(workload: Workload, clients: usize, args: &BenchArgs) -> indicatif::ProgressBar {
    let total_ms = (args.warmup + args.duration).as_millis() as u64;
    let bar = indicatif::ProgressBar::new(total_ms);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>22} [{bar:30}] {elapsed:>3} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{} x{clients}", workload.name()));
    bar
}

// ---------------------------------------------------------------------------------------
// CPU time from /proc.

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime of one process, in seconds (fields 14 and 15 of `/proc/PID/stat`).
fn process_cpu_seconds(stat_path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after
    // the last ')'. There, field 3 (state) has index 0, so utime is at 11 and stime at 12.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_second())
}

/// Total CPU seconds of `pids`; `None` if there are none or one cannot be read.
fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| process_cpu_seconds(Path::new(&format!("/proc/{pid}/stat")))).sum()
}

fn cpu_seconds_self() -> Option<f64> {
    process_cpu_seconds(Path::new("/proc/self/stat"))
}

/// Many clients hold many sockets, here and in the servers we start (they inherit the
/// limit): lift the soft limit on open files to the hard one.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit write and read the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

// ---------------------------------------------------------------------------------------
// A local cluster of `synod server` processes.

/// Three `synod server` processes of this very binary on loopback, with ports the kernel
/// handed out and a data directory of their own. Dropping it kills them.
pub struct LocalCluster {
    root: PathBuf,
    /// Remove `root` when done (we made it).
    remove_root: bool,
    http: Vec<String>,
    children: Vec<Child>,
}

impl LocalCluster {
    const NODES: usize = 3;
    const START_ATTEMPTS_MAX: u32 = 3;

    /// `extra` is a TOML fragment every node's configuration file gets.
    async fn start(data_dir: Option<PathBuf>, extra: String) -> Result<LocalCluster, String> {
        let mut last = String::new();
        for attempt in 1..=Self::START_ATTEMPTS_MAX {
            match Self::try_start(data_dir.clone(), &extra, attempt) {
                Ok(cluster) => match cluster.wait_until_serving(Duration::from_secs(20)).await {
                    Ok(()) => return Ok(cluster),
                    Err(error) => last = error,
                },
                Err(error) => last = error,
            }
            eprintln!("synod bench: starting the local cluster failed ({last}); trying again");
        }
        Err(format!("cannot start a local cluster: {last}"))
    }

    fn try_start(data_dir: Option<PathBuf>, extra: &str, attempt: u32) -> Result<LocalCluster, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let name = format!("bench-{}-{attempt}", std::process::id());
        let (root, remove_root) = match data_dir {
            Some(dir) => (dir, false),
            None => (std::env::temp_dir().join(format!("synod-{name}")), true),
        };
        std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        // Ports are free when we ask; another process may take one before a node binds
        // it, and then `start` tries again.
        let probes: Vec<TcpListener> = (0..2 * Self::NODES)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot find free ports: {e}"))?;
        let ports: Vec<u16> = probes.iter().map(|p| p.local_addr().map(|a| a.port()).unwrap_or(0)).collect();
        drop(probes);
        let members: Vec<String> = (0..Self::NODES)
            .map(|i| format!("{}=127.0.0.1:{}/127.0.0.1:{}", i + 1, ports[2 * i], ports[2 * i + 1]))
            .collect();
        let mut cluster = LocalCluster {
            root: root.clone(),
            remove_root,
            http: (0..Self::NODES).map(|i| format!("http://127.0.0.1:{}", ports[2 * i + 1])).collect(),
            children: Vec::new(),
        };
        for i in 0..Self::NODES {
            let log_path = root.join(format!("node-{}.log", i + 1));
            let log = std::fs::File::create(&log_path)
                .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
            // The flags below override these placeholders; the file carries `extra`.
            let config_path = root.join(format!("node-{}.toml", i + 1));
            std::fs::write(&config_path, format!("node_id = 0\nmembers = []\n{extra}\n"))
                .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
            let child = Command::new(&exe)
                .arg("server")
                .arg("--config")
                .arg(&config_path)
                .args(["--node-id", &(i + 1).to_string()])
                .args(["--cluster", &name])
                .args(["--members", &members.join(",")])
                .arg("--data-dir")
                .arg(root.join(format!("node-{}", i + 1)))
                .env_remove("SYNOD_CONFIG")
                .env_remove("SYNOD_LISTEN_PEER")
                .env_remove("SYNOD_LISTEN_HTTP")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
            cluster.children.push(child);
        }
        Ok(cluster)
    }

    /// Waits until every node answers `/healthz`; an exited node is an error with its log.
    async fn wait_until_serving(&self, within: Duration) -> Result<(), String> {
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(1)).build().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + within;
        for (i, endpoint) in self.http.iter().enumerate() {
            loop {
                // A child that exited already is reaped by `Drop`; here we only look.
                let pid = self.children[i].id();
                if !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid) {
                    let log = std::fs::read_to_string(self.root.join(format!("node-{}.log", i + 1)))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(3).collect();
                    return Err(format!("node {} exited: {}", i + 1, tail.join(" | ")));
                }
                if matches!(http.get(format!("{endpoint}/healthz")).send().await, Ok(r) if r.status().is_success())
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("node {} did not answer at {endpoint}", i + 1));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    fn endpoints(&self) -> Vec<String> {
        self.http.clone()
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| text.rfind(')').map(|i| text[i + 1..].trim_start().starts_with('Z')))
        .unwrap_or(true)
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.remove_root {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Output for people.

fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn print_header() {
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

fn print_row(row: &Row) {
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
        opt(row.server.as_ref().filter(|s| s.fsyncs_per_s > 0.0).map(|s| s.records_per_fsync), 1),
        opt(row.server.as_ref().filter(|s| s.slots_per_s > 0.0).map(|s| s.ops_per_slot), 1),
    );
}

fn print_notes(system: &System, rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!("srv cpu/k, cli cpu/k: CPU seconds (user+system) per 1,000 requests of the servers (all nodes;");
    println!("  '-' when they were not started by this run) and of this load generator.");
    if matches!(system, System::Synod(_)) {
        println!(
            "fsync/s, rec/sync: write-ahead log syncs per second summed over the nodes, and records per"
        );
        println!("  sync (group commit); ops/slot: requests per decided slot (leader batching).");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }

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

    #[test]
    fn unavailable_errors_are_named_by_the_servers_code() {
        let error = Error::Unavailable {
            attempts: 8,
            last: "http://x: the node's input queue is full (busy)".into(),
        };
        assert_eq!(error_kind(error), "unavailable_busy");
        let error =
            Error::Unavailable { attempts: 8, last: "http://x: error sending request (os error 111)".into() };
        assert_eq!(error_kind(error), "unavailable_transport");
    }

    #[test]
    fn this_process_has_cpu_time() {
        assert!(cpu_seconds_self().is_some());
        assert_eq!(cpu_seconds(&[]), None);
    }
}
