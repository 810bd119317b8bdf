//! The vocabulary of the protocol: ballots, slots, commands and the values decided in
//! slots. Names follow "Paxos Made Moderately Complex" (van Renesse & Altinbuken, 2015).

use std::collections::BTreeMap;
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

/// The most voters a configuration may have: quorums of nine are as large as a group
/// should grow (more replicas belong in learners or in other groups).
pub const VOTERS_MAX: usize = 9;

/// One configuration of the group (PMMC §3.4): who votes, who only learns, and how to
/// reach them. The log decides each new one (`Value::Reconfigure`); `membership` says which
/// slots it governs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Configuration {
    /// 1 for the configuration a cluster starts with; each change adds one.
    pub epoch: u64,
    /// The acceptors, sorted: a majority of them is a quorum (1 to [`VOTERS_MAX`]).
    pub voters: Vec<NodeId>,
    /// Replicas that learn every decision and catch up, but never vote, sorted.
    pub learners: Vec<NodeId>,
    /// How to reach each member, opaque to the core: the server keeps a member's peer and
    /// client addresses here, so that a new member's addresses travel with its admission.
    pub addresses: BTreeMap<NodeId, String>,
}

impl Configuration {
    /// The first configuration of a cluster: `voters` and nothing else.
    pub fn new(mut voters: Vec<NodeId>) -> Configuration {
        voters.sort();
        voters.dedup();
        assert!(!voters.is_empty(), "a configuration needs at least one voter");
        Configuration { epoch: 1, voters, learners: Vec::new(), addresses: BTreeMap::new() }
    }

    /// The same configuration with these addresses.
    pub fn with_addresses(mut self, addresses: BTreeMap<NodeId, String>) -> Configuration {
        self.addresses = addresses;
        self
    }

    /// The size of a majority quorum of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    pub fn is_voter(&self, node: NodeId) -> bool {
        self.voters.binary_search(&node).is_ok()
    }

    pub fn is_learner(&self, node: NodeId) -> bool {
        self.learners.binary_search(&node).is_ok()
    }

    /// A voter or a learner.
    pub fn is_member(&self, node: NodeId) -> bool {
        self.is_voter(node) || self.is_learner(node)
    }

    /// Voters, then learners.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(&self.learners).copied()
    }

    /// Well formed: voters and learners sorted, disjoint, without duplicates, 1 to
    /// `VOTERS_MAX` voters, and a positive epoch.
    pub fn is_well_formed(&self) -> bool {
        let sorted = |ids: &[NodeId]| ids.windows(2).all(|w| w[0] < w[1]);
        self.epoch > 0
            && (1..=VOTERS_MAX).contains(&self.voters.len())
            && sorted(&self.voters)
            && sorted(&self.learners)
            && !self.learners.iter().any(|l| self.is_voter(*l))
    }
}

/// What a slot decides: a batch of client commands, a no-op that fills a gap left by a
/// previous leader (PMMC §3.3), or the next configuration (PMMC §3.4; see `membership`).
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
