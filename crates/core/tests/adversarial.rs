//! What a node does with input that breaks the protocol's rules, and with its own votes
//! before they are durable. **No input from the network can panic a node or wedge the
//! cluster**, and **every decision rests on a quorum of durable votes**, this node's own
//! included.

mod common;

use common::{Append, Cluster, CLUSTER_ID};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use synod_core::{
    Ballot, Command, Configuration, DurableState, Heartbeat, Message, NodeId, Output, PValue, Persisted,
    Record, Refusal, Value, SLOT_MAX,
};

fn ballot(round: u64, leader: u32) -> Ballot {
    Ballot { round, leader: NodeId(leader) }
}

/// Simulator seed 1008524: the leader counted its own vote, not yet durable, with a
/// follower's to decide a slot, released the decision once written, then crashed and lost
/// the vote; a later leader chose another value there. A vote counts once durable.
#[test]
fn leader_counts_its_own_vote_only_once_it_is_durable() {
    let mut cluster = Cluster::new(3);
    cluster.run_for(1500);
    let leader = cluster.leader().expect("a leader");
    let follower = cluster.nodes.keys().copied().find(|n| *n != leader).unwrap();
    let now = cluster.now;
    let node = cluster.nodes.get_mut(&leader).unwrap().as_mut().unwrap();
    node.invoke(now, Command { client_id: 9, seq: 1, op: Append(7) });
    let mut ready = node.take_ready();
    assert!(ready.holds_votes(), "the leader's own vote is in this batch");
    // The Accepts leave before the vote is durable (the early release).
    let accept = ready.take_accepts().into_iter().find(|e| e.to == follower).expect("an Accept");
    let follower_node = cluster.nodes.get_mut(&follower).unwrap().as_mut().unwrap();
    follower_node.handle_message(now, leader, accept.message);
    let reply = follower_node.take_ready();
    let lsn = reply.persist_lsn;
    let messages = reply.release(Persisted::through(lsn)).messages;
    let accepted = messages.into_iter().find(|e| e.to == leader).expect("the follower's Accepted");
    // The follower's durable vote arrives while the leader's own is written, not synced.
    let node = cluster.nodes.get_mut(&leader).unwrap().as_mut().unwrap();
    node.handle_message(now, follower, accepted.message);
    let early = node.take_ready();
    assert!(
        !early.persist.iter().any(|r| matches!(r, Record::Decided { .. })),
        "decided on a vote that a crash can still take back: {:?}",
        early.persist
    );
    // Once the storage says the first batch is durable, the slot is decided.
    node.handle_persisted(now, Persisted::through(ready.persist_lsn));
    let decided = node.take_ready();
    assert!(decided.persist.iter().any(|r| matches!(r, Record::Decided { .. })));
    drop((ready, early));
}

/// A hello claiming to be node 3, then a well-formed Prepare whose round is the last one
/// and whose leader is the current leader: before, every node panicked and the promise
/// was durable, so a restart panicked again.
#[test]
fn forged_prepare_with_the_last_round_is_refused_and_the_leader_keeps_leading() {
    let mut cluster = Cluster::new(3);
    cluster.run_for(1500);
    let leader = cluster.leader().expect("a leader");
    let liar = cluster.nodes.keys().copied().find(|n| *n != leader).unwrap();
    let forged = Message::Prepare { ballot: Ballot { round: u64::MAX, leader }, from_slot: 0 };
    let now = cluster.now;
    for id in [NodeId(1), NodeId(2), NodeId(3)] {
        if id == liar {
            continue;
        }
        let node = cluster.nodes.get_mut(&id).unwrap().as_mut().unwrap();
        node.handle_message(now, liar, forged.clone());
        cluster.flush(id);
        let refusals = cluster.nodes[&id].as_ref().unwrap().status().refusals;
        assert_eq!(refusals.total(), 1, "n{}: {refusals:?}", id.0);
        assert_eq!(refusals.last.map(|(reason, ..)| reason), Some(Refusal::BallotTooFar));
    }
    cluster.run_for(500);
    assert_eq!(cluster.leader(), Some(leader), "leadership is undisturbed");
    cluster.invoke(liar, 1, 1, 42);
    cluster.run_for(300);
    assert_eq!(cluster.applied(leader), vec![42]);
}

#[test]
fn prepare_or_accept_whose_ballot_is_not_the_senders_is_refused() {
    let mut cluster = Cluster::new(3);
    let now = cluster.now;
    let node = cluster.nodes.get_mut(&NodeId(1)).unwrap().as_mut().unwrap();
    node.handle_message(now, NodeId(3), Message::Prepare { ballot: ballot(5, 2), from_slot: 0 });
    let pvalue = PValue { ballot: ballot(5, 2), slot: 0, value: Value::Noop };
    node.handle_message(now, NodeId(3), Message::Accept { pvalue, decided_upto: 0 });
    let status = node.status();
    assert_eq!(status.refusals.total(), 2);
    assert_eq!(status.refusals.last.map(|(reason, ..)| reason), Some(Refusal::WrongBallotOwner));
    assert_eq!(status.ballot_max, Ballot::ZERO, "nothing was promised or observed");
    let ready = node.take_ready();
    assert!(ready.persist.is_empty());
}

#[test]
fn heartbeat_with_an_absurd_ballot_is_refused() {
    let mut cluster = Cluster::new(3);
    let now = cluster.now;
    let node = cluster.nodes.get_mut(&NodeId(1)).unwrap().as_mut().unwrap();
    let status = Heartbeat {
        ballot_max: ballot(3_056_526_958, 10_599),
        leader: Some(ballot(3_056_526_958, 10_599)),
        quorum_connected: true,
        happy: true,
        decided_upto: 0,
        accepted_upto: 0,
        lease: false,
        ..Heartbeat::default()
    };
    node.handle_message(now, NodeId(2), Message::HeartbeatReply { round: 1, status });
    node.handle_message(
        now,
        NodeId(99),
        Message::HeartbeatRequest { round: 1, dir_id: 0, recovering: false },
    );
    let status = node.status();
    assert_eq!(status.ballot_max, Ballot::ZERO, "the absurd ballot was not adopted");
    let reasons: Vec<_> = status.refusals.by_reason().filter(|(_, n)| *n > 0).map(|(r, _)| r).collect();
    assert_eq!(reasons, vec![Refusal::NotMember, Refusal::BallotTooFar]);
}

#[test]
fn an_accept_whose_ballot_names_no_voter_is_refused() {
    let mut cluster = Cluster::new(3);
    let now = cluster.now;
    let node = cluster.nodes.get_mut(&NodeId(1)).unwrap().as_mut().unwrap();
    let pvalue = PValue { ballot: ballot(2, 7), slot: 0, value: Value::Noop };
    node.handle_message(now, NodeId(2), Message::Accept { pvalue, decided_upto: 0 });
    let status = node.status();
    assert_eq!(status.refusals.last.map(|(reason, ..)| reason), Some(Refusal::ForeignBallot));
    assert!(node.take_ready().persist.is_empty(), "no vote for a ballot no voter owns");
}

/// Found by the simulator (`synod sim --seed 12 --membership on`): n5 led with ballot 4.5, the highest ever,
/// until the configuration that removed it came into force. Every node's highest ballot,
/// and so every heartbeat, then named n5, which no configuration held counted as a voter
/// any more: every heartbeat was refused, no node heard a majority, and no leader was
/// ever elected again. A ballot a peer reports having seen may name a voter removed
/// since; only a ballot a peer acts with (Prepare, Accept, handover) must be a voter's.
#[test]
fn a_heartbeat_reporting_the_ballot_of_a_voter_removed_since_is_heard() {
    let mut cluster = Cluster::new(3);
    let now = cluster.now;
    let node = cluster.nodes.get_mut(&NodeId(1)).unwrap().as_mut().unwrap();
    let status = Heartbeat {
        ballot_max: ballot(4, 5),
        leader: Some(ballot(4, 5)),
        quorum_connected: false,
        happy: false,
        ..Heartbeat::default()
    };
    node.handle_message(now, NodeId(2), Message::HeartbeatReply { round: 1, status });
    let status = node.status();
    assert_eq!(status.refusals.total(), 0, "{:?}", status.refusals);
    assert_eq!(status.ballot_max, ballot(4, 5), "the next leader picks a ballot above it");
}

#[test]
fn decisions_past_the_last_slot_are_refused_without_overflow() {
    let mut cluster = Cluster::new(3);
    let now = cluster.now;
    let node = cluster.nodes.get_mut(&NodeId(1)).unwrap().as_mut().unwrap();
    let values = vec![Value::Noop, Value::Noop, Value::Noop];
    node.handle_message(now, NodeId(2), Message::Decisions { from_slot: u64::MAX - 1, values });
    node.handle_message(now, NodeId(2), Message::Decision { slot: SLOT_MAX, value: Value::Noop });
    assert_eq!(node.status().refusals.total(), 2);
    assert_eq!(node.status().decided_upto, 0);
}

/// The round space ends; a node whose highest known ballot is the last round of a lower
/// id cannot lead, but one with a higher id can, and the cluster serves writes.
#[test]
fn cluster_whose_durable_promise_is_the_last_round_still_elects_and_decides() {
    let last = Ballot { round: u64::MAX, leader: NodeId(1) };
    assert_eq!(last.next_for(NodeId(1)), None, "no ballot of node 1 follows its last");
    assert_eq!(last.next_for(NodeId(3)), Some(Ballot { round: u64::MAX, leader: NodeId(3) }));
    let mut cluster = Cluster::new(3);
    for id in [NodeId(1), NodeId(2), NodeId(3)] {
        cluster.disks.insert(id, DurableState { promised: last, ..DurableState::default() });
        cluster.start(id);
    }
    cluster.run_for(3000);
    cluster.invoke(NodeId(1), 1, 1, 5);
    cluster.run_for(500);
    assert_eq!(cluster.applied(NodeId(1)), vec![5]);
}

/// One random message with fields drawn from the values that break arithmetic and
/// membership: zero, one, small, the last representable, non-members.
fn hostile_message(rng: &mut ChaCha8Rng) -> Message<Append> {
    let mut number = |rng: &mut ChaCha8Rng| -> u64 {
        match rng.gen_range(0..8) {
            0 => 0,
            1 => 1,
            2 => rng.gen_range(0..64),
            3 => u64::MAX,
            4 => u64::MAX - rng.gen_range(0..4),
            5 => SLOT_MAX + rng.gen_range(0..2) - 1,
            6 => 1 << rng.gen_range(0..64),
            _ => rng.gen(),
        }
    };
    let node = |rng: &mut ChaCha8Rng| NodeId([0, 1, 2, 3, 4, 99, u32::MAX][rng.gen_range(0..7)]);
    let ballot = |rng: &mut ChaCha8Rng, number: &mut dyn FnMut(&mut ChaCha8Rng) -> u64| Ballot {
        round: number(rng),
        leader: node(rng),
    };
    let value = |rng: &mut ChaCha8Rng| match rng.gen_range(0..3) {
        0 => Value::Noop,
        1 => Value::Batch(vec![Command { client_id: rng.gen(), seq: rng.gen(), op: Append(rng.gen()) }]),
        _ => Value::Reconfigure(Configuration {
            epoch: rng.gen(),
            voters: vec![NodeId(rng.gen())],
            learners: vec![NodeId(rng.gen())],
            addresses: Default::default(),
        }),
    };
    let heartbeat = |rng: &mut ChaCha8Rng, number: &mut dyn FnMut(&mut ChaCha8Rng) -> u64| Heartbeat {
        ballot_max: ballot(rng, number),
        leader: rng.gen_bool(0.5).then(|| ballot(rng, number)),
        quorum_connected: rng.gen(),
        happy: rng.gen(),
        decided_upto: number(rng),
        accepted_upto: number(rng),
        lease: rng.gen(),
        dir_id: number(rng),
        recovering: rng.gen(),
        you: number(rng),
    };
    match rng.gen_range(0..14) {
        0 => Message::Prepare { ballot: ballot(rng, &mut number), from_slot: number(rng) },
        1 => Message::Promise {
            ballot: ballot(rng, &mut number),
            decided_upto: number(rng),
            accepted: vec![PValue { ballot: ballot(rng, &mut number), slot: number(rng), value: value(rng) }],
            decided: vec![(number(rng), value(rng))],
        },
        2 => Message::Accept {
            pvalue: PValue { ballot: ballot(rng, &mut number), slot: number(rng), value: value(rng) },
            decided_upto: number(rng),
        },
        3 => Message::Accepted { ballot: ballot(rng, &mut number), slot: number(rng) },
        4 => Message::Nack { ballot: ballot(rng, &mut number), promised: ballot(rng, &mut number) },
        5 => Message::Decision { slot: number(rng), value: value(rng) },
        6 => Message::HeartbeatRequest { round: number(rng), dir_id: number(rng), recovering: rng.gen() },
        7 => Message::HeartbeatReply { round: number(rng), status: heartbeat(rng, &mut number) },
        8 => Message::Forward {
            commands: vec![Command { client_id: number(rng), seq: number(rng), op: Append(rng.gen()) }],
        },
        9 => Message::CatchUp { from_slot: number(rng) },
        10 => Message::Decisions { from_slot: number(rng), values: vec![value(rng), value(rng)] },
        11 => Message::SnapshotNeeded { from_slot: number(rng), compacted_upto: number(rng) },
        12 => Message::SnapshotRequest { offset: number(rng) },
        _ => Message::SnapshotChunk {
            last_slot: number(rng),
            total_bytes: number(rng),
            checksum: rng.gen(),
            offset: number(rng),
            bytes: vec![0; rng.gen_range(0..64)],
        },
    }
}

/// Ten thousand hostile messages, and random bytes that happen to decode, from members
/// and strangers alike, into every node of a running cluster: nothing panics, and once
/// the storm is over the cluster elects a leader and decides new commands. (A sender that
/// speaks as a member can still forge a decision: that takes authentication, not checks.)
#[test]
fn a_storm_of_hostile_messages_neither_panics_nor_wedges_the_cluster() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5707);
    let mut cluster = Cluster::new(3);
    cluster.run_for(1500);
    cluster.invoke(NodeId(1), 1, 1, 1);
    cluster.run_for(200);
    let mut delivered = 0;
    for i in 0..10_000u32 {
        let to = NodeId(rng.gen_range(1..=3));
        let from = NodeId([1, 2, 3, 3, 2, 7][rng.gen_range(0..6)]);
        let message = if i % 4 == 0 {
            // Random payload bytes in a well-formed frame, as a hostile peer can send.
            let payload: Vec<u8> = (0..rng.gen_range(1..40)).map(|_| rng.gen()).collect();
            let mut frame = synod_core::wire::encode(CLUSTER_ID, &());
            frame.truncate(14);
            frame.extend_from_slice(&payload);
            let len = (frame.len() - 4 + 4) as u32;
            frame[0..4].copy_from_slice(&len.to_le_bytes());
            let crc = crc32c::crc32c(&frame);
            frame.extend_from_slice(&crc.to_le_bytes());
            match synod_core::wire::decode::<Message<Append>>(CLUSTER_ID, &frame) {
                Ok(message) => message,
                Err(_) => continue,
            }
        } else {
            hostile_message(&mut rng)
        };
        delivered += 1;
        let now = cluster.now;
        if let Some(node) = cluster.nodes.get_mut(&to).unwrap().as_mut() {
            node.handle_message(now, from, message);
            cluster.flush(to);
        }
        if i % 100 == 0 {
            cluster.run_for(5);
        }
    }
    assert!(delivered > 7_500, "only {delivered} messages were delivered");
    let refused: u64 = cluster.nodes.values().flatten().map(|n| n.status().refusals.total()).sum();
    assert!(refused > 5_000, "only {refused} refusals: the checks did not run");
    // Liveness afterwards: a leader, and a new command decided and answered.
    cluster.run_for(5000);
    let leader = cluster.leader().expect("a leader after the storm");
    cluster.outputs.clear();
    cluster.invoke(leader, 77, 1, 4242);
    cluster.run_for(2000);
    assert!(
        cluster.outputs.iter().any(|(_, o)| matches!(o, Output::Applied { client_id: 77, .. })),
        "the command after the storm was not applied"
    );
}
