//! A simulated disk: records become durable only after an fsync latency, and durable
//! data can still be damaged.
//!
//! The model follows `synod-storage`'s files (see its crate docs), at the level of
//! records rather than bytes:
//!
//! - **The log** is a list of records in segments of `segment_records` records. Writes
//!   queue in FIFO order and complete in that order (one fsync covers every batch written
//!   before it finished: group commit).
//! - **Checkpoints.** A `Ready::checkpoint` is written after its batch's records and is
//!   durable at the same fsync. Then the log is compacted: it restarts as one *base
//!   batch* that restates the promise and every accepted or decided entry above the
//!   checkpoint, as the storage's compaction does.
//! - **The damage marker** (the storage's `DAMAGED` file) is set by a fault, by a new
//!   replica on an empty disk (see `World::boot`), or by a `Ready` that carries `damaged`
//!   once its fsync returns; it is cleared only when the fsync of the `Ready` that carries
//!   `repaired` returns.
//! - **The identity** (the storage's `IDENTITY` file) is drawn when a node first boots
//!   on an empty disk.
//!
//! Faults, and what recovery makes of them:
//!
//! - **crash**: unsynced batches are lost. With torn writes on, a random prefix of the
//!   unsynced records survives, in order, and a checkpoint survives only whole and only
//!   after all its batch's records. None of it was acknowledged, so this is never damage.
//! - **bit flip or unreadable sector** in the synced log: the damaged record and the
//!   rest of its segment are unreadable; later segments are read. Damage.
//! - **bad or missing checkpoint**: the snapshot is gone and so is the log below it
//!   (compacted); the base batch and what follows survive. Damage.
//! - **disk replaced** by an empty one, and the node restarted with no flag at all:
//!   nothing survives, not even the identity or the marker. The node must find out for
//!   itself that it is a new replica of a running cluster (see `World::boot`).
//!
//! A disk fault strikes only a node that is down (see `World::strike_disk`).

use std::collections::VecDeque;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use synod_core::{DurableState, LogEntry, PValue, Record, Snapshot};

/// One `Ready`'s disk work, waiting for its fsync.
struct Batch<C> {
    /// The disk's own sequence number for this batch (a `Ready` with a checkpoint but no
    /// records has no log sequence number of its own, yet it needs its own fsync).
    ticket: u64,
    /// The core's `persist_lsn` of the batch.
    lsn: u64,
    records: Vec<Record<C>>,
    checkpoint: Option<Snapshot>,
    marker: Marker,
}

/// What a batch does to the damage marker once it is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Marker {
    Keep,
    /// `Ready::damaged`: the node began to recover at run time.
    Set,
    /// `Ready::repaired`: recovery completed.
    Clear,
}

impl Marker {
    pub(crate) fn of(damaged: bool, repaired: bool) -> Marker {
        assert!(!(damaged && repaired), "a Ready never sets and clears the marker at once");
        match (damaged, repaired) {
            (true, _) => Marker::Set,
            (_, true) => Marker::Clear,
            _ => Marker::Keep,
        }
    }
}

/// What an fsync made durable, for the run's counters.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Synced {
    pub checkpoints: u64,
    /// The damage marker was cleared.
    pub repaired: bool,
}

/// What a crash did to the unsynced batches.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct CrashLoss {
    /// Records lost.
    pub lost: u64,
    /// Records that survived a torn write (written, never acknowledged).
    pub kept: u64,
}

/// A fault on the durable files of a node that is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DiskFault {
    /// A bit flip or an unreadable sector in the log: the record and the rest of its
    /// segment are lost.
    LogDamage,
    /// The newest checkpoint fails its checksum or is missing.
    CheckpointLost,
    /// The whole disk was replaced by an empty one (no identity, no marker).
    DiskLost,
}

impl DiskFault {
    pub(crate) const ALL: [DiskFault; 3] =
        [DiskFault::LogDamage, DiskFault::CheckpointLost, DiskFault::DiskLost];
}

pub(crate) struct Disk<C> {
    /// Durable: the newest checkpoint, the log since the last compaction (its base batch
    /// first), and the damage marker.
    checkpoint: Option<Snapshot>,
    log: Vec<Record<C>>,
    damaged: bool,
    /// The identity drawn when a node first booted on this disk (the `IDENTITY` file).
    identity: Option<u64>,
    /// Records per log segment: a damaged record takes the rest of its segment with it.
    segment_records: usize,
    /// The last log sequence number synced in this incarnation of the node.
    synced_lsn: u64,
    /// The last batch ticket written, and synced, in this incarnation.
    written_ticket: u64,
    synced_ticket: u64,
    /// Written, not yet synced, in order.
    pending: VecDeque<Batch<C>>,
    /// When the last queued fsync completes, in global microseconds (FIFO: a later write
    /// never completes before an earlier one).
    last_completion_us: u64,
}

impl<C: Clone + PartialEq> Disk<C> {
    pub(crate) fn new(segment_records: usize) -> Disk<C> {
        assert!(segment_records > 0, "a segment holds at least one record");
        Disk {
            checkpoint: None,
            log: Vec::new(),
            damaged: false,
            identity: None,
            segment_records,
            synced_lsn: 0,
            written_ticket: 0,
            synced_ticket: 0,
            pending: VecDeque::new(),
            last_completion_us: 0,
        }
    }

    pub(crate) fn synced_lsn(&self) -> u64 {
        self.synced_lsn
    }

    pub(crate) fn synced_ticket(&self) -> u64 {
        self.synced_ticket
    }

    /// The damage marker is set: the node must recover from its peers before it votes.
    pub(crate) fn damaged(&self) -> bool {
        self.damaged
    }

    /// The identity, drawn with `draw` (never 0) if the disk has none yet; and whether it
    /// was drawn now on a disk that holds nothing (a new replica). A new replica gets the
    /// damage marker first, as the server's storage does: it recovers from its peers.
    pub(crate) fn identify(&mut self, draw: impl FnOnce() -> u64) -> (u64, bool) {
        if let Some(identity) = self.identity {
            return (identity, false);
        }
        let empty = self.log.is_empty() && self.checkpoint.is_none();
        if empty {
            self.damaged = true;
        }
        let identity = draw().max(1);
        self.identity = Some(identity);
        (identity, empty)
    }

    /// Writes one `Ready`'s records (ending at `lsn`), checkpoint and marker change, not
    /// yet durable. Returns the batch's ticket.
    pub(crate) fn write(
        &mut self,
        records: Vec<Record<C>>,
        lsn: u64,
        checkpoint: Option<Snapshot>,
        marker: Marker,
    ) -> u64 {
        assert!(
            !records.is_empty() || checkpoint.is_some() || marker != Marker::Keep,
            "a batch without disk work needs no write"
        );
        let last_lsn = self.pending.back().map_or(self.synced_lsn, |b| b.lsn);
        assert_eq!(
            lsn,
            last_lsn + records.len() as u64,
            "log sequence numbers count the records: {} records through {lsn} after {last_lsn}",
            records.len()
        );
        self.written_ticket += 1;
        self.pending.push_back(Batch { ticket: self.written_ticket, lsn, records, checkpoint, marker });
        self.written_ticket
    }

    /// Starts an fsync of everything written so far; returns when it completes (FIFO: a
    /// later fsync never completes before an earlier one).
    pub(crate) fn fsync(&mut self, now_us: u64, latency_us: u64) -> u64 {
        self.last_completion_us = self.last_completion_us.max(now_us + latency_us);
        self.last_completion_us
    }

    /// The fsync that covers every batch through `ticket` returned.
    pub(crate) fn sync_through(&mut self, ticket: u64) -> Synced {
        let mut synced = Synced::default();
        while self.pending.front().is_some_and(|batch| batch.ticket <= ticket) {
            let batch = self.pending.pop_front().expect("checked above");
            self.log.extend(batch.records);
            if let Some(checkpoint) = batch.checkpoint {
                synced.checkpoints += u64::from(self.install_checkpoint(checkpoint));
            }
            match batch.marker {
                Marker::Keep => {}
                // The node began to recover at run time: a restart recovers too.
                Marker::Set => self.damaged = true,
                // The `Ready` that ends recovery is durable: a restart votes at once.
                Marker::Clear => {
                    synced.repaired |= self.damaged;
                    self.damaged = false;
                }
            }
            self.synced_lsn = batch.lsn;
            self.synced_ticket = batch.ticket;
        }
        synced
    }

    /// The process crashed: unsynced batches are gone, except, with `torn` given, a
    /// random prefix of their records (and whole checkpoints within that prefix), as a
    /// crash in the middle of writing leaves them. The repair marker is never cleared by
    /// a torn write: a driver clears it only after the fsync returned.
    pub(crate) fn crash(&mut self, torn: Option<&mut ChaCha8Rng>) -> CrashLoss {
        let total: u64 = self.pending.iter().map(|b| b.records.len() as u64).sum();
        let mut keep = match torn {
            Some(rng) if total > 0 => rng.gen_range(0..=total),
            _ => 0,
        };
        let kept = keep;
        for batch in std::mem::take(&mut self.pending) {
            if keep == 0 {
                break;
            }
            let whole = keep >= batch.records.len() as u64;
            let take = keep.min(batch.records.len() as u64);
            keep -= take;
            self.log.extend(batch.records.into_iter().take(take as usize));
            if let Some(checkpoint) = batch.checkpoint.filter(|_| whole) {
                self.install_checkpoint(checkpoint);
            }
        }
        CrashLoss { lost: total - kept, kept }
    }

    /// A fault on the durable files (the node is down). Returns false if the fault has
    /// nothing to strike (an empty log, no checkpoint); the disk is unchanged then.
    pub(crate) fn strike(&mut self, fault: DiskFault, rng: &mut ChaCha8Rng) -> bool {
        assert!(self.pending.is_empty(), "disk faults strike only a node that is down");
        match fault {
            DiskFault::LogDamage => {
                if self.log.is_empty() {
                    return false;
                }
                let bad = rng.gen_range(0..self.log.len());
                let segment_end = (bad / self.segment_records + 1) * self.segment_records;
                self.log.drain(bad..segment_end.min(self.log.len()));
            }
            DiskFault::CheckpointLost => {
                if self.checkpoint.take().is_none() {
                    return false;
                }
            }
            DiskFault::DiskLost => {
                // An empty disk in its place, and no flag: the node must see for itself.
                self.checkpoint = None;
                self.log.clear();
                self.identity = None;
                self.damaged = false;
                return true;
            }
        }
        // Recovery notices these (a bad checksum with valid frames after it, a gap in the
        // lsns, a missing checkpoint).
        self.damaged = true;
        true
    }

    /// For the planted `vote-while-recovering` bug only: a driver that ignores the damage
    /// marker and clears it at once.
    pub(crate) fn ignore_damage(&mut self) {
        self.damaged = false;
    }

    /// The process restarts: it reads back the durable state and whether it is damaged,
    /// and numbers its records from 1 again.
    pub(crate) fn recover(&mut self) -> (DurableState<C>, bool) {
        assert!(self.pending.is_empty(), "recover only after a crash");
        self.synced_lsn = 0;
        self.written_ticket = 0;
        self.synced_ticket = 0;
        (self.replay(), self.damaged)
    }

    /// What recovery reads: the checkpoint, then the log replayed in order.
    fn replay(&self) -> DurableState<C> {
        let mut state = DurableState { snapshot: self.checkpoint.clone(), ..DurableState::default() };
        for record in &self.log {
            state.apply(record);
        }
        state
    }

    /// A checkpoint became durable: compact the log into a base batch above it. Returns
    /// false for a checkpoint no newer than the one held.
    fn install_checkpoint(&mut self, checkpoint: Snapshot) -> bool {
        if self.checkpoint.as_ref().is_some_and(|held| held.last_slot >= checkpoint.last_slot) {
            return false;
        }
        // The log folded without the old checkpoint: whatever that one would hide is at
        // or below the new one, and goes with the compaction.
        let mut state = DurableState::default();
        for record in &self.log {
            state.apply(record);
        }
        state.log = state.log.split_off(&checkpoint.slot_out());
        self.log = base_batch(&state);
        self.checkpoint = Some(checkpoint);
        true
    }
}

/// The records that restate `state` above its checkpoint: the promise, the members'
/// identities and every accepted or decided entry (what a promise or a vote may still
/// depend on).
fn base_batch<C: Clone>(state: &DurableState<C>) -> Vec<Record<C>> {
    let promise =
        (state.promised > synod_core::Ballot::ZERO).then_some(Record::Promised { ballot: state.promised });
    let identities = state.identities.iter().map(|(&node, &dir_id)| Record::Identity { node, dir_id });
    let entries = state.log.iter().map(|(&slot, entry)| match entry {
        LogEntry::Accepted { ballot, value } => {
            Record::Accepted { pvalue: PValue { ballot: *ballot, slot, value: value.clone() } }
        }
        LogEntry::Decided(value) => Record::Decided { slot, value: value.clone() },
    });
    promise.into_iter().chain(identities).chain(entries).collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use synod_core::{Ballot, NodeId, Value};

    use super::*;

    fn promise(round: u64) -> Record<u8> {
        Record::Promised { ballot: Ballot { round, leader: NodeId(1) } }
    }

    fn decided(slot: u64) -> Record<u8> {
        Record::Decided { slot, value: Value::Noop }
    }

    fn checkpoint(last_slot: u64) -> Snapshot {
        let membership =
            synod_core::Membership::new(synod_core::Configuration::new(vec![synod_core::NodeId(1)]));
        Snapshot { last_slot, state: vec![1, 2, 3], sessions: vec![], membership }
    }

    #[test]
    fn fsyncs_complete_in_order_and_a_crash_loses_only_unsynced_batches() {
        let mut disk = Disk::<u8>::new(8);
        let first = disk.write(vec![promise(1)], 1, None, Marker::Keep);
        let first_at = disk.fsync(0, 500);
        disk.write(vec![promise(2)], 2, None, Marker::Keep);
        let second_at = disk.fsync(10, 100);
        assert_eq!(first_at, 500);
        assert_eq!(second_at, 500, "a later write never completes before an earlier one");
        disk.sync_through(first);
        assert_eq!(disk.synced_lsn(), 1);
        assert_eq!(disk.crash(None), CrashLoss { lost: 1, kept: 0 });
        let (recovered, damaged) = disk.recover();
        assert_eq!(recovered.promised, Ballot { round: 1, leader: NodeId(1) });
        assert!(!damaged, "a crash alone is no damage");
    }

    #[test]
    fn a_checkpoint_is_durable_with_its_batch_and_compacts_the_log() {
        let mut disk = Disk::<u8>::new(8);
        let ticket = disk.write(vec![promise(3), decided(0), decided(1), decided(2)], 4, None, Marker::Keep);
        disk.sync_through(ticket);
        // A checkpoint with no records of its own still gets a batch and an fsync.
        let ticket = disk.write(vec![], 4, Some(checkpoint(1)), Marker::Keep);
        assert_eq!(disk.synced_lsn(), 4);
        assert_eq!(disk.sync_through(ticket), Synced { checkpoints: 1, repaired: false });
        assert_eq!(disk.log, vec![promise(3), decided(2)], "the base batch restates what is above");
        let (recovered, _) = disk.recover();
        assert_eq!(recovered.snapshot.map(|s| s.last_slot), Some(1));
        assert_eq!(recovered.log.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(recovered.promised.round, 3);
    }

    #[test]
    fn a_torn_write_keeps_a_prefix_and_a_checkpoint_only_whole() {
        for seed in 0..50 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut disk = Disk::<u8>::new(8);
            disk.write(vec![decided(0), decided(1)], 2, Some(checkpoint(1)), Marker::Keep);
            disk.write(vec![decided(2), decided(3)], 4, None, Marker::Clear);
            let loss = disk.crash(Some(&mut rng));
            assert_eq!(loss.lost + loss.kept, 4);
            let (recovered, damaged) = disk.recover();
            assert!(!damaged, "a torn write was never acknowledged: no damage");
            let kept = recovered.log.len() as u64 + recovered.snapshot.as_ref().map_or(0, |s| s.slot_out());
            assert_eq!(kept, loss.kept, "seed {seed}: a prefix, in order");
            if recovered.snapshot.is_some() {
                assert!(loss.kept >= 2, "seed {seed}: the checkpoint only after its records");
            }
        }
    }

    #[test]
    fn damage_sets_the_marker_until_the_repaired_batch_is_synced() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut disk = Disk::<u8>::new(2);
        let records: Vec<_> = (0..6).map(decided).collect();
        let ticket = disk.write(records, 6, None, Marker::Keep);
        disk.sync_through(ticket);
        assert!(disk.strike(DiskFault::LogDamage, &mut rng));
        let (recovered, damaged) = disk.recover();
        assert!(damaged);
        let lost = 6 - recovered.log.len();
        assert!((1..=2).contains(&lost), "one record and the rest of its two-record segment");
        assert!(!disk.strike(DiskFault::CheckpointLost, &mut rng), "no checkpoint to lose");
        disk.write(vec![], 0, None, Marker::Clear);
        assert_eq!(disk.crash(None), CrashLoss::default());
        assert!(disk.recover().1, "a crash before the repaired batch is durable keeps the marker");
        let ticket = disk.write(vec![], 0, None, Marker::Clear);
        assert_eq!(disk.sync_through(ticket), Synced { checkpoints: 0, repaired: true });
        assert!(!disk.damaged());
        assert_eq!(disk.identify(|| 7), (7, false), "the first boot drew it");
        assert!(disk.strike(DiskFault::DiskLost, &mut rng));
        let (recovered, damaged) = disk.recover();
        assert!(!damaged && recovered == DurableState::default(), "a replaced disk carries no marker");
        assert_eq!(disk.identify(|| 9), (9, true), "a new replica: a new identity");
        assert!(disk.damaged(), "and the marker: it recovers before it votes");
    }
}
