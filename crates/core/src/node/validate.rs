//! What a peer may claim. Every message is checked against the protocol's own rules
//! before any role sees it, and refused (dropped and counted) if it breaks one: **no
//! input from the network can panic a node or wedge the cluster.** Assertions in the
//! roles guard this node's own invariants; they must never fire on a peer's claim.
//!
//! The frame's checksum already turned corruption in transit into a drop (`wire`). What
//! is left is a frame that a buggy, misconfigured or hostile sender encoded correctly:
//! ballots that name no member or lie absurdly far ahead (promising one could exhaust
//! the round space, see [`Ballot::ROUND_JUMP_MAX`]), a Prepare or Accept whose ballot is
//! not its sender's, replies to ballots that are not ours, slots beyond [`SLOT_MAX`], a
//! second value for a ballot and slot. In the simulator no peer lies, so every refusal
//! there is a bug, and its checkers say so.

use super::Node;
use crate::message::Message;
use crate::state_machine::StateMachine;
use crate::types::{Ballot, NodeId, Slot, SLOT_MAX};

/// Why a message from a peer was refused. Each refusal leaves the node's state as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// The sender is a member of no configuration in force, or claims to be this node.
    NotMember,
    /// A Prepare, Accept or handover whose ballot names a node that is a voter of no
    /// configuration held (reports of ballots seen may name a voter removed since).
    ForeignBallot,
    /// A ballot lies more than `Ballot::ROUND_JUMP_MAX` rounds above every ballot known.
    BallotTooFar,
    /// A Prepare or Accept whose ballot belongs to another node than its sender, or a
    /// Promise, Accepted or Nack answering a ballot that is not this node's.
    WrongBallotOwner,
    /// A slot at or beyond `SLOT_MAX`.
    SlotOutOfRange,
    /// The message contradicts itself or the protocol (a Promise reporting a vote above
    /// the ballot it promises or beyond `slots_ahead_max` of its decided prefix, a Nack
    /// whose promise is not above the ballot it refuses).
    Inconsistent,
    /// An Accept for a ballot and slot this acceptor already accepted another value for.
    ConflictingAccept,
    /// A decision for a slot this replica knows decided with another value.
    ConflictingDecision,
    /// A snapshot whose checksum held but that does not restore.
    BadSnapshot,
}

impl Refusal {
    pub const ALL: [Refusal; 9] = [
        Refusal::NotMember,
        Refusal::ForeignBallot,
        Refusal::BallotTooFar,
        Refusal::WrongBallotOwner,
        Refusal::SlotOutOfRange,
        Refusal::Inconsistent,
        Refusal::ConflictingAccept,
        Refusal::ConflictingDecision,
        Refusal::BadSnapshot,
    ];

    /// A stable name for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::NotMember => "not_member",
            Refusal::ForeignBallot => "foreign_ballot",
            Refusal::BallotTooFar => "ballot_too_far",
            Refusal::WrongBallotOwner => "wrong_ballot_owner",
            Refusal::SlotOutOfRange => "slot_out_of_range",
            Refusal::Inconsistent => "inconsistent",
            Refusal::ConflictingAccept => "conflicting_accept",
            Refusal::ConflictingDecision => "conflicting_decision",
            Refusal::BadSnapshot => "bad_snapshot",
        }
    }
}

/// Refused messages by reason, since the node started, and the latest one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    counts: [u64; Refusal::ALL.len()],
    /// The latest refusal: its reason, its sender and the message's kind.
    pub last: Option<(Refusal, NodeId, &'static str)>,
}

impl Refusals {
    pub(super) fn count(&mut self, reason: Refusal, from: NodeId, kind: &'static str) {
        self.counts[reason as usize] += 1;
        self.last = Some((reason, from, kind));
    }

    /// Every refusal so far.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The count for each reason, in a fixed order.
    pub fn by_reason(&self) -> impl Iterator<Item = (Refusal, u64)> + '_ {
        Refusal::ALL.iter().map(|reason| (*reason, self.counts[*reason as usize]))
    }
}

impl<S: StateMachine> Node<S> {
    /// Checks a peer's message against the rules of the module docs.
    pub(super) fn check_claims(&self, from: NodeId, message: &Message<S::Command>) -> Result<(), Refusal> {
        if from == self.id || !self.replica.membership().knows(from) {
            return Err(Refusal::NotMember);
        }
        let ours = |ballot: Ballot| {
            if ballot.leader == self.id {
                Ok(())
            } else {
                Err(Refusal::WrongBallotOwner)
            }
        };
        match message {
            Message::Prepare { ballot, from_slot } => {
                self.plausible_claim(*ballot)?;
                owned_by(*ballot, from)?;
                slot(*from_slot)
            }
            Message::Promise { ballot, decided_upto, accepted, decided } => {
                ours(*ballot)?;
                slot(*decided_upto)?;
                // An honest acceptor votes and learns only within `slots_ahead_max` of its
                // decided prefix, and the records behind that prefix were synced with
                // every vote after them, so no restart moves it back below.
                let horizon = decided_upto.saturating_add(self.options.slots_ahead_max());
                for pvalue in accepted {
                    self.plausible(pvalue.ballot)?;
                    slot(pvalue.slot)?;
                    if pvalue.ballot > *ballot || pvalue.slot >= horizon {
                        return Err(Refusal::Inconsistent); // It promised our ballot: nothing above.
                    }
                }
                for (s, _) in decided {
                    slot(*s)?;
                    if *s >= horizon {
                        return Err(Refusal::Inconsistent);
                    }
                }
                Ok(())
            }
            Message::Accept { pvalue, decided_upto } => {
                self.plausible_claim(pvalue.ballot)?;
                slot(pvalue.slot)?;
                owned_by(pvalue.ballot, from)?;
                slot(*decided_upto)
            }
            Message::Accepted { ballot, slot: s } => {
                ours(*ballot)?;
                slot(*s)
            }
            Message::Nack { ballot, promised } => {
                ours(*ballot)?;
                self.plausible(*promised)?;
                if promised <= ballot {
                    return Err(Refusal::Inconsistent); // A refusal names a higher promise.
                }
                Ok(())
            }
            Message::Decision { slot: s, value: _ } => slot(*s),
            Message::HeartbeatRequest { .. } => Ok(()),
            Message::HeartbeatReply { status, .. } => {
                self.plausible(status.ballot_max)?;
                if let Some(leader) = status.leader {
                    self.plausible(leader)?;
                }
                slot(status.decided_upto)?;
                slot(status.accepted_upto)?;
                // As for a Promise: no honest vote lies that far beyond the decided prefix,
                // unless the storage below it was lost (a recovering node reports what its
                // damaged log still holds, its checkpoint perhaps gone).
                let horizon = status.decided_upto.saturating_add(self.options.slots_ahead_max());
                if status.accepted_upto > horizon && !status.recovering {
                    return Err(Refusal::Inconsistent);
                }
                Ok(())
            }
            Message::TimeoutNow { ballot } => {
                self.plausible_claim(*ballot)?;
                owned_by(*ballot, from)
            }
            Message::Forward { .. } | Message::SnapshotRequest { .. } => Ok(()),
            Message::CatchUp { from_slot } => slot(*from_slot),
            Message::Decisions { from_slot, values } => slot(from_slot.saturating_add(values.len() as u64)),
            Message::SnapshotNeeded { from_slot, compacted_upto } => {
                slot(*from_slot)?;
                slot(*compacted_upto)
            }
            Message::SnapshotChunk { last_slot, .. } => slot(*last_slot),
        }
    }

    /// A ballot a peer acts with (a Prepare, an Accept, a handover): one of a voter's that
    /// is plausible (below). Only a voter of a configuration held may lead.
    fn plausible_claim(&self, ballot: Ballot) -> Result<(), Refusal> {
        if !self.replica.membership().knows_voter(ballot.leader) {
            return Err(Refusal::ForeignBallot);
        }
        self.plausible(ballot)
    }

    /// A ballot a peer reports having seen (its highest ballot, the leader it follows, the
    /// promise a Nack names, the ballot of a vote a Promise reports): the zero ballot
    /// ("none"), or one that lies within `Ballot::ROUND_JUMP_MAX` rounds of the highest
    /// ballot we know. Its leader may be no voter of any configuration we hold: a voter
    /// that led and was removed since leaves its ballot in every promise and highest
    /// ballot it reached, and refusing every report that carries it would leave the group
    /// unable to hear a majority or to finish phase 1 ever again (PMMC §3.4: a removed
    /// acceptor's old ballots stay part of the history a new leader must see past).
    fn plausible(&self, ballot: Ballot) -> Result<(), Refusal> {
        if ballot == Ballot::ZERO {
            return Ok(());
        }
        let known = self.election.ballot_max().max(self.acceptor.promised()).max(self.leader.ballot());
        if !ballot.within_reach_of(known) {
            return Err(Refusal::BallotTooFar);
        }
        Ok(())
    }
}

/// Phase 1a and 2a come from the leader that owns the ballot.
fn owned_by(ballot: Ballot, from: NodeId) -> Result<(), Refusal> {
    if ballot.leader == from {
        Ok(())
    } else {
        Err(Refusal::WrongBallotOwner)
    }
}

fn slot(slot: Slot) -> Result<(), Refusal> {
    if slot < SLOT_MAX {
        Ok(())
    } else {
        Err(Refusal::SlotOutOfRange)
    }
}
