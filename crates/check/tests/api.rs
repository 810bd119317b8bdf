//! The public API as the simulator uses it: `check` on in-memory events.

use serde_json::{json, Value};
use synod_check::{check, CheckOptions, Event, EventType, ModelKind, Verdict};

/// Builds histories event by event with increasing times.
#[derive(Default)]
struct H(Vec<Event>);

impl H {
    fn ev(mut self, process: u64, kind: EventType, f: &str, key: Option<&str>, value: Value) -> Self {
        let time = 10 * self.0.len() as u64;
        self.0.push(Event { process, kind, f: f.into(), key: key.map(str::to_string), value, time });
        self
    }
    fn invoke(self, p: u64, f: &str, v: Value) -> Self {
        self.ev(p, EventType::Invoke, f, None, v)
    }
    fn ok(self, p: u64, f: &str, v: Value) -> Self {
        self.ev(p, EventType::Ok, f, None, v)
    }
}

fn verdict(model: ModelKind, h: &H) -> Verdict {
    check(model, &h.0, &CheckOptions::default()).verdict
}

#[test]
fn a_stale_read_after_an_acknowledged_write_is_not_linearizable() {
    let h = H::default()
        .invoke(1, "write", json!(1))
        .ok(1, "write", json!(1))
        .invoke(2, "read", Value::Null)
        .ok(2, "read", Value::Null);
    let r = check(ModelKind::Register, &h.0, &CheckOptions::default());
    assert_eq!(r.verdict, Verdict::NotLinearizable);
    assert!(r.explanation.unwrap().contains("read -> nil"));
}

#[test]
fn a_failed_cas_takes_no_effect() {
    let h = H::default()
        .invoke(1, "cas", json!([null, 5]))
        .ev(1, EventType::Fail, "cas", None, json!([null, 5]))
        .invoke(2, "read", Value::Null)
        .ok(2, "read", Value::Null);
    assert_eq!(verdict(ModelKind::Register, &h), Verdict::Linearizable);
}

#[test]
fn an_info_write_may_take_effect_long_after_it_timed_out() {
    let h = H::default()
        .invoke(1, "write", json!(7))
        .ev(1, EventType::Info, "write", None, json!(7))
        .invoke(2, "read", Value::Null)
        .ok(2, "read", Value::Null)
        .invoke(3, "read", Value::Null)
        .ok(3, "read", json!(7));
    assert_eq!(verdict(ModelKind::Register, &h), Verdict::Linearizable);
}

#[test]
fn kv_keys_are_checked_independently_and_the_failing_key_is_named() {
    let h = H::default()
        .ev(1, EventType::Invoke, "put", Some("a"), json!("x"))
        .ev(1, EventType::Ok, "put", Some("a"), json!("x"))
        .ev(2, EventType::Invoke, "append", Some("b"), json!("y"))
        .ev(2, EventType::Ok, "append", Some("b"), json!("y"))
        .ev(3, EventType::Invoke, "get", Some("a"), Value::Null)
        .ev(3, EventType::Ok, "get", Some("a"), json!("x"))
        .ev(3, EventType::Invoke, "get", Some("b"), Value::Null)
        .ev(3, EventType::Ok, "get", Some("b"), json!("yy"));
    let r = check(ModelKind::Kv, &h.0, &CheckOptions::default());
    assert_eq!(r.verdict, Verdict::NotLinearizable);
    assert_eq!(r.failing_key.as_deref(), Some("b"));
    assert_eq!(r.partitions, 2);
}

#[test]
fn kv_missing_keys_read_as_empty_only_when_asked() {
    let h = H::default().ev(1, EventType::Invoke, "get", Some("k"), Value::Null).ev(
        1,
        EventType::Ok,
        "get",
        Some("k"),
        json!(""),
    );
    assert_eq!(verdict(ModelKind::Kv, &h), Verdict::NotLinearizable);
    let opts = CheckOptions { kv_missing_is_empty: true, ..CheckOptions::default() };
    assert_eq!(check(ModelKind::Kv, &h.0, &opts).verdict, Verdict::Linearizable);
}

#[test]
fn bank_reads_must_agree_with_the_transfers_between_them() {
    let t = json!({"id": 1, "from": "a", "to": "b", "amount": 5});
    let before = H::default().invoke(1, "read", Value::Null).ok(1, "read", json!({"a": 10, "b": 10}));
    // Whatever the initial balances were, the transfer moved 5 between the reads.
    let good = H(before.0.clone())
        .invoke(2, "transfer", t.clone())
        .ok(2, "transfer", t.clone())
        .invoke(1, "read", Value::Null)
        .ok(1, "read", json!({"a": 5, "b": 15}));
    assert_eq!(verdict(ModelKind::Bank, &good), Verdict::Linearizable);
    let lost = H(before.0)
        .invoke(2, "transfer", t.clone())
        .ok(2, "transfer", t)
        .invoke(1, "read", Value::Null)
        .ok(1, "read", json!({"a": 10, "b": 10}));
    assert_eq!(verdict(ModelKind::Bank, &lost), Verdict::NotLinearizable);
}

#[test]
fn a_malformed_history_is_unknown_with_the_reason() {
    let h = H::default().ok(1, "read", json!(1));
    let r = check(ModelKind::Register, &h.0, &CheckOptions::default());
    assert_eq!(r.verdict, Verdict::Unknown);
    assert!(r.explanation.unwrap().contains("no open invocation"));
}

#[test]
fn an_operation_the_model_does_not_know_is_unknown_with_the_reason() {
    let h = H::default().invoke(1, "increment", json!(1)).ok(1, "increment", json!(1));
    let r = check(ModelKind::Register, &h.0, &CheckOptions::default());
    assert_eq!(r.verdict, Verdict::Unknown);
    assert!(r.explanation.unwrap().contains("increment"));
}

/// The simulator's histories: unique values and many timeouts. Timed-out writes whose
/// value nobody read cannot matter and are left out of the search; without that, 60 of
/// them pending forever would make it exponential.
#[test]
fn timed_out_writes_nobody_read_are_left_out_of_the_search() {
    let mut h = H::default().invoke(0, "write", json!(1)).ok(0, "write", json!(1));
    for p in 1..=60 {
        h = h.invoke(p, "write", json!(1000 + p)).ev(p, EventType::Info, "write", None, json!(1000 + p));
    }
    let h = h.invoke(0, "read", Value::Null).ok(0, "read", json!(1)).invoke(0, "read", Value::Null).ok(
        0,
        "read",
        json!(1030),
    );
    let a = synod_check::analyze(ModelKind::Register, &h.0, &CheckOptions::default(), true).unwrap();
    assert_eq!(a.verdict, Verdict::Linearizable);
    // The write, the two reads, and the one timed-out write that was read.
    assert_eq!(a.partitions[0].ops.len(), 4);
}
