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

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Workloads, comma-separated, run in turn: write, read, mixed, transfer, transfer-batch.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "write")]
    pub(super) workload: Vec<Workload>,
    /// Concurrent clients, comma-separated: one measured point per count, run in turn.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub(super) clients: Vec<usize>,
    /// Measured time per point: 10s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(super) duration: Duration,
    /// Unmeasured load before each point (connections, leader discovery, caches).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub(super) warmup: Duration,
    /// HTTP endpoints of a running cluster, comma-separated (default: the dev cluster's).
    #[arg(long, value_delimiter = ',', conflicts_with = "start_cluster")]
    pub(super) endpoints: Vec<String>,
    /// Start a local three-node cluster of this binary for the run, and stop it after.
    /// Only then can the servers' CPU time be measured.
    #[arg(long)]
    pub(super) start_cluster: bool,
    /// Where --start-cluster keeps the nodes' data and logs (default: a temporary
    /// directory, removed at the end).
    #[arg(long, requires = "start_cluster")]
    pub(super) data_dir: Option<PathBuf>,
    /// Extra server settings for --start-cluster: a TOML fragment in the format of
    /// `synod server --config` without node_id, members and data_dir (the bench sets
    /// those), e.g. a `[protocol]` table with `window_slots = 4`. For tuning experiments.
    #[arg(long, value_name = "FILE", requires = "start_cluster")]
    pub(super) server_config: Option<PathBuf>,
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
    pub(super) fn validate(&self) -> Result<(), String> {
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
}
