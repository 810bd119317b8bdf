//! A few nodes on a perfect in-memory network: the protocol's happy paths and its basic
//! recovery, before the simulator adds faults. Deterministic: fixed seeds, fixed delays.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use serde::{Deserialize, Serialize};
use synod_core::{
    Command, Configuration, DurableState, Message, Node, NodeId, Options, Output, Persisted, Rejection,
    SnapshotError, StateMachine, Time,
};

/// Appends numbers to a list: the applied order is visible in the state.
#[derive(Default)]
struct Log(Vec<u64>);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Append(u64);

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
    fn restore(&mut self, _: &[u8]) -> Result<(), SnapshotError> {
        unimplemented!("not needed here")
    }
}

/// (deliver at, sequence, to, from, frame)
type InFlight = (Time, u64, NodeId, NodeId, Vec<u8>);

struct Cluster {
    now: Time,
    nodes: BTreeMap<NodeId, Option<Node<Log>>>,
    disks: BTreeMap<NodeId, DurableState<Append>>,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    outputs: Vec<(NodeId, Output<usize>)>,
    cut: Vec<(NodeId, NodeId)>,
}

const CLUSTER_ID: u64 = 42;

impl Cluster {
    fn new(n: u32) -> Cluster {
        let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let mut cluster = Cluster {
            now: Time(0),
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            outputs: Vec::new(),
            cut: Vec::new(),
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

    fn configuration(&self) -> Configuration {
        Configuration::new(self.nodes.keys().copied().collect())
    }

    fn start(&mut self, id: NodeId) {
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

    fn crash(&mut self, id: NodeId) {
        self.nodes.insert(id, None);
    }

    /// Persists synchronously (a perfect disk), then sends with a 1 ms delay.
    fn flush(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id).unwrap().as_mut() else { return };
        let ready = node.take_ready();
        let disk = self.disks.get_mut(&id).unwrap();
        for record in &ready.persist {
            disk.apply(record);
        }
        let lsn = ready.persist_lsn;
        let (messages, outputs) = ready.release(Persisted::through(lsn));
        for envelope in messages {
            self.seq += 1;
            let bytes = synod_core::wire::encode(CLUSTER_ID, &envelope.message);
            self.queue.push(Reverse((self.now.plus_millis(1), self.seq, envelope.to, id, bytes)));
        }
        self.outputs.extend(outputs.into_iter().map(|o| (id, o)));
    }

    fn run_for(&mut self, ms: u64) {
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
                if let Some(node) = self.nodes.get_mut(&to).unwrap().as_mut() {
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

    fn leader(&self) -> Option<NodeId> {
        let leaders: Vec<NodeId> =
            self.nodes.values().flatten().filter(|n| n.status().is_leader).map(|n| n.id()).collect();
        assert!(
            leaders.len() <= 1 || !self.cut.is_empty(),
            "two active leaders on a healthy network: {leaders:?}"
        );
        leaders.first().copied()
    }

    fn invoke(&mut self, at: NodeId, client_id: u64, seq: u64, n: u64) {
        let now = self.now;
        self.nodes
            .get_mut(&at)
            .unwrap()
            .as_mut()
            .unwrap()
            .invoke(now, Command { client_id, seq, op: Append(n) });
        self.flush(at);
    }

    fn applied(&self, id: NodeId) -> Vec<u64> {
        self.nodes[&id].as_ref().unwrap().state_machine().0.clone()
    }
}

#[test]
fn three_nodes_elect_one_leader_within_a_few_election_timeouts() {
    let mut cluster = Cluster::new(3);
    cluster.run_for(1500);
    assert!(cluster.leader().is_some(), "no leader after 1.5 s");
}

#[test]
fn commands_from_any_node_are_applied_once_in_the_same_order_everywhere() {
    let mut cluster = Cluster::new(3);
    cluster.run_for(1500);
    for i in 0..30u64 {
        let at = NodeId(1 + (i % 3) as u32);
        cluster.invoke(at, 100 + i, 1, i);
    }
    cluster.run_for(500);
    let first = cluster.applied(NodeId(1));
    assert_eq!(first.len(), 30, "applied: {first:?}");
    for id in [NodeId(2), NodeId(3)] {
        assert_eq!(cluster.applied(id), first);
    }
    let replies = cluster.outputs.iter().filter(|(_, o)| matches!(o, Output::Applied { .. })).count();
    assert_eq!(replies, 30);
}

#[test]
fn a_new_leader_after_a_crash_keeps_every_decided_command() {
    let mut cluster = Cluster::new(3);
    cluster.run_for(1500);
    for i in 0..10u64 {
        cluster.invoke(NodeId(1), 1, i + 1, i);
        cluster.run_for(20);
    }
    cluster.run_for(200);
    let before = cluster.applied(NodeId(2));
    assert_eq!(before.len(), 10);
    let old = cluster.leader().unwrap();
    cluster.crash(old);
    cluster.run_for(2000);
    let new = cluster.leader().expect("a new leader");
    assert_ne!(new, old);
    let live = [NodeId(1), NodeId(2), NodeId(3)].into_iter().find(|n| *n != old && *n != new).unwrap();
    cluster.invoke(live, 2, 1, 99);
    cluster.run_for(300);
    let after = cluster.applied(new);
    assert_eq!(&after[..10], &before[..]);
    assert_eq!(after.last(), Some(&99));
    // The crashed node restarts from its disk and catches up.
    cluster.start(old);
    cluster.run_for(1000);
    assert_eq!(cluster.applied(old), after);
}

#[test]
fn a_retried_command_is_applied_once() {
    let mut cluster = Cluster::new(3);
    cluster.run_for(1500);
    cluster.invoke(NodeId(1), 7, 1, 5);
    cluster.invoke(NodeId(2), 7, 1, 5);
    cluster.invoke(NodeId(3), 7, 1, 5);
    cluster.run_for(500);
    assert_eq!(cluster.applied(NodeId(1)), vec![5]);
    let replies: Vec<_> =
        cluster.outputs.iter().filter(|(_, o)| matches!(o, Output::Applied { .. })).collect();
    assert_eq!(replies.len(), 3, "each node answers its own client: {replies:?}");
}

/// Each node's answers to its own clients: true for applied, false for a session conflict.
fn answers(cluster: &Cluster) -> Vec<(NodeId, bool)> {
    cluster
        .outputs
        .iter()
        .map(|(node, output)| match output {
            Output::Applied { .. } => (*node, true),
            Output::Rejected { reason: Rejection::SessionConflict, .. } => (*node, false),
            other => panic!("unexpected output at {node}: {other:?}"),
        })
        .collect()
}

#[test]
fn a_different_command_under_the_same_pair_at_another_node_gets_a_conflict_not_the_first_reply() {
    let mut cluster = Cluster::new(3);
    cluster.run_for(1500);
    // One client id, one sequence number, two different commands at two nodes at once.
    cluster.invoke(NodeId(1), 7, 1, 5);
    cluster.invoke(NodeId(2), 7, 1, 6);
    cluster.run_for(500);
    let applied = cluster.applied(NodeId(1));
    assert!(applied == vec![5] || applied == vec![6], "exactly one of the two applies: {applied:?}");
    for id in [NodeId(2), NodeId(3)] {
        assert_eq!(cluster.applied(id), applied);
    }
    // The node whose command the log took first answers it; the other node's client hears
    // the conflict, not the other command's reply.
    let (winner, loser) = if applied == vec![5] { (NodeId(1), NodeId(2)) } else { (NodeId(2), NodeId(1)) };
    let mut answers = answers(&cluster);
    answers.sort();
    let mut expected = vec![(winner, true), (loser, false)];
    expected.sort();
    assert_eq!(answers, expected);
}

#[test]
fn a_different_command_under_a_pending_pair_at_the_same_node_is_refused_at_once() {
    let mut cluster = Cluster::new(3);
    cluster.run_for(1500);
    cluster.invoke(NodeId(1), 7, 1, 5);
    cluster.invoke(NodeId(1), 7, 1, 6);
    assert_eq!(answers(&cluster), vec![(NodeId(1), false)], "refused before anything is decided");
    cluster.run_for(500);
    assert_eq!(cluster.applied(NodeId(1)), vec![5], "the first command still applies, the second never");
    assert_eq!(answers(&cluster), vec![(NodeId(1), false), (NodeId(1), true)]);
}

#[test]
fn minority_side_of_a_partition_decides_nothing() {
    let mut cluster = Cluster::new(5);
    cluster.run_for(1500);
    let leader = cluster.leader().unwrap();
    // Isolate the leader with one follower.
    let buddy = cluster.nodes.keys().copied().find(|n| *n != leader).unwrap();
    let others: Vec<NodeId> = cluster.nodes.keys().copied().filter(|n| *n != leader && *n != buddy).collect();
    for a in [leader, buddy] {
        for b in &others {
            cluster.cut.push((a, *b));
        }
    }
    cluster.invoke(leader, 1, 1, 1);
    cluster.run_for(3000);
    assert!(cluster.applied(leader).is_empty(), "the minority decided something");
    // The majority side elected its own leader and makes progress.
    cluster.invoke(others[0], 2, 1, 2);
    cluster.run_for(500);
    assert_eq!(cluster.applied(others[1]), vec![2]);
    // Heal: everyone converges; the minority's command may apply (its requester retries).
    cluster.cut.clear();
    cluster.run_for(2000);
    let reference = cluster.applied(others[0]);
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        assert_eq!(cluster.applied(id), reference);
    }
    assert!(reference.contains(&1) && reference.contains(&2));
}
