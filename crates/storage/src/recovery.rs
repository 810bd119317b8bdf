//! Recovery: load the newest valid checkpoint, replay the log after it, and say exactly
//! what was cut off as a torn write and what was found damaged.
//!
//! The rule that separates the two (Alagappan et al., "Protocol-Aware Recovery for
//! Consensus-Based Storage", FAST'18):
//!
//! - **Torn tail**: bytes at the end of the *last* segment that hold no whole batch, with
//!   no valid frame after them: a partial frame, a frame failing its checksum, or whole
//!   frames of a batch whose end frame is missing. The crash interrupted that write, so
//!   it was never synced, so nothing in it was acknowledged. It is cut off; not damage.
//! - **Corruption**: a bad frame with a valid frame *after* it (a crash only ever tears
//!   the end), a bad frame anywhere in a segment that is not the last one (a segment is
//!   synced whole before the next is created), a gap in the log sequence numbers, a
//!   missing or bad checkpoint that the log was compacted into, or a checkpoint file
//!   failing its checksums. This replica may have lost something it promised: the report
//!   says `damaged`, the node must not vote until it has repaired from its peers (Paxos
//!   Made Live §5.1), and a `DAMAGED` marker file keeps saying so across restarts until
//!   [`crate::FileStorage::mark_repaired`].
//!
//! One ambiguity is inherent and documented rather than hidden: bit rot in the very last
//! record of the log, with nothing after it, looks exactly like a torn write and is
//! truncated. Closing it needs a second fsync per batch (CTRL's "persist records") and is
//! not done; a majority of intact replicas still holds every acknowledged record.
//!
//! Recovery runs in two passes so memory stays bounded by one segment: a structural scan
//! of every file, then a replay that decodes the records of the live segments.

use std::fs;
use std::path::{Path, PathBuf};

use synod_core::{DurableState, Payload, Record, Slot};

use crate::checkpoint::{self, Checkpoint, CheckpointInfo};
use crate::error::StorageError;
use crate::frame::{self, Kind};
use crate::segment::{self, Item, ScannedSegment};
use crate::{checkpoint_dir, wal_dir, DirListing, Lsn, StorageOptions, DAMAGED_MARKER};

/// One piece of damage: which file, where, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub file: PathBuf,
    pub offset: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(offset) => write!(f, "{} at byte {offset}: {}", self.file.display(), self.what),
            None => write!(f, "{}: {}", self.file.display(), self.what),
        }
    }
}

/// The end of the last segment that a crash tore, cut off by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    /// Where the cut-off bytes begin (the end of the last whole batch).
    pub offset: u64,
    pub bytes: u64,
    pub why: String,
}

/// What recovery found. `damaged` is the one bit the core must act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// **THIS REPLICA MAY HAVE LOST DATA IT ACKNOWLEDGED: IT MUST NOT VOTE UNTIL IT HAS
    /// REPAIRED FROM ITS PEERS.** The state returned is what could be read.
    pub damaged: bool,
    /// Each piece of damage, naming the file and offset.
    pub damage: Vec<Damage>,
    /// A torn write cut off the end of the log (harmless: never acknowledged).
    pub torn_tail: Option<TornTail>,
    /// The directory held no storage (a new node — or a node whose disk was lost, which
    /// only the cluster can tell apart).
    pub fresh: bool,
    /// The slot of the checkpoint loaded, if any.
    pub checkpoint_slot: Option<Slot>,
    /// Segments replayed and records replayed from them.
    pub segments_replayed: usize,
    pub records_replayed: u64,
    /// The log sequence number of the last record recovered.
    pub last_lsn: Lsn,
    /// Harmless findings: leftovers of interrupted compactions, temporary files.
    pub notes: Vec<String>,
}

impl RecoveryReport {
    fn damage(&mut self, file: &Path, offset: Option<u64>, what: impl Into<String>) {
        self.damaged = true;
        self.damage.push(Damage { file: file.to_path_buf(), offset, what: what.into() });
    }
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.fresh {
            writeln!(f, "recovery: no storage found; starting empty")?;
        }
        let checkpoint =
            self.checkpoint_slot.map_or("no checkpoint".to_string(), |s| format!("checkpoint at slot {s}"));
        writeln!(
            f,
            "recovery: {checkpoint}, {} records replayed from {} segments, last {}",
            self.records_replayed, self.segments_replayed, self.last_lsn
        )?;
        if let Some(tail) = &self.torn_tail {
            writeln!(
                f,
                "recovery: cut off a torn write of {} bytes at the end of {} (byte {}): {}",
                tail.bytes,
                tail.file.display(),
                tail.offset,
                tail.why
            )?;
        }
        for damage in &self.damage {
            writeln!(f, "DAMAGE: {damage}")?;
        }
        if self.damaged {
            writeln!(f, "DAMAGED: this replica must not vote until it has repaired from its peers")?;
        }
        Ok(())
    }
}

/// What recovery gives the node: its durable state, the checkpoint it starts from, and
/// the report.
#[derive(Debug)]
pub struct Recovered<C> {
    /// Promise and log entries after the checkpoint (entries at or below
    /// `checkpoint.meta.last_slot` are left out: the snapshot includes them).
    pub state: DurableState<C>,
    pub checkpoint: Option<Checkpoint>,
    pub report: RecoveryReport,
}

/// How the writer continues after recovery.
#[derive(Debug)]
pub(crate) enum Tail {
    /// No segment: create the first one.
    Create,
    /// Delete this file (it held no whole batch) and create a fresh segment.
    Recreate(PathBuf),
    /// Cut the file to `len` and append after it.
    Reopen { path: PathBuf, first_lsn: u64, len: u64, records: u64 },
}

/// What `FileStorage::open` does to the directory after recovery.
#[derive(Debug)]
pub(crate) struct Plan {
    pub checkpoint: Option<CheckpointInfo>,
    pub obsolete: Vec<PathBuf>,
    pub temps: Vec<PathBuf>,
    pub tail: Tail,
    pub next_lsn: u64,
}

/// A whole batch found by the structural scan.
#[derive(Clone, Debug)]
struct Batch {
    offset: u64,
    end: u64,
    first_lsn: u64,
    last_lsn: u64,
    records: u64,
    base_slot: Option<Slot>,
}

/// One segment sorted into whole batches, damage, and a torn tail.
#[derive(Debug, Default)]
struct Analyzed {
    batches: Vec<Batch>,
    problems: Vec<(Option<u64>, String)>,
    tail: Option<(u64, String)>,
    valid_end: u64,
    /// The segment ends with a seal naming its successor's first lsn.
    sealed: Option<(u64, u64)>,
}

fn analyze(scanned: &ScannedSegment) -> Analyzed {
    let mut out = Analyzed::default();
    if let Some(error) = &scanned.unreadable {
        out.problems.push((None, format!("segment cannot be read: {error}")));
        return out;
    }
    let mut items = scanned.items.iter();
    if scanned.header_ok() {
        if let Some(Item::Frame(header)) = items.next() {
            out.valid_end = header.end;
        }
    } else if !scanned.items.is_empty() {
        out.problems.push((Some(0), format!("no valid segment header for lsn {}", scanned.name_lsn)));
    }
    let mut pending: Vec<&segment::FrameInfo> = Vec::new();
    for item in items {
        match item {
            Item::Frame(f) if f.kind == Kind::Seal && pending.is_empty() && out.sealed.is_none() => {
                out.sealed = Some((f.offset, f.lsn));
                out.valid_end = f.end;
            }
            Item::Frame(f) if out.sealed.is_some() => {
                out.problems.push((Some(f.offset), format!("{:?} frame after the segment's seal", f.kind)));
            }
            Item::Frame(f) => {
                let follows = !matches!(pending.last(), Some(prev) if prev.lsn + 1 != f.lsn);
                if matches!(f.kind, Kind::SegmentHeader | Kind::Seal)
                    || !follows
                    || (f.kind == Kind::Base && !pending.is_empty())
                {
                    out.problems
                        .push((Some(f.offset), format!("unexpected {:?} frame with lsn {}", f.kind, f.lsn)));
                    pending.clear();
                    continue;
                }
                pending.push(f);
                if f.ends_batch {
                    let first = pending[0];
                    out.batches.push(Batch {
                        offset: first.offset,
                        end: f.end,
                        first_lsn: first.lsn,
                        last_lsn: f.lsn,
                        records: pending.len() as u64,
                        base_slot: first.base_slot,
                    });
                    out.valid_end = f.end;
                    pending.clear();
                }
            }
            Item::Bad { offset, end, reason } => {
                if let Some(first) = pending.first() {
                    out.problems.push((
                        Some(first.offset),
                        "a batch is cut short by the corrupt bytes after it".into(),
                    ));
                    pending.clear();
                }
                out.problems.push((
                    Some(*offset),
                    format!("{reason}; a valid frame follows at byte {end}, so this is corruption, not a torn write"),
                ));
            }
        }
    }
    out.tail = match (pending.first(), &scanned.tail) {
        (Some(first), _) => {
            Some((first.offset, format!("a batch of {} frames has no end frame", pending.len())))
        }
        (None, Some((offset, reason))) => Some((*offset, reason.clone())),
        (None, None) if scanned.items.is_empty() => Some((0, "the segment is empty".to_string())),
        (None, None) => None,
    };
    out
}

/// Reads the storage in `dir` without changing anything: what [`crate::FileStorage::open`]
/// would recover, for inspection. No lock is taken: run it on a directory no process is
/// writing, or it may see that process's unsynced tail as torn.
pub fn recover<C: Payload>(dir: &Path, options: &StorageOptions) -> Result<Recovered<C>, StorageError> {
    recover_with(dir, options, &mut |_, _| {}).map(|(recovered, _)| recovered)
}

/// Every record of the live log, in order, with its log sequence number, and the
/// report — for inspection tools and tests. Reads without changing anything.
pub fn read_log<C: Payload>(dir: &Path, options: &StorageOptions) -> Result<LogContents<C>, StorageError> {
    let mut records = Vec::new();
    let (recovered, _) =
        recover_with(dir, options, &mut |lsn, record: &Record<C>| records.push((lsn, record.clone())))?;
    Ok(LogContents { records, report: recovered.report })
}

/// What [`read_log`] found.
#[derive(Debug)]
pub struct LogContents<C> {
    /// The replayed records, in log order.
    pub records: Vec<(Lsn, Record<C>)>,
    pub report: RecoveryReport,
}

pub(crate) fn recover_with<C: Payload>(
    dir: &Path,
    options: &StorageOptions,
    visit: &mut dyn FnMut(Lsn, &Record<C>),
) -> Result<(Recovered<C>, Plan), StorageError> {
    let mut report = RecoveryReport::default();
    let (wal, checkpoints) = (wal_dir(dir), checkpoint_dir(dir));
    let marker = dir.join(DAMAGED_MARKER);
    if let Ok(earlier) = fs::read_to_string(&marker) {
        report.damage(
            &marker,
            None,
            format!("an earlier recovery found damage not yet repaired:\n{}", earlier.trim_end()),
        );
    }
    if !wal.exists() && !checkpoints.exists() && !report.damaged {
        report.fresh = true;
        let plan = Plan {
            checkpoint: None,
            obsolete: Vec::new(),
            temps: Vec::new(),
            tail: Tail::Create,
            next_lsn: 1,
        };
        return Ok((Recovered { state: DurableState::default(), checkpoint: None, report }, plan));
    }

    // The newest checkpoint that verifies; newer ones that do not are damage.
    let listing = if checkpoints.exists() {
        list_or_err(&checkpoints, checkpoint::list(&checkpoints))?
    } else {
        DirListing::default()
    };
    let DirListing { found: mut listed, mut temps, strangers } = listing;
    listed.reverse();
    let had_checkpoints = !listed.is_empty();
    let mut chosen: Option<(CheckpointInfo, Checkpoint)> = None;
    let mut obsolete = Vec::new();
    for (slot, path) in listed {
        if chosen.is_some() {
            obsolete.push(path);
            continue;
        }
        match checkpoint::read_verified(&path) {
            Ok(found) if found.meta.last_slot == slot => {
                let file_bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let info = CheckpointInfo {
                    last_slot: slot,
                    path,
                    file_bytes,
                    snapshot_bytes: found.snapshot.len() as u64,
                };
                chosen = Some((info, found));
            }
            Ok(found) => report.damage(
                &path,
                Some(0),
                format!("named for slot {slot} but holds slot {}", found.meta.last_slot),
            ),
            Err(StorageError::CorruptCheckpoint { offset, reason, .. }) => {
                report.damage(&path, Some(offset), format!("checkpoint fails verification: {reason}"))
            }
            Err(other) => report.damage(&path, None, other.to_string()),
        }
    }
    let checkpoint_slot = chosen.as_ref().map(|(info, _)| info.last_slot);
    report.checkpoint_slot = checkpoint_slot;
    for stranger in strangers {
        report.notes.push(format!("ignored unknown file {}", stranger.display()));
    }

    // Structural scan of every segment.
    let listing = if wal.exists() { list_or_err(&wal, segment::list(&wal))? } else { DirListing::default() };
    let DirListing { found: segments, temps: wal_temps, strangers } = listing;
    temps.extend(wal_temps);
    for stranger in strangers {
        report.notes.push(format!("ignored unknown file {}", stranger.display()));
    }
    let scanned: Vec<ScannedSegment> =
        segments.iter().map(|(lsn, path)| segment::scan_file(path, *lsn, options.record_bytes_max)).collect();
    let analyzed: Vec<Analyzed> = scanned.iter().map(analyze).collect();
    if scanned.is_empty() && !had_checkpoints && report.damage.is_empty() {
        // Created but never written (a crash right after creating the directories).
        report.fresh = true;
    }

    // Where replay starts: the last segment opening with a base batch whose checkpoint
    // is here, else the beginning of the log.
    let base_of = |i: usize| -> Option<Slot> {
        let first = analyzed[i].batches.first()?;
        (scanned[i].header_ok() && first.first_lsn == scanned[i].name_lsn)
            .then_some(first.base_slot)
            .flatten()
    };
    let usable = |i: usize| matches!((base_of(i), checkpoint_slot), (Some(base), Some(have)) if base <= have);
    let start = (0..scanned.len()).rev().find(|&i| usable(i));
    for i in start.map_or(0, |s| s + 1)..scanned.len() {
        if let Some(base) = base_of(i) {
            let what = format!(
                "the log was compacted into a checkpoint at slot {base} or later, and no valid one exists"
            );
            report.damage(&scanned[i].path, Some(analyzed[i].batches[0].offset), what);
        }
    }
    let start = start.unwrap_or(0);
    if start == 0 && base_of(0).is_none() {
        match scanned.first() {
            Some(first) if first.name_lsn != 1 => {
                let what =
                    format!("the log begins at lsn {}: the records before it are missing", first.name_lsn);
                report.damage(&first.path, None, what);
            }
            None if had_checkpoints => report.damage(&wal, None, "the write-ahead log is missing"),
            _ => {}
        }
    }
    for old in &scanned[..start] {
        report.notes.push(format!("{} predates the checkpoint and is obsolete", old.path.display()));
        obsolete.push(old.path.clone());
    }

    // Classify each live segment's findings and check the lsn sequence across them.
    let last = scanned.len().checked_sub(1);
    let mut expected = scanned.get(start).map_or(1, |s| s.name_lsn);
    let mut next_lsn = expected;
    for i in start..scanned.len() {
        let (scan, found) = (&scanned[i], &analyzed[i]);
        let damage_before = report.damage.len();
        for (offset, what) in &found.problems {
            report.damage(&scan.path, *offset, what.clone());
        }
        if let Some((offset, why)) = &found.tail {
            if Some(i) == last {
                let bytes = scan.len - found.valid_end;
                report.torn_tail = Some(TornTail {
                    file: scan.path.clone(),
                    offset: found.valid_end,
                    bytes,
                    why: why.clone(),
                });
            } else {
                let what = format!("{why}, at the end of a segment that is not the last (it was synced whole before the next was created)");
                report.damage(&scan.path, Some(*offset), what);
            }
        }
        if let (Some((offset, successor)), true) = (found.sealed, Some(i) == last) {
            let what = format!(
                "the segment was sealed for a successor starting at lsn {successor}, which is missing"
            );
            report.damage(&scan.path, Some(offset), what);
            next_lsn = next_lsn.max(successor);
        }
        let mut explained = report.damage.len() > damage_before;
        let starts = std::iter::once((scan.name_lsn, None))
            .chain(found.batches.iter().map(|b| (b.first_lsn, Some(b))));
        for (first_lsn, batch) in starts {
            if first_lsn != expected && !explained {
                let what =
                    format!("log sequence numbers jump from {expected} to {first_lsn}: records are missing");
                report.damage(&scan.path, batch.map(|b| b.offset), what);
            }
            explained = false;
            expected = batch.map_or(first_lsn, |b| b.last_lsn + 1);
            next_lsn = next_lsn.max(expected);
        }
    }

    // Second pass: decode and replay the whole batches of the live segments.
    let mut state = DurableState::default();
    for i in start..scanned.len() {
        if analyzed[i].batches.is_empty() {
            continue;
        }
        let bytes = match fs::read(&scanned[i].path) {
            Ok(bytes) if bytes.len() as u64 == scanned[i].len => bytes,
            Ok(_) | Err(_) => {
                report.damage(&scanned[i].path, None, "changed or became unreadable during recovery");
                continue;
            }
        };
        report.segments_replayed += 1;
        for batch in &analyzed[i].batches {
            replay_batch(&bytes, batch, &scanned[i].path, options, &mut state, &mut report, visit);
        }
    }
    if let Some(slot) = checkpoint_slot {
        state.log.retain(|entry_slot, _| *entry_slot > slot);
    }
    report.last_lsn = Lsn(next_lsn - 1);

    let tail = match (last, &report.torn_tail) {
        (None, _) => Tail::Create,
        (Some(i), _) if analyzed[i].sealed.is_some() => Tail::Create,
        (Some(i), _) if analyzed[i].valid_end == 0 => Tail::Recreate(scanned[i].path.clone()),
        (Some(i), _) => Tail::Reopen {
            path: scanned[i].path.clone(),
            first_lsn: scanned[i].name_lsn,
            len: analyzed[i].valid_end,
            records: analyzed[i].batches.iter().map(|b| b.records).sum(),
        },
    };
    let plan =
        Plan { checkpoint: chosen.as_ref().map(|(info, _)| info.clone()), obsolete, temps, tail, next_lsn };
    let recovered = Recovered { state, checkpoint: chosen.map(|(_, found)| found), report };
    Ok((recovered, plan))
}

fn replay_batch<C: Payload>(
    bytes: &[u8],
    batch: &Batch,
    path: &Path,
    options: &StorageOptions,
    state: &mut DurableState<C>,
    report: &mut RecoveryReport,
    visit: &mut dyn FnMut(Lsn, &Record<C>),
) {
    let mut at = batch.offset as usize;
    while at < batch.end as usize {
        let frame =
            frame::parse(bytes, at, options.record_bytes_max).expect("the scan found a whole frame here");
        if frame.kind.is_record() {
            match postcard::from_bytes::<Record<C>>(frame.payload) {
                Ok(record) if Kind::of_record(&record) == frame.kind => {
                    state.apply(&record);
                    visit(Lsn(frame.lsn), &record);
                    report.records_replayed += 1;
                }
                Ok(_) => report.damage(
                    path,
                    Some(at as u64),
                    format!("record kind {:?} does not match its payload", frame.kind),
                ),
                Err(error) => report.damage(
                    path,
                    Some(at as u64),
                    format!(
                        "record passes its checksum but does not decode as this node's record type: {error}"
                    ),
                ),
            }
        }
        at = frame.end;
    }
}

fn list_or_err<T>(dir: &Path, listed: std::io::Result<T>) -> Result<T, StorageError> {
    listed.map_err(|error| StorageError::io("list", dir, error))
}
