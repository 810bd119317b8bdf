//! The checker agrees with a brute-force checker on thousands of small random histories.
//!
//! The brute force shares nothing with the checker but the `Event` type: it pairs events
//! itself, implements the register and key-value semantics itself on JSON values, never
//! splits by key, and decides linearizability straight from the definition: some subset
//! of the operations with unknown outcome, plus every `ok` operation, has an order that
//! respects real time (a before b iff a returned strictly before b was invoked) and in
//! which every operation returns what it returned.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};
use synod_check::{check, CheckOptions, Event, EventType, ModelKind, Verdict};

const OPS_MAX: usize = 7;
const PROCESSES: u8 = 3;

/// One random choice of the generator; `build` turns a list of them into a history.
#[derive(Clone, Debug)]
struct Step {
    process: u8,
    f: u8,
    a: u8,
    b: u8,
    key: u8,
    outcome: u8,
    dt: u8,
}

fn step() -> impl Strategy<Value = Step> {
    (0..PROCESSES, 0u8..5, 0u8..4, 0u8..4, 0u8..2, 0u8..10, 0u8..3)
        .prop_map(|(process, f, a, b, key, outcome, dt)| Step { process, f, a, b, key, outcome, dt })
}

/// A small value domain, so that reads often (not always) match.
fn int_value(i: u8) -> Value {
    match i {
        0 => Value::Null,
        i => json!(i64::from(i) - 1),
    }
}

fn str_value(i: u8) -> Value {
    match i {
        0 => Value::Null,
        1 => json!(""),
        2 => json!("x"),
        3 => json!("xy"),
        _ => json!("zz"),
    }
}

/// Builds a well-formed history: each step either completes its process's open operation
/// (ok 70%, fail 10%, info 20%) or invokes a new one. Operations still open at the end
/// stay pending. Times never decrease and are sometimes equal.
fn build(steps: &[Step], kv: bool) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    let mut open: BTreeMap<u8, usize> = BTreeMap::new();
    let mut invoked = 0;
    let mut t = 0u64;
    for s in steps {
        t += u64::from(s.dt.min(1));
        let p = u64::from(s.process);
        if let Some(i) = open.remove(&s.process) {
            let inv = events[i].clone();
            let kind = match s.outcome {
                0..=6 => EventType::Ok,
                7 => EventType::Fail,
                _ => EventType::Info,
            };
            let value = match (inv.f.as_str(), kind) {
                ("read" | "get", EventType::Ok) => {
                    if kv {
                        str_value(s.a)
                    } else {
                        int_value(s.a)
                    }
                }
                ("read" | "get", _) => Value::Null,
                _ => inv.value.clone(),
            };
            events.push(Event { process: p, kind, f: inv.f, key: inv.key, value, time: t });
        } else if invoked < OPS_MAX {
            invoked += 1;
            let (f, value) = if kv {
                match s.f {
                    0 => ("get", Value::Null),
                    // "zz" is written but never read: a timed-out put of it is unobservable.
                    1 => ("put", str_value(1 + (s.a + s.b) % 4)),
                    2 => ("append", json!(if s.a % 2 == 0 { "x" } else { "y" })),
                    3 => ("delete", Value::Null),
                    _ => ("cas", json!([str_value(s.a), str_value(s.b.max(1))])),
                }
            } else {
                match s.f {
                    0 | 1 => ("read", Value::Null),
                    // 3 and 4 are written but never read: a timed-out write of them is
                    // unobservable.
                    2 | 3 => ("write", int_value(1 + (s.a + s.b) % 5)),
                    _ => ("cas", json!([int_value(s.a), int_value(s.b.max(1))])),
                }
            };
            let key = kv.then(|| ["a", "b"][usize::from(s.key)].to_string());
            open.insert(s.process, events.len());
            events.push(Event { process: p, kind: EventType::Invoke, f: f.into(), key, value, time: t });
        }
    }
    events
}

// ---- the brute force ----

#[derive(Clone, Debug)]
struct Op {
    f: String,
    key: String,
    input: Value,
    output: Value,
    call: u64,
    /// `None`: unknown outcome, returns at +infinity.
    ret: Option<u64>,
}

fn pair(events: &[Event]) -> Vec<Op> {
    let mut ops: Vec<Op> = Vec::new();
    let mut failed = Vec::new();
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    for e in events {
        match e.kind {
            EventType::Invoke => {
                open.insert(e.process, ops.len());
                ops.push(Op {
                    f: e.f.clone(),
                    key: e.key.clone().unwrap_or_default(),
                    input: e.value.clone(),
                    output: Value::Null,
                    call: e.time,
                    ret: None,
                });
            }
            _ => {
                let i = open.remove(&e.process).expect("well-formed");
                match e.kind {
                    EventType::Ok => {
                        ops[i].ret = Some(e.time);
                        ops[i].output = e.value.clone();
                    }
                    EventType::Fail => failed.push(i),
                    _ => {}
                }
            }
        }
    }
    ops.into_iter().enumerate().filter(|(i, _)| !failed.contains(i)).map(|(_, o)| o).collect()
}

/// Applies `op` to `state` (key -> value; absent = missing), or `None` if it cannot
/// return what it returned.
fn apply(state: &BTreeMap<String, Value>, op: &Op, empty: bool) -> Option<BTreeMap<String, Value>> {
    let norm = |v: &Value| if empty && v.is_null() { json!("") } else { v.clone() };
    let cur = norm(state.get(&op.key).unwrap_or(&Value::Null));
    let known = op.ret.is_some();
    let mut next = state.clone();
    let set = |next: &mut BTreeMap<String, Value>, v: Value| {
        next.insert(op.key.clone(), v);
    };
    match op.f.as_str() {
        "read" | "get" => {
            if known && norm(&op.output) != cur {
                return None;
            }
        }
        "write" | "put" => set(&mut next, norm(&op.input)),
        "delete" => set(&mut next, norm(&Value::Null)),
        "append" => {
            let s = match &cur {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                _ => return None,
            };
            set(&mut next, json!(format!("{s}{}", op.input.as_str().unwrap())));
        }
        "cas" => {
            let (exp, new) = (norm(&op.input[0]), norm(&op.input[1]));
            if cur == exp {
                set(&mut next, new);
            } else if known {
                return None;
            }
        }
        f => panic!("unknown f {f}"),
    }
    Some(next)
}

fn brute_force(events: &[Event], empty: bool) -> bool {
    let ops = pair(events);
    let unknown: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].ret.is_none()).collect();
    // Every subset of the unknown-outcome operations may be the ones that took effect.
    (0..1u32 << unknown.len()).any(|mask| {
        let included: Vec<usize> = (0..ops.len())
            .filter(|&i| match unknown.iter().position(|&u| u == i) {
                Some(bit) => mask & (1 << bit) != 0,
                None => true,
            })
            .collect();
        let mut placed = vec![false; ops.len()];
        orders(&ops, &included, &mut placed, &BTreeMap::new(), empty)
    })
}

/// Depth-first over the orders of `included` that respect real time.
fn orders(
    ops: &[Op],
    included: &[usize],
    placed: &mut [bool],
    state: &BTreeMap<String, Value>,
    empty: bool,
) -> bool {
    if included.iter().all(|&i| placed[i]) {
        return true;
    }
    for &i in included {
        if placed[i] {
            continue;
        }
        // Every included op that returned before `i` was invoked must already be placed.
        let ready = included
            .iter()
            .all(|&j| placed[j] || j == i || !matches!(ops[j].ret, Some(r) if r < ops[i].call));
        if !ready {
            continue;
        }
        if let Some(next) = apply(state, &ops[i], empty) {
            placed[i] = true;
            let ok = orders(ops, included, placed, &next, empty);
            placed[i] = false;
            if ok {
                return true;
            }
        }
    }
    false
}

fn cross_check(kv: bool, empty: bool, seed: u8) {
    let config = Config { cases: 4000, failure_persistence: None, ..Config::default() };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let (linearizable, not) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let model = if kv { ModelKind::Kv } else { ModelKind::Register };
    let opts = CheckOptions { kv_missing_is_empty: empty, ..CheckOptions::default() };
    runner
        .run(&prop::collection::vec(step(), 4..24), |steps| {
            let events = build(&steps, kv);
            let expected = brute_force(&events, empty);
            let report = check(model, &events, &opts);
            let got = match report.verdict {
                Verdict::Linearizable => true,
                Verdict::NotLinearizable => false,
                Verdict::Unknown => panic!("unknown on a tiny history: {:?}", report.explanation),
            };
            prop_assert_eq!(got, expected, "history: {:#?}", events);
            if expected { &linearizable } else { &not }.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
    let (l, n) = (linearizable.into_inner(), not.into_inner());
    println!("{model:?} (missing is empty: {empty}): {l} linearizable, {n} not");
    assert!(l >= 500 && n >= 500, "both verdicts must be well represented: {l} linearizable, {n} not");
}

#[test]
fn register_checker_agrees_with_brute_force() {
    cross_check(false, false, 1);
}

#[test]
fn kv_checker_agrees_with_brute_force() {
    cross_check(true, false, 2);
}

#[test]
fn kv_checker_with_missing_as_empty_agrees_with_brute_force() {
    cross_check(true, true, 3);
}
