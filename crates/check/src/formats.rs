//! History file formats: our JSON lines, Jepsen's etcd logs, and Jepsen's key-value EDN
//! maps (the two Jepsen formats as redistributed with Porcupine; see
//! `testdata/README.md`).
//!
//! Every parser returns events plus, for each event, the 1-based source line it came from,
//! so that a history that does not pair up can still be reported by file line. Events read
//! from Jepsen files get their line number as `time`: Jepsen logs are in real-time order
//! and carry no usable clock.

use std::collections::HashMap;

use serde_json::Value;

use crate::history::{pair_operations, Event, EventType, History, ParseError};

/// A history file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Our own: one JSON [`Event`] per line.
    Jsonl,
    /// Jepsen etcd logs: `INFO  jepsen.util - 4\t:ok\t:read\t3`.
    Jepsen,
    /// Jepsen key-value maps: `{:process 0, :type :ok, :f :get, :key "7", :value ""}`.
    JepsenKv,
}

/// A parsed file: its events and, for each, its 1-based source line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    pub events: Vec<Event>,
    pub lines: Vec<usize>,
}

/// Parses `text` and checks that its events pair up into operations, so that any error in
/// the file is reported here with its line.
pub fn parse(format: Format, text: &str) -> Result<Parsed, ParseError> {
    let parsed = match format {
        Format::Jsonl => {
            let history = History::read_jsonl(text.as_bytes())?;
            let lines =
                text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, _)| i + 1).collect();
            Parsed { events: history.events, lines }
        }
        Format::Jepsen => parse_jepsen_etcd(text)?,
        Format::JepsenKv => parse_jepsen_kv(text)?,
    };
    debug_assert_eq!(parsed.events.len(), parsed.lines.len());
    if let Err(e) = pair_operations(&parsed.events) {
        return Err(ParseError { line: parsed.lines[e.event], message: e.message });
    }
    Ok(parsed)
}

/// Tracks each process's open invocation so that an `:info` line, which carries
/// `:timed-out` instead of a value, can take the invoked value.
#[derive(Default)]
struct OpenValues(HashMap<u64, Value>);

impl OpenValues {
    fn fix(&mut self, kind: EventType, process: u64, value: Value) -> Value {
        match kind {
            EventType::Invoke => {
                self.0.insert(process, value.clone());
                value
            }
            EventType::Info | EventType::Fail => {
                let invoked = self.0.remove(&process);
                if is_timeout(&value) {
                    invoked.unwrap_or(Value::Null)
                } else {
                    value
                }
            }
            EventType::Ok => {
                self.0.remove(&process);
                value
            }
        }
    }
}

fn is_timeout(v: &Value) -> bool {
    matches!(v, Value::String(s) if s.starts_with(':'))
}

fn event_type(keyword: &str) -> Option<EventType> {
    match keyword {
        ":invoke" => Some(EventType::Invoke),
        ":ok" => Some(EventType::Ok),
        ":fail" => Some(EventType::Fail),
        ":info" => Some(EventType::Info),
        _ => None,
    }
}

/// Parses a Jepsen etcd log. Fields are separated by tabs or runs of spaces. Lines that
/// are not client operations (nemesis, start/stop, anything without a numeric process and
/// an `:invoke|:ok|:fail|:info` type) are skipped.
pub fn parse_jepsen_etcd(text: &str) -> Result<Parsed, ParseError> {
    let mut out = Parsed::default();
    let mut open = OpenValues::default();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let Some(at) = line.find("jepsen.util") else { continue };
        let rest = &line[at + "jepsen.util".len()..];
        let Some(rest) = rest.trim_start().strip_prefix('-') else { continue };
        let mut fields = rest.split_whitespace();
        let Some(Ok(process)) = fields.next().map(str::parse::<u64>) else { continue };
        let Some(kind) = fields.next().and_then(event_type) else { continue };
        let err = |message: String| ParseError { line: line_no, message };
        let f = fields
            .next()
            .and_then(|f| f.strip_prefix(':'))
            .ok_or_else(|| err("operation has no :f".into()))?;
        let raw = fields.collect::<Vec<_>>().join(" ");
        let value = Edn::new(&raw).value_to_end().map_err(|m| err(format!("bad value {raw:?}: {m}")))?;
        let value = open.fix(kind, process, value);
        out.events.push(Event { process, kind, f: f.to_string(), key: None, value, time: line_no as u64 });
        out.lines.push(line_no);
    }
    Ok(out)
}

/// Parses Jepsen key-value histories: one EDN map per line with `:process`, `:type`,
/// `:f`, `:key` and `:value`. Blank lines and maps whose `:process` is not a number
/// (the nemesis) are skipped.
pub fn parse_jepsen_kv(text: &str) -> Result<Parsed, ParseError> {
    let mut out = Parsed::default();
    let mut open = OpenValues::default();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') {
            continue;
        }
        let err = |message: String| ParseError { line: line_no, message };
        let map = match Edn::new(trimmed).value_to_end().map_err(|m| err(m.to_string()))? {
            Value::Object(map) => map,
            _ => return Err(err("expected a map {:process .., :type .., ..}".into())),
        };
        let Some(process) = map.get("process").and_then(Value::as_u64) else {
            if map.contains_key("process") {
                continue;
            }
            return Err(err("map has no :process".into()));
        };
        let kind = map
            .get("type")
            .and_then(Value::as_str)
            .and_then(event_type)
            .ok_or_else(|| err(":type is not :invoke, :ok, :fail or :info".into()))?;
        let f = map
            .get("f")
            .and_then(Value::as_str)
            .and_then(|f| f.strip_prefix(':'))
            .ok_or_else(|| err(":f is not a keyword".into()))?;
        let key = match map.get("key") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        let value = map.get("value").cloned().unwrap_or(Value::Null);
        let value = open.fix(kind, process, value);
        out.events.push(Event { process, kind, f: f.to_string(), key, value, time: line_no as u64 });
        out.lines.push(line_no);
    }
    Ok(out)
}

/// Just enough EDN for Jepsen histories: `nil`, booleans, integers, strings, keywords
/// (kept as strings with their leading `:`), vectors and lists (as arrays) and maps with
/// keyword or string keys (as objects, keys without the `:`). Commas are whitespace.
struct Edn<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> Edn<'a> {
    fn new(s: &'a str) -> Self {
        Edn { s: s.as_bytes(), at: 0 }
    }

    fn value_to_end(mut self) -> Result<Value, &'static str> {
        let v = self.value()?;
        self.skip_ws();
        if self.at != self.s.len() {
            return Err("trailing characters after the value");
        }
        Ok(v)
    }

    fn skip_ws(&mut self) {
        while self.at < self.s.len() && (self.s[self.at].is_ascii_whitespace() || self.s[self.at] == b',') {
            self.at += 1;
        }
    }

    fn value(&mut self) -> Result<Value, &'static str> {
        self.skip_ws();
        let Some(&c) = self.s.get(self.at) else { return Err("missing value") };
        match c {
            b'"' => self.string().map(Value::String),
            b'[' | b'(' => {
                let close = if c == b'[' { b']' } else { b')' };
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    match self.s.get(self.at) {
                        None => return Err("unclosed vector"),
                        Some(&b) if b == close => {
                            self.at += 1;
                            return Ok(Value::Array(items));
                        }
                        _ => items.push(self.value()?),
                    }
                }
            }
            b'{' => {
                self.at += 1;
                let mut map = serde_json::Map::new();
                loop {
                    self.skip_ws();
                    match self.s.get(self.at) {
                        None => return Err("unclosed map"),
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Value::Object(map));
                        }
                        _ => {
                            let k = match self.value()? {
                                Value::String(s) => s.strip_prefix(':').map(str::to_string).unwrap_or(s),
                                other => other.to_string(),
                            };
                            let v = self.value()?;
                            map.insert(k, v);
                        }
                    }
                }
            }
            _ => {
                let start = self.at;
                while self.at < self.s.len() {
                    let b = self.s[self.at];
                    if b.is_ascii_whitespace() || b",[](){}\"".contains(&b) {
                        break;
                    }
                    self.at += 1;
                }
                let tok = std::str::from_utf8(&self.s[start..self.at]).map_err(|_| "not UTF-8")?;
                match tok {
                    "" => Err("unexpected character"),
                    "nil" => Ok(Value::Null),
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    t if t.starts_with(':') => Ok(Value::String(t.to_string())),
                    t => t
                        .parse::<i64>()
                        .map(Value::from)
                        .map_err(|_| "not nil, a number, a string or a keyword"),
                }
            }
        }
    }

    fn string(&mut self) -> Result<String, &'static str> {
        debug_assert_eq!(self.s[self.at], b'"');
        self.at += 1;
        let mut out = Vec::new();
        while let Some(&b) = self.s.get(self.at) {
            self.at += 1;
            match b {
                b'"' => return String::from_utf8(out).map_err(|_| "not UTF-8"),
                b'\\' => {
                    let Some(&e) = self.s.get(self.at) else { break };
                    self.at += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        other => other,
                    });
                }
                other => out.push(other),
            }
        }
        Err("unterminated string")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn etcd_lines_with_tabs_or_spaces_parse_alike() {
        let text = "INFO  jepsen.util - 4\t:invoke\t:cas\t[2 4]\n\
                    INFO  jepsen.util - 1   :invoke :write  3\n\
                    INFO  jepsen.util - :nemesis\t:info\t:start\tnil\n\
                    INFO  jepsen.core - Run complete, writing\n\
                    INFO  jepsen.util - 4\t:fail\t:cas\t[2 4]\n\
                    INFO  jepsen.util - 1  :info   :write  :timed-out\n";
        let p = parse(Format::Jepsen, text).unwrap();
        assert_eq!(p.events.len(), 4);
        assert_eq!(p.events[0].value, json!([2, 4]));
        assert_eq!(p.events[1].value, json!(3));
        assert_eq!(p.events[3].kind, EventType::Info);
        assert_eq!(p.events[3].value, json!(3), "an :info takes the invoked value");
        assert_eq!(p.lines, vec![1, 2, 5, 6]);
    }

    #[test]
    fn kv_maps_parse() {
        let text = "{:process 0, :type :invoke, :f :append, :key \"0\", :value \"x 0 0 y\"}\n\
                    {:process 0, :type :ok, :f :append, :key \"0\", :value \"x 0 0 y\"}\n\
                    {:process :nemesis, :type :info, :f :start, :value nil}\n";
        let p = parse(Format::JepsenKv, text).unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.events[1].key.as_deref(), Some("0"));
        assert_eq!(p.events[1].value, json!("x 0 0 y"));
    }

    #[test]
    fn unpaired_events_are_reported_by_source_line() {
        let text = "\nINFO  jepsen.util - 4\t:ok\t:read\t3\n";
        let e = parse(Format::Jepsen, text).unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn malformed_values_are_reported_by_line() {
        let text = "INFO  jepsen.util - 4\t:invoke\t:cas\t[2 4\n";
        assert_eq!(parse(Format::Jepsen, text).unwrap_err().line, 1);
        let text = "{:process 0, :type :invoke, :f :get, :key \"1\", :value nil\n";
        assert_eq!(parse(Format::JepsenKv, text).unwrap_err().line, 1);
    }
}
