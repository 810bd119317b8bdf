//! A few nodes on a perfect in-memory network, shared by the core's integration tests.
//! Deterministic: fixed seeds, fixed delays.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use serde::{Deserialize, Serialize};
use synod_core::{
    Command, Configuration, DurableState, Message, Node, NodeId, Options, Output, Persisted, SnapshotError,
    StateMachine, Time,
};

/// Appends numbers to a list: the applied order is visible in the state.
#[derive(Default)]
pub struct Log(pub Vec<u64>);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Append(pub u64);

impl StateMachine for Log {
    type Command = Append;
    type Output = usize;
    fn apply(&mut self, command: &Append) -> usize {
        self.0.push(command.0);
        self.0.len()
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.iter().flat_map(|n| n.to_le_bytes()).collect()
    }
    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        if !bytes.len().is_multiple_of(8) {
            return Err(SnapshotError(format!("{} bytes is no list of u64", bytes.len())));
        }
        self.0 =
            bytes.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("eight bytes"))).collect();
        Ok(())
    }
}

/// (deliver at, sequence, to, from, frame)
pub type InFlight = (Time, u64, NodeId, NodeId, Vec<u8>);

pub struct Cluster {
    pub now: Time,
    pub nodes: BTreeMap<NodeId, Option<Node<Log>>>,
    pub disks: BTreeMap<NodeId, DurableState<Append>>,
    pub queue: BinaryHeap<Reverse<InFlight>>,
    pub seq: u64,
    pub outputs: Vec<(NodeId, Output<usize>)>,
    pub cut: Vec<(NodeId, NodeId)>,
    /// The configuration every node starts from (default: every node a voter).
    pub initial: Option<Configuration>,
}

pub const CLUSTER_ID: u64 = 42;

impl Cluster {
    pub fn new(n: u32) -> Cluster {
        let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let mut cluster = Cluster {
            now: Time(0),
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            outputs: Vec::new(),
            cut: Vec::new(),
            initial: None,
        };
        for id in &ids {
            cluster.disks.insert(*id, DurableState::default());
            cluster.nodes.insert(*id, None);
        }
        for id in &ids {
            cluster.start(*id);
        }
        cluster
    }

    pub fn configuration(&self) -> Configuration {
        self.initial.clone().unwrap_or_else(|| Configuration::new(self.nodes.keys().copied().collect()))
    }

    pub fn start(&mut self, id: NodeId) {
        let durable = self.disks[&id].clone();
        let node = Node::new(
            id,
            self.configuration(),
            Options::default(),
            Log::default(),
            durable,
            id.0 as u64,
            self.now,
        );
        self.nodes.insert(id, Some(node));
    }

    /// Starts a node that is in no configuration yet, from the cluster's first one (as a
    /// node about to join does): the group must add it before it takes part.
    pub fn start_outsider(&mut self, id: NodeId) {
        let initial = self.configuration();
        self.initial = Some(initial);
        self.disks.insert(id, DurableState::default());
        self.nodes.insert(id, None);
        self.start(id);
    }

    pub fn node(&mut self, id: NodeId) -> &mut Node<Log> {
        self.nodes.get_mut(&id).unwrap().as_mut().expect("a running node")
    }

    pub fn crash(&mut self, id: NodeId) {
        self.nodes.insert(id, None);
    }

    /// Persists synchronously (a perfect disk), tells the node, then sends with a 1 ms
    /// delay; again while telling the node left it more to do (its own votes count).
    pub fn flush(&mut self, id: NodeId) {
        loop {
            let Some(node) = self.nodes.get_mut(&id).unwrap().as_mut() else { return };
            let ready = node.take_ready();
            let disk = self.disks.get_mut(&id).unwrap();
            for record in &ready.persist {
                disk.apply(record);
            }
            let lsn = ready.persist_lsn;
            let released = ready.release(Persisted::through(lsn));
            let (messages, outputs) = (released.messages, released.outputs);
            node.handle_persisted(self.now, Persisted::through(lsn));
            let more = node.has_ready();
            for envelope in messages {
                self.seq += 1;
                let bytes = synod_core::wire::encode(CLUSTER_ID, &envelope.message);
                self.queue.push(Reverse((self.now.plus_millis(1), self.seq, envelope.to, id, bytes)));
            }
            self.outputs.extend(outputs.into_iter().map(|o| (id, o)));
            if !more {
                return;
            }
        }
    }

    pub fn run_for(&mut self, ms: u64) {
        let end = self.now.plus_millis(ms);
        while self.now < end {
            // Deliver everything due, then tick every node.
            while let Some(Reverse((at, _, _, _, _))) = self.queue.peek() {
                if *at > self.now {
                    break;
                }
                let Reverse((_, _, to, from, bytes)) = self.queue.pop().unwrap();
                if self.cut.contains(&(from, to)) || self.cut.contains(&(to, from)) {
                    continue;
                }
                let now = self.now;
                // A node that never started (or crashed) loses what is sent to it.
                if let Some(node) = self.nodes.get_mut(&to).and_then(Option::as_mut) {
                    let message: Message<Append> = synod_core::wire::decode(CLUSTER_ID, &bytes).unwrap();
                    node.handle_message(now, from, message);
                    self.flush(to);
                }
            }
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                let now = self.now;
                if let Some(node) = self.nodes.get_mut(&id).unwrap().as_mut() {
                    if node.poll_timeout().is_some_and(|t| t <= now) {
                        node.handle_timeout(now);
                        self.flush(id);
                    }
                }
            }
            self.now = self.now.plus_millis(1);
        }
    }

    pub fn leader(&self) -> Option<NodeId> {
        let leaders: Vec<NodeId> =
            self.nodes.values().flatten().filter(|n| n.status().is_leader).map(|n| n.id()).collect();
        assert!(
            leaders.len() <= 1 || !self.cut.is_empty(),
            "two active leaders on a healthy network: {leaders:?}"
        );
        leaders.first().copied()
    }

    pub fn invoke(&mut self, at: NodeId, client_id: u64, seq: u64, n: u64) {
        let now = self.now;
        self.nodes
            .get_mut(&at)
            .unwrap()
            .as_mut()
            .unwrap()
            .invoke(now, Command { client_id, seq, op: Append(n) });
        self.flush(at);
    }

    pub fn applied(&self, id: NodeId) -> Vec<u64> {
        self.nodes[&id].as_ref().unwrap().state_machine().0.clone()
    }
}
