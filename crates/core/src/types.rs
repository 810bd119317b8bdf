//! The vocabulary of the protocol: ballots, slots, commands and the values decided in
//! slots. Names follow "Paxos Made Moderately Complex" (van Renesse & Altinbuken, 2015).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A server of the cluster. Small and copyable; the configuration lists the members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A position in the replicated log. Slot 0 is the first command.
pub type Slot = u64;

/// No slot reaches this: 2^62 slots are 146,000 years at a million slots a second. A
/// message naming a slot beyond it is refused at the door (`validate`), so that slot
/// arithmetic on what peers report (`slot + 1`, `from_slot + i`) can never overflow.
pub const SLOT_MAX: Slot = 1 << 62;

/// A ballot number (PMMC §3): a round and the leader that owns it, ordered
/// lexicographically so that two leaders never share a ballot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    pub round: u64,
    pub leader: NodeId,
}

impl Ballot {
    /// The ballot below every real ballot: nothing has been promised yet.
    pub const ZERO: Ballot = Ballot { round: 0, leader: NodeId(0) };

    /// How far above every ballot a node has seen a ballot from a peer may lie. Honest
    /// nodes move one round per election above the highest ballot they heard of, so a
    /// node lags the cluster by at most the elections it missed: 2^24 is 58 days of
    /// back-to-back elections at one every 300 ms. A ballot further ahead can only be
    /// forged or garbage, and is refused (`Node::handle_message`): were it promised, the
    /// round space could be exhausted and no leader could be elected again. A sender
    /// that speaks as a member can still raise rounds by this much per frame accepted,
    /// so exhausting 2^64 rounds would take 2^40 accepted forgeries.
    pub const ROUND_JUMP_MAX: u64 = 1 << 24;

    /// A ballot owned by `leader` above `self`: the next round, or in the last round a
    /// higher node id of it. `None` once neither exists (reachable only by ballots forged
    /// around the jump bound).
    pub fn next_for(self, leader: NodeId) -> Option<Ballot> {
        match self.round.checked_add(1) {
            Some(round) => Some(Ballot { round, leader }),
            None => (leader > self.leader).then_some(Ballot { round: self.round, leader }),
        }
    }

    /// True if `self` lies no more than [`Ballot::ROUND_JUMP_MAX`] rounds above `known`.
    pub fn within_reach_of(self, known: Ballot) -> bool {
        self.round <= known.round.saturating_add(Ballot::ROUND_JUMP_MAX)
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.leader.0)
    }
}

/// Time as the caller's clock reports it, in microseconds. The core never reads a clock:
/// every input carries `now`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Time(pub u64);

impl Time {
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms * 1000)
    }
    pub const fn as_micros(self) -> u64 {
        self.0
    }
    pub fn plus_millis(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms * 1000))
    }
    pub fn plus_micros(self, us: u64) -> Time {
        Time(self.0.saturating_add(us))
    }
    pub fn saturating_sub(self, other: Time) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

/// Identifies a client session for exactly-once semantics.
pub type ClientId = u64;

/// Client ids with this bit set are ephemeral: their commands apply without a session
/// record. For reads through the log, which are safe to apply twice and must not evict
/// real sessions from the bounded session table.
pub const EPHEMERAL_CLIENT_BIT: ClientId = 1 << 63;

/// A client's command: the application operation plus the session key that makes a
/// retried command apply once (TigerBeetle's client sessions; Raft thesis §6.3).
/// A client has at most one command outstanding, and its `seq` grows by one each time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command<C> {
    pub client_id: ClientId,
    pub seq: u64,
    pub op: C,
}

/// The cluster's membership. The log is designed for reconfiguration (PMMC §3.4): a
/// configuration decided in slot `s` takes effect at slot `s + window`, so a leader with
/// `window` slots in flight never proposes under a configuration it has not seen.
/// Membership changes themselves arrive with the membership issue; today every slot's
/// configuration is the initial one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Configuration {
    pub members: Vec<NodeId>,
}

impl Configuration {
    pub fn new(mut members: Vec<NodeId>) -> Configuration {
        members.sort();
        members.dedup();
        assert!(!members.is_empty(), "a configuration needs at least one member");
        Configuration { members }
    }

    /// The size of a majority quorum.
    pub fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    pub fn contains(&self, node: NodeId) -> bool {
        self.members.contains(&node)
    }
}

/// What a slot decides: a batch of client commands, a no-op that fills a gap left by a
/// previous leader (PMMC §3.3), or a new configuration (reserved for reconfiguration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value<C> {
    Noop,
    Batch(Vec<Command<C>>),
    Reconfigure(Configuration),
}

impl<C> Value<C> {
    pub fn commands(&self) -> &[Command<C>] {
        match self {
            Value::Batch(commands) => commands,
            _ => &[],
        }
    }
}

/// A pvalue ⟨ballot, slot, value⟩: the value an acceptor accepted in a slot, and under
/// which ballot (PMMC §3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PValue<C> {
    pub ballot: Ballot,
    pub slot: Slot,
    pub value: Value<C>,
}
