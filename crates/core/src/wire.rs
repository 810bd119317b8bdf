//! The frame that carries a message between servers: length, version, cluster id and a
//! CRC32C over all of it, so that a flipped bit becomes a dropped frame rather than a
//! wrong vote (seed 000: turn byzantine faults into fail-stop ones). Pure functions: the
//! simulator and the TCP transport use the same code.
//!
//! ```text
//! +---------+---------+------------+-------------+---------+
//! | len u32 | ver u16 | cluster u64| payload ... | crc u32 |
//! +---------+---------+------------+-------------+---------+
//! ```
//! `len` counts everything after itself; the CRC covers every byte before it.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The wire protocol version. A frame of another version is refused.
pub const PROTOCOL_VERSION: u16 = 1;

/// Frames larger than this are refused before they are read into memory.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

const HEADER_BYTES: usize = 4 + 2 + 8;
const TRAILER_BYTES: usize = 4;

/// Why a frame was refused. Each is a clean drop: the receiver's state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the header or the announced length.
    Truncated,
    /// The announced length exceeds `FRAME_BYTES_MAX`.
    TooLarge(usize),
    /// The CRC32C does not match: the frame was corrupted.
    Checksum,
    /// The sender speaks another protocol version.
    Version(u16),
    /// The sender belongs to another cluster.
    Cluster(u64),
    /// The payload did not decode (only possible from a buggy or hostile sender, since
    /// the checksum matched).
    Decode(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated => write!(f, "truncated frame"),
            FrameError::TooLarge(n) => write!(f, "frame of {n} bytes exceeds the limit"),
            FrameError::Checksum => write!(f, "frame checksum mismatch"),
            FrameError::Version(v) => write!(f, "protocol version {v}, expected {PROTOCOL_VERSION}"),
            FrameError::Cluster(c) => write!(f, "frame from cluster {c:#x}"),
            FrameError::Decode(e) => write!(f, "frame payload does not decode: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The cluster id on the wire for a cluster's name: a stable hash (FNV-1a), so that
/// nodes configured with the same name agree without sharing anything else.
pub fn cluster_id(name: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = crate::state_machine::Fnv64::default();
    hasher.write(name.as_bytes());
    hasher.finish()
}

/// Encodes `message` into a frame. Panics if it does not fit in one: for messages whose
/// size the caller bounds (see `try_encode` for the others).
pub fn encode<T: Serialize>(cluster_id: u64, message: &T) -> Vec<u8> {
    try_encode(cluster_id, message)
        .unwrap_or_else(|len| panic!("message too large for one frame: {len} bytes"))
}

/// Encodes `message` into a frame, or answers its length if that exceeds
/// `FRAME_BYTES_MAX` (nothing is sent: the receiver would refuse it anyway).
pub fn try_encode<T: Serialize>(cluster_id: u64, message: &T) -> Result<Vec<u8>, usize> {
    let mut frame = vec![0u8; HEADER_BYTES];
    frame[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    frame[6..14].copy_from_slice(&cluster_id.to_le_bytes());
    frame = postcard::to_extend(message, frame).expect("messages always serialize");
    let len = frame.len() - 4 + TRAILER_BYTES;
    if len > FRAME_BYTES_MAX {
        return Err(len);
    }
    frame[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    let crc = crc32c::crc32c(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    Ok(frame)
}

/// Reads the total frame size from its first four bytes, for stream framing.
pub fn frame_len(prefix: &[u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(*prefix) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len + 4)
}

/// Decodes a whole frame, checking length, checksum, version and cluster.
pub fn decode<T: DeserializeOwned>(cluster_id: u64, frame: &[u8]) -> Result<T, FrameError> {
    if frame.len() < HEADER_BYTES + TRAILER_BYTES {
        return Err(FrameError::Truncated);
    }
    let len = frame_len(frame[0..4].try_into().expect("four bytes"))?;
    if frame.len() != len {
        return Err(FrameError::Truncated);
    }
    let (body, trailer) = frame.split_at(frame.len() - TRAILER_BYTES);
    let crc = u32::from_le_bytes(trailer.try_into().expect("four bytes"));
    if crc32c::crc32c(body) != crc {
        return Err(FrameError::Checksum);
    }
    let version = u16::from_le_bytes(body[4..6].try_into().expect("two bytes"));
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    let cluster = u64::from_le_bytes(body[6..14].try_into().expect("eight bytes"));
    if cluster != cluster_id {
        return Err(FrameError::Cluster(cluster));
    }
    postcard::from_bytes(&body[HEADER_BYTES..]).map_err(|e| FrameError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips() {
        let frame = encode(7, &(1u64, "hello".to_string()));
        let back: (u64, String) = decode(7, &frame).unwrap();
        assert_eq!(back, (1, "hello".to_string()));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let frame = encode(7, &vec![1u32, 2, 3, 4]);
        for bit in 0..frame.len() * 8 {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode::<Vec<u32>>(7, &bad).is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn frame_from_another_cluster_is_refused() {
        let frame = encode(7, &1u8);
        assert_eq!(decode::<u8>(8, &frame), Err(FrameError::Cluster(7)));
    }
}
