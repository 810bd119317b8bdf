//! Histories: the events a test recorded, and the operations paired from them.
//!
//! An *event* is one line of a history: a process invoking an operation, or that
//! operation completing (`ok`, `fail`, or `info` = outcome unknown). An *operation* is an
//! invocation paired with the same process's next completion. A process has at most one
//! operation open at a time; an invocation with no completion by the end of the history
//! is treated exactly like one completed with `info`.

use std::fmt;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// What an event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The process starts an operation.
    Invoke,
    /// The operation completed and took effect.
    Ok,
    /// The operation completed and certainly did not take effect.
    Fail,
    /// The operation's outcome is unknown: it may take effect at any time after its
    /// invocation, or never.
    Info,
}

/// One line of a history. See the crate docs for the value conventions of each model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// register: `read|write|cas`; kv: `get|put|append|delete|cas`;
    /// bank: `transfer|read|ledger`.
    pub f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default)]
    pub value: serde_json::Value,
    /// Nanoseconds; never decreasing in file order.
    pub time: u64,
}

/// A whole history in our own JSON-lines format: one [`Event`] per line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub events: Vec<Event>,
}

/// A history file could not be read. `line` is 1-based.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

impl History {
    /// Reads JSON lines. Blank lines are skipped; every other line must be one event, and
    /// times must never decrease.
    pub fn read_jsonl<R: BufRead>(reader: R) -> Result<History, ParseError> {
        let mut events = Vec::new();
        let mut last_time = 0u64;
        for (i, line) in reader.lines().enumerate() {
            let line_no = i + 1;
            let line =
                line.map_err(|e| ParseError { line: line_no, message: format!("cannot read: {e}") })?;
            if line.trim().is_empty() {
                continue;
            }
            let event: Event = serde_json::from_str(&line)
                .map_err(|e| ParseError { line: line_no, message: format!("not an event: {e}") })?;
            if event.time < last_time {
                return Err(ParseError {
                    line: line_no,
                    message: format!(
                        "time {} is earlier than the previous event's {}",
                        event.time, last_time
                    ),
                });
            }
            last_time = event.time;
            events.push(event);
        }
        Ok(History { events })
    }

    /// Writes one event per line.
    pub fn write_jsonl<W: Write>(&self, mut writer: W) -> std::io::Result<()> {
        for event in &self.events {
            serde_json::to_writer(&mut writer, event)?;
            writer.write_all(b"\n")?;
        }
        Ok(())
    }
}

/// How an operation ended, as far as the history knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Took effect; `output` holds what it returned.
    Ok,
    /// Certainly did not take effect.
    Fail,
    /// `info`, or still pending at the end of the history: may have taken effect at any
    /// time after its invocation, or never.
    Unknown,
}

/// An invocation paired with its completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    /// Position in the list returned by [`pair_operations`] (ordered by invocation).
    pub index: usize,
    pub process: u64,
    pub f: String,
    pub key: Option<String>,
    /// The invocation's value.
    pub input: serde_json::Value,
    /// The completion's value if the outcome is [`Outcome::Ok`], else `null`.
    pub output: serde_json::Value,
    pub outcome: Outcome,
    /// Invocation time.
    pub call: u64,
    /// Completion time as recorded (an `info` line has one; a pending op does not).
    pub completed: Option<u64>,
    /// Index of the invoke event in the event list.
    pub invoke_event: usize,
    /// Index of the completion event, if any.
    pub complete_event: Option<usize>,
}

impl Operation {
    /// The return time the checker uses: the completion time for `ok` and `fail`, and
    /// `None` (= +infinity) when the outcome is unknown.
    pub fn ret(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Ok | Outcome::Fail => self.completed,
            Outcome::Unknown => None,
        }
    }
}

/// A history whose events do not pair up into operations, or whose operations do not fit
/// the model. `event` indexes the offending event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryError {
    pub event: usize,
    pub message: String,
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {}: {}", self.event + 1, self.message)
    }
}

impl std::error::Error for HistoryError {}

/// Pairs each invocation with the same process's next completion. Operations come back in
/// invocation order; `fail` operations are kept (the models drop them) so that reports can
/// show them.
pub fn pair_operations(events: &[Event]) -> Result<Vec<Operation>, HistoryError> {
    use std::collections::HashMap;
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut ops: Vec<Operation> = Vec::new();
    let mut last_time = 0u64;
    for (i, e) in events.iter().enumerate() {
        let err = |message: String| HistoryError { event: i, message };
        if e.time < last_time {
            return Err(err(format!("time {} is earlier than the previous event's {}", e.time, last_time)));
        }
        last_time = e.time;
        match e.kind {
            EventType::Invoke => {
                if let Some(&j) = open.get(&e.process) {
                    return Err(err(format!(
                        "process {} invokes {} while its {} from event {} is still open",
                        e.process,
                        e.f,
                        ops[j].f,
                        ops[j].invoke_event + 1
                    )));
                }
                open.insert(e.process, ops.len());
                ops.push(Operation {
                    index: ops.len(),
                    process: e.process,
                    f: e.f.clone(),
                    key: e.key.clone(),
                    input: e.value.clone(),
                    output: serde_json::Value::Null,
                    outcome: Outcome::Unknown,
                    call: e.time,
                    completed: None,
                    invoke_event: i,
                    complete_event: None,
                });
            }
            EventType::Ok | EventType::Fail | EventType::Info => {
                let Some(j) = open.remove(&e.process) else {
                    return Err(err(format!(
                        "process {} completes {} but has no open invocation",
                        e.process, e.f
                    )));
                };
                let op = &mut ops[j];
                if op.f != e.f {
                    return Err(err(format!(
                        "process {} completes {} but its open invocation is {}",
                        e.process, e.f, op.f
                    )));
                }
                if e.key.is_some() && op.key.is_some() && e.key != op.key {
                    return Err(err(format!(
                        "process {} completes key {:?} but invoked key {:?}",
                        e.process, e.key, op.key
                    )));
                }
                op.completed = Some(e.time);
                op.complete_event = Some(i);
                op.outcome = match e.kind {
                    EventType::Ok => Outcome::Ok,
                    EventType::Fail => Outcome::Fail,
                    _ => Outcome::Unknown,
                };
                if e.kind == EventType::Ok {
                    op.output = e.value.clone();
                }
            }
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(process: u64, kind: EventType, f: &str, value: serde_json::Value, time: u64) -> Event {
        Event { process, kind, f: f.into(), key: None, value, time }
    }

    #[test]
    fn jsonl_round_trips() {
        let text = r#"{"process":3,"type":"invoke","f":"cas","key":"k1","value":[1,2],"time":1200}
{"process":3,"type":"ok","f":"cas","key":"k1","value":[1,2],"time":1300}
"#;
        let h = History::read_jsonl(text.as_bytes()).unwrap();
        assert_eq!(h.events.len(), 2);
        assert_eq!(h.events[0].kind, EventType::Invoke);
        let mut out = Vec::new();
        h.write_jsonl(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), text);
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let text = "{\"process\":1,\"type\":\"invoke\",\"f\":\"read\",\"time\":5}\n\nnot json\n";
        let e = History::read_jsonl(text.as_bytes()).unwrap_err();
        assert_eq!(e.line, 3);
    }

    #[test]
    fn pending_invocations_have_unknown_outcome_and_infinite_return() {
        use serde_json::json;
        let events = vec![
            ev(1, EventType::Invoke, "write", json!(1), 0),
            ev(2, EventType::Invoke, "read", json!(null), 1),
            ev(2, EventType::Ok, "read", json!(1), 2),
        ];
        let ops = pair_operations(&events).unwrap();
        assert_eq!(ops[0].outcome, Outcome::Unknown);
        assert_eq!(ops[0].ret(), None);
        assert_eq!(ops[1].ret(), Some(2));
        assert_eq!(ops[1].output, json!(1));
    }

    #[test]
    fn a_completion_without_invocation_is_an_error() {
        let events = vec![ev(1, EventType::Ok, "read", serde_json::Value::Null, 0)];
        assert_eq!(pair_operations(&events).unwrap_err().event, 0);
    }
}
