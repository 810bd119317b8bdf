//! Crash consistency with real processes and real kills.
//!
//! The test re-executes its own binary as a child (selected by an environment variable
//! and the exact test name `crash_child`). The child opens the storage, then appends
//! batches of decisions — with promises, rollovers and checkpoints mixed in — and after
//! each successful `sync` prints what is now durable. The parent SIGKILLs it at a random
//! moment (seeded), recovers the directory, and checks that every record the child
//! reported is present, intact and in order, that no damage is reported (a kill can only
//! tear the tail), and that the log accepts new writes; then it starts the next child on
//! the same directory.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use synod_core::{LogEntry, Record};
use synod_storage::{read_log, CheckpointMeta, FileStorage, LogContents, Storage, StorageOptions};

const CHILD_DIR: &str = "SYNOD_STORAGE_CRASH_CHILD_DIR";
const CHILD_SEED: &str = "SYNOD_STORAGE_CRASH_CHILD_SEED";
/// Kills per run; `SYNOD_STORAGE_CRASH_ITERATIONS` overrides it for a longer soak.
const ITERATIONS: u64 = 40;
const SEED: u64 = 0x5EED_0004;
/// A child that outlives this (its parent died) stops by itself.
const CHILD_LIFETIME_MS: u128 = 10_000;

fn options() -> StorageOptions {
    StorageOptions {
        segment_bytes_max: 16 * 1024,
        snapshot_part_bytes_max: 4096,
        ..StorageOptions::default()
    }
}

fn record_len(id: u64) -> usize {
    50 + (id % 7) as usize * 40
}

/// The snapshot a checkpoint through `slot` holds: follows from `slot`, so it can be checked.
fn snapshot(slot: u64) -> Vec<u8> {
    op_bytes(slot, 3000)
}

/// The next id to write, from what recovery found.
fn next_id(dir: &Path) -> (u64, u64) {
    let records = read_log::<Vec<u8>>(dir, &options()).unwrap().records;
    let recovered = synod_storage::recover::<Vec<u8>>(dir, &options()).unwrap();
    let from_checkpoint = recovered.checkpoint.map_or(0, |c| c.meta.last_slot + 1);
    let from_log = records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::Decided { slot, .. } => Some(slot + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    (from_checkpoint.max(from_log), recovered.state.promised.round)
}

/// Child mode: append until killed. A no-op when run as an ordinary test.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let seed: u64 = std::env::var(CHILD_SEED).unwrap().parse().unwrap();
    let started = std::time::Instant::now();
    let (mut storage, recovered) = FileStorage::<Vec<u8>>::open(Path::new(&dir), options()).unwrap();
    assert!(!recovered.report.damaged, "{}", recovered.report);
    let (mut next, _) = (
        recovered
            .checkpoint
            .as_ref()
            .map_or(0, |c| c.meta.last_slot + 1)
            .max(recovered.state.log.keys().next_back().map_or(0, |s| s + 1)),
        (),
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let stdout = std::io::stdout();
    writeln!(stdout.lock(), "ready {next}").unwrap();
    let mut batches = 0u64;
    while started.elapsed().as_millis() < CHILD_LIFETIME_MS {
        let count = rng.gen_range(1..=20);
        let mut records: Vec<_> = (next..next + count).map(|id| decided(id, record_len(id))).collect();
        let last = next + count - 1;
        if rng.gen_bool(0.3) {
            records.insert(0, promised(last));
        }
        storage.append(&records).unwrap();
        storage.sync().unwrap();
        let promise = storage.durable_state().promised.round;
        let mut out = stdout.lock();
        writeln!(out, "synced {last} {promise}").unwrap();
        out.flush().unwrap();
        next = last + 1;
        batches += 1;
        // A checkpoint every eighth batch, a little behind the newest decision.
        if batches >= 8 && last >= 10 {
            batches = 0;
            let slot = last - rng.gen_range(0..10);
            let meta = CheckpointMeta { last_slot: slot, configuration: vec![1, 2, 3], sessions: vec![] };
            storage.checkpoint(&meta, &snapshot(slot)).unwrap();
        }
    }
}

/// Checks the directory after a kill; returns the next id to write.
fn verify(dir: &Path, synced_through: Option<u64>, promise_synced: u64) -> (u64, bool) {
    let LogContents { records, report } = read_log::<Vec<u8>>(dir, &options()).unwrap();
    assert!(!report.damaged, "a kill can only tear the tail, never damage: {report}");
    let recovered = synod_storage::recover::<Vec<u8>>(dir, &options()).unwrap();
    let covered = match &recovered.checkpoint {
        Some(checkpoint) => {
            assert_eq!(checkpoint.snapshot, snapshot(checkpoint.meta.last_slot), "checkpoint intact");
            Some(checkpoint.meta.last_slot)
        }
        None => None,
    };
    // In order: the decisions in the log are consecutive slots, each holding exactly the
    // value written, starting at or before the slot after the checkpoint (a kill between
    // a checkpoint and its base batch leaves replay starting at the previous base).
    let first_decided = records.iter().find_map(|(_, r)| match r {
        Record::Decided { slot, .. } => Some(*slot),
        _ => None,
    });
    let mut expected = covered.map_or(0, |slot| slot + 1);
    if let Some(first) = first_decided {
        assert!(first <= expected, "the log starts at slot {first}, the checkpoint covers {covered:?}");
        expected = first;
    }
    let mut lsn = None;
    for (record_lsn, record) in &records {
        if let Some(prev) = lsn {
            assert_eq!(record_lsn.0, prev + 1, "lsns are consecutive");
        }
        lsn = Some(record_lsn.0);
        if let Record::Decided { slot, value: v } = record {
            assert_eq!(*slot, expected, "decisions in order");
            assert_eq!(*v, value(*slot, record_len(*slot)), "slot {slot} intact");
            expected += 1;
        }
    }
    // Present: everything reported durable is in the checkpoint or the log.
    let next = expected.max(covered.map_or(0, |s| s + 1));
    if let Some(through) = synced_through {
        assert!(next > through, "reported through {through}, recovered through {}", next as i64 - 1);
        for slot in covered.map_or(0, |s| s + 1)..=through {
            assert!(matches!(recovered.state.log.get(&slot), Some(LogEntry::Decided(_))), "slot {slot}");
        }
    }
    assert!(recovered.state.promised.round >= promise_synced, "the reported promise survived");
    (next, report.torn_tail.is_some())
}

#[test]
fn records_reported_synced_survive_sigkill_at_random_moments() {
    let scratch = Scratch::new("crash");
    let dir = scratch.node();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let exe = std::env::current_exe().unwrap();
    let (mut synced_through, mut promise_synced) = (None::<u64>, 0);
    let (mut torn_tails, mut reported_batches) = (0, 0);
    let iterations =
        std::env::var("SYNOD_STORAGE_CRASH_ITERATIONS").map_or(ITERATIONS, |n| n.parse().unwrap());
    for iteration in 0..iterations {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &dir)
            .env(CHILD_SEED, (SEED + iteration).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Most kills land while the child writes; every fifth may land during recovery.
        if iteration % 5 != 4 {
            loop {
                let line = lines.recv_timeout(Duration::from_secs(20)).expect("the child starts");
                // libtest prints "test crash_child ... " before the test's first line.
                if line.contains("ready ") {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(rng.gen_range(2..=50)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..=8)));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        for line in lines.try_iter() {
            let Some(at) = line.find("synced ") else { continue };
            let mut words = line[at..].split_whitespace().skip(1);
            {
                let id: u64 = words.next().unwrap().parse().unwrap();
                let promise: u64 = words.next().unwrap().parse().unwrap();
                synced_through = Some(synced_through.map_or(id, |s| s.max(id)));
                promise_synced = promise_synced.max(promise);
                reported_batches += 1;
            }
        }
        let (next, torn) = verify(&dir, synced_through, promise_synced);
        torn_tails += u32::from(torn);

        // The log accepts new writes after recovery (open cuts the torn tail).
        let (mut storage, recovered) = FileStorage::<Vec<u8>>::open(&dir, options()).unwrap();
        assert!(!recovered.report.damaged);
        storage.append(&[decided(next, record_len(next))]).unwrap();
        storage.sync().unwrap();
        synced_through = Some(next);
        drop(storage);
        assert_eq!(next_id(&dir).0, next + 1);
    }
    println!("{iterations} kills, {reported_batches} batches reported synced, {torn_tails} torn tails cut");
    assert!(reported_batches > iterations, "the children got to write");
}
