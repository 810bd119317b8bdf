//! The messages servers exchange. One enum, named after the paper: phase 1 is
//! `Prepare`/`Promise` (p1a/p1b), phase 2 is `Accept`/`Accepted` (p2a/p2b), a rejection
//! is `Nack` (it makes the Scout or Commander report *preempted*), and `Decision` tells
//! replicas what a slot decided (PMMC §3).

use serde::{Deserialize, Serialize};

use crate::types::{Ballot, Command, PValue, Slot, Value};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<C> {
    /// p1a, from a Scout: "promise not to accept ballots below `ballot`, and tell me
    /// what you accepted in slots from `from_slot` on". One Prepare covers every open
    /// slot: phase 1 runs once per leadership (Multi-Paxos).
    Prepare {
        ballot: Ballot,
        from_slot: Slot,
    },
    /// p1b: the acceptor promised `ballot`. `accepted` holds its pvalues and `decided` the
    /// values its replica knows decided, both for slots at or above
    /// `max(from_slot, decided_upto)`. Every slot below `decided_upto` is decided at this
    /// node, so the new leader never proposes there (it learns those slots by catch-up).
    Promise {
        ballot: Ballot,
        decided_upto: Slot,
        accepted: Vec<PValue<C>>,
        decided: Vec<(Slot, Value<C>)>,
    },
    /// p2a, from a Commander. `decided_upto` piggybacks the leader's commit point.
    Accept {
        pvalue: PValue<C>,
        decided_upto: Slot,
    },
    /// p2b: the acceptor accepted `ballot` in `slot`.
    Accepted {
        ballot: Ballot,
        slot: Slot,
    },
    /// The acceptor refused `ballot` because it promised the higher `promised`.
    /// For the Scout or Commander of `ballot` this means *preempted*.
    Nack {
        ballot: Ballot,
        promised: Ballot,
    },
    /// `slot` decided `value`. Sent by the Commander to every replica.
    Decision {
        slot: Slot,
        value: Value<C>,
    },
    /// Failure detection (one heartbeat round, see `election`). The requester's
    /// data-directory identity and whether it is recovering ride along (`node/identity.rs`).
    HeartbeatRequest {
        round: u64,
        dir_id: u64,
        recovering: bool,
    },
    HeartbeatReply {
        round: u64,
        status: Heartbeat,
    },
    /// The leader asks a caught-up voter to take the leadership over at once (Raft's
    /// TimeoutNow, Ongaro's thesis §3.10). `ballot` is the leader's.
    TimeoutNow {
        ballot: Ballot,
    },
    /// A Requester hands client commands to the node it believes leads.
    Forward {
        commands: Vec<Command<C>>,
    },
    /// A lagging replica asks for the decisions from `from_slot` on.
    CatchUp {
        from_slot: Slot,
    },
    /// Decisions for consecutive slots starting at `from_slot` (bounded batch).
    Decisions {
        from_slot: Slot,
        values: Vec<Value<C>>,
    },
    /// The responder no longer holds slot `from_slot` in its log: it was compacted into a
    /// snapshot. The lagging node pulls the snapshot (see `snapshot`).
    SnapshotNeeded {
        from_slot: Slot,
        compacted_upto: Slot,
    },
    /// Send me your newest snapshot's bytes from `offset` (one chunk).
    SnapshotRequest {
        offset: u64,
    },
    /// One chunk of the sender's newest snapshot, which ends at `last_slot`, is
    /// `total_bytes` long and has CRC32C `checksum` over all of it.
    SnapshotChunk {
        last_slot: Slot,
        total_bytes: u64,
        checksum: u32,
        offset: u64,
        bytes: Vec<u8>,
    },
}

/// What a node tells its peers each heartbeat round (the Omni-Paxos ballot leader
/// election's heartbeat reply, EuroSys'23 §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The highest ballot this node has seen anywhere.
    pub ballot_max: Ballot,
    /// The ballot of the leader this node follows, if any.
    pub leader: Option<Ballot>,
    /// This node heard from a majority (itself included) in its last round.
    pub quorum_connected: bool,
    /// This node is quorum-connected and hears a quorum-connected leader.
    pub happy: bool,
    /// Every slot below this is decided at this node.
    pub decided_upto: Slot,
    /// One past the highest slot this node's acceptor holds a vote in (0: none). A node
    /// recovering from lost storage waits until it has decided up to here (`recovery`).
    pub accepted_upto: Slot,
    /// This reply grants the requester a leader lease: the sender will promise no other
    /// node for `lease_ms` (see `Options::lease_ms`).
    pub lease: bool,
    /// The sender's data-directory identity (0: none given), whether it is recovering
    /// from lost storage, and the identity it remembers for the receiver (0: none); see
    /// `node/identity.rs`.
    pub dir_id: u64,
    pub recovering: bool,
    pub you: u64,
}

impl<C> Message<C> {
    /// A short name for traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Prepare { .. } => "prepare",
            Message::Promise { .. } => "promise",
            Message::Accept { .. } => "accept",
            Message::Accepted { .. } => "accepted",
            Message::Nack { .. } => "nack",
            Message::Decision { .. } => "decision",
            Message::HeartbeatRequest { .. } => "heartbeat-request",
            Message::HeartbeatReply { .. } => "heartbeat-reply",
            Message::TimeoutNow { .. } => "timeout-now",
            Message::Forward { .. } => "forward",
            Message::CatchUp { .. } => "catch-up",
            Message::Decisions { .. } => "decisions",
            Message::SnapshotNeeded { .. } => "snapshot-needed",
            Message::SnapshotRequest { .. } => "snapshot-request",
            Message::SnapshotChunk { .. } => "snapshot-chunk",
        }
    }
}
