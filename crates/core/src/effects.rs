//! The node's interface to the outside world: explicit effects.
//!
//! After every input (`handle_message`, `invoke`, `handle_timeout`) the caller takes a
//! [`Ready`] and performs it **in this order**:
//!
//! 1. Make every record in `Ready::persist` durable, atomically and in order (write and
//!    fsync). A crash may lose a whole batch that was not yet durable, never half of it
//!    out of order.
//!    If `Ready::checkpoint` is set, write that checkpoint durably too (and compact the
//!    log before it); if `Ready::repaired` is set, clear the storage's damage marker once
//!    this batch is durable (the node finished recovering from lost storage); if
//!    `Ready::damaged` is set, set that marker durably (the node began to recover).
//! 2. Only then call [`Ready::release`] with the [`Persisted`] token the storage gives back,
//!    and send the messages and deliver the outputs it returns.
//! 3. After each sync, tell the node with `Node::handle_persisted` (and take its `Ready`
//!    again, like after any input): a vote, this node's own included, counts only once
//!    durable, so every decision rests on a quorum of durable votes.
//!
//! **NO MESSAGE MAY BE SENT AND NO OUTPUT DELIVERED BEFORE THE RECORDS OF ITS `Ready` ARE
//! DURABLE.** A promise, an accepted vote or an acknowledged command that a crash can take
//! back breaks Paxos (Paxos Made Live §5.1). `release` asserts the token covers the batch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::message::Message;
use crate::snapshot::Snapshot;
use crate::types::{Ballot, ClientId, NodeId, PValue, Slot, Value};

/// One durable record. Storage replays them into a [`DurableState`] on restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record<C> {
    /// The acceptor promised not to accept ballots below `ballot`.
    Promised { ballot: Ballot },
    /// The acceptor accepted `pvalue` (this also implies a promise of its ballot).
    Accepted { pvalue: PValue<C> },
    /// The replica learned that `slot` decided `value`.
    Decided { slot: Slot, value: Value<C> },
    /// The data directory of member `node` has identity `dir_id` (see `node/identity.rs`).
    Identity { node: NodeId, dir_id: u64 },
}

/// A message and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<C> {
    pub to: NodeId,
    pub message: Message<C>,
}

/// Why a client command was not executed. Each variant says what happened to state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// The node's request queue is full; nothing was proposed. Retry later.
    Busy,
    /// The session already moved past this sequence number: the command was applied
    /// earlier and its reply is no longer cached. State is unchanged by this request.
    SessionExpired,
    /// The session already used this sequence number for a different command (its digest
    /// differs from the one the session cached): a client reused a `(client_id, seq)` pair
    /// for a new request. Nothing of this command was applied; the session still holds the
    /// first command's reply, which a true retry of it gets. TigerBeetle answers the same
    /// case `exists_with_different_*`.
    SessionConflict,
}

/// What a client attached to this node gets back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<O> {
    /// The command was decided in `slot` and applied (once, even if retried).
    Applied { client_id: ClientId, seq: u64, slot: Slot, output: O },
    /// The command was not executed, see [`Rejection`].
    Rejected { client_id: ClientId, seq: u64, reason: Rejection },
}

/// When a [`Ready`] may be released ([`Ready::release_mode`]). Every `Ready` is released
/// in the order it was taken, after every earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseMode {
    /// Nothing to write: at once ([`Ready::release_written`] with the current lsn).
    AtOnce,
    /// Decisions only: once its records are written after every earlier batch, before
    /// they are synced ([`Ready::release_written`]).
    OnceWritten,
    /// A vote, an identity, a checkpoint or a marker change: once synced, checkpoint and
    /// marker included ([`Ready::release`]).
    OnceSynced,
}

/// Proof from the storage that every record through `lsn` is durable.
/// Construct it only after the sync returned success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persisted {
    lsn: u64,
}

impl Persisted {
    /// The storage synced every record with a log sequence number up to `lsn`.
    pub fn through(lsn: u64) -> Persisted {
        Persisted { lsn }
    }

    /// The last durable log sequence number.
    pub fn lsn(self) -> u64 {
        self.lsn
    }
}

/// Everything an input produced. See the module docs for the order to act in.
#[derive(Debug)]
#[must_use = "a Ready must be persisted and then released"]
pub struct Ready<C, O> {
    /// Records to make durable first.
    pub persist: Vec<Record<C>>,
    /// The log sequence number of the last record of `persist` (records are numbered
    /// from 1 over the node's lifetime since its last restart).
    pub persist_lsn: u64,
    /// A checkpoint to write after the records (and before releasing): the log before
    /// `last_slot` may then be compacted. Taken every `checkpoint_every_slots`, after a
    /// snapshot arrived from a peer, and when recovery from lost storage completes.
    pub checkpoint: Option<Snapshot>,
    /// The node completed recovery from lost storage (`recovery`): once this batch and
    /// its checkpoint are durable, clear the damage marker so a restart votes at once.
    pub repaired: bool,
    /// The node learned that its storage is not what its peers remember (see
    /// `node/identity.rs`) and now recovers from them: set the damage marker durably, so
    /// that a restart recovers too, before anything of this batch is released. Never set
    /// together with `repaired`.
    pub damaged: bool,
    messages: Vec<Envelope<C>>,
    outputs: Vec<Output<O>>,
    reads: Vec<u64>,
}

/// What a released [`Ready`] hands the driver.
#[derive(Debug)]
pub struct Released<C, O> {
    pub messages: Vec<Envelope<C>>,
    pub outputs: Vec<Output<O>>,
    /// Lease reads (the tokens given to `Node::lease_read`) whose read index the state
    /// this batch leaves behind has reached: answer each from the state machine now.
    pub reads: Vec<u64>,
}

impl<C, O> Ready<C, O> {
    pub(crate) fn new(
        persist: Vec<Record<C>>,
        persist_lsn: u64,
        messages: Vec<Envelope<C>>,
        outputs: Vec<Output<O>>,
    ) -> Self {
        Ready {
            persist,
            persist_lsn,
            checkpoint: None,
            repaired: false,
            damaged: false,
            messages,
            outputs,
            reads: Vec::new(),
        }
    }

    /// Nothing to do at all.
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.messages.is_empty()
            && self.outputs.is_empty()
            && self.reads.is_empty()
            && self.checkpoint.is_none()
            && !self.repaired
            && !self.damaged
    }

    /// Hands out the messages and outputs once `persisted` covers this batch.
    pub fn release(self, persisted: Persisted) -> Released<C, O> {
        assert!(
            persisted.lsn >= self.persist_lsn,
            "persist-before-send violated: releasing a batch through lsn {} with only {} durable",
            self.persist_lsn,
            persisted.lsn
        );
        self.released()
    }

    /// True if this batch holds a vote (a promise or an accepted value) or an identity:
    /// it must be synced before release. A batch of decisions only may be released once written,
    /// synced later with the next vote ([`Ready::release_written`]).
    pub fn holds_votes(&self) -> bool {
        self.persist.iter().any(|record| !matches!(record, Record::Decided { .. }))
    }

    /// When this batch may be released: **the one rule both drivers follow** (after the
    /// `Accept`s, which leave first: [`Ready::take_accepts`]).
    pub fn release_mode(&self) -> ReleaseMode {
        let disk_work =
            !self.persist.is_empty() || self.checkpoint.is_some() || self.repaired || self.damaged;
        if !disk_work {
            ReleaseMode::AtOnce
        } else if self.holds_votes() || self.checkpoint.is_some() || self.repaired || self.damaged {
            ReleaseMode::OnceSynced
        } else {
            ReleaseMode::OnceWritten
        }
    }

    /// Hands out the messages and outputs of a batch that holds **decisions only** (or
    /// nothing to write at all), once
    /// its records are written (in order, after every earlier batch) but before they are
    /// synced. Safe because a decision is a fact the cluster keeps, not a promise of ours:
    /// every vote it rests on is durable at its acceptor — a peer sends `Accepted` only
    /// after its record is synced, and this node's own acceptor's vote reaches its
    /// commander only through `Node::handle_persisted` — so a crash that loses the record
    /// loses nothing but a catch-up. It saves one fsync on the commit path of every slot.
    /// A batch with a checkpoint or the repaired flag is synced and released with
    /// [`Ready::release`].
    pub fn release_written(self, written: Persisted) -> Released<C, O> {
        assert!(!self.holds_votes(), "a batch with votes must be synced before release");
        assert!(
            self.checkpoint.is_none() && !self.repaired && !self.damaged,
            "checkpoints and markers are synced"
        );
        assert!(
            written.lsn >= self.persist_lsn,
            "releasing decisions through lsn {} with only {} written",
            self.persist_lsn,
            written.lsn
        );
        self.released()
    }

    /// Takes this batch's phase-2a `Accept`s out so that they leave **before** its
    /// records are durable: the leader writes its own vote while the followers write
    /// theirs, so a slot waits for one fsync in turn rather than two (Raft §10.2.1 does
    /// the same for the leader's log write). Safe because an `Accept` reveals nothing that
    /// rests on an unsynced record: its ballot rests on promises made durable in phase 1,
    /// here and at the peers, and its `decided_upto` counts only decisions, each of which
    /// rests on a quorum of durable votes (this node's own vote counts only once durable,
    /// `Node::handle_persisted`). A crash before the sync loses an unsent vote that nobody
    /// counted: the peers' votes alone decide nothing more than Paxos allows.
    ///
    /// Counting our own vote at once instead breaks this (simulator seed 1008524): the
    /// decision it completes is released once written, the crash takes the vote back, and
    /// a later leader whose phase-1 quorum misses the other voter chooses another value.
    /// The planted bug `own-vote-early` brings that rule back; the simulator catches it.
    pub fn take_accepts(&mut self) -> Vec<Envelope<C>> {
        let (accepts, rest) = std::mem::take(&mut self.messages)
            .into_iter()
            .partition(|envelope| matches!(envelope.message, Message::Accept { .. }));
        self.messages = rest;
        accepts
    }

    /// For the simulator's planted `skip-persist` bug only: hands out the messages without
    /// proof of durability. Never call this from a real driver.
    #[doc(hidden)]
    pub fn release_unpersisted(self) -> Released<C, O> {
        self.released()
    }

    fn released(self) -> Released<C, O> {
        Released { messages: self.messages, outputs: self.outputs, reads: self.reads }
    }

    /// Lease reads whose index this batch reaches (see [`Released::reads`]).
    pub(crate) fn set_reads(&mut self, reads: Vec<u64>) {
        self.reads = reads;
    }
}

/// What a node keeps across crashes: the acceptor's promise, the newest checkpoint, and
/// the log of accepted and decided values after it. Storage replays records into it in
/// order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState<C> {
    pub promised: Ballot,
    /// The data-directory identity last seen for each member (`node/identity.rs`).
    pub identities: BTreeMap<NodeId, u64>,
    /// The newest checkpoint; the log holds nothing at or below its `last_slot`.
    pub snapshot: Option<Snapshot>,
    pub log: BTreeMap<Slot, LogEntry<C>>,
}

/// One slot of the durable log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogEntry<C> {
    Accepted { ballot: Ballot, value: Value<C> },
    Decided(Value<C>),
}

impl<C> Default for DurableState<C> {
    fn default() -> Self {
        DurableState {
            promised: Ballot::ZERO,
            identities: BTreeMap::new(),
            snapshot: None,
            log: BTreeMap::new(),
        }
    }
}

impl<C: Clone> DurableState<C> {
    /// A checkpoint became durable: it replaces every log entry at or below its slot
    /// (as storage's compaction does).
    pub fn install_checkpoint(&mut self, snapshot: Snapshot) {
        if self.snapshot.as_ref().is_some_and(|s| s.last_slot >= snapshot.last_slot) {
            return;
        }
        self.log = self.log.split_off(&snapshot.slot_out());
        self.snapshot = Some(snapshot);
    }

    /// Applies one record, exactly as the node applied it to its memory.
    pub fn apply(&mut self, record: &Record<C>) {
        match record {
            Record::Promised { ballot } => {
                self.promised = self.promised.max(*ballot);
            }
            Record::Accepted { pvalue } => {
                self.promised = self.promised.max(pvalue.ballot);
                let compacted = self.snapshot.as_ref().is_some_and(|s| pvalue.slot <= s.last_slot);
                match self.log.get(&pvalue.slot) {
                    _ if compacted => {}
                    Some(LogEntry::Decided(_)) => {}
                    _ => {
                        self.log.insert(
                            pvalue.slot,
                            LogEntry::Accepted { ballot: pvalue.ballot, value: pvalue.value.clone() },
                        );
                    }
                }
            }
            Record::Decided { slot, value } => {
                if self.snapshot.as_ref().is_none_or(|s| *slot > s.last_slot) {
                    self.log.insert(*slot, LogEntry::Decided(value.clone()));
                }
            }
            Record::Identity { node, dir_id } => {
                self.identities.insert(*node, *dir_id);
            }
        }
    }
}
