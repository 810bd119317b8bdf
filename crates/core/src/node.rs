//! A Synod server's protocol state: every role of the paper in one sans-IO object.
//!
//! Each handler has one shape (TigerBeetle's replica): return early if the input is to
//! be ignored, assert preconditions, make the transition. Messages a node sends itself
//! (the leader's own acceptor, the commander's decision to its own replica) are handled
//! within the same input, so their records land in the same `Ready` as everything they
//! enable: nothing escapes before it is durable.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::acceptor::Acceptor;
use crate::effects::{DurableState, Envelope, LogEntry, Output, Persisted, Ready, Record};
use crate::election::{Election, ElectionEvent};
use crate::leader::{Leader, LeaderEvent, Promise, Window};
use crate::membership::Membership;
use crate::message::Message;
use crate::options::{Options, PlantedBugs};
use crate::recovery::{Recovery, RecoveryView};
use crate::replica::{AppliedCommand, Learned, Replica};
use crate::requester::Requester;
use crate::snapshot::{Served, Snapshot, Transfer};
use crate::state_machine::StateMachine;
use crate::types::{Ballot, Command, Configuration, NodeId, PValue, Slot, Time, Value};

mod identity;
mod invariants;
mod lease;
mod reconfigure;
mod state_transfer;
mod validate;

use lease::{LeaseGrant, LeaseRound};
pub use reconfigure::{Change, ChangeError};
pub use validate::{Refusal, Refusals};

/// A snapshot of a node's view, for status pages and the simulator's checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    /// The highest ballot this node has seen.
    pub ballot_max: Ballot,
    /// The leader this node follows, if any.
    pub leader: Option<Ballot>,
    /// This node is the active leader (phase 1 done for its ballot).
    pub is_leader: bool,
    /// The node heard from a majority in its last heartbeat round.
    pub quorum_connected: bool,
    /// How long ago (µs, as of `status_at`'s `now`) a round last ended with a majority
    /// heard; `None` if never. One round that missed its majority by a late reply is not
    /// a lost majority: callers that refuse work without one should allow a round or two.
    pub quorum_heard_us_ago: Option<u64>,
    /// Every slot below this is decided at this node.
    pub decided_upto: Slot,
    /// Every slot below this is applied to the state machine. The same slot as
    /// `decided_upto` by design: a decided prefix is applied in the step that decides it
    /// (decisions that arrive ahead of a gap wait, unapplied and uncounted, for the gap).
    pub applied_upto: Slot,
    /// Client commands waiting at this node.
    pub requests_pending: usize,
    /// Commands queued at this node's leader role for a slot.
    pub leader_queue: usize,
    /// Slots this node's leader role has in phase 2.
    pub slots_in_flight: usize,
    /// Since this node started: slots it proposed client batches in, the commands in
    /// them, and the leaderships (phase 1 runs) it started.
    pub batches_proposed: u64,
    pub commands_proposed: u64,
    pub elections_started: u64,
    /// Set while the node recovers from lost storage and may not vote (see `recovery`).
    pub recovery: Option<RecoveryView>,
    /// The newest checkpoint's last slot, and decided values below `compacted_upto` are
    /// gone from memory (a lagging peer gets a snapshot).
    pub checkpoint_slot: Option<Slot>,
    pub compacted_upto: Slot,
    /// Snapshots this node installed from peers since it started.
    pub snapshots_installed: u64,
    /// Each peer as last heard: its decided prefix and how long ago (µs) it answered.
    pub peers: Vec<PeerView>,
    /// Messages from peers refused since the node started (see `Refusal`).
    pub refusals: Refusals,
    /// The epoch of the configuration in force, and of the newest decided.
    pub epoch: u64,
    pub latest_epoch: u64,
    /// The leadership is being handed to this node (`Node::transfer_leadership`).
    pub transferring_to: Option<NodeId>,
}

/// A peer as this node last heard it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub id: NodeId,
    pub decided_upto: Slot,
    pub heard_us_ago: u64,
}

type Cmd<S> = <S as StateMachine>::Command;

/// One server: acceptor, replica, leader (with scout and commanders), requester and
/// failure detector.
pub struct Node<S: StateMachine> {
    id: NodeId,
    options: Options,
    bugs: PlantedBugs,
    rng: ChaCha8Rng,
    acceptor: Acceptor<Cmd<S>>,
    replica: Replica<S>,
    leader: Leader<Cmd<S>>,
    election: Election,
    requester: Requester<Cmd<S>>,
    // Effects of the current input, handed out by `take_ready`.
    persist: Vec<Record<Cmd<S>>>,
    lsn: u64,
    outbox: Vec<Envelope<Cmd<S>>>,
    outputs: Vec<Output<S::Output>>,
    /// Messages to this node itself, handled before the input returns.
    local: VecDeque<Message<Cmd<S>>>,
    /// Our acceptor's `Accepted` replies to our own commanders, each waiting until the
    /// records through its lsn are durable (`handle_persisted`).
    own_votes: VecDeque<(u64, Message<Cmd<S>>)>,
    /// Every record through this lsn is durable, as the driver last said.
    durable_lsn: u64,
    /// Messages from peers refused by `check_claims` or by a role, by reason.
    refusals: Refusals,
    /// This node's data-directory identity, each member's as last recorded durably, and
    /// the members whose votes do not count (`node/identity.rs`).
    dir_id: u64,
    identities: BTreeMap<NodeId, u64>,
    suspects: BTreeSet<NodeId>,
    /// Recovery began at run time: the next `Ready` sets the damage marker.
    damaged_pending: bool,
    /// Check the invariants after every input in a release build too (the simulator).
    invariants_always: bool,
    /// A leadership transfer under way (`reconfigure.rs`).
    leadership_transfer: Option<reconfigure::Transfer>,
    /// The epochs of the configuration in force and of the newest, as last acted on.
    epochs_seen: (u64, u64),
    next_tick: Time,
    /// When this node last asked a peer for missed decisions (once per round at most).
    catch_up_sent_at: Option<Time>,
    /// The lease this node granted: it promises no ballot of another node until then.
    lease_grant: LeaseGrant,
    /// As leader: the round whose answers count toward a lease, and who granted it.
    lease_round: LeaseRound,
    lease_votes: BTreeSet<NodeId>,
    /// As leader: reads may be served without the log until this time.
    lease_until: Time,
    /// Lease reads waiting for their read index to be applied: (index, driver's token).
    lease_reads: Vec<(Slot, u64)>,
    elections_started: u64,
    /// The time of the latest input, and work deferred to `take_ready` (batching).
    last_now: Time,
    dispatch_pending: bool,
    propose_pending: bool,
    /// Recovery from lost storage, while it lasts (see `recovery`).
    recovery: Option<Recovery>,
    /// Recovery completed: the next `Ready` says so (`Ready::repaired`).
    repaired_pending: bool,
    /// A checkpoint for the next `Ready`, and the slot after the newest one taken.
    checkpoint_pending: Option<Snapshot>,
    checkpoint_slot_out: Slot,
    /// The newest snapshot, served to lagging peers; and one being received.
    served: Option<Arc<Served>>,
    /// The snapshot each peer's transfer began with and when it last asked, so that a
    /// transfer sees one snapshot from its first chunk to its last even while we
    /// checkpoint again (at most one per peer; idle ones expire, see `transfer_tick`).
    pinned: BTreeMap<NodeId, (Arc<Served>, Time)>,
    transfer: Option<Transfer>,
    snapshots_installed: u64,
    /// Heartbeat rounds go on the wire offset by this number, drawn at every start: the
    /// election numbers rounds from 0 in each incarnation, and a reply to a round of an
    /// earlier one (delayed in the network) must never pass for a reply to ours.
    /// Recovery counts only reports made since the restart (`recovery`).
    round_base: u64,
}

impl<S: StateMachine> Node<S> {
    /// Starts a node from what its storage recovered (`DurableState::default()` for a
    /// new node). The state machine is rebuilt by applying the decided prefix of the log.
    pub fn new(
        id: NodeId,
        configuration: Configuration,
        options: Options,
        state_machine: S,
        durable: DurableState<Cmd<S>>,
        seed: u64,
        now: Time,
    ) -> Self {
        options.validate().expect("invalid options");
        let mut acceptor = Acceptor::new(durable.promised);
        let mut replica = Replica::new(state_machine, options.sessions_max, Membership::new(configuration));
        let served = durable.snapshot.as_ref().map(|snapshot| {
            if let Err(error) = replica.install(snapshot) {
                // The checkpoint passed its checksum, so this is a bug, not a fault.
                panic!("checkpoint through slot {} does not restore: {error}", snapshot.last_slot);
            }
            Arc::new(Served::new(snapshot))
        });
        for (slot, entry) in durable.log {
            match entry {
                LogEntry::Accepted { ballot, value } => acceptor.restore(PValue { ballot, slot, value }),
                LogEntry::Decided(value) if slot >= replica.slot_out() => {
                    let _ = replica.on_decision(slot, value);
                }
                LogEntry::Decided(_) => {} // In the checkpoint already.
            }
        }
        let mut applied = Vec::new();
        replica.apply_decided(&mut applied);
        acceptor.forget_below(replica.slot_out());
        let (voters, members) = in_force(replica.membership(), replica.slot_out());
        let election = Election::new(
            id,
            &voters,
            &members,
            options.heartbeat_ms,
            options.election_timeout_ms,
            options.backoff_max_ms,
            durable.promised,
            now,
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let round_base = rng.gen();
        Node {
            id,
            leader: Leader::new(options.requests_pending_max),
            requester: Requester::new(options.requests_pending_max),
            bugs: PlantedBugs::default(),
            rng,
            acceptor,
            replica,
            election,
            persist: Vec::new(),
            lsn: 0,
            outbox: Vec::new(),
            outputs: Vec::new(),
            local: VecDeque::new(),
            own_votes: VecDeque::new(),
            durable_lsn: 0,
            refusals: Refusals::default(),
            dir_id: 0,
            identities: durable.identities,
            suspects: BTreeSet::new(),
            damaged_pending: false,
            invariants_always: false,
            leadership_transfer: None,
            epochs_seen: (0, 0),
            next_tick: now,
            catch_up_sent_at: None,
            lease_grant: LeaseGrant { holder: None, until: now.plus_millis(options.lease_ms) },
            lease_round: LeaseRound { round: 0, started: now },
            lease_votes: BTreeSet::new(),
            lease_until: now,
            lease_reads: Vec::new(),
            elections_started: 0,
            last_now: now,
            dispatch_pending: false,
            propose_pending: false,
            recovery: None,
            repaired_pending: false,
            checkpoint_pending: None,
            checkpoint_slot_out: served.as_ref().map_or(0, |s| s.last_slot + 1),
            served,
            pinned: BTreeMap::new(),
            transfer: None,
            snapshots_installed: 0,
            round_base,
            options,
        }
    }

    /// The node's storage was damaged or lost (recovery found a bad checksum mid-log, a
    /// missing or bad checkpoint, or the disk was replaced): it must not vote until it
    /// has repaired from its peers (see `recovery`). Call right after `new`. The storage's
    /// damage marker must stay until a `Ready` with `repaired` set is durable, so that a
    /// crash meanwhile recovers again.
    pub fn recover_from_peers(&mut self) {
        let voters = self.replica.membership().for_slot(self.replica.slot_out()).voters.clone();
        self.recovery = Some(Recovery::new(self.id, &voters));
        self.election.set_may_lead(false);
        self.check_recovered(); // The only voter has no one to wait for.
    }

    /// Messages from peers refused so far (see `Refusal`).
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// True while the node recovers from lost storage and does not vote.
    pub fn is_recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// Simulator only: plants known bugs to prove the checkers catch them.
    #[doc(hidden)]
    pub fn plant_bugs(&mut self, bugs: PlantedBugs) {
        self.bugs = bugs;
        if bugs.reconfig_at_once {
            self.replica.set_alpha(1);
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn state_machine(&self) -> &S {
        self.replica.state_machine()
    }

    /// This node's view. `now` dates the peers' last heartbeats.
    pub fn status_at(&self, now: Time) -> Status {
        let mut status = self.status();
        status.quorum_heard_us_ago = self.election.quorum_heard_at().map(|at| now.saturating_sub(at));
        status.peers = self
            .election
            .last_heard()
            .iter()
            .map(|(id, (at, heartbeat))| PeerView {
                id: *id,
                decided_upto: heartbeat.decided_upto,
                heard_us_ago: now.saturating_sub(*at),
            })
            .collect();
        status
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            ballot_max: self.election.ballot_max().max(self.acceptor.promised()),
            leader: self.election.leader(),
            is_leader: self.leader.is_active(),
            quorum_connected: self.election.quorum_connected(),
            quorum_heard_us_ago: None,
            decided_upto: self.replica.slot_out(),
            applied_upto: self.replica.slot_out(),
            requests_pending: self.requester.len(),
            leader_queue: self.leader.queued(),
            slots_in_flight: self.leader.in_flight(),
            batches_proposed: self.leader.batches_proposed(),
            commands_proposed: self.leader.commands_proposed(),
            elections_started: self.elections_started,
            recovery: self.recovery.as_ref().map(Recovery::view),
            checkpoint_slot: self.served.as_ref().map(|s| s.last_slot),
            compacted_upto: self.replica.compacted_upto(),
            snapshots_installed: self.snapshots_installed,
            peers: Vec::new(),
            refusals: self.refusals.clone(),
            epoch: self.configuration().epoch,
            latest_epoch: self.latest_configuration().epoch,
            transferring_to: self.leadership_transfer.map(|t| t.to),
        }
    }

    /// When the node next needs `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Time> {
        Some(self.next_tick)
    }

    /// Takes the effects of the inputs so far. Call after every input.
    ///
    /// New client commands are handed on, and queued ones proposed, here rather than in
    /// each input: a driver that feeds many inputs before taking a `Ready` (the server
    /// drains its whole input queue each turn) gets them all in one batch, one slot.
    pub fn take_ready(&mut self) -> Ready<Cmd<S>, S::Output> {
        assert!(self.local.is_empty(), "local messages are handled within the input");
        let now = self.last_now;
        while self.dispatch_pending || self.propose_pending {
            if std::mem::take(&mut self.dispatch_pending) {
                self.dispatch_requests(now, 0);
            }
            if std::mem::take(&mut self.propose_pending) {
                self.propose(now);
            }
            self.drain_local(now);
        }
        self.lsn += self.persist.len() as u64;
        let mut ready = Ready::new(
            std::mem::take(&mut self.persist),
            self.lsn,
            std::mem::take(&mut self.outbox),
            std::mem::take(&mut self.outputs),
        );
        ready.checkpoint = self.checkpoint_pending.take();
        ready.repaired = std::mem::take(&mut self.repaired_pending);
        ready.damaged = std::mem::take(&mut self.damaged_pending);
        ready.set_reads(self.take_lease_reads());
        self.check_invariants();
        ready
    }

    /// A client attached to this node submits `command`. Its output arrives later as an
    /// [`Output`] in a `Ready` of this node.
    pub fn invoke(&mut self, now: Time, command: Command<Cmd<S>>) {
        let (client_id, seq) = (command.client_id, command.seq);
        self.last_now = now;
        if let Err(reason) = self.requester.invoke(command) {
            self.outputs.push(Output::Rejected { client_id, seq, reason });
            return;
        }
        self.dispatch_pending = true;
    }

    /// A message arrived from `from`.
    pub fn handle_message(&mut self, now: Time, from: NodeId, message: Message<Cmd<S>>) {
        if let Err(reason) = self.check_claims(from, &message) {
            self.refusals.count(reason, from, message.kind());
            return;
        }
        self.last_now = now;
        self.step(now, from, message);
        self.drain_local(now);
    }

    /// The storage made every record through `persisted` durable. Call after each sync
    /// (and take the `Ready`, like after any input): this node's own votes count only
    /// now, so that every decision it makes rests on a quorum of durable votes (see
    /// [`Ready::take_accepts`] for why that matters).
    pub fn handle_persisted(&mut self, now: Time, persisted: Persisted) {
        self.durable_lsn = self.durable_lsn.max(persisted.lsn());
        self.last_now = now;
        while self.own_votes.front().is_some_and(|(lsn, _)| *lsn <= self.durable_lsn) {
            let (_, message) = self.own_votes.pop_front().expect("peeked");
            self.local.push_back(message);
        }
        self.drain_local(now);
    }

    /// True if an input left effects that `take_ready` has not taken yet (for a driver
    /// that loops on `handle_persisted` without another input).
    pub fn has_ready(&self) -> bool {
        !(self.persist.is_empty() && self.outbox.is_empty() && self.outputs.is_empty())
            || self.dispatch_pending
            || self.propose_pending
            || self.checkpoint_pending.is_some()
            || self.repaired_pending
            || self.damaged_pending
            || self.lease_reads.iter().any(|(index, _)| *index <= self.replica.slot_out())
    }

    /// The deadline returned by `poll_timeout` has passed.
    pub fn handle_timeout(&mut self, now: Time) {
        if now < self.next_tick {
            return;
        }
        self.last_now = now;
        // Tick at half a heartbeat: fine enough for rounds, retransmission and retries.
        self.next_tick = now.plus_micros(self.options.heartbeat_ms * 500);
        if now >= self.election.next_round_at() {
            self.on_heartbeat_round(now);
        }
        if self.leadership_transfer.is_some_and(|t| now >= t.until || !self.leader.is_active()) {
            // The target did not take over in time (or we lost the leadership anyway).
            self.leadership_transfer = None;
            self.leader.pause(false);
        }
        let retransmit_us = self.options.retransmit_ms * 1000;
        let mut out = std::mem::take(&mut self.outbox);
        self.leader.retransmit(now, retransmit_us, self.replica.slot_out(), &mut out);
        self.send_all(out);
        self.dispatch_requests(now, self.options.request_retry_ms * 1000);
        self.transfer_tick(now);
        self.drain_local(now);
    }

    fn drain_local(&mut self, now: Time) {
        // Bounded: every local message is a reply to a message of this input, and
        // replies do not beget further replies beyond one decision per slot.
        let mut steps = 0usize;
        while let Some(message) = self.local.pop_front() {
            steps += 1;
            assert!(steps < 1_000_000, "local message loop does not terminate");
            self.step(now, self.id, message);
        }
    }

    fn send(&mut self, to: NodeId, message: Message<Cmd<S>>) {
        if to == self.id {
            // Our acceptor's vote reaches our commander only once it is durable, like any
            // peer's: records through `lsn` hold it (and everything before it).
            let lsn = self.lsn + self.persist.len() as u64;
            if matches!(message, Message::Accepted { .. })
                && lsn > self.durable_lsn
                && !self.bugs.own_vote_early
            {
                self.own_votes.push_back((lsn, message));
            } else {
                self.local.push_back(message);
            }
        } else {
            self.outbox.push(Envelope { to, message });
        }
    }

    fn send_all(&mut self, envelopes: Vec<Envelope<Cmd<S>>>) {
        for Envelope { to, message } in envelopes {
            self.send(to, message);
        }
    }

    /// Tells every member of the configurations in force, voters and learners, and this
    /// node's own replica, that `slot` decided `value`.
    fn broadcast_decision(&mut self, slot: Slot, value: Value<Cmd<S>>) {
        let (_, mut members) = in_force(self.replica.membership(), self.replica.slot_out());
        if !members.contains(&self.id) {
            members.push(self.id);
        }
        for to in members {
            self.send(to, Message::Decision { slot, value: value.clone() });
        }
    }

    fn step(&mut self, now: Time, from: NodeId, message: Message<Cmd<S>>) {
        match message {
            Message::Prepare { ballot, from_slot } => self.on_prepare(now, from, ballot, from_slot),
            Message::Promise { .. } | Message::Accepted { .. } if self.is_suspect(from) => {
                // A replaced directory's vote (see `node/identity.rs`).
            }
            Message::Promise { ballot, decided_upto, accepted, decided } => {
                let promise = Promise { from, ballot, decided_upto, accepted, decided };
                let window = window_of(&self.replica, &self.options, &self.bugs);
                let event = self.leader.on_promise(promise, &window);
                self.on_leader_event(now, event);
                // The adopted values (and, once active, the commands) go out in the window.
                self.propose_pending = true;
            }
            Message::Accept { pvalue, decided_upto } => self.on_accept(now, from, pvalue, decided_upto),
            Message::Accepted { ballot, slot } => {
                let event = self.leader.on_accepted(from, ballot, slot);
                self.on_leader_event(now, event);
            }
            Message::Nack { ballot, promised } => {
                self.election.observe(promised);
                let event = self.leader.on_nack(ballot, promised);
                self.on_leader_event(now, event);
            }
            Message::Decision { slot, value } => self.on_decision(from, slot, value),
            Message::HeartbeatRequest { round, dir_id, recovering } => {
                // Recorded durably before the reply leaves: a recovering requester counts
                // our reply only once we remember its new identity (`node/identity.rs`).
                self.on_identity(from, dir_id, recovering, 0);
                let mut status = self.election.heartbeat(self.replica.slot_out());
                status.accepted_upto = self.acceptor.accepted_upto();
                status.lease = self.grant_lease_to_peer(now, from);
                self.stamp_identity(from, &mut status);
                self.send(from, Message::HeartbeatReply { round, status });
            }
            Message::HeartbeatReply { round, status } => {
                // Back to the election's numbering (see `round_base`).
                let round = round.wrapping_sub(self.round_base);
                self.on_identity(from, status.dir_id, status.recovering, status.you);
                self.election.on_reply(now, from, round, status);
                self.count_lease_vote(from, round, &status);
                self.on_recovery_report(from, round, &status);
                self.maybe_catch_up(now, from, status.decided_upto);
                if status.accepted_upto > self.leader.next_slot() && self.leader.is_active() {
                    // An orphan vote beyond our proposals: close its slot (`Leader::fill_to`).
                    let end = self.replica.slot_out() + self.options.window_slots;
                    self.leader.fill_to(status.accepted_upto.min(end));
                    self.propose_pending = true;
                }
            }
            Message::TimeoutNow { .. } => self.on_timeout_now(now, from),
            Message::Forward { commands } => {
                for command in commands {
                    // A full queue or a lost leadership drops the command; its requester resends.
                    let _ = self.leader.enqueue(command);
                }
                self.propose_pending = true;
            }
            Message::CatchUp { from_slot } if from_slot < self.replica.compacted_upto() => {
                let compacted_upto = self.replica.compacted_upto();
                self.send(from, Message::SnapshotNeeded { from_slot, compacted_upto });
            }
            Message::CatchUp { from_slot } => {
                let values = self.replica.decisions_for_catch_up(from_slot, self.options.catchup_batch_max);
                if !values.is_empty() {
                    self.send(from, Message::Decisions { from_slot, values });
                }
            }
            Message::Decisions { from_slot, values } => {
                for (i, value) in values.into_iter().enumerate() {
                    self.on_decision(from, from_slot + i as u64, value);
                }
            }
            Message::SnapshotNeeded { compacted_upto, .. } => {
                self.on_snapshot_needed(now, from, compacted_upto)
            }
            Message::SnapshotRequest { offset } => self.on_snapshot_request(now, from, offset),
            Message::SnapshotChunk { last_slot, total_bytes, checksum, offset, bytes } => {
                self.on_snapshot_chunk(now, from, last_slot, total_bytes, checksum, offset, &bytes)
            }
        }
    }

    /// p1a at our acceptor. Decisions our replica knows count as accepted (see Acceptor).
    fn on_prepare(&mut self, now: Time, from: NodeId, ballot: Ballot, from_slot: Slot) {
        if now < self.lease_grant.until && self.lease_grant.holder != Some(ballot.leader) {
            // We granted a lease to another leader: promising now could let a second
            // leader decide while the first still serves reads alone. Stay silent; the
            // scout retransmits and succeeds once the lease ran out.
            return;
        }
        if self.recovery.is_some() {
            // Our storage lost promises we made: stay silent until repaired.
            self.election.observe(ballot);
            return;
        }
        self.on_ballot_seen(now, ballot);
        let slot_out = self.replica.slot_out();
        let decided = self.replica.decided_from(from_slot);
        let (record, reply) = self.acceptor.on_prepare(ballot, from_slot, slot_out, decided);
        self.persist.extend(record);
        self.send(from, reply);
    }

    /// p2a at our acceptor.
    fn on_accept(&mut self, now: Time, from: NodeId, pvalue: PValue<Cmd<S>>, decided_upto: Slot) {
        if self.recovery.is_some() {
            // Our storage lost votes we cast: stay silent until repaired, but learn.
            self.election.observe(pvalue.ballot);
            self.maybe_catch_up(now, from, decided_upto);
            return;
        }
        if pvalue.slot >= self.replica.slot_out().saturating_add(self.options.slots_ahead_max()) {
            // Too far ahead of what we decided: no vote until we have caught up (see
            // `Options::slots_ahead_max`); the leader retransmits.
            self.maybe_catch_up(now, from, decided_upto);
            return;
        }
        self.on_ballot_seen(now, pvalue.ballot);
        let Ok((record, reply)) = self.acceptor.on_accept(pvalue) else {
            self.refusals.count(Refusal::ConflictingAccept, from, "accept");
            return;
        };
        self.persist.extend(record);
        self.send(from, reply);
        self.maybe_catch_up(now, from, decided_upto);
    }

    /// Another node works with a ballot above ours: once our acceptor promises it, our own
    /// scout and commanders cannot succeed, so stop now rather than wait for the nacks.
    fn on_ballot_seen(&mut self, now: Time, ballot: Ballot) {
        self.election.observe(ballot);
        if ballot > self.leader.ballot() && ballot.leader != self.id && self.leader.is_leading() {
            self.leader.step_down();
            self.election.on_preempted(now, ballot, &mut self.rng);
        }
    }

    fn on_decision(&mut self, from: NodeId, slot: Slot, value: Value<Cmd<S>>) {
        let ahead = slot >= self.replica.slot_out().saturating_add(self.options.slots_ahead_max());
        if ahead && from != self.id {
            return; // Learned later, by catch-up (see `Options::slots_ahead_max`).
        }
        match self.replica.on_decision(slot, value.clone()) {
            Learned::New => {}
            Learned::Known => return,
            // Two values for one slot. Without authenticated peers a forged decision that
            // came first cannot be told from a broken invariant of ours, so this is never
            // a panic a peer could trigger: the second value is refused and counted (the
            // server logs it as an error, the simulator fails the seed with both values).
            Learned::Conflict(_) => {
                self.refusals.count(Refusal::ConflictingDecision, from, "decision");
                return;
            }
        }
        self.persist.push(Record::Decided { slot, value });
        self.leader.on_decided(slot);
        self.apply_and_answer();
    }

    /// Applies what is decided, answers this node's clients, and checkpoints when due.
    fn apply_and_answer(&mut self) {
        let mut applied = Vec::new();
        self.replica.apply_decided(&mut applied);
        let epochs = self.membership_epochs();
        if epochs != self.epochs_seen {
            self.epochs_seen = epochs;
            self.on_membership_changed();
        }
        self.acceptor.forget_below(self.replica.slot_out());
        for AppliedCommand { slot, client_id, seq, digest, result } in applied {
            if self.requester.complete(client_id, seq, digest) {
                self.outputs.push(match result {
                    Ok(output) => Output::Applied { client_id, seq, slot, output },
                    Err(reason) => Output::Rejected { client_id, seq, reason },
                });
            }
        }
        self.maybe_checkpoint();
        self.check_recovered();
        // Applying frees window slots.
        self.propose_pending = true;
    }

    fn on_leader_event(&mut self, now: Time, event: LeaderEvent<Cmd<S>>) {
        match event {
            LeaderEvent::Nothing => {}
            LeaderEvent::Adopted { decided_upto, ahead } => {
                if let Some(peer) = ahead.filter(|_| decided_upto > self.replica.slot_out()) {
                    self.send(peer, Message::CatchUp { from_slot: self.replica.slot_out() });
                }
                // A change decided under an earlier leader may not be in force yet: bring it
                // in with no-ops, as its proposer would have (`membership`), rather than
                // wait for ALPHA slots of client commands.
                let membership = self.replica.membership();
                if membership.is_changing(self.replica.slot_out()) {
                    self.leader.fill_to(membership.latest_from());
                    self.propose_pending = true;
                }
                // Everything our clients wait for goes into our own queue now.
                self.requester.reset();
                self.dispatch_requests(now, 0);
            }
            LeaderEvent::Decided { slot, value } => self.broadcast_decision(slot, value),
            LeaderEvent::Preempted(promised) => {
                self.election.on_preempted(now, promised, &mut self.rng);
            }
        }
    }

    fn on_heartbeat_round(&mut self, now: Time) {
        let leader_before = self.election.leader();
        let leading = self.leader.is_leading().then(|| self.leader.ballot());
        let (event, round) = self.election.on_round(now, &mut self.rng, leading);
        // Answers to this round may extend our lease, measured from now.
        self.lease_round = LeaseRound { round, started: now };
        self.lease_votes.clear();
        match event {
            ElectionEvent::Steady => {}
            ElectionEvent::StepDown => self.leader.step_down(),
            ElectionEvent::TakeOver(ballot) => {
                self.elections_started += 1;
                if self.bugs.stale_ballot && self.leader.led_before() {
                    self.leader.start_without_phase1(ballot, self.replica.slot_out());
                } else {
                    let window = window_of(&self.replica, &self.options, &self.bugs);
                    let mut out = Vec::new();
                    self.leader.start(ballot, &window, now, &mut out);
                    self.send_all(out);
                }
            }
        }
        if self.election.leader() != leader_before {
            self.requester.reset(); // A new leader: hand it every pending command now.
        }
        let wire_round = round.wrapping_add(self.round_base);
        for peer in self.election.peers().to_vec() {
            let (dir_id, recovering) = (self.dir_id, self.recovery.is_some());
            self.send(peer, Message::HeartbeatRequest { round: wire_round, dir_id, recovering });
        }
    }

    /// Asks `peer` for decisions we miss, at most once per heartbeat round.
    fn maybe_catch_up(&mut self, now: Time, peer: NodeId, peer_decided_upto: Slot) {
        if peer_decided_upto <= self.replica.slot_out() {
            return;
        }
        let interval_us = self.options.heartbeat_ms * 1000;
        if self.catch_up_sent_at.is_some_and(|at| now.saturating_sub(at) < interval_us) {
            return;
        }
        self.catch_up_sent_at = Some(now);
        self.send(peer, Message::CatchUp { from_slot: self.replica.slot_out() });
    }

    /// Hands pending client commands to the leader: into our own queue if we lead,
    /// otherwise forwarded to the node we follow. `retry_us` = 0 sends only new ones.
    fn dispatch_requests(&mut self, now: Time, retry_us: u64) {
        let retry_us = if retry_us == 0 { u64::MAX } else { retry_us };
        if self.leader.is_active() {
            for command in self.requester.due(now, retry_us) {
                let _ = self.leader.enqueue(command);
            }
            self.propose_pending = true;
            return;
        }
        let Some(leader) = self.election.leader().map(|b| b.leader) else { return };
        if leader == self.id {
            return; // Phase 1 in progress; `Adopted` dispatches.
        }
        let mut commands = &self.requester.due(now, retry_us)[..];
        while !commands.is_empty() {
            // Bounded like the leader's batches, in count and in bytes: one frame each.
            let (chunk, rest) =
                commands.split_at(crate::leader::batch_len(commands, self.options.batch_commands_max));
            self.send(leader, Message::Forward { commands: chunk.to_vec() });
            commands = rest;
        }
    }

    fn propose(&mut self, now: Time) {
        let window = window_of(&self.replica, &self.options, &self.bugs);
        let mut out = Vec::new();
        let replica = &self.replica;
        self.leader.propose(&window, |slot| replica.is_decided(slot), now, &mut out);
        self.send_all(out);
    }
}

/// The voters of the configuration that governs `slot_out`, and every member (voter or
/// learner) of the configurations in force from there on: whom the election counts, and
/// whom it asks.
fn in_force(membership: &Membership, slot_out: Slot) -> (Vec<NodeId>, Vec<NodeId>) {
    let voters = membership.for_slot(slot_out).voters.clone();
    // The membership holds only the configurations that govern `slot_out` and later.
    let mut members: Vec<NodeId> =
        membership.configs().flat_map(|(_, c)| c.members().collect::<Vec<_>>()).collect();
    members.sort();
    members.dedup();
    (voters, members)
}

/// What the leader proposes within (see `leader::Window`).
fn window_of<'a, S: StateMachine>(
    replica: &'a Replica<S>,
    options: &Options,
    bugs: &PlantedBugs,
) -> Window<'a> {
    Window {
        slot_out: replica.slot_out(),
        window_slots: options.window_slots,
        batch_commands_max: options.batch_commands_max,
        membership: replica.membership(),
        small_quorum: bugs.small_quorum,
    }
}
