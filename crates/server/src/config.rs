//! Node configuration: a TOML file, overridden by flags and `SYNOD_*` environment
//! variables (the CLI does the overriding). Defaults suit a laptop.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use synod_core::Options;

/// One member of the cluster, as every node's configuration lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberConfig {
    pub id: u32,
    /// Where peers reach this member (`host:port`).
    pub peer: String,
    /// Where clients reach this member (`host:port`).
    pub http: String,
}

/// The configuration a node that joined a running cluster (`synod server --join`) was
/// admitted by: its epoch and which of `Config::members` are learners (the rest vote).
/// Decisions of older epochs that the node later learns by catching up are ignored by
/// `Membership::on_applied` (their epochs do not follow this one), and a snapshot it
/// installs replaces this configuration altogether: either way the node ends up with the
/// configurations its peers hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    pub epoch: u64,
    pub learners: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id: one of `members`.
    pub node_id: u32,
    /// The cluster's name; frames from another cluster are refused.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    pub members: Vec<MemberConfig>,
    /// Where this node keeps its write-ahead log and checkpoints.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Bind address for peers (default: this member's `peer` address).
    #[serde(default)]
    pub listen_peer: Option<String>,
    /// Bind address for clients (default: this member's `http` address).
    #[serde(default)]
    pub listen_http: Option<String>,
    /// A client call that is not applied within this long answers 503 (outcome unknown).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    #[serde(default)]
    pub protocol: ProtocolConfig,
    /// Limits on client connections.
    #[serde(default)]
    pub http: HttpConfig,
    /// Treat this node's storage as lost (a replaced disk): it votes again only once it
    /// has repaired from its peers. Damage found by recovery implies this.
    #[serde(default)]
    pub rejoin: bool,
    /// Found a new cluster: an empty data directory votes at once, without waiting for
    /// every other member to answer first (see `disk`). Never on a running cluster.
    #[serde(default)]
    pub bootstrap: bool,
    /// Set by `synod server --join` (never in a file): the configuration that admitted
    /// this node, which `members` then lists.
    #[serde(skip)]
    pub joined: Option<Joined>,
    /// Builds with the `planted-bugs` feature only (tests): plants a known bug
    /// (`stale-read`, `small-quorum`, `stale-ballot`) so that fault-injection runs can
    /// prove their checkers catch it. A normal build refuses this key.
    #[cfg(feature = "planted-bugs")]
    #[serde(default)]
    pub planted_bug: Option<String>,
}

/// The protocol's timing and bounds (see `synod_core::Options`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolConfig {
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub retransmit_ms: u64,
    pub window_slots: u64,
    pub batch_commands_max: usize,
    /// Checkpoint every this many applied slots, compacting the log (0: never).
    pub checkpoint_every_slots: u64,
    /// Decided slots kept in memory behind the newest checkpoint for lagging peers.
    pub catchup_retain_slots: u64,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        let o = Options::default();
        ProtocolConfig {
            heartbeat_ms: o.heartbeat_ms,
            election_timeout_ms: o.election_timeout_ms,
            retransmit_ms: o.retransmit_ms,
            window_slots: o.window_slots,
            batch_commands_max: o.batch_commands_max,
            checkpoint_every_slots: o.checkpoint_every_slots,
            catchup_retain_slots: o.catchup_retain_slots,
        }
    }
}

/// Limits on client connections (`[http]`; see `http_serve`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Client connections held at once at most. Lowered at start, if need be, to fit
    /// under the open-file limit with a reserve for storage and peers. Past it, a new
    /// connection is answered 503 `too_many_connections` and closed.
    pub connections_max: usize,
    /// A request's head must arrive within this long of the connection's opening (or of
    /// its first byte on a kept-alive connection); else the connection is closed.
    pub header_timeout_ms: u64,
    /// A kept-alive connection without a request for this long is closed, and a request
    /// unanswered for this long is cut.
    pub idle_timeout_ms: u64,
}

/// The largest `http.connections_max` accepted: far above what one process serves well.
pub const HTTP_CONNECTIONS_MAX_LIMIT: usize = 1_000_000;

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { connections_max: 10_000, header_timeout_ms: 10_000, idle_timeout_ms: 60_000 }
    }
}

fn default_cluster() -> String {
    "synod".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("synod-data")
}
fn default_request_timeout_ms() -> u64 {
    5_000
}

impl Config {
    /// Parses a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The cluster id on the wire: a stable hash of the cluster's name.
    pub fn cluster_id(&self) -> u64 {
        synod_core::wire::cluster_id(&self.cluster)
    }

    pub fn me(&self) -> Result<&MemberConfig, String> {
        self.members
            .iter()
            .find(|m| m.id == self.node_id)
            .ok_or_else(|| format!("node_id {} is not among the members", self.node_id))
    }

    pub fn options(&self) -> Options {
        Options {
            heartbeat_ms: self.protocol.heartbeat_ms,
            election_timeout_ms: self.protocol.election_timeout_ms,
            retransmit_ms: self.protocol.retransmit_ms,
            window_slots: self.protocol.window_slots,
            batch_commands_max: self.protocol.batch_commands_max,
            checkpoint_every_slots: self.protocol.checkpoint_every_slots,
            catchup_retain_slots: self.protocol.catchup_retain_slots,
            ..Options::default()
        }
    }

    /// Checks the configuration as a whole; the message says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        self.me()?;
        let mut ids: Vec<u32> = self.members.iter().map(|m| m.id).collect();
        ids.sort();
        ids.dedup();
        if ids.len() != self.members.len() {
            return Err("member ids must be unique".into());
        }
        if self.request_timeout_ms == 0 {
            return Err("request_timeout_ms must be positive".into());
        }
        if !(1..=HTTP_CONNECTIONS_MAX_LIMIT).contains(&self.http.connections_max) {
            return Err(format!("http.connections_max must be between 1 and {HTTP_CONNECTIONS_MAX_LIMIT}"));
        }
        if self.http.header_timeout_ms == 0 || self.http.idle_timeout_ms == 0 {
            return Err("http.header_timeout_ms and http.idle_timeout_ms must be positive".into());
        }
        #[cfg(feature = "planted-bugs")]
        self.planted_bugs()?;
        self.options().validate().map_err(|e| format!("protocol: {e}"))
    }

    /// The planted bug this configuration asks for (test builds only).
    #[cfg(feature = "planted-bugs")]
    pub fn planted_bugs(&self) -> Result<synod_core::PlantedBugs, String> {
        let mut bugs = synod_core::PlantedBugs::default();
        match self.planted_bug.as_deref() {
            None => {}
            Some("stale-read") => bugs.stale_read = true,
            Some("small-quorum") => bugs.small_quorum = true,
            Some("stale-ballot") => bugs.stale_ballot = true,
            Some(other) => return Err(format!("unknown planted_bug {other:?}")),
        }
        Ok(bugs)
    }

    /// The three-node cluster of `synod dev` on loopback: HTTP on 7001-7003, peers on
    /// 7101-7103, data under `data_dir/node-N`.
    pub fn dev(node_id: u32, data_dir: &std::path::Path) -> Config {
        Config {
            node_id,
            cluster: "synod-dev".into(),
            members: (1..=3)
                .map(|id| MemberConfig {
                    id,
                    peer: format!("127.0.0.1:{}", 7100 + id),
                    http: format!("127.0.0.1:{}", 7000 + id),
                })
                .collect(),
            data_dir: data_dir.join(format!("node-{node_id}")),
            listen_peer: None,
            listen_http: None,
            request_timeout_ms: default_request_timeout_ms(),
            protocol: ProtocolConfig::default(),
            // Three nodes share one process's open-file limit: a smaller cap each, so
            // that all three fit under a modest limit (see `limits`).
            http: HttpConfig { connections_max: 1_000, ..HttpConfig::default() },
            rejoin: false,
            bootstrap: false,
            joined: None,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_toml_gets_laptop_defaults() {
        let config = Config::from_toml(
            r#"
            node_id = 1
            members = [ { id = 1, peer = "127.0.0.1:7101", http = "127.0.0.1:7001" } ]
            "#,
        )
        .unwrap();
        assert_eq!(config.cluster, "synod");
        assert_eq!(config.request_timeout_ms, 5000);
        assert_eq!(config.protocol, ProtocolConfig::default());
        assert_eq!(config.http, HttpConfig::default());
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_missing_self_are_refused_with_a_reason() {
        assert!(Config::from_toml("node_id = 1\nmembers = []\nbogus = 3").unwrap_err().contains("bogus"));
        let config = Config::from_toml("node_id = 9\nmembers = []").unwrap();
        assert!(config.validate().unwrap_err().contains("node_id 9"));
        let members = "members = [ { id = 1, peer = \"127.0.0.1:7101\", http = \"127.0.0.1:7001\" } ]";
        let config =
            Config::from_toml(&format!("node_id = 1\n{members}\n[http]\nconnections_max = 0")).unwrap();
        assert!(config.validate().unwrap_err().contains("http.connections_max"));
        let config =
            Config::from_toml(&format!("node_id = 1\n{members}\n[http]\nheader_timeout_ms = 0")).unwrap();
        assert!(config.validate().unwrap_err().contains("http.header_timeout_ms"));
    }
}
