//! [`FileStorage`]: the write-ahead log on files, with group commit, rollover,
//! checkpoints and compaction.
//!
//! Appending encodes a whole batch into one buffer and writes it with one `pwrite` at the
//! end of the current segment; `sync` issues one `fdatasync` for everything appended
//! since the last one. The writer keeps a mirror of the node's [`DurableState`] (the same
//! replay the node does) so that a checkpoint can restate, in the base batch of a fresh
//! segment, the promise and the accepted and decided entries above the checkpoint —
//! which is what lets every older segment be deleted (see the crate docs).

use std::fs::{self, File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use synod_core::{Ballot, DurableState, LogEntry, PValue, Payload, Record};

use crate::checkpoint::{
    self, Checkpoint, CheckpointChunks, CheckpointInfo, CheckpointMeta, CheckpointReceiver,
    ReceivedCheckpoint,
};
use crate::error::StorageError;
use crate::frame::{self, Kind, FLAG_BATCH_END, HEADER_BYTES};
use crate::recovery::{self, Recovered, Tail};
use crate::segment::{self, SegmentWriter};
use crate::{checkpoint_dir, sync_dir, wal_dir, Lsn, Storage, StorageOptions, StorageStats, DAMAGED_MARKER};

/// The write-ahead log and checkpoints of one node, in one directory it owns exclusively.
#[derive(Debug)]
pub struct FileStorage<C> {
    dir: PathBuf,
    options: StorageOptions,
    /// Held for the storage's lifetime; the kernel releases it if the process dies.
    _lock: File,
    writer: SegmentWriter,
    appended: Lsn,
    durable: Lsn,
    /// What replaying the log gives, kept current on every append.
    mirror: DurableState<C>,
    checkpoint: Option<CheckpointInfo>,
    damaged: bool,
    stats: StorageStats,
    /// Set by the first fatal error; every later call fails.
    poisoned: Option<String>,
    /// Reused encoding buffer for one batch.
    buf: Vec<u8>,
}

impl<C: Payload> FileStorage<C> {
    /// Opens (or, with `create_if_missing`, creates) the storage in `dir`: takes the
    /// directory's lock, recovers, cuts off a torn tail, finishes any compaction a crash
    /// interrupted, and positions the writer after the last whole batch.
    ///
    /// **If `recovered.report.damaged`, THE NODE MUST NOT VOTE** until it has repaired
    /// from its peers; the storage still accepts appends (decisions learned while
    /// repairing) and keeps the damaged files, and a `DAMAGED` marker, as evidence until
    /// a checkpoint compacts them away and [`FileStorage::mark_repaired`] is called.
    pub fn open(dir: &Path, options: StorageOptions) -> Result<(FileStorage<C>, Recovered<C>), StorageError> {
        assert!(options.segment_bytes_max > HEADER_BYTES as u64, "segments need room for a frame");
        if !dir.exists() {
            if !options.create_if_missing {
                return Err(StorageError::NotFound { path: dir.to_path_buf() });
            }
            fs::create_dir_all(dir).map_err(|error| StorageError::io("create", dir, error))?;
        }
        let lock = lock_dir(dir)?;
        let (recovered, plan) = recovery::recover_with::<C>(dir, &options, &mut |_, _| {})?;
        if recovered.report.fresh && !options.create_if_missing {
            return Err(StorageError::NotFound { path: dir.to_path_buf() });
        }
        let (wal, checkpoints) = (wal_dir(dir), checkpoint_dir(dir));
        for sub in [&wal, &checkpoints] {
            if !sub.exists() {
                fs::create_dir_all(sub).map_err(|error| StorageError::io("create", sub, error))?;
                sync_dir(dir)?;
            }
        }
        let damaged = recovered.report.damaged;
        let mut stats = StorageStats::default();
        for temp in &plan.temps {
            let _ = fs::remove_file(temp);
        }
        // Leftovers of an interrupted compaction go; damaged files stay as evidence.
        if !damaged {
            for path in &plan.obsolete {
                match fs::remove_file(path) {
                    Ok(()) => stats.segments_deleted += u64::from(path.starts_with(&wal)),
                    Err(_) => stats.delete_failures += 1,
                }
            }
        }
        let marker = dir.join(DAMAGED_MARKER);
        if damaged && !marker.exists() {
            write_marker(dir, &recovered.report.to_string())?;
        }
        let writer = match plan.tail {
            Tail::Reopen { path, first_lsn, len, records } => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| StorageError::io("open", &path, e))?;
                let on_disk = file.metadata().map_err(|e| StorageError::io("stat", &path, e))?.len();
                if on_disk > len {
                    // Cut the torn tail so its bytes can never be mistaken for a batch.
                    file.set_len(len).map_err(|e| StorageError::io("truncate", &path, e))?;
                    file.sync_data()
                        .map_err(|source| StorageError::SyncFailed { path: path.clone(), source })?;
                    stats.wal_syncs += 1;
                }
                SegmentWriter::reopen(path.clone(), first_lsn, len, records)
                    .map_err(|e| StorageError::io("reopen", &path, e))?
            }
            Tail::Recreate(path) => {
                fs::remove_file(&path).map_err(|e| StorageError::io("remove torn segment", &path, e))?;
                create_segment(&wal, plan.next_lsn, &mut stats)?
            }
            Tail::Create => create_segment(&wal, plan.next_lsn, &mut stats)?,
        };
        sync_dir(&wal)?;
        sync_dir(&checkpoints)?;
        stats.other_syncs += 2;
        let last = Lsn(plan.next_lsn - 1);
        stats.appended_lsn = last;
        stats.durable_lsn = last;
        let storage = FileStorage {
            dir: dir.to_path_buf(),
            options,
            _lock: lock,
            writer,
            appended: last,
            durable: last,
            mirror: recovered.state.clone(),
            checkpoint: plan.checkpoint,
            damaged,
            stats,
            poisoned: None,
            buf: Vec::new(),
        };
        Ok((storage, recovered))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What replaying everything appended so far gives (durable or not), without the
    /// entries the newest checkpoint includes.
    pub fn durable_state(&self) -> &DurableState<C> {
        &self.mirror
    }

    pub fn latest_checkpoint(&self) -> Option<&CheckpointInfo> {
        self.checkpoint.as_ref()
    }

    /// Recovery found damage that has not been repaired yet (see [`FileStorage::open`]).
    pub fn is_damaged(&self) -> bool {
        self.damaged
    }

    /// The newest checkpoint, verified, as chunks of at most `chunk_bytes_max` bytes for
    /// a lagging replica.
    pub fn checkpoint_chunks(&self, chunk_bytes_max: usize) -> Result<CheckpointChunks, StorageError> {
        self.check_poisoned()?;
        let info = self.checkpoint.as_ref().ok_or(StorageError::NoCheckpoint)?;
        CheckpointChunks::open(info, chunk_bytes_max)
    }

    /// A receiver for a checkpoint from a peer, of at most `total_bytes_max` bytes.
    pub fn checkpoint_receiver(&self, total_bytes_max: u64) -> Result<CheckpointReceiver, StorageError> {
        self.check_poisoned()?;
        CheckpointReceiver::create(&checkpoint_dir(&self.dir), total_bytes_max)
    }

    /// Installs a checkpoint received from a peer (state transfer) and compacts the log
    /// before it, exactly as a local checkpoint. Returns it, to restore the state machine.
    pub fn install_received(&mut self, received: ReceivedCheckpoint) -> Result<Checkpoint, StorageError> {
        self.check_poisoned()?;
        let last_slot = received.checkpoint.meta.last_slot;
        self.check_not_stale(last_slot)?;
        let result = self.sync().and_then(|_| {
            let dir = checkpoint_dir(&self.dir);
            let path = dir.join(checkpoint::checkpoint_name(last_slot));
            fs::rename(&received.path, &path)
                .map_err(|e| StorageError::io("install checkpoint", &path, e))?;
            sync_dir(&dir)?;
            self.stats.other_syncs += 1;
            self.stats.checkpoints_installed += 1;
            let info = CheckpointInfo {
                last_slot,
                path,
                file_bytes: received.file_bytes,
                snapshot_bytes: received.checkpoint.snapshot.len() as u64,
            };
            self.compact(info)
        });
        self.fatal(result).map(|_| received.checkpoint)
    }

    /// Sets the damage flag and writes the `DAMAGED` marker durably, with `reason` in it:
    /// the replica must not vote until it has repaired from its peers, across restarts
    /// (a new replica on an empty directory, or one its peers remember otherwise).
    pub fn mark_damaged(&mut self, reason: &str) -> Result<(), StorageError> {
        self.check_poisoned()?;
        self.damaged = true;
        let written = write_marker(&self.dir, reason);
        self.fatal(written)
    }

    /// Clears the damage flag and the `DAMAGED` marker. Call it only once the replica has
    /// repaired from its peers — a checkpoint installed or written after catching up has
    /// compacted the damaged files away — and the core's own conditions for voting again
    /// hold (it has seen a ballot begun after its restart).
    pub fn mark_repaired(&mut self) -> Result<(), StorageError> {
        self.check_poisoned()?;
        let marker = self.dir.join(DAMAGED_MARKER);
        match fs::remove_file(&marker) {
            Ok(()) => {
                let synced = sync_dir(&self.dir);
                self.fatal(synced)?;
                self.stats.other_syncs += 1;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(StorageError::io("remove", &marker, error)),
        }
        self.damaged = false;
        Ok(())
    }

    fn check_poisoned(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            Some(cause) => Err(StorageError::Poisoned { cause: cause.clone() }),
            None => Ok(()),
        }
    }

    fn check_not_stale(&self, last_slot: u64) -> Result<(), StorageError> {
        match &self.checkpoint {
            Some(installed) if last_slot < installed.last_slot => {
                Err(StorageError::StaleCheckpoint { last_slot, installed: installed.last_slot })
            }
            _ => Ok(()),
        }
    }

    /// Poisons the storage if `result` is a fatal error, so nothing carries on after it.
    fn fatal<T>(&mut self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(error) = &result {
            if error.is_fatal() && self.poisoned.is_none() {
                self.poisoned = Some(error.to_string());
            }
        }
        result
    }

    /// Writes the batch encoded in `self.buf` (`records` frames), rolling over first if
    /// it would take a non-empty segment past its size bound.
    fn write_buffered(&mut self, records: u64) -> Result<(), StorageError> {
        let bytes = self.buf.len() as u64;
        if self.writer.records > 0 && self.writer.len + bytes > self.options.segment_bytes_max {
            self.roll()?;
        }
        match self.writer.write_batch(&self.buf, records) {
            Ok(()) => {
                self.stats.batches_appended += 1;
                self.stats.bytes_appended += bytes;
                Ok(())
            }
            Err(Ok(error)) => Err(StorageError::io("append to", &self.writer.path, error)),
            Err(Err(cause)) => Err(StorageError::Poisoned { cause }),
        }
    }

    /// Starts the next segment and seals the current one, in this order: the successor
    /// is durable (file and directory entry) before the seal that names it is written,
    /// and the sealed segment is synced whole before anything is written to the
    /// successor. So every segment but the last is durable whole — which lets recovery
    /// call a bad frame in one corruption — and a sealed *last* segment means its
    /// successor was lost.
    fn roll(&mut self) -> Result<(), StorageError> {
        let wal = wal_dir(&self.dir);
        let next_lsn = self.appended.0 + 1;
        let next = create_segment(&wal, next_lsn, &mut self.stats)?;
        sync_dir(&wal)?;
        self.stats.other_syncs += 1;
        match self.writer.seal(next_lsn) {
            Ok(()) => self.stats.bytes_appended += HEADER_BYTES as u64,
            // Without the seal recovery loses one check (a lost successor), nothing else.
            Err(Ok(_)) => {}
            Err(Err(cause)) => return Err(StorageError::Poisoned { cause }),
        }
        self.sync_writer()?;
        self.writer = next;
        Ok(())
    }

    fn sync_segment(&mut self) -> Result<Lsn, StorageError> {
        if self.appended > self.durable {
            self.sync_writer()?;
        }
        Ok(self.durable)
    }

    /// One timed `fdatasync` of the current segment.
    fn sync_writer(&mut self) -> Result<(), StorageError> {
        let started = Instant::now();
        self.writer
            .sync()
            .map_err(|source| StorageError::SyncFailed { path: self.writer.path.clone(), source })?;
        let nanos = started.elapsed().as_nanos() as u64;
        self.stats.wal_syncs += 1;
        self.stats.wal_sync_nanos_total += nanos;
        self.stats.wal_sync_nanos_max = self.stats.wal_sync_nanos_max.max(nanos);
        self.durable = self.appended;
        Ok(())
    }

    /// After checkpoint `info` is durable: start a segment with the base batch, sync it,
    /// then delete every older segment and checkpoint.
    fn compact(&mut self, info: CheckpointInfo) -> Result<CheckpointInfo, StorageError> {
        let last_slot = info.last_slot;
        self.mirror.log.retain(|slot, _| *slot > last_slot);
        self.checkpoint = Some(info.clone());
        // A segment holding nothing but its header can take the base batch itself.
        if self.writer.records > 0 {
            self.roll()?;
        }
        // The base batch restates what a promise or a vote may depend on above the
        // checkpoint; replaying it alone rebuilds `self.mirror`.
        let mut records = Vec::with_capacity(self.mirror.log.len() + 1);
        if self.mirror.promised != Ballot::ZERO {
            records.push(Record::Promised { ballot: self.mirror.promised });
        }
        for (&node, &dir_id) in &self.mirror.identities {
            records.push(Record::Identity { node, dir_id });
        }
        for (&slot, entry) in &self.mirror.log {
            records.push(match entry {
                LogEntry::Accepted { ballot, value } => {
                    Record::Accepted { pvalue: PValue { ballot: *ballot, slot, value: value.clone() } }
                }
                LogEntry::Decided(value) => Record::Decided { slot, value: value.clone() },
            });
        }
        self.buf.clear();
        let first = self.appended.0 + 1;
        let flags = if records.is_empty() { FLAG_BATCH_END } else { 0 };
        frame::encode_value(&mut self.buf, Kind::Base, flags, first, &last_slot);
        self.encode_records(&records, first + 1)?;
        self.write_buffered(records.len() as u64 + 1)?;
        self.appended = Lsn(first + records.len() as u64);
        self.sync_segment()?;
        self.stats.appended_lsn = self.appended;
        self.stats.durable_lsn = self.durable;

        // Every older segment, including any an earlier recovery kept as evidence.
        let wal = wal_dir(&self.dir);
        if let Ok(listing) = segment::list(&wal) {
            for (_, path) in listing.found.into_iter().filter(|(lsn, _)| *lsn < self.writer.first_lsn) {
                match fs::remove_file(&path) {
                    Ok(()) => self.stats.segments_deleted += 1,
                    Err(_) => self.stats.delete_failures += 1,
                }
            }
        }
        let checkpoints = checkpoint_dir(&self.dir);
        if let Ok(listing) = checkpoint::list(&checkpoints) {
            for (_, path) in listing.found.into_iter().filter(|(_, path)| *path != info.path) {
                if fs::remove_file(&path).is_err() {
                    self.stats.delete_failures += 1;
                }
            }
        }
        sync_dir(&wal)?;
        sync_dir(&checkpoints)?;
        self.stats.other_syncs += 2;
        Ok(info)
    }

    /// Appends frames for `records`, numbered from `first_lsn`, to `self.buf`; the last
    /// one ends the batch. Refuses (and clears the buffer) if one is too large.
    fn encode_records(&mut self, records: &[Record<C>], first_lsn: u64) -> Result<(), StorageError> {
        for (i, record) in records.iter().enumerate() {
            let start = self.buf.len();
            let flags = if i + 1 == records.len() { FLAG_BATCH_END } else { 0 };
            frame::encode_value(&mut self.buf, Kind::of_record(record), flags, first_lsn + i as u64, record);
            let bytes = self.buf.len() - start - HEADER_BYTES;
            if bytes > self.options.record_bytes_max {
                self.buf.clear();
                return Err(StorageError::RecordTooLarge { bytes, max: self.options.record_bytes_max });
            }
        }
        Ok(())
    }
}

impl<C: Payload> Storage<C> for FileStorage<C> {
    fn append(&mut self, records: &[Record<C>]) -> Result<Lsn, StorageError> {
        self.check_poisoned()?;
        if records.is_empty() {
            return Ok(self.appended);
        }
        let first = self.appended.0 + 1;
        self.buf.clear();
        self.encode_records(records, first)?;
        let written = self.write_buffered(records.len() as u64);
        self.fatal(written)?;
        for record in records {
            self.mirror.apply(record);
        }
        self.appended = Lsn(first + records.len() as u64 - 1);
        self.stats.records_appended += records.len() as u64;
        self.stats.appended_lsn = self.appended;
        Ok(self.appended)
    }

    fn sync(&mut self) -> Result<Lsn, StorageError> {
        self.check_poisoned()?;
        let synced = self.sync_segment();
        let durable = self.fatal(synced)?;
        self.stats.durable_lsn = durable;
        Ok(durable)
    }

    fn appended_lsn(&self) -> Lsn {
        self.appended
    }

    fn mark_repaired(&mut self) -> Result<(), StorageError> {
        FileStorage::mark_repaired(self)
    }

    fn mark_damaged(&mut self, reason: &str) -> Result<(), StorageError> {
        FileStorage::mark_damaged(self, reason)
    }

    fn durable_lsn(&self) -> Lsn {
        self.durable
    }

    fn checkpoint(&mut self, meta: &CheckpointMeta, snapshot: &[u8]) -> Result<CheckpointInfo, StorageError> {
        self.check_poisoned()?;
        self.check_not_stale(meta.last_slot)?;
        let result = self.sync().and_then(|_| {
            let info = checkpoint::write(
                &checkpoint_dir(&self.dir),
                meta,
                snapshot,
                self.options.snapshot_part_bytes_max,
            )?;
            self.stats.other_syncs += 2;
            self.stats.checkpoints_written += 1;
            self.compact(info)
        });
        self.fatal(result)
    }

    fn stats(&self) -> StorageStats {
        self.stats.clone()
    }
}

/// Creates segment `first_lsn`, makes its header durable, and records it.
fn create_segment(
    wal: &Path,
    first_lsn: u64,
    stats: &mut StorageStats,
) -> Result<SegmentWriter, StorageError> {
    let writer =
        SegmentWriter::create(wal, first_lsn).map_err(|e| StorageError::io("create segment in", wal, e))?;
    writer.sync().map_err(|source| StorageError::SyncFailed { path: writer.path.clone(), source })?;
    stats.other_syncs += 1;
    stats.segments_created += 1;
    stats.bytes_appended += writer.len;
    Ok(writer)
}

/// Takes an exclusive `flock` on `<dir>/LOCK`: two processes appending to one log would
/// interleave batches and break every guarantee above.
fn lock_dir(dir: &Path) -> Result<File, StorageError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io("open lock file", &path, e))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(StorageError::Locked { path });
        }
        return Err(StorageError::io("lock", &path, error));
    }
    Ok(file)
}

/// Writes the `DAMAGED` marker durably (temporary file, fsync, rename, directory fsync).
fn write_marker(dir: &Path, description: &str) -> Result<(), StorageError> {
    let temp = dir.join(format!("{DAMAGED_MARKER}.tmp"));
    let marker = dir.join(DAMAGED_MARKER);
    fs::write(&temp, description).map_err(|e| StorageError::io("write", &temp, e))?;
    File::open(&temp)
        .and_then(|file| file.sync_all())
        .map_err(|source| StorageError::SyncFailed { path: temp.clone(), source })?;
    fs::rename(&temp, &marker).map_err(|e| StorageError::io("rename", &marker, e))?;
    sync_dir(dir)
}
