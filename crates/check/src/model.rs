//! Sequential specifications: what each operation does to the state, and which outputs it
//! may return. The search in `search.rs` asks only [`Model::step`].
//!
//! Operations are compiled once from the history's JSON values into small enums, so that
//! the hot loop never touches JSON. Unknown outcomes are compiled here too:
//! a read whose result is unknown observes nothing and changes nothing, so it is dropped;
//! a write, append or delete with unknown outcome has its normal effect wherever it is
//! linearized; a cas with unknown outcome applies if the comparison holds where it is
//! linearized and otherwise leaves the state alone. "Never took effect" needs no special
//! case: such an operation's return is +infinity, so it can be linearized after every
//! observation, where its effect is invisible.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use serde_json::Value;

use crate::history::{HistoryError, Operation, Outcome};

/// What one step of the sequential specification says.
pub(crate) enum Step<S> {
    /// The operation cannot return what it returned from this state.
    Invalid,
    /// Allowed; the state stays as it is.
    Unchanged,
    /// Allowed; this is the new state.
    Changed(S),
}

pub(crate) trait Model: Sync {
    type State: Clone + Eq + Hash + Send + Sync + fmt::Debug;
    type Op: Send + Sync + fmt::Debug;
    fn init(&self) -> Self::State;
    fn step(&self, state: &Self::State, op: &Self::Op) -> Step<Self::State>;
    fn show_state(&self, state: &Self::State) -> String;

    /// Which operations of a partition can be left out without changing its verdict, given
    /// each operation and whether its outcome is unknown. See
    /// [`crate::search::drop_unobservable`].
    fn unobservable(&self, ops: &[(&Self::Op, bool)]) -> Vec<bool> {
        vec![false; ops.len()]
    }

    /// Heap bytes a state holds (an upper bound), for the search's memory limit.
    fn state_heap_bytes(&self, _state: &Self::State) -> usize {
        0
    }

    /// Whether a partition with `op` in it is worth the lookahead below (which costs time
    /// on every step). The lookahead runs if any operation says so.
    fn wants_lookahead(&self, _op: &Self::Op) -> bool {
        false
    }

    /// Lookahead: whether `later`, not yet linearized, can still be valid at some point
    /// after `state` without any *reset* (see [`Model::is_reset`]) in between. A `false`
    /// (and no pending reset that could lead to `later`) lets the search drop `state` at
    /// once instead of finding out after trying every order of what lies between.
    fn may_precede(&self, _state: &Self::State, _later: &Self::Op) -> bool {
        true
    }

    /// Whether [`Model::may_precede`] can ever be false for `later`.
    fn constrains(&self, _later: &Self::Op) -> bool {
        false
    }

    /// Whether `op` may replace the state wholesale (a write, a cas).
    fn is_reset(&self, _op: &Self::Op) -> bool {
        true
    }

    /// Whether `later` can be valid some time after the reset `reset`.
    fn may_follow_reset(&self, _reset: &Self::Op, _later: &Self::Op) -> bool {
        true
    }
}

/// A register or one key of a key-value store.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Val {
    Absent,
    Int(i64),
    Str(Arc<str>),
}

impl fmt::Debug for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Absent => f.write_str("nil"),
            Val::Int(i) => write!(f, "{i}"),
            Val::Str(s) => write!(f, "{s:?}"),
        }
    }
}

#[derive(Debug)]
pub(crate) enum ValueOp {
    /// Observed this value.
    Read(Val),
    /// Sets the value (`put`, `write`, and `delete` as a write of [`Val::Absent`]).
    Write(Val),
    Append(Arc<str>),
    /// `applied`: the history says it succeeded; otherwise its outcome is unknown.
    Cas {
        expected: Val,
        new: Val,
        applied: bool,
    },
}

/// Register and key-value semantics (one key's sub-history at a time).
pub(crate) struct ValueModel {
    /// A missing key reads as `""`: `Absent` is then never a state; every absent value in
    /// the history is read as the empty string (Jepsen's key-value histories do this).
    pub missing_is_empty: bool,
}

impl ValueModel {
    fn norm(&self, v: Val) -> Val {
        if self.missing_is_empty && v == Val::Absent {
            Val::Str(Arc::from(""))
        } else {
            v
        }
    }

    fn val(&self, v: &Value) -> Result<Val, String> {
        let v = match v {
            Value::Null => Val::Absent,
            Value::String(s) => Val::Str(Arc::from(s.as_str())),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Val::Int(i),
                None => return Err(format!("value {n} is not a 64-bit integer")),
            },
            other => return Err(format!("value {other} is not null, an integer or a string")),
        };
        Ok(self.norm(v))
    }

    /// `None` when the operation has no place in the search: it failed, or it is a read
    /// whose result is unknown.
    pub fn compile(&self, op: &Operation) -> Result<Option<ValueOp>, HistoryError> {
        let err = |message: String| HistoryError { event: op.invoke_event, message };
        if op.outcome == Outcome::Fail {
            return Ok(None);
        }
        let known = op.outcome == Outcome::Ok;
        let compiled = match op.f.as_str() {
            "read" | "get" => {
                if !known {
                    return Ok(None);
                }
                ValueOp::Read(self.val(&op.output).map_err(err)?)
            }
            "write" | "put" => ValueOp::Write(self.val(&op.input).map_err(err)?),
            "delete" => ValueOp::Write(self.norm(Val::Absent)),
            "append" => match &op.input {
                Value::String(s) => ValueOp::Append(Arc::from(s.as_str())),
                other => return Err(err(format!("append value {other} is not a string"))),
            },
            "cas" => match &op.input {
                Value::Array(pair) if pair.len() == 2 => ValueOp::Cas {
                    expected: self.val(&pair[0]).map_err(err)?,
                    new: self.val(&pair[1]).map_err(err)?,
                    applied: known,
                },
                other => return Err(err(format!("cas value {other} is not [expected, new]"))),
            },
            other => {
                return Err(err(format!(
                "{other:?} is not a register or key-value operation (read|get|write|put|append|delete|cas)"
            )))
            }
        };
        Ok(Some(compiled))
    }
}

/// Whether the value can go from `from` to `to` by appends alone.
fn extends(from: &Val, to: &Val) -> bool {
    match (from, to) {
        (Val::Absent, Val::Str(_)) => true,
        (Val::Str(a), Val::Str(b)) => b.starts_with(&**a),
        (a, b) => a == b,
    }
}

impl Model for ValueModel {
    type State = Val;
    type Op = ValueOp;

    fn init(&self) -> Val {
        self.norm(Val::Absent)
    }

    fn step(&self, state: &Val, op: &ValueOp) -> Step<Val> {
        match op {
            ValueOp::Read(v) if v == state => Step::Unchanged,
            ValueOp::Read(_) => Step::Invalid,
            ValueOp::Write(v) if v == state => Step::Unchanged,
            ValueOp::Write(v) => Step::Changed(v.clone()),
            ValueOp::Append(s) => match state {
                Val::Absent => Step::Changed(Val::Str(s.clone())),
                Val::Str(old) => Step::Changed(Val::Str(Arc::from(format!("{old}{s}")))),
                // Appending to a number is not an operation of this store.
                Val::Int(_) => Step::Invalid,
            },
            ValueOp::Cas { expected, new, .. } if expected == state => {
                if new == state {
                    Step::Unchanged
                } else {
                    Step::Changed(new.clone())
                }
            }
            ValueOp::Cas { applied: true, .. } => Step::Invalid,
            ValueOp::Cas { applied: false, .. } => Step::Unchanged,
        }
    }

    fn show_state(&self, state: &Val) -> String {
        format!("{state:?}")
    }

    /// A write or cas with unknown outcome whose value nothing else in the partition
    /// mentions (no read returns it, no cas expects it, no other op writes it) and no
    /// append could extend: wherever it is linearized, nothing can observe the value until
    /// the next write replaces it (reads would return it, an `ok` cas would fail on it),
    /// so dropping it leaves every other operation's view unchanged; and a history that
    /// is linearizable without it is linearizable with it, placed last. This matters for
    /// histories with unique values and many timeouts (the simulator's), where every
    /// pending write would otherwise double the search space.
    fn unobservable(&self, ops: &[(&ValueOp, bool)]) -> Vec<bool> {
        if ops.iter().any(|(o, _)| matches!(o, ValueOp::Append(_))) {
            return vec![false; ops.len()];
        }
        let mut mentions: std::collections::HashMap<&Val, usize> = std::collections::HashMap::new();
        for (o, _) in ops {
            match o {
                ValueOp::Read(v) | ValueOp::Write(v) => *mentions.entry(v).or_default() += 1,
                ValueOp::Cas { expected, new, .. } => {
                    *mentions.entry(expected).or_default() += 1;
                    *mentions.entry(new).or_default() += 1;
                }
                ValueOp::Append(_) => unreachable!("checked above"),
            }
        }
        ops.iter()
            .map(|(o, unknown)| {
                *unknown
                    && match o {
                        ValueOp::Write(v) => mentions[v] == 1,
                        ValueOp::Cas { new, applied: false, .. } => mentions[new] == 1,
                        _ => false,
                    }
            })
            .collect()
    }

    fn state_heap_bytes(&self, state: &Val) -> usize {
        match state {
            // Counted in full although clones share it: an upper bound.
            Val::Str(s) => s.len() + 16,
            Val::Absent | Val::Int(_) => 0,
        }
    }

    /// Any later value is the current one or the last write's or cas's, extended by
    /// appends. This matters for Jepsen's append workload, where without it the search
    /// tries every order of the concurrent appends before the next read rules any out.
    /// (For plain registers it prunes too little to pay for itself: measured 2x slower
    /// on the etcd histories.)
    fn wants_lookahead(&self, op: &ValueOp) -> bool {
        matches!(op, ValueOp::Append(_))
    }

    fn may_precede(&self, state: &Val, later: &ValueOp) -> bool {
        match later {
            ValueOp::Read(v) => extends(state, v),
            _ => true,
        }
    }

    fn constrains(&self, later: &ValueOp) -> bool {
        matches!(later, ValueOp::Read(_))
    }

    fn is_reset(&self, op: &ValueOp) -> bool {
        matches!(op, ValueOp::Write(_) | ValueOp::Cas { .. })
    }

    fn may_follow_reset(&self, reset: &ValueOp, later: &ValueOp) -> bool {
        let written = match reset {
            ValueOp::Write(w) => w,
            ValueOp::Cas { new, .. } => new,
            ValueOp::Read(_) | ValueOp::Append(_) => return false,
        };
        match later {
            ValueOp::Read(v) => extends(written, v),
            _ => true,
        }
    }
}

/// The bank as one shared state: transfers move money, reads see every balance.
///
/// The initial balances are not part of the history, so the state starts *unknown*: it is
/// tracked as the net effect of the transfers so far, and the first read fixes it (initial
/// = read - effect). Overdrafts are not this model's business: whether a refused transfer
/// shows as `fail` is checked by [`crate::bank::check_bank`], which knows the balances.
pub(crate) struct BankModel {
    pub accounts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BankState {
    /// No read linearized yet: the net effect of the transfers so far, per account.
    Unknown(Vec<i64>),
    Known(Vec<i64>),
}

#[derive(Debug)]
pub(crate) enum BankOp {
    Transfer {
        from: usize,
        to: usize,
        amount: i64,
    },
    /// Balance per account; `None` where the read lacks the account (never valid).
    Read(Vec<Option<i64>>),
}

impl BankModel {
    /// Every account named anywhere in the operations, sorted.
    pub fn new(ops: &[Operation]) -> BankModel {
        let mut names = std::collections::BTreeSet::new();
        for op in ops {
            if let Some(t) = op.input.as_object() {
                for side in ["from", "to"] {
                    if let Some(a) = t.get(side).and_then(Value::as_str) {
                        names.insert(a.to_string());
                    }
                }
            }
            if let Some(b) = balances_of(op) {
                names.extend(b.keys().cloned());
            }
        }
        BankModel { accounts: names.into_iter().collect() }
    }

    fn index(&self, name: &str) -> usize {
        self.accounts.binary_search_by(|a| a.as_str().cmp(name)).expect("every account was collected")
    }

    pub fn compile(&self, op: &Operation) -> Result<Option<BankOp>, HistoryError> {
        let err = |message: String| HistoryError { event: op.invoke_event, message };
        if op.outcome == Outcome::Fail {
            return Ok(None);
        }
        match op.f.as_str() {
            "transfer" => {
                let t = crate::bank::Transfer::from_value(&op.input).map_err(err)?;
                Ok(Some(BankOp::Transfer {
                    from: self.index(&t.from),
                    to: self.index(&t.to),
                    amount: t.amount,
                }))
            }
            "read" | "ledger" => {
                if op.outcome != Outcome::Ok {
                    return Ok(None);
                }
                let balances = balances_of(op)
                    .ok_or_else(|| err(format!("{} result is not an object of account balances", op.f)))?;
                let mut read = vec![None; self.accounts.len()];
                for (name, v) in balances {
                    read[self.index(&name)] = Some(v);
                }
                Ok(Some(BankOp::Read(read)))
            }
            other => Err(err(format!("{other:?} is not a bank operation (transfer|read|ledger)"))),
        }
    }
}

/// The balances a `read` (its output) or a `ledger` (its output's `balances`) reports.
pub(crate) fn balances_of(op: &Operation) -> Option<BTreeMap<String, i64>> {
    let v = match op.f.as_str() {
        "read" => &op.output,
        "ledger" => op.output.get("balances")?,
        _ => return None,
    };
    v.as_object()?.iter().map(|(k, v)| Some((k.clone(), v.as_i64()?))).collect()
}

impl Model for BankModel {
    type State = BankState;
    type Op = BankOp;

    fn init(&self) -> BankState {
        BankState::Unknown(vec![0; self.accounts.len()])
    }

    fn step(&self, state: &BankState, op: &BankOp) -> Step<BankState> {
        match op {
            BankOp::Transfer { from, to, amount } => {
                if from == to || *amount == 0 {
                    return Step::Unchanged;
                }
                let mut next = state.clone();
                let v = match &mut next {
                    BankState::Unknown(v) | BankState::Known(v) => v,
                };
                v[*from] -= amount;
                v[*to] += amount;
                Step::Changed(next)
            }
            BankOp::Read(read) => {
                if read.iter().any(Option::is_none) {
                    return Step::Invalid;
                }
                match state {
                    BankState::Known(b) if b.iter().zip(read).all(|(b, r)| Some(*b) == *r) => Step::Unchanged,
                    BankState::Known(_) => Step::Invalid,
                    BankState::Unknown(_) => {
                        Step::Changed(BankState::Known(read.iter().map(|r| r.unwrap_or(0)).collect()))
                    }
                }
            }
        }
    }

    fn state_heap_bytes(&self, _state: &BankState) -> usize {
        8 * self.accounts.len()
    }

    fn show_state(&self, state: &BankState) -> String {
        match state {
            BankState::Unknown(d) => format!(
                "(no read yet; net transfers {})",
                self.accounts.iter().zip(d).map(|(a, d)| format!("{a}:{d:+}")).collect::<Vec<_>>().join(" ")
            ),
            BankState::Known(b) => {
                self.accounts.iter().zip(b).map(|(a, b)| format!("{a}:{b}")).collect::<Vec<_>>().join(" ")
            }
        }
    }
}
