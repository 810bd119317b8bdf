//! The Leader (PMMC §3, Fig. 4; Multi-Paxos as in §4.1): it owns a ballot, runs a
//! [`Scout`] for phase 1 once per configuration it proposes in, then one [`Commander`] per
//! slot. While active it needs no further phase 1: a stable leader decides a slot in one
//! round trip.
//!
//! Proposals are batched (every queued command that fits goes into the next slot) and
//! pipelined: only slots below `slot_out + window_slots` are ever proposed in, where
//! `slot_out` is this node's first undecided slot. That bound is what tells the leader the
//! configuration of every slot it proposes in (see `membership`): the values phase 1
//! reported are re-proposed in slot order as the window moves (PMMC's `adopted`, spread
//! over the window), and a slot governed by a configuration whose voters have not promised
//! this ballot yet waits for a scout of that configuration.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::commander::Commander;
use crate::effects::Envelope;
use crate::membership::Membership;
use crate::message::Message;
use crate::scout::{Adopted, Reported, Scout, ScoutEvent};
use crate::state_machine::{encoded_len, Payload};
use crate::types::{Ballot, Command, Configuration, NodeId, PValue, Slot, Time, Value};

/// Encoded bytes of client commands in one batch at most. The count bound alone lets 512
/// commands of a few MiB each make an Accept no frame can carry (`wire::FRAME_BYTES_MAX`);
/// a quarter of a frame leaves room for the message around it. The first command always
/// goes: one command fits (the state machine bounds it, e.g. `kv::COMMAND_BYTES_MAX`).
pub const BATCH_BYTES_MAX: usize = crate::wire::FRAME_BYTES_MAX / 4;

/// How many commands from the front of `commands` make the next batch (or forwarded
/// chunk): at most `count_max`, and no more than `BATCH_BYTES_MAX` encoded bytes unless
/// it is the first.
pub(crate) fn batch_len<'a, C: Payload>(
    commands: impl IntoIterator<Item = &'a Command<C>>,
    count_max: usize,
) -> usize {
    let mut bytes = 0;
    let mut take = 0;
    for command in commands.into_iter().take(count_max) {
        bytes += encoded_len(command);
        if take > 0 && bytes > BATCH_BYTES_MAX {
            break;
        }
        take += 1;
    }
    take
}

/// A p1b as the leader receives it.
#[derive(Debug)]
pub struct Promise<C> {
    pub from: NodeId,
    pub ballot: Ballot,
    pub decided_upto: Slot,
    pub accepted: Vec<PValue<C>>,
    pub decided: Vec<(Slot, Value<C>)>,
}

/// What the node learns from the leader after a message.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaderEvent<C> {
    Nothing,
    /// Phase 1 finished for the leadership's first configuration: the leader is active.
    /// Catch up on the decided prefix from `ahead` if the leader's replica lags behind
    /// `decided_upto`.
    Adopted {
        decided_upto: Slot,
        ahead: Option<NodeId>,
    },
    /// A slot was decided: tell every replica.
    Decided {
        slot: Slot,
        value: Value<C>,
    },
    /// Someone promised a higher ballot: this leadership is over.
    Preempted(Ballot),
}

/// Where the leader stands in the log, and the limits it proposes within.
#[derive(Clone, Copy, Debug)]
pub struct Window<'a> {
    /// This node's first undecided slot.
    pub slot_out: Slot,
    pub window_slots: u64,
    pub batch_commands_max: usize,
    pub membership: &'a Membership,
    /// The planted `small-quorum` bug: N/2 acceptors make a quorum.
    pub small_quorum: bool,
}

impl Window<'_> {
    fn quorum(&self, config: &Configuration) -> usize {
        if self.small_quorum {
            (config.voters.len() / 2).max(1)
        } else {
            config.quorum()
        }
    }
}

#[derive(Debug)]
pub struct Leader<C> {
    ballot: Ballot,
    active: bool,
    scout: Option<Scout<C>>,
    /// The epochs whose voters promised `ballot`: phase 1 is done in those configurations.
    prepared: BTreeSet<u64>,
    /// The planted `stale-ballot` bug: propose without any phase 1.
    unprepared: bool,
    commanders: BTreeMap<Slot, Commander<C>>,
    /// Values phase 1 reported for slots not proposed in yet, re-proposed in slot order.
    reproposals: BTreeMap<Slot, Reported<C>>,
    /// Every slot below this has had a commander under this ballot, or is decided.
    proposed_upto: Slot,
    /// Slots below this are proposed in even without client commands: phase 1 reported
    /// a value at or beyond them (holes get no-ops), or a slot must be closed.
    fill_upto: Slot,
    /// A configuration change to propose in the next free slot, before any command; and
    /// the slot it went into, until decided (one change at a time: `membership`).
    reconfiguration: Option<Configuration>,
    reconfiguring_at: Option<Slot>,
    /// A leadership transfer is under way: no new commands are proposed (they wait).
    paused: bool,
    /// Client commands waiting for a slot.
    queue: VecDeque<Command<C>>,
    queue_max: usize,
    /// This node led before; the planted `stale_ballot` bug then skips phase 1.
    led_before: bool,
    batches_proposed: u64,
    commands_proposed: u64,
}

impl<C: Payload> Leader<C> {
    pub fn new(queue_max: usize) -> Self {
        Leader {
            ballot: Ballot::ZERO,
            active: false,
            scout: None,
            prepared: BTreeSet::new(),
            unprepared: false,
            commanders: BTreeMap::new(),
            reproposals: BTreeMap::new(),
            proposed_upto: 0,
            fill_upto: 0,
            reconfiguration: None,
            reconfiguring_at: None,
            paused: false,
            queue: VecDeque::new(),
            queue_max,
            led_before: false,
            batches_proposed: 0,
            commands_proposed: 0,
        }
    }

    /// Client batches proposed since this node started, and the commands in them.
    pub fn batches_proposed(&self) -> u64 {
        self.batches_proposed
    }
    pub fn commands_proposed(&self) -> u64 {
        self.commands_proposed
    }

    pub fn ballot(&self) -> Ballot {
        self.ballot
    }
    pub fn is_active(&self) -> bool {
        self.active
    }
    pub fn is_leading(&self) -> bool {
        self.active || self.scout.is_some()
    }
    pub fn led_before(&self) -> bool {
        self.led_before
    }
    /// The slot the next batch goes into: every command proposed so far, and every value
    /// phase 1 reported, is below it (the read index of a lease read).
    pub fn next_slot(&self) -> Slot {
        self.proposed_upto.max(self.fill_upto)
    }
    pub fn in_flight(&self) -> usize {
        self.commanders.len()
    }
    /// The highest slot a commander works on, if any.
    pub fn highest_in_flight(&self) -> Option<Slot> {
        self.commanders.keys().next_back().copied()
    }
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Proposes `next` in the next free slot, before any command.
    pub fn reconfigure(&mut self, next: Configuration) {
        assert!(self.active && !self.reconfiguring(), "one change at a time, at an active leader");
        self.reconfiguration = Some(next);
    }

    /// A change waits for its slot, or was proposed and is not decided yet.
    pub fn reconfiguring(&self) -> bool {
        self.reconfiguration.is_some() || self.reconfiguring_at.is_some()
    }

    /// While a leadership transfer is under way, no new commands are proposed.
    pub fn pause(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Phase 1 for `ballot`, from slot `from_slot` on, with the voters of the configuration
    /// that governs it.
    pub fn start(&mut self, ballot: Ballot, window: &Window<'_>, now: Time, out: &mut Vec<Envelope<C>>) {
        assert!(ballot > self.ballot, "a new leadership needs a higher ballot");
        self.step_down();
        self.ballot = ballot;
        self.proposed_upto = window.slot_out;
        self.fill_upto = window.slot_out;
        self.start_scout(window.slot_out, window, now, out);
    }

    fn start_scout(&mut self, from_slot: Slot, window: &Window<'_>, now: Time, out: &mut Vec<Envelope<C>>) {
        let config = window.membership.for_slot(from_slot);
        let (ballot, quorum) = (self.ballot, window.quorum(config));
        let scout = Scout::new(ballot, from_slot, config.epoch, &config.voters, quorum, now);
        for to in scout.waitfor() {
            out.push(Envelope { to, message: Message::Prepare { ballot, from_slot } });
        }
        self.scout = Some(scout);
    }

    /// The planted `stale_ballot` bug: become active without phase 1.
    pub fn start_without_phase1(&mut self, ballot: Ballot, from_slot: Slot) {
        self.step_down();
        self.ballot = ballot;
        self.active = true;
        self.unprepared = true;
        self.led_before = true;
        self.proposed_upto = from_slot;
        self.fill_upto = from_slot;
    }

    /// Stops leading: drops the scout, the commanders, the reported values and the queue
    /// (the requesters resend what their clients still wait for).
    pub fn step_down(&mut self) {
        self.active = false;
        self.unprepared = false;
        self.scout = None;
        self.prepared.clear();
        self.commanders.clear();
        self.reproposals.clear();
        self.reconfiguration = None;
        self.reconfiguring_at = None;
        self.paused = false;
        self.queue.clear();
    }

    /// Queues a client command; false if the queue is full (the requester will retry).
    pub fn enqueue(&mut self, command: Command<C>) -> bool {
        if !self.active || self.queue.len() >= self.queue_max {
            return false;
        }
        self.queue.push_back(command);
        true
    }

    /// p1b for our scout.
    pub fn on_promise(&mut self, promise: Promise<C>, window: &Window<'_>) -> LeaderEvent<C> {
        let Some(scout) = self.scout.as_mut().filter(|s| s.ballot == promise.ballot) else {
            return LeaderEvent::Nothing; // A promise for an older phase 1.
        };
        match scout.on_promise(promise.from, promise.decided_upto, promise.accepted, promise.decided) {
            ScoutEvent::Waiting => LeaderEvent::Nothing,
            ScoutEvent::Preempted(b) => self.preempted(b),
            ScoutEvent::Adopted(adopted) => self.adopt(adopted, window),
        }
    }

    /// PMMC's `adopted`: what the promisers reported becomes the values this ballot
    /// re-proposes, slot by slot, with no-ops in the holes (§3.3). The merge keeps, per
    /// slot, the strongest report of every scout of this ballot (a decision, else the
    /// highest ballot; see `membership` for why reports from another configuration's
    /// voters may be counted too).
    fn adopt(&mut self, adopted: Adopted<C>, window: &Window<'_>) -> LeaderEvent<C> {
        assert_eq!(adopted.ballot, self.ballot);
        let first = !self.active;
        self.scout = None;
        self.active = true;
        self.led_before = true;
        self.prepared.insert(adopted.epoch);
        if let Some(last) = adopted.proposals.keys().next_back() {
            self.fill_upto = self.fill_upto.max(last + 1);
        }
        for (slot, reported) in adopted.proposals {
            match self.reproposals.get(&slot) {
                Some(held) if held.rank >= reported.rank => {}
                _ if slot < self.proposed_upto => {} // Proposed in under this ballot already.
                _ => {
                    self.reproposals.insert(slot, reported);
                }
            }
        }
        let floor = adopted.decided_upto.max(window.slot_out);
        self.fill_upto = self.fill_upto.max(floor);
        self.proposed_upto = self.proposed_upto.max(floor);
        self.reproposals = self.reproposals.split_off(&self.proposed_upto);
        if first {
            LeaderEvent::Adopted { decided_upto: adopted.decided_upto, ahead: adopted.ahead }
        } else {
            LeaderEvent::Nothing
        }
    }

    /// Phase 2 for `value` in `slot`, with the voters of the configuration that governs it.
    /// `decided_upto` (our replica's applied prefix) rides along so that lagging acceptors
    /// notice and catch up.
    fn spawn_commander(
        &mut self,
        slot: Slot,
        value: Value<C>,
        window: &Window<'_>,
        now: Time,
        out: &mut Vec<Envelope<C>>,
    ) {
        let config = window.membership.for_slot(slot);
        let pvalue = PValue { ballot: self.ballot, slot, value };
        let commander = Commander::new(pvalue, &config.voters, window.quorum(config), now);
        let decided_upto = window.slot_out;
        for to in commander.waitfor() {
            out.push(Envelope {
                to,
                message: Message::Accept { pvalue: commander.pvalue.clone(), decided_upto },
            });
        }
        let previous = self.commanders.insert(slot, commander);
        assert!(previous.is_none(), "two commanders for slot {slot} under one ballot");
    }

    /// Fills free slots of the window, in slot order: the values phase 1 reported (no-ops
    /// in their holes) first, then batches of queued commands. A slot that `is_decided`
    /// already needs no commander. A slot of a configuration whose voters have not promised
    /// this ballot waits for the scout this starts.
    pub fn propose(
        &mut self,
        window: &Window<'_>,
        is_decided: impl Fn(Slot) -> bool,
        now: Time,
        out: &mut Vec<Envelope<C>>,
    ) {
        if !self.active {
            return;
        }
        self.proposed_upto = self.proposed_upto.max(window.slot_out);
        let end = window.slot_out + window.window_slots;
        while self.proposed_upto < end {
            let slot = self.proposed_upto;
            let epoch = window.membership.for_slot(slot).epoch;
            if !self.unprepared && !self.prepared.contains(&epoch) {
                if self.scout.is_none() {
                    self.start_scout(slot, window, now, out);
                }
                return;
            }
            let value = if is_decided(slot) {
                self.reproposals.remove(&slot);
                None
            } else if slot < self.fill_upto {
                Some(self.reproposals.remove(&slot).map_or(Value::Noop, |r| r.value))
            } else if let Some(next) = self.reconfiguration.take() {
                self.reconfiguring_at = Some(slot);
                Some(Value::Reconfigure(next))
            } else if !self.queue.is_empty() && !self.paused {
                let take = batch_len(&self.queue, window.batch_commands_max);
                let batch: Vec<_> = self.queue.drain(..take).collect();
                self.batches_proposed += 1;
                self.commands_proposed += batch.len() as u64;
                Some(Value::Batch(batch))
            } else {
                return;
            };
            self.proposed_upto += 1;
            if let Some(value) = value {
                self.spawn_commander(slot, value, window, now, out);
            }
        }
    }

    /// Slots below `slot` must be closed even without client commands: an acceptor
    /// reports a vote there that this leader never proposed (cast for an earlier ballot by
    /// an acceptor outside our phase-1 quorum, so not chosen: left open it would hold the
    /// log's horizon, which a recovering node waits for), or a configuration change must
    /// come into effect (`membership`). No-ops fill them, within the window, as the holes
    /// of phase 1 are filled.
    pub fn fill_to(&mut self, slot: Slot) {
        if self.active {
            self.fill_upto = self.fill_upto.max(slot);
        }
    }

    pub fn on_accepted(&mut self, from: NodeId, ballot: Ballot, slot: Slot) -> LeaderEvent<C> {
        if ballot != self.ballot || !self.active {
            return LeaderEvent::Nothing;
        }
        let Some(commander) = self.commanders.get_mut(&slot) else {
            return LeaderEvent::Nothing; // Already decided.
        };
        if !commander.on_accepted(from) {
            return LeaderEvent::Nothing;
        }
        let commander = self.commanders.remove(&slot).expect("present");
        LeaderEvent::Decided { slot, value: commander.pvalue.value }
    }

    /// An acceptor refused `ballot` for `promised`.
    pub fn on_nack(&mut self, ballot: Ballot, promised: Ballot) -> LeaderEvent<C> {
        if ballot != self.ballot || !self.is_leading() || promised <= self.ballot {
            return LeaderEvent::Nothing;
        }
        self.preempted(promised)
    }

    fn preempted(&mut self, promised: Ballot) -> LeaderEvent<C> {
        self.step_down();
        LeaderEvent::Preempted(promised)
    }

    /// A slot was decided (by us or a leader before us): its commander is done.
    pub fn on_decided(&mut self, slot: Slot) {
        self.commanders.remove(&slot);
        self.reproposals.remove(&slot);
        if self.reconfiguring_at == Some(slot) {
            self.reconfiguring_at = None;
        }
    }

    /// Resends Prepare and Accept to acceptors that have not answered for `retransmit_us`
    /// (turning fair-loss links into stubborn ones: Cachin et al., §2.4.3). `decided_upto`
    /// rides along.
    pub fn retransmit(
        &mut self,
        now: Time,
        retransmit_us: u64,
        decided_upto: Slot,
        out: &mut Vec<Envelope<C>>,
    ) {
        if let Some(scout) = self.scout.as_mut() {
            if now.saturating_sub(scout.last_sent) >= retransmit_us {
                scout.last_sent = now;
                for to in scout.waitfor() {
                    out.push(Envelope {
                        to,
                        message: Message::Prepare { ballot: scout.ballot, from_slot: scout.from_slot },
                    });
                }
            }
        }
        for commander in self.commanders.values_mut() {
            if now.saturating_sub(commander.last_sent) >= retransmit_us {
                commander.last_sent = now;
                for to in commander.waitfor() {
                    out.push(Envelope {
                        to,
                        message: Message::Accept { pvalue: commander.pvalue.clone(), decided_upto },
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::kv::KvCommand;

    fn put(seq: u64, value_bytes: usize) -> Command<KvCommand> {
        Command {
            client_id: 1,
            seq,
            op: KvCommand::Put { key: seq.to_be_bytes().to_vec(), value: vec![7; value_bytes] },
        }
    }

    #[test]
    fn a_batch_is_bounded_in_commands_and_in_bytes_and_always_takes_one() {
        let small: VecDeque<_> = (0..100).map(|i| put(i, 10)).collect();
        assert_eq!(batch_len(&small, 512), 100);
        assert_eq!(batch_len(&small, 7), 7);
        let large: VecDeque<_> = (0..100).map(|i| put(i, 1 << 20)).collect();
        let take = batch_len(&large, 512);
        assert!((1..100).contains(&take), "{take} commands of 1 MiB");
        let bytes: usize = large.iter().take(take).map(encoded_len).sum();
        assert!(bytes <= BATCH_BYTES_MAX, "{bytes} bytes");
        let huge: VecDeque<_> = (0..3).map(|i| put(i, BATCH_BYTES_MAX)).collect();
        assert_eq!(batch_len(&huge, 512), 1, "a command over the bound still goes alone");
        assert_eq!(batch_len(&VecDeque::<Command<KvCommand>>::new(), 512), 0);
    }
}
