//! Numbers for live membership, printed and never asserted (two shared cores make any
//! threshold noise). Ignored by default; run it with a release binary:
//!
//! ```sh
//! cargo build --release -p synod
//! SYNOD_TEST_BIN=target/release/synod SYNOD_MEASURE_MB=1024 \
//!     cargo test -p synod --test membership_measure -- --ignored --nocapture
//! ```
//!
//! - how long a learner takes to join a cluster holding `SYNOD_MEASURE_MB` of state (it
//!   gets a snapshot: the leader has checkpointed and compacted its log);
//! - write throughput while changes go on (a learner joins, is promoted, is removed, over
//!   and over) against the same load just before, in the same run;
//! - the longest write unavailability while the leader is removed (a handover first).

mod harness;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;

const WRITERS: usize = 8;

/// Closed-loop writers of small values through `targets` until `stop`; counts successes.
fn load(
    targets: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let (targets, stop, done) = (targets.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let target = targets[(w + n) % targets.len()];
                    if matches!(put(target, &format!("load-{w}-{n}"), "x"), Ok(r) if r.status == 200) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            })
        })
        .collect()
}

fn ops_per_second(done: &AtomicU64, during: impl FnOnce()) -> f64 {
    let before = done.load(Ordering::Relaxed);
    let started = Instant::now();
    during();
    (done.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64()
}

fn leader(cluster: &Cluster) -> usize {
    cluster.wait_for_leader(ELECTION_DEADLINE)
}

/// Repeats a change while it is refused for a passing reason: on a loaded machine a
/// heartbeat round missed makes `would_lose_majority` transient too.
fn change(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut addr = addr;
    loop {
        let reply = http(addr, method, path, &[], body.map(str::as_bytes), HTTP_TIMEOUT).expect("an answer");
        if reply.status == 307 {
            let location = reply.header("location").unwrap();
            addr = location.trim_start_matches("http://").split('/').next().unwrap().parse().unwrap();
            continue;
        }
        let passing = reply.status == 503
            || (reply.status == 409
                && matches!(
                    reply.error_code().as_str(),
                    "change_in_flight" | "learner_behind" | "would_lose_majority"
                ));
        if !passing || Instant::now() > deadline {
            return reply;
        }
        println!("  {method} {path}: {reply:?}; again");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "a measurement: run it by hand with --ignored --nocapture (see the module docs)"]
fn measure_membership() {
    let megabytes: usize = std::env::var("SYNOD_MEASURE_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    // Checkpoint often, keep little of the log: a new learner gets a snapshot.
    let env = [("SYNOD_CHECKPOINT_EVERY_SLOTS", "200"), ("SYNOD_CATCHUP_RETAIN_SLOTS", "50")];
    let mut cluster = Cluster::start_with_env("measure", &env);

    // 1. The state: 16 values of 64 KiB (less a little) per MiB, written by four writers.
    // Not 1 MiB values: a leader batches up to `batch_commands_max` commands per slot
    // whatever their size, and a few dozen 1 MiB commands in one batch exceed a frame.
    let value = "v".repeat((64 << 10) - 64);
    let values = megabytes * 16;
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let addrs: Vec<SocketAddr> = (0..3).map(|i| cluster.addr(i)).collect();
    let fillers: Vec<_> = (0..4)
        .map(|w| {
            let (next, value, addrs) = (next.clone(), value.clone(), addrs.clone());
            std::thread::spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                if n >= values {
                    return;
                }
                let body = json!({ "value": value }).to_string();
                let path = format!("/v1/kv/big-{n}");
                for attempt in 0..20 {
                    let target = addrs[(w + attempt) % addrs.len()];
                    if matches!(http(target, "PUT", &path, &[], Some(body.as_bytes()), HTTP_TIMEOUT), Ok(r) if r.status == 200) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        })
        .collect();
    for filler in fillers {
        filler.join().unwrap();
    }
    let fill = started.elapsed();
    println!(
        "state: {megabytes} MiB written in {:.1} s ({:.1} MiB/s)",
        fill.as_secs_f64(),
        megabytes as f64 / fill.as_secs_f64()
    );

    // 2. A learner joins from an empty directory and catches up (a snapshot).
    let started = Instant::now();
    let learner = cluster.join(&[0]);
    let admitted = started.elapsed();
    let last = format!("/v1/kv/big-{}?consistency=stale", values - 1);
    eventually("the learner holds the whole state", Duration::from_secs(900), || {
        let reply = http(cluster.addr(learner), "GET", &last, &[], None, HTTP_TIMEOUT).ok()?;
        (reply.status == 200 && reply.json()["value"].as_str().is_some_and(|v| v.len() == value.len()))
            .then_some(())
    });
    let caught_up = started.elapsed();
    let snapshots = metric(cluster.addr(learner), "synod_snapshots_installed_total")
        .or_else(|| cluster.status(learner).and_then(|s| s["snapshots_installed"].as_f64()));
    println!(
        "join: admitted in {:.2} s, holds {megabytes} MiB after {:.1} s ({:.1} MiB/s; snapshots installed: {snapshots:?})",
        admitted.as_secs_f64(),
        caught_up.as_secs_f64(),
        megabytes as f64 / caught_up.as_secs_f64()
    );
    let reply =
        change(cluster.addr(0), "DELETE", &format!("/v1/members/{}", cluster.nodes[learner].id), None);
    assert_eq!(reply.status, 200, "{reply:?}");
    cluster.terminate(learner, Duration::from_secs(10)).unwrap();

    // 3. Throughput before and during changes, same load, same run, on a fresh cluster
    // with the default checkpoint interval: checkpointing a large state every 200 slots
    // stalls a node's protocol thread for as long as it takes to write (elections churn).
    drop(cluster);
    let cluster = Cluster::start("measure-changes");
    let addrs: Vec<SocketAddr> = (0..3).map(|i| cluster.addr(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writers = load(addrs.clone(), stop.clone(), done.clone());
    std::thread::sleep(Duration::from_secs(1)); // warm up
    let before = ops_per_second(&done, || std::thread::sleep(Duration::from_secs(5)));
    let mut changes = 0;
    let during = ops_per_second(&done, || {
        let until = Instant::now() + Duration::from_secs(5);
        let mut id = 100;
        while Instant::now() < until {
            id += 1;
            let body = json!({ "id": id, "peer_addr": format!("127.0.0.1:{}", 1000 + id), "http_addr": "127.0.0.1:1" });
            let reply = change(cluster.addr(0), "POST", "/v1/members", Some(&body.to_string()));
            if reply.status == 200 {
                changes += 1;
            } else {
                println!("add learner {id}: {reply:?}");
            }
            let reply = change(cluster.addr(0), "DELETE", &format!("/v1/members/{id}"), None);
            if reply.status == 200 {
                changes += 1;
            } else {
                println!("remove learner {id}: {reply:?}");
            }
        }
    });
    println!(
        "throughput: {before:.0} writes/s before, {during:.0} during {changes} changes: ratio {:.2} ({WRITERS} writers)",
        during / before
    );

    // 4. The leader is removed (handover first) under one closed-loop writer.
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let l = leader(&cluster);
    let others: Vec<SocketAddr> = (0..3).filter(|&i| i != l).map(|i| cluster.addr(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let gap = Arc::new(AtomicU64::new(0));
    let probe = {
        let (stop, gap) = (stop.clone(), gap.clone());
        std::thread::spawn(move || {
            let mut last = Instant::now();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if matches!(put(others[n % others.len()], &format!("gap-{n}"), "x"), Ok(r) if r.status == 200)
                {
                    gap.fetch_max(last.elapsed().as_micros() as u64, Ordering::Relaxed);
                    last = Instant::now();
                }
                n += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let before_gap = gap.swap(0, Ordering::Relaxed);
    let started = Instant::now();
    let reply = change(cluster.addr(l), "DELETE", &format!("/v1/members/{}", cluster.nodes[l].id), None);
    assert_eq!(reply.status, 200, "{reply:?}");
    let removal = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    probe.join().unwrap();
    println!(
        "leader removal: took {:.2} s; longest gap between acknowledged writes {:.0} ms (before: {:.0} ms)",
        removal.as_secs_f64(),
        gap.load(Ordering::Relaxed) as f64 / 1000.0,
        before_gap as f64 / 1000.0
    );
}
