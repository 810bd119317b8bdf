//! The Commander (PMMC §3, Fig. 6): phase 2 for one pvalue. It collects `Accepted`
//! from a majority and then the slot is decided; one `Nack` means *preempted*.

use std::collections::BTreeSet;

use crate::types::{NodeId, PValue, Time};

#[derive(Debug)]
pub struct Commander<C> {
    pub pvalue: PValue<C>,
    quorum: usize,
    /// Acceptors that have not accepted yet; retransmission goes to these only.
    waitfor: BTreeSet<NodeId>,
    accepted: usize,
    pub last_sent: Time,
}

impl<C> Commander<C> {
    pub fn new(pvalue: PValue<C>, acceptors: &[NodeId], quorum: usize, now: Time) -> Self {
        assert!(quorum >= 1 && quorum <= acceptors.len());
        Commander {
            pvalue,
            quorum,
            waitfor: acceptors.iter().copied().collect(),
            accepted: 0,
            last_sent: now,
        }
    }

    pub fn waitfor(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.waitfor.iter().copied()
    }

    /// p2b from `from`. True once a majority accepted: the pvalue is decided.
    pub fn on_accepted(&mut self, from: NodeId) -> bool {
        if self.waitfor.remove(&from) {
            self.accepted += 1;
        }
        self.accepted >= self.quorum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Ballot, Value};

    #[test]
    fn commander_decides_once_a_majority_accepted_and_ignores_duplicates() {
        let nodes = [NodeId(1), NodeId(2), NodeId(3)];
        let pvalue = PValue::<u32> { ballot: Ballot::ZERO, slot: 0, value: Value::Noop };
        let mut commander = Commander::new(pvalue, &nodes, 2, Time(0));
        assert!(!commander.on_accepted(NodeId(1)));
        assert!(!commander.on_accepted(NodeId(1)));
        assert!(commander.on_accepted(NodeId(3)));
        assert_eq!(commander.waitfor().collect::<Vec<_>>(), vec![NodeId(2)]);
    }
}
