//! # synod-storage: durable storage for a Synod node
//!
//! The core's effect contract says: make every record of `Ready::persist` durable,
//! atomically and in order, and only then release the messages that depend on it. This
//! crate is how the server keeps that promise on a real disk (capabilities C3 and C4):
//! a checksummed write-ahead log with group commit, checkpoints with log compaction, and
//! recovery that tells a harmless torn write from data loss.
//!
//! ```text
//!   driver ──append(batch)──▶ FileStorage ──one pwrite per batch──▶ wal/<first lsn>.log
//!          ──append(batch)──▶     │
//!          ──sync()─────────▶     └──one fdatasync for all of them (group commit)
//!          ◀─durable Lsn─────        then release every Ready whose batch it covers
//! ```
//!
//! [`Storage`] is the interface the runtime drives (the simulator's disk implements it
//! too); [`FileStorage`] is the implementation on files; [`recover`] and [`read_log`]
//! read a directory without changing it.
//!
//! **AN FSYNC ERROR IS FATAL.** [`StorageError::SyncFailed`] means the node must stop:
//! never retry the fsync and carry on (see [`StorageError`]).
//!
//! ## On-disk format
//!
//! ```text
//! <dir>/
//!   LOCK                              flock(2)ed by the one process that owns the directory
//!   IDENTITY                          whose directory this is: a random id drawn at creation,
//!                                     the cluster and node (see `identity.rs`)
//!   DAMAGED                           present while recovery found damage not yet repaired
//!   wal/00000000000000000001.log      segments, named after their first record's lsn
//!   wal/00000000000000052871.log      ... rolled over at `segment_bytes_max` (64 MiB)
//!   checkpoint/00000000000000004095.ckpt   the newest checkpoint (last slot 4095)
//!
//! segment  = header frame, then batches
//!            +--------------+----------------------+----------------------+---
//!            | SegmentHeader| batch                | batch                |
//!            | lsn = first  | frame frame … frame* | frame*               | …
//!            +--------------+----------------------+----------------------+---
//!            (* = BATCH_END flag: a batch is one pwrite, and counts only if whole)
//!            a segment that rolled over ends with a Seal frame naming its successor
//!
//! frame    = 20-byte header + payload (see `frame.rs`)
//!            | crc32c u32 | len u32 | version u8 | kind u8 | flags u8 | 0 u8 | lsn u64 | payload |
//!            crc32c covers everything after itself: header fields and payload
//!
//! kinds    = 1 Promised, 2 Accepted, 3 Decided, 4 Identity
//!                                                 postcard(synod_core::Record<C>)
//!            16 SegmentHeader                     b"synod wal segment"
//!            17 Base                              postcard(checkpoint slot), first frame
//!                                                 of the batch that restates the durable
//!                                                 state after a checkpoint
//!            18 Seal                              empty; lsn = the successor's first lsn
//!            32 CheckpointMeta, 33 SnapshotPart, 34 CheckpointEnd   (checkpoint files)
//! ```
//!
//! **Compaction.** A checkpoint at slot `s` is written (temporary file, fsync, rename,
//! directory fsync); then a new segment is started whose first batch is a *base batch*:
//! `Base(s)`, the current promise, the members' identities, and every accepted or
//! decided entry above `s` — the records a promise or a vote may still depend on. Once that batch is synced, every
//! older segment and checkpoint is deleted. Recovery starts replay at the last base batch
//! whose checkpoint verifies; the checkpoint itself holds nothing node-local, so the same
//! file can be sent to a lagging replica ([`FileStorage::checkpoint_chunks`],
//! [`CheckpointReceiver`]).
//!
//! **Recovery** ([`FileStorage::open`]) loads the newest checkpoint that verifies and
//! replays the log from the base batch that relies on it. Bytes at the end of the *last*
//! segment that hold no whole batch are a torn write: never synced, never acknowledged,
//! cut off silently. A bad frame with valid frames after it, a bad frame in any other
//! segment, a gap in the lsns, a lost successor segment, or a missing or bad checkpoint
//! is damage: [`RecoveryReport::damaged`] is set, with the file and offset of each
//! finding, and a `DAMAGED` marker keeps it set across restarts until
//! [`FileStorage::mark_repaired`]. The precise rules are in `recovery.rs`.
//!
//! **Log sequence numbers** ([`Lsn`]) number every frame of the log except segment
//! headers and seals, from 1, across restarts. They are *not* the core's `Ready::persist_lsn`,
//! which restarts at 1 with every incarnation; the driver maps one to the other (a
//! newtype keeps them apart).

mod checkpoint;
mod error;
mod frame;
mod identity;
mod recovery;
mod segment;
mod wal;

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use synod_core::Record;

pub use checkpoint::ReceivedCheckpoint;
pub use checkpoint::{
    Checkpoint, CheckpointChunk, CheckpointChunks, CheckpointInfo, CheckpointMeta, CheckpointReceiver,
};
pub use error::StorageError;
pub use frame::FORMAT_VERSION;
pub use identity::{read_identity, write_identity, DirIdentity, IDENTITY_FILE};
pub use recovery::{read_log, recover, Damage, LogContents, Recovered, RecoveryReport, TornTail};
pub use wal::FileStorage;

/// A log sequence number: the position of a record in this node's log, from 1, across
/// restarts. `Lsn(0)` means "nothing".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lsn {}", self.0)
    }
}

/// Every bound of the storage, units last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// A segment rolls over before a batch would take it past this size. A single batch
    /// larger than this gets a segment of its own.
    pub segment_bytes_max: u64,
    /// The largest one record may encode to. Bigger records are refused.
    pub record_bytes_max: usize,
    /// The largest snapshot piece in one checkpoint frame.
    pub snapshot_part_bytes_max: usize,
    /// `open` on an empty or missing directory creates the storage (else `NotFound`).
    pub create_if_missing: bool,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            segment_bytes_max: 64 * 1024 * 1024,
            record_bytes_max: 16 * 1024 * 1024,
            snapshot_part_bytes_max: 1024 * 1024,
            create_if_missing: true,
        }
    }
}

/// Counters for metrics. Monotonic since `open`, except the two lsns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    pub batches_appended: u64,
    pub records_appended: u64,
    /// Bytes written to the log (frames of records, base batches and segment headers).
    pub bytes_appended: u64,
    /// `fdatasync` calls on log segments: one per [`Storage::sync`] that had work, plus
    /// one per rollover.
    pub wal_syncs: u64,
    pub wal_sync_nanos_total: u64,
    pub wal_sync_nanos_max: u64,
    /// Other fsyncs: new segment files, checkpoint files, directories.
    pub other_syncs: u64,
    pub segments_created: u64,
    pub segments_deleted: u64,
    pub checkpoints_written: u64,
    pub checkpoints_installed: u64,
    /// Obsolete files compaction could not delete (the next compaction or recovery
    /// retries; they cost space, never correctness).
    pub delete_failures: u64,
    pub appended_lsn: Lsn,
    pub durable_lsn: Lsn,
}

impl StorageStats {
    /// Mean latency of a log `fdatasync`, in microseconds.
    pub fn wal_sync_mean_micros(&self) -> f64 {
        if self.wal_syncs == 0 {
            return 0.0;
        }
        self.wal_sync_nanos_total as f64 / self.wal_syncs as f64 / 1e3
    }
}

/// Where a node's records become durable: the interface the runtime drives. Files
/// ([`FileStorage`]) and the simulator's disk implement it.
///
/// The contract, after OmniPaxos' storage trait and the core's effect contract:
/// **EACH `append` IS ATOMIC AND ORDERED: AFTER A CRASH, A BATCH IS EITHER WHOLLY PRESENT
/// OR WHOLLY ABSENT, AND NO BATCH IS PRESENT UNLESS EVERY EARLIER ONE IS. NOTHING IS
/// DURABLE UNTIL `sync` SAYS SO, AND NO MESSAGE MAY LEAVE BEFORE THE RECORDS IT REPORTS
/// ARE COVERED BY THE LSN `sync` RETURNED.** Recovery is not part of the trait: it is how
/// an implementation is constructed ([`FileStorage::open`]), and it yields a
/// [`Recovered`] whose [`RecoveryReport::damaged`] the core must honour.
pub trait Storage<C> {
    /// Appends one batch (the `persist` list of one `Ready`), in order, and returns the
    /// lsn of its last record (or the current lsn for an empty batch). Not yet durable.
    fn append(&mut self, records: &[Record<C>]) -> Result<Lsn, StorageError>;

    /// Makes every appended record durable with one fdatasync (group commit: many
    /// appends, one sync) and returns the lsn it is durable through.
    /// **AN ERROR IS FATAL: STOP THE NODE, NEVER RETRY.**
    fn sync(&mut self) -> Result<Lsn, StorageError>;

    /// The lsn of the last appended record, durable or not.
    fn appended_lsn(&self) -> Lsn;

    /// The lsn through which every record is durable.
    fn durable_lsn(&self) -> Lsn;

    /// Writes a checkpoint of the state machine through `meta.last_slot` and compacts
    /// the log before it (see the crate docs). Syncs everything appended first.
    fn checkpoint(&mut self, meta: &CheckpointMeta, snapshot: &[u8]) -> Result<CheckpointInfo, StorageError>;

    /// The node finished recovering from damage (its `Ready::repaired` batch and
    /// checkpoint are durable): clear the damage marker so a restart votes at once.
    fn mark_repaired(&mut self) -> Result<(), StorageError>;

    /// Sets the `DAMAGED` marker durably: the replica began to recover from its peers at
    /// run time (`Ready::damaged`), and a restart must recover too.
    fn mark_damaged(&mut self, reason: &str) -> Result<(), StorageError>;

    fn stats(&self) -> StorageStats;
}

/// The files of one of the storage's directories, sorted by the number in their names.
#[derive(Debug, Default)]
pub(crate) struct DirListing {
    /// Files named as this directory's kind: (number in the name, path).
    pub found: Vec<(u64, PathBuf)>,
    /// Temporary files (`*.tmp`) a crash left behind.
    pub temps: Vec<PathBuf>,
    pub strangers: Vec<PathBuf>,
}

/// Lists `dir`, sorting each entry with `parse` (which reads the number from a name).
pub(crate) fn list_dir(dir: &Path, parse: impl Fn(&str) -> Option<u64>) -> std::io::Result<DirListing> {
    let mut listing = DirListing::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        match parse(&name) {
            Some(number) => listing.found.push((number, entry.path())),
            None if name.ends_with(".tmp") => listing.temps.push(entry.path()),
            None => listing.strangers.push(entry.path()),
        }
    }
    listing.found.sort();
    Ok(listing)
}

/// Parses `<20 digits><suffix>`.
pub(crate) fn parse_numbered(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The name of the marker file that keeps a damaged replica from voting across restarts.
pub(crate) const DAMAGED_MARKER: &str = "DAMAGED";

pub(crate) fn wal_dir(dir: &Path) -> PathBuf {
    dir.join("wal")
}

pub(crate) fn checkpoint_dir(dir: &Path) -> PathBuf {
    dir.join("checkpoint")
}

/// fsyncs a directory, making the creation, renaming and deletion of its entries durable.
/// A failure is fatal like any fsync failure.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let handle = File::open(dir).map_err(|error| StorageError::io("open directory", dir, error))?;
    handle.sync_all().map_err(|source| StorageError::SyncFailed { path: dir.to_path_buf(), source })
}
