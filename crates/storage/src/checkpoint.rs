//! Checkpoints: the state machine's snapshot and its metadata in one self-verifying file,
//! written so that a crash leaves either the old checkpoint or the new one, never a mix;
//! and the same bytes sent to a lagging replica in bounded, checksummed chunks.
//!
//! ```text
//! checkpoint/00000000000000004095.ckpt        (named after the last slot it includes)
//! +---------------------+---------------------+-----+---------------------+--------------------+
//! | frame 0             | frame 1             | ... | frame n             | frame n+1          |
//! | CheckpointMeta      | SnapshotPart        |     | SnapshotPart        | CheckpointEnd      |
//! | postcard(last slot, | snapshot bytes      |     | (each at most       | proves the file    |
//! |  configuration,     | [0, part)           |     |  `snapshot_part_    | is whole           |
//! |  sessions, snapshot |                     |     |  bytes_max`)        |                    |
//! |  length and crc32c, |                     |     |                     |                    |
//! |  parts)             |                     |     |                     |                    |
//! +---------------------+---------------------+-----+---------------------+--------------------+
//! ```
//! The configuration and sessions blobs are opaque here; the sessions are synod-core's
//! `Sessions::encode` (versioned: from version 2 on, each session keeps a digest of its
//! last command beside its cached reply, and a version-1 table is still read).
//! Frames are those of [`crate::frame`]; their `lsn` field holds the frame's index. A
//! reader checks every frame's checksum, the indices, the part count, the CRC32C of the
//! whole snapshot and that the end frame ends the file, so it can name the offset of any
//! damage. The file holds nothing node-local (no promise, no accepted values: those
//! stay in the log, see `wal.rs`), so the same bytes can be installed on another replica.
//!
//! Writing follows the classic recipe: write `NAME.ckpt.tmp`, fsync it, rename it to
//! `NAME.ckpt`, fsync the directory (so the rename itself is durable).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use synod_core::Slot;

use crate::error::StorageError;
use crate::frame::{self, Kind, FLAG_BATCH_END};
use crate::{list_dir, parse_numbered, sync_dir, DirListing};

/// Sanity bound on one frame of a checkpoint file (the real bound is the file's length).
const CHECKPOINT_FRAME_BYTES_MAX: usize = 1 << 30;

/// The name a receiver writes incoming chunks to.
const RECEIVING_NAME: &str = "receiving.ckpt.tmp";

/// What a checkpoint says about the snapshot beside it. The blobs are opaque to storage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The last slot whose decision the snapshot includes.
    pub last_slot: Slot,
    /// The configuration in force after `last_slot`, as the caller encodes it.
    pub configuration: Vec<u8>,
    /// The client sessions (exactly-once table) as of `last_slot`, as the caller encodes it.
    pub sessions: Vec<u8>,
}

/// A checkpoint read back and verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub snapshot: Vec<u8>,
}

/// Where a checkpoint lives and how big it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub last_slot: Slot,
    pub path: PathBuf,
    pub file_bytes: u64,
    pub snapshot_bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct MetaPayload {
    meta: CheckpointMeta,
    snapshot_bytes: u64,
    snapshot_crc: u32,
    parts: u64,
}

const END_MAGIC: &[u8] = b"synod checkpoint end";

pub(crate) fn checkpoint_name(last_slot: Slot) -> String {
    format!("{last_slot:020}.ckpt")
}

/// The files in `dir`: checkpoints sorted by slot (oldest first), temporary files,
/// strangers.
pub(crate) fn list(dir: &Path) -> io::Result<DirListing> {
    list_dir(dir, |name| parse_numbered(name, ".ckpt"))
}

/// Writes a checkpoint durably: temporary file, fsync, rename, directory fsync.
/// Returns the file's info and how many fsyncs it took. A failed write removes the
/// temporary file and changes nothing; a failed fsync is fatal (see [`StorageError`]).
pub(crate) fn write(
    dir: &Path,
    meta: &CheckpointMeta,
    snapshot: &[u8],
    part_bytes_max: usize,
) -> Result<CheckpointInfo, StorageError> {
    assert!(part_bytes_max > 0, "snapshot parts need room for at least one byte");
    let path = dir.join(checkpoint_name(meta.last_slot));
    let temp = dir.join(format!("{}.tmp", checkpoint_name(meta.last_slot)));
    let written = write_frames(&temp, meta, snapshot, part_bytes_max);
    let (file, file_bytes) = match written {
        Ok(done) => done,
        Err(error) => {
            let _ = fs::remove_file(&temp);
            return Err(StorageError::io("write checkpoint", &temp, error));
        }
    };
    file.sync_all().map_err(|source| StorageError::SyncFailed { path: temp.clone(), source })?;
    if let Err(error) = fs::rename(&temp, &path) {
        let _ = fs::remove_file(&temp);
        return Err(StorageError::io("rename checkpoint into place", &path, error));
    }
    sync_dir(dir)?;
    Ok(CheckpointInfo { last_slot: meta.last_slot, path, file_bytes, snapshot_bytes: snapshot.len() as u64 })
}

fn write_frames(
    temp: &Path,
    meta: &CheckpointMeta,
    snapshot: &[u8],
    part_bytes_max: usize,
) -> io::Result<(File, u64)> {
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(temp)?;
    let mut out = BufWriter::new(file);
    let parts = snapshot.chunks(part_bytes_max).count() as u64;
    let payload = MetaPayload {
        meta: meta.clone(),
        snapshot_bytes: snapshot.len() as u64,
        snapshot_crc: crc32c::crc32c(snapshot),
        parts,
    };
    let mut buf = Vec::new();
    frame::encode_value(&mut buf, Kind::CheckpointMeta, 0, 0, &payload);
    let mut bytes = buf.len() as u64;
    out.write_all(&buf)?;
    for (index, part) in snapshot.chunks(part_bytes_max).enumerate() {
        buf.clear();
        frame::encode(&mut buf, Kind::SnapshotPart, 0, index as u64 + 1, part);
        bytes += buf.len() as u64;
        out.write_all(&buf)?;
    }
    buf.clear();
    frame::encode(&mut buf, Kind::CheckpointEnd, FLAG_BATCH_END, parts + 1, END_MAGIC);
    bytes += buf.len() as u64;
    out.write_all(&buf)?;
    let file = out.into_inner().map_err(|error| error.into_error())?;
    Ok((file, bytes))
}

/// Checks a whole checkpoint file. On failure: the offset of the first bad byte and why.
pub(crate) fn verify(bytes: &[u8]) -> Result<Checkpoint, (u64, String)> {
    let bad = |at: usize, why: String| Err((at as u64, why));
    let first = match frame::parse(bytes, 0, CHECKPOINT_FRAME_BYTES_MAX) {
        Ok(first) => first,
        Err(error) => return bad(0, format!("metadata {error}")),
    };
    if first.kind != Kind::CheckpointMeta || first.lsn != 0 {
        return bad(0, format!("first frame is {:?} #{}, not the metadata", first.kind, first.lsn));
    }
    let payload: MetaPayload = match postcard::from_bytes(first.payload) {
        Ok(payload) => payload,
        Err(error) => return bad(0, format!("metadata passes its checksum but does not decode: {error}")),
    };
    let mut snapshot = Vec::with_capacity(payload.snapshot_bytes.min(bytes.len() as u64) as usize);
    let mut at = first.end;
    for index in 1..=payload.parts {
        match frame::parse(bytes, at, CHECKPOINT_FRAME_BYTES_MAX) {
            Ok(part) if part.kind == Kind::SnapshotPart && part.lsn == index => {
                snapshot.extend_from_slice(part.payload);
                at = part.end;
            }
            Ok(other) => {
                return bad(
                    at,
                    format!("expected snapshot part #{index}, found {:?} #{}", other.kind, other.lsn),
                )
            }
            Err(error) => return bad(at, format!("snapshot part #{index}: {error}")),
        }
    }
    match frame::parse(bytes, at, CHECKPOINT_FRAME_BYTES_MAX) {
        Ok(end)
            if end.kind == Kind::CheckpointEnd
                && end.lsn == payload.parts + 1
                && end.payload == END_MAGIC =>
        {
            if end.end != bytes.len() {
                return bad(
                    end.end,
                    format!("{} unexpected bytes after the end frame", bytes.len() - end.end),
                );
            }
        }
        Ok(other) => {
            return bad(at, format!("expected the end frame, found {:?} #{}", other.kind, other.lsn))
        }
        Err(error) => return bad(at, format!("end frame: {error}")),
    }
    if snapshot.len() as u64 != payload.snapshot_bytes || crc32c::crc32c(&snapshot) != payload.snapshot_crc {
        return bad(first.end, "the snapshot's length or CRC32C does not match its metadata".to_string());
    }
    Ok(Checkpoint { meta: payload.meta, snapshot })
}

/// Reads and verifies the checkpoint at `path`.
pub(crate) fn read_verified(path: &Path) -> Result<Checkpoint, StorageError> {
    let bytes = fs::read(path).map_err(|error| StorageError::io("read checkpoint", path, error))?;
    verify(&bytes).map_err(|(offset, reason)| StorageError::CorruptCheckpoint {
        path: path.to_path_buf(),
        offset,
        reason,
    })
}

/// A piece of a checkpoint file on its way to another replica. The checksum covers the
/// position fields too, so a chunk delivered to the wrong place is refused as well.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointChunk {
    /// Identifies the checkpoint: its last slot.
    pub last_slot: Slot,
    /// Bytes of the whole checkpoint file.
    pub total_bytes: u64,
    /// Where `bytes` begin in the file.
    pub offset: u64,
    pub bytes: Vec<u8>,
    /// CRC32C of the fields above.
    pub crc: u32,
}

impl CheckpointChunk {
    pub fn new(last_slot: Slot, total_bytes: u64, offset: u64, bytes: Vec<u8>) -> CheckpointChunk {
        let crc = chunk_crc(last_slot, total_bytes, offset, &bytes);
        CheckpointChunk { last_slot, total_bytes, offset, bytes, crc }
    }

    /// The chunk is as its sender made it.
    pub fn checksum_ok(&self) -> bool {
        self.crc == chunk_crc(self.last_slot, self.total_bytes, self.offset, &self.bytes)
    }
}

fn chunk_crc(last_slot: Slot, total_bytes: u64, offset: u64, bytes: &[u8]) -> u32 {
    let mut crc = crc32c::crc32c(&last_slot.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &total_bytes.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &offset.to_le_bytes());
    crc32c::crc32c_append(crc, bytes)
}

/// Reads a checkpoint file in chunks of at most `chunk_bytes_max` bytes, in order.
/// The file was verified when this iterator was made; the receiver verifies it again.
#[derive(Debug)]
pub struct CheckpointChunks {
    file: File,
    path: PathBuf,
    last_slot: Slot,
    total_bytes: u64,
    offset: u64,
    chunk_bytes_max: usize,
}

impl CheckpointChunks {
    pub(crate) fn open(
        info: &CheckpointInfo,
        chunk_bytes_max: usize,
    ) -> Result<CheckpointChunks, StorageError> {
        assert!(chunk_bytes_max > 0, "a chunk needs room for at least one byte");
        // Check before serving: never send a peer a checkpoint this disk has damaged.
        read_verified(&info.path)?;
        let file =
            File::open(&info.path).map_err(|error| StorageError::io("open checkpoint", &info.path, error))?;
        let total_bytes =
            file.metadata().map_err(|error| StorageError::io("stat checkpoint", &info.path, error))?.len();
        Ok(CheckpointChunks {
            file,
            path: info.path.clone(),
            last_slot: info.last_slot,
            total_bytes,
            offset: 0,
            chunk_bytes_max,
        })
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// How many chunks the whole file takes.
    pub fn chunks_total(&self) -> u64 {
        self.total_bytes.div_ceil(self.chunk_bytes_max as u64)
    }
}

impl Iterator for CheckpointChunks {
    type Item = Result<CheckpointChunk, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.offset >= self.total_bytes {
            return None;
        }
        let len = (self.total_bytes - self.offset).min(self.chunk_bytes_max as u64) as usize;
        let mut bytes = vec![0; len];
        if let Err(error) = self.file.read_exact_at(&mut bytes, self.offset) {
            self.offset = self.total_bytes;
            return Some(Err(StorageError::io("read checkpoint", &self.path, error)));
        }
        let chunk = CheckpointChunk::new(self.last_slot, self.total_bytes, self.offset, bytes);
        self.offset += len as u64;
        Some(Ok(chunk))
    }
}

/// Assembles a checkpoint from chunks, in order, into a temporary file beside the
/// checkpoints, then verifies it whole. Made by `FileStorage::checkpoint_receiver`.
/// Dropped before `finish`, it deletes its temporary file.
#[derive(Debug)]
pub struct CheckpointReceiver {
    path: PathBuf,
    file: Option<File>,
    expected: Option<(Slot, u64)>,
    received: u64,
    total_bytes_max: u64,
}

/// A received checkpoint that verified, ready for `FileStorage::install_received`.
#[derive(Debug)]
pub struct ReceivedCheckpoint {
    pub checkpoint: Checkpoint,
    pub(crate) path: PathBuf,
    pub(crate) file_bytes: u64,
}

impl CheckpointReceiver {
    pub(crate) fn create(dir: &Path, total_bytes_max: u64) -> Result<CheckpointReceiver, StorageError> {
        let path = dir.join(RECEIVING_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|error| StorageError::io("create", &path, error))?;
        Ok(CheckpointReceiver { path, file: Some(file), expected: None, received: 0, total_bytes_max })
    }

    /// Takes the next chunk. Returns whether the checkpoint is now complete. A refused
    /// chunk ([`StorageError::BadChunk`]) leaves the receiver as it was.
    pub fn receive(&mut self, chunk: &CheckpointChunk) -> Result<bool, StorageError> {
        let refuse = |reason: String| Err(StorageError::BadChunk { offset: chunk.offset, reason });
        if !chunk.checksum_ok() {
            return refuse("checksum mismatch".to_string());
        }
        // Until the first byte lands, the receiver follows whichever checkpoint arrives.
        let (last_slot, total_bytes) = match self.expected {
            Some(expected) if self.received > 0 => expected,
            _ => (chunk.last_slot, chunk.total_bytes),
        };
        if (chunk.last_slot, chunk.total_bytes) != (last_slot, total_bytes) {
            return refuse(format!(
                "chunk of checkpoint (slot {}, {} bytes) while receiving (slot {last_slot}, {total_bytes} bytes)",
                chunk.last_slot, chunk.total_bytes
            ));
        }
        if total_bytes > self.total_bytes_max {
            return refuse(format!(
                "checkpoint of {total_bytes} bytes exceeds the bound of {}",
                self.total_bytes_max
            ));
        }
        if chunk.offset != self.received {
            return refuse(format!("expected the chunk at byte {}", self.received));
        }
        let end = chunk.offset + chunk.bytes.len() as u64;
        if chunk.bytes.is_empty() || end > total_bytes {
            return refuse(format!("{} bytes do not fit a file of {total_bytes}", chunk.bytes.len()));
        }
        let file = self.file.as_ref().expect("the file lives until finish");
        file.write_all_at(&chunk.bytes, chunk.offset)
            .map_err(|error| StorageError::io("write", &self.path, error))?;
        self.expected = Some((last_slot, total_bytes));
        self.received = end;
        Ok(self.is_complete())
    }

    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    pub fn is_complete(&self) -> bool {
        matches!(self.expected, Some((_, total)) if total == self.received)
    }

    /// Makes the received file durable and verifies it whole (every frame's checksum, the
    /// snapshot's CRC32C, the end frame). A file that fails is deleted.
    pub fn finish(mut self) -> Result<ReceivedCheckpoint, StorageError> {
        let Some((last_slot, total_bytes)) = self.expected.filter(|_| self.is_complete()) else {
            return Err(StorageError::BadChunk {
                offset: self.received,
                reason: "the checkpoint is incomplete".to_string(),
            });
        };
        let file = self.file.take().expect("the file lives until finish");
        file.sync_all().map_err(|source| StorageError::SyncFailed { path: self.path.clone(), source })?;
        drop(file);
        let checkpoint = read_verified(&self.path)?;
        if checkpoint.meta.last_slot != last_slot {
            return Err(StorageError::CorruptCheckpoint {
                path: self.path.clone(),
                offset: 0,
                reason: format!("announced slot {last_slot}, holds slot {}", checkpoint.meta.last_slot),
            });
        }
        let path = std::mem::take(&mut self.path);
        Ok(ReceivedCheckpoint { checkpoint, path, file_bytes: total_bytes })
    }
}

impl Drop for CheckpointReceiver {
    fn drop(&mut self) {
        // `finish` takes the path when it hands the file on; otherwise it is garbage.
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(snapshot: &[u8], part: usize) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!("synod-ckpt-unit-{}-{part}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let meta = CheckpointMeta { last_slot: 9, configuration: vec![1], sessions: vec![2, 3] };
        let info = write(&dir, &meta, snapshot, part).unwrap();
        let bytes = fs::read(&info.path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        bytes
    }

    #[test]
    fn a_checkpoint_round_trips_through_its_bytes() {
        let snapshot: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let back = verify(&encoded(&snapshot, 64)).unwrap();
        assert_eq!((back.meta.last_slot, back.meta.sessions, back.snapshot), (9, vec![2, 3], snapshot));
    }

    #[test]
    fn every_byte_of_a_checkpoint_is_covered() {
        let bytes = encoded(b"a small snapshot", 5);
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            assert!(verify(&bad).is_err(), "flip at byte {at} went unnoticed");
        }
        for len in 0..bytes.len() {
            assert!(verify(&bytes[..len]).is_err(), "truncation to {len} bytes went unnoticed");
        }
    }
}
