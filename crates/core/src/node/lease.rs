//! Leader leases (C6): reads a leader may answer alone, without the log.
//!
//! **The grant.** A node that answers a heartbeat request of the leader it follows, with
//! ballot `b`, *grants a lease to `b`*: for `lease_ms` by its own clock from the moment it
//! answers, it promises no ballot of another node (`on_prepare` stays silent). It grants
//! only if its acceptor has promised nothing above `b`: a node that promised `b' > b`
//! already handed `b'`'s leader the vote that may let it decide, so a grant to `b` after
//! that would be a promise it cannot keep (simulator seed 1002989: a follower promised a
//! new leader's ballot, then granted the old leader a lease, and the old leader served a
//! read that missed a write the new one had acknowledged). It grants nothing while it
//! recovers from lost storage, and nothing for one lease after a restart (it may have
//! granted a lease it no longer remembers).
//!
//! **The lease.** The leader of `b` starts each heartbeat round at time `t` on its clock.
//! If a majority (its own acceptor included, under the same rule) grants a lease in
//! answer to that round, it may answer reads alone until `t + lease_ms·(1−ρ)/(1+ρ)`,
//! where ρ bounds the drift of clock rates (`clock_drift_bound_ppm`).
//!
//! **Why no other leader decides meanwhile.** A grant starts no earlier than the round's
//! request was sent, and lasts `lease_ms` on a clock running at most 1+ρ: at least
//! `lease_ms/(1+ρ)` real time after `t`. The leader's `lease_ms·(1−ρ)/(1+ρ)` on a clock
//! running at least 1−ρ is at most `lease_ms/(1+ρ)` real time. So while the leader holds
//! its lease, a majority still refuses every other node's Prepare, and had promised
//! nothing above `b` when it granted. Any other ballot that decides needs a phase-1
//! majority, which meets this one: either it promised before the grant (a ballot below
//! `b`, which `b`'s own phase 1 has already covered) or it cannot promise until the grant
//! ends. Hence no value is decided by another leader during the lease, and a read that
//! waits until the leader has applied every slot it proposed before the read arrived
//! (the read index, `next_slot`) sees every write acknowledged before it.

use super::Node;
use crate::message::Heartbeat;
use crate::state_machine::StateMachine;
use crate::types::{Ballot, NodeId, Slot, Time};

/// A lease this node granted. `holder: None` refuses everyone: after a restart the node
/// may have granted a lease it no longer remembers, so it waits one lease out.
#[derive(Clone, Copy, Debug)]
pub(super) struct LeaseGrant {
    pub(super) holder: Option<NodeId>,
    pub(super) until: Time,
}

/// As leader: the heartbeat round whose answers count toward a lease, and when it began.
#[derive(Clone, Copy, Debug)]
pub(super) struct LeaseRound {
    pub(super) round: u64,
    pub(super) started: Time,
}

impl<S: StateMachine> Node<S> {
    /// A linearizable read without the log (C6). If this node is the active leader and
    /// holds a lease at `now`, returns the read index: once `applied_upto` reaches it (and
    /// the `Ready`s up to now are released), the state machine reflects every write
    /// acknowledged before `now`, and no other leader can have decided anything since.
    /// `None`: order the read through the log instead.
    pub fn lease_read_index(&self, now: Time) -> Option<Slot> {
        if self.bugs.stale_read && self.leader.is_active() {
            // The planted bug: no lease, and no wait for the slots in flight either, so a
            // deposed leader answers at once from whatever it has applied.
            return Some(self.replica.slot_out());
        }
        let leased = now < self.lease_until;
        (self.leader.is_active() && leased).then(|| self.leader.next_slot())
    }

    /// A linearizable read under the lease, the one path both drivers take: if this node
    /// holds a lease at `now` ([`Node::lease_read_index`]), the read `token` waits until
    /// the slots proposed before it are applied and comes back in the `Released::reads` of
    /// the `Ready` that applies them; answer it then, from the state machine. `false`: no
    /// lease, order the read through the log instead.
    pub fn lease_read(&mut self, now: Time, token: u64) -> bool {
        let Some(index) = self.lease_read_index(now) else { return false };
        self.lease_reads.push((index, token));
        self.last_now = now;
        true
    }

    /// The queued lease reads whose index is applied, for the `Ready` being taken.
    pub(super) fn take_lease_reads(&mut self) -> Vec<u64> {
        let applied = self.replica.slot_out();
        let mut ready = Vec::new();
        self.lease_reads.retain(|&(index, token)| {
            let due = index <= applied;
            if due {
                ready.push(token);
            }
            !due
        });
        ready
    }

    /// Grants the leader of `ballot` a lease at `now`, if the rule of the module docs
    /// allows: we promised nothing above `ballot` and hold no live grant to another node
    /// (never two holders at once). `since` is when the grant begins: now for a peer's
    /// request, the round's start for our own leadership (our acceptor promised nothing
    /// above our ballot since then either, as promises only grow).
    pub(super) fn grant_lease(&mut self, since: Time, ballot: Ballot) -> bool {
        if self.recovery.is_some() {
            return false; // A recovering node grants nothing (see `recovery`).
        }
        if self.acceptor.promised() > ballot {
            return false; // A higher ballot holds our promise: its leader may be deciding.
        }
        let holder = ballot.leader;
        let free = self.lease_grant.until <= since || self.lease_grant.holder == Some(holder);
        if !free {
            return false;
        }
        let until = since.plus_millis(self.options.lease_ms).max(self.lease_grant.until);
        self.lease_grant = LeaseGrant { holder: Some(holder), until };
        true
    }

    /// A heartbeat request from `from`: grant it a lease if it is the leader we follow.
    pub(super) fn grant_lease_to_peer(&mut self, now: Time, from: NodeId) -> bool {
        match self.election.leader() {
            Some(ballot) if ballot.leader == from => self.grant_lease(now, ballot),
            _ => false,
        }
    }

    /// As leader: a peer granted (or not) a lease in answer to our round `round`. Once a
    /// majority of the voters of every configuration in force granted one for the current
    /// round (two while a change is on its way: another leader could decide in the slots of
    /// either), our own acceptor included, the lease extends to the round's start plus
    /// `lease_leader_us`.
    pub(super) fn count_lease_vote(&mut self, from: NodeId, round: u64, status: &Heartbeat) {
        let ballot = self.leader.ballot();
        let ours = self.leader.is_active() && status.leader == Some(ballot) && !self.is_suspect(from);
        if !(ours && status.lease && round == self.lease_round.round) || self.leadership_transfer.is_some() {
            return;
        }
        self.lease_votes.insert(from);
        let (id, votes) = (self.id, &self.lease_votes);
        let majority_of_each = self.replica.membership().configs().all(|(_, config)| {
            let granted = votes.iter().filter(|v| config.is_voter(**v)).count();
            granted + usize::from(config.is_voter(id)) >= config.quorum()
        });
        if !majority_of_each {
            return;
        }
        // Our own acceptor is one of the majority: it must refuse other leaders as long.
        let started = self.lease_round.started;
        if !self.grant_lease(started, ballot) {
            return;
        }
        let until = started.plus_micros(self.options.lease_leader_us());
        self.lease_until = self.lease_until.max(until);
    }
}

#[cfg(test)]
mod tests {
    use crate::apps::kv::KvStore;
    use crate::effects::{DurableState, Envelope, Persisted};
    use crate::message::{Heartbeat, Message};
    use crate::node::Node;
    use crate::options::Options;
    use crate::types::{Ballot, Configuration, NodeId, Time};

    type Kv = Node<KvStore>;

    fn ballot(round: u64, leader: u32) -> Ballot {
        Ballot { round, leader: NodeId(leader) }
    }

    /// Takes and releases the node's `Ready` on a perfect disk; returns its messages.
    fn flush(node: &mut Kv, now: Time) -> Vec<Envelope<crate::apps::kv::KvCommand>> {
        let ready = node.take_ready();
        let lsn = ready.persist_lsn;
        let messages = ready.release(Persisted::through(lsn)).messages;
        node.handle_persisted(now, Persisted::through(lsn));
        messages
    }

    /// Node 3 of three, past the lease a restarted node must wait out, following the
    /// leader of `follows` (it answered node 3's round as a quorum-connected leader).
    fn follower_of(follows: Ballot) -> Kv {
        let members = Configuration::new(vec![NodeId(1), NodeId(2), NodeId(3)]);
        let mut node = Node::new(
            NodeId(3),
            members,
            Options::default(),
            KvStore::default(),
            DurableState::default(),
            3,
            Time(0),
        );
        let mut now = Time(0);
        for _ in 0..8 {
            node.handle_timeout(now);
            for envelope in flush(&mut node, now) {
                if let (Message::HeartbeatRequest { round, .. }, true) =
                    (&envelope.message, envelope.to == follows.leader)
                {
                    let status = Heartbeat {
                        ballot_max: follows,
                        leader: Some(follows),
                        quorum_connected: true,
                        happy: true,
                        decided_upto: 0,
                        accepted_upto: 0,
                        lease: false,
                        ..Heartbeat::default()
                    };
                    node.handle_message(
                        now,
                        follows.leader,
                        Message::HeartbeatReply { round: *round, status },
                    );
                }
            }
            now = now.plus_millis(50);
        }
        assert_eq!(node.status().leader, Some(follows));
        node
    }

    fn grants_lease(node: &mut Kv, now: Time, to: NodeId) -> bool {
        node.handle_message(now, to, Message::HeartbeatRequest { round: 1, dir_id: 0, recovering: false });
        flush(node, now)
            .into_iter()
            .any(|e| matches!(e.message, Message::HeartbeatReply { status, .. } if status.lease))
    }

    #[test]
    fn follower_grants_its_leader_a_lease() {
        let mut node = follower_of(ballot(1, 2));
        assert!(grants_lease(&mut node, Time::from_millis(400), NodeId(2)));
    }

    /// Simulator seed 1002989: the follower promised another node's higher ballot, then
    /// (its election still following the old leader) granted the old leader a lease, and
    /// the old leader served a read that missed a write the new leader had acknowledged.
    #[test]
    fn follower_that_promised_a_higher_ballot_grants_the_old_leader_no_lease() {
        let mut node = follower_of(ballot(1, 2));
        let now = Time::from_millis(400);
        node.handle_message(now, NodeId(1), Message::Prepare { ballot: ballot(2, 1), from_slot: 0 });
        let promised =
            flush(&mut node, now).into_iter().any(|e| matches!(e.message, Message::Promise { .. }));
        assert!(promised, "no lease was live: the follower promises the new ballot");
        assert_eq!(node.status().leader, Some(ballot(1, 2)), "its election still follows the old leader");
        assert!(!grants_lease(&mut node, now.plus_micros(4), NodeId(2)));
    }

    #[test]
    fn follower_with_a_live_grant_stays_silent_to_another_leaders_prepare() {
        let mut node = follower_of(ballot(1, 2));
        let now = Time::from_millis(400);
        assert!(grants_lease(&mut node, now, NodeId(2)));
        node.handle_message(
            now.plus_millis(10),
            NodeId(1),
            Message::Prepare { ballot: ballot(2, 1), from_slot: 0 },
        );
        assert!(flush(&mut node, now.plus_millis(10)).is_empty(), "no promise while the lease lasts");
        let later = now.plus_millis(Options::default().lease_ms + 1);
        node.handle_message(later, NodeId(1), Message::Prepare { ballot: ballot(2, 1), from_slot: 0 });
        assert!(flush(&mut node, later).iter().any(|e| matches!(e.message, Message::Promise { .. })));
    }
}
