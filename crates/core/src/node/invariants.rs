//! The node's invariants, checked after every input in debug builds and in the simulator
//! (TigerBeetle's discipline: assert what must hold, and stop rather than go on wrong).
//! Each is a fact about this node's own state that no peer's claim can change (those are
//! checked, and refused, in `validate.rs`): a failure here is a bug of ours.

use super::Node;
use crate::state_machine::StateMachine;

impl<S: StateMachine> Node<S> {
    /// Asks for the invariants after every input even in a release build (the simulator).
    #[doc(hidden)]
    pub fn check_invariants_always(&mut self) {
        self.invariants_always = true;
    }

    /// Checks the invariants if this is a debug build or `check_invariants_always` was
    /// called. Panics, naming the broken one.
    pub(super) fn check_invariants(&self) {
        if cfg!(debug_assertions) || self.invariants_always {
            self.assert_invariants();
        }
    }

    fn assert_invariants(&self) {
        let promised = self.acceptor.promised();
        let slot_out = self.replica.slot_out();
        // The acceptor (PMMC §3, Fig. 5): nothing accepted above its promise.
        for pvalue in self.acceptor.accepted() {
            assert!(pvalue.ballot <= promised, "accepted {} above the promise {promised}", pvalue.ballot);
        }
        // The election has seen every ballot the acceptor promised: a takeover is always
        // above it.
        assert!(self.election.ballot_max() >= promised, "ballot_max below the promise {promised}");
        // The replica: compaction only below what is applied.
        assert!(self.replica.compacted_upto() <= slot_out, "compacted past the applied prefix");
        assert!(slot_out < crate::types::SLOT_MAX, "the decided prefix reached SLOT_MAX");
        // The leader: its ballot is its own, no higher than any seen, and its commanders
        // work only on slots it proposed.
        let ballot = self.leader.ballot();
        if self.leader.is_leading() {
            assert_eq!(ballot.leader, self.id, "leading with another node's ballot {ballot}");
            assert!(ballot <= self.election.ballot_max(), "leading above every ballot seen");
            assert!(self.recovery.is_none(), "leading while recovering from lost storage");
        }
        if let Some(slot) = self.leader.highest_in_flight() {
            assert!(slot < self.leader.next_slot(), "a commander at {slot} past next_slot");
        }
        // Durability bookkeeping: the driver never says more is durable than was taken,
        // and our own votes wait in the order they were cast.
        assert!(
            self.durable_lsn <= self.lsn,
            "durable lsn {} past the last taken {}",
            self.durable_lsn,
            self.lsn
        );
        assert!(
            self.own_votes.iter().zip(self.own_votes.iter().skip(1)).all(|(a, b)| a.0 <= b.0),
            "own votes out of order"
        );
        // Recovery: a node that may have forgotten promises neither leads nor grants.
        if self.recovery.is_some() {
            assert!(!self.leader.is_active(), "an active leader while recovering");
        }
        assert!(!(self.repaired_pending && self.damaged_pending), "the marker set and cleared at once");
    }
}
