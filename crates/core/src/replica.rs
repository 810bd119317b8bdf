//! The Replica (PMMC §3, Fig. 2): it learns decisions, applies them to the state machine
//! strictly in slot order, and keeps the client sessions that make every command apply
//! exactly once (TigerBeetle's client sessions; Raft thesis §6.3).
//!
//! In PMMC the replica also assigns client commands to slots; here the leader does that
//! (batching), and the [`crate::requester`] tracks what this node's clients wait for.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hasher;

/// A catch-up batch of decisions is at most this many encoded bytes (half a frame, which
/// leaves room for the envelope), whatever `Options::catchup_batch_max` allows.
pub const CATCH_UP_BYTES_MAX: usize = crate::wire::FRAME_BYTES_MAX / 2;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::effects::Rejection;
use crate::membership::Membership;
use crate::snapshot::Snapshot;
use crate::state_machine::{Fnv64, SnapshotError, StateMachine};
use crate::types::{ClientId, Command, Slot, Value, EPHEMERAL_CLIENT_BIT};

/// What applying one command of a decided batch produced.
#[derive(Debug)]
pub struct AppliedCommand<O> {
    pub slot: Slot,
    pub client_id: ClientId,
    pub seq: u64,
    /// The [`command_digest`] of the command's operation: the requester answers a waiting
    /// client only if this is the command it sent under `(client_id, seq)`.
    pub digest: u64,
    pub result: Result<O, Rejection>,
}

/// A digest of a command's operation: FNV-1a (64 bit) over its postcard encoding.
///
/// A session keeps it beside the cached reply, so that a request under a `(client_id,
/// seq)` pair the session already used is recognised as a retry (same digest) or as a
/// different request (TigerBeetle answers `exists_with_different_*` there; we reject with
/// [`Rejection::SessionConflict`]). It must be the same on every replica, in every process
/// and in every later version, because it is stored in snapshots and decides what a
/// command does: hence postcard (whose wire format is stable across its 1.x releases, and
/// whose enum tags are the declaration order the log format already freezes) and FNV-1a
/// (fully specified), never std's `DefaultHasher`, whose algorithm may change.
///
/// Not cryptographic: a client that crafts two of its own requests with the same digest
/// gets the first one's reply for the second; it can confuse nobody but itself, since the
/// pair is its own session.
pub fn command_digest<C: Serialize>(op: &C) -> u64 {
    /// Feeds postcard's output straight into the hash: no buffer per command.
    struct Digest(Fnv64);
    impl Extend<u8> for Digest {
        fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
            for byte in bytes {
                self.0.write_u8(byte);
            }
        }
    }
    postcard::to_extend(op, Digest(Fnv64::default())).expect("a command always encodes").0.finish()
}

/// One client's session: the last command applied for it, its digest and its output.
#[derive(Debug, Serialize, Deserialize)]
struct Session<O> {
    seq: u64,
    /// The [`command_digest`] of the command applied under `seq`. `None` only for a
    /// session restored from a version-1 table, which did not record it (see
    /// [`Sessions::restore`]).
    digest: Option<u64>,
    output: O,
    last_slot: Slot,
}

/// A session as version 1 of the table encoded it (before digests): read, never written.
#[derive(Debug, Serialize, Deserialize)]
struct SessionV1<O> {
    seq: u64,
    output: O,
    last_slot: Slot,
}

/// The first bytes of every session table from version 2 on, followed by one version
/// byte. Version 1 was the bare postcard encoding of the entries, which begins with their
/// count as a varint; these nine bytes followed by a version byte of 2 or more are not a
/// valid varint (they would need a tenth byte of at most 1), so no version-1 table begins
/// with them, and a version-1 reader refuses a newer table instead of misreading it.
const SESSIONS_TAG: [u8; 9] = [0xFF; 9];

/// The session table's encoding version written by [`Sessions::encode`].
const SESSIONS_VERSION: u8 = 2;

/// Exactly-once bookkeeping. Bounded: past `sessions_max` the least recently used session
/// is evicted, chosen by slot so that every replica evicts the same one.
///
/// A `(client_id, seq)` pair names one request. Its first application is cached with the
/// command's digest; the same pair again with the same digest is a retry and gets the
/// cached reply; the same pair with another digest is [`Rejection::SessionConflict`].
/// Every replica applies the same log to the same table, so every replica decides alike.
#[derive(Debug)]
pub struct Sessions<O> {
    by_client: HashMap<ClientId, Session<O>>,
    by_age: BTreeSet<(Slot, ClientId)>,
    sessions_max: usize,
}

impl<O: Clone> Sessions<O> {
    pub fn new(sessions_max: usize) -> Self {
        Sessions { by_client: HashMap::new(), by_age: BTreeSet::new(), sessions_max }
    }

    /// The table for a snapshot, in a canonical order (every replica encodes the same
    /// sessions to the same bytes): [`SESSIONS_TAG`], the version byte (2), then the
    /// postcard encoding of the `(client, session)` entries sorted by client, each session
    /// being its `seq`, its command digest (an option, see [`Sessions::restore`]), its
    /// output and the slot it was last applied in.
    pub fn encode(&self) -> Vec<u8>
    where
        O: Serialize,
    {
        let mut entries: Vec<(&ClientId, &Session<O>)> = self.by_client.iter().collect();
        entries.sort_by_key(|(client, _)| **client);
        let mut bytes = SESSIONS_TAG.to_vec();
        bytes.push(SESSIONS_VERSION);
        postcard::to_extend(&entries, bytes).expect("sessions always encode")
    }

    /// Replaces the table with one from a snapshot.
    ///
    /// A version-1 table (written before sessions kept digests) is read, not refused, so
    /// that a node restarts from its own checkpoint after an upgrade: its sessions get an
    /// unknown digest, and a request under such a session's last pair is taken for a
    /// retry and answered with the cached reply, as version 1 did. That lasts only until
    /// the client's next sequence number, and only for replicas that restored the old
    /// table: one that applied the command itself knows its digest and answers
    /// `SessionConflict` instead. The state is the same either way (neither applies the
    /// request); only that one reply differs. A table of a version newer than this code
    /// knows is refused.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError>
    where
        O: DeserializeOwned,
    {
        let entries: Vec<(ClientId, Session<O>)> = match bytes.strip_prefix(&SESSIONS_TAG[..]) {
            Some([SESSIONS_VERSION, rest @ ..]) => {
                let (entries, trailing) =
                    postcard::take_from_bytes(rest).map_err(|e| SnapshotError(format!("sessions: {e}")))?;
                if !trailing.is_empty() {
                    return Err(SnapshotError(format!("sessions: {} trailing bytes", trailing.len())));
                }
                entries
            }
            Some([version, ..]) => {
                return Err(SnapshotError(format!(
                    "sessions: encoding version {version} is not {SESSIONS_VERSION} (a newer Synod wrote it)"
                )))
            }
            Some([]) => return Err(SnapshotError("sessions: no version after the tag".into())),
            None => {
                let entries: Vec<(ClientId, SessionV1<O>)> = postcard::from_bytes(bytes)
                    .map_err(|e| SnapshotError(format!("sessions (version 1): {e}")))?;
                entries
                    .into_iter()
                    .map(|(client, s)| {
                        (
                            client,
                            Session { seq: s.seq, digest: None, output: s.output, last_slot: s.last_slot },
                        )
                    })
                    .collect()
            }
        };
        self.by_client.clear();
        self.by_age.clear();
        for (client, session) in entries {
            self.by_age.insert((session.last_slot, client));
            self.by_client.insert(client, session);
        }
        if self.by_client.len() > self.sessions_max {
            return Err(SnapshotError(format!(
                "{} sessions exceed sessions_max {}",
                self.by_client.len(),
                self.sessions_max
            )));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// Applies `command` through `apply` unless its session already saw its pair: then it
    /// is a retry (the cached reply) or a different request under a used pair (a
    /// conflict, nothing applied).
    pub fn apply<C: Serialize>(
        &mut self,
        slot: Slot,
        command: &Command<C>,
        apply: impl FnOnce(&C) -> O,
    ) -> Result<O, Rejection> {
        self.apply_digested(slot, command, command_digest(&command.op), apply)
    }

    /// [`Sessions::apply`] with the command's digest already computed.
    pub(crate) fn apply_digested<C>(
        &mut self,
        slot: Slot,
        command: &Command<C>,
        digest: u64,
        apply: impl FnOnce(&C) -> O,
    ) -> Result<O, Rejection> {
        if command.client_id & EPHEMERAL_CLIENT_BIT != 0 {
            return Ok(apply(&command.op));
        }
        if let Some(session) = self.by_client.get(&command.client_id) {
            if command.seq < session.seq {
                return Err(Rejection::SessionExpired);
            }
            if command.seq == session.seq {
                return match session.digest {
                    // Another request under a pair already used: answering with the cached
                    // reply would acknowledge a write that never happened (and hand the
                    // caller an output of another kind). Nothing is applied, and the session
                    // keeps the first request's reply for its retries.
                    Some(first) if first != digest => Err(Rejection::SessionConflict),
                    // A retry: the cached reply. (An unknown digest, from a version-1
                    // table, is taken for a retry; see `restore`.)
                    _ => Ok(session.output.clone()),
                };
            }
        }
        let output = apply(&command.op);
        let session =
            Session { seq: command.seq, digest: Some(digest), output: output.clone(), last_slot: slot };
        if let Some(old) = self.by_client.insert(command.client_id, session) {
            self.by_age.remove(&(old.last_slot, command.client_id));
        }
        self.by_age.insert((slot, command.client_id));
        while self.by_client.len() > self.sessions_max {
            let oldest = self.by_age.pop_first().expect("sessions and their index agree");
            self.by_client.remove(&oldest.1);
        }
        assert_eq!(self.by_client.len(), self.by_age.len());
        Ok(output)
    }
}

pub struct Replica<S: StateMachine> {
    state_machine: S,
    /// Decided values not yet compacted. Slots below `slot_out` are applied; slots at or
    /// above it are decisions that arrived out of order.
    decisions: BTreeMap<Slot, Value<S::Command>>,
    /// The next slot to apply: every slot below it is decided and applied.
    slot_out: Slot,
    /// Decisions below this slot are compacted away (in a snapshot): a peer that needs
    /// them gets a snapshot instead.
    compacted_upto: Slot,
    sessions: Sessions<S::Output>,
    /// The configurations from `slot_out` on: a decided `Reconfigure` is applied here, in
    /// slot order, like a command (PMMC §3.4; see `membership`).
    membership: Membership,
    /// Slots between a configuration's decision and its first slot (`ALPHA`).
    alpha: Slot,
}

/// What a replica made of a decision (see [`Replica::on_decision`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Learned<C> {
    New,
    Known,
    Conflict(Value<C>),
}

impl<S: StateMachine> Replica<S> {
    pub fn new(state_machine: S, sessions_max: usize, membership: Membership) -> Self {
        Replica {
            state_machine,
            decisions: BTreeMap::new(),
            slot_out: 0,
            compacted_upto: 0,
            sessions: Sessions::new(sessions_max),
            membership,
            alpha: crate::membership::ALPHA,
        }
    }

    /// The planted `reconfig-at-once` bug only: a configuration governs from the slot
    /// after its decision, although leaders propose a window ahead.
    #[doc(hidden)]
    pub fn set_alpha(&mut self, alpha: Slot) {
        self.alpha = alpha;
    }

    /// The configurations that govern slots from the applied prefix on.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    pub fn state_machine(&self) -> &S {
        &self.state_machine
    }

    /// Every slot below this is decided and applied.
    pub fn slot_out(&self) -> Slot {
        self.slot_out
    }

    pub fn sessions(&self) -> &Sessions<S::Output> {
        &self.sessions
    }

    pub fn is_decided(&self, slot: Slot) -> bool {
        self.decisions.contains_key(&slot)
    }

    /// Learns a decision. A slot known decided with the same value is `Known`; with
    /// another value it is a `Conflict` carrying the value this replica holds (two values
    /// decided for one slot: the caller decides whether that is a broken invariant of its
    /// own or a peer's false claim). Slots compacted into a snapshot count as known.
    pub fn on_decision(&mut self, slot: Slot, value: Value<S::Command>) -> Learned<S::Command> {
        match self.decisions.get(&slot) {
            Some(existing) if *existing == value => Learned::Known,
            Some(existing) => Learned::Conflict(existing.clone()),
            None if slot < self.slot_out => Learned::Known,
            None => {
                self.decisions.insert(slot, value);
                Learned::New
            }
        }
    }

    /// Applies every decided slot from `slot_out` on, in order (PMMC's `perform`). Returns
    /// whether a configuration change was among them.
    pub fn apply_decided(&mut self, applied: &mut Vec<AppliedCommand<S::Output>>) -> bool {
        let mut reconfigured = false;
        while let Some(value) = self.decisions.get(&self.slot_out) {
            let slot = self.slot_out;
            if let Value::Reconfigure(next) = value {
                reconfigured |= self.membership.on_applied(slot, next, self.alpha);
            }
            for command in value.commands() {
                let state_machine = &mut self.state_machine;
                let digest = command_digest(&command.op);
                let result =
                    self.sessions.apply_digested(slot, command, digest, |op| state_machine.apply(op));
                applied.push(AppliedCommand {
                    slot,
                    client_id: command.client_id,
                    seq: command.seq,
                    digest,
                    result,
                });
            }
            self.slot_out += 1;
        }
        self.membership.forget_before(self.slot_out);
        reconfigured
    }

    /// Decisions at or above `from` that arrived ahead of the applied prefix: what this
    /// node reports as decided in a Promise.
    pub fn decided_from(&self, from: Slot) -> Vec<(Slot, Value<S::Command>)> {
        self.decisions.range(from.max(self.slot_out)..).map(|(s, v)| (*s, v.clone())).collect()
    }

    /// Decisions below this slot were compacted into a snapshot.
    pub fn compacted_upto(&self) -> Slot {
        self.compacted_upto
    }

    /// The applied state as a snapshot through `slot_out - 1`.
    pub fn snapshot(&self) -> Snapshot {
        assert!(self.slot_out > 0, "nothing applied: no snapshot");
        Snapshot {
            last_slot: self.slot_out - 1,
            state: self.state_machine.snapshot(),
            sessions: self.sessions.encode(),
            membership: self.membership.clone(),
        }
    }

    /// Drops decided values below `slot` (already applied and in a snapshot).
    pub fn compact_below(&mut self, slot: Slot) {
        let slot = slot.min(self.slot_out);
        if slot <= self.compacted_upto {
            return;
        }
        self.decisions = self.decisions.split_off(&slot);
        self.compacted_upto = slot;
    }

    /// Replaces the applied state with `snapshot` (state transfer, or a restart from a
    /// checkpoint). Decisions it covers are dropped; later ones stay for `apply_decided`.
    /// An error leaves the replica as it was: the sessions are decoded aside first, and
    /// a state machine's `restore` keeps its state on error.
    pub fn install(&mut self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        assert!(snapshot.slot_out() > self.slot_out, "installing a snapshot that is not newer");
        let mut sessions = Sessions::new(self.sessions.sessions_max);
        sessions.restore(&snapshot.sessions)?;
        self.state_machine.restore(&snapshot.state)?;
        self.sessions = sessions;
        self.membership = snapshot.membership.clone();
        self.slot_out = snapshot.slot_out();
        self.decisions = self.decisions.split_off(&self.slot_out);
        self.compacted_upto = self.slot_out;
        Ok(())
    }

    /// Up to `max` consecutive decided values from `from` on, for a lagging peer.
    pub fn decisions_for_catch_up(&self, from: Slot, max: usize) -> Vec<Value<S::Command>> {
        let mut values = Vec::new();
        let mut bytes = 0;
        for (slot, value) in self.decisions.range(from..).take(max) {
            if *slot != from + values.len() as u64 {
                break;
            }
            // Bounded in bytes too: `max` values of large commands would not fit in one
            // frame (`wire::FRAME_BYTES_MAX`), and the sender would refuse to encode them.
            // The first value always goes (a value fits in a frame: it went out in an Accept).
            let size = crate::state_machine::encoded_len(value);
            if !values.is_empty() && bytes + size > CATCH_UP_BYTES_MAX {
                break;
            }
            bytes += size;
            values.push(value.clone());
        }
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Configuration, NodeId};

    fn test_membership() -> Membership {
        Membership::new(Configuration::new(vec![NodeId(1)]))
    }
    use crate::apps::kv::{KvCommand, KvOutput, KvStore};

    #[test]
    fn a_catch_up_batch_of_large_values_fits_in_a_frame() {
        let mut replica = Replica::new(KvStore::default(), 100, test_membership());
        let big = |seq| Command {
            client_id: 1,
            seq,
            op: KvCommand::Put { key: b"k".to_vec(), value: vec![7; 1 << 20] },
        };
        for slot in 0..40 {
            replica.on_decision(slot, Value::Batch(vec![big(slot + 1)]));
        }
        let values = replica.decisions_for_catch_up(0, 256);
        let bytes = postcard::to_allocvec(&values).unwrap().len();
        assert!(!values.is_empty() && values.len() < 40, "{} values", values.len());
        assert!(bytes <= CATCH_UP_BYTES_MAX + (2 << 20), "{bytes} bytes");
    }

    fn put(client_id: ClientId, seq: u64, key: &str) -> Command<KvCommand> {
        Command { client_id, seq, op: KvCommand::Put { key: key.into(), value: b"v".to_vec() } }
    }

    #[test]
    fn replica_applies_decisions_in_slot_order_only() {
        let mut replica = Replica::new(KvStore::default(), 100, test_membership());
        let mut applied = Vec::new();
        replica.on_decision(1, Value::Batch(vec![put(1, 1, "b")]));
        replica.apply_decided(&mut applied);
        assert!(applied.is_empty(), "slot 1 must wait for slot 0");
        replica.on_decision(0, Value::Noop);
        replica.apply_decided(&mut applied);
        assert_eq!(replica.slot_out(), 2);
        assert_eq!(applied.len(), 1);
    }

    #[test]
    fn retried_command_is_applied_once_and_gets_the_cached_reply() {
        let mut replica = Replica::new(KvStore::default(), 100, test_membership());
        let mut applied = Vec::new();
        replica.on_decision(0, Value::Batch(vec![put(7, 1, "a")]));
        replica.on_decision(1, Value::Batch(vec![put(7, 1, "a")]));
        replica.apply_decided(&mut applied);
        assert_eq!(applied.len(), 2);
        assert_eq!(applied[0].result, applied[1].result);
        let mut once = KvStore::default();
        once.apply(&put(7, 1, "a").op);
        assert_eq!(replica.state_machine().state_hash(), once.state_hash());
    }

    #[test]
    fn command_older_than_its_session_is_rejected_not_applied() {
        let mut sessions = Sessions::<u32>::new(10);
        let mut calls = 0;
        let mut apply = |_: &()| {
            calls += 1;
            calls
        };
        assert_eq!(sessions.apply(0, &Command { client_id: 1, seq: 2, op: () }, &mut apply), Ok(1));
        assert_eq!(
            sessions.apply(1, &Command { client_id: 1, seq: 1, op: () }, &mut apply),
            Err(Rejection::SessionExpired)
        );
    }

    #[test]
    fn ephemeral_clients_leave_no_session_behind() {
        let mut sessions = Sessions::<u32>::new(10);
        let command = Command { client_id: EPHEMERAL_CLIENT_BIT | 5, seq: 1, op: () };
        assert_eq!(sessions.apply(0, &command, |_| 1), Ok(1));
        assert_eq!(sessions.apply(1, &command, |_| 2), Ok(2), "not deduplicated: no session");
        assert!(sessions.is_empty());
    }

    #[test]
    fn sessions_evict_the_least_recently_used_client() {
        let mut sessions = Sessions::<u32>::new(2);
        for (slot, client) in [1u64, 2, 3].iter().enumerate() {
            let _ = sessions.apply(slot as u64, &Command { client_id: *client, seq: 1, op: () }, |_| 0);
        }
        assert_eq!(sessions.len(), 2);
        // Client 1 was evicted: its retry applies again.
        let mut applied = false;
        let _ = sessions.apply(9, &Command { client_id: 1, seq: 1, op: () }, |_| {
            applied = true;
            0
        });
        assert!(applied);
    }

    fn kv(client_id: ClientId, seq: u64, op: KvCommand) -> Command<KvCommand> {
        Command { client_id, seq, op }
    }

    fn put_value(key: &str, value: &str) -> KvCommand {
        KvCommand::Put { key: key.into(), value: value.as_bytes().to_vec() }
    }

    /// Applies `commands`, one slot each, from the replica's next slot on.
    fn apply_all(
        replica: &mut Replica<KvStore>,
        commands: Vec<Command<KvCommand>>,
    ) -> Vec<Result<KvOutput, Rejection>> {
        let mut applied = Vec::new();
        let first = replica.slot_out();
        for (slot, command) in (first..).zip(commands) {
            assert_eq!(replica.on_decision(slot, Value::Batch(vec![command])), Learned::New);
        }
        replica.apply_decided(&mut applied);
        applied.into_iter().map(|a| a.result).collect()
    }

    #[test]
    fn same_pair_same_command_gets_the_cached_reply_and_applies_once() {
        let mut replica = Replica::new(KvStore::default(), 100, test_membership());
        let results = apply_all(
            &mut replica,
            vec![
                kv(7, 1, put_value("a", "1")),
                kv(8, 1, put_value("a", "2")),
                // Client 7's retry, after client 8's write: still the first reply, and the
                // put is not applied again (a would be 1 again, not 2).
                kv(7, 1, put_value("a", "1")),
            ],
        );
        assert_eq!(results[0], Ok(KvOutput::Put { previous: None }));
        assert_eq!(results[2], results[0], "a retry gets the first reply");
        assert_eq!(
            replica.state_machine().read(&KvCommand::Get { key: b"a".to_vec() }),
            Some(KvOutput::Get { value: Some(b"2".to_vec()) })
        );
    }

    #[test]
    fn same_pair_different_command_is_a_conflict_and_changes_nothing() {
        let mut replica = Replica::new(KvStore::default(), 100, test_membership());
        let first = apply_all(&mut replica, vec![kv(99, 1, put_value("r1", "first"))]);
        let before = replica.state_machine().state_hash();
        let results = apply_all(
            &mut replica,
            vec![
                // A different value, then a different kind of command, under the same pair.
                kv(99, 1, put_value("r1", "second")),
                kv(99, 1, KvCommand::Delete { key: b"r1".to_vec() }),
                // The first request again is still a retry with the first reply.
                kv(99, 1, put_value("r1", "first")),
            ],
        );
        assert_eq!(results[0], Err(Rejection::SessionConflict));
        assert_eq!(results[1], Err(Rejection::SessionConflict));
        assert_eq!(results[2], first[0]);
        assert_eq!(replica.state_machine().state_hash(), before, "a conflict applies nothing");
        // The session moves on normally with the next sequence number.
        let next = apply_all(&mut replica, vec![kv(99, 2, KvCommand::Delete { key: b"r1".to_vec() })]);
        assert_eq!(next[0], Ok(KvOutput::Delete { previous: Some(b"first".to_vec()) }));
    }

    #[test]
    fn session_digests_survive_a_snapshot_round_trip() {
        let mut replica = Replica::new(KvStore::default(), 100, test_membership());
        let first = apply_all(&mut replica, vec![kv(99, 1, put_value("r1", "first"))]);
        let bytes = replica.snapshot().encode();
        let mut restored = Replica::new(KvStore::default(), 100, test_membership());
        restored.install(&Snapshot::decode(&bytes).unwrap()).unwrap();
        assert_eq!(restored.sessions().encode(), replica.sessions().encode());
        let before = restored.state_machine().state_hash();
        let results = apply_all(
            &mut restored,
            vec![kv(99, 1, put_value("r1", "second")), kv(99, 1, put_value("r1", "first"))],
        );
        assert_eq!(results, vec![Err(Rejection::SessionConflict), first[0].clone()]);
        assert_eq!(restored.state_machine().state_hash(), before);
    }

    #[test]
    fn a_version_1_session_table_is_read_with_unknown_digests() {
        // The bytes a version-1 node wrote: the bare entries, without tag or digests.
        let legacy: Vec<(ClientId, SessionV1<u32>)> = vec![
            (3, SessionV1 { seq: 4, output: 40, last_slot: 9 }),
            (5, SessionV1 { seq: 1, output: 10, last_slot: 2 }),
        ];
        let bytes = postcard::to_allocvec(&legacy).unwrap();
        let mut sessions = Sessions::<u32>::new(10);
        sessions.restore(&bytes).unwrap();
        assert_eq!(sessions.len(), 2);
        // The digest is unknown: the same pair is taken for a retry, whatever the command.
        assert_eq!(
            sessions.apply(10, &Command { client_id: 3, seq: 4, op: 1u8 }, |_| unreachable!()),
            Ok(40)
        );
        assert_eq!(
            sessions.apply(11, &Command { client_id: 3, seq: 3, op: 1u8 }, |_| 0),
            Err(Rejection::SessionExpired)
        );
        // Re-encoded in version 2, the unknown stays unknown (nothing is invented).
        let mut again = Sessions::<u32>::new(10);
        again.restore(&sessions.encode()).unwrap();
        assert_eq!(again.apply(12, &Command { client_id: 3, seq: 4, op: 2u8 }, |_| unreachable!()), Ok(40));
        // The next sequence number records a digest as usual.
        assert_eq!(again.apply(13, &Command { client_id: 3, seq: 5, op: 1u8 }, |_| 50), Ok(50));
        assert_eq!(
            again.apply(14, &Command { client_id: 3, seq: 5, op: 2u8 }, |_| 0),
            Err(Rejection::SessionConflict)
        );
    }

    #[test]
    fn a_version_1_reader_refuses_a_version_2_table_and_a_newer_version_is_refused() {
        let mut sessions = Sessions::<u32>::new(10);
        let _ = sessions.apply(0, &Command { client_id: 1, seq: 1, op: () }, |_| 7);
        let bytes = sessions.encode();
        assert!(postcard::from_bytes::<Vec<(ClientId, SessionV1<u32>)>>(&bytes).is_err());
        let mut newer = bytes.clone();
        newer[SESSIONS_TAG.len()] = SESSIONS_VERSION + 1;
        assert!(Sessions::<u32>::new(10).restore(&newer).is_err());
        let empty = Sessions::<u32>::new(10).encode();
        assert!(postcard::from_bytes::<Vec<(ClientId, SessionV1<u32>)>>(&empty).is_err());
    }

    #[test]
    fn the_command_digest_is_stable_across_processes_and_versions() {
        // Digests live in snapshots and decide what a command does, so they may never
        // change: this pins FNV-1a over postcard for one command of each kind.
        assert_eq!(command_digest(&()), 0xcbf2_9ce4_8422_2325, "FNV-1a of no bytes");
        let pinned = [
            command_digest(&put_value("r1", "first")),
            command_digest(&KvCommand::Delete { key: b"r1".to_vec() }),
        ];
        // Computed outside Rust from postcard's specification: Put is variant 1, then the
        // key and the value, each a varint length and its bytes; Delete is variant 2.
        assert_eq!(pinned, [0x40ae_321b_f7b5_87a0, 0x9f17_bf90_549a_01ec]);
        assert_ne!(command_digest(&put_value("r1", "first")), command_digest(&put_value("r1", "second")));
    }
}
