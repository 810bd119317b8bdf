//! The bank checker (Jepsen's bank workload, plus a ledger audit).
//!
//! Jepsen's bank test checks that every successful read sees exactly the accounts, no
//! negative balance, and the conserved total. That cannot see a transfer that was
//! acknowledged but lost, or one applied twice, as long as the money adds up. So Synod's
//! histories may end with a `ledger` event, the state machine's own account of what it
//! applied; with one, this checker also verifies that
//!
//! - every acknowledged (`ok`) transfer was applied,
//! - no refused (`fail`) transfer was applied,
//! - no transfer was applied twice, and no unknown transfer at all,
//! - the final balances are the initial ones plus the effect of exactly the applied
//!   transfers.
//!
//! Transfers with unknown outcome (`info`, pending) may or may not be in the ledger.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::history::{pair_operations, Event, Operation, Outcome};
use crate::model::balances_of;

/// The bank's accounts and their initial balances; the total is their sum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BankSpec {
    pub initial: BTreeMap<String, i64>,
}

/// What [`check_bank`] found. `ok` iff `errors` is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BankReport {
    pub ok: bool,
    pub errors: Vec<String>,
    /// Successful reads checked (the ledger's balances not counted).
    pub reads_checked: usize,
    /// Transfers completed `ok`.
    pub transfers_acked: usize,
}

/// A transfer's invocation value: `{"id":7,"from":"a0","to":"a1","amount":5}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Transfer {
    pub id: u64,
    pub from: String,
    pub to: String,
    pub amount: i64,
}

impl Transfer {
    pub(crate) fn from_value(v: &Value) -> Result<Transfer, String> {
        let bad = || format!("transfer value {v} is not {{\"id\":N,\"from\":A,\"to\":B,\"amount\":N}}");
        let o = v.as_object().ok_or_else(bad)?;
        Ok(Transfer {
            id: o.get("id").and_then(Value::as_u64).ok_or_else(bad)?,
            from: o.get("from").and_then(Value::as_str).ok_or_else(bad)?.to_string(),
            to: o.get("to").and_then(Value::as_str).ok_or_else(bad)?.to_string(),
            amount: o.get("amount").and_then(Value::as_i64).ok_or_else(bad)?,
        })
    }
}

fn at(op: &Operation) -> String {
    format!("#{} (p{}, t={})", op.index, op.process, op.call)
}

/// Checks the bank invariants and, if the history has a `ledger`, the ledger audit.
pub fn check_bank(events: &[Event], spec: &BankSpec) -> BankReport {
    let mut report = BankReport::default();
    let ops = match pair_operations(events) {
        Ok(ops) => ops,
        Err(e) => {
            report.errors.push(format!("malformed history: {e}"));
            return report;
        }
    };
    let total: i64 = spec.initial.values().sum();
    let errors = &mut report.errors;

    let mut transfers: HashMap<u64, (Transfer, Outcome, usize)> = HashMap::new();
    let mut ledger: Option<&Operation> = None;
    for op in &ops {
        match op.f.as_str() {
            "transfer" => {
                let t = match Transfer::from_value(&op.input) {
                    Ok(t) => t,
                    Err(e) => {
                        errors.push(format!("transfer {}: {e}", at(op)));
                        continue;
                    }
                };
                for acct in [&t.from, &t.to] {
                    if !spec.initial.contains_key(acct) {
                        errors.push(format!("transfer {} names unknown account {acct:?}", at(op)));
                    }
                }
                if op.outcome == Outcome::Ok {
                    report.transfers_acked += 1;
                }
                if let Some((_, _, first)) = transfers.get(&t.id) {
                    errors.push(format!("transfer id {} invoked twice: #{first} and {}", t.id, at(op)));
                    continue;
                }
                transfers.insert(t.id, (t, op.outcome, op.index));
            }
            "read" if op.outcome == Outcome::Ok => {
                report.reads_checked += 1;
                check_balances(&format!("read {}", at(op)), op, spec, total, errors);
            }
            "ledger" if op.outcome == Outcome::Ok => ledger = Some(op),
            "read" | "ledger" => {}
            other => errors.push(format!("{} is not a bank operation: {other:?}", at(op))),
        }
    }

    if let Some(l) = ledger {
        let what = format!("ledger {}", at(l));
        check_balances(&what, l, spec, total, errors);
        let applied: Vec<u64> = match l.output.get("transfers").and_then(Value::as_array) {
            Some(ids) => ids.iter().filter_map(Value::as_u64).collect(),
            None => {
                errors.push(format!("{what}: no \"transfers\" list of applied ids"));
                Vec::new()
            }
        };
        let mut times_applied: BTreeMap<u64, usize> = BTreeMap::new();
        for &id in &applied {
            *times_applied.entry(id).or_default() += 1;
        }
        for (&id, &n) in &times_applied {
            if n > 1 {
                errors.push(format!("transfer {id} was applied {n} times"));
            }
            match transfers.get(&id) {
                None => {
                    errors.push(format!("the ledger applies transfer {id}, which the history never invoked"))
                }
                Some((_, Outcome::Fail, i)) => {
                    errors.push(format!("failed transfer {id} (#{i}) was applied"))
                }
                Some(_) => {}
            }
        }
        let mut acked: Vec<(u64, usize)> =
            transfers.iter().filter(|(_, t)| t.1 == Outcome::Ok).map(|(id, t)| (*id, t.2)).collect();
        acked.sort_unstable();
        for (id, i) in acked {
            if !times_applied.contains_key(&id) {
                errors.push(format!("acknowledged transfer {id} (#{i}) is missing from the ledger"));
            }
        }
        // Final balances = initial + the applied transfers, each as often as applied.
        let mut expected = spec.initial.clone();
        for id in &applied {
            if let Some((t, _, _)) = transfers.get(id) {
                *expected.entry(t.from.clone()).or_default() -= t.amount;
                *expected.entry(t.to.clone()).or_default() += t.amount;
            }
        }
        if let Some(fin) = balances_of(l) {
            for (acct, want) in &expected {
                if let Some(got) = fin.get(acct) {
                    if got != want {
                        errors.push(format!(
                            "{what}: final balance of {acct:?} is {got}, but the initial balances plus the applied \
                             transfers give {want}"
                        ));
                    }
                }
            }
        }
    }
    report.ok = report.errors.is_empty();
    report
}

/// Jepsen's bank invariants for one set of balances.
fn check_balances(what: &str, op: &Operation, spec: &BankSpec, total: i64, errors: &mut Vec<String>) {
    let Some(balances) = balances_of(op) else {
        errors.push(format!("{what}: result is not an object of integer balances"));
        return;
    };
    let seen: BTreeSet<&String> = balances.keys().collect();
    let want: BTreeSet<&String> = spec.initial.keys().collect();
    let missing: Vec<_> = want.difference(&seen).collect();
    let extra: Vec<_> = seen.difference(&want).collect();
    if !missing.is_empty() {
        errors.push(format!("{what}: missing accounts {missing:?}"));
    }
    if !extra.is_empty() {
        errors.push(format!("{what}: unexpected accounts {extra:?}"));
    }
    for (acct, b) in &balances {
        if *b < 0 {
            errors.push(format!("{what}: negative balance {b} in {acct:?}"));
        }
    }
    let sum: i64 = balances.values().sum();
    if sum != total {
        errors.push(format!("{what}: balances sum to {sum}, but the total is {total}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventType;
    use serde_json::json;

    /// Builds histories one operation at a time, each on its own process.
    #[derive(Default)]
    struct H(Vec<Event>);

    impl H {
        fn op(mut self, kind: EventType, f: &str, input: Value, output: Value) -> Self {
            let t = self.0.len() as u64;
            let p = t;
            self.0.push(Event {
                process: p,
                kind: EventType::Invoke,
                f: f.into(),
                key: None,
                value: input,
                time: t,
            });
            self.0.push(Event { process: p, kind, f: f.into(), key: None, value: output, time: t + 1 });
            self
        }
        fn transfer(self, kind: EventType, id: u64, from: &str, to: &str, amount: i64) -> Self {
            let v = json!({"id": id, "from": from, "to": to, "amount": amount});
            self.op(kind, "transfer", v.clone(), v)
        }
        fn read(self, balances: Value) -> Self {
            self.op(EventType::Ok, "read", Value::Null, balances)
        }
        fn ledger(self, balances: Value, ids: Value) -> Self {
            self.op(EventType::Ok, "ledger", Value::Null, json!({"balances": balances, "transfers": ids}))
        }
    }

    fn spec() -> BankSpec {
        BankSpec { initial: [("a".to_string(), 10), ("b".to_string(), 10)].into_iter().collect() }
    }

    fn errors(h: H) -> Vec<String> {
        let r = check_bank(&h.0, &spec());
        assert_eq!(r.ok, r.errors.is_empty());
        r.errors
    }

    fn assert_one_error(h: H, needle: &str) {
        let e = errors(h);
        assert!(e.len() == 1 && e[0].contains(needle), "expected one error containing {needle:?}, got {e:?}");
    }

    #[test]
    fn a_correct_history_passes() {
        let h = H::default()
            .transfer(EventType::Ok, 1, "a", "b", 3)
            .transfer(EventType::Fail, 2, "b", "a", 100)
            .transfer(EventType::Info, 3, "b", "a", 1)
            .read(json!({"a": 7, "b": 13}))
            .ledger(json!({"a": 7, "b": 13}), json!([1]));
        let r = check_bank(&h.0, &spec());
        assert!(r.ok, "{:?}", r.errors);
        assert_eq!((r.reads_checked, r.transfers_acked), (1, 1));
    }

    #[test]
    fn a_read_with_the_wrong_sum_is_caught() {
        assert_one_error(H::default().read(json!({"a": 10, "b": 11})), "sum to 21");
    }

    #[test]
    fn a_read_missing_an_account_is_caught() {
        let e = errors(H::default().read(json!({"a": 20})));
        assert!(e.iter().any(|e| e.contains("missing accounts")), "{e:?}");
    }

    #[test]
    fn a_negative_balance_is_caught() {
        assert_one_error(H::default().read(json!({"a": -1, "b": 21})), "negative balance -1");
    }

    #[test]
    fn an_acknowledged_transfer_missing_from_the_ledger_is_caught() {
        let h =
            H::default().transfer(EventType::Ok, 1, "a", "b", 3).ledger(json!({"a": 10, "b": 10}), json!([]));
        assert_one_error(h, "acknowledged transfer 1");
    }

    #[test]
    fn a_transfer_applied_twice_is_caught() {
        let h = H::default()
            .transfer(EventType::Ok, 1, "a", "b", 3)
            .ledger(json!({"a": 4, "b": 16}), json!([1, 1]));
        assert_one_error(h, "applied 2 times");
    }

    #[test]
    fn a_failed_transfer_that_was_applied_is_caught() {
        let h = H::default()
            .transfer(EventType::Fail, 1, "a", "b", 3)
            .ledger(json!({"a": 7, "b": 13}), json!([1]));
        assert_one_error(h, "failed transfer 1");
    }

    #[test]
    fn final_balances_that_do_not_match_the_applied_transfers_are_caught() {
        let h =
            H::default().transfer(EventType::Ok, 1, "a", "b", 3).ledger(json!({"a": 8, "b": 12}), json!([1]));
        let e = errors(h);
        assert!(e.len() == 2 && e.iter().all(|e| e.contains("final balance")), "{e:?}");
    }

    #[test]
    fn a_ledger_applying_a_transfer_never_invoked_is_caught() {
        let h = H::default().ledger(json!({"a": 10, "b": 10}), json!([9]));
        assert_one_error(h, "never invoked");
    }

    #[test]
    fn transfers_with_unknown_outcome_may_or_may_not_be_applied() {
        for applied in [json!([]), json!([1])] {
            let balances =
                if applied == json!([]) { json!({"a": 10, "b": 10}) } else { json!({"a": 7, "b": 13}) };
            let h = H::default().transfer(EventType::Info, 1, "a", "b", 3).ledger(balances, applied);
            assert!(errors(h).is_empty());
        }
    }
}
