//! The Replica (PMMC §3, Fig. 2): it learns decisions, applies them to the state machine
//! strictly in slot order, and keeps the client sessions that make every command apply
//! exactly once (TigerBeetle's client sessions; Raft thesis §6.3).
//!
//! In PMMC the replica also assigns client commands to slots; here the leader does that
//! (batching), and the [`crate::requester`] tracks what this node's clients wait for.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::effects::Rejection;
use crate::snapshot::Snapshot;
use crate::state_machine::{SnapshotError, StateMachine};
use crate::types::{ClientId, Command, Slot, Value, EPHEMERAL_CLIENT_BIT};

/// What applying one command of a decided batch produced.
#[derive(Debug)]
pub struct AppliedCommand<O> {
    pub slot: Slot,
    pub client_id: ClientId,
    pub seq: u64,
    pub result: Result<O, Rejection>,
}

/// One client's session: the last command applied for it and its output.
#[derive(Debug, Serialize, Deserialize)]
struct Session<O> {
    seq: u64,
    output: O,
    last_slot: Slot,
}

/// Exactly-once bookkeeping. Bounded: past `sessions_max` the least recently used session
/// is evicted, chosen by slot so that every replica evicts the same one.
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
    /// sessions to the same bytes).
    pub fn encode(&self) -> Vec<u8>
    where
        O: Serialize,
    {
        let mut entries: Vec<(&ClientId, &Session<O>)> = self.by_client.iter().collect();
        entries.sort_by_key(|(client, _)| **client);
        postcard::to_allocvec(&entries).expect("sessions always encode")
    }

    /// Replaces the table with one from a snapshot.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError>
    where
        O: DeserializeOwned,
    {
        let entries: Vec<(ClientId, Session<O>)> =
            postcard::from_bytes(bytes).map_err(|e| SnapshotError(format!("sessions: {e}")))?;
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

    /// Applies `command` through `apply` unless its session already saw it.
    pub fn apply<C>(
        &mut self,
        slot: Slot,
        command: &Command<C>,
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
                return Ok(session.output.clone()); // A retry: the cached reply.
            }
        }
        let output = apply(&command.op);
        let session = Session { seq: command.seq, output: output.clone(), last_slot: slot };
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
}

/// What a replica made of a decision (see [`Replica::on_decision`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Learned<C> {
    New,
    Known,
    Conflict(Value<C>),
}

impl<S: StateMachine> Replica<S> {
    pub fn new(state_machine: S, sessions_max: usize) -> Self {
        Replica {
            state_machine,
            decisions: BTreeMap::new(),
            slot_out: 0,
            compacted_upto: 0,
            sessions: Sessions::new(sessions_max),
        }
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

    /// Applies every decided slot from `slot_out` on, in order (PMMC's `perform`).
    pub fn apply_decided(&mut self, applied: &mut Vec<AppliedCommand<S::Output>>) {
        while let Some(value) = self.decisions.get(&self.slot_out) {
            let slot = self.slot_out;
            for command in value.commands() {
                let state_machine = &mut self.state_machine;
                let result = self.sessions.apply(slot, command, |op| state_machine.apply(op));
                applied.push(AppliedCommand { slot, client_id: command.client_id, seq: command.seq, result });
            }
            self.slot_out += 1;
        }
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
        self.slot_out = snapshot.slot_out();
        self.decisions = self.decisions.split_off(&self.slot_out);
        self.compacted_upto = self.slot_out;
        Ok(())
    }

    /// Up to `max` consecutive decided values from `from` on, for a lagging peer.
    pub fn decisions_for_catch_up(&self, from: Slot, max: usize) -> Vec<Value<S::Command>> {
        let mut values = Vec::new();
        for (slot, value) in self.decisions.range(from..).take(max) {
            if *slot != from + values.len() as u64 {
                break;
            }
            values.push(value.clone());
        }
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::kv::{KvCommand, KvStore};

    fn put(client_id: ClientId, seq: u64, key: &str) -> Command<KvCommand> {
        Command { client_id, seq, op: KvCommand::Put { key: key.into(), value: b"v".to_vec() } }
    }

    #[test]
    fn replica_applies_decisions_in_slot_order_only() {
        let mut replica = Replica::new(KvStore::default(), 100);
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
        let mut replica = Replica::new(KvStore::default(), 100);
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
}
