//! The command line of `synod bench`: the workloads, the flags, and their bounds.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use serde::Serialize;
use synod_core::apps::bank::TRANSFER_BATCH_MAX;

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
    pub(super) fn name(self) -> &'static str {
        match self {
            Workload::Write => "write",
            Workload::Read => "read",
            Workload::Mixed => "mixed",
            Workload::Transfer => "transfer",
            Workload::TransferBatch => "transfer-batch",
        }
    }

    pub(super) fn uses_keys(self) -> bool {
        matches!(self, Workload::Read | Workload::Mixed)
    }

    pub(super) fn uses_accounts(self) -> bool {
        matches!(self, Workload::Transfer | Workload::TransferBatch)
    }
}

/// A second system to measure beside Synod in the same run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compare {
    /// A local three-node etcd cluster (Raft), started from the `etcd` binary.
    Etcd,
}

/// Client counts of a comparison, and of `--quick`.
const COMPARE_CLIENTS: [usize; 5] = [1, 16, 64, 256, 1000];
const QUICK_CLIENTS: [usize; 3] = [1, 64, 1000];
/// Synod alone, without --compare or --quick: the counts it always had.
const DEFAULT_CLIENTS: [usize; 4] = [1, 16, 64, 256];
const ALL_WORKLOADS: [Workload; 5] =
    [Workload::Write, Workload::Read, Workload::Mixed, Workload::Transfer, Workload::TransferBatch];

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Workloads, comma-separated, run in turn: write, read, mixed, transfer, transfer-batch
    /// [default: write; with --compare, all five].
    #[arg(long, value_enum, value_delimiter = ',')]
    workload: Vec<Workload>,
    /// Concurrent clients, comma-separated: one measured point per count, run in turn
    /// [default: 1,16,64,256; with --compare 1,16,64,256,1000; with --quick 1,64,1000].
    #[arg(long, value_delimiter = ',')]
    clients: Vec<usize>,
    /// Measured time per point: 10s, 500ms, 2m [default: 10s; with --quick 2s].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Unmeasured load before each point (connections, leader discovery, caches)
    /// [default: 1s; with --compare 2s; with --quick 1s].
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Also run every workload against another system, started locally, in the same run
    /// and with the same load generator, interleaved point by point; prints a Markdown
    /// table of Synod/other ratios. Implies --start-cluster. (etcd: needs a build with
    /// `--features etcd` and the `etcd` binary.)
    #[arg(long, value_enum, value_name = "SYSTEM", conflicts_with = "endpoints")]
    pub(super) compare: Option<Compare>,
    /// Fewer client counts and short points: a comparison in under three minutes.
    #[arg(long)]
    quick: bool,
    /// HTTP endpoints of a running cluster, comma-separated (default: the dev cluster's).
    #[arg(long, value_delimiter = ',', conflicts_with = "start_cluster")]
    pub(super) endpoints: Vec<String>,
    /// Start a local three-node cluster of this binary for the run, and stop it after.
    /// Only then can the servers' CPU time be measured.
    #[arg(long)]
    start_cluster: bool,
    /// Where --start-cluster keeps the nodes' data and logs (default: a temporary
    /// directory, removed at the end).
    #[arg(long)]
    pub(super) data_dir: Option<PathBuf>,
    /// Extra server settings for --start-cluster: a TOML fragment in the format of
    /// `synod server --config` without node_id, members and data_dir (the bench sets
    /// those), e.g. a `[protocol]` table with `window_slots = 4`. For tuning experiments.
    #[arg(long, value_name = "FILE")]
    pub(super) server_config: Option<PathBuf>,
    /// The etcd server program for --compare etcd.
    #[arg(long, value_name = "PROGRAM", default_value = "etcd")]
    pub(super) etcd_binary: PathBuf,
    /// Transfers per request in the transfer-batch workload.
    #[arg(long, default_value_t = 100)]
    pub(super) batch: usize,
    /// Distinct keys the key-value workloads draw from (read and mixed preload them all).
    #[arg(long, default_value_t = 10_000)]
    pub(super) keys: u64,
    /// Accounts the transfer workloads draw from (opened before the first point).
    #[arg(long, default_value_t = 1_000)]
    pub(super) accounts: u64,
    /// Also write the results to FILE as a JSON array of rows.
    #[arg(long, value_name = "FILE")]
    pub(super) json: Option<PathBuf>,
    /// Also write the results to FILE as a Markdown table (with --compare: the ratios).
    #[arg(long, value_name = "FILE")]
    pub(super) markdown: Option<PathBuf>,
    /// Also draw throughput and p99 against clients, per workload, as an SVG in FILE.
    #[arg(long, value_name = "FILE.svg")]
    pub(super) plot: Option<PathBuf>,
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
    /// Workloads in the order they run.
    pub(super) fn workloads(&self) -> Vec<Workload> {
        match (self.workload.is_empty(), self.compare) {
            (false, _) => self.workload.clone(),
            (true, Some(_)) => ALL_WORKLOADS.to_vec(),
            (true, None) => vec![Workload::Write],
        }
    }

    /// Client counts in the order they run.
    pub(super) fn clients(&self) -> Vec<usize> {
        if !self.clients.is_empty() {
            self.clients.clone()
        } else if self.quick {
            QUICK_CLIENTS.to_vec()
        } else if self.compare.is_some() {
            COMPARE_CLIENTS.to_vec()
        } else {
            DEFAULT_CLIENTS.to_vec()
        }
    }

    pub(super) fn duration(&self) -> Duration {
        self.duration.unwrap_or(if self.quick { Duration::from_secs(2) } else { Duration::from_secs(10) })
    }

    /// A thousand clients open their connections in the warm-up, so that a comparison's
    /// measured window starts with every client connected.
    pub(super) fn warmup(&self) -> Duration {
        let compare_full = self.compare.is_some() && !self.quick;
        self.warmup.unwrap_or(if compare_full { Duration::from_secs(2) } else { Duration::from_secs(1) })
    }

    /// Whether this run starts its own Synod cluster (a comparison always does: both
    /// systems on the same machine, and both servers' CPU time measured).
    pub(super) fn start_cluster(&self) -> bool {
        self.start_cluster || self.compare.is_some()
    }

    /// Checks every bound; the message says what to change.
    pub(super) fn validate(&self) -> Result<(), String> {
        let clients = self.clients();
        if clients.is_empty() || clients.len() > CLIENT_COUNTS_MAX {
            return Err(format!("--clients takes 1 to {CLIENT_COUNTS_MAX} counts"));
        }
        if let Some(bad) = clients.iter().find(|&&c| c == 0 || c > CLIENTS_MAX) {
            return Err(format!("--clients {bad}: each count must be in 1..={CLIENTS_MAX}"));
        }
        if self.duration() < Duration::from_millis(100) || self.duration() > DURATION_MAX {
            return Err(format!("--duration must be between 100ms and {}s", DURATION_MAX.as_secs()));
        }
        if self.warmup() > WARMUP_MAX {
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
        if !self.start_cluster() && (self.data_dir.is_some() || self.server_config.is_some()) {
            return Err("--data-dir and --server-config need --start-cluster (or --compare)".into());
        }
        Ok(())
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

    fn parse(args: &[&str]) -> BenchArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .expect("valid flags");
        cli.bench
    }

    #[test]
    fn a_comparison_runs_every_workload_at_the_issues_client_counts_unless_told_otherwise() {
        let plain = parse(&[]);
        assert_eq!(plain.workloads(), [Workload::Write]);
        assert_eq!(plain.clients(), DEFAULT_CLIENTS);
        assert!(!plain.start_cluster());

        let compare = parse(&["--compare", "etcd"]);
        assert_eq!(compare.workloads(), ALL_WORKLOADS);
        assert_eq!(compare.clients(), [1, 16, 64, 256, 1000]);
        assert!(compare.start_cluster(), "a comparison starts both clusters");
        assert_eq!(compare.duration(), Duration::from_secs(10));

        let quick = parse(&["--compare", "etcd", "--quick"]);
        assert_eq!(quick.clients(), QUICK_CLIENTS);
        assert_eq!(quick.duration(), Duration::from_secs(2));

        let chosen = parse(&["--compare", "etcd", "--quick", "--clients", "4", "--workload", "read"]);
        assert_eq!((chosen.clients(), chosen.workloads()), (vec![4], vec![Workload::Read]));
        assert!(chosen.validate().is_ok());
    }

    #[test]
    fn a_data_dir_without_a_cluster_to_put_there_is_refused() {
        assert!(parse(&["--data-dir", "x"]).validate().unwrap_err().contains("--start-cluster"));
        assert!(parse(&["--compare", "etcd", "--data-dir", "x"]).validate().is_ok());
    }
}
