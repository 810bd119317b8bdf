//! Recovery from lost storage: when a node may vote again (Paxos Made Live §5.1;
//! protocol-aware recovery, Alagappan et al., FAST '18).
//!
//! A node whose storage was damaged (a bad checksum mid-log, a missing or bad checkpoint)
//! or lost outright restarts without some of what it promised. Voting at once could break
//! Paxos twice over:
//!
//! 1. **A forgotten promise.** It promised ballot `b` to a leader whose phase 1 completed
//!    (or will complete) with that promise; promising a lower ballot now lets a second
//!    leader choose a different value.
//! 2. **A forgotten vote.** A value was chosen by a quorum `Q` that included this node;
//!    a later phase 1 whose quorum holds this node and none of `Q`'s others would miss it.
//!
//! So a recovering node answers heartbeats, learns decisions and forwards client
//! commands, but promises nothing, accepts nothing, grants no lease and never runs for
//! leader, until:
//!
//! - **every other member has answered one of its heartbeat rounds since the restart.**
//!   It then promises the highest `ballot_max` they report. Any leader that counts (or
//!   will count) the forgotten promise began its ballot before sending the prepare we
//!   answered, so it reports a `ballot_max` at least that ballot (a leader that lost its
//!   own state lost its scout with it). Asking *every* other member, not a majority of
//!   them, is what makes this hold for any cluster size: a scout may still be collecting
//!   promises, from nodes that answered our round before it reached them.
//! - **it has decided every slot below the highest `decided_upto` and `accepted_upto`
//!   they report.** A value chosen with our forgotten vote is accepted at the other
//!   members of `Q`, which are among those that answered, so its slot is below that
//!   horizon; once decided here it is reported as decided in every later promise. A
//!   vote beyond the leader's next slot (cast for an earlier ballot, never chosen) would
//!   hold the horizon up until new commands fill its slot, so the leader closes such
//!   slots with no-ops as soon as a heartbeat reports them (`Leader::close_orphans`).
//!
//! The cost: a damaged node stays out while any other member is down. That is the honest
//! price of lost storage. With a majority intact the cluster keeps running meanwhile;
//! nothing acknowledged is lost, since a majority keeps every chosen value.

use std::collections::BTreeMap;

use crate::types::{Ballot, NodeId, Slot};

/// Where a recovering node stands, for status pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryView {
    /// Other members that answered since the restart, and how many must.
    pub reported: usize,
    pub needed: usize,
    /// Once all answered: the slot this node must decide up to before it votes again.
    pub horizon: Option<Slot>,
}

#[derive(Debug)]
pub(crate) struct Recovery {
    others: Vec<NodeId>,
    /// Each other member's report: its `ballot_max` and its horizon.
    reports: BTreeMap<NodeId, (Ballot, Slot)>,
    /// Once every other member reported: the ballot promised and the horizon.
    target: Option<(Ballot, Slot)>,
}

impl Recovery {
    pub(crate) fn new(id: NodeId, members: &[NodeId]) -> Recovery {
        let mut recovery = Recovery { others: Vec::new(), reports: BTreeMap::new(), target: None };
        recovery.reconfigure(id, members);
        recovery
    }

    /// The configuration in force changed before recovery completed: every other voter of
    /// the new one must have reported since the restart (the reports of those still in it
    /// count), and the target is taken again over them, so that a leader of the new
    /// configuration that may hold a promise we forgot is heard as well.
    pub(crate) fn reconfigure(&mut self, id: NodeId, voters: &[NodeId]) {
        let others: Vec<NodeId> = voters.iter().copied().filter(|&v| v != id).collect();
        if others == self.others && (self.target.is_some() || !others.is_empty()) {
            return;
        }
        self.others = others;
        self.reports.retain(|from, _| voters.contains(from));
        // The only voter has no one to ask: whatever it promised, it promised itself, in
        // an incarnation that is gone.
        self.target = self.others.is_empty().then_some((Ballot::ZERO, 0));
    }

    /// A heartbeat reply from `from`. Returns the ballot to promise the first time every
    /// other member has reported.
    pub(crate) fn on_report(&mut self, from: NodeId, ballot_max: Ballot, horizon: Slot) -> Option<Ballot> {
        if self.target.is_some() || !self.others.contains(&from) {
            return None;
        }
        let report = self.reports.entry(from).or_insert((ballot_max, horizon));
        *report = (report.0.max(ballot_max), report.1.max(horizon));
        if self.reports.len() < self.others.len() {
            return None;
        }
        let ballot = self.reports.values().map(|r| r.0).max().expect("every other member reported");
        let horizon = self.reports.values().map(|r| r.1).max().expect("every other member reported");
        self.target = Some((ballot, horizon));
        Some(ballot)
    }

    /// Recovery is complete once the node has decided everything below the horizon.
    pub(crate) fn complete(&self, decided_upto: Slot) -> bool {
        self.target.is_some_and(|(_, horizon)| decided_upto >= horizon)
    }

    pub(crate) fn view(&self) -> RecoveryView {
        RecoveryView {
            reported: self.reports.len(),
            needed: self.others.len(),
            horizon: self.target.map(|(_, horizon)| horizon),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ballot(round: u64, leader: u32) -> Ballot {
        Ballot { round, leader: NodeId(leader) }
    }

    #[test]
    fn recovery_waits_for_every_other_member_then_for_the_horizon() {
        let members = [NodeId(1), NodeId(2), NodeId(3), NodeId(4), NodeId(5)];
        let mut recovery = Recovery::new(NodeId(1), &members);
        assert_eq!(recovery.on_report(NodeId(2), ballot(3, 2), 10), None);
        assert_eq!(recovery.on_report(NodeId(1), ballot(9, 1), 99), None, "our own report does not count");
        assert_eq!(recovery.on_report(NodeId(3), ballot(5, 4), 12), None);
        assert_eq!(recovery.on_report(NodeId(4), ballot(4, 4), 7), None);
        assert!(!recovery.complete(1_000), "a member has not reported");
        assert_eq!(recovery.on_report(NodeId(5), ballot(2, 5), 30), Some(ballot(5, 4)));
        assert_eq!(recovery.view().horizon, Some(30));
        assert!(!recovery.complete(29));
        assert!(recovery.complete(30));
        assert_eq!(recovery.on_report(NodeId(5), ballot(8, 5), 40), None, "the target is fixed once set");
    }
}
