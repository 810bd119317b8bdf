//! Live membership on real processes: nodes join from empty directories, the cluster
//! grows and shrinks, a dead node is replaced, the leader is removed, a change survives the
//! leader's death, and a change that would lose the majority is refused unless forced.
//! Through all of it, every write acknowledged stays readable.
//!
//! Removing the leader: the endpoint hands the leadership over first, then answers 307 to
//! the new leader's same URL, which removes the old one (`members_api`).

mod harness;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use harness::*;
use serde_json::{json, Value};

/// A change may take this long: decided, in force `ALPHA` slots later, on two shared cores.
const CHANGE_DEADLINE: Duration = Duration::from_secs(20);

/// One membership request, following a 307 to the leader (at most a few hops).
fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Reply {
    let mut addr = addr;
    let mut path = path.to_string();
    for _ in 0..4 {
        let text = body.map(Value::to_string);
        let reply = http(addr, method, &path, &[], text.as_deref().map(str::as_bytes), HTTP_TIMEOUT)
            .unwrap_or_else(|e| panic!("{method} {path} at {addr}: {e}"));
        if reply.status != 307 {
            return reply;
        }
        let location = reply.header("location").expect("a 307 names the leader").to_string();
        let rest = location.strip_prefix("http://").expect("an http location");
        let (host, tail) = rest.split_once('/').expect("a path");
        addr = host.parse().expect("a socket address");
        path = format!("/{tail}");
    }
    panic!("{method} {path}: too many redirects");
}

/// Repeats a change while it is refused for a reason that passes (the last change taking
/// force, the learner catching up, no leader for a moment); returns the final reply.
fn change(cluster: &Cluster, via: usize, method: &str, path: &str, body: Option<&Value>) -> Reply {
    let deadline = Instant::now() + CHANGE_DEADLINE;
    loop {
        let reply = request(cluster.addr(via), method, path, body);
        let passing = reply.status == 503
            || (reply.status == 409
                && matches!(reply.error_code().as_str(), "change_in_flight" | "learner_behind"));
        if !passing || Instant::now() > deadline {
            return reply;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET /v1/members` through `via`, retried while it answers 503 (a node that has just
/// joined says `starting` until its protocol thread has caught up).
fn members(cluster: &Cluster, via: usize) -> Value {
    let reply = eventually("the members listed", CHANGE_DEADLINE, || {
        get(cluster.addr(via), "/v1/members").ok().filter(|r| r.status != 503)
    });
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

fn ids(value: &Value) -> Vec<u64> {
    value.as_array().expect("a list").iter().map(|v| v.as_u64().expect("an id")).collect()
}

/// Waits until every live node has `voters` and `learners` in force.
fn converged(cluster: &Cluster, voters: &[u64], learners: &[u64]) {
    eventually(
        &format!("every live node has voters {voters:?} and learners {learners:?} in force"),
        CHANGE_DEADLINE,
        || {
            cluster
                .live()
                .into_iter()
                .all(|i| {
                    let Some(status) = cluster.status(i) else { return false };
                    let c = &status["configuration"];
                    ids(&c["voters"]) == voters
                        && ids(&c["learners"]) == learners
                        && status["latest_configuration"]["epoch"] == c["epoch"]
                })
                .then_some(())
        },
    );
}

/// Writes keys `prefix-0`, `prefix-1`, ... one after another through whichever node of
/// `targets` answers, until stopped; remembers every acknowledged write, and the longest
/// time between two acknowledgements.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Vec<String>, Duration)>,
}

impl Writer {
    fn start(prefix: &str, targets: Arc<Mutex<Vec<SocketAddr>>>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let prefix = prefix.to_string();
        let thread = std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            let mut last = Instant::now();
            let mut longest = Duration::ZERO;
            let mut n = 0;
            while !stopping.load(Ordering::Relaxed) {
                let key = format!("{prefix}-{n}");
                let all = targets.lock().unwrap().clone();
                let target = all[n % all.len()];
                if let Ok(reply) = put(target, &key, &n.to_string()) {
                    if reply.status == 200 {
                        acknowledged.push(key);
                        longest = longest.max(last.elapsed());
                        last = Instant::now();
                        n += 1;
                        continue;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (acknowledged, longest)
        });
        Writer { stop, thread }
    }

    fn stop(self) -> (Vec<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the writer")
    }
}

fn addrs(cluster: &Cluster, nodes: &[usize]) -> Arc<Mutex<Vec<SocketAddr>>> {
    Arc::new(Mutex::new(nodes.iter().map(|&i| cluster.addr(i)).collect()))
}

/// Every acknowledged key reads back (linearizably) through `via`.
/// Reads every key through `via`. A 503 (`no_quorum`: a node that just joined or was
/// promoted may not yet have heard a majority for three heartbeat rounds) says "retry
/// here later", and is retried; any other answer must hold the acknowledged value.
fn all_readable(cluster: &Cluster, via: usize, keys: &[String]) {
    for key in keys {
        let n = key.rsplit('-').next().unwrap();
        let reply = eventually(&format!("a read of {key} answered"), CHANGE_DEADLINE, || {
            get(cluster.addr(via), &format!("/v1/kv/{key}")).ok().filter(|r| r.status != 503)
        });
        assert_eq!(reply.status, 200, "read of {key}: {reply:?}");
        assert_eq!(reply.json()["value"].as_str(), Some(n), "acknowledged write {key} is lost");
    }
}

#[test]
fn a_node_joins_from_an_empty_directory_catches_up_and_is_promoted() {
    let mut cluster = Cluster::start("join");
    for n in 0..20 {
        assert_eq!(put(cluster.addr(0), &format!("before-{n}"), &n.to_string()).unwrap().status, 200);
    }
    let follower = (0..3).find(|&i| cluster.status(i).unwrap()["is_leader"] != json!(true)).unwrap();
    let new = cluster.join(&[follower]);
    let listed = members(&cluster, new);
    assert_eq!(ids(&listed["latest"]["learners"]), vec![4], "{listed}");
    assert_eq!(listed["cluster"], json!(cluster.name));
    eventually("the learner caught up", CHANGE_DEADLINE, || {
        let reply = get(cluster.addr(new), "/v1/kv/before-19?consistency=stale").ok()?;
        (reply.status == 200 && reply.json()["value"] == json!("19")).then_some(())
    });
    let reply = change(&cluster, follower, "POST", "/v1/members/4/promote", None);
    assert_eq!(reply.status, 200, "{reply:?}");
    converged(&cluster, &[1, 2, 3, 4], &[]);
    assert_eq!(metric(cluster.addr(new), "synod_voters"), Some(4.0));
    let keys: Vec<String> = (0..20).map(|n| format!("before-{n}")).collect();
    all_readable(&cluster, new, &keys);
    // A restart with the same flags starts as the member it became, without asking again.
    cluster.terminate(new, Duration::from_secs(10)).unwrap();
    cluster.restart(new);
    eventually("the restarted node serves reads", CHANGE_DEADLINE, || {
        let reply = get(cluster.addr(new), "/v1/kv/before-3").ok()?;
        (reply.status == 200 && reply.json()["value"] == json!("3")).then_some(())
    });
}

#[test]
fn a_join_under_another_cluster_name_is_refused() {
    let cluster = Cluster::start("join-mismatch");
    let body = json!({ "peer_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2", "cluster": "another" });
    let reply = request(cluster.addr(0), "POST", "/v1/members", Some(&body));
    assert_eq!(reply.status, 409, "{reply:?}");
    assert_eq!(reply.error_code(), "cluster_mismatch");
    assert_eq!(ids(&members(&cluster, 0)["latest"]["learners"]), Vec::<u64>::new());
}

#[test]
fn the_cluster_grows_from_three_to_five_and_shrinks_back_while_writes_go_on() {
    let mut cluster = Cluster::start("grow");
    let writer = Writer::start("grow", addrs(&cluster, &[0, 1, 2]));
    let four = cluster.join(&[0]);
    let five = cluster.join(&[1]);
    for id in [4, 5] {
        let reply = change(&cluster, 0, "POST", &format!("/v1/members/{id}/promote"), None);
        assert_eq!(reply.status, 200, "promote {id}: {reply:?}");
    }
    converged(&cluster, &[1, 2, 3, 4, 5], &[]);
    assert_eq!(metric(cluster.addr(four), "synod_config_epoch"), Some(5.0));
    // Back to three: the two original followers leave (the leader stays).
    let leader = cluster.wait_for_leader(ELECTION_DEADLINE);
    let leaving: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &leaving {
        let id = cluster.nodes[i].id;
        let reply = change(&cluster, five, "DELETE", &format!("/v1/members/{id}"), None);
        assert_eq!(reply.status, 200, "remove {id}: {reply:?}");
    }
    for &i in &leaving {
        let status = cluster.status(i).expect("a removed node still answers");
        assert_eq!(status["removed"], json!(true), "node {} says it was removed: {status}", i + 1);
        assert_eq!(metric(cluster.addr(i), "synod_removed"), Some(1.0));
        cluster.terminate(i, Duration::from_secs(10)).unwrap();
    }
    let mut voters = vec![cluster.nodes[leader].id as u64, 4, 5];
    voters.sort();
    converged(&cluster, &voters, &[]);
    let (keys, _) = writer.stop();
    assert!(keys.len() > 10, "writes went on during the changes: {}", keys.len());
    all_readable(&cluster, four, &keys);
}

#[test]
fn a_dead_node_is_replaced_by_a_fresh_one() {
    let mut cluster = Cluster::start("replace");
    let leader = cluster.wait_for_leader(ELECTION_DEADLINE);
    let dead = (0..3).find(|&i| i != leader).unwrap();
    let survivor = (0..3).find(|&i| i != leader && i != dead).unwrap();
    let writer = Writer::start("replace", addrs(&cluster, &[leader, survivor]));
    cluster.kill(dead);
    let dead_id = cluster.nodes[dead].id;
    let reply = change(&cluster, survivor, "DELETE", &format!("/v1/members/{dead_id}"), None);
    assert_eq!(reply.status, 200, "{reply:?}");
    let fresh = cluster.join(&[survivor]);
    let fresh_id = cluster.nodes[fresh].id;
    let reply = change(&cluster, survivor, "POST", &format!("/v1/members/{fresh_id}/promote"), None);
    assert_eq!(reply.status, 200, "{reply:?}");
    let mut voters =
        vec![cluster.nodes[leader].id as u64, cluster.nodes[survivor].id as u64, fresh_id as u64];
    voters.sort();
    converged(&cluster, &voters, &[]);
    let (keys, _) = writer.stop();
    all_readable(&cluster, fresh, &keys);
}

#[test]
fn removing_the_leader_hands_the_leadership_over_first() {
    let mut cluster = Cluster::start("remove-leader");
    let leader = cluster.wait_for_leader(ELECTION_DEADLINE);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let writer = Writer::start("remove-leader", addrs(&cluster, &others));
    std::thread::sleep(Duration::from_millis(500));
    let id = cluster.nodes[leader].id;
    let first =
        http(cluster.addr(leader), "DELETE", &format!("/v1/members/{id}"), &[], None, HTTP_TIMEOUT).unwrap();
    assert_eq!(first.status, 307, "the leader hands over, then sends the removal on: {first:?}");
    assert_eq!(first.error_code(), "not_leader");
    let reply = change(&cluster, leader, "DELETE", &format!("/v1/members/{id}"), None);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(cluster.status(leader).unwrap()["removed"], json!(true));
    cluster.terminate(leader, Duration::from_secs(10)).unwrap();
    let voters: Vec<u64> = others.iter().map(|&i| cluster.nodes[i].id as u64).collect();
    converged(&cluster, &voters, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let (keys, longest) = writer.stop();
    println!("removing the leader: longest gap between acknowledged writes {longest:?}");
    all_readable(&cluster, others[0], &keys);
}

#[test]
fn a_change_interrupted_by_the_leader_s_death_converges_and_the_cluster_serves() {
    let mut cluster = Cluster::start("interrupted");
    let leader = cluster.wait_for_leader(ELECTION_DEADLINE);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let writer = Writer::start("interrupted", addrs(&cluster, &others));
    // The leader dies while it proposes a learner: the change is decided or lost, never half.
    let addr = cluster.addr(leader);
    let body = json!({ "id": 9, "peer_addr": "127.0.0.1:9", "http_addr": "127.0.0.1:19" });
    let pending = std::thread::spawn(move || {
        http(addr, "POST", "/v1/members", &[], Some(body.to_string().as_bytes()), HTTP_TIMEOUT)
    });
    std::thread::sleep(Duration::from_millis(5));
    cluster.kill(leader);
    let _ = pending.join();
    let new_leader = cluster.wait_for_leader(ELECTION_DEADLINE);
    // One configuration everywhere, in force: with the learner or without it.
    let (epoch, learners) =
        eventually("the survivors agree on one configuration in force", CHANGE_DEADLINE, || {
            let views: Vec<Value> = others.iter().map(|&i| cluster.status(i)).collect::<Option<_>>()?;
            let first = &views[0]["configuration"];
            let agreed =
                views.iter().all(|v| v["configuration"] == *first && v["latest_configuration"] == *first);
            agreed.then(|| (first["epoch"].as_u64().unwrap(), ids(&first["learners"])))
        });
    assert!(
        (epoch == 1 && learners.is_empty()) || (epoch == 2 && learners == vec![9]),
        "epoch {epoch}, learners {learners:?}"
    );
    // The cluster takes the next change, and serves.
    if learners == vec![9] {
        let reply = change(&cluster, new_leader, "DELETE", "/v1/members/9", None);
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let (keys, _) = writer.stop();
    assert_eq!(put(cluster.addr(new_leader), "after", "1").unwrap().status, 200);
    all_readable(&cluster, new_leader, &keys);
}

#[test]
fn a_change_that_would_lose_the_majority_is_refused_unless_forced() {
    let mut cluster = Cluster::start("majority");
    let leader = cluster.wait_for_leader(ELECTION_DEADLINE);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for n in 0..10 {
        assert_eq!(put(cluster.addr(leader), &format!("k-{n}"), &n.to_string()).unwrap().status, 200);
    }
    // One follower dies; removing the other would leave the leader and the dead one.
    cluster.kill(others[0]);
    std::thread::sleep(Duration::from_secs(1)); // The dead one goes unheard for three rounds.
    let removed = cluster.nodes[others[1]].id;
    let path = format!("/v1/members/{removed}");
    let reply = request(cluster.addr(leader), "DELETE", &path, None);
    assert_eq!(reply.status, 409, "{reply:?}");
    assert_eq!(reply.error_code(), "would_lose_majority");
    assert_eq!(members(&cluster, leader)["latest"]["epoch"], json!(1), "nothing was proposed");
    let reply = request(cluster.addr(leader), "DELETE", &format!("{path}?force=true"), None);
    assert_eq!(reply.status, 200, "{reply:?}");
    // The cluster of the leader and the dead node serves again once that node is back.
    cluster.restart(others[0]);
    cluster.terminate(others[1], Duration::from_secs(10)).unwrap();
    let mut voters = vec![cluster.nodes[leader].id as u64, cluster.nodes[others[0]].id as u64];
    voters.sort();
    converged(&cluster, &voters, &[]);
    let leader = cluster.wait_for_leader(ELECTION_DEADLINE);
    assert_eq!(put(cluster.addr(leader), "after", "1").unwrap().status, 200);
    let keys: Vec<String> = (0..10).map(|n| format!("k-{n}")).collect();
    all_readable(&cluster, leader, &keys);
}
