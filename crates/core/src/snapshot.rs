//! Checkpoints and state transfer (PMMC §4, "state reduction"; Paxos Made Live §5.5).
//!
//! Every `Options::checkpoint_every_slots` applied slots a node takes a [`Snapshot`] of
//! its state machine and client sessions, hands it to its driver in `Ready::checkpoint`
//! (which writes it durably and compacts the log before it) and drops the decided values
//! it no longer needs in memory, keeping `catchup_retain_slots` for peers that lag a little.
//!
//! A peer that lags further asks for a slot this node no longer holds and is told
//! `SnapshotNeeded`. It then pulls this node's newest snapshot, one bounded chunk in
//! flight at a time ([`Transfer`], receiver-driven so a slow receiver is never flooded),
//! verifies the CRC32C over the whole, installs it, and catches up on the decisions
//! after it from the log.

use serde::{Deserialize, Serialize};

use crate::membership::Membership;
use crate::types::{NodeId, Slot, Time};

/// A state machine and its client sessions as of `last_slot` (inclusive). It holds
/// nothing node-local (no promise, no votes): any replica may install any snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last slot whose decision the snapshot includes.
    pub last_slot: Slot,
    /// `StateMachine::snapshot`, opaque here.
    pub state: Vec<u8>,
    /// The replica's exactly-once session table (`Sessions::encode`).
    pub sessions: Vec<u8>,
    /// The configurations that govern the slots after `last_slot` (`membership`).
    pub membership: Membership,
}

impl Snapshot {
    /// The first slot not included: where the log continues.
    pub fn slot_out(&self) -> Slot {
        self.last_slot + 1
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a snapshot always encodes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("snapshot does not decode: {e}"))
    }
}

/// The snapshot this node serves to lagging peers, encoded once.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) last_slot: Slot,
    pub(crate) bytes: Vec<u8>,
    pub(crate) checksum: u32,
}

impl Served {
    pub(crate) fn new(snapshot: &Snapshot) -> Served {
        let bytes = snapshot.encode();
        let checksum = crc32c::crc32c(&bytes);
        Served { last_slot: snapshot.last_slot, bytes, checksum }
    }

    /// The chunk at `offset`, at most `chunk_bytes` long.
    pub(crate) fn chunk(&self, offset: u64, chunk_bytes: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok().filter(|&s| s < self.bytes.len())?;
        let end = (start + chunk_bytes).min(self.bytes.len());
        Some(&self.bytes[start..end])
    }
}

/// An incoming snapshot being assembled from one peer.
#[derive(Debug)]
pub(crate) struct Transfer {
    pub(crate) from: NodeId,
    /// Zero until the first chunk names the snapshot.
    pub(crate) last_slot: Slot,
    pub(crate) total_bytes: u64,
    pub(crate) checksum: u32,
    pub(crate) bytes: Vec<u8>,
    /// When the outstanding request was sent (for retransmission), and when the transfer
    /// began (it is abandoned if it makes no progress for long).
    pub(crate) requested_at: Time,
    pub(crate) progressed_at: Time,
}

/// What a chunk did to a transfer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChunkOutcome {
    /// Not for this transfer (another peer, an old offset): ignored.
    Ignored,
    /// Accepted; ask for the next chunk at this offset.
    More(u64),
    /// The whole snapshot arrived and its checksum holds.
    Complete,
    /// The chunk contradicts the transfer (size over the bound, checksum mismatch): start
    /// over.
    Broken(String),
}

impl Transfer {
    pub(crate) fn new(from: NodeId, now: Time) -> Transfer {
        Transfer {
            from,
            last_slot: 0,
            total_bytes: 0,
            checksum: 0,
            bytes: Vec::new(),
            requested_at: now,
            progressed_at: now,
        }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Takes one chunk. A chunk of a newer snapshot than the one begun restarts the
    /// transfer at offset 0 (the sender checkpointed meanwhile).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_chunk(
        &mut self,
        from: NodeId,
        last_slot: Slot,
        total_bytes: u64,
        checksum: u32,
        offset: u64,
        data: &[u8],
        bytes_max: u64,
        now: Time,
    ) -> ChunkOutcome {
        if from != self.from {
            return ChunkOutcome::Ignored;
        }
        if total_bytes > bytes_max {
            return ChunkOutcome::Broken(format!("snapshot of {total_bytes} bytes exceeds {bytes_max}"));
        }
        let fresh =
            self.last_slot != last_slot || self.total_bytes != total_bytes || self.checksum != checksum;
        if fresh {
            if offset != 0 {
                // The sender checkpointed meanwhile and serves only its newest snapshot:
                // what we hold belongs to one it no longer has. Start over from 0 now;
                // asking again at our offset would be answered from the new snapshot
                // forever, until the transfer stalled out.
                self.last_slot = last_slot;
                self.total_bytes = total_bytes;
                self.checksum = checksum;
                self.bytes.clear();
                return ChunkOutcome::More(0);
            }
            self.last_slot = last_slot;
            self.total_bytes = total_bytes;
            self.checksum = checksum;
            self.bytes.clear();
        }
        if offset != self.offset() || data.is_empty() {
            return ChunkOutcome::Ignored; // A duplicate or reordered chunk.
        }
        if self.offset() + data.len() as u64 > self.total_bytes {
            return ChunkOutcome::Broken("chunk runs past the announced size".into());
        }
        self.bytes.extend_from_slice(data);
        self.progressed_at = now;
        if self.offset() < self.total_bytes {
            return ChunkOutcome::More(self.offset());
        }
        if crc32c::crc32c(&self.bytes) != self.checksum {
            return ChunkOutcome::Broken("snapshot checksum mismatch".into());
        }
        ChunkOutcome::Complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> Membership {
        Membership::new(crate::types::Configuration::new(vec![NodeId(1)]))
    }

    fn served() -> Served {
        Served::new(&Snapshot {
            last_slot: 41,
            state: vec![7; 1000],
            sessions: vec![1, 2, 3],
            membership: one(),
        })
    }

    fn pull(served: &Served, transfer: &mut Transfer, chunk_bytes: usize) -> ChunkOutcome {
        loop {
            let offset = transfer.offset();
            let data = served.chunk(offset, chunk_bytes).expect("in range");
            let total = served.bytes.len() as u64;
            match transfer.on_chunk(
                NodeId(2),
                served.last_slot,
                total,
                served.checksum,
                offset,
                data,
                1 << 20,
                Time(0),
            ) {
                ChunkOutcome::More(_) => continue,
                outcome => return outcome,
            }
        }
    }

    #[test]
    fn a_snapshot_arrives_in_bounded_chunks_and_verifies() {
        let served = served();
        let mut transfer = Transfer::new(NodeId(2), Time(0));
        assert_eq!(pull(&served, &mut transfer, 64), ChunkOutcome::Complete);
        let snapshot = Snapshot::decode(&transfer.bytes).unwrap();
        assert_eq!(snapshot.last_slot, 41);
        assert_eq!(snapshot.slot_out(), 42);
    }

    #[test]
    fn a_corrupted_chunk_fails_the_checksum_and_a_stranger_is_ignored() {
        let served = served();
        let mut transfer = Transfer::new(NodeId(2), Time(0));
        let total = served.bytes.len() as u64;
        let outcome =
            transfer.on_chunk(NodeId(3), 41, total, served.checksum, 0, &served.bytes, 1 << 20, Time(0));
        assert_eq!(outcome, ChunkOutcome::Ignored);
        let mut bad = served.bytes.clone();
        bad[500] ^= 0x10;
        let outcome = transfer.on_chunk(NodeId(2), 41, total, served.checksum, 0, &bad, 1 << 20, Time(0));
        assert!(matches!(outcome, ChunkOutcome::Broken(_)));
    }

    #[test]
    fn a_chunk_of_a_newer_snapshot_mid_transfer_starts_over_from_zero() {
        let old = served();
        let mut transfer = Transfer::new(NodeId(2), Time(0));
        let total = old.bytes.len() as u64;
        let first = old.chunk(0, 64).unwrap();
        assert_eq!(
            transfer.on_chunk(NodeId(2), 41, total, old.checksum, 0, first, 1 << 20, Time(0)),
            ChunkOutcome::More(64)
        );
        // The sender checkpointed: our request at offset 64 is answered from its new snapshot.
        let new = Served::new(&Snapshot {
            last_slot: 57,
            state: vec![9; 900],
            sessions: vec![],
            membership: one(),
        });
        let chunk = new.chunk(64, 64).unwrap();
        let total = new.bytes.len() as u64;
        let outcome = transfer.on_chunk(NodeId(2), 57, total, new.checksum, 64, chunk, 1 << 20, Time(0));
        assert_eq!(outcome, ChunkOutcome::More(0), "ask the new snapshot from its start");
        assert_eq!(pull(&new, &mut transfer, 64), ChunkOutcome::Complete);
        assert_eq!(Snapshot::decode(&transfer.bytes).unwrap().last_slot, 57);
    }

    #[test]
    fn an_oversized_snapshot_is_refused() {
        let served = served();
        let mut transfer = Transfer::new(NodeId(2), Time(0));
        let total = served.bytes.len() as u64;
        let outcome =
            transfer.on_chunk(NodeId(2), 41, total, served.checksum, 0, &served.bytes, 100, Time(0));
        assert!(matches!(outcome, ChunkOutcome::Broken(_)));
    }
}
