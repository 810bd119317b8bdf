//! Reconfiguration through the log (PMMC §3.4, after Lamport's α in "Paxos Made Simple"
//! §3 and "Reconfiguring a State Machine", Lamport, Malkhi and Zhou, 2010).
//!
//! **The rule.** The configuration decided in slot `s` (a `Value::Reconfigure`) governs
//! every slot from `s + ALPHA` on, until the next one takes over. Which configuration
//! governs a slot is thus a function of the decided log below it, the same at every
//! replica. A leader proposes in slot `t` only while `t < slot_out + window_slots` (its
//! pipelining window) and `window_slots <= ALPHA`, so every slot below `t - ALPHA` is
//! decided at the leader when it proposes in `t`: **a leader always knows the
//! configuration of every slot it proposes in.** It sends the slot's Accepts to that
//! configuration's voters and counts a quorum of them; its phase 1 for a ballot is run
//! once per configuration, with that configuration's voters, before its first proposal
//! in a slot that configuration governs (`Leader`, `prepared`).
//!
//! **Why each slot chooses at most one value.** Fix a slot `t` and the configuration `C`
//! that governs it. Every leader that proposes in `t` knows `C` (above), sends Accepts for
//! `t` to `C`'s voters only, and has completed phase 1 for its ballot with a quorum of `C`,
//! adopting for `t` the value of the highest-ballot vote its quorum reported. That is
//! single-decree Paxos on the acceptor set `C`, whose quorums intersect; votes that other
//! acceptors may hold for `t` were cast for leaders that followed the same rule, so the
//! adoption may count them too without harm (the highest of a superset of legitimate
//! votes is still safe). Nothing requires the quorums of two configurations to intersect:
//! no slot is decided by two configurations. So any change is safe — add, remove, replace
//! several members at once — as long as every replica agrees where a configuration begins,
//! which the decided log guarantees.
//!
//! **The price** is that a change takes effect `ALPHA` slots after it is decided. A leader
//! with no client commands fills them with no-ops (`Leader::fill_to`), a few round trips
//! of pipelined no-ops. One change is in flight at a time: a new one is refused until the
//! last took effect.
//!
//! **Learners** are members that receive every decision and catch up (by log or snapshot)
//! but never vote; a new node joins as a learner, and is promoted to voter once it has
//! caught up. A node in neither list of the newest configuration was removed: it stops
//! taking part in elections, and says so.

use serde::{Deserialize, Serialize};

use crate::types::{Configuration, NodeId, Slot};

/// Slots between the decision of a configuration and the first slot it governs. At least
/// `Options::window_slots` (validated), so that a leader always knows the configuration of
/// the slots it proposes in (module docs).
pub const ALPHA: Slot = 256;

/// The configurations that govern this node's slots from its decided prefix on: the one
/// governing it, and any decided to take over later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// (first slot governed, configuration), in ascending order of both. The first entry
    /// governs every slot below the second's first slot.
    configs: Vec<(Slot, Configuration)>,
}

impl Membership {
    /// A cluster's first configuration, governing from slot 0.
    pub fn new(initial: Configuration) -> Membership {
        assert!(initial.is_well_formed(), "a malformed configuration: {initial:?}");
        Membership { configs: vec![(0, initial)] }
    }

    /// The configuration that governs `slot`.
    pub fn for_slot(&self, slot: Slot) -> &Configuration {
        let index = self.configs.partition_point(|(first, _)| *first <= slot);
        &self.configs[index.saturating_sub(1)].1
    }

    /// The newest configuration decided (it may not govern any slot decided yet).
    pub fn latest(&self) -> &Configuration {
        &self.configs.last().expect("never empty").1
    }

    /// The first slot the newest configuration governs.
    pub fn latest_from(&self) -> Slot {
        self.configs.last().expect("never empty").0
    }

    /// Every configuration held, with the first slot it governs.
    pub fn configs(&self) -> impl Iterator<Item = (Slot, &Configuration)> {
        self.configs.iter().map(|(first, c)| (*first, c))
    }

    /// A change was decided that does not govern `slot_out` yet: another one waits.
    pub fn is_changing(&self, slot_out: Slot) -> bool {
        self.latest_from() > slot_out
    }

    /// `next` was decided in `slot` and applied, in slot order: it governs from
    /// `slot + alpha` (`ALPHA`; only the planted `reconfig-at-once` bug passes less). A configuration whose epoch does not follow the newest one is not a
    /// change (it was proposed against a configuration another change replaced first) and
    /// is ignored, by every replica alike. Returns whether it took.
    pub fn on_applied(&mut self, slot: Slot, next: &Configuration, alpha: Slot) -> bool {
        if next.epoch != self.latest().epoch + 1 || !next.is_well_formed() {
            return false;
        }
        let mut first = slot.saturating_add(alpha);
        if alpha < ALPHA && first <= self.latest_from() {
            // The planted bug only: a node restarted under it replayed its log at `ALPHA`
            // before the bug was planted, so the configuration before may begin later.
            first = self.latest_from() + 1;
        }
        assert!(first > self.latest_from(), "configurations are decided in slot order");
        self.configs.push((first, next.clone()));
        true
    }

    /// The decided prefix reached `slot_out`: configurations that govern nothing from
    /// there on are forgotten (snapshots carry only what is still needed).
    pub fn forget_before(&mut self, slot_out: Slot) {
        let index = self.configs.partition_point(|(first, _)| *first <= slot_out);
        if index > 1 {
            self.configs.drain(..index - 1);
        }
    }

    /// `node` is a voter or learner of a configuration held (an old one included: its
    /// slots may not all be decided, and its messages about them still count).
    pub fn knows(&self, node: NodeId) -> bool {
        self.configs.iter().any(|(_, c)| c.is_member(node))
    }

    /// `node` is a voter of a configuration held: a ballot of its may lead.
    pub fn knows_voter(&self, node: NodeId) -> bool {
        self.configs.iter().any(|(_, c)| c.is_voter(node))
    }

    /// `node` is in no configuration from `slot_out` on: it was removed.
    pub fn removed(&self, node: NodeId, slot_out: Slot) -> bool {
        !(self.for_slot(slot_out).is_member(node) || self.latest().is_member(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(epoch: u64, voters: &[u32]) -> Configuration {
        let mut c = Configuration::new(voters.iter().copied().map(NodeId).collect());
        c.epoch = epoch;
        c
    }

    #[test]
    fn a_configuration_governs_from_alpha_slots_after_its_decision() {
        let mut membership = Membership::new(config(1, &[1, 2, 3]));
        assert!(membership.on_applied(10, &config(2, &[1, 2, 3, 4]), ALPHA));
        assert_eq!(membership.for_slot(10 + ALPHA - 1).epoch, 1);
        assert_eq!(membership.for_slot(10 + ALPHA).epoch, 2);
        assert!(membership.is_changing(10 + ALPHA - 1));
        assert!(!membership.is_changing(10 + ALPHA));
        assert_eq!(membership.latest().epoch, 2);
    }

    #[test]
    fn a_configuration_that_skips_or_repeats_an_epoch_is_ignored_everywhere() {
        let mut membership = Membership::new(config(1, &[1, 2, 3]));
        assert!(!membership.on_applied(5, &config(1, &[1, 2]), ALPHA));
        assert!(!membership.on_applied(5, &config(3, &[1, 2]), ALPHA));
        assert!(membership.on_applied(6, &config(2, &[1, 2]), ALPHA));
        assert!(!membership.on_applied(7, &config(2, &[1, 2, 3]), ALPHA), "the second change for epoch 2");
        assert_eq!(membership.latest().voters, vec![NodeId(1), NodeId(2)]);
    }

    #[test]
    fn configurations_that_govern_nothing_any_more_are_forgotten() {
        let mut membership = Membership::new(config(1, &[1, 2, 3]));
        membership.on_applied(0, &config(2, &[1, 2]), ALPHA);
        membership.on_applied(ALPHA, &config(3, &[2]), ALPHA);
        membership.forget_before(ALPHA - 1);
        assert_eq!(membership.configs().count(), 3);
        membership.forget_before(ALPHA);
        assert_eq!(membership.configs().map(|(_, c)| c.epoch).collect::<Vec<_>>(), vec![2, 3]);
        assert!(membership.knows(NodeId(1)) && !membership.knows(NodeId(3)));
    }
}
