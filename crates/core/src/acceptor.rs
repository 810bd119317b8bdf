//! The Acceptor (PMMC §3, Fig. 5): the memory of Paxos. It promises ballots and accepts
//! pvalues, and it never forgets either: every change is a [`Record`] that the node makes
//! durable before any reply leaves (see `effects`).

use std::collections::BTreeMap;

use crate::effects::Record;
use crate::message::Message;
use crate::state_machine::Payload;
use crate::types::{Ballot, PValue, Slot, Value};

/// An Accept that names a ballot and slot already accepted with another value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConflictingAccept;

/// An acceptor's state: the highest ballot promised and the pvalues accepted in slots
/// that its replica has not yet seen decided.
#[derive(Debug)]
pub struct Acceptor<C> {
    promised: Ballot,
    /// Pvalues of slots at or above the node's decided prefix. Below it they are dropped:
    /// a new leader never proposes in a slot below any promiser's `decided_upto`.
    accepted: BTreeMap<Slot, PValue<C>>,
}

impl<C: Payload> Acceptor<C> {
    pub fn new(promised: Ballot) -> Self {
        Acceptor { promised, accepted: BTreeMap::new() }
    }

    /// Restores an accepted pvalue from the durable log.
    pub fn restore(&mut self, pvalue: PValue<C>) {
        assert!(pvalue.ballot <= self.promised, "accepted ballot above the durable promise");
        self.accepted.insert(pvalue.slot, pvalue);
    }

    pub fn promised(&self) -> Ballot {
        self.promised
    }

    /// p1a. Promises `ballot` if it is at least the current promise, and reports what was
    /// accepted from `from_slot` on. `decided_upto` and `decided` come from the replica on
    /// the same node: decisions count as the strongest kind of "accepted" (§3, a value
    /// decided in a slot is the only value any later ballot may propose there).
    pub fn on_prepare(
        &mut self,
        ballot: Ballot,
        from_slot: Slot,
        decided_upto: Slot,
        decided: Vec<(Slot, Value<C>)>,
    ) -> (Option<Record<C>>, Message<C>) {
        if ballot < self.promised {
            return (None, Message::Nack { ballot, promised: self.promised });
        }
        let record = (ballot > self.promised).then_some(Record::Promised { ballot });
        self.promised = ballot;
        let start = from_slot.max(decided_upto);
        let accepted = self.accepted.range(start..).map(|(_, pvalue)| pvalue.clone()).collect();
        (record, Message::Promise { ballot, decided_upto, accepted, decided })
    }

    /// p2a. Accepts `pvalue` unless a higher ballot was promised. A retransmitted Accept
    /// for a pvalue already accepted is answered without writing anything again. An
    /// Accept for a ballot and slot already accepted with *another* value is refused
    /// (`Err`, nothing changes): one ballot proposes one value per slot, so only a
    /// sender that lies about its ballot can send it, and a peer's lie must not stop us.
    pub fn on_accept(
        &mut self,
        pvalue: PValue<C>,
    ) -> Result<(Option<Record<C>>, Message<C>), ConflictingAccept> {
        let (ballot, slot) = (pvalue.ballot, pvalue.slot);
        if ballot < self.promised {
            return Ok((None, Message::Nack { ballot, promised: self.promised }));
        }
        let record = match self.accepted.get(&slot) {
            Some(existing) if existing.ballot == ballot && existing.value != pvalue.value => {
                return Err(ConflictingAccept);
            }
            Some(existing) if existing.ballot == ballot => None,
            _ => {
                self.accepted.insert(slot, pvalue.clone());
                Some(Record::Accepted { pvalue })
            }
        };
        self.promised = ballot;
        Ok((record, Message::Accepted { ballot, slot }))
    }

    /// The node's replica decided every slot below `decided_upto`: those pvalues are no
    /// longer needed by any future leader.
    pub fn forget_below(&mut self, decided_upto: Slot) {
        // Called after every decision: popping the few slots below is cheaper than
        // `split_off`, which builds a new tree each time.
        while self.accepted.first_key_value().is_some_and(|(&slot, _)| slot < decided_upto) {
            self.accepted.pop_first();
        }
    }

    /// One past the highest slot this acceptor holds a vote in (0 if none).
    pub fn accepted_upto(&self) -> Slot {
        self.accepted.last_key_value().map_or(0, |(slot, _)| slot + 1)
    }

    /// Raises the promise without a prepare: recovery from lost storage promises the
    /// highest ballot its peers report (see `recovery`).
    pub fn raise_promise(&mut self, ballot: Ballot) -> Option<Record<C>> {
        if ballot <= self.promised {
            return None;
        }
        self.promised = ballot;
        Some(Record::Promised { ballot })
    }

    /// Every pvalue held, by slot.
    pub fn accepted(&self) -> impl Iterator<Item = &PValue<C>> {
        self.accepted.values()
    }

    pub fn accepted_len(&self) -> usize {
        self.accepted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;

    fn ballot(round: u64, leader: u32) -> Ballot {
        Ballot { round, leader: NodeId(leader) }
    }

    fn pvalue(b: Ballot, slot: Slot) -> PValue<u32> {
        PValue { ballot: b, slot, value: Value::Noop }
    }

    #[test]
    fn acceptor_promises_a_higher_ballot_and_records_it() {
        let mut acceptor = Acceptor::<u32>::new(Ballot::ZERO);
        let (record, reply) = acceptor.on_prepare(ballot(1, 1), 0, 0, vec![]);
        assert_eq!(record, Some(Record::Promised { ballot: ballot(1, 1) }));
        assert!(matches!(reply, Message::Promise { ballot: b, .. } if b == ballot(1, 1)));
        assert_eq!(acceptor.promised(), ballot(1, 1));
    }

    #[test]
    fn acceptor_refuses_a_lower_ballot_with_its_promise() {
        let mut acceptor = Acceptor::<u32>::new(ballot(5, 2));
        let (record, reply) = acceptor.on_prepare(ballot(4, 1), 0, 0, vec![]);
        assert_eq!(record, None);
        assert_eq!(reply, Message::Nack { ballot: ballot(4, 1), promised: ballot(5, 2) });
        let (record, reply) = acceptor.on_accept(pvalue(ballot(4, 1), 0)).unwrap();
        assert_eq!(record, None);
        assert_eq!(reply, Message::Nack { ballot: ballot(4, 1), promised: ballot(5, 2) });
    }

    #[test]
    fn acceptor_reports_accepted_pvalues_from_the_requested_slot() {
        let mut acceptor = Acceptor::<u32>::new(Ballot::ZERO);
        for slot in 0..5 {
            let _ = acceptor.on_accept(pvalue(ballot(1, 1), slot));
        }
        let (_, reply) = acceptor.on_prepare(ballot(2, 2), 3, 1, vec![]);
        let Message::Promise { accepted, .. } = reply else { panic!("expected a promise") };
        assert_eq!(accepted.iter().map(|p| p.slot).collect::<Vec<_>>(), vec![3, 4]);
    }

    #[test]
    fn acceptor_does_not_rewrite_a_retransmitted_accept() {
        let mut acceptor = Acceptor::<u32>::new(Ballot::ZERO);
        let (first, _) = acceptor.on_accept(pvalue(ballot(1, 1), 7)).unwrap();
        let (second, reply) = acceptor.on_accept(pvalue(ballot(1, 1), 7)).unwrap();
        assert!(first.is_some());
        assert_eq!(second, None);
        assert_eq!(reply, Message::Accepted { ballot: ballot(1, 1), slot: 7 });
    }

    #[test]
    fn acceptor_refuses_a_second_value_for_one_ballot_and_slot_and_keeps_the_first() {
        let mut acceptor = Acceptor::<u32>::new(Ballot::ZERO);
        let first = PValue { ballot: ballot(1, 1), slot: 3, value: Value::Batch(vec![]) };
        let _ = acceptor.on_accept(first.clone()).unwrap();
        assert_eq!(acceptor.on_accept(pvalue(ballot(1, 1), 3)), Err(ConflictingAccept));
        let (_, reply) = acceptor.on_prepare(ballot(2, 2), 0, 0, vec![]);
        let Message::Promise { accepted, .. } = reply else { panic!("expected a promise") };
        assert_eq!(accepted, vec![first]);
    }

    #[test]
    fn acceptor_forgets_pvalues_below_the_decided_prefix() {
        let mut acceptor = Acceptor::<u32>::new(Ballot::ZERO);
        for slot in 0..4 {
            let _ = acceptor.on_accept(pvalue(ballot(1, 1), slot));
        }
        acceptor.forget_below(2);
        assert_eq!(acceptor.accepted_len(), 2);
    }
}
