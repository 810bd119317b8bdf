//! A simulated disk: records become durable only after an fsync latency.
//!
//! Writes queue in FIFO order and complete in that order (one fsync covers every batch
//! written before it finished: group commit). A crash keeps what was synced and loses the
//! rest, whole batches at a time, which is exactly what the core's storage contract allows
//! ("a crash may lose a whole batch that was not yet durable, never half of it out of
//! order").

use std::collections::VecDeque;

use synod_core::{DurableState, Record};

pub(crate) struct Disk<C> {
    /// What survives a crash.
    durable: DurableState<C>,
    /// The last log sequence number synced in this incarnation of the node.
    synced_lsn: u64,
    /// The last log sequence number written (synced or not) in this incarnation.
    written_lsn: u64,
    /// Written, not yet synced: (lsn of the batch's last record, records).
    pending: VecDeque<(u64, Vec<Record<C>>)>,
    /// When the last queued fsync completes, in global microseconds (FIFO: a later write
    /// never completes before an earlier one).
    last_completion_us: u64,
}

impl<C: Clone> Disk<C> {
    pub(crate) fn new() -> Disk<C> {
        Disk {
            durable: DurableState::default(),
            synced_lsn: 0,
            written_lsn: 0,
            pending: VecDeque::new(),
            last_completion_us: 0,
        }
    }

    pub(crate) fn synced_lsn(&self) -> u64 {
        self.synced_lsn
    }

    /// Queues a batch ending at `lsn`; returns when its fsync completes.
    pub(crate) fn write(&mut self, records: Vec<Record<C>>, lsn: u64, now_us: u64, latency_us: u64) -> u64 {
        assert!(!records.is_empty(), "an empty batch needs no fsync");
        assert!(
            lsn > self.written_lsn,
            "log sequence numbers must grow: batch through {lsn} after {}",
            self.written_lsn
        );
        self.written_lsn = lsn;
        self.pending.push_back((lsn, records));
        self.last_completion_us = self.last_completion_us.max(now_us + latency_us);
        self.last_completion_us
    }

    /// The fsync that covers every batch through `lsn` returned.
    pub(crate) fn sync_through(&mut self, lsn: u64) {
        while let Some((batch_lsn, _)) = self.pending.front() {
            if *batch_lsn > lsn {
                break;
            }
            let (batch_lsn, records) = self.pending.pop_front().expect("checked above");
            for record in &records {
                self.durable.apply(record);
            }
            self.synced_lsn = batch_lsn;
        }
    }

    /// The process crashed: unsynced batches are gone. Returns how many records were lost.
    pub(crate) fn crash(&mut self) -> u64 {
        let lost = self.pending.iter().map(|(_, records)| records.len() as u64).sum();
        self.pending.clear();
        lost
    }

    /// The process restarts: it reads back the durable state, and numbers its records
    /// from 1 again.
    pub(crate) fn recover(&mut self) -> DurableState<C> {
        assert!(self.pending.is_empty(), "recover only after a crash");
        self.synced_lsn = 0;
        self.written_lsn = 0;
        self.durable.clone()
    }
}

#[cfg(test)]
mod tests {
    use synod_core::{Ballot, NodeId};

    use super::*;

    fn promise(round: u64) -> Record<u8> {
        Record::Promised { ballot: Ballot { round, leader: NodeId(1) } }
    }

    #[test]
    fn fsyncs_complete_in_order_and_a_crash_loses_only_unsynced_batches() {
        let mut disk = Disk::<u8>::new();
        let first = disk.write(vec![promise(1)], 1, 0, 500);
        let second = disk.write(vec![promise(2)], 2, 10, 100);
        assert_eq!(first, 500);
        assert_eq!(second, 500, "a later write never completes before an earlier one");
        disk.sync_through(1);
        assert_eq!(disk.synced_lsn(), 1);
        assert_eq!(disk.crash(), 1);
        let recovered = disk.recover();
        assert_eq!(recovered.promised, Ballot { round: 1, leader: NodeId(1) });
    }
}
