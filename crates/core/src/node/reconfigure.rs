//! Membership changes at the leader, and leadership transfer (see `membership` for the
//! rule that makes a change safe).
//!
//! A change is proposed by the active leader as the next configuration, decided through
//! the log like any value, and governs from `ALPHA` slots after its decision; the leader
//! fills those slots with no-ops if no commands come. The leader refuses a change that
//! cannot be carried out well:
//!
//! - one change at a time: not while another is on its way;
//! - a learner is promoted only once it is caught up (within `window_slots` of the
//!   leader's decided prefix, as its last heartbeat reply says), so that a new voter can
//!   vote at once instead of holding the group up while it fetches a snapshot;
//! - not a change after which the voters this leader heard from in its last rounds would
//!   be no majority of the new configuration (the group could not decide anything more),
//!   unless forced;
//! - not the removal of the leader itself: transfer the leadership first.
//!
//! **Leadership transfer** (as Raft's TimeoutNow, §3.10 of Ongaro's thesis): the leader
//! stops serving reads under its lease, and tells a caught-up voter to take over at once
//! with a higher ballot, without waiting for an election timeout. The followers' leases
//! to the old leader still hold the new one's Prepares off until they run out (at most
//! `lease_ms`): that is the price of reads without the log, paid once per transfer.

use super::Node;
use crate::message::Message;
use crate::state_machine::StateMachine;
use crate::types::{Configuration, NodeId, Slot, Time, VOTERS_MAX};

/// A membership change, as an operator asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new member that learns but does not vote, reachable at `address` (opaque here).
    AddLearner { id: NodeId, address: String },
    /// A learner becomes a voter.
    Promote { id: NodeId },
    /// A voter or learner leaves the group.
    Remove { id: NodeId },
}

/// Why a change or a transfer was refused. Nothing was proposed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeError {
    /// This node is not the active leader; `leader` is the one it follows, if any.
    NotLeader { leader: Option<NodeId> },
    /// Another change is on its way (proposed, or decided but not yet in force).
    ChangeInFlight { epoch: u64 },
    /// The node is already a member (`AddLearner`), or not the kind of member the change
    /// needs (`Promote` of a non-learner, `Remove` of a non-member).
    NotApplicable { id: NodeId, reason: &'static str },
    /// The change would leave no voter, or more than `VOTERS_MAX`.
    VoterCount { voters: usize },
    /// The learner is further behind the leader's decided prefix than a promotion allows
    /// (`None`: it never answered a heartbeat).
    LearnerBehind { id: NodeId, behind: Option<Slot> },
    /// After the change, the voters heard from lately would be no majority (`force`
    /// overrides it).
    WouldLoseMajority { reachable: usize, quorum: usize },
    /// The leader cannot remove itself: transfer the leadership first.
    RemovingLeader,
    /// Transfer to a node that is not a voter in force, to this node, or to one that lags.
    BadTransferTarget { id: NodeId, reason: &'static str },
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeError::NotLeader { leader: Some(l) } => write!(f, "not the leader; {l} leads"),
            ChangeError::NotLeader { leader: None } => write!(f, "not the leader, and no leader is known"),
            ChangeError::ChangeInFlight { epoch } => {
                write!(f, "configuration {epoch} is still on its way: one change at a time")
            }
            ChangeError::NotApplicable { id, reason } => write!(f, "{id}: {reason}"),
            ChangeError::VoterCount { voters } => {
                write!(f, "{voters} voters: a configuration has 1 to {VOTERS_MAX}")
            }
            ChangeError::LearnerBehind { id, behind: Some(n) } => {
                write!(f, "{id} is {n} slots behind: promote it once it has caught up")
            }
            ChangeError::LearnerBehind { id, behind: None } => {
                write!(f, "{id} has not answered yet: promote it once it has caught up")
            }
            ChangeError::WouldLoseMajority { reachable, quorum } => write!(
                f,
                "only {reachable} voters of the new configuration answer lately, and it needs {quorum}: \
                 refused (force it if you know better)"
            ),
            ChangeError::RemovingLeader => {
                write!(f, "the leader cannot remove itself: transfer the leadership first")
            }
            ChangeError::BadTransferTarget { id, reason } => {
                write!(f, "cannot transfer the leadership to {id}: {reason}")
            }
        }
    }
}

impl std::error::Error for ChangeError {}

/// A leadership transfer under way: its target and when the leader gives up on it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Transfer {
    pub(super) to: NodeId,
    pub(super) until: Time,
}

impl<S: StateMachine> Node<S> {
    /// The configuration that governs this node's next undecided slot.
    pub fn configuration(&self) -> &Configuration {
        self.replica.membership().for_slot(self.replica.slot_out())
    }

    /// The newest configuration decided (in force from `ALPHA` slots after its decision).
    pub fn latest_configuration(&self) -> &Configuration {
        self.replica.membership().latest()
    }

    /// Every configuration in force: the one governing the next undecided slot, and any
    /// decided to govern later.
    pub fn configurations(&self) -> impl Iterator<Item = &Configuration> {
        self.replica.membership().configs().map(|(_, c)| c)
    }

    /// This node is in no configuration in force: it was removed from the group.
    pub fn is_removed(&self) -> bool {
        self.replica.membership().removed(self.id, self.replica.slot_out())
    }

    /// Proposes `change` (see the module docs for what is refused). On `Ok`, the next
    /// configuration is on its way; `latest_configuration` shows it once decided.
    pub fn reconfigure(&mut self, now: Time, change: Change, force: bool) -> Result<(), ChangeError> {
        self.last_now = now;
        if !self.leader.is_active() {
            return Err(ChangeError::NotLeader { leader: self.election.leader().map(|b| b.leader) });
        }
        let membership = self.replica.membership();
        let slot_out = self.replica.slot_out();
        if membership.is_changing(slot_out) || self.leader.reconfiguring() {
            return Err(ChangeError::ChangeInFlight { epoch: membership.latest().epoch + 1 });
        }
        let current = membership.latest().clone();
        let next = self.next_configuration(&current, &change)?;
        if !force {
            let heard = self.heard_lately(now);
            let reachable = next.voters.iter().filter(|v| **v == self.id || heard.contains(v)).count();
            if reachable < next.quorum() {
                return Err(ChangeError::WouldLoseMajority { reachable, quorum: next.quorum() });
            }
        }
        debug_assert!(next.is_well_formed() && next.epoch == current.epoch + 1);
        self.leader.reconfigure(next);
        self.propose_pending = true;
        Ok(())
    }

    fn next_configuration(
        &self,
        current: &Configuration,
        change: &Change,
    ) -> Result<Configuration, ChangeError> {
        let mut next = current.clone();
        next.epoch += 1;
        match change {
            Change::AddLearner { id, address } => {
                if current.is_member(*id) {
                    return Err(ChangeError::NotApplicable { id: *id, reason: "already a member" });
                }
                next.learners.push(*id);
                next.learners.sort();
                next.addresses.insert(*id, address.clone());
            }
            Change::Promote { id } => {
                if !current.is_learner(*id) {
                    return Err(ChangeError::NotApplicable { id: *id, reason: "not a learner" });
                }
                let behind = self.lag_of(*id);
                if behind.is_none_or(|n| n > self.options.window_slots) {
                    return Err(ChangeError::LearnerBehind { id: *id, behind });
                }
                next.learners.retain(|l| l != id);
                next.voters.push(*id);
                next.voters.sort();
            }
            Change::Remove { id } => {
                if *id == self.id {
                    return Err(ChangeError::RemovingLeader);
                }
                if !current.is_member(*id) {
                    return Err(ChangeError::NotApplicable { id: *id, reason: "not a member" });
                }
                next.voters.retain(|v| v != id);
                next.learners.retain(|l| l != id);
                next.addresses.remove(id);
            }
        }
        if !(1..=VOTERS_MAX).contains(&next.voters.len()) {
            return Err(ChangeError::VoterCount { voters: next.voters.len() });
        }
        Ok(next)
    }

    /// How far `peer` is behind our decided prefix, as its last heartbeat reply said.
    fn lag_of(&self, peer: NodeId) -> Option<Slot> {
        let (_, heartbeat) = self.election.last_heard().get(&peer)?;
        Some(self.replica.slot_out().saturating_sub(heartbeat.decided_upto))
    }

    /// The peers that answered a heartbeat within the last three rounds.
    fn heard_lately(&self, now: Time) -> Vec<NodeId> {
        let within_us = 3 * self.options.heartbeat_ms * 1000;
        self.election
            .last_heard()
            .iter()
            .filter(|(_, (at, _))| now.saturating_sub(*at) <= within_us)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Asks `to`, a caught-up voter of the configuration in force, to take the leadership
    /// over at once (module docs). Until it does, or `election_timeout_ms` passes, this
    /// node serves no lease reads and proposes no new commands (they wait in its queue).
    pub fn transfer_leadership(&mut self, now: Time, to: NodeId) -> Result<(), ChangeError> {
        self.last_now = now;
        if !self.leader.is_active() {
            return Err(ChangeError::NotLeader { leader: self.election.leader().map(|b| b.leader) });
        }
        let bad = |reason| Err(ChangeError::BadTransferTarget { id: to, reason });
        if to == self.id {
            return bad("it leads already");
        }
        if !self.configuration().is_voter(to) || !self.latest_configuration().is_voter(to) {
            return bad("not a voter of the configuration in force");
        }
        if self.lag_of(to).is_none_or(|n| n > self.options.window_slots) {
            return bad("it is not caught up (or does not answer)");
        }
        self.lease_until = now; // No more reads alone: the leadership is on its way out.
        self.leader.pause(true);
        self.leadership_transfer =
            Some(Transfer { to, until: now.plus_millis(self.options.election_timeout_ms) });
        self.send(to, Message::TimeoutNow { ballot: self.leader.ballot() });
        Ok(())
    }

    /// `TimeoutNow` from the leader we follow: take over at once, if we may.
    pub(super) fn on_timeout_now(&mut self, now: Time, from: NodeId) {
        let follows = self.election.leader().is_some_and(|b| b.leader == from);
        if !follows || self.recovery.is_some() || !self.configuration().is_voter(self.id) {
            return;
        }
        // The takeover happens at the end of the next round that hears a quorum.
        self.election.take_over_now(now);
    }

    /// The configuration in force or the newest one changed: the election counts the new
    /// voters and asks every member, recovery waits for the new voters, and a leader
    /// brings a decided change into force (no-ops up to its first slot) or, if it no longer
    /// votes, steps down.
    pub(super) fn on_membership_changed(&mut self) {
        let slot_out = self.replica.slot_out();
        let (voters, members) = super::in_force(self.replica.membership(), slot_out);
        self.election.reconfigure(&voters, &members);
        if let Some(recovery) = self.recovery.as_mut() {
            recovery.reconfigure(self.id, &voters);
        }
        let membership = self.replica.membership();
        if membership.is_changing(slot_out) {
            self.leader.fill_to(membership.latest_from());
            self.propose_pending = true;
        }
        if !voters.contains(&self.id) && self.leader.is_leading() {
            self.leader.step_down();
        }
    }

    /// The epochs (in force, newest) as last seen, to notice a change after applying.
    pub(super) fn membership_epochs(&self) -> (u64, u64) {
        let membership = self.replica.membership();
        (membership.for_slot(self.replica.slot_out()).epoch, membership.latest().epoch)
    }
}
