//! Damaged and lost storage on a real cluster: a node whose log or checkpoint has a
//! flipped byte detects it, refuses to vote while it cannot hear every other member, and
//! once it can, repairs from its peers (a snapshot when its checkpoint is gone) and serves
//! every acknowledged write again. A node whose data directory was wiped does the same
//! without being told: an empty directory is a new replica, never a founding voter.

mod harness;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::*;

/// Writes that must survive, through the leader. Returns the keys.
/// A 503 (a leader change on two busy cores) is retried: a put is idempotent here.
fn write_keys(cluster: &Cluster, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            let key = format!("k{n:04}");
            eventually(&format!("PUT {key} succeeds"), Duration::from_secs(20), || {
                let leader = cluster.wait_for_leader(ELECTION_DEADLINE);
                let reply = put(cluster.addr(leader), &key, &format!("v{n}")).ok()?;
                assert!(reply.status == 200 || reply.status == 503, "PUT {key}: {}", reply.body);
                (reply.status == 200).then_some(())
            });
            key
        })
        .collect()
}

/// The files in `dir`, sorted by name.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Flips one byte in the middle of `file` (bit rot).
fn flip_middle_byte(file: &Path) {
    let mut bytes = fs::read(file).expect("read the file to damage");
    assert!(bytes.len() > 1024, "{} is too small to damage in the middle", file.display());
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    fs::write(file, bytes).expect("write the damaged file");
}

fn recovering(cluster: &Cluster, i: usize) -> Option<serde_json::Value> {
    let status = cluster.status(i)?;
    Some(status["recovering"].clone())
}

fn stale_read(cluster: &Cluster, i: usize, key: &str) -> Option<String> {
    let reply = get(cluster.addr(i), &format!("/v1/kv/{key}?consistency=stale")).ok()?;
    (reply.status == 200).then(|| reply.json()["value"].as_str().map(str::to_string)).flatten()
}

/// The shared scenario: damage node `f` (a follower) while it is down, with the other
/// follower `g` down as well, and check that `f` refuses to vote; then bring `g` back and
/// check that `f` repairs and holds every acknowledged write.
/// Returns `f`.
fn damaged_node_refuses_to_vote_then_repairs(
    cluster: &mut Cluster,
    keys: &[String],
    damage: impl Fn(&Path),
) -> usize {
    let leader = cluster.wait_for_leader(ELECTION_DEADLINE);
    let f = (leader + 1) % 3;
    let g = (leader + 2) % 3;
    cluster.terminate(f, Duration::from_secs(10)).expect("stop the follower to damage");
    damage(&cluster.nodes[f].dir);
    cluster.terminate(g, Duration::from_secs(10)).expect("stop the other follower");
    cluster.restart(f);

    // f found the damage and does not vote: the leader has no majority, writes fail.
    let progress = eventually("the damaged node reports its recovery", Duration::from_secs(10), || {
        recovering(cluster, f).filter(|r| r["members_answered"] == 1)
    });
    assert_eq!(progress["members_needed"], 2, "{progress}");
    let reply = put(cluster.addr(leader), "during-recovery", "x").expect("PUT");
    assert_eq!(reply.status, 503, "a write succeeded with only the damaged node to vote: {}", reply.body);
    assert!(
        recovering(cluster, f).is_some_and(|r| !r.is_null()),
        "the damaged node must still be recovering while a member is down"
    );
    let log = fs::read_to_string(&cluster.nodes[f].log).expect("read the node's log");
    assert!(
        log.contains("storage damage found"),
        "the log must name the damage:\n{}",
        tail(&cluster.nodes[f].log, 20)
    );

    // Every other member answers: f repairs, votes again, and holds every write.
    cluster.restart(g);
    eventually("the damaged node repairs", Duration::from_secs(30), || {
        recovering(cluster, f).filter(|r| r.is_null())
    });
    let leader = cluster.wait_for_leader(ELECTION_DEADLINE);
    let reply = put(cluster.addr(leader), "after-repair", "y").expect("PUT");
    assert_eq!(reply.status, 200, "{}", reply.body);
    eventually("the repaired node applied the new write", Duration::from_secs(10), || {
        (stale_read(cluster, f, "after-repair").as_deref() == Some("y")).then_some(())
    });
    for (n, key) in keys.iter().enumerate() {
        assert_eq!(stale_read(cluster, f, key), Some(format!("v{n}")), "{key} on the repaired node");
    }
    // A restart now votes at once: the damage marker is gone.
    assert!(!cluster.nodes[f].dir.join("DAMAGED").exists(), "the damage marker must be cleared");
    f
}

#[test]
fn a_flipped_byte_mid_log_is_detected_the_node_refuses_to_vote_and_repairs_from_its_peers() {
    let mut cluster = Cluster::start("damaged-log");
    let keys = write_keys(&cluster, 300);
    damaged_node_refuses_to_vote_then_repairs(&mut cluster, &keys, |dir| {
        let segment = files(&dir.join("wal")).pop().expect("a log segment");
        flip_middle_byte(&segment);
    });
}

#[test]
fn a_flipped_byte_in_the_checkpoint_is_detected_and_the_node_repairs_from_a_peers_snapshot() {
    // Checkpoints every 40 slots, and no decided value kept behind them: a node that
    // lost its checkpoint can only catch up by snapshot.
    let env = [("SYNOD_CHECKPOINT_EVERY_SLOTS", "40"), ("SYNOD_CATCHUP_RETAIN_SLOTS", "0")];
    let mut cluster = Cluster::start_with_env("damaged-checkpoint", &env);
    let keys = write_keys(&cluster, 300);
    let leader = cluster.wait_for_leader(ELECTION_DEADLINE);
    let status = cluster.status(leader).expect("leader status");
    assert!(status["checkpoint_slot"].as_u64().is_some(), "the leader took checkpoints: {status}");
    let f = damaged_node_refuses_to_vote_then_repairs(&mut cluster, &keys, |dir| {
        let checkpoint = files(&dir.join("checkpoint")).pop().expect("a checkpoint file");
        flip_middle_byte(&checkpoint);
    });
    let status = cluster.status(f).expect("status");
    assert!(
        status["snapshots_installed"].as_u64() >= Some(1),
        "the node whose checkpoint was lost must have received a snapshot: {status}"
    );
}

/// Leader L, followers A and B. B stops; 41 writes are acknowledged by L and A; L is
/// killed; A's data directory is wiped and A restarts with no flag; B restarts. A and B
/// are a majority, but A forgot everything, B never saw the 41 writes: if A voted, they
/// would elect a leader without them (this happened before data directories had
/// identities). A must recover instead, and nothing is served until L returns.
#[test]
fn a_wiped_directory_restarted_without_a_flag_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start("wiped-dir");
    let l = cluster.wait_for_leader(ELECTION_DEADLINE);
    let (a, b) = ((l + 1) % 3, (l + 2) % 3);
    cluster.terminate(b, Duration::from_secs(10)).expect("stop B");
    let keys: Vec<String> = (0..41)
        .map(|n| {
            let key = format!("w{n:02}");
            eventually(&format!("PUT {key} through L"), Duration::from_secs(20), || {
                let reply = put(cluster.addr(l), &key, &format!("v{n}")).ok()?;
                (reply.status == 200).then_some(())
            });
            key
        })
        .collect();
    cluster.kill(l);
    cluster.terminate(a, Duration::from_secs(10)).expect("stop A");
    fs::remove_dir_all(&cluster.nodes[a].dir).expect("wipe A's data directory");
    cluster.restart(a);
    cluster.restart(b);

    // A is a new replica: it recovers, and with L down nobody can be elected.
    let progress = eventually("the wiped node reports its recovery", Duration::from_secs(10), || {
        recovering(&cluster, a).filter(|r| !r.is_null())
    });
    assert_eq!(progress["members_needed"], 2, "{progress}");
    assert!(
        fs::read_to_string(&cluster.nodes[a].log).unwrap_or_default().contains("the data directory is empty"),
        "the wiped node must say why it does not vote:\n{}",
        tail(&cluster.nodes[a].log, 20)
    );
    std::thread::sleep(ELECTION_TIMEOUT * 6);
    for i in [a, b] {
        let reply = put(cluster.addr(i), "during-recovery", "x").expect("PUT");
        assert_eq!(reply.status, 503, "a write succeeded without L: {}", reply.body);
        let read = get(cluster.addr(i), "/v1/kv/w00").expect("GET");
        assert_ne!(read.status, 200, "a linearizable read answered without L: {}", read.body);
    }

    // L returns: A repairs, and every acknowledged write is read back from every node.
    cluster.restart(l);
    eventually("the wiped node repairs", Duration::from_secs(30), || {
        recovering(&cluster, a).filter(|r| r.is_null())
    });
    cluster.wait_for_leader(ELECTION_DEADLINE);
    for i in [l, a, b] {
        for (n, key) in keys.iter().enumerate() {
            let value = eventually(&format!("read {key} at node {}", i + 1), Duration::from_secs(10), || {
                let reply = get(cluster.addr(i), &format!("/v1/kv/{key}")).ok()?;
                (reply.status == 200).then(|| reply.json()["value"].as_str().map(str::to_string)).flatten()
            });
            assert_eq!(value, format!("v{n}"), "{key} at node {}", i + 1);
        }
    }
    assert!(!cluster.nodes[a].dir.join("DAMAGED").exists(), "the marker is cleared once repaired");
}

/// A directory written by another node (a volume mounted on the wrong machine) is
/// refused at start, with a message that says whose it is.
#[test]
fn a_data_directory_of_another_node_is_refused_at_start() {
    let mut cluster = Cluster::start("wrong-volume");
    cluster.terminate(0, Duration::from_secs(10)).expect("stop node 1");
    cluster.terminate(1, Duration::from_secs(10)).expect("stop node 2");
    fs::remove_dir_all(&cluster.nodes[0].dir).expect("remove node 1's directory");
    fs::rename(&cluster.nodes[1].dir, &cluster.nodes[0].dir).expect("move node 2's directory to node 1");
    let error = cluster.spawn(0).expect_err("node 1 must refuse node 2's directory");
    assert!(error.contains("belongs to node 2"), "{error}");
}
