//! Workloads: concurrent clients that each run one operation at a time against a random
//! node, with a timeout and no retries, and record every invocation and completion in the
//! checker's JSON-lines history (synod-check's value conventions, as the simulator's
//! workloads record them).
//!
//! **An outcome is recorded as `fail` only when the operation certainly did not take
//! effect**: the connection never opened; a 4xx; a 503 the server sends *before* handing
//! the command on (`no_quorum` when it already knew it had no majority, `busy` when its
//! input queue was full); or an answer that says the state machine refused the command
//! (a cas that did not swap, a transfer refused for funds). Everything else that is not
//! an answer — a timeout, a reset, a 503 after the command was queued — is `info`: it may
//! take effect at any time, or never. A write with an unknown outcome is first retried
//! with the same session (see `client_loop`); only if no retry gets an answer is it
//! `info`, and the client continues as a new process (Jepsen's convention), since its
//! old operation may still be in flight.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value as Json};
use synod_check::{Event, EventType};

use crate::http::{self, Reply, Sent};

/// Every event of the run, in time order, and the writes the log acknowledged.
pub struct Recorder {
    start: Instant,
    inner: Mutex<Recorded>,
}

#[derive(Default)]
pub struct Recorded {
    pub events: Vec<Event>,
    /// (invoked, completed) in ns of every mutating operation a node answered with 200:
    /// proof that the log was deciding commands, for recovery times.
    pub acks: Vec<(u64, u64)>,
}

impl Recorder {
    pub fn new(start: Instant) -> Recorder {
        Recorder { start, inner: Mutex::new(Recorded::default()) }
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Appends an event, timed under the lock so that times never decrease in file order.
    fn record(&self, process: u64, kind: EventType, op: &Op, value: Json) -> u64 {
        let mut inner = self.inner.lock().expect("recorder lock");
        let time = self.now_ns();
        inner.events.push(Event { process, kind, f: op.f.to_string(), key: op.key.clone(), value, time });
        time
    }

    fn ack(&self, invoked: u64, completed: u64) {
        self.inner.lock().expect("recorder lock").acks.push((invoked, completed));
    }

    pub fn take(&self) -> Recorded {
        std::mem::take(&mut *self.inner.lock().expect("recorder lock"))
    }

    /// Completed operations so far by outcome: (ok, fail, info).
    pub fn counts(&self) -> (u64, u64, u64) {
        let inner = self.inner.lock().expect("recorder lock");
        let mut counts = (0, 0, 0);
        for e in &inner.events {
            match e.kind {
                EventType::Ok => counts.0 += 1,
                EventType::Fail => counts.1 += 1,
                EventType::Info => counts.2 += 1,
                EventType::Invoke => {}
            }
        }
        counts
    }
}

/// One operation: how the history shows it and the request that performs it.
#[derive(Clone, Debug)]
pub struct Op {
    pub f: &'static str,
    pub key: Option<String>,
    /// The invocation's value.
    pub value: Json,
    pub method: &'static str,
    pub path: String,
    pub body: Option<String>,
    /// Goes through the log as a command with the client's session headers.
    pub mutating: bool,
}

/// What the clients run and how a 200 answer is recorded.
pub trait Workload: Sync {
    /// Unrecorded preparation (the bank opens its accounts).
    fn setup(&self, nodes: &[SocketAddr]) -> Result<(), String>;
    fn next_op(&self, rng: &mut ChaCha8Rng) -> Op;
    /// The completion of `op` that a node answered with 200: ok or fail, and its value.
    fn complete(&self, op: &Op, reply: &Reply) -> (EventType, Json);
    /// Operations run after the cluster healed and converged (final reads).
    fn final_ops(&self) -> Vec<Op>;
}

/// Classifies one request's fate (see the module docs).
pub fn outcome(workload: &dyn Workload, op: &Op, sent: &Sent) -> (EventType, Json) {
    match sent {
        Sent::NotSent(_) => (EventType::Fail, op.value.clone()),
        Sent::Unknown(_) => (EventType::Info, op.value.clone()),
        Sent::Reply(reply) if reply.status == 200 => workload.complete(op, reply),
        // 409 session_expired: this sequence number's reply is gone, not its effect.
        Sent::Reply(reply) if (400..500).contains(&reply.status) && reply.status != 409 => {
            (EventType::Fail, op.value.clone())
        }
        Sent::Reply(reply) if reply.status == 503 && refused_before_queueing(reply) => {
            (EventType::Fail, op.value.clone())
        }
        Sent::Reply(_) => (EventType::Info, op.value.clone()),
    }
}

/// The two 503s the server sends before the command reaches the protocol thread. The
/// same codes are also used after (a node that lost its majority while the call was
/// pending answers `no_quorum` too), so the message decides; should it ever change, the
/// outcome falls back to `info`, which is always safe.
fn refused_before_queueing(reply: &Reply) -> bool {
    let (code, message) = (reply.error_code().unwrap_or_default(), reply.error_message());
    (code == "no_quorum" && message.starts_with("this node does not currently reach a majority"))
        || (code == "busy" && message.starts_with("the node's input queue is full"))
}

/// How the clients behave.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub clients: usize,
    /// A request not answered within this long is `info`.
    pub op_timeout: Duration,
    pub connect_timeout: Duration,
    /// Each client waits a random time up to this between operations (bounds the load).
    pub think_max: Duration,
    /// How long a client retries an operation whose outcome is unknown before it
    /// records it as `info`.
    pub retry_window: Duration,
    pub seed: u64,
}

/// A session id for `process`, unique to this run (the server requires 1..2^63).
fn session_id(seed: u64, process: u64) -> u64 {
    (((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) << 24) | (process & 0xFF_FFFF)).max(1)
        & (u64::MAX >> 2)
}

/// Runs one request of `op` against `node` with the session's headers.
pub fn send(op: &Op, node: SocketAddr, session: Option<(u64, u64)>, options: &ClientOptions) -> Sent {
    let headers: Vec<(&str, String)> = match session {
        Some((client, seq)) => vec![("synod-client-id", client.to_string()), ("synod-seq", seq.to_string())],
        None => Vec::new(),
    };
    http::request(
        node,
        op.method,
        &op.path,
        &headers,
        op.body.as_deref(),
        options.connect_timeout,
        options.op_timeout,
    )
}

/// What every client shares.
#[derive(Clone, Copy)]
pub struct Clients<'a> {
    pub workload: &'a dyn Workload,
    /// The nodes clients may use: the members. The membership nemesis adds a node once it
    /// is promoted and takes one out before removing it, so that no client sends to a
    /// node that left (one already under way is recorded by what it got back, as always).
    pub nodes: &'a RwLock<Vec<SocketAddr>>,
    pub recorder: &'a Recorder,
    pub options: &'a ClientOptions,
    /// Set to end the workload early.
    pub stop: &'a AtomicBool,
    pub until: Instant,
}

/// One client: operations until `stop` or `until`, each recorded.
pub fn client_loop(index: usize, clients: &Clients<'_>, mut rng: ChaCha8Rng) {
    let Clients { workload, nodes, recorder, options, stop, until } = *clients;
    let pick = |rng: &mut ChaCha8Rng| {
        let nodes = nodes.read().expect("client targets lock");
        nodes[rng.gen_range(0..nodes.len())]
    };
    let mut process = index as u64;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        let op = workload.next_op(&mut rng);
        let node = pick(&mut rng);
        let session = op.mutating.then(|| {
            seq += 1;
            (session_id(options.seed, process), seq)
        });
        let invoked = recorder.record(process, EventType::Invoke, &op, op.value.clone());
        let mut sent = send(&op, node, session, options);
        let (mut kind, mut value) = outcome(workload, &op, &sent);
        // An unknown outcome is retried with the same session and sequence number, on
        // other nodes, as the client library does: the server applies the command at
        // most once and answers a repeat with the first reply. Only an answer settles
        // it; a refusal of the retry says nothing about the original.
        let retry_until = Instant::now() + options.retry_window;
        while op.mutating && kind == EventType::Info && Instant::now() < retry_until {
            std::thread::sleep(Duration::from_millis(rng.gen_range(100..300)));
            let retry = send(&op, pick(&mut rng), session, options);
            if matches!(&retry, Sent::Reply(r) if r.status == 200) {
                (kind, value) = outcome(workload, &op, &retry);
                sent = retry;
            }
        }
        let completed = recorder.record(process, kind, &op, value);
        if op.mutating && matches!(&sent, Sent::Reply(r) if r.status == 200) {
            recorder.ack(invoked, completed);
        }
        let mut pause = Duration::from_micros(rng.gen_range(0..=options.think_max.as_micros() as u64));
        match kind {
            EventType::Info => {
                process += options.clients as u64;
                seq = 0;
                pause += Duration::from_millis(50);
            }
            // Do not spin against a dead node.
            EventType::Fail if !matches!(&sent, Sent::Reply(r) if r.status == 200) => {
                pause += Duration::from_millis(50)
            }
            _ => {}
        }
        std::thread::sleep(pause);
    }
}

/// Runs `op` against the nodes in turn until one answers 200, for at most `within`;
/// recorded as one operation of `process` (final reads after healing).
pub fn run_recorded_until_answered(
    workload: &dyn Workload,
    op: &Op,
    process: u64,
    nodes: &[SocketAddr],
    recorder: &Recorder,
    options: &ClientOptions,
    within: Duration,
) -> bool {
    assert!(!op.mutating, "final operations are reads");
    let deadline = Instant::now() + within;
    for attempt in 0usize.. {
        let node = nodes[attempt % nodes.len()];
        recorder.record(process, EventType::Invoke, op, op.value.clone());
        let sent = send(op, node, None, options);
        let (kind, value) = outcome(workload, op, &sent);
        recorder.record(process, kind, op, value);
        if kind == EventType::Ok {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    unreachable!()
}

fn int_or_text(text: Option<&str>) -> Json {
    match text {
        None => Json::Null,
        Some(t) => t.parse::<i64>().map(|v| json!(v)).unwrap_or_else(|_| json!(t)),
    }
}

/// Jepsen's register workload on the key-value store: get, put, cas and delete on a few
/// keys at a time, every written value unique. A key retires after `ops_per_key`
/// operations and a fresh one takes its place, which keeps each key's history short
/// enough to check however long the run.
pub struct Register {
    keys: Mutex<Keys>,
    next_value: AtomicU64,
    ops_per_key: u32,
}

struct Keys {
    /// (name, operations so far, last value sent).
    active: Vec<(String, u32, Option<i64>)>,
    used: Vec<String>,
}

/// Final reads cover at most this many keys (the most recent ones).
const FINAL_KEYS_MAX: usize = 5_000;

impl Register {
    pub fn new(keys: usize, ops_per_key: u32) -> Register {
        let active: Vec<_> = (0..keys).map(|k| (format!("r{k}"), 0, None)).collect();
        let used = active.iter().map(|k| k.0.clone()).collect();
        Register { keys: Mutex::new(Keys { active, used }), next_value: AtomicU64::new(1), ops_per_key }
    }

    fn path(key: &str) -> String {
        format!("/v1/kv/{key}")
    }
}

impl Workload for Register {
    fn setup(&self, _nodes: &[SocketAddr]) -> Result<(), String> {
        Ok(())
    }

    fn next_op(&self, rng: &mut ChaCha8Rng) -> Op {
        let mut keys = self.keys.lock().expect("keys lock");
        let slot = rng.gen_range(0..keys.active.len());
        if keys.active[slot].1 >= self.ops_per_key {
            let name = format!("r{}", keys.used.len());
            keys.used.push(name.clone());
            keys.active[slot] = (name, 0, None);
        }
        let (key, uses, last) = &mut keys.active[slot];
        *uses += 1;
        let key = key.clone();
        let fresh = || self.next_value.fetch_add(1, Ordering::Relaxed) as i64;
        let (f, value, method, path, body, mutating) = match rng.gen_range(0..100) {
            0..=39 => ("get", Json::Null, "GET", Self::path(&key), None, false),
            40..=74 => {
                let v = fresh();
                *last = Some(v);
                ("put", json!(v), "PUT", Self::path(&key), Some(json!({"value": v.to_string()})), true)
            }
            75..=94 => {
                let expected = last.filter(|_| rng.gen_bool(0.8));
                let new = fresh();
                *last = Some(new);
                let body = json!({"expected": expected.map(|e| e.to_string()), "new": new.to_string()});
                ("cas", json!([expected, new]), "POST", format!("/v1/kv/{key}/cas"), Some(body), true)
            }
            _ => {
                *last = None;
                ("delete", Json::Null, "DELETE", Self::path(&key), None, true)
            }
        };
        Op { f, key: Some(key), value, method, path, body: body.map(|b| b.to_string()), mutating }
    }

    fn complete(&self, op: &Op, reply: &Reply) -> (EventType, Json) {
        let body = reply.json().unwrap_or(Json::Null);
        match op.f {
            "get" => (EventType::Ok, int_or_text(body.get("value").and_then(Json::as_str))),
            "cas" if body.get("succeeded") == Some(&json!(true)) => (EventType::Ok, op.value.clone()),
            "cas" if body.get("succeeded") == Some(&json!(false)) => (EventType::Fail, op.value.clone()),
            "put" | "delete" => (EventType::Ok, op.value.clone()),
            // A 200 we cannot read: it may have been applied.
            _ => (EventType::Info, op.value.clone()),
        }
    }

    fn final_ops(&self) -> Vec<Op> {
        let keys = self.keys.lock().expect("keys lock");
        let skip = keys.used.len().saturating_sub(FINAL_KEYS_MAX);
        keys.used[skip..]
            .iter()
            .map(|key| Op {
                f: "get",
                key: Some(key.clone()),
                value: Json::Null,
                method: "GET",
                path: Self::path(key),
                body: None,
                mutating: false,
            })
            .collect()
    }
}

/// Jepsen's bank: transfers between a few accounts and reads of every balance, the
/// accounts opened before the history starts. Amounts go up to half the initial balance,
/// so overdrafts are tried (and must be refused).
pub struct Bank {
    pub accounts: u64,
    pub initial_balance: u64,
    next_transfer: AtomicU64,
}

impl Bank {
    pub fn new(accounts: u64, initial_balance: u64) -> Bank {
        assert!(accounts >= 2, "transfers need two accounts");
        Bank { accounts, initial_balance, next_transfer: AtomicU64::new(1) }
    }

    /// The accounts and their initial balances, as the bank checker wants them.
    pub fn initial(&self) -> BTreeMap<String, i64> {
        (0..self.accounts).map(|a| (a.to_string(), self.initial_balance as i64)).collect()
    }

    fn read_op() -> Op {
        Op {
            f: "read",
            key: None,
            value: Json::Null,
            method: "GET",
            path: "/v1/bank/accounts".into(),
            body: None,
            mutating: false,
        }
    }
}

impl Workload for Bank {
    fn setup(&self, nodes: &[SocketAddr]) -> Result<(), String> {
        let options = ClientOptions {
            clients: 1,
            op_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            think_max: Duration::ZERO,
            retry_window: Duration::ZERO,
            seed: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        for account in 0..self.accounts {
            let body = json!({"account": account, "initial_balance": self.initial_balance}).to_string();
            let op = Op {
                f: "open",
                key: None,
                value: Json::Null,
                method: "POST",
                path: "/v1/bank/accounts".into(),
                body: Some(body),
                mutating: true,
            };
            // Opening is idempotent (`already_exists` with the balance), so plain retries
            // are safe; the session makes them exactly-once as well.
            let session = (session_id(u64::MAX, account + 1), 1);
            let mut attempt = 0usize;
            loop {
                let node = nodes[attempt % nodes.len()];
                match send(&op, node, Some(session), &options) {
                    Sent::Reply(r) if r.status == 200 => break,
                    other if Instant::now() > deadline => {
                        return Err(format!("cannot open account {account}: {other:?}"))
                    }
                    _ => std::thread::sleep(Duration::from_millis(200)),
                }
                attempt += 1;
            }
        }
        Ok(())
    }

    fn next_op(&self, rng: &mut ChaCha8Rng) -> Op {
        if rng.gen_bool(0.25) {
            return Self::read_op();
        }
        let from = rng.gen_range(0..self.accounts);
        let to = (from + rng.gen_range(1..self.accounts)) % self.accounts;
        let amount = rng.gen_range(1..=(self.initial_balance / 2).max(1));
        let id = self.next_transfer.fetch_add(1, Ordering::Relaxed);
        let value = json!({"id": id, "from": from.to_string(), "to": to.to_string(), "amount": amount});
        let body = json!({"id": id, "from": from, "to": to, "amount": amount}).to_string();
        Op {
            f: "transfer",
            key: None,
            value,
            method: "POST",
            path: "/v1/bank/transfers".into(),
            body: Some(body),
            mutating: true,
        }
    }

    fn complete(&self, op: &Op, reply: &Reply) -> (EventType, Json) {
        let body = reply.json().unwrap_or(Json::Null);
        match op.f {
            "read" => match body.get("balances").and_then(Json::as_object) {
                Some(balances) => (EventType::Ok, Json::Object(balances.clone())),
                None => (EventType::Fail, Json::Null),
            },
            "transfer" => match body.get("result").and_then(Json::as_str) {
                Some("ok") => (EventType::Ok, op.value.clone()),
                // The ledger refused it (insufficient funds, ...): state untouched.
                Some(_) => (EventType::Fail, op.value.clone()),
                None => (EventType::Info, op.value.clone()),
            },
            _ => (EventType::Info, op.value.clone()),
        }
    }

    fn final_ops(&self) -> Vec<Op> {
        vec![Self::read_op()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn reply(status: u16, body: Json) -> Sent {
        Sent::Reply(Reply { status, body: body.to_string(), location: None })
    }

    #[test]
    fn only_refusals_before_queueing_count_as_fail() {
        let w = Register::new(1, 10);
        let op = w.next_op(&mut ChaCha8Rng::seed_from_u64(1));
        let early = json!({"error": {"code": "no_quorum", "message": "this node does not currently reach a majority with a leader"}});
        let late = json!({"error": {"code": "no_quorum", "message": "this node lost its majority while the call was pending"}});
        assert_eq!(outcome(&w, &op, &reply(503, early)).0, EventType::Fail);
        assert_eq!(outcome(&w, &op, &reply(503, late)).0, EventType::Info);
        assert_eq!(outcome(&w, &op, &reply(503, json!({"error": {"code": "timeout"}}))).0, EventType::Info);
        assert_eq!(outcome(&w, &op, &Sent::NotSent("refused".into())).0, EventType::Fail);
        assert_eq!(outcome(&w, &op, &Sent::Unknown("timed out".into())).0, EventType::Info);
    }

    #[test]
    fn register_keys_retire_after_their_quota() {
        let w = Register::new(1, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let keys: Vec<String> = (0..7).map(|_| w.next_op(&mut rng).key.unwrap()).collect();
        assert_eq!(keys, ["r0", "r0", "r0", "r1", "r1", "r1", "r2"]);
        assert_eq!(w.final_ops().len(), 3);
    }

    #[test]
    fn session_ids_are_valid_for_the_server() {
        for seed in [0, 1, u64::MAX] {
            for process in [0, 1, 1 << 30] {
                let id = session_id(seed, process);
                assert!(id != 0 && id < 1 << 63, "{id}");
            }
        }
    }
}
