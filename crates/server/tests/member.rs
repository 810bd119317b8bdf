//! Synod as a library: three `Member`s with a state machine of the test's own, on
//! loopback TCP and real files, answering `invoke` through any member.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use synod_core::{SnapshotError, StateMachine};
use synod_server::member::{Member, MemberOptions};

/// A counter: every increment returns the new value, so outputs reveal the order.
#[derive(Default)]
struct Counter(u64);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Increment;

impl StateMachine for Counter {
    type Command = Increment;
    type Output = u64;
    fn apply(&mut self, _: &Increment) -> u64 {
        self.0 += 1;
        self.0
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.0 = u64::from_le_bytes(bytes.try_into().map_err(|_| SnapshotError("8 bytes".into()))?);
        Ok(())
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_apply_every_invoke_once_in_one_order() {
    let dir = std::env::temp_dir().join(format!("synod-member-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addresses: Vec<(u32, String)> =
        (1..=3).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect();
    let mut members = Vec::new();
    for id in 1..=3 {
        let mut options = MemberOptions::new(id, addresses.clone(), dir.join(format!("m{id}")));
        options.cluster = "member-test".into();
        members.push(Arc::new(Member::start(options, Counter::default()).await.expect("member starts")));
    }
    // Wait for a leader.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !members.iter().any(|m| m.status().is_some_and(|s| s.is_leader)) {
        assert!(Instant::now() < deadline, "no leader within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..60 {
        let member = members[i % 3].clone();
        calls.spawn(async move { member.invoke(Increment).await });
    }
    let mut outputs: Vec<u64> = calls.join_all().await.into_iter().map(|r| r.expect("applied")).collect();
    outputs.sort();
    assert_eq!(outputs, (1..=60).collect::<Vec<_>>(), "every increment applied exactly once");
    // Every member converges on the same applied prefix.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let applied: Vec<u64> = members.iter().map(|m| m.status().unwrap().applied_upto).collect();
        if applied.iter().all(|a| *a == applied[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "members did not converge: {applied:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for member in members {
        Arc::into_inner(member).expect("no other handle").shutdown();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
