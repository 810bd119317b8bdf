//! Helpers shared by the storage tests: scratch directories on the real disk (under
//! Cargo's target directory, not a tmpfs) and records whose content follows from an id,
//! so that any record read back can be checked byte for byte.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use synod_core::{Ballot, Command, NodeId, PValue, Record, Value};
use synod_storage::StorageOptions;

pub type Rec = Record<Vec<u8>>;

/// A directory removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("storage-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    /// The storage directory inside (not created: `open` creates it).
    pub fn node(&self) -> PathBuf {
        self.0.join("node")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Deterministic bytes for record `id`.
pub fn op_bytes(id: u64, len: usize) -> Vec<u8> {
    let mut state = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

pub fn value(id: u64, len: usize) -> Value<Vec<u8>> {
    Value::Batch(vec![Command { client_id: id, seq: id, op: op_bytes(id, len) }])
}

/// The decision for slot `id`, about `len` bytes of command.
pub fn decided(id: u64, len: usize) -> Rec {
    Record::Decided { slot: id, value: value(id, len) }
}

pub fn accepted(slot: u64, round: u64, len: usize) -> Rec {
    Record::Accepted { pvalue: PValue { ballot: ballot(round), slot, value: value(slot, len) } }
}

pub fn promised(round: u64) -> Rec {
    Record::Promised { ballot: ballot(round) }
}

pub fn ballot(round: u64) -> Ballot {
    Ballot { round, leader: NodeId(1) }
}

/// Options with small segments, so tests cross many of them.
pub fn small_segments(segment_bytes_max: u64) -> StorageOptions {
    StorageOptions { segment_bytes_max, snapshot_part_bytes_max: 1000, ..StorageOptions::default() }
}

/// The segment files of a storage directory, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir.join("wal")).unwrap().map(|e| e.unwrap().path()).collect();
    found.sort();
    found
}

/// The checkpoint files of a storage directory.
pub fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir.join("checkpoint"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ckpt"))
        .collect();
    found.sort();
    found
}
