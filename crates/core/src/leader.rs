//! The Leader (PMMC §3, Fig. 4; Multi-Paxos as in §4.1): it owns a ballot, runs one
//! [`Scout`] for phase 1, then one [`Commander`] per slot it proposes in. While active it
//! needs no further phase 1: a stable leader decides a slot in one round trip.
//!
//! Proposals are batched (every queued command that fits goes into the next slot) and
//! pipelined (up to `window_slots` slots beyond the first undecided one are in flight).

use std::collections::{BTreeMap, VecDeque};

use crate::commander::Commander;
use crate::effects::Envelope;
use crate::message::Message;
use crate::scout::{Adopted, Scout, ScoutEvent};
use crate::state_machine::Payload;
use crate::types::{Ballot, Command, NodeId, PValue, Slot, Time, Value};

/// The leader's view of the cluster it proposes to.
#[derive(Clone, Debug)]
pub struct Acceptors {
    pub members: Vec<NodeId>,
    pub quorum: usize,
}

/// What the node learns from the leader after a message.
/// A p1b as the leader receives it.
#[derive(Debug)]
pub struct Promise<C> {
    pub from: NodeId,
    pub ballot: Ballot,
    pub decided_upto: Slot,
    pub accepted: Vec<PValue<C>>,
    pub decided: Vec<(Slot, Value<C>)>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum LeaderEvent<C> {
    Nothing,
    /// Phase 1 finished: the leader is active. Catch up on the decided prefix from
    /// `ahead` if the leader's replica lags behind `decided_upto`.
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

#[derive(Debug)]
pub struct Leader<C> {
    ballot: Ballot,
    active: bool,
    scout: Option<Scout<C>>,
    commanders: BTreeMap<Slot, Commander<C>>,
    /// The next slot this leader proposes a new batch in (PMMC's `slot_in`).
    next_slot: Slot,
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
            commanders: BTreeMap::new(),
            next_slot: 0,
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
    /// The slot the next batch goes into: every command proposed so far is below it.
    pub fn next_slot(&self) -> Slot {
        self.next_slot
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

    /// Phase 1 for `ballot`, covering every slot from `from_slot` on.
    pub fn start(
        &mut self,
        ballot: Ballot,
        from_slot: Slot,
        acceptors: &Acceptors,
        now: Time,
        out: &mut Vec<Envelope<C>>,
    ) {
        assert!(ballot > self.ballot, "a new leadership needs a higher ballot");
        self.step_down();
        self.ballot = ballot;
        let scout = Scout::new(ballot, from_slot, &acceptors.members, acceptors.quorum, now);
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
        self.led_before = true;
        self.next_slot = from_slot;
    }

    /// Stops leading: drops the scout, the commanders and the queue (the requesters
    /// resend what their clients still wait for).
    pub fn step_down(&mut self) {
        self.active = false;
        self.scout = None;
        self.commanders.clear();
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

    /// p1b for our scout. `slot_out` is our replica's applied prefix.
    pub fn on_promise(
        &mut self,
        promise: Promise<C>,
        slot_out: Slot,
        acceptors: &Acceptors,
        now: Time,
        out: &mut Vec<Envelope<C>>,
    ) -> LeaderEvent<C> {
        let Some(scout) = self.scout.as_mut().filter(|s| s.ballot == promise.ballot) else {
            return LeaderEvent::Nothing; // A promise for an older phase 1.
        };
        match scout.on_promise(promise.from, promise.decided_upto, promise.accepted, promise.decided) {
            ScoutEvent::Waiting => LeaderEvent::Nothing,
            ScoutEvent::Preempted(b) => self.preempted(b),
            ScoutEvent::Adopted(adopted) => self.adopt(adopted, slot_out, acceptors, now, out),
        }
    }

    /// PMMC's `adopted`: re-propose, under our ballot, the value each promiser reported
    /// for a slot; fill the gaps with no-ops so the log has no holes (§3.3).
    fn adopt(
        &mut self,
        adopted: Adopted<C>,
        slot_out: Slot,
        acceptors: &Acceptors,
        now: Time,
        out: &mut Vec<Envelope<C>>,
    ) -> LeaderEvent<C> {
        assert_eq!(adopted.ballot, self.ballot);
        self.scout = None;
        self.active = true;
        self.led_before = true;
        let last = adopted.proposals.keys().next_back().copied();
        self.next_slot = last.map_or(adopted.decided_upto, |s| s + 1).max(adopted.decided_upto).max(slot_out);
        let mut proposals = adopted.proposals;
        // Slots our own replica applied while phase 1 ran need no commander.
        for slot in adopted.decided_upto.max(slot_out)..self.next_slot {
            let value = proposals.remove(&slot).unwrap_or(Value::Noop);
            self.spawn_commander(slot, value, slot_out, acceptors, now, out);
        }
        LeaderEvent::Adopted { decided_upto: adopted.decided_upto, ahead: adopted.ahead }
    }

    /// Phase 2 for `value` in `slot`. `decided_upto` (our replica's applied prefix) rides
    /// along so that lagging acceptors notice and catch up.
    #[allow(clippy::too_many_arguments)]
    fn spawn_commander(
        &mut self,
        slot: Slot,
        value: Value<C>,
        decided_upto: Slot,
        acceptors: &Acceptors,
        now: Time,
        out: &mut Vec<Envelope<C>>,
    ) {
        let pvalue = PValue { ballot: self.ballot, slot, value };
        let commander = Commander::new(pvalue, &acceptors.members, acceptors.quorum, now);
        for to in commander.waitfor() {
            out.push(Envelope {
                to,
                message: Message::Accept { pvalue: commander.pvalue.clone(), decided_upto },
            });
        }
        let previous = self.commanders.insert(slot, commander);
        assert!(previous.is_none(), "two commanders for slot {slot} under one ballot");
    }

    /// Fills free slots in the window with batches of queued commands.
    pub fn propose(
        &mut self,
        slot_out: Slot,
        window_slots: u64,
        batch_commands_max: usize,
        acceptors: &Acceptors,
        now: Time,
        out: &mut Vec<Envelope<C>>,
    ) {
        if !self.active {
            return;
        }
        self.next_slot = self.next_slot.max(slot_out);
        while !self.queue.is_empty() && self.next_slot < slot_out + window_slots {
            let take = self.queue.len().min(batch_commands_max);
            let batch: Vec<_> = self.queue.drain(..take).collect();
            self.batches_proposed += 1;
            self.commands_proposed += batch.len() as u64;
            let slot = self.next_slot;
            self.next_slot += 1;
            self.spawn_commander(slot, Value::Batch(batch), slot_out, acceptors, now, out);
        }
    }

    /// Closes slots below `accepted_upto` that an acceptor reports a vote in but this
    /// leader never proposed: a vote cast for an earlier ballot by an acceptor outside
    /// our phase-1 quorum. Such a slot was not chosen (our phase-1 quorum saw nothing in
    /// it, since every slot from `next_slot` on was empty there), but left open it keeps
    /// the log's horizon ahead of its decided prefix forever when no commands come, and a
    /// node recovering from lost storage waits for that horizon (`recovery`). A no-op
    /// under our ballot is safe for the same reason as the gap-filling no-ops of `adopt`.
    /// Bounded by the window.
    #[allow(clippy::too_many_arguments)]
    pub fn close_orphans(
        &mut self,
        accepted_upto: Slot,
        slot_out: Slot,
        window_slots: u64,
        acceptors: &Acceptors,
        now: Time,
        out: &mut Vec<Envelope<C>>,
    ) {
        if !self.active {
            return;
        }
        self.next_slot = self.next_slot.max(slot_out);
        let end = accepted_upto.min(slot_out + window_slots);
        while self.next_slot < end {
            let slot = self.next_slot;
            self.next_slot += 1;
            self.spawn_commander(slot, Value::Noop, slot_out, acceptors, now, out);
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
        if self.active && slot >= self.next_slot {
            self.next_slot = slot + 1;
        }
    }

    /// Resends Prepare and Accept to acceptors that have not answered for `retransmit_us`
    /// (turning fair-loss links into stubborn ones: Cachin et al., §2.4.3). `decided_upto` rides along.
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
