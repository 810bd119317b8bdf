//! What the simulated clients ask for, and how their answers are written into the
//! history the checkers read (synod-check's JSON conventions).
//!
//! A [`Workload`] draws operations, turns outputs into history values, and checks the
//! finished history. The client machinery (timeouts, retries, give-ups) is in `clients`.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value as Json};
use synod_check::bank::{check_bank, BankSpec};
use synod_check::{CheckOptions, Event, EventType, ModelKind, Verdict};
use synod_core::apps::bank::{Bank, BankCommand, BankOutput, Transfer, TransferResult};
use synod_core::apps::kv::{KvCommand, KvOutput, KvStore};
use synod_core::StateMachine;

use crate::faults::{rng_for, stream};

pub(crate) type Cmd<W> = <<W as Workload>::Sm as StateMachine>::Command;
pub(crate) type Out<W> = <<W as Workload>::Sm as StateMachine>::Output;

/// One operation a client will run: the command, and how the history shows it.
#[derive(Clone, Debug)]
pub(crate) struct PlannedOp<C> {
    pub op: C,
    pub f: &'static str,
    pub key: Option<String>,
    /// The invocation's value (synod-check conventions).
    pub value: Json,
    /// Setup commands run before the recorded history and are not recorded.
    pub record: bool,
}

/// What the checkers made of a history.
#[derive(Clone, Debug, Default)]
pub(crate) struct HistoryVerdict {
    pub violation: Option<String>,
    /// The linearizability search ran out of budget.
    pub unknown: bool,
}

pub(crate) trait Workload {
    type Sm: StateMachine;

    /// A fresh, empty state machine (every node starts from one, and every restart too).
    fn state_machine(&self) -> Self::Sm;
    /// Operations that run, one at a time and unrecorded, before the history starts.
    fn setup(&mut self) -> Vec<PlannedOp<Cmd<Self>>>;
    /// Draws the next recorded operation.
    fn next_op(&mut self, rng: &mut ChaCha8Rng) -> PlannedOp<Cmd<Self>>;
    /// The completion of `op` with `output`: ok or fail, and the value to record.
    fn complete(&mut self, op: &PlannedOp<Cmd<Self>>, output: &Out<Self>) -> (EventType, Json);
    /// The operation to run after convergence, if any (the bank's ledger).
    fn final_op(&mut self) -> Option<PlannedOp<Cmd<Self>>>;
    /// Checks the finished history.
    fn check(&self, history: &[Event], budget: Duration) -> HistoryVerdict;
    /// Answers a read-only command from a replica's state (leader-lease reads); `None`
    /// for a command that writes.
    fn read_local(state_machine: &Self::Sm, op: &Cmd<Self>) -> Option<Out<Self>>;
    /// A command, readably, for traces.
    fn describe_op(&self, op: &Cmd<Self>) -> String {
        format!("{op:?}")
    }
    /// An output, readably, for traces.
    fn describe_output(&self, output: &Out<Self>) -> String {
        format!("{output:?}")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn text_or_nil(bytes: &Option<Vec<u8>>) -> String {
    bytes.as_deref().map_or_else(|| "nil".to_string(), text)
}

/// Runs the linearizability checker and turns its verdict into a `HistoryVerdict`.
pub(crate) fn check_linearizable(model: ModelKind, history: &[Event], budget: Duration) -> HistoryVerdict {
    let options = CheckOptions { budget, kv_missing_is_empty: false };
    let report = synod_check::check(model, history, &options);
    let explanation = report.explanation.unwrap_or_default();
    match report.verdict {
        Verdict::Linearizable => HistoryVerdict::default(),
        // The simulator wrote a history the checker cannot read: a simulator bug, and it
        // must not pass silently as "unknown".
        Verdict::Unknown if explanation.starts_with("malformed") => HistoryVerdict {
            violation: Some(format!("the simulator recorded a {explanation}")),
            unknown: false,
        },
        Verdict::Unknown => HistoryVerdict { violation: None, unknown: true },
        Verdict::NotLinearizable => HistoryVerdict {
            violation: Some(format!(
                "history is not linearizable{}: {explanation}",
                report.failing_key.map(|k| format!(" (key {k})")).unwrap_or_default()
            )),
            unknown: false,
        },
    }
}

/// Integers travel as their decimal digits (the checker compares integers).
fn encode_int(v: i64) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn decode_value(bytes: &Option<Vec<u8>>) -> Json {
    match bytes {
        None => Json::Null,
        Some(bytes) => match std::str::from_utf8(bytes).ok().and_then(|s| s.parse::<i64>().ok()) {
            Some(v) => json!(v),
            None => json!(String::from_utf8_lossy(bytes)),
        },
    }
}

/// get / put / cas / delete on a few keys of the key-value store (Jepsen's register
/// workload, one register per key). Every written value is unique, which makes the
/// history easy to check and any lost or duplicated write visible.
pub(crate) struct Register {
    keys: usize,
    next_value: i64,
    /// The last value each key was sent (a good guess for a cas that succeeds).
    last_written: BTreeMap<usize, i64>,
}

impl Register {
    pub(crate) fn new(seed: u64) -> Register {
        let mut rng = rng_for(seed, stream::WORKLOAD);
        Register { keys: rng.gen_range(1..=4), next_value: 1, last_written: BTreeMap::new() }
    }

    fn fresh(&mut self) -> i64 {
        self.next_value += 1;
        self.next_value
    }
}

impl Workload for Register {
    type Sm = KvStore;

    fn read_local(state_machine: &KvStore, op: &KvCommand) -> Option<KvOutput> {
        state_machine.read(op)
    }

    fn state_machine(&self) -> KvStore {
        KvStore::new()
    }

    fn setup(&mut self) -> Vec<PlannedOp<KvCommand>> {
        Vec::new()
    }

    fn next_op(&mut self, rng: &mut ChaCha8Rng) -> PlannedOp<KvCommand> {
        let k = rng.gen_range(0..self.keys);
        let key = format!("k{k}");
        let key_bytes = key.clone().into_bytes();
        let (op, f, value) = match rng.gen_range(0..100) {
            0..=39 => (KvCommand::Get { key: key_bytes }, "get", Json::Null),
            40..=74 => {
                let v = self.fresh();
                self.last_written.insert(k, v);
                (KvCommand::Put { key: key_bytes, value: encode_int(v) }, "put", json!(v))
            }
            75..=94 => {
                let expected = match self.last_written.get(&k) {
                    Some(&last) if rng.gen_bool(0.8) => Some(last),
                    _ => None,
                };
                let new = self.fresh();
                self.last_written.insert(k, new);
                let op = KvCommand::Cas {
                    key: key_bytes,
                    expected: expected.map(encode_int),
                    new: Some(encode_int(new)),
                };
                (op, "cas", json!([expected, new]))
            }
            _ => (KvCommand::Delete { key: key_bytes }, "delete", Json::Null),
        };
        PlannedOp { op, f, key: Some(key), value, record: true }
    }

    fn complete(&mut self, op: &PlannedOp<KvCommand>, output: &KvOutput) -> (EventType, Json) {
        match output {
            KvOutput::Get { value } => (EventType::Ok, decode_value(value)),
            KvOutput::Put { .. } | KvOutput::Delete { .. } => (EventType::Ok, op.value.clone()),
            KvOutput::Cas { succeeded: true, .. } => (EventType::Ok, op.value.clone()),
            KvOutput::Cas { succeeded: false, .. } => (EventType::Fail, op.value.clone()),
            // The store refused the command without touching state (it never does for
            // the small commands drawn here).
            _ => (EventType::Fail, op.value.clone()),
        }
    }

    fn final_op(&mut self) -> Option<PlannedOp<KvCommand>> {
        None
    }

    fn describe_op(&self, op: &KvCommand) -> String {
        match op {
            KvCommand::Get { key } => format!("get {}", text(key)),
            KvCommand::Put { key, value } => format!("put {}={}", text(key), text(value)),
            KvCommand::Delete { key } => format!("delete {}", text(key)),
            KvCommand::Cas { key, expected, new } => {
                format!("cas {} {}->{}", text(key), text_or_nil(expected), text_or_nil(new))
            }
            other => format!("{other:?}"),
        }
    }

    fn describe_output(&self, output: &KvOutput) -> String {
        match output {
            KvOutput::Get { value } => format!("read {}", text_or_nil(value)),
            KvOutput::Put { previous } | KvOutput::Delete { previous } => {
                format!("done (was {})", text_or_nil(previous))
            }
            KvOutput::Cas { succeeded, current } => {
                format!(
                    "{} (now {})",
                    if *succeeded { "swapped" } else { "not swapped" },
                    text_or_nil(current)
                )
            }
            other => format!("{other:?}"),
        }
    }

    fn check(&self, history: &[Event], budget: Duration) -> HistoryVerdict {
        check_linearizable(ModelKind::Kv, history, budget)
    }
}

/// Jepsen's bank: transfers of random amounts between a few accounts, and reads of every
/// balance. The accounts are opened before the history starts; the run ends with one
/// `ledger` read (every balance and every applied transfer id) after convergence, which
/// the bank checker audits: money conserved, never negative, every acknowledged
/// transfer applied exactly once and no refused one applied.
pub(crate) struct BankWorkload {
    accounts: Vec<u64>,
    initial_balance: u64,
    next_transfer: u64,
}

impl BankWorkload {
    pub(crate) fn new(seed: u64) -> BankWorkload {
        let mut rng = rng_for(seed, stream::WORKLOAD);
        let accounts = (0..rng.gen_range(2..=6)).collect();
        BankWorkload { accounts, initial_balance: rng.gen_range(10..=200), next_transfer: 0 }
    }

    fn spec(&self) -> BankSpec {
        BankSpec {
            initial: self.accounts.iter().map(|a| (a.to_string(), self.initial_balance as i64)).collect(),
        }
    }
}

fn balances_json(balances: &BTreeMap<u64, u64>) -> Json {
    Json::Object(balances.iter().map(|(a, b)| (a.to_string(), json!(b))).collect())
}

impl Workload for BankWorkload {
    type Sm = Bank;

    fn read_local(state_machine: &Bank, op: &BankCommand) -> Option<BankOutput> {
        state_machine.read(op)
    }

    fn state_machine(&self) -> Bank {
        Bank::new()
    }

    fn setup(&mut self) -> Vec<PlannedOp<BankCommand>> {
        self.accounts
            .iter()
            .map(|&account| PlannedOp {
                op: BankCommand::Open { account, initial_balance: self.initial_balance },
                f: "open",
                key: None,
                value: Json::Null,
                record: false,
            })
            .collect()
    }

    fn next_op(&mut self, rng: &mut ChaCha8Rng) -> PlannedOp<BankCommand> {
        if rng.gen_bool(0.2) {
            return PlannedOp {
                op: BankCommand::ReadAll,
                f: "read",
                key: None,
                value: Json::Null,
                record: true,
            };
        }
        let (from, to) = two_distinct(rng, &self.accounts);
        // Amounts up to the initial balance, so that overdrafts are tried (and refused).
        let amount = rng.gen_range(1..=self.initial_balance);
        self.next_transfer += 1;
        let id = self.next_transfer;
        let value = json!({"id": id, "from": from.to_string(), "to": to.to_string(), "amount": amount});
        PlannedOp {
            op: BankCommand::Transfer(Transfer { id, from, to, amount }),
            f: "transfer",
            key: None,
            value,
            record: true,
        }
    }

    fn complete(&mut self, op: &PlannedOp<BankCommand>, output: &BankOutput) -> (EventType, Json) {
        match output {
            BankOutput::Transfer(TransferResult::Ok) => (EventType::Ok, op.value.clone()),
            // Refused (insufficient funds): certainly not applied.
            BankOutput::Transfer(_) => (EventType::Fail, op.value.clone()),
            BankOutput::ReadAll(balances) => (EventType::Ok, balances_json(balances)),
            BankOutput::Ledger(ledger) => (
                EventType::Ok,
                json!({"balances": balances_json(&ledger.balances), "transfers": ledger.transfers_ok}),
            ),
            _ => (EventType::Fail, op.value.clone()),
        }
    }

    fn final_op(&mut self) -> Option<PlannedOp<BankCommand>> {
        Some(PlannedOp { op: BankCommand::Ledger, f: "ledger", key: None, value: Json::Null, record: true })
    }

    fn check(&self, history: &[Event], budget: Duration) -> HistoryVerdict {
        let bank = check_bank(history, &self.spec());
        if !bank.ok {
            return HistoryVerdict {
                violation: Some(format!("bank: {}", bank.errors.join("; "))),
                unknown: false,
            };
        }
        check_linearizable(ModelKind::Bank, history, budget)
    }
}

/// Picks two distinct elements, in random order.
pub(crate) fn two_distinct<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> (T, T) {
    assert!(items.len() >= 2, "two distinct elements need two elements");
    let a = rng.gen_range(0..items.len());
    let b = (a + rng.gen_range(1..items.len())) % items.len();
    (items[a], items[b])
}
