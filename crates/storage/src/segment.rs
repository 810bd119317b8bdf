//! One log segment file: naming, appending whole batches, and a structural scan that
//! sorts its bytes into valid frames, corrupt regions and a torn tail.
//!
//! A segment is named after the log sequence number of its first record
//! (`wal/00000000000000000001.log`) and begins with a `SegmentHeader` frame carrying that
//! number, so a renamed or misplaced file is noticed. A batch never spans two segments:
//! the writer rolls over *before* a batch that would cross `segment_bytes_max` (a batch
//! larger than the bound gets a segment of its own), so one `write` and one `fdatasync`
//! always cover a whole batch.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::frame::{self, Kind, FLAG_BATCH_END};
use crate::{list_dir, parse_numbered, DirListing};

/// Payload of the segment header frame: identifies the file type.
const SEGMENT_MAGIC: &[u8] = b"synod wal segment";

pub(crate) fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    parse_numbered(name, ".log")
}

/// The files in `wal_dir`: segments sorted by first lsn, temporary files, strangers.
pub(crate) fn list(wal_dir: &Path) -> io::Result<DirListing> {
    list_dir(wal_dir, parse_segment_name)
}

/// The open segment that batches are appended to.
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    file: File,
    pub path: PathBuf,
    pub first_lsn: u64,
    /// Bytes in the file, all of them whole frames of whole batches.
    pub len: u64,
    /// Record frames (not counting the header) in the file.
    pub records: u64,
}

impl SegmentWriter {
    /// Creates a new segment and writes its header. The caller fsyncs the file and then
    /// the directory before any record in it is reported durable.
    pub(crate) fn create(wal_dir: &Path, first_lsn: u64) -> io::Result<SegmentWriter> {
        let path = wal_dir.join(segment_name(first_lsn));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        let mut header = Vec::with_capacity(frame::HEADER_BYTES + SEGMENT_MAGIC.len());
        frame::encode(&mut header, Kind::SegmentHeader, FLAG_BATCH_END, first_lsn, SEGMENT_MAGIC);
        if let Err(error) = file.write_all_at(&header, 0) {
            let _ = fs::remove_file(&path);
            return Err(error);
        }
        Ok(SegmentWriter { file, path, first_lsn, len: header.len() as u64, records: 0 })
    }

    /// Reopens a segment recovery has checked, to append after its `len` valid bytes.
    pub(crate) fn reopen(path: PathBuf, first_lsn: u64, len: u64, records: u64) -> io::Result<SegmentWriter> {
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        assert_eq!(file.metadata()?.len(), len, "recovery cuts {} to its valid bytes first", path.display());
        Ok(SegmentWriter { file, path, first_lsn, len, records })
    }

    /// Writes one encoded batch of `records` frames at the end, with one `pwrite`.
    /// On failure it cuts the file back, so a failed append leaves no half batch; if even
    /// that fails, the file's end is unknown and the error is returned as `Err(Err(..))`.
    pub(crate) fn write_batch(
        &mut self,
        bytes: &[u8],
        records: u64,
    ) -> Result<(), Result<io::Error, String>> {
        match self.file.write_all_at(bytes, self.len) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                self.records += records;
                Ok(())
            }
            Err(error) => match self.file.set_len(self.len) {
                Ok(()) => Err(Ok(error)),
                Err(cut) => Err(Err(format!(
                    "write to {} failed ({error}) and cutting it back to {} bytes failed too ({cut})",
                    self.path.display(),
                    self.len
                ))),
            },
        }
    }

    /// Writes the seal frame: a successor starting at `next_lsn` exists. Cut back on
    /// failure like any batch.
    pub(crate) fn seal(&mut self, next_lsn: u64) -> Result<(), Result<io::Error, String>> {
        let mut bytes = Vec::with_capacity(frame::HEADER_BYTES);
        frame::encode(&mut bytes, Kind::Seal, FLAG_BATCH_END, next_lsn, &[]);
        self.write_batch(&bytes, 0)
    }

    /// `fdatasync`: the data and the file size, not the timestamps.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// A valid frame found by [`scan`].
#[derive(Clone, Debug)]
pub(crate) struct FrameInfo {
    pub offset: u64,
    pub end: u64,
    pub kind: Kind,
    pub lsn: u64,
    pub ends_batch: bool,
    /// For a `Base` frame: the checkpoint slot it relies on.
    pub base_slot: Option<u64>,
}

/// The bytes of a segment, in file order.
#[derive(Clone, Debug)]
pub(crate) enum Item {
    Frame(FrameInfo),
    /// Bytes `offset..end` are not a valid frame, and a valid frame begins at `end`.
    Bad {
        offset: u64,
        end: u64,
        reason: String,
    },
}

/// What a structural scan of one segment found.
#[derive(Clone, Debug)]
pub(crate) struct ScannedSegment {
    pub path: PathBuf,
    /// The first lsn, from the file name.
    pub name_lsn: u64,
    pub len: u64,
    pub items: Vec<Item>,
    /// `(offset, reason)`: from `offset` to the end of the file nothing is a valid frame.
    pub tail: Option<(u64, String)>,
    /// The file could not be read at all.
    pub unreadable: Option<String>,
}

impl ScannedSegment {
    #[cfg(test)]
    pub(crate) fn frames(&self) -> impl Iterator<Item = &FrameInfo> {
        self.items.iter().filter_map(|item| match item {
            Item::Frame(info) => Some(info),
            Item::Bad { .. } => None,
        })
    }

    /// The header frame is the first item, valid, and names the same lsn as the file.
    pub(crate) fn header_ok(&self) -> bool {
        matches!(self.items.first(), Some(Item::Frame(f)) if f.kind == Kind::SegmentHeader && f.lsn == self.name_lsn)
    }
}

/// Reads and scans the segment at `path`.
pub(crate) fn scan_file(path: &Path, name_lsn: u64, payload_bytes_max: usize) -> ScannedSegment {
    match fs::read(path) {
        Ok(bytes) => scan(path, name_lsn, &bytes, payload_bytes_max),
        Err(error) => ScannedSegment {
            path: path.to_path_buf(),
            name_lsn,
            len: 0,
            items: Vec::new(),
            tail: None,
            unreadable: Some(error.to_string()),
        },
    }
}

/// Sorts `bytes` into valid frames, corrupt regions (bad bytes *followed by* a valid frame)
/// and a tail (bad bytes with no valid frame after them). Which of those is damage and
/// which a harmless torn write is decided by recovery, which knows whether this is the
/// last segment.
pub(crate) fn scan(path: &Path, name_lsn: u64, bytes: &[u8], payload_bytes_max: usize) -> ScannedSegment {
    let mut items = Vec::new();
    let mut tail = None;
    let mut at = 0;
    // Frames after a bad region must continue the sequence, not repeat it.
    let mut lsn_min = 0;
    while at < bytes.len() {
        match frame::parse(bytes, at, payload_bytes_max) {
            Ok(frame) => {
                let base_slot = match frame.kind {
                    Kind::Base => match postcard::from_bytes::<u64>(frame.payload) {
                        Ok(slot) => Some(slot),
                        Err(error) => {
                            let reason =
                                format!("base frame passes its checksum but does not decode: {error}");
                            items.push(Item::Bad { offset: at as u64, end: frame.end as u64, reason });
                            at = frame.end;
                            continue;
                        }
                    },
                    _ => None,
                };
                lsn_min = match frame.kind {
                    Kind::SegmentHeader | Kind::Seal => frame.lsn,
                    _ => frame.lsn + 1,
                };
                items.push(Item::Frame(FrameInfo {
                    offset: at as u64,
                    end: frame.end as u64,
                    kind: frame.kind,
                    lsn: frame.lsn,
                    ends_batch: frame.ends_batch(),
                    base_slot,
                }));
                at = frame.end;
            }
            Err(bad) => match frame::find_next(bytes, at + 1, lsn_min, payload_bytes_max) {
                Some(next) => {
                    items.push(Item::Bad { offset: at as u64, end: next as u64, reason: bad.to_string() });
                    at = next;
                }
                None => {
                    tail = Some((at as u64, bad.to_string()));
                    break;
                }
            },
        }
    }
    ScannedSegment {
        path: path.to_path_buf(),
        name_lsn,
        len: bytes.len() as u64,
        items,
        tail,
        unreadable: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_bytes(records: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        frame::encode(&mut bytes, Kind::SegmentHeader, FLAG_BATCH_END, 1, SEGMENT_MAGIC);
        for lsn in 1..=records {
            frame::encode(&mut bytes, Kind::Decided, FLAG_BATCH_END, lsn, &[lsn as u8; 30]);
        }
        bytes
    }

    #[test]
    fn names_round_trip_and_strangers_are_refused() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.log"), None);
    }

    #[test]
    fn a_clean_segment_scans_to_frames_only() {
        let scanned = scan(Path::new("s"), 1, &segment_bytes(3), 1024);
        assert!(scanned.header_ok());
        assert_eq!(scanned.frames().count(), 4);
        assert!(scanned.tail.is_none());
    }

    #[test]
    fn a_flipped_byte_followed_by_valid_frames_is_a_bad_region_not_a_tail() {
        let mut bytes = segment_bytes(3);
        let second = frame::HEADER_BYTES + SEGMENT_MAGIC.len() + frame::HEADER_BYTES + 30;
        bytes[second + 25] ^= 0x10;
        let scanned = scan(Path::new("s"), 1, &bytes, 1024);
        assert!(scanned.tail.is_none());
        assert!(matches!(scanned.items[2], Item::Bad { offset, .. } if offset as usize == second));
        assert_eq!(scanned.frames().map(|f| f.lsn).collect::<Vec<_>>(), vec![1, 1, 3]);
    }

    #[test]
    fn a_cut_last_frame_is_a_tail() {
        let bytes = segment_bytes(3);
        let scanned = scan(Path::new("s"), 1, &bytes[..bytes.len() - 7], 1024);
        assert!(scanned.items.iter().all(|item| matches!(item, Item::Frame(_))));
        assert!(scanned.tail.is_some());
    }
}
