//! Integration tests with real processes: three `synod server`s on loopback, real TCP
//! between them, real files, plain HTTP/1.1 from the test (see `harness`).
//!
//! Every wait is a poll against a deadline; no test sleeps for a fixed long time.

mod harness;

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn three_nodes_elect_a_leader_and_serve_writes_and_linearizable_reads_through_any_node() {
    let cluster = Cluster::start("elect");
    // A write through every node, each read back through every node.
    for i in 0..3 {
        let reply = put(cluster.addr(i), &format!("key-{i}"), &format!("value-{i}")).unwrap();
        assert_eq!(reply.status, 200, "write through node {}: {reply:?}", i + 1);
        assert_eq!(reply.json()["previous"], Value::Null);
        // Every node names the leader, so clients can skip the forwarding hop. (Which
        // member it names may change if leadership moves right after startup.)
        let hint = reply.header("synod-leader").map(|h| h.to_string());
        let members: Vec<String> = (0..3).map(|j| format!("http://{}", cluster.addr(j))).collect();
        assert!(
            hint.as_ref().is_some_and(|h| members.contains(h)),
            "leader hint from node {}: {hint:?}",
            i + 1
        );
    }
    for j in 0..3 {
        for i in 0..3 {
            assert_eq!(
                read(cluster.addr(j), &format!("key-{i}")).as_deref(),
                Some(format!("value-{i}").as_str())
            );
        }
    }
    // Overwrite through one node, then read through each other node at once: a
    // linearizable read may not return the old value after the write was acknowledged.
    for round in 0..5 {
        let writer = round % 3;
        let value = format!("round-{round}");
        let reply = put(cluster.addr(writer), "register", &value).unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        for reader in (0..3).filter(|&r| r != writer) {
            assert_eq!(read(cluster.addr(reader), "register").as_deref(), Some(value.as_str()));
        }
    }
    assert_eq!(read(cluster.addr(1), "never-written"), None);
}

#[test]
fn killing_the_leader_elects_a_new_one_within_a_few_election_timeouts_and_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start("failover");
    let leader = cluster.wait_for_leader(ELECTION_DEADLINE);
    let leader_addr = cluster.addr(leader);

    // A writer hammers the leader until it dies; every write it saw acknowledged, up to
    // the very last one before the kill, must survive.
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        std::thread::spawn(move || {
            for n in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let (key, value) = (format!("w-{n}"), format!("v-{n}"));
                match http(
                    leader_addr,
                    "PUT",
                    &format!("/v1/kv/{key}"),
                    &[],
                    Some(json!({ "value": value }).to_string().as_bytes()),
                    Duration::from_secs(2),
                ) {
                    Ok(reply) if reply.status == 200 => acknowledged.lock().unwrap().push((key, value)),
                    Ok(_) => {}
                    Err(_) => return, // The leader is gone.
                }
            }
        })
    };
    eventually("the writer has 30 acknowledged writes", Duration::from_secs(10), || {
        (acknowledged.lock().unwrap().len() >= 30).then_some(())
    });

    cluster.kill(leader);
    let killed = Instant::now();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer thread");

    // Writes through the survivors, alternating, until one is acknowledged.
    let survivors = cluster.live();
    let mut attempt = 0;
    let failover =
        eventually("a write succeeds after the leader was killed", Duration::from_secs(10), || {
            attempt += 1;
            let addr = cluster.addr(survivors[attempt % survivors.len()]);
            let reply = http(
                addr,
                "PUT",
                "/v1/kv/after-failover",
                &[],
                Some(br#"{"value":"yes"}"#),
                Duration::from_secs(1),
            );
            matches!(reply, Ok(r) if r.status == 200).then(|| killed.elapsed())
        });
    let new_leader = cluster.wait_for_leader(Duration::from_secs(5));
    eprintln!(
        "failover: a write succeeded {} ms after SIGKILL of leader node {} (node {} leads now; election timeout {} ms)",
        failover.as_millis(),
        leader + 1,
        new_leader + 1,
        ELECTION_TIMEOUT.as_millis()
    );
    assert_ne!(new_leader, leader);
    // "A few election timeouts": detection (one timeout, drawn from [1, 2) timeouts),
    // phase 1, and the client's retry; ten leave room for a loaded machine.
    assert!(failover < 10 * ELECTION_TIMEOUT, "failover took {failover:?}");

    let acknowledged = acknowledged.lock().unwrap().clone();
    for (n, (key, value)) in acknowledged.iter().enumerate() {
        let through = cluster.addr(survivors[n % survivors.len()]);
        assert_eq!(read(through, key).as_deref(), Some(value.as_str()), "acknowledged write {key} was lost");
    }
    eprintln!("failover: all {} acknowledged writes are readable", acknowledged.len());
}

#[test]
fn a_restarted_node_catches_up() {
    const KEYS: usize = 100;
    let mut cluster = Cluster::start("catchup");
    let leader = cluster.wait_for_leader(ELECTION_DEADLINE);
    let follower = (leader + 1) % 3;
    assert_eq!(put(cluster.addr(follower), "before", "1").unwrap().status, 200);
    cluster.kill(follower);

    for k in 0..KEYS {
        let reply = put(cluster.addr(leader), &format!("missed-{k}"), &format!("{k}")).unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let leader_applied =
        cluster.status(leader).expect("the leader's status")["applied_upto"].as_u64().unwrap();

    cluster.restart(follower);
    let started = Instant::now();
    let addr = cluster.addr(follower);
    // No further writes: the restarted node must learn what it missed on its own.
    eventually("the restarted node has applied what it missed", Duration::from_secs(15), || {
        let applied = cluster.status(follower)?["applied_upto"].as_u64()?;
        (applied >= leader_applied).then_some(())
    });
    for k in 0..KEYS {
        let reply = get(addr, &format!("/v1/kv/missed-{k}?consistency=stale")).unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.json()["value"], json!(format!("{k}")), "stale read of missed-{k}");
        assert!(reply.json()["applied_upto"].as_u64().unwrap() >= leader_applied);
    }
    let applied_after = started.elapsed();
    // It serves linearizable reads and writes again once it hears a majority and a
    // leader (until then it answers 503 no_quorum, and clients go elsewhere).
    cluster.wait_for_leader(Duration::from_secs(10));
    eprintln!(
        "catch-up: {KEYS} missed writes applied {} ms after restart; quorum-connected with a leader after {} ms",
        applied_after.as_millis(),
        started.elapsed().as_millis()
    );
    assert_eq!(read(addr, "missed-0").as_deref(), Some("0"));
    assert_eq!(put(addr, "after", "1").unwrap().status, 200);
}

#[test]
fn a_retried_transfer_is_applied_once() {
    let cluster = Cluster::start("transfer");
    let (a, b, c) = (cluster.addr(0), cluster.addr(1), cluster.addr(2));
    for (account, initial) in [(1, 100), (2, 0)] {
        let reply =
            post(a, "/v1/bank/accounts", &[], &json!({ "account": account, "initial_balance": initial }))
                .unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.json()["result"], "opened");
    }

    let transfer = json!({ "id": 42, "from": 1, "to": 2, "amount": 10 });
    let session =
        |client: u64, seq: u64| vec![("synod-client-id", client.to_string()), ("synod-seq", seq.to_string())];
    // The same request twice, same session and sequence number, through two nodes: as a
    // client that timed out and retried elsewhere would send it.
    let first = post(a, "/v1/bank/transfers", &session(7_001, 1), &transfer).unwrap();
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.json()["result"], "ok");
    let retry = post(b, "/v1/bank/transfers", &session(7_001, 1), &transfer).unwrap();
    assert_eq!(retry.status, 200, "{retry:?}");
    assert_eq!(retry.json(), first.json(), "a retry returns the first reply");
    // The same transfer id from another session: the transfer id is the idempotency key.
    let other = post(c, "/v1/bank/transfers", &session(9_002, 1), &transfer).unwrap();
    assert_eq!(other.status, 200, "{other:?}");
    assert_eq!(other.json()["result"], "ok", "a repeated transfer id returns the first result");
    // The same id with other fields is refused and moves nothing.
    let reused = post(
        c,
        "/v1/bank/transfers",
        &session(9_002, 2),
        &json!({ "id": 42, "from": 1, "to": 2, "amount": 50 }),
    )
    .unwrap();
    assert_eq!(reused.status, 200, "{reused:?}");
    assert_eq!(reused.json()["result"], "id_reused");

    for through in [a, b, c] {
        assert_eq!(balance(through, 1), 90, "account 1 through {through}");
        assert_eq!(balance(through, 2), 10, "account 2 through {through}");
    }
}

#[test]
fn a_session_pair_reused_for_another_request_is_a_409_and_a_true_retry_gets_the_first_reply() {
    let cluster = Cluster::start("conflict");
    let (a, b, c) = (cluster.addr(0), cluster.addr(1), cluster.addr(2));
    let session =
        |client: u64, seq: u64| vec![("synod-client-id", client.to_string()), ("synod-seq", seq.to_string())];
    let put_with = |addr, seq: u64, value: &str| {
        let body = json!({ "value": value }).to_string();
        http(addr, "PUT", "/v1/kv/r1", &session(99, seq), Some(body.as_bytes()), HTTP_TIMEOUT).unwrap()
    };
    let conflict = |reply: &Reply, what: &str| {
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (409, "session_conflict"),
            "{what}: {reply:?}"
        );
    };

    let first = put_with(a, 1, "first");
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.json()["previous"], Value::Null);
    // Another kind of request under the same pair: it was answered with the PUT's cached
    // output, which the DELETE handler could not read (a 500).
    let delete = http(b, "DELETE", "/v1/kv/r1", &session(99, 1), None, HTTP_TIMEOUT).unwrap();
    conflict(&delete, "a DELETE under the PUT's pair");
    // The same kind with another body: it was answered 200 with the first reply, and the
    // new value was silently not written.
    conflict(&put_with(c, 1, "second"), "a PUT of another value under the same pair");
    // A true retry, through another node: the first reply, and nothing applied again.
    let retry = put_with(b, 1, "first");
    assert_eq!(retry.status, 200, "{retry:?}");
    assert_eq!(retry.json(), first.json(), "a retry returns the first reply");
    for through in [a, b, c] {
        assert_eq!(read(through, "r1").as_deref(), Some("first"), "r1 through {through}");
    }
    // The session goes on with the next sequence number.
    let next = put_with(c, 2, "next");
    assert_eq!((next.status, next.json()["previous"].as_str()), (200, Some("first")), "{next:?}");

    // The bank, under the same session.
    for (seq, account, initial) in [(3, 1, 100), (4, 2, 0)] {
        let reply = post(
            a,
            "/v1/bank/accounts",
            &session(99, seq),
            &json!({ "account": account, "initial_balance": initial }),
        )
        .unwrap();
        assert_eq!((reply.status, reply.json()["result"].as_str()), (200, Some("opened")), "{reply:?}");
    }
    // Opening another account under a used pair: it was answered "opened", built from
    // this request's body, though nothing was opened.
    let reply =
        post(b, "/v1/bank/accounts", &session(99, 4), &json!({ "account": 3, "initial_balance": 500 }))
            .unwrap();
    conflict(&reply, "an open of another account under a used pair");
    let transfer = json!({ "id": 7, "from": 1, "to": 2, "amount": 10 });
    conflict(
        &post(a, "/v1/bank/transfers", &session(99, 4), &transfer).unwrap(),
        "a transfer under an open's pair",
    );
    let first = post(a, "/v1/bank/transfers", &session(99, 5), &transfer).unwrap();
    assert_eq!((first.status, first.json()["result"].as_str()), (200, Some("ok")), "{first:?}");
    // Another transfer under that pair: it was answered with the first transfer's result
    // and this request's id, as if transfer 8 had moved 50.
    let other = json!({ "id": 8, "from": 1, "to": 2, "amount": 50 });
    conflict(&post(b, "/v1/bank/transfers", &session(99, 5), &other).unwrap(), "another transfer");
    let batch = json!({ "transfers": [transfer] });
    conflict(
        &post(c, "/v1/bank/transfers/batch", &session(99, 5), &batch).unwrap(),
        "a batch under a transfer's pair",
    );
    let retry = post(c, "/v1/bank/transfers", &session(99, 5), &transfer).unwrap();
    assert_eq!(retry.status, 200, "{retry:?}");
    assert_eq!(retry.json(), first.json(), "a retried transfer returns the first reply");

    for through in [a, b, c] {
        assert_eq!(balance(through, 1), 90, "account 1 through {through}");
        assert_eq!(balance(through, 2), 10, "account 2 through {through}");
        let absent = get(through, "/v1/bank/accounts/3").unwrap();
        assert_eq!(absent.status, 404, "account 3 was never opened: {absent:?}");
    }
}

#[test]
fn bad_input_gets_a_4xx_json_error_and_no_quorum_gets_503() {
    let mut cluster = Cluster::start("badinput");
    let addr = cluster.addr(0);

    let long_key = "k".repeat(4097);
    let reply = put(addr, &long_key, "v").unwrap();
    assert_eq!((reply.status, reply.error_code().as_str()), (400, "key_too_large"), "{reply:?}");
    assert!(!reply.json()["error"]["message"].as_str().unwrap().is_empty());

    let reply = put(addr, "k", &"v".repeat((1 << 20) + 1)).unwrap();
    assert_eq!((reply.status, reply.error_code().as_str()), (400, "value_too_large"), "{reply:?}");

    for garbage in [&b"not json{"[..], br#"{"valeu": "x"}"#, br#"{"value": 7}"#, b"\xff\xfe"] {
        let reply = http(addr, "PUT", "/v1/kv/k", &[], Some(garbage), HTTP_TIMEOUT).unwrap();
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (400, "bad_request"),
            "{garbage:?}: {reply:?}"
        );
    }
    let reply = http(addr, "POST", "/v1/bank/transfers", &[], Some(b"[1,2,3]"), HTTP_TIMEOUT).unwrap();
    assert_eq!((reply.status, reply.error_code().as_str()), (400, "bad_request"), "{reply:?}");
    let reply =
        http(addr, "PUT", "/v1/kv/k", &[("synod-seq", "1".into())], Some(br#"{"value":"v"}"#), HTTP_TIMEOUT)
            .unwrap();
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (400, "bad_request"),
        "half a session: {reply:?}"
    );

    let transfers: Vec<Value> =
        (0..8191).map(|id| json!({ "id": id, "from": 1, "to": 2, "amount": 1 })).collect();
    let reply = post(addr, "/v1/bank/transfers/batch", &[], &json!({ "transfers": transfers })).unwrap();
    assert_eq!((reply.status, reply.error_code().as_str()), (400, "batch_too_large"), "{reply:?}");

    let reply = get(addr, "/v1/no/such/route").unwrap();
    assert_eq!((reply.status, reply.error_code().as_str()), (404, "not_found"), "{reply:?}");

    // The node is still fine after all that.
    assert_eq!(put(addr, "k", "fine").unwrap().status, 200);

    // Leave the leader alone: it must notice that it lost its majority and say so.
    let survivor = cluster.wait_for_leader(ELECTION_DEADLINE);
    for i in (0..3).filter(|&i| i != survivor) {
        cluster.kill(i);
    }
    let addr = cluster.addr(survivor);
    let killed = Instant::now();
    // Watch the survivor's own view from the side, to report how long it takes to see
    // that it lost its majority.
    let noticed = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let status = http(addr, "GET", "/v1/status", &[], None, Duration::from_secs(1));
            if matches!(&status, Ok(r) if r.status == 200 && r.json()["quorum_connected"] == json!(false)) {
                return Some(killed.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    });
    // Every answer is a prompt 503 with Retry-After: a write that slipped in before the
    // node noticed is answered `no_quorum` (outcome unknown) within a few quorum checks,
    // not after the request timeout; once it noticed, the answer is immediate.
    let mut replies: Vec<(u128, String)> = Vec::new();
    let code = eventually("a write without a quorum is refused at once", Duration::from_secs(15), || {
        let sent = Instant::now();
        let reply = put(addr, "no-quorum", "x").expect("an answer, not a hang");
        let took = sent.elapsed();
        assert_eq!(reply.status, 503, "a write without a majority: {reply:?}");
        assert!(reply.header("retry-after").is_some(), "503 without Retry-After: {:?}", reply.headers);
        assert!(took < Duration::from_secs(2), "the write hung for {took:?}");
        let code = reply.error_code();
        replies.push((took.as_millis(), code.clone()));
        (took < Duration::from_secs(1)).then_some(code)
    });
    let noticed = noticed.join().expect("the status watcher");
    eprintln!(
        "no quorum: the survivor reported quorum_connected=false {:?} ms after the kill; \
         writes answered 503 (ms, code): {replies:?}",
        noticed.map(|d| d.as_millis()),
    );
    assert_eq!(code, "no_quorum");
}

#[test]
fn sigterm_shuts_a_node_down_cleanly() {
    let mut cluster = Cluster::start("sigterm");
    let leader = cluster.wait_for_leader(ELECTION_DEADLINE);
    assert_eq!(put(cluster.addr(leader), "k", "v").unwrap().status, 200);
    // The leader first (it has the most in hand), then the rest, the last one alone.
    let order = [leader, (leader + 1) % 3, (leader + 2) % 3];
    for i in order {
        let sent = Instant::now();
        let status = cluster.terminate(i, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("sigterm: node {} exited with {status} in {} ms", i + 1, sent.elapsed().as_millis());
        assert_eq!(status.code(), Some(0), "node {} after SIGTERM: {status}", i + 1);
        let log = fs::read_to_string(&cluster.nodes[i].log).unwrap_or_default();
        assert!(log.contains("stopped"), "node {} did not log its clean stop", i + 1);
    }
    // A clean stop keeps what was acknowledged: restart all three and read it back.
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_for_leader(ELECTION_DEADLINE);
    assert_eq!(read(cluster.addr(0), "k").as_deref(), Some("v"));
}
