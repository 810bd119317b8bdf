//! The Scout (PMMC §3, Fig. 7): phase 1 for one ballot. It gathers promises from a
//! majority and reports *adopted* with everything they accepted, or *preempted* as
//! soon as one acceptor has promised a higher ballot.
//!
//! Multi-Paxos runs one Scout per leadership, covering every slot from `from_slot` on
//! (PMMC §4.1, "the leader is the only proposer until preempted").

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{Ballot, NodeId, PValue, Slot, Time, Value};

/// How strongly a value was reported for a slot: a vote under some ballot, or a decision
/// (the strongest: no other value can be chosen there). Ordered by strength.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    Accepted(Ballot),
    Decided,
}

/// A value phase 1 reported for a slot, and how strongly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reported<C> {
    pub rank: Rank,
    pub value: Value<C>,
}

/// What a finished phase 1 hands the leader.
#[derive(Debug)]
pub struct Adopted<C> {
    pub ballot: Ballot,
    /// The epoch of the configuration whose voters promised.
    pub epoch: u64,
    /// For every slot from `from_slot` on that some promiser reported: the value to propose
    /// again — a value a promiser knows decided, otherwise the pvalue with the highest
    /// ballot (pmax, §3).
    pub proposals: BTreeMap<Slot, Reported<C>>,
    /// Every slot below this is decided at some promiser; the leader proposes nothing
    /// there and learns those slots by catch-up from `ahead`.
    pub decided_upto: Slot,
    pub ahead: Option<NodeId>,
}

/// What a Scout says after a message.
#[derive(Debug)]
pub enum ScoutEvent<C> {
    Waiting,
    Adopted(Adopted<C>),
    Preempted(Ballot),
}

#[derive(Debug)]
pub struct Scout<C> {
    pub ballot: Ballot,
    pub from_slot: Slot,
    /// The configuration whose voters this scout asks.
    pub epoch: u64,
    quorum: usize,
    /// Acceptors that have not promised yet.
    waitfor: BTreeSet<NodeId>,
    promised: usize,
    pvalues: BTreeMap<Slot, PValue<C>>,
    decided: BTreeMap<Slot, Value<C>>,
    decided_upto: Slot,
    ahead: Option<NodeId>,
    pub last_sent: Time,
}

impl<C: Clone> Scout<C> {
    pub fn new(
        ballot: Ballot,
        from_slot: Slot,
        epoch: u64,
        acceptors: &[NodeId],
        quorum: usize,
        now: Time,
    ) -> Self {
        assert!(quorum >= 1 && quorum <= acceptors.len());
        Scout {
            ballot,
            from_slot,
            epoch,
            quorum,
            waitfor: acceptors.iter().copied().collect(),
            promised: 0,
            pvalues: BTreeMap::new(),
            decided: BTreeMap::new(),
            decided_upto: from_slot,
            ahead: None,
            last_sent: now,
        }
    }

    /// The acceptors to send (or resend) the Prepare to.
    pub fn waitfor(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.waitfor.iter().copied()
    }

    /// p1b from `from`.
    pub fn on_promise(
        &mut self,
        from: NodeId,
        decided_upto: Slot,
        accepted: Vec<PValue<C>>,
        decided: Vec<(Slot, Value<C>)>,
    ) -> ScoutEvent<C> {
        if !self.waitfor.remove(&from) {
            return ScoutEvent::Waiting; // A duplicate or an acceptor outside the config.
        }
        self.promised += 1;
        for pvalue in accepted {
            // An acceptor that promised our ballot accepted nothing above it (the node
            // refuses a Promise that says otherwise before it gets here).
            debug_assert!(pvalue.ballot <= self.ballot, "an acceptor accepted above the ballot it promised");
            match self.pvalues.get(&pvalue.slot) {
                Some(existing) if existing.ballot >= pvalue.ballot => {}
                _ => {
                    self.pvalues.insert(pvalue.slot, pvalue);
                }
            }
        }
        for (slot, value) in decided {
            self.decided.insert(slot, value);
        }
        if decided_upto > self.decided_upto {
            self.decided_upto = decided_upto;
            self.ahead = Some(from);
        }
        if self.promised < self.quorum {
            return ScoutEvent::Waiting;
        }
        let mut proposals: BTreeMap<Slot, Reported<C>> = std::mem::take(&mut self.pvalues)
            .into_iter()
            .map(|(slot, pvalue)| {
                (slot, Reported { rank: Rank::Accepted(pvalue.ballot), value: pvalue.value })
            })
            .collect();
        proposals.extend(
            std::mem::take(&mut self.decided)
                .into_iter()
                .map(|(slot, value)| (slot, Reported { rank: Rank::Decided, value })),
        );
        let proposals = proposals.split_off(&self.decided_upto.max(self.from_slot));
        ScoutEvent::Adopted(Adopted {
            ballot: self.ballot,
            epoch: self.epoch,
            proposals,
            decided_upto: self.decided_upto,
            ahead: self.ahead,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(round: u64, leader: u32) -> Ballot {
        Ballot { round, leader: NodeId(leader) }
    }
    const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

    #[test]
    fn scout_adopts_after_a_majority_of_promises() {
        let mut scout = Scout::<u32>::new(b(2, 1), 0, 1, &NODES, 2, Time(0));
        assert!(matches!(scout.on_promise(NodeId(1), 0, vec![], vec![]), ScoutEvent::Waiting));
        assert!(matches!(scout.on_promise(NodeId(1), 0, vec![], vec![]), ScoutEvent::Waiting));
        assert!(matches!(scout.on_promise(NodeId(2), 0, vec![], vec![]), ScoutEvent::Adopted(_)));
    }

    #[test]
    fn scout_proposes_the_pvalue_with_the_highest_ballot_per_slot() {
        let mut scout = Scout::<u32>::new(b(3, 1), 0, 1, &NODES, 2, Time(0));
        let low = PValue { ballot: b(1, 2), slot: 4, value: Value::Noop };
        let high = PValue { ballot: b(2, 3), slot: 4, value: Value::Batch(vec![]) };
        let _ = scout.on_promise(NodeId(2), 0, vec![high.clone()], vec![]);
        let ScoutEvent::Adopted(adopted) = scout.on_promise(NodeId(3), 0, vec![low], vec![]) else {
            panic!("expected adoption")
        };
        assert_eq!(adopted.proposals.get(&4).map(|r| &r.value), Some(&high.value));
    }

    #[test]
    fn scout_prefers_a_decided_value_and_skips_the_decided_prefix() {
        let mut scout = Scout::<u32>::new(b(3, 1), 0, 1, &NODES, 2, Time(0));
        let accepted = PValue { ballot: b(2, 3), slot: 9, value: Value::Noop };
        let _ = scout.on_promise(NodeId(2), 5, vec![accepted], vec![(9, Value::Batch(vec![]))]);
        let ScoutEvent::Adopted(adopted) = scout.on_promise(
            NodeId(3),
            0,
            vec![PValue { ballot: b(1, 1), slot: 2, value: Value::Noop }],
            vec![],
        ) else {
            panic!("expected adoption")
        };
        assert_eq!(adopted.decided_upto, 5);
        assert_eq!(adopted.ahead, Some(NodeId(2)));
        assert_eq!(adopted.proposals.keys().copied().collect::<Vec<_>>(), vec![9]);
        assert_eq!(adopted.proposals[&9], Reported { rank: Rank::Decided, value: Value::Batch(vec![]) });
    }
}
