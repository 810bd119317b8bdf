//! The node's checkpoints, state transfer and recovery from lost storage: the handlers
//! behind `snapshot` and `recovery`, kept apart from the Paxos roles in `node.rs`.

use std::sync::Arc;

use super::{Node, Refusal};
use crate::message::{Heartbeat, Message};
use crate::snapshot::{ChunkOutcome, Served, Snapshot, Transfer};
use crate::state_machine::StateMachine;
use crate::types::{NodeId, Slot, Time};

/// A transfer that made no progress for this many election timeouts is abandoned; the
/// next `SnapshotNeeded` starts another, perhaps from another peer.
const TRANSFER_STALL_TIMEOUTS: u64 = 10;

impl<S: StateMachine> Node<S> {
    /// Takes a checkpoint every `checkpoint_every_slots` applied slots and drops decided
    /// values below it, keeping `catchup_retain_slots` for peers that lag a little.
    pub(super) fn maybe_checkpoint(&mut self) {
        let every = self.options.checkpoint_every_slots;
        let slot_out = self.replica.slot_out();
        if every == 0 || slot_out < self.checkpoint_slot_out + every {
            return;
        }
        self.take_checkpoint();
    }

    fn take_checkpoint(&mut self) {
        let snapshot = self.replica.snapshot();
        self.checkpoint_slot_out = snapshot.slot_out();
        self.served = Some(Arc::new(Served::new(&snapshot)));
        let keep_from = snapshot.slot_out().saturating_sub(self.options.catchup_retain_slots);
        self.replica.compact_below(keep_from);
        self.checkpoint_pending = Some(snapshot);
    }

    /// A heartbeat reply while recovering: one more member's report (see `recovery`).
    /// Only a reply to a round sent since the restart counts: a report made before the
    /// crash may predate the very ballot we promised and forgot.
    pub(super) fn on_recovery_report(&mut self, from: NodeId, round: u64, status: &Heartbeat) {
        if !(1..=self.election.round()).contains(&round) {
            return;
        }
        let Some(recovery) = self.recovery.as_mut() else { return };
        let ballot_max = status.ballot_max.max(status.leader.unwrap_or_default());
        let horizon = status.decided_upto.max(status.accepted_upto);
        if let Some(ballot) = recovery.on_report(from, ballot_max, horizon) {
            // Durable before anything we send depends on it, like every promise.
            self.persist.extend(self.acceptor.raise_promise(ballot));
            self.election.observe(ballot);
        }
        self.check_recovered();
    }

    /// Ends recovery once its conditions hold: the node votes again, and the `Ready`
    /// carries a fresh checkpoint (which compacts the damaged files away) and `repaired`.
    pub(super) fn check_recovered(&mut self) {
        let slot_out = self.replica.slot_out();
        if !self.recovery.as_ref().is_some_and(|r| r.complete(slot_out)) {
            return;
        }
        self.recovery = None;
        self.election.set_may_lead(true);
        self.repaired_pending = true;
        self.damaged_pending = false; // A marker set and cleared in one turn stays cleared.
        if slot_out > 0 {
            self.take_checkpoint();
        }
    }

    /// A peer no longer holds the decisions we asked for: pull its snapshot.
    pub(super) fn on_snapshot_needed(&mut self, now: Time, from: NodeId, compacted_upto: Slot) {
        if compacted_upto <= self.replica.slot_out() || self.transfer.is_some() {
            return; // Caught up meanwhile, or a transfer is under way.
        }
        self.transfer = Some(Transfer::new(from, now));
        self.send(from, Message::SnapshotRequest { offset: 0 });
    }

    /// A peer pulls our snapshot, one chunk per request. A transfer that begins (offset 0)
    /// pins our newest snapshot for that peer, and its later chunks come from the pinned
    /// one: we checkpoint every `checkpoint_every_slots`, and a lagging peer's own retried
    /// commands keep slots coming, so serving only the newest could change the snapshot
    /// under every transfer before it completes. (Found by the simulator: a replica stuck
    /// 250 slots behind through a whole heal phase; `synod-sim`'s catch-up scenario,
    /// `tests/storage.rs`, guards it.)
    pub(super) fn on_snapshot_request(&mut self, now: Time, from: NodeId, offset: u64) {
        let Some(newest) = self.served.clone() else { return };
        let chunk_bytes = self.options.snapshot_chunk_bytes;
        let pinned = match self.pinned.get(&from) {
            Some((pinned, _)) if offset != 0 => pinned.clone(),
            _ => newest.clone(),
        };
        // An offset past the end (the receiver began a snapshot we no longer hold) starts
        // over from 0 with the newest.
        let (served, offset) =
            if pinned.chunk(offset, chunk_bytes).is_some() { (pinned, offset) } else { (newest, 0) };
        let chunk = served.chunk(offset, chunk_bytes).expect("a snapshot is never empty").to_vec();
        let message = Message::SnapshotChunk {
            last_slot: served.last_slot,
            total_bytes: served.bytes.len() as u64,
            checksum: served.checksum,
            offset,
            bytes: chunk,
        };
        self.pinned.insert(from, (served, now));
        self.send(from, message);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_snapshot_chunk(
        &mut self,
        now: Time,
        from: NodeId,
        last_slot: Slot,
        total_bytes: u64,
        checksum: u32,
        offset: u64,
        bytes: &[u8],
    ) {
        let bytes_max = self.options.snapshot_bytes_max;
        let Some(transfer) = self.transfer.as_mut() else { return };
        match transfer.on_chunk(from, last_slot, total_bytes, checksum, offset, bytes, bytes_max, now) {
            ChunkOutcome::Ignored => {}
            ChunkOutcome::More(offset) => {
                transfer.requested_at = now;
                self.send(from, Message::SnapshotRequest { offset });
            }
            ChunkOutcome::Broken(_) => self.transfer = None,
            ChunkOutcome::Complete => {
                let transfer = self.transfer.take().expect("matched above");
                self.install_transfer(transfer);
            }
        }
    }

    fn install_transfer(&mut self, transfer: Transfer) {
        let Ok(snapshot) = Snapshot::decode(&transfer.bytes) else {
            return; // The checksum held, so the sender encodes differently: ignore it.
        };
        if snapshot.slot_out() <= self.replica.slot_out() {
            return; // We caught up from the log meanwhile.
        }
        if self.replica.install(&snapshot).is_err() {
            // The checksum held, so the sender made it so: a peer's claim, refused (the
            // replica is unchanged). The next `SnapshotNeeded` may try another peer.
            self.refusals.count(Refusal::BadSnapshot, transfer.from, "snapshot-chunk");
            return;
        }
        self.snapshots_installed += 1;
        self.acceptor.forget_below(self.replica.slot_out());
        self.leader.on_decided(snapshot.last_slot);
        self.checkpoint_slot_out = snapshot.slot_out();
        self.served = Some(Arc::new(Served {
            last_slot: snapshot.last_slot,
            checksum: transfer.checksum,
            bytes: transfer.bytes,
        }));
        // Written as our own checkpoint before anything that depends on it is released.
        self.checkpoint_pending = Some(snapshot);
        self.apply_and_answer();
    }

    /// Retransmits a lost chunk request, and abandons a transfer that stalled.
    pub(super) fn transfer_tick(&mut self, now: Time) {
        let stall_us = TRANSFER_STALL_TIMEOUTS * self.options.election_timeout_ms * 1000;
        // A peer that stopped asking finished or gave up: its pin goes (the receiver
        // abandons a stalled transfer after the same time).
        self.pinned.retain(|_, (_, asked_at)| now.saturating_sub(*asked_at) <= stall_us);
        let Some(transfer) = self.transfer.as_mut() else { return };
        if now.saturating_sub(transfer.progressed_at) > stall_us {
            self.transfer = None;
            return;
        }
        if now.saturating_sub(transfer.requested_at) >= self.options.retransmit_ms * 1000 {
            transfer.requested_at = now;
            let (to, offset) = (transfer.from, transfer.offset());
            self.send(to, Message::SnapshotRequest { offset });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::apps::kv::KvStore;
    use crate::effects::{DurableState, Persisted};
    use crate::message::{Heartbeat, Message};
    use crate::node::Node;
    use crate::options::Options;
    use crate::types::{Ballot, Configuration, NodeId, Time};

    fn report(ballot_max: Ballot) -> Heartbeat {
        Heartbeat {
            ballot_max,
            leader: None,
            quorum_connected: true,
            happy: false,
            decided_upto: 0,
            accepted_upto: 0,
            lease: false,
            ..Heartbeat::default()
        }
    }

    /// A node that lost its storage may count only reports made since its restart: a
    /// heartbeat reply from before the crash, delayed in the network, may predate the
    /// ballot it promised and forgot, and promising less than that ballot lets two
    /// leaders choose.
    #[test]
    fn recovery_ignores_replies_to_rounds_of_an_earlier_incarnation() {
        let members = Configuration::new(vec![NodeId(1), NodeId(2), NodeId(3)]);
        let options = Options::default();
        let mut node =
            Node::new(NodeId(1), members, options, KvStore::default(), DurableState::default(), 7, Time(0));
        node.recover_from_peers();
        let _ = node.take_ready();
        // Replies to rounds this incarnation never sent: the previous one numbered its
        // rounds from 0 too.
        for (round, peer) in [(1, 2), (2, 3), (0, 2)] {
            let status = report(Ballot { round: 1, leader: NodeId(2) });
            node.handle_message(Time(10), NodeId(peer), Message::HeartbeatReply { round, status });
            let _ = node.take_ready();
        }
        assert!(node.is_recovering(), "stale reports must not end recovery");
        // A real round: both peers answer it, and the node promises their highest ballot.
        node.handle_timeout(Time(1_000_000));
        let ready = node.take_ready();
        let lsn = ready.persist_lsn;
        let messages = ready.release(Persisted::through(lsn)).messages;
        let requests: Vec<_> = messages
            .into_iter()
            .filter_map(|e| match e.message {
                Message::HeartbeatRequest { round, .. } => Some((e.to, round)),
                _ => None,
            })
            .collect();
        assert_eq!(requests.len(), 2);
        for (peer, round) in requests {
            let status = report(Ballot { round: 4, leader: peer });
            node.handle_message(Time(1_000_100), peer, Message::HeartbeatReply { round, status });
        }
        let ready = node.take_ready();
        assert!(!node.is_recovering(), "every other member reported since the restart");
        assert!(ready.repaired);
        assert_eq!(node.status().ballot_max, Ballot { round: 4, leader: NodeId(3) });
    }
}
