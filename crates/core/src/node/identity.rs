//! Data-directory identities: a member whose storage was replaced must not vote as if it
//! remembered its promises.
//!
//! Every data directory gets a random identity when it is created (`dir_id`), and every
//! heartbeat reply carries the sender's identity, whether it is recovering from lost
//! storage, and the identity the sender remembers for the receiver (`you`). Each node
//! remembers every member's identity durably ([`Record::Identity`], restated after each
//! checkpoint by the storage).
//!
//! The first line of defence is local: a node that starts on an empty directory recovers
//! from its peers before it votes (`recovery`), unless it is founding a new cluster. This
//! module is the second, for storage that is not what it claims to be — a directory
//! created with the founding flag on a running cluster, another node's volume, a wiped
//! directory whose emptiness was mistaken for a founding start:
//!
//! - A member that shows a new identity **while recovering** is doing the safe thing: its
//!   new identity is recorded at once, durably, before the answer to its heartbeat leaves.
//!   Its recovery completes only once every other member has answered it, so by then
//!   every other member remembers its new identity: no false accusation follows.
//! - A member that shows a new identity **and votes** is a *suspect*: its promises, votes
//!   and lease grants are ignored (a vote from storage that forgot its promises could
//!   let two values be chosen), and every reply to it says which identity we remember.
//! - A node told that its peers remember another identity for it begins to recover, and
//!   sets its damage marker durably before it sends anything more: from then on the path
//!   is the one of damaged storage, which `recovery` proves safe.

use super::Node;
use crate::effects::Record;
use crate::message::Heartbeat;
use crate::state_machine::StateMachine;
use crate::types::NodeId;

impl<S: StateMachine> Node<S> {
    /// Gives this node its data directory's identity (0: none, as in tests that run
    /// without storage). Call right after `new`.
    pub fn set_dir_id(&mut self, dir_id: u64) {
        self.dir_id = dir_id;
    }

    /// This node's part of a heartbeat reply to `to`: who we are, and who we remember `to`
    /// to be.
    pub(super) fn stamp_identity(&self, to: NodeId, status: &mut Heartbeat) {
        status.dir_id = self.dir_id;
        status.recovering = self.recovery.is_some();
        // A recovering node accuses no one (see `on_identity`).
        status.you = if status.recovering { 0 } else { self.identities.get(&to).copied().unwrap_or(0) };
    }

    /// A heartbeat request or reply from `from`, which says its identity is `dir_id` and
    /// whether it is `recovering`, and (in a reply) remembers ours as `you`. A node that
    /// recovers itself takes its peers' identities as they come and accuses no one: its
    /// own memory may be what was lost, and by the end of its recovery it has heard, and
    /// durably recorded, every other member's current identity.
    pub(super) fn on_identity(&mut self, from: NodeId, dir_id: u64, recovering: bool, you: u64) {
        let trusting = self.recovery.is_some();
        if dir_id != 0 {
            match self.identities.get(&from) {
                Some(known) if *known == dir_id => {
                    self.suspects.remove(&from);
                }
                Some(_) if !recovering && !trusting => {
                    // A replaced directory that votes: ignore its votes until it recovers.
                    self.suspects.insert(from);
                }
                _ => {
                    // First sight, a replaced directory that recovers, or we recover.
                    self.identities.insert(from, dir_id);
                    self.persist.push(Record::Identity { node: from, dir_id });
                    self.suspects.remove(&from);
                }
            }
        }
        let forgotten = you != 0 && self.dir_id != 0 && you != self.dir_id;
        if forgotten && self.recovery.is_none() {
            // Our peer remembers another directory under our name: whatever we hold may
            // lack promises it made. Recover, durably, before anything else leaves.
            self.leader.step_down();
            self.recover_from_peers();
            self.damaged_pending = true;
            self.repaired_pending = false; // Set after it was cleared in one turn: set.
        }
    }

    /// True if `from` is a suspect: its votes do not count (see the module docs).
    pub(super) fn is_suspect(&self, from: NodeId) -> bool {
        self.suspects.contains(&from)
    }
}
