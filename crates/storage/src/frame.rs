//! The frame: the unit every byte on this disk is written in, in the log and in
//! checkpoints alike.
//!
//! ```text
//!  0        4        8     9      10      11       12                20
//!  +--------+--------+-----+------+-------+--------+-----------------+----------------+
//!  | crc32c | len    | ver | kind | flags | zero   | lsn             | payload        |
//!  | u32    | u32    | u8  | u8   | u8    | u8     | u64             | `len` bytes    |
//!  +--------+--------+-----+------+-------+--------+-----------------+----------------+
//!           \________________ covered by the crc32c (header after it + payload) ______/
//! ```
//!
//! All integers are little-endian. `lsn` is the log sequence number in a segment and the
//! frame's index in a checkpoint file. `flags` bit 0 marks the last frame of a batch: a
//! batch is durable only if its end frame is, which is how a crash in the middle of a
//! multi-record write is recognised (batches are atomic, OmniPaxos' "atomically perform
//! all operations in order").
//!
//! The checksum comes first and covers everything after it, so a flipped bit anywhere in
//! the frame — including the length — is a checksum failure rather than a misread frame.
//! A frame whose length runs past the end of the file is *truncated*: the only frames that
//! can be truncated legitimately are the last ones a crash interrupted.

use serde::Serialize;
use synod_core::Record;

/// The on-disk format version written into every frame. A frame of another version is
/// refused (a newer binary's files are not silently misread by an older one).
pub const FORMAT_VERSION: u8 = 1;

/// Bytes of the frame header.
pub const HEADER_BYTES: usize = 20;

/// `flags` bit: this frame ends its batch.
pub(crate) const FLAG_BATCH_END: u8 = 1;

/// What a frame holds. The numbers are part of the on-disk format: never reuse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// `Record::Promised`, payload = postcard(`Record<C>`).
    Promised = 1,
    /// `Record::Accepted`, payload = postcard(`Record<C>`).
    Accepted = 2,
    /// `Record::Decided`, payload = postcard(`Record<C>`).
    Decided = 3,
    /// `Record::Identity`, payload = postcard(`Record<C>`).
    Identity = 4,
    /// First frame of every segment; `lsn` = the first record's lsn.
    SegmentHeader = 16,
    /// First record of the batch that rebuilds the durable state after a checkpoint;
    /// payload = postcard(`u64` checkpoint slot). See `wal.rs`, "compaction".
    Base = 17,
    /// Last frame of a segment that rolled over; `lsn` = the successor's first lsn.
    /// Written after the successor exists, so a sealed *last* segment means the
    /// successor was lost. Takes no lsn of its own, like the header.
    Seal = 18,
    /// First frame of a checkpoint file: the metadata.
    CheckpointMeta = 32,
    /// A piece of the state machine snapshot.
    SnapshotPart = 33,
    /// Last frame of a checkpoint file: proves the file is complete.
    CheckpointEnd = 34,
}

impl Kind {
    pub(crate) fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Promised,
            2 => Kind::Accepted,
            3 => Kind::Decided,
            4 => Kind::Identity,
            16 => Kind::SegmentHeader,
            17 => Kind::Base,
            18 => Kind::Seal,
            32 => Kind::CheckpointMeta,
            33 => Kind::SnapshotPart,
            34 => Kind::CheckpointEnd,
            _ => return None,
        })
    }

    /// The kind that carries `record`.
    pub(crate) fn of_record<C>(record: &Record<C>) -> Kind {
        match record {
            Record::Promised { .. } => Kind::Promised,
            Record::Accepted { .. } => Kind::Accepted,
            Record::Decided { .. } => Kind::Decided,
            Record::Identity { .. } => Kind::Identity,
        }
    }

    pub(crate) fn is_record(self) -> bool {
        matches!(self, Kind::Promised | Kind::Accepted | Kind::Decided | Kind::Identity)
    }
}

/// A frame that parsed and passed its checksum.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame<'a> {
    pub kind: Kind,
    pub flags: u8,
    pub lsn: u64,
    pub payload: &'a [u8],
    /// Offset of the byte after this frame.
    pub end: usize,
}

impl Frame<'_> {
    pub(crate) fn ends_batch(&self) -> bool {
        self.flags & FLAG_BATCH_END != 0
    }
}

/// Why the bytes at an offset are not a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BadFrame {
    /// The file ends inside the header or the payload.
    Truncated { bytes_present: usize, bytes_needed: usize },
    /// The announced payload length exceeds the limit.
    TooLarge { len: usize },
    /// The checksum does not match the bytes.
    Checksum,
    /// The checksum matches but the header holds an unknown version, kind or flags:
    /// written by another format (or a bug), never by this one.
    Header(String),
}

impl std::fmt::Display for BadFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadFrame::Truncated { bytes_present, bytes_needed } => {
                write!(f, "frame truncated ({bytes_present} of {bytes_needed} bytes present)")
            }
            BadFrame::TooLarge { len } => write!(f, "frame announces {len} payload bytes, over the limit"),
            BadFrame::Checksum => write!(f, "frame fails its CRC32C checksum"),
            BadFrame::Header(what) => write!(f, "frame header invalid: {what}"),
        }
    }
}

fn le_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("four bytes"))
}

fn le_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("eight bytes"))
}

/// Parses the frame at `offset`, checking length, checksum, version, kind and flags.
pub(crate) fn parse(buf: &[u8], offset: usize, payload_bytes_max: usize) -> Result<Frame<'_>, BadFrame> {
    assert!(offset <= buf.len(), "offset {offset} past the end of {} bytes", buf.len());
    let present = buf.len() - offset;
    if present < HEADER_BYTES {
        return Err(BadFrame::Truncated { bytes_present: present, bytes_needed: HEADER_BYTES });
    }
    let header = &buf[offset..offset + HEADER_BYTES];
    let len = le_u32(header, 4) as usize;
    if len > payload_bytes_max {
        return Err(BadFrame::TooLarge { len });
    }
    let total = HEADER_BYTES + len;
    if present < total {
        return Err(BadFrame::Truncated { bytes_present: present, bytes_needed: total });
    }
    let frame = &buf[offset..offset + total];
    if crc32c::crc32c(&frame[4..]) != le_u32(frame, 0) {
        return Err(BadFrame::Checksum);
    }
    if frame[8] != FORMAT_VERSION {
        return Err(BadFrame::Header(format!("format version {}, expected {FORMAT_VERSION}", frame[8])));
    }
    let kind =
        Kind::from_u8(frame[9]).ok_or_else(|| BadFrame::Header(format!("unknown kind {}", frame[9])))?;
    let flags = frame[10];
    if flags & !FLAG_BATCH_END != 0 || frame[11] != 0 {
        return Err(BadFrame::Header(format!("unknown flags {:#x}/{:#x}", flags, frame[11])));
    }
    Ok(Frame { kind, flags, lsn: le_u64(frame, 12), payload: &frame[HEADER_BYTES..], end: offset + total })
}

/// Looks for the first offset after `from` where a whole valid frame with `lsn >= lsn_min`
/// begins. Used after a bad frame to tell a torn tail (nothing valid follows) from
/// corruption (valid frames follow). The cheap header fields are checked before the
/// checksum, so scanning a damaged segment byte by byte costs little; the `lsn` bound
/// keeps an old frame embedded in a payload from being mistaken for a later one.
pub(crate) fn find_next(buf: &[u8], from: usize, lsn_min: u64, payload_bytes_max: usize) -> Option<usize> {
    let last = buf.len().checked_sub(HEADER_BYTES)?;
    (from..=last).find(|&at| {
        let header = &buf[at..at + HEADER_BYTES];
        let plausible = header[8] == FORMAT_VERSION
            && Kind::from_u8(header[9]).is_some()
            && header[10] & !FLAG_BATCH_END == 0
            && header[11] == 0
            && le_u64(header, 12) >= lsn_min
            && (le_u32(header, 4) as usize) <= payload_bytes_max.min(buf.len() - at - HEADER_BYTES);
        plausible && parse(buf, at, payload_bytes_max).is_ok()
    })
}

/// Appends a frame holding `payload` to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, kind: Kind, flags: u8, lsn: u64, payload: &[u8]) {
    let start = begin(out);
    out.extend_from_slice(payload);
    finish(out, start, kind, flags, lsn);
}

/// Appends a frame holding postcard(`value`) to `out`, serializing straight into it.
pub(crate) fn encode_value<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    kind: Kind,
    flags: u8,
    lsn: u64,
    value: &T,
) {
    let start = begin(out);
    let buf = std::mem::take(out);
    *out = postcard::to_extend(value, buf).expect("serializing into a Vec cannot fail");
    finish(out, start, kind, flags, lsn);
}

fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.resize(start + HEADER_BYTES, 0);
    start
}

fn finish(out: &mut [u8], start: usize, kind: Kind, flags: u8, lsn: u64) {
    let len = out.len() - start - HEADER_BYTES;
    let len = u32::try_from(len).expect("frame payloads are bounded far below 4 GiB");
    let frame = &mut out[start..];
    frame[4..8].copy_from_slice(&len.to_le_bytes());
    frame[8] = FORMAT_VERSION;
    frame[9] = kind as u8;
    frame[10] = flags;
    frame[11] = 0;
    frame[12..20].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32c::crc32c(&frame[4..]);
    frame[0..4].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips() {
        let mut buf = Vec::new();
        encode(&mut buf, Kind::Decided, FLAG_BATCH_END, 42, b"hello");
        let frame = parse(&buf, 0, 1024).unwrap();
        assert_eq!(
            (frame.kind, frame.lsn, frame.payload, frame.end),
            (Kind::Decided, 42, &b"hello"[..], buf.len())
        );
        assert!(frame.ends_batch());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, Kind::Accepted, 0, 7, &[1, 2, 3, 4, 5, 6, 7, 8]);
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(parse(&bad, 0, 1024).is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn every_truncation_is_detected_as_truncated() {
        let mut buf = Vec::new();
        encode(&mut buf, Kind::Promised, FLAG_BATCH_END, 1, &[9; 40]);
        for len in 0..buf.len() {
            assert!(matches!(parse(&buf[..len], 0, 1024), Err(BadFrame::Truncated { .. })), "length {len}");
        }
    }

    #[test]
    fn find_next_skips_garbage_and_honours_the_lsn_bound() {
        let mut buf = vec![0xAB; 13];
        encode(&mut buf, Kind::Decided, 0, 5, b"x");
        assert_eq!(find_next(&buf, 0, 5, 1024), Some(13));
        assert_eq!(find_next(&buf, 0, 6, 1024), None);
        assert_eq!(find_next(&buf, 14, 0, 1024), None);
    }
}
