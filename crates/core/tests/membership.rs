//! Membership changes through the log (see `synod_core::membership`): a learner joins and
//! catches up, is promoted, a voter is removed, the leader hands its leadership over, and
//! the group keeps deciding throughout, one value per slot everywhere.

mod common;

use common::Cluster;
use synod_core::{Change, ChangeError, NodeId, ALPHA};

fn leader(cluster: &Cluster) -> NodeId {
    cluster.leader().expect("a leader")
}

/// Writes `n` commands through `at` (client `client`) and lets them settle.
fn write(cluster: &mut Cluster, at: NodeId, client: u64, from: u64, n: u64) {
    for i in 0..n {
        cluster.invoke(at, client, from + i + 1, from + i);
        cluster.run_for(5);
    }
    cluster.run_for(300);
}

fn epochs(cluster: &Cluster, id: NodeId) -> (u64, u64) {
    let status = cluster.nodes[&id].as_ref().unwrap().status();
    (status.epoch, status.latest_epoch)
}

/// Proposes `change` at the leader and waits until it is in force everywhere alive.
fn change(cluster: &mut Cluster, change: Change) {
    let at = leader(cluster);
    let before = epochs(cluster, at).1;
    let now = cluster.now;
    cluster.node(at).reconfigure(now, change, false).expect("the change is accepted");
    cluster.flush(at);
    cluster.run_for(2000);
    let live: Vec<NodeId> = cluster.nodes.iter().filter(|(_, n)| n.is_some()).map(|(id, _)| *id).collect();
    for id in live {
        if cluster.nodes[&id].as_ref().unwrap().is_removed() {
            continue;
        }
        assert_eq!(epochs(cluster, id), (before + 1, before + 1), "{id} has the new configuration in force");
    }
}

#[test]
fn a_learner_joins_catches_up_is_promoted_and_a_voter_leaves() {
    let mut cluster = Cluster::new(3);
    cluster.run_for(1500);
    let first = leader(&cluster);
    write(&mut cluster, first, 1, 0, 20);
    cluster.start_outsider(NodeId(4));
    change(&mut cluster, Change::AddLearner { id: NodeId(4), address: "n4".into() });
    let l = leader(&cluster);
    let configuration = cluster.node(l).configuration().clone();
    assert_eq!(configuration.learners, vec![NodeId(4)]);
    assert_eq!(cluster.applied(NodeId(4)), cluster.applied(l), "the learner caught up");

    change(&mut cluster, Change::Promote { id: NodeId(4) });
    let configuration = cluster.node(leader(&cluster)).configuration().clone();
    assert_eq!(configuration.voters, vec![NodeId(1), NodeId(2), NodeId(3), NodeId(4)]);

    // Remove a voter that does not lead; writes go on with the three left.
    let l = leader(&cluster);
    let gone = [NodeId(1), NodeId(2), NodeId(3)].into_iter().find(|n| *n != l).unwrap();
    change(&mut cluster, Change::Remove { id: gone });
    assert!(cluster.nodes[&gone].as_ref().unwrap().is_removed(), "{gone} knows it was removed");
    write(&mut cluster, l, 2, 0, 10);
    let reference = cluster.applied(l);
    assert_eq!(reference.len(), 30);
    for id in [NodeId(1), NodeId(2), NodeId(3), NodeId(4)].into_iter().filter(|n| *n != gone) {
        assert_eq!(cluster.applied(id), reference, "{id}");
    }
    // The removed node takes no part in elections any more.
    let removed = cluster.nodes[&gone].as_ref().unwrap().status();
    assert!(!removed.is_leader);
}

#[test]
fn a_change_waits_for_the_one_on_its_way_and_a_lagging_learner_is_not_promoted() {
    let mut cluster = Cluster::new(3);
    cluster.run_for(1500);
    let l = leader(&cluster);
    let now = cluster.now;
    cluster
        .node(l)
        .reconfigure(now, Change::AddLearner { id: NodeId(9), address: "n9".into() }, false)
        .unwrap();
    let second = cluster.node(l).reconfigure(now, Change::Remove { id: NodeId(9) }, false);
    assert!(matches!(second, Err(ChangeError::ChangeInFlight { epoch: 2 })), "{second:?}");
    cluster.flush(l);
    cluster.run_for(2000);
    // Node 9 never started: it never answered, so it cannot be promoted.
    let now = cluster.now;
    let promote = cluster.node(l).reconfigure(now, Change::Promote { id: NodeId(9) }, false);
    assert!(matches!(promote, Err(ChangeError::LearnerBehind { behind: None, .. })), "{promote:?}");
    let itself = cluster.node(l).reconfigure(now, Change::Remove { id: l }, false);
    assert_eq!(itself, Err(ChangeError::RemovingLeader));
}

#[test]
fn a_change_that_would_leave_no_reachable_majority_is_refused_unless_forced() {
    let mut cluster = Cluster::new(3);
    cluster.run_for(1500);
    let l = leader(&cluster);
    let down = [NodeId(1), NodeId(2), NodeId(3)].into_iter().find(|n| *n != l).unwrap();
    cluster.crash(down);
    cluster.run_for(500);
    // Removing the only other live voter would leave {leader, down}: one of two answers.
    let other = [NodeId(1), NodeId(2), NodeId(3)].into_iter().find(|n| *n != l && *n != down).unwrap();
    let now = cluster.now;
    let refused = cluster.node(l).reconfigure(now, Change::Remove { id: other }, false);
    assert_eq!(refused, Err(ChangeError::WouldLoseMajority { reachable: 1, quorum: 2 }));
    // Removing the dead one is fine: {leader, other} both answer.
    cluster.node(l).reconfigure(now, Change::Remove { id: down }, false).expect("removing the dead voter");
}

#[test]
fn the_leader_hands_over_and_is_then_removed_while_writes_go_on() {
    let mut cluster = Cluster::new(3);
    cluster.run_for(1500);
    let old = leader(&cluster);
    write(&mut cluster, old, 1, 0, 5);
    let to = [NodeId(1), NodeId(2), NodeId(3)].into_iter().find(|n| *n != old).unwrap();
    let now = cluster.now;
    cluster.node(old).transfer_leadership(now, to).expect("a caught-up voter");
    cluster.flush(old);
    cluster.run_for(1000);
    assert_eq!(cluster.leader(), Some(to), "the target took over");
    change(&mut cluster, Change::Remove { id: old });
    write(&mut cluster, to, 2, 0, 5);
    assert_eq!(cluster.applied(to).len(), 10);
    let third = [NodeId(1), NodeId(2), NodeId(3)].into_iter().find(|n| *n != old && *n != to).unwrap();
    assert_eq!(cluster.applied(third), cluster.applied(to));
}

#[test]
fn a_change_comes_into_force_alpha_slots_later_even_without_commands() {
    let mut cluster = Cluster::new(3);
    cluster.run_for(1500);
    let l = leader(&cluster);
    let before = cluster.node(l).status().decided_upto;
    change(&mut cluster, Change::AddLearner { id: NodeId(7), address: "n7".into() });
    let after = cluster.node(l).status().decided_upto;
    assert!(after >= before + ALPHA, "no-ops carried the log {ALPHA} slots on: {before} -> {after}");
}

#[test]
fn a_change_decided_under_a_leader_that_dies_is_brought_into_force_by_the_next_one() {
    let mut cluster = Cluster::new(3);
    cluster.run_for(1500);
    let old = leader(&cluster);
    let now = cluster.now;
    cluster
        .node(old)
        .reconfigure(now, Change::AddLearner { id: NodeId(9), address: "n9".into() }, false)
        .unwrap();
    cluster.flush(old);
    // Until the change is decided at a follower, but not yet in force there.
    let follower = [NodeId(1), NodeId(2), NodeId(3)].into_iter().find(|n| *n != old).unwrap();
    for _ in 0..1000 {
        if epochs(&cluster, follower).1 == 2 {
            break;
        }
        cluster.run_for(1);
    }
    assert_eq!(epochs(&cluster, follower), (1, 2), "decided, not yet in force");
    cluster.crash(old);
    // No client commands: the next leader must fill the ALPHA slots itself.
    cluster.run_for(3000);
    let next = leader(&cluster);
    assert_ne!(next, old);
    assert_eq!(epochs(&cluster, next), (2, 2), "the change is in force under the next leader");
}
