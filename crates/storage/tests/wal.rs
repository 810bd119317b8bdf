//! The write-ahead log through its public API: round trips, group commit, rollover,
//! checkpoints with compaction, and checkpoint transfer in chunks.

mod common;

use std::fs;

use common::*;
use synod_core::LogEntry;
use synod_storage::{
    read_log, recover, CheckpointMeta, FileStorage, LogContents, Lsn, Storage, StorageError, StorageOptions,
};

type Files = FileStorage<Vec<u8>>;

fn open(dir: &std::path::Path, options: StorageOptions) -> (Files, synod_storage::Recovered<Vec<u8>>) {
    FileStorage::open(dir, options).unwrap()
}

fn meta(last_slot: u64) -> CheckpointMeta {
    CheckpointMeta { last_slot, configuration: b"n1 n2 n3".to_vec(), sessions: vec![7; 100] }
}

#[test]
fn appended_records_read_back_in_order_after_a_clean_shutdown() {
    let scratch = Scratch::new("round-trip");
    let (mut storage, recovered) = open(&scratch.node(), StorageOptions::default());
    assert!(recovered.report.fresh && !recovered.report.damaged);
    let batches = vec![
        vec![promised(1)],
        vec![accepted(0, 1, 50), accepted(1, 1, 60)],
        vec![decided(0, 50), promised(2), accepted(1, 2, 70), decided(1, 70)],
    ];
    let mut expected = Vec::new();
    for batch in &batches {
        let lsn = storage.append(batch).unwrap();
        expected.extend(batch.iter().cloned());
        assert_eq!(lsn, Lsn(expected.len() as u64));
    }
    assert_eq!(storage.sync().unwrap(), Lsn(7));
    let state = storage.durable_state().clone();
    drop(storage);

    let LogContents { records, report } =
        read_log::<Vec<u8>>(&scratch.node(), &StorageOptions::default()).unwrap();
    assert!(!report.damaged && report.torn_tail.is_none(), "{report}");
    let lsns: Vec<u64> = records.iter().map(|(lsn, _)| lsn.0).collect();
    assert_eq!(lsns, (1..=7).collect::<Vec<_>>());
    assert_eq!(records.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), expected);

    let (mut storage, recovered) = open(&scratch.node(), StorageOptions::default());
    assert_eq!(recovered.state, state);
    assert_eq!(recovered.state.promised, ballot(2));
    assert!(matches!(recovered.state.log.get(&1), Some(LogEntry::Decided(_))));
    assert_eq!(storage.append(&[decided(2, 10)]).unwrap(), Lsn(8), "numbering continues across restarts");
}

#[test]
fn group_commit_makes_many_appends_durable_with_one_fdatasync() {
    let scratch = Scratch::new("group-commit");
    let (mut storage, _) = open(&scratch.node(), StorageOptions::default());
    let before = storage.stats().wal_syncs;
    for id in 0..100 {
        storage.append(&[decided(id, 300)]).unwrap();
    }
    assert_eq!(storage.durable_lsn(), Lsn(0), "nothing is durable before sync");
    assert_eq!(storage.appended_lsn(), Lsn(100));
    assert_eq!(storage.sync().unwrap(), Lsn(100));
    assert_eq!(storage.sync().unwrap(), Lsn(100), "a sync with nothing new does no fdatasync");
    let stats = storage.stats();
    assert_eq!(stats.wal_syncs - before, 1, "{stats:?}");
    assert_eq!((stats.batches_appended, stats.records_appended), (100, 100));
    assert_eq!(stats.durable_lsn, Lsn(100));
    assert!(stats.wal_sync_nanos_total > 0 && stats.wal_sync_nanos_max <= stats.wal_sync_nanos_total);
}

#[test]
fn segments_roll_over_at_the_size_bound_and_recover_whole() {
    let scratch = Scratch::new("rollover");
    let options = small_segments(4096);
    let (mut storage, _) = open(&scratch.node(), options.clone());
    for batch in 0..40u64 {
        let records: Vec<_> = (0..5).map(|i| decided(batch * 5 + i, 300)).collect();
        storage.append(&records).unwrap();
        storage.sync().unwrap();
    }
    drop(storage);
    let files = segments(&scratch.node());
    assert!(files.len() >= 15, "{} segments", files.len());
    for file in &files {
        assert!(fs::metadata(file).unwrap().len() <= 4096, "{} over the bound", file.display());
    }
    let LogContents { records, report } = read_log::<Vec<u8>>(&scratch.node(), &options).unwrap();
    assert!(!report.damaged, "{report}");
    assert_eq!(report.segments_replayed, files.len());
    let expected: Vec<_> = (0..200).map(|id| decided(id, 300)).collect();
    assert_eq!(records.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), expected);
}

#[test]
fn a_batch_larger_than_a_segment_gets_a_segment_of_its_own() {
    let scratch = Scratch::new("big-batch");
    let options = small_segments(2048);
    let (mut storage, _) = open(&scratch.node(), options.clone());
    storage.append(&[decided(0, 10)]).unwrap();
    storage.append(&(1..20).map(|id| decided(id, 300)).collect::<Vec<_>>()).unwrap();
    storage.append(&[decided(20, 10)]).unwrap();
    storage.sync().unwrap();
    drop(storage);
    assert_eq!(segments(&scratch.node()).len(), 3);
    let recovered = recover::<Vec<u8>>(&scratch.node(), &options).unwrap();
    assert_eq!(recovered.state.log.len(), 21);
}

#[test]
fn an_oversized_record_is_refused_and_nothing_is_written() {
    let scratch = Scratch::new("too-large");
    let options = StorageOptions { record_bytes_max: 1000, ..StorageOptions::default() };
    let (mut storage, _) = open(&scratch.node(), options);
    storage.append(&[decided(0, 10)]).unwrap();
    let error = storage.append(&[decided(1, 10), decided(2, 5000)]).unwrap_err();
    assert!(matches!(error, StorageError::RecordTooLarge { max: 1000, .. }), "{error}");
    assert!(!error.is_fatal());
    assert_eq!(storage.append(&[decided(3, 10)]).unwrap(), Lsn(2), "the refused batch took no lsns");
}

#[test]
fn a_second_opener_of_a_directory_is_refused() {
    let scratch = Scratch::new("lock");
    let (_storage, _) = open(&scratch.node(), StorageOptions::default());
    let error = FileStorage::<Vec<u8>>::open(&scratch.node(), StorageOptions::default()).unwrap_err();
    assert!(matches!(error, StorageError::Locked { .. }), "{error}");
}

#[test]
fn opening_a_missing_directory_without_create_is_refused() {
    let scratch = Scratch::new("missing");
    let options = StorageOptions { create_if_missing: false, ..StorageOptions::default() };
    let error = FileStorage::<Vec<u8>>::open(&scratch.node(), options).unwrap_err();
    assert!(matches!(error, StorageError::NotFound { .. }), "{error}");
}

#[test]
fn a_checkpoint_compacts_the_log_and_recovery_restores_promise_votes_and_snapshot() {
    let scratch = Scratch::new("checkpoint");
    let options = small_segments(4096);
    let (mut storage, _) = open(&scratch.node(), options.clone());
    for id in 0..=100 {
        storage.append(&[decided(id, 200)]).unwrap();
    }
    storage.append(&[promised(5)]).unwrap();
    storage.append(&(101..=105).map(|slot| accepted(slot, 5, 100)).collect::<Vec<_>>()).unwrap();
    assert!(segments(&scratch.node()).len() > 3);
    let snapshot = op_bytes(99, 5000);
    let info = storage.checkpoint(&meta(99), &snapshot).unwrap();
    assert_eq!(info.last_slot, 99);
    assert_eq!(segments(&scratch.node()).len(), 1, "every older segment is deleted");
    assert_eq!(checkpoints(&scratch.node()), vec![info.path.clone()]);
    assert_eq!(storage.stats().checkpoints_written, 1);
    storage.append(&[promised(6), accepted(106, 6, 100)]).unwrap();
    storage.sync().unwrap();
    let state = storage.durable_state().clone();
    drop(storage);

    let (_, recovered) = open(&scratch.node(), options);
    assert!(!recovered.report.damaged, "{}", recovered.report);
    let checkpoint = recovered.checkpoint.expect("the checkpoint is loaded");
    assert_eq!((checkpoint.meta, checkpoint.snapshot), (meta(99), snapshot));
    assert_eq!(recovered.state, state);
    assert_eq!(recovered.state.promised, ballot(6), "the promise survives compaction");
    assert_eq!(recovered.state.log.keys().copied().collect::<Vec<_>>(), (100..=106).collect::<Vec<_>>());
    assert!(matches!(recovered.state.log[&100], LogEntry::Decided(_)), "decided above the checkpoint kept");
    assert!(
        matches!(recovered.state.log[&103], LogEntry::Accepted { ballot, .. } if ballot == common::ballot(5))
    );
}

#[test]
fn a_newer_checkpoint_replaces_the_older_one() {
    let scratch = Scratch::new("checkpoint-twice");
    let (mut storage, _) = open(&scratch.node(), StorageOptions::default());
    storage.append(&[decided(0, 10), decided(1, 10)]).unwrap();
    storage.checkpoint(&meta(0), b"zero").unwrap();
    storage.append(&[decided(2, 10)]).unwrap();
    let second = storage.checkpoint(&meta(2), b"two").unwrap();
    assert_eq!(checkpoints(&scratch.node()), vec![second.path]);
    let stale = storage.checkpoint(&meta(1), b"one").unwrap_err();
    assert!(matches!(stale, StorageError::StaleCheckpoint { last_slot: 1, installed: 2 }), "{stale}");
    drop(storage);
    let (_, recovered) = open(&scratch.node(), StorageOptions::default());
    assert_eq!(recovered.checkpoint.unwrap().snapshot, b"two");
    assert!(recovered.state.log.is_empty());
}

#[test]
fn a_crash_between_checkpoint_and_compaction_loses_nothing() {
    let scratch = Scratch::new("interrupted-compaction");
    let options = small_segments(2048);
    let (mut storage, _) = open(&scratch.node(), options.clone());
    for id in 0..40 {
        storage.append(&[decided(id, 200)]).unwrap();
    }
    storage.append(&[promised(3)]).unwrap();
    storage.sync().unwrap();
    let old_segments: Vec<(std::path::PathBuf, Vec<u8>)> =
        segments(&scratch.node()).into_iter().map(|p| (p.clone(), fs::read(&p).unwrap())).collect();
    storage.checkpoint(&meta(30), b"snapshot through 30").unwrap();
    drop(storage);

    // As if the crash came after the base batch was synced but before any deletion.
    for (path, bytes) in &old_segments {
        fs::write(path, bytes).unwrap();
    }
    let (_, recovered) = open(&scratch.node(), options.clone());
    assert!(!recovered.report.damaged, "{}", recovered.report);
    assert!(!recovered.report.notes.is_empty(), "the leftovers are noted");
    assert_eq!(recovered.state.promised, ballot(3));
    assert_eq!(recovered.state.log.keys().copied().collect::<Vec<_>>(), (31..40).collect::<Vec<_>>());
    assert_eq!(segments(&scratch.node()).len(), 1, "open finishes the compaction");

    // As if the crash came after the checkpoint was renamed, before the base batch.
    let scratch = Scratch::new("interrupted-compaction-2");
    let (mut storage, _) = open(&scratch.node(), options.clone());
    for id in 0..40 {
        storage.append(&[decided(id, 200)]).unwrap();
    }
    storage.sync().unwrap();
    drop(storage);
    let copy = Scratch::new("interrupted-compaction-copy");
    fs::create_dir_all(copy.node().join("wal")).unwrap();
    for path in segments(&scratch.node()) {
        fs::copy(&path, copy.node().join("wal").join(path.file_name().unwrap())).unwrap();
    }
    let (mut storage, _) = open(&scratch.node(), options.clone());
    let info = storage.checkpoint(&meta(30), b"snapshot through 30").unwrap();
    drop(storage);
    fs::create_dir_all(copy.node().join("checkpoint")).unwrap();
    fs::copy(&info.path, copy.node().join("checkpoint").join(info.path.file_name().unwrap())).unwrap();
    let (_, recovered) = open(&copy.node(), options);
    assert!(!recovered.report.damaged, "{}", recovered.report);
    assert_eq!(recovered.report.checkpoint_slot, Some(30));
    assert_eq!(recovered.state.log.keys().copied().collect::<Vec<_>>(), (31..40).collect::<Vec<_>>());
}

#[test]
fn a_checkpoint_travels_in_bounded_chunks_and_installs_on_another_replica() {
    let scratch = Scratch::new("transfer");
    let (sender_dir, receiver_dir) = (scratch.node().join("a"), scratch.node().join("b"));
    let (mut sender, _) = open(&sender_dir, small_segments(1 << 20));
    for id in 0..50 {
        sender.append(&[decided(id, 100)]).unwrap();
    }
    let snapshot = op_bytes(7, 50_000);
    sender.checkpoint(&meta(49), &snapshot).unwrap();

    let (mut receiver, _) = open(&receiver_dir, small_segments(1 << 20));
    receiver.append(&[promised(9), accepted(60, 9, 10)]).unwrap();
    let mut incoming = receiver.checkpoint_receiver(1 << 20).unwrap();
    let chunks = sender.checkpoint_chunks(4096).unwrap();
    let (total, count) = (chunks.total_bytes(), chunks.chunks_total());
    let mut seen = 0;
    for chunk in chunks {
        let chunk = chunk.unwrap();
        assert!(chunk.bytes.len() <= 4096);
        seen += 1;
        let complete = incoming.receive(&chunk).unwrap();
        assert_eq!(complete, seen == count);
    }
    assert_eq!(incoming.bytes_received(), total);
    let received = incoming.finish().unwrap();
    let installed = receiver.install_received(received).unwrap();
    assert_eq!((installed.meta.last_slot, &installed.snapshot), (49, &snapshot));
    drop(receiver);

    let (_, recovered) = open(&receiver_dir, small_segments(1 << 20));
    assert!(!recovered.report.damaged, "{}", recovered.report);
    assert_eq!(recovered.checkpoint.unwrap().snapshot, snapshot);
    assert_eq!(recovered.state.promised, ballot(9), "the receiver keeps its own promise");
    assert_eq!(recovered.state.log.keys().copied().collect::<Vec<_>>(), vec![60], "and its own votes");
}

#[test]
fn a_corrupted_chunk_is_refused_and_the_receiver_is_unchanged() {
    let scratch = Scratch::new("bad-chunk");
    let (mut sender, _) = open(&scratch.node().join("a"), StorageOptions::default());
    sender.checkpoint(&meta(3), &op_bytes(3, 10_000)).unwrap();
    let (receiver, _) = open(&scratch.node().join("b"), StorageOptions::default());
    let chunks: Vec<_> = sender.checkpoint_chunks(1000).unwrap().map(Result::unwrap).collect();

    let mut incoming = receiver.checkpoint_receiver(1 << 20).unwrap();
    incoming.receive(&chunks[0]).unwrap();
    let mut flipped = chunks[1].clone();
    flipped.bytes[500] ^= 0x20;
    assert!(matches!(incoming.receive(&flipped), Err(StorageError::BadChunk { offset: 1000, .. })));
    assert!(matches!(incoming.receive(&chunks[2]), Err(StorageError::BadChunk { .. })), "out of order");
    let mut moved = chunks[1].clone();
    moved.offset += 1;
    assert!(
        matches!(incoming.receive(&moved), Err(StorageError::BadChunk { .. })),
        "position is checksummed"
    );
    assert_eq!(incoming.bytes_received(), 1000, "refused chunks change nothing");
    let early = receiver.checkpoint_receiver(1 << 20).unwrap();
    assert!(matches!(early.finish(), Err(StorageError::BadChunk { .. })), "an incomplete checkpoint");

    // A buggy sender that checksums bytes it already corrupted is caught by the file's
    // own checksums when the receiver finishes.
    let mut incoming = receiver.checkpoint_receiver(1 << 20).unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        let mut chunk = chunk.clone();
        if i == 4 {
            chunk.bytes[10] ^= 0x01;
            chunk = synod_storage::CheckpointChunk::new(
                chunk.last_slot,
                chunk.total_bytes,
                chunk.offset,
                chunk.bytes,
            );
        }
        incoming.receive(&chunk).unwrap();
    }
    let error = incoming.finish().unwrap_err();
    assert!(matches!(error, StorageError::CorruptCheckpoint { .. }), "{error}");

    let mut small = receiver.checkpoint_receiver(5000).unwrap();
    assert!(matches!(small.receive(&chunks[0]), Err(StorageError::BadChunk { .. })), "over the size bound");
}
