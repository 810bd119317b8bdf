//! The cheap safety checks that run continuously during a run.
//!
//! - **Agreement** (Paxos's safety property, PMMC §2): at most one value is ever decided
//!   for a slot. Every `Record::Decided` any node produces, in any incarnation, is
//!   compared with the first one seen for that slot. Checked when the record is produced
//!   rather than when it is synced: a node that decided has decided, durable or not.
//! - **Replica consistency** (Schneider's state machine approach): replicas that applied
//!   the same prefix hold the same state. The first state hash seen for each applied
//!   prefix length is kept; every later replica with that length must match it.
//!
//! The history checks (linearizability, bank) run once at the end: see `workload`.

use std::collections::BTreeMap;

use synod_core::{Slot, Value};

pub(crate) struct SafetyChecker<C> {
    /// slot → (value, node that first decided it, time).
    decided: BTreeMap<Slot, (Value<C>, usize, u64)>,
    /// applied prefix length → (state hash, node, time).
    hashes: BTreeMap<Slot, (u64, usize, u64)>,
}

impl<C: PartialEq + std::fmt::Debug> SafetyChecker<C> {
    pub(crate) fn new() -> SafetyChecker<C> {
        SafetyChecker { decided: BTreeMap::new(), hashes: BTreeMap::new() }
    }

    /// Node `node` decided `value` in `slot` at `now_us`.
    pub(crate) fn on_decided(
        &mut self,
        node: usize,
        slot: Slot,
        value: &Value<C>,
        now_us: u64,
    ) -> Result<(), String>
    where
        C: Clone,
    {
        match self.decided.get(&slot) {
            None => {
                self.decided.insert(slot, (value.clone(), node, now_us));
                Ok(())
            }
            Some((first, _, _)) if first == value => Ok(()),
            Some((first, first_node, first_us)) => Err(format!(
                "agreement: slot {slot} decided twice: n{} decided {} at {:.3}ms, n{} decided {} at {:.3}ms",
                first_node + 1,
                describe(first),
                *first_us as f64 / 1e3,
                node + 1,
                describe(value),
                now_us as f64 / 1e3
            )),
        }
    }

    /// Node `node` has applied every slot below `applied_upto` and its state hashes to
    /// `hash`.
    pub(crate) fn on_state(
        &mut self,
        node: usize,
        applied_upto: Slot,
        hash: u64,
        now_us: u64,
    ) -> Result<(), String> {
        match self.hashes.get(&applied_upto) {
            None => {
                self.hashes.insert(applied_upto, (hash, node, now_us));
                Ok(())
            }
            Some((first, _, _)) if *first == hash => Ok(()),
            Some((first, first_node, first_us)) => Err(format!(
                "replica divergence: after applying {applied_upto} slots n{} had state {first:016x} at {:.3}ms but n{} has {hash:016x}",
                first_node + 1,
                *first_us as f64 / 1e3,
                node + 1,
            )),
        }
    }
}

/// A short description of a decided value for violation messages.
pub(crate) fn describe<C: std::fmt::Debug>(value: &Value<C>) -> String {
    let text = match value {
        Value::Noop => "noop".to_string(),
        Value::Batch(commands) => {
            let ids: Vec<String> = commands.iter().map(|c| format!("{}:{}", c.client_id, c.seq)).collect();
            format!("batch[{}]", ids.join(","))
        }
        Value::Reconfigure(configuration) => {
            format!(
                "reconfigure(epoch {} voters {:?} learners {:?})",
                configuration.epoch, configuration.voters, configuration.learners
            )
        }
    };
    if text.len() > 200 {
        format!("{}…", &text[..200])
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use synod_core::Command;

    use super::*;

    fn batch(client_id: u64) -> Value<u8> {
        Value::Batch(vec![Command { client_id, seq: 1, op: 0 }])
    }

    #[test]
    fn two_values_for_one_slot_is_a_violation() {
        let mut checker = SafetyChecker::new();
        assert!(checker.on_decided(0, 3, &batch(1), 10).is_ok());
        assert!(checker.on_decided(1, 3, &batch(1), 20).is_ok());
        let err = checker.on_decided(2, 3, &Value::Noop, 30).unwrap_err();
        assert!(err.contains("slot 3 decided twice"), "{err}");
    }

    #[test]
    fn equal_prefixes_must_hash_equal() {
        let mut checker = SafetyChecker::<u8>::new();
        assert!(checker.on_state(0, 5, 0xab, 1).is_ok());
        assert!(checker.on_state(1, 5, 0xab, 2).is_ok());
        assert!(checker.on_state(1, 6, 0xcd, 2).is_ok());
        assert!(checker.on_state(2, 5, 0xcd, 3).is_err());
    }
}
