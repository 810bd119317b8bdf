//! etcd as a system under load, for the comparison (feature `etcd`).
//!
//! A local three-member etcd cluster (Raft) from the `etcd` binary, on loopback ports the
//! kernel handed out, its data in a directory of its own. It runs with etcd's defaults
//! where they matter for the comparison: the write-ahead log is fsynced before a write is
//! acknowledged (no `--unsafe-no-fsync`), `--snapshot-count` is left alone, and reads
//! are linearizable (the client's default, `serializable = false`). The workloads map as:
//!
//! - write: one Put; read: one Range; mixed: half each.
//! - transfer: etcd has no server-side logic, so a transfer is an optimistic transaction
//!   as an etcd application would write it: read both balances (one read-only Txn holding
//!   both Ranges: one linearizable read), then a Txn that compares both keys'
//!   `mod_revision` and puts both new balances, retried from the read when another
//!   transfer got there first. One committed transfer counts as one operation, whatever
//!   its retries; its latency includes them. Retries per transfer are reported.
//! - transfer-batch: Synod's alone (a batch applied atomically in one slot).
//!
//! Clients talk to the leader, as etcd's own benchmark does with `--target-leader` (and
//! as Synod's sessions do), and share connections the way that benchmark's documented
//! runs do: one gRPC connection per ten clients, at most 100 (`--conns=100
//! --clients=1000`). HTTP/2 multiplexes them; Synod's sessions each hold their own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, KvClient, Txn, TxnOp, TxnOpResponse};
use rand::rngs::StdRng;
use rand::SeedableRng;
use synod_client::api::TransferRequest;

use super::args::{BenchArgs, Workload};
use super::cluster::{free_ports, has_exited};
use super::load::{key_name, random_value, Op, ACCOUNT_BASE};
use super::system::{metric_value, ServerCounters, ACCOUNT_BALANCE, PRELOAD_KEYS_PER_TXN, PREPARE_CLIENTS};

/// Clients per gRPC connection, and connections at most (etcd's benchmark: 1000 over 100).
const CLIENTS_PER_CONNECTION: usize = 10;
const CONNECTIONS_MAX: usize = 100;
/// One request at most this long (Synod's client: 5 s per attempt).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Optimistic attempts per transfer before it counts as failed.
const TRANSFER_ATTEMPTS_MAX: u32 = 64;
/// The backend's size limit: far above what a full run writes, so that etcd never raises
/// its NOSPACE alarm mid-run (its default is 2 GiB; 8 GiB is its documented maximum).
const QUOTA_BACKEND_BYTES: u64 = 8 << 30;

pub struct EtcdSystem {
    cluster: EtcdCluster,
    /// The leader's client URL: every session talks to it.
    leader: String,
    /// What `prepare` loaded already: keys, accounts.
    prepared: Mutex<(bool, bool)>,
    /// Transfers retried after a conflict, counted by every session of the run.
    transfer_retries: Arc<AtomicU64>,
}

/// One client's handle: a connection shared with a few other sessions.
pub(super) struct EtcdSession {
    kv: KvClient,
    transfer_retries: Arc<AtomicU64>,
}

impl EtcdSystem {
    /// Starts the cluster and waits for a stable leader.
    pub(super) async fn start(args: &BenchArgs) -> Result<EtcdSystem, String> {
        const START_ATTEMPTS_MAX: u32 = 3;
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS_MAX {
            let started = EtcdCluster::start(&args.etcd_binary, args.data_dir.as_deref(), attempt);
            match started {
                Ok(cluster) => match cluster.wait_for_leader(Duration::from_secs(30)).await {
                    Ok(leader) => {
                        let transfer_retries = Arc::new(AtomicU64::new(0));
                        return Ok(EtcdSystem {
                            cluster,
                            leader,
                            prepared: Default::default(),
                            transfer_retries,
                        });
                    }
                    Err(error) => last = error,
                },
                // A missing program will not appear on a second try.
                Err(error) if error.contains("apt-get") => return Err(error),
                Err(error) => last = error,
            }
            eprintln!("synod bench: starting the local etcd cluster failed ({last}); trying again");
        }
        Err(format!("cannot start a local etcd cluster: {last}"))
    }

    pub(super) fn describe(&self) -> String {
        format!("a local 3-member etcd cluster in {}", self.cluster.root.display())
    }

    pub(super) fn pids(&self) -> Vec<u32> {
        self.cluster.children.iter().map(Child::id).collect()
    }

    pub(super) async fn sessions(&self, clients: usize) -> Result<Vec<EtcdSession>, String> {
        let connections = clients.div_ceil(CLIENTS_PER_CONNECTION).clamp(1, CONNECTIONS_MAX);
        let mut kvs = Vec::with_capacity(connections);
        for _ in 0..connections {
            kvs.push(connect(&self.leader).await?.kv_client());
        }
        Ok((0..clients)
            .map(|i| EtcdSession {
                kv: kvs[i % connections].clone(),
                transfer_retries: self.transfer_retries.clone(),
            })
            .collect())
    }

    /// Loads keys (read, mixed) or accounts (transfer) in transactions of
    /// `PRELOAD_KEYS_PER_TXN` puts, as Synod's preparation does.
    pub(super) async fn prepare(&self, workload: Workload, args: &BenchArgs) -> Result<(), String> {
        if !workload.uses_keys() && !workload.uses_accounts() {
            return Ok(());
        }
        {
            let mut prepared = self.prepared.lock().expect("prepared lock");
            let done = if workload.uses_keys() { &mut prepared.0 } else { &mut prepared.1 };
            if std::mem::replace(done, true) {
                return Ok(());
            }
        }
        let started = Instant::now();
        let pairs: Vec<(String, String)> = if workload.uses_keys() {
            let value = random_value(&mut StdRng::seed_from_u64(0));
            (0..args.keys).map(|k| (key_name(k), value.clone())).collect()
        } else {
            (0..args.accounts).map(|a| (account_key(ACCOUNT_BASE + a), ACCOUNT_BALANCE.to_string())).collect()
        };
        let chunks: Vec<Vec<(String, String)>> =
            pairs.chunks(PRELOAD_KEYS_PER_TXN).map(|chunk| chunk.to_vec()).collect();
        let count = chunks.len();
        let chunks = Arc::new(Mutex::new(chunks));
        let client = connect(&self.leader).await?;
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..PREPARE_CLIENTS.min(count) {
            let (chunks, mut kv) = (chunks.clone(), client.kv_client());
            workers.spawn(async move {
                loop {
                    let Some(chunk) = chunks.lock().expect("chunks lock").pop() else { return Ok(()) };
                    let puts: Vec<TxnOp> = chunk.into_iter().map(|(k, v)| TxnOp::put(k, v, None)).collect();
                    kv.txn(Txn::new().and_then(puts)).await?;
                }
            });
        }
        while let Some(result) = workers.join_next().await {
            result.map_err(|e| format!("a preparing task failed: {e}"))?.map_err(
                |e: etcd_client::Error| format!("preparing etcd for {} failed: {e}", workload.name()),
            )?;
        }
        let what = if workload.uses_keys() { "keys" } else { "accounts" };
        eprintln!(
            "synod bench: etcd: loaded {} {what} in {} ms",
            if workload.uses_keys() { args.keys } else { args.accounts },
            started.elapsed().as_millis()
        );
        Ok(())
    }

    /// The members' Raft and disk counters from their `/metrics`, and the load
    /// generator's own count of transfer retries.
    pub(super) async fn counters(&self) -> Option<ServerCounters> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
        let mut total = ServerCounters {
            transfer_retries: Some(self.transfer_retries.load(Ordering::Relaxed) as f64),
            ..ServerCounters::default()
        };
        for url in &self.cluster.client_urls {
            let text = http.get(format!("{url}/metrics")).send().await.ok()?.text().await.ok()?;
            let metric = |name: &str| metric_value(&text, name);
            total.fsyncs += metric("etcd_disk_wal_fsync_duration_seconds_count")?;
            total.fsync_seconds += metric("etcd_disk_wal_fsync_duration_seconds_sum")?;
            total.decided_upto = total.decided_upto.max(metric("etcd_server_proposals_committed_total")?);
        }
        Some(total)
    }
}

impl EtcdSession {
    pub(super) async fn execute(&self, op: Op) -> Result<(), String> {
        let mut kv = self.kv.clone();
        match op {
            Op::Put { key, value } => kv.put(key, value.as_bytes(), None).await.map(drop).map_err(error_kind),
            Op::Get { key } => kv.get(key, None).await.map(drop).map_err(error_kind),
            Op::Transfer(transfer) => self.transfer(kv, transfer).await,
            Op::TransferBatch(_) => Err("unsupported".to_string()),
        }
    }

    /// One transfer as an optimistic transaction (see the module's comment).
    async fn transfer(&self, mut kv: KvClient, transfer: TransferRequest) -> Result<(), String> {
        let (from, to) = (account_key(transfer.from), account_key(transfer.to));
        for _ in 0..TRANSFER_ATTEMPTS_MAX {
            let read = Txn::new().and_then([TxnOp::get(from.clone(), None), TxnOp::get(to.clone(), None)]);
            let read = kv.txn(read).await.map_err(error_kind)?;
            let balances: Vec<(u64, i64)> =
                read.op_responses().iter().map(balance).collect::<Result<_, _>>()?;
            let [(from_balance, from_revision), (to_balance, to_revision)] = balances[..] else {
                return Err("etcd_bad_reply".to_string());
            };
            if from_balance < transfer.amount {
                return Err("transfer_insufficient_funds".to_string());
            }
            let write = Txn::new()
                .when([
                    Compare::mod_revision(from.clone(), CompareOp::Equal, from_revision),
                    Compare::mod_revision(to.clone(), CompareOp::Equal, to_revision),
                ])
                .and_then([
                    TxnOp::put(from.clone(), (from_balance - transfer.amount).to_string(), None),
                    TxnOp::put(to.clone(), (to_balance + transfer.amount).to_string(), None),
                ]);
            if kv.txn(write).await.map_err(error_kind)?.succeeded() {
                return Ok(());
            }
            self.transfer_retries.fetch_add(1, Ordering::Relaxed);
        }
        Err("etcd_transfer_conflicts".to_string())
    }
}

/// Key-value keys are 8 lowercase hex digits below KEYS_MAX; an account key is `a` and
/// seven hex digits, which as a key would be at least 0xa0000000: never drawn.
const _: () = assert!(0xa000_0000 > super::args::KEYS_MAX);

/// An account's key: 8 bytes, like the key-value workloads' keys, apart from them.
fn account_key(account: u64) -> String {
    let key = format!("a{:07x}", account - ACCOUNT_BASE);
    debug_assert_eq!(key.len(), super::load::KEY_BYTES);
    key
}

/// An account's balance and `mod_revision` from one Range inside a Txn.
fn balance(response: &TxnOpResponse) -> Result<(u64, i64), String> {
    let TxnOpResponse::Get(get) = response else { return Err("etcd_bad_reply".to_string()) };
    let kv = get.kvs().first().ok_or("transfer_account_not_found")?;
    let balance =
        std::str::from_utf8(kv.value()).ok().and_then(|v| v.parse().ok()).ok_or("etcd_bad_balance")?;
    Ok((balance, kv.mod_revision()))
}

async fn connect(url: &str) -> Result<Client, String> {
    let options =
        ConnectOptions::new().with_connect_timeout(Duration::from_secs(5)).with_timeout(REQUEST_TIMEOUT);
    Client::connect([url], Some(options)).await.map_err(|e| format!("cannot connect to etcd at {url}: {e}"))
}

/// A short, bounded name for an etcd error: its gRPC code, or how the call failed.
fn error_kind(error: etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            format!("etcd_{}", snake_case(&format!("{:?}", status.code())))
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => "etcd_transport".into(),
        _ => "etcd_other".into(),
    }
}

/// `DeadlineExceeded` → `deadline_exceeded`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

/// Three `etcd` processes on loopback. Dropping it kills them and, unless the data
/// lives under `--data-dir`, removes their data.
struct EtcdCluster {
    root: PathBuf,
    remove_root: bool,
    client_urls: Vec<String>,
    children: Vec<Child>,
}

impl EtcdCluster {
    const MEMBERS: usize = 3;

    fn start(binary: &Path, data_dir: Option<&Path>, attempt: u32) -> Result<EtcdCluster, String> {
        let name = format!("bench-{}-{attempt}", std::process::id());
        let (root, remove_root) = match data_dir {
            Some(dir) => (dir.join(format!("etcd-{name}")), false),
            None => (std::env::temp_dir().join(format!("synod-etcd-{name}")), true),
        };
        std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let ports = free_ports(2 * Self::MEMBERS)?;
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i]);
        let client_url = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let initial_cluster: Vec<String> =
            (0..Self::MEMBERS).map(|i| format!("m{}={}", i + 1, peer_url(i))).collect();
        let mut cluster = EtcdCluster {
            root: root.clone(),
            remove_root,
            client_urls: (0..Self::MEMBERS).map(client_url).collect(),
            children: Vec::new(),
        };
        for i in 0..Self::MEMBERS {
            let log_path = root.join(format!("m{}.log", i + 1));
            let log = std::fs::File::create(&log_path)
                .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
            let mut command = Command::new(binary);
            command
                .args(["--name", &format!("m{}", i + 1)])
                .arg("--data-dir")
                .arg(root.join(format!("m{}", i + 1)))
                .args(["--listen-peer-urls", &peer_url(i), "--initial-advertise-peer-urls", &peer_url(i)])
                .args(["--listen-client-urls", &client_url(i), "--advertise-client-urls", &client_url(i)])
                .args(["--initial-cluster", &initial_cluster.join(",")])
                .args(["--initial-cluster-state", "new", "--initial-cluster-token", &name])
                .args(["--quota-backend-bytes", &QUOTA_BACKEND_BYTES.to_string()])
                .args(["--logger", "zap", "--log-level", "warn", "--log-outputs", "stderr"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            // etcd reads every flag from ETCD_* variables too: none of the caller's may
            // change this cluster (an ETCD_UNSAFE_NO_FSYNC above all).
            for (variable, _) in std::env::vars_os() {
                if variable.to_string_lossy().starts_with("ETCD_") {
                    command.env_remove(variable);
                }
            }
            let child = command.spawn().map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "cannot find the etcd server `{}`: install it (Debian: apt-get install -y etcd-server) \
                     or name it with --etcd-binary",
                    binary.display()
                ),
                _ => format!("cannot start {}: {e}", binary.display()),
            })?;
            cluster.children.push(child);
        }
        Ok(cluster)
    }

    /// Waits until all members agree on one leader for a second, and returns its client
    /// URL; an exited member is an error with the end of its log.
    async fn wait_for_leader(&self, within: Duration) -> Result<String, String> {
        const LEADER_STABLE: Duration = Duration::from_secs(1);
        let deadline = Instant::now() + within;
        let mut last = String::from("no answer yet");
        let mut stable_since: Option<(u64, Instant)> = None;
        loop {
            for (i, child) in self.children.iter().enumerate() {
                if has_exited(child.id()) {
                    let log = std::fs::read_to_string(self.root.join(format!("m{}.log", i + 1)))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(3).collect();
                    return Err(format!("etcd member {} exited: {}", i + 1, tail.join(" | ")));
                }
            }
            let mut views = Vec::new();
            for url in &self.client_urls {
                let status = async {
                    let options = ConnectOptions::new()
                        .with_connect_timeout(Duration::from_secs(1))
                        .with_timeout(Duration::from_secs(1));
                    let client = Client::connect([url], Some(options)).await?;
                    client.maintenance_client().status().await
                };
                match status.await {
                    Ok(status) => {
                        let me = status.header().map(|h| h.member_id()).unwrap_or(0);
                        views.push((url.clone(), me, status.leader()));
                    }
                    Err(error) => last = format!("{url}: {error}"),
                }
            }
            let leader = views.first().map(|v| v.2).filter(|&l| l != 0);
            let agreed = leader.filter(|&l| views.len() == Self::MEMBERS && views.iter().all(|v| v.2 == l));
            stable_since = match (agreed, stable_since) {
                (Some(leader), Some((same, since))) if leader == same => Some((same, since)),
                (Some(leader), _) => Some((leader, Instant::now())),
                (None, _) => None,
            };
            if let Some((leader, since)) = stable_since {
                if since.elapsed() >= LEADER_STABLE {
                    if let Some((url, _, _)) = views.iter().find(|v| v.1 == leader) {
                        return Ok(url.clone());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!("etcd has no stable leader after {}s ({last})", within.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for EtcdCluster {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_keys_are_eight_bytes_and_never_collide_with_key_value_keys() {
        assert_eq!(account_key(ACCOUNT_BASE), "a0000000");
        assert_eq!(account_key(ACCOUNT_BASE + super::super::args::ACCOUNTS_MAX - 1).len(), 8);
        // The largest key-value key still starts with a digit, never with an account's `a`.
        assert!(key_name(super::super::args::KEYS_MAX - 1).starts_with(|c: char| c.is_ascii_digit()));
    }

    #[test]
    fn grpc_codes_become_snake_case_error_kinds() {
        assert_eq!(snake_case("DeadlineExceeded"), "deadline_exceeded");
        assert_eq!(snake_case("Unavailable"), "unavailable");
    }
}
