//! The systems under load: how to reach one, prepare it for a workload, run one request,
//! and read its own counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use synod_client::api::{TxnOp, TxnRequest};
use synod_client::{Client, Error, Options, DEFAULT_ENDPOINTS};
use synod_core::apps::kv::TXN_OPS_MAX;

use super::args::{BenchArgs, Workload};
use super::cluster::LocalCluster;
use super::load::{key_name, random_value, Op, ACCOUNT_BASE};

/// Every bench account starts with this much: a run never runs out of money.
pub(super) const ACCOUNT_BALANCE: u64 = 1 << 50;
/// Clients that load keys or open accounts before a workload, at most.
pub(super) const PREPARE_CLIENTS: usize = 16;
/// Keys per preloading transaction (below the server's `TXN_OPS_MAX`, and below etcd's
/// default `--max-txn-ops` of 128).
pub(super) const PRELOAD_KEYS_PER_TXN: usize = 100;
const _: () = assert!(PRELOAD_KEYS_PER_TXN <= TXN_OPS_MAX);

/// A system under load: Synod, or (with the `etcd` feature) etcd for the comparison.
/// Each variant brings its client and its local cluster; the clock, the
/// histograms and the reports around them are shared.
pub enum System {
    Synod(SynodSystem),
    #[cfg(feature = "etcd")]
    Etcd(super::etcd::EtcdSystem),
}

pub struct SynodSystem {
    endpoints: Vec<String>,
    /// The cluster we started, if we did: its processes are charged the CPU time.
    cluster: Option<LocalCluster>,
    /// What `prepare` loaded already: keys, accounts.
    prepared: std::sync::Mutex<(bool, bool)>,
}

/// One client's connection to the system: one request in flight at a time.
pub(super) enum Session {
    Synod(Client),
    #[cfg(feature = "etcd")]
    Etcd(Box<super::etcd::EtcdSession>),
}

/// Counters a system exposes about itself, sampled before and after a point.
#[derive(Clone, Debug, Default)]
pub(super) struct ServerCounters {
    pub(super) fsyncs: f64,
    pub(super) fsync_seconds: f64,
    /// Records made durable (Synod; etcd does not count them).
    pub(super) records_persisted: Option<f64>,
    /// The highest `decided_upto` among the nodes: slots decided so far (etcd: Raft
    /// entries committed, one per request).
    pub(super) decided_upto: f64,
    /// Batches the leaders proposed, and the commands in them (newer servers only).
    pub(super) batches_proposed: Option<f64>,
    pub(super) commands_proposed: Option<f64>,
    /// Reads served under the leader lease, without a slot (newer servers only).
    pub(super) lease_reads: Option<f64>,
    /// Optimistic transfers the load generator had to retry after a conflict (etcd).
    pub(super) transfer_retries: Option<f64>,
}

impl System {
    pub(super) async fn synod(args: &BenchArgs) -> Result<System, String> {
        let (endpoints, cluster) = if args.start_cluster() {
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
        let synod = SynodSystem { endpoints, cluster, prepared: Default::default() };
        synod.wait_until_ready(Duration::from_secs(20)).await?;
        Ok(System::Synod(synod))
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            System::Synod(_) => "synod",
            #[cfg(feature = "etcd")]
            System::Etcd(_) => "etcd",
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            System::Synod(s) => match &s.cluster {
                Some(cluster) => format!("a local 3-node Synod cluster in {}", cluster.root.display()),
                None => format!("Synod at {}", s.endpoints.join(",")),
            },
            #[cfg(feature = "etcd")]
            System::Etcd(e) => e.describe(),
        }
    }

    /// Whether the system can run a workload at all: a batch of transfers applied
    /// atomically in one slot is Synod's alone.
    pub(super) fn supports(&self, workload: Workload) -> bool {
        workload != Workload::TransferBatch || matches!(self, System::Synod(_))
    }

    /// The processes whose CPU time a point charges to the system (empty: unknown).
    pub(super) fn server_pids(&self) -> Vec<u32> {
        match self {
            System::Synod(s) => s.cluster.as_ref().map(|c| c.pids()).unwrap_or_default(),
            #[cfg(feature = "etcd")]
            System::Etcd(e) => e.pids(),
        }
    }

    /// One session per client of a point.
    pub(super) async fn sessions(&self, clients: usize) -> Result<Vec<Session>, String> {
        match self {
            // The client's default retries stay on: what a user sees is what we time.
            // Each session has its own client, so its own connection.
            System::Synod(s) => Ok((0..clients)
                .map(|_| Session::Synod(Client::new(s.endpoints.clone(), Options::default())))
                .collect()),
            #[cfg(feature = "etcd")]
            System::Etcd(e) => {
                Ok(e.sessions(clients).await?.into_iter().map(|s| Session::Etcd(Box::new(s))).collect())
            }
        }
    }

    /// Loads what a workload reads before its first point: keys for reads, accounts for
    /// transfers. Idempotent, so a second run against the same cluster redoes it safely.
    pub(super) async fn prepare(&self, workload: Workload, args: &BenchArgs) -> Result<(), String> {
        match self {
            System::Synod(s) => s.prepare(workload, args).await,
            #[cfg(feature = "etcd")]
            System::Etcd(e) => e.prepare(workload, args).await,
        }
    }

    /// The system's own counters summed over its nodes; `None` if any node is silent.
    pub(super) async fn counters(&self) -> Option<ServerCounters> {
        match self {
            System::Synod(s) => s.counters().await,
            #[cfg(feature = "etcd")]
            System::Etcd(e) => e.counters().await,
        }
    }
}

/// The value of an unlabelled metric in Prometheus' text format.
pub(super) fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

impl SynodSystem {
    /// Waits until every node that answers follows the same leader, with a quorum, and
    /// keeps doing so for `LEADER_STABLE`. A fresh cluster's first election can change
    /// hands within its first second (two candidates of the same round: the higher
    /// ballot wins), and clients that found the first leader would then stay on a
    /// follower, which forwards: every request would pay an extra hop.
    async fn wait_until_ready(&self, within: Duration) -> Result<(), String> {
        const LEADER_STABLE: Duration = Duration::from_secs(1);
        let deadline = Instant::now() + within;
        let mut last = String::from("no answer yet");
        let mut stable_since: Option<(u32, Instant)> = None;
        loop {
            let mut leaders = Vec::new();
            for endpoint in &self.endpoints {
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
        {
            let mut prepared = self.prepared.lock().expect("prepared lock");
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
            let client = Client::new(self.endpoints.clone(), Options::default());
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
        eprintln!("synod bench: synod: {what} in {} ms", started.elapsed().as_millis());
        Ok(())
    }

    /// Sums the nodes' counters from `/metrics`.
    async fn counters(&self) -> Option<ServerCounters> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
        let mut total = ServerCounters::default();
        for endpoint in &self.endpoints {
            let text = http.get(format!("{endpoint}/metrics")).send().await.ok()?.text().await.ok()?;
            let metric = |name: &str| metric_value(&text, name);
            total.fsyncs += metric("synod_fsyncs_total")?;
            total.fsync_seconds += metric("synod_fsync_seconds_total")?;
            total.records_persisted =
                Some(total.records_persisted.unwrap_or(0.0) + metric("synod_records_persisted_total")?);
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
    pub(super) async fn find_leader(&self) {
        match self {
            Session::Synod(client) => {
                let _ = client.discover_leader().await;
            }
            // The etcd sessions were made on the leader's endpoint already.
            #[cfg(feature = "etcd")]
            Session::Etcd(_) => {}
        }
    }

    /// Runs one request; `Err` names the kind of failure, for the error counts.
    pub(super) async fn execute(&self, op: Op) -> Result<(), String> {
        match self {
            Session::Synod(client) => execute_synod(client, op).await,
            #[cfg(feature = "etcd")]
            Session::Etcd(session) => session.execute(op).await,
        }
    }
}

async fn execute_synod(client: &Client, op: Op) -> Result<(), String> {
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

/// A short, bounded name for an error: the server's code, or how the call failed.
fn error_kind(error: Error) -> String {
    match error {
        Error::Rejected { code, .. } => code,
        Error::SessionConflict { .. } => synod_client::api::SESSION_CONFLICT_CODE.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
