//! Simulated clients: one outstanding command each, timeouts, retries at other nodes,
//! give-ups, and the history they record.
//!
//! A client sends `Command { client_id, seq, op }` to a node it picks at random and
//! waits. On timeout it resends **the same client id and sequence number** to another
//! node: the cluster must apply it once however many nodes got it (exactly-once
//! sessions). After the give-up deadline it records `info` (the outcome is unknown: the
//! command may still be applied, at any later time) and carries on as a new process with
//! a fresh client id, as Jepsen's clients do. In the heal phase clients never give up:
//! every pending operation must complete (the liveness check).

use std::collections::{HashMap, VecDeque};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value as Json;
use synod_check::{Event, EventType};
use synod_core::{ClientId, Command, Output, Rejection};

use crate::workload::{Cmd, Out, PlannedOp, Workload};
use crate::OpCounts;

/// What the world must do for the clients.
pub(crate) enum ClientAction<C> {
    /// Hand `command` to `node` after the client-to-node latency.
    Send { node: usize, command: Command<C> },
    /// Wake `client` at `at_us` (ignored if `token` moved on by then).
    Wake { client: usize, token: u64, at_us: u64 },
}

/// What clients may do in the current phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mode {
    /// Start new operations.
    pub issue: bool,
    /// Give up on an operation after the deadline (record `info`).
    pub give_up: bool,
}

struct Pending<C> {
    planned: PlannedOp<C>,
    command: Command<C>,
    sends: u32,
    last_node: usize,
    give_up_at_us: u64,
}

struct Client<C> {
    process: u64,
    client_id: ClientId,
    seq: u64,
    /// Wake-ups carry the token they were scheduled with; a newer one cancels them.
    token: u64,
    /// Runs only its script (setup and the final operation), never drawn operations.
    scripted: bool,
    script: VecDeque<PlannedOp<C>>,
    pending: Option<Pending<C>>,
}

pub(crate) struct ClientTiming {
    pub nodes: usize,
    pub think_max_us: u64,
    pub timeout_us: u64,
    pub give_up_us: u64,
}

pub(crate) struct Clients<W: Workload> {
    pub workload: W,
    clients: Vec<Client<Cmd<W>>>,
    /// Routes outputs to clients. Looked up, never iterated (iteration order would be
    /// random).
    by_id: HashMap<ClientId, usize>,
    next_client_id: ClientId,
    next_process: u64,
    timing: ClientTiming,
    pub history: Vec<Event>,
    pub counts: OpCounts,
    /// When the first `Applied` output with slot ≥ the mark arrived (scenarios).
    pub commit_mark: Option<u64>,
    pub committed_after_mark_us: Option<u64>,
}

/// The scripted client (setup and final operations) is always index 0.
pub(crate) const SCRIPTED: usize = 0;

impl<W: Workload> Clients<W> {
    pub(crate) fn new(workload: W, count: usize, timing: ClientTiming) -> Clients<W> {
        let mut clients = Clients {
            workload,
            clients: Vec::new(),
            by_id: HashMap::new(),
            next_client_id: 1,
            next_process: 0,
            timing,
            history: Vec::new(),
            counts: OpCounts::default(),
            commit_mark: None,
            committed_after_mark_us: None,
        };
        for i in 0..=count {
            let client_id = clients.fresh_client_id(i);
            let process = clients.fresh_process();
            clients.clients.push(Client {
                process,
                client_id,
                seq: 0,
                token: 0,
                scripted: i == SCRIPTED,
                script: VecDeque::new(),
                pending: None,
            });
        }
        clients
    }

    fn fresh_client_id(&mut self, client: usize) -> ClientId {
        let id = self.next_client_id;
        self.next_client_id += 1;
        self.by_id.insert(id, client);
        id
    }

    fn fresh_process(&mut self) -> u64 {
        let process = self.next_process;
        self.next_process += 1;
        process
    }

    /// Gives the scripted client `ops` to run now.
    pub(crate) fn script(&mut self, now_us: u64, ops: Vec<PlannedOp<Cmd<W>>>) -> Vec<ClientAction<Cmd<W>>> {
        let client = &mut self.clients[SCRIPTED];
        client.script.extend(ops);
        client.token += 1;
        vec![ClientAction::Wake { client: SCRIPTED, token: client.token, at_us: now_us }]
    }

    /// The scripted client has nothing left to do.
    pub(crate) fn script_done(&self) -> bool {
        let client = &self.clients[SCRIPTED];
        client.script.is_empty() && client.pending.is_none()
    }

    /// Starts every drawing client, each after a random think time.
    pub(crate) fn start(&mut self, now_us: u64, rng: &mut ChaCha8Rng) -> Vec<ClientAction<Cmd<W>>> {
        let mut actions = Vec::new();
        for i in 0..self.clients.len() {
            if i != SCRIPTED {
                actions.push(self.wake_later(i, now_us, rng));
            }
        }
        actions
    }

    /// No client waits for anything.
    pub(crate) fn idle(&self) -> bool {
        self.clients.iter().all(|c| c.pending.is_none() && c.script.is_empty())
    }

    /// Pending operations, for a liveness report.
    pub(crate) fn describe_pending(&self) -> String {
        let pending: Vec<String> = self
            .clients
            .iter()
            .filter_map(|c| c.pending.as_ref())
            .map(|p| {
                format!(
                    "client {} seq {} {} (sent {} times, last to n{})",
                    p.command.client_id,
                    p.command.seq,
                    p.planned.f,
                    p.sends,
                    p.last_node + 1
                )
            })
            .collect();
        pending.join("; ")
    }

    fn wake_later(&mut self, i: usize, now_us: u64, rng: &mut ChaCha8Rng) -> ClientAction<Cmd<W>> {
        let client = &mut self.clients[i];
        client.token += 1;
        let at_us = now_us + rng.gen_range(0..=self.timing.think_max_us);
        ClientAction::Wake { client: i, token: client.token, at_us }
    }

    fn record(
        &mut self,
        process: u64,
        kind: EventType,
        planned: &PlannedOp<Cmd<W>>,
        value: Json,
        now_us: u64,
    ) {
        if !planned.record {
            return;
        }
        match kind {
            EventType::Ok => self.counts.ok += 1,
            EventType::Fail => self.counts.fail += 1,
            EventType::Info => self.counts.info += 1,
            EventType::Invoke => {}
        }
        self.history.push(Event {
            process,
            kind,
            f: planned.f.to_string(),
            key: planned.key.clone(),
            value,
            time: now_us * 1000,
        });
    }

    /// A client's wake-up: start an operation, retry one, or give up on it.
    pub(crate) fn wake(
        &mut self,
        i: usize,
        token: u64,
        now_us: u64,
        mode: Mode,
        rng: &mut ChaCha8Rng,
    ) -> Vec<ClientAction<Cmd<W>>> {
        if self.clients[i].token != token {
            return Vec::new();
        }
        let nodes = self.timing.nodes;
        let client = &mut self.clients[i];
        if let Some(pending) = &mut client.pending {
            if mode.give_up && now_us >= pending.give_up_at_us {
                let pending = client.pending.take().expect("checked above");
                let process = client.process;
                self.give_up(i, process, &pending.planned, now_us);
                return self.next(i, now_us, mode, rng);
            }
            // Retry the same command at another node.
            let node = (pending.last_node + rng.gen_range(1..nodes)) % nodes;
            pending.last_node = node;
            pending.sends += 1;
            client.token += 1;
            return vec![
                ClientAction::Send { node, command: pending.command.clone() },
                ClientAction::Wake { client: i, token: client.token, at_us: now_us + self.timing.timeout_us },
            ];
        }
        let planned = match client.script.pop_front() {
            Some(planned) => planned,
            None if !client.scripted && mode.issue => self.workload.next_op(rng),
            None => return Vec::new(),
        };
        let client = &mut self.clients[i];
        client.seq += 1;
        let command = Command { client_id: client.client_id, seq: client.seq, op: planned.op.clone() };
        let node = rng.gen_range(0..nodes);
        let process = client.process;
        client.token += 1;
        let token = client.token;
        let give_up_at_us = now_us.saturating_add(self.timing.give_up_us);
        let value = planned.value.clone();
        client.pending = Some(Pending {
            planned: planned.clone(),
            command: command.clone(),
            sends: 1,
            last_node: node,
            give_up_at_us,
        });
        self.record(process, EventType::Invoke, &planned, value, now_us);
        vec![
            ClientAction::Send { node, command },
            ClientAction::Wake { client: i, token, at_us: now_us + self.timing.timeout_us },
        ]
    }

    /// After an operation ended: the next one after a think time (or at once for a
    /// script).
    fn next(&mut self, i: usize, now_us: u64, mode: Mode, rng: &mut ChaCha8Rng) -> Vec<ClientAction<Cmd<W>>> {
        let client = &self.clients[i];
        if !client.script.is_empty() {
            let client = &mut self.clients[i];
            client.token += 1;
            return vec![ClientAction::Wake { client: i, token: client.token, at_us: now_us }];
        }
        if client.scripted || !mode.issue {
            self.clients[i].token += 1;
            return Vec::new();
        }
        vec![self.wake_later(i, now_us, rng)]
    }

    /// Drops the client's session: a fresh client id, and after an `info` a fresh
    /// process (Jepsen: a process whose outcome is unknown never runs again).
    /// The outcome of `planned` is unknown: record it as `info` (it may take effect at any
    /// later time, or never) and go on as a new process with a fresh session, as Jepsen does.
    fn give_up(&mut self, i: usize, process: u64, planned: &PlannedOp<Cmd<W>>, now_us: u64) {
        self.record(process, EventType::Info, planned, planned.value.clone(), now_us);
        self.abandon_session(i, true);
    }

    fn abandon_session(&mut self, i: usize, new_process: bool) {
        let old = self.clients[i].client_id;
        self.by_id.remove(&old);
        let client_id = self.fresh_client_id(i);
        let process = if new_process { self.fresh_process() } else { self.clients[i].process };
        let client = &mut self.clients[i];
        client.client_id = client_id;
        client.seq = 0;
        client.process = process;
    }

    /// An output of some node for one of its attached clients.
    pub(crate) fn on_output(
        &mut self,
        output: Output<Out<W>>,
        now_us: u64,
        mode: Mode,
        rng: &mut ChaCha8Rng,
    ) -> Vec<ClientAction<Cmd<W>>> {
        let (client_id, seq) = match &output {
            Output::Applied { client_id, seq, .. } | Output::Rejected { client_id, seq, .. } => {
                (*client_id, *seq)
            }
        };
        let Some(&i) = self.by_id.get(&client_id) else { return Vec::new() };
        let client = &mut self.clients[i];
        if client.pending.as_ref().map(|p| p.command.seq) != Some(seq) {
            return Vec::new(); // A duplicate answer (the command went to several nodes).
        }
        let pending = client.pending.take().expect("checked above");
        let process = client.process;
        match output {
            Output::Applied { output, slot, .. } => {
                if let Some(mark) = self.commit_mark {
                    if slot >= mark && self.committed_after_mark_us.is_none() {
                        self.committed_after_mark_us = Some(now_us);
                    }
                }
                let (kind, value) = self.workload.complete(&pending.planned, &output);
                self.record(process, kind, &pending.planned, value, now_us);
            }
            Output::Rejected { .. } if !pending.planned.record => {
                // An unrecorded setup command must happen: run it again, in a new
                // session (it is idempotent: opening an account twice changes nothing).
                self.clients[i].script.push_front(pending.planned);
                self.abandon_session(i, false);
            }
            Output::Rejected { reason: Rejection::Busy, .. } if pending.sends == 1 => {
                // Refused by the only node that ever saw it: certainly not executed.
                self.record(
                    process,
                    EventType::Fail,
                    &pending.planned,
                    pending.planned.value.clone(),
                    now_us,
                );
                self.abandon_session(i, false);
            }
            Output::Rejected { .. } => {
                // Busy at one node after it went to another, or the session moved past
                // it: it may or may not have been applied.
                self.give_up(i, process, &pending.planned, now_us);
            }
        }
        self.next(i, now_us, mode, rng)
    }
}
