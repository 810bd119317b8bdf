//! The JSON shapes of Synod's HTTP API, version 1. The server and this client share them,
//! so they cannot drift apart. Keys and values travel as UTF-8 strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Header carrying the client session id; with [`SEQ_HEADER`] it makes a retried request
/// apply once.
pub const CLIENT_ID_HEADER: &str = "synod-client-id";
/// Response header naming the leader's HTTP endpoint (as the cluster's configuration lists
/// it), when the answering node knows one: clients move there to save a hop.
pub const LEADER_HEADER: &str = "synod-leader";
/// Header carrying the request's sequence number within its session (1, 2, 3, ...).
pub const SEQ_HEADER: &str = "synod-seq";

/// The error code of a 409 for a `(synod-client-id, synod-seq)` pair that already carried
/// a different request: nothing of this request was applied.
pub const SESSION_CONFLICT_CODE: &str = "session_conflict";
/// The error code of a 409 for a sequence number older than the session's last: this
/// attempt applied nothing, and the reply of an earlier request under it is gone.
pub const SESSION_EXPIRED_CODE: &str = "session_expired";

/// Every error body: a stable machine code and a human message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// One of: `bad_request`, `key_too_large`, `value_too_large`, `body_too_large`,
    /// `batch_too_large`, `not_found`, `no_quorum`, `busy`, `timeout`, `session_expired`,
    /// `session_conflict`, `too_many_connections` (the node holds its maximum of client
    /// connections; sent before the request is read), `internal`; and for membership:
    /// `not_leader` (307 to the leader, or 503 when none is known), `change_in_flight`,
    /// `not_applicable`, `voter_count`, `learner_behind`, `would_lose_majority`,
    /// `removing_leader`, `bad_transfer_target`, `cluster_mismatch`, `change_lost`.
    pub code: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResponse {
    pub key: String,
    pub value: Option<String>,
    /// Present on stale reads: slots this replica has applied (compare with the leader's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_upto: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    pub value: String,
}

/// Put and delete answer with the value they replaced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousResponse {
    pub previous: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasRequest {
    /// The value the key must hold; `null` means "must be absent".
    pub expected: Option<String>,
    /// The value to set; `null` deletes the key.
    pub new: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasResponse {
    pub succeeded: bool,
    /// The value after the call (on failure: the value that did not match).
    pub current: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanResponse {
    pub entries: Vec<Entry>,
    /// More entries match than were returned.
    pub more: bool,
}

/// One comparison of a transaction; all must hold for the success branch to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "test", rename_all = "snake_case")]
pub enum TxnCompare {
    /// The key holds `value` (`null`: the key is absent).
    Equals {
        key: String,
        value: Option<String>,
    },
    Exists {
        key: String,
    },
    Missing {
        key: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TxnOp {
    Get { key: String },
    Put { key: String, value: String },
    Delete { key: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    #[serde(default)]
    pub compare: Vec<TxnCompare>,
    #[serde(default)]
    pub success: Vec<TxnOp>,
    #[serde(default)]
    pub failure: Vec<TxnOp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TxnOpResult {
    Get { value: Option<String> },
    Put { previous: Option<String> },
    Delete { previous: Option<String> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub results: Vec<TxnOpResult>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAccountRequest {
    pub account: u64,
    #[serde(default)]
    pub initial_balance: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAccountResponse {
    pub account: u64,
    /// `opened`, or `already_exists` (nothing changed).
    pub result: String,
    pub balance: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    /// Chosen by the client: a repeat of the same id returns the first result.
    pub id: u64,
    pub from: u64,
    pub to: u64,
    pub amount: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferResponse {
    pub id: u64,
    /// `ok`, `insufficient_funds`, `no_such_account`, `same_account`, `zero_amount`,
    /// `balance_overflow` or `id_reused`. Only `ok` moved money.
    pub result: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBatchRequest {
    pub transfers: Vec<TransferRequest>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBatchResponse {
    pub results: Vec<TransferResponse>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceResponse {
    pub account: u64,
    pub balance: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalancesResponse {
    pub balances: BTreeMap<u64, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: u32,
    pub peer_addr: String,
    pub http_addr: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLag {
    pub id: u32,
    pub decided_upto: u64,
    pub lag_slots: u64,
    pub heard_ms_ago: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub node: u32,
    pub cluster_id: String,
    pub members: Vec<PeerStatus>,
    /// The node this node follows (itself when it leads), if any.
    pub leader: Option<u32>,
    /// The leader's HTTP address, for clients to go straight there.
    pub leader_http: Option<String>,
    pub is_leader: bool,
    pub ballot: String,
    pub quorum_connected: bool,
    pub decided_upto: u64,
    pub applied_upto: u64,
    pub requests_pending: usize,
    /// Each peer as this node last heard it: how many slots it lags behind this node's
    /// decided prefix, and how long ago it answered a heartbeat.
    #[serde(default)]
    pub peers: Vec<PeerLag>,
    pub fsyncs: u64,
    pub uptime_seconds: f64,
    /// Set while this node recovers from damaged or lost storage: it does not vote until
    /// every other member answered it and it caught up (see the storage docs).
    #[serde(default)]
    pub recovering: Option<RecoveryStatus>,
    /// The newest checkpoint's last slot; decided values below `compacted_upto` are no
    /// longer in the log (a lagging peer receives a snapshot).
    #[serde(default)]
    pub checkpoint_slot: Option<u64>,
    #[serde(default)]
    pub compacted_upto: u64,
    /// Snapshots this node installed from peers since it started.
    #[serde(default)]
    pub snapshots_installed: u64,
    /// The configuration governing this node's next undecided slot.
    #[serde(default)]
    pub configuration: Option<ConfigurationView>,
    /// The newest configuration decided; its epoch is above `configuration`'s while a
    /// change is on its way to taking force.
    #[serde(default)]
    pub latest_configuration: Option<ConfigurationView>,
    /// The group removed this node: it takes no part any more (start it on an empty data
    /// directory with `--join` to have it back).
    #[serde(default)]
    pub removed: bool,
}

/// A configuration of the group: who votes, who learns, and where each is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigurationView {
    /// 1 for the configuration a cluster starts with; each change adds one.
    pub epoch: u64,
    pub voters: Vec<u32>,
    pub learners: Vec<u32>,
    /// Every member's addresses (as far as the configuration carries them).
    pub members: Vec<PeerStatus>,
}

/// `GET /v1/members`, and the answer of every change once decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersResponse {
    /// The cluster's name: a node joining must belong to the same one.
    pub cluster: String,
    /// The node that answered.
    pub node: u32,
    /// The leader the answering node follows, if any, and its HTTP endpoint.
    pub leader: Option<u32>,
    pub leader_http: Option<String>,
    /// The configuration in force at the answering node, and the newest decided.
    pub configuration: ConfigurationView,
    pub latest: ConfigurationView,
    /// Each learner of the newest configuration: how far behind the answering node's
    /// decided prefix it is, as last heard (`None`: not heard yet). Promote a learner
    /// once this is small (within the leader's window of slots).
    pub learners: Vec<LearnerLag>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnerLag {
    pub id: u32,
    pub lag_slots: Option<u64>,
}

/// `POST /v1/members`: admit a new member as a learner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddMemberRequest {
    /// The new member's id; the leader picks one above every id it knows if omitted.
    #[serde(default)]
    pub id: Option<u32>,
    /// Where peers reach it (`host:port`).
    pub peer_addr: String,
    /// Where clients reach it (`host:port`).
    pub http_addr: String,
    /// The cluster the new member means to join: refused (409 `cluster_mismatch`) if it
    /// is not this one.
    #[serde(default)]
    pub cluster: Option<String>,
}

/// The answer to a decided change: the member it was about and the configurations after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChangeResponse {
    pub id: u32,
    /// The change's configuration governs the cluster already (a change takes force a
    /// fixed number of slots after its decision; the next change waits for that).
    pub in_force: bool,
    pub members: MembersResponse,
}

/// `POST /v1/leader/transfer`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLeaderRequest {
    /// The voter to take over; the most caught-up voter if omitted.
    #[serde(default)]
    pub to: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLeaderResponse {
    /// The node that leads now.
    pub leader: u32,
    pub leader_http: Option<String>,
}

/// A recovering node's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryStatus {
    /// Other members that answered since the restart, of how many must.
    pub members_answered: usize,
    pub members_needed: usize,
    /// Once all answered: the slot to catch up to before voting again.
    pub catch_up_to: Option<u64>,
}
