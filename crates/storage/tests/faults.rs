//! Disk faults on real files: flipped bytes are detected as damage (naming the file and
//! offset) rather than served as data; torn tails are cut off silently and the log goes
//! on; damage keeps being reported across restarts until repaired.

mod common;

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use common::*;
use synod_core::LogEntry;
use synod_storage::{read_log, recover, CheckpointMeta, FileStorage, Lsn, Storage, StorageOptions};

type Files = FileStorage<Vec<u8>>;

/// Writes `batches` batches of `per_batch` decisions (ids from 0), synced one by one.
fn write_log(dir: &Path, options: &StorageOptions, batches: u64, per_batch: u64) {
    let (mut storage, _) = Files::open(dir, options.clone()).unwrap();
    for batch in 0..batches {
        let records: Vec<_> = (0..per_batch).map(|i| decided(batch * per_batch + i, 150)).collect();
        storage.append(&records).unwrap();
        storage.sync().unwrap();
    }
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    replace(path, &bytes);
}

/// Replaces a file's contents by a new file: rewriting it in place would truncate it to
/// zero first, which ext4 (`auto_da_alloc`) answers with a flush, making the loops slow.
fn replace(path: &Path, bytes: &[u8]) {
    fs::remove_file(path).unwrap();
    fs::write(path, bytes).unwrap();
}

/// No recovered entry holds a value other than the one written: damage never becomes
/// wrong data.
fn assert_no_wrong_data(state: &synod_core::DurableState<Vec<u8>>) {
    for (slot, entry) in &state.log {
        match entry {
            LogEntry::Decided(v) => assert_eq!(*v, value(*slot, 150), "slot {slot} holds a wrong value"),
            LogEntry::Accepted { .. } => panic!("slot {slot}: only decisions were written"),
        }
    }
}

#[test]
fn a_flipped_byte_in_the_middle_of_a_segment_is_damage_naming_file_and_offset() {
    let scratch = Scratch::new("flip-middle");
    let options = small_segments(4096);
    write_log(&scratch.node(), &options, 60, 2);
    let files = segments(&scratch.node());
    let victim = files[files.len() / 2].clone();
    let at = fs::metadata(&victim).unwrap().len() / 2;
    flip(&victim, at);

    let recovered = recover::<Vec<u8>>(&scratch.node(), &options).unwrap();
    let report = &recovered.report;
    assert!(report.damaged, "{report}");
    let damage = &report.damage[0];
    assert_eq!(damage.file, victim, "{report}");
    let offset = damage.offset.expect("an offset");
    assert!(offset <= at && at - offset < 400, "damage at {offset}, flipped {at}: {report}");
    assert!(report.to_string().contains(&victim.display().to_string()));
    assert!(report.torn_tail.is_none(), "corruption is not a torn tail: {report}");
    assert_no_wrong_data(&recovered.state);
    assert_eq!(recovered.state.log.len(), 119, "only the damaged record is missing");
}

#[test]
fn a_flipped_byte_in_the_last_segment_with_valid_records_after_it_is_corruption() {
    let scratch = Scratch::new("flip-last");
    let options = StorageOptions::default();
    write_log(&scratch.node(), &options, 10, 1);
    let only = segments(&scratch.node()).remove(0);
    let at = fs::metadata(&only).unwrap().len() / 3;
    flip(&only, at);
    let recovered = recover::<Vec<u8>>(&scratch.node(), &options).unwrap();
    assert!(recovered.report.damaged, "{}", recovered.report);
    assert!(recovered.report.damage[0].what.contains("not a torn write"), "{}", recovered.report);
    assert_no_wrong_data(&recovered.state);
}

#[test]
fn a_flipped_byte_in_a_checkpoint_is_detected_and_its_snapshot_never_served() {
    let scratch = Scratch::new("flip-checkpoint");
    let options = small_segments(4096);
    let (mut storage, _) = Files::open(&scratch.node(), options.clone()).unwrap();
    for id in 0..30 {
        storage.append(&[decided(id, 150)]).unwrap();
    }
    let meta = CheckpointMeta { last_slot: 19, configuration: vec![1, 2, 3], sessions: vec![] };
    let info = storage.checkpoint(&meta, &op_bytes(19, 20_000)).unwrap();
    drop(storage);
    let at = info.file_bytes / 2;
    flip(&info.path, at);

    let recovered = recover::<Vec<u8>>(&scratch.node(), &options).unwrap();
    let report = &recovered.report;
    assert!(report.damaged, "{report}");
    assert!(recovered.checkpoint.is_none(), "a corrupt snapshot is never handed out");
    let damage = report.damage.iter().find(|d| d.file == info.path).expect("the checkpoint file is named");
    let offset = damage.offset.unwrap();
    assert!(offset <= at && at - offset <= 1000 + 20, "damage at {offset}, flipped {at}: {report}");
    assert!(
        report.damage.iter().any(|d| d.what.contains("compacted into a checkpoint")),
        "the log relied on it: {report}"
    );

    // The node refuses to vote across restarts: open keeps saying so.
    let (storage, recovered) = Files::open(&scratch.node(), options.clone()).unwrap();
    assert!(recovered.report.damaged && storage.is_damaged());
    assert!(storage.checkpoint_chunks(1000).is_err(), "nothing to send a peer");
}

#[test]
fn a_torn_tail_is_cut_off_silently_and_the_log_accepts_new_writes() {
    let scratch = Scratch::new("torn");
    let options = small_segments(8192);
    write_log(&scratch.node(), &options, 30, 1);
    let last = segments(&scratch.node()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    OpenOptions::new().write(true).open(&last).unwrap().set_len(len - 60).unwrap();

    let recovered = recover::<Vec<u8>>(&scratch.node(), &options).unwrap();
    assert!(!recovered.report.damaged, "{}", recovered.report);
    let tail = recovered.report.torn_tail.clone().expect("a torn tail");
    assert_eq!(tail.file, last);
    assert_eq!(recovered.report.last_lsn, Lsn(29));
    assert_eq!(recovered.state.log.len(), 29);

    let (mut storage, recovered) = Files::open(&scratch.node(), options.clone()).unwrap();
    assert!(!recovered.report.damaged);
    assert_eq!(fs::metadata(&last).unwrap().len(), tail.offset, "the torn bytes are gone");
    assert_eq!(storage.append(&[decided(29, 150)]).unwrap(), Lsn(30));
    storage.sync().unwrap();
    drop(storage);
    let recovered = recover::<Vec<u8>>(&scratch.node(), &options).unwrap();
    assert!(!recovered.report.damaged && recovered.report.torn_tail.is_none(), "{}", recovered.report);
    assert_eq!(recovered.state.log.len(), 30);
    assert_no_wrong_data(&recovered.state);
}

#[test]
fn a_batch_torn_between_its_records_is_dropped_whole() {
    let scratch = Scratch::new("torn-batch");
    let options = StorageOptions::default();
    write_log(&scratch.node(), &options, 3, 4);
    let last = segments(&scratch.node()).pop().unwrap();
    let records = read_log::<Vec<u8>>(&scratch.node(), &options).unwrap().records;
    assert_eq!(records.len(), 12);
    // Keep the first two whole frames of the last batch: valid, but without its end.
    let frame_bytes = (fs::metadata(&last).unwrap().len() - 37) / 12;
    let len = fs::metadata(&last).unwrap().len() - 2 * frame_bytes;
    OpenOptions::new().write(true).open(&last).unwrap().set_len(len).unwrap();
    let recovered = recover::<Vec<u8>>(&scratch.node(), &options).unwrap();
    assert!(!recovered.report.damaged, "{}", recovered.report);
    assert!(
        recovered.report.torn_tail.as_ref().unwrap().why.contains("no end frame"),
        "{}",
        recovered.report
    );
    assert_eq!(recovered.state.log.len(), 8, "all of the torn batch goes, not half of it");
}

#[test]
fn zeros_after_the_last_batch_are_a_torn_tail() {
    let scratch = Scratch::new("zeros");
    let options = StorageOptions::default();
    write_log(&scratch.node(), &options, 5, 1);
    let last = segments(&scratch.node()).pop().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0; 4096]);
    fs::write(&last, bytes).unwrap();
    let recovered = recover::<Vec<u8>>(&scratch.node(), &options).unwrap();
    assert!(!recovered.report.damaged && recovered.report.torn_tail.is_some(), "{}", recovered.report);
    assert_eq!(recovered.state.log.len(), 5);
}

#[test]
fn a_missing_segment_is_damage() {
    let scratch = Scratch::new("missing-segment");
    let options = small_segments(1024);
    write_log(&scratch.node(), &options, 30, 1);
    let files = segments(&scratch.node());
    assert!(files.len() >= 4);
    fs::remove_file(&files[2]).unwrap();
    let recovered = recover::<Vec<u8>>(&scratch.node(), &options).unwrap();
    assert!(recovered.report.damaged, "{}", recovered.report);
    assert!(recovered.report.damage[0].what.contains("records are missing"), "{}", recovered.report);
    fs::remove_file(files.last().unwrap()).unwrap();
    fs::remove_file(&files[files.len() - 2]).unwrap();
    let recovered = recover::<Vec<u8>>(&scratch.node(), &options).unwrap();
    assert!(recovered.report.damaged, "{}", recovered.report);
    assert!(
        recovered.report.damage.iter().any(|d| d.what.contains("sealed for a successor")),
        "{}",
        recovered.report
    );
    fs::remove_file(&files[0]).unwrap();
    let recovered = recover::<Vec<u8>>(&scratch.node(), &options).unwrap();
    assert!(recovered.report.damage[0].what.contains("the log begins at lsn"), "{}", recovered.report);
}

#[test]
fn a_missing_checkpoint_the_log_relies_on_is_damage() {
    let scratch = Scratch::new("missing-checkpoint");
    let (mut storage, _) = Files::open(&scratch.node(), StorageOptions::default()).unwrap();
    storage.append(&[decided(0, 150), decided(1, 150)]).unwrap();
    let info = storage.checkpoint(&CheckpointMeta { last_slot: 1, ..Default::default() }, b"s").unwrap();
    drop(storage);
    fs::remove_file(&info.path).unwrap();
    let recovered = recover::<Vec<u8>>(&scratch.node(), &StorageOptions::default()).unwrap();
    assert!(recovered.report.damaged, "{}", recovered.report);
}

#[test]
fn damage_is_reported_across_restarts_until_a_checkpoint_repairs_it() {
    let scratch = Scratch::new("repair");
    let options = small_segments(2048);
    write_log(&scratch.node(), &options, 30, 1);
    let files = segments(&scratch.node());
    flip(&files[1], 300);

    let (storage, recovered) = Files::open(&scratch.node(), options.clone()).unwrap();
    assert!(recovered.report.damaged && storage.is_damaged());
    drop(storage);
    flip(&files[1], 300); // even if the bytes were put back, the marker remembers
    let (mut storage, recovered) = Files::open(&scratch.node(), options.clone()).unwrap();
    assert!(recovered.report.damaged, "{}", recovered.report);
    assert!(recovered.report.damage[0].what.contains("not yet repaired"), "{}", recovered.report);

    // Repair: the missing decisions came from peers; a checkpoint compacts the damaged
    // segment away; the core's conditions hold; the flag is cleared.
    storage.append(&[decided(30, 150)]).unwrap();
    storage.checkpoint(&CheckpointMeta { last_slot: 30, ..Default::default() }, b"from peers").unwrap();
    storage.mark_repaired().unwrap();
    assert!(!storage.is_damaged());
    drop(storage);
    let (_, recovered) = Files::open(&scratch.node(), options).unwrap();
    assert!(!recovered.report.damaged, "{}", recovered.report);
}

/// Every byte of a small log, flipped in turn: recovery either reports damage or cuts a
/// torn tail (only when the byte is in the last batch), and never returns a wrong value.
#[test]
fn no_single_flipped_byte_anywhere_in_the_log_is_served_as_data() {
    let scratch = Scratch::new("every-byte");
    let options = small_segments(1000);
    write_log(&scratch.node(), &options, 12, 1);
    let files: Vec<PathBuf> = segments(&scratch.node());
    assert!(files.len() >= 3, "{} segments", files.len());
    for (index, file) in files.iter().enumerate() {
        let original = fs::read(file).unwrap();
        for at in 0..original.len() {
            flip(file, at as u64);
            let recovered = recover::<Vec<u8>>(&scratch.node(), &options).unwrap();
            let report = &recovered.report;
            assert_no_wrong_data(&recovered.state);
            // Without damage, the only loss allowed is the last batch, as a torn tail.
            let torn_last =
                index == files.len() - 1 && report.torn_tail.is_some() && recovered.state.log.len() == 11;
            assert!(report.damaged || torn_last, "{} byte {at}: {report}", file.display());
            replace(file, &original);
        }
    }
}

/// A crash can stop a write after any byte: recovery keeps exactly the whole batches
/// before the cut, reports no damage, and always cuts a torn tail.
#[test]
fn a_tail_cut_at_any_byte_loses_only_the_unfinished_batch() {
    let scratch = Scratch::new("every-cut");
    let options = StorageOptions::default();
    write_log(&scratch.node(), &options, 6, 3);
    let only = segments(&scratch.node()).remove(0);
    let original = fs::read(&only).unwrap();
    let header = 37;
    let batch = (original.len() - header) / 6;
    assert_eq!((original.len() - header) % 6, 0, "equal batches");
    for cut in header..original.len() {
        replace(&only, &original[..cut]);
        let recovered = recover::<Vec<u8>>(&scratch.node(), &options).unwrap();
        let report = &recovered.report;
        assert!(!report.damaged, "cut at {cut}: {report}");
        let whole = (cut - header) / batch;
        assert_eq!(recovered.state.log.len(), whole * 3, "cut at {cut}");
        assert_eq!(report.torn_tail.is_some(), (cut - header) % batch != 0, "cut at {cut}: {report}");
        assert_no_wrong_data(&recovered.state);
    }
}
