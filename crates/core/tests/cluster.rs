//! A few nodes on a perfect in-memory network: the protocol's happy paths and its basic
//! recovery, before the simulator adds faults. Deterministic: fixed seeds, fixed delays.

mod common;

use common::Cluster;
use synod_core::{NodeId, Output, Rejection};

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
